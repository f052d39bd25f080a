"""HiVG's ground-truth object mask: the box rasterised at the original image size, then carried by the transforms.

HiVG supervises its text-to-patch alignment and segmentation heads with the ground-truth box drawn as a mask at the
image's original resolution (pycocotools' ``frBbox`` on the un-truncated float box), resized, cropped and padded
exactly as the image is. :func:`rasterize_box` reproduces ``frBbox``'s pixel coverage in closed form:

``frBbox`` turns the box into a 4-corner polygon and rasterises it on a grid 5x finer, rounding each corner
coordinate ``v`` to ``trunc(5 v + 0.5)``. For an axis-aligned box this keeps pixel column ``n`` (``0 <= n < width``)
exactly when ``X1 <= 5 n + 2 < X2`` for the rounded left and right edges ``X1 <= X2``, and likewise for rows; the
mask is the product of the kept rows and columns (an empty box gives an empty mask).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..boxes_clipvg import frbbox_corners

__all__ = [
    "crop_object_mask",
    "frbbox_corners",
    "pad_object_mask",
    "rasterize_box",
    "resize_object_mask",
]

#: Upsampling factor of pycocotools' polygon rasteriser.
_SCALE = 5


def _covered(start: float, stop: float, size: int) -> tuple[int, int]:
    """The [first, last) pixels ``frBbox`` covers along one axis between two edge coordinates."""
    low, high = sorted(math.trunc(_SCALE * v + 0.5) for v in (start, stop))
    first = -((2 - low) // _SCALE)  # smallest n with 5 n + 2 >= low
    last = -((2 - high) // _SCALE)  # smallest n with 5 n + 2 >= high
    first, last = min(max(first, 0), size), min(max(last, 0), size)
    return first, max(first, last)


def rasterize_box(corners: Sequence[float], height: int, width: int) -> torch.Tensor:
    """(height, width) uint8 mask of a box given by its float corners (x1, y1, x2, y2), as pycocotools draws it."""
    x1, y1, x2, y2 = corners
    top, bottom = _covered(y1, y2, height)
    left, right = _covered(x1, x2, width)
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[top:bottom, left:right] = 1
    return torch.from_numpy(mask)


def resize_object_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Nearest resize of a (H, W) mask to (height, width), thresholded at 0.5 (torch's nearest rule, as HiVG)."""
    resized = F.interpolate(mask[None, None].float(), size=(height, width), mode="nearest")[0, 0]
    return (resized > 0.5).to(torch.uint8)


def crop_object_mask(mask: torch.Tensor, window: tuple[int, int, int, int] | None) -> torch.Tensor:
    """The part of a mask inside a (top, left, height, width) crop window (the mask itself for None)."""
    if window is None:
        return mask
    top, left, height, width = window
    return mask[top : top + height, left : left + width]


def pad_object_mask(mask: torch.Tensor, size: int, offset: tuple[int, int]) -> torch.Tensor:
    """A mask placed at (top, left) on a zero ``size`` x ``size`` canvas, as the image is."""
    top, left = offset
    canvas = torch.zeros(size, size, dtype=torch.uint8)
    canvas[top : top + mask.shape[0], left : left + mask.shape[1]] = mask
    return canvas
