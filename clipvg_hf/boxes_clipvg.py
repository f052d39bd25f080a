"""Box geometry of CLIP-VG and HiVG: box layouts, IoU and GIoU, the letterbox mapping and the official box rules.

One home for the box arithmetic that the model (loss, Acc@0.5 IoU), the image processor (letterbox, box
post-processing) and the data pipeline (official truncation, frBbox corners, crops) share. This file is uploaded next
to the model as Hub remote code, so it imports nothing from the ``clipvg_hf`` package.

Two copies of IoU live elsewhere on purpose: the pure-Python official IoU of the pseudo-label rules
(``pseudo_labels/templates.py``, which must reproduce the official code's Python arithmetic) and the NumPy IoU of the
``evaluate`` metric (``grounding_accuracy``), which must load from its own folder without this package.
"""

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

__all__ = [
    "BOX_FORMATS",
    "LetterboxGeometry",
    "box_cxcywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "boxes_to_xyxy",
    "canvas_cxcywh_to_xyxy",
    "crop_box",
    "elementwise_giou",
    "exact_box",
    "frbbox_corners",
    "grounding_iou",
    "letterbox_geometry",
    "letterbox_offset",
    "official_box",
    "xyxy_to_canvas_cxcywh",
]

#: Input box layouts: corners ``(x1, y1, x2, y2)`` or COCO-style ``(x, y, width, height)``, in pixels.
BOX_FORMATS = ("xyxy", "xywh")


# ----------------------------------------------------------------------------------------------------------------
# Layouts and overlaps (torch, element-wise: one prediction per target)
# ----------------------------------------------------------------------------------------------------------------
def box_cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(cx, cy, w, h) -> (x1, y1, x2, y2)."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def box_xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """(x1, y1, x2, y2) -> (cx, cy, w, h)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([(x1 + x2) / 2.0, (y1 + y2) / 2.0, x2 - x1, y2 - y1], dim=-1)


def elementwise_giou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Generalised IoU of ``boxes1[i]`` with ``boxes2[i]`` (xyxy); the diagonal of the pairwise GIoU matrix."""
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    inter_wh = (torch.min(boxes1[:, 2:], boxes2[:, 2:]) - torch.max(boxes1[:, :2], boxes2[:, :2])).clamp(min=0)
    inter = inter_wh[:, 0] * inter_wh[:, 1]
    union = area1 + area2 - inter
    iou = inter / union
    hull_wh = (torch.max(boxes1[:, 2:], boxes2[:, 2:]) - torch.min(boxes1[:, :2], boxes2[:, :2])).clamp(min=0)
    hull = hull_wh[:, 0] * hull_wh[:, 1]
    return iou - (hull - union) / hull


def grounding_iou(pred_boxes: torch.Tensor, target_boxes: torch.Tensor) -> torch.Tensor:
    """Per-sample IoU as CLIP-VG's Acc@0.5 computes it.

    Both inputs are normalised (cx, cy, w, h) of shape (B, 4) on the canvas; the prediction is clamped to [0, 1]
    after conversion to corners, the target is not, and ``1e-16`` guards the denominator.
    """
    pred = box_cxcywh_to_xyxy(pred_boxes).clamp(0, 1)
    target = box_cxcywh_to_xyxy(target_boxes)
    inter_w = (torch.min(pred[:, 2], target[:, 2]) - torch.max(pred[:, 0], target[:, 0])).clamp(min=0)
    inter_h = (torch.min(pred[:, 3], target[:, 3]) - torch.max(pred[:, 1], target[:, 1])).clamp(min=0)
    inter = inter_w * inter_h
    area_pred = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    area_target = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])
    return inter / (area_pred + area_target - inter + 1e-16)


# ----------------------------------------------------------------------------------------------------------------
# The letterbox: image pixels <-> the normalised square canvas
# ----------------------------------------------------------------------------------------------------------------
class LetterboxGeometry(NamedTuple):
    """Where an image of a given size lands on the square canvas."""

    scale: float
    new_height: int
    new_width: int
    top: int
    left: int


def letterbox_offset(free: int) -> int:
    """Centred padding offset for ``free`` spare pixels with the official rounding (Python's half-to-even
    ``round`` of ``free / 2 - 0.1``)."""
    return round(free / 2.0 - 0.1)


def letterbox_geometry(height: int, width: int, size: int) -> LetterboxGeometry:
    """Resize the long side to ``size`` and centre the result, with the official rounding.

    The resized sides are ``round(side * scale)`` and the offsets :func:`letterbox_offset` of the free space, which is
    what the released checkpoints were evaluated with.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got height={height}, width={width}")
    scale = size / max(height, width)
    new_height, new_width = round(height * scale), round(width * scale)
    return LetterboxGeometry(
        scale, new_height, new_width, letterbox_offset(size - new_height), letterbox_offset(size - new_width)
    )


def boxes_to_xyxy(boxes: Any, box_format: str = "xyxy", truncate: bool = False) -> np.ndarray:
    """Read boxes in pixels as an ``(N, 4)`` float64 array of corners.

    With ``truncate=True`` every input number is first cut to an integer (toward zero), as the official data loader
    does with the annotations: for ``"xywh"`` this gives ``x2 = int(x) + int(w)``, not ``int(x + w)``.
    """
    if box_format not in BOX_FORMATS:
        raise ValueError(f"box_format={box_format!r} is not supported; choose one of {BOX_FORMATS}.")
    array = np.asarray(boxes, dtype=np.float64)
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or array.shape[-1] != 4:
        raise ValueError(f"boxes must have shape (4,) or (N, 4), got {tuple(np.shape(boxes))}.")
    if not np.isfinite(array).all():
        raise ValueError(f"boxes must be finite numbers, got {array.tolist()}.")
    if truncate:
        array = np.trunc(array)
    if box_format == "xywh":
        array = np.concatenate([array[:, :2], array[:, :2] + array[:, 2:]], axis=1)
    if (array[:, 2:] < array[:, :2]).any():
        raise ValueError(f"boxes must satisfy x2 >= x1 and y2 >= y1, got {array.tolist()}.")
    return array


def xyxy_to_canvas_cxcywh(xyxy: np.ndarray, geometry: LetterboxGeometry, size: int) -> np.ndarray:
    """Map corner boxes from image pixels to normalised ``(cx, cy, w, h)`` on the letterboxed canvas."""
    canvas = xyxy * geometry.scale + np.array([geometry.left, geometry.top] * 2, dtype=np.float64)
    centre = (canvas[:, :2] + canvas[:, 2:]) / 2
    extent = canvas[:, 2:] - canvas[:, :2]
    return np.concatenate([centre, extent], axis=1) / size


def canvas_cxcywh_to_xyxy(
    boxes: torch.Tensor, geometry: LetterboxGeometry, size: int, clamp_to: tuple[int, int] | None = None
) -> torch.Tensor:
    """Map normalised ``(cx, cy, w, h)`` canvas boxes back to float64 corner boxes in original-image pixels.

    The exact inverse of the letterbox (shift, then unscale). ``clamp_to=(height, width)`` cuts the result to the
    image, because a prediction may reach into the padding.
    """
    corners = box_cxcywh_to_xyxy(boxes.to(torch.float64) * size)
    offsets = torch.tensor([geometry.left, geometry.top] * 2, dtype=torch.float64, device=boxes.device)
    corners = (corners - offsets) / geometry.scale
    if clamp_to is not None:
        height, width = clamp_to
        limits = torch.tensor([width, height] * 2, dtype=torch.float64, device=boxes.device)
        corners = torch.minimum(corners.clamp(min=0), limits)
    return corners


def crop_box(box: torch.Tensor, window: tuple[int, int, int, int]) -> torch.Tensor:
    """An (x1, y1, x2, y2) pixel box in the coordinates of a (top, left, height, width) window, clamped to it."""
    top, left, height, width = window
    shifted = box - torch.tensor([left, top, left, top], dtype=box.dtype)
    limit = torch.tensor([width, height, width, height], dtype=box.dtype)
    return torch.minimum(shifted, limit).clamp(min=0)


# ----------------------------------------------------------------------------------------------------------------
# The official annotation rules (plain Python numbers)
# ----------------------------------------------------------------------------------------------------------------
def official_box(raw: Sequence[float], box_format: str) -> tuple[int, int, int, int]:
    """The official loader's int box: truncate every stored number; for xywh, x2 = int(x) + int(w)."""
    x, y, a, b = (int(v) for v in raw)  # int() truncates toward zero, like np.array(..., dtype=int)
    return (x, y, x + a, y + b) if box_format == "xywh" else (x, y, a, b)


def exact_box(raw: Sequence[float], box_format: str) -> tuple[float, float, float, float]:
    """The stored box as exact float (x1, y1, x2, y2)."""
    x, y, a, b = (float(v) for v in raw)
    return (x, y, x + a, y + b) if box_format == "xywh" else (x, y, a, b)


def frbbox_corners(bbox: Sequence[float], box_format: str) -> tuple[float, float, float, float]:
    """The polygon corners (x1, y1, x2, y2) ``frBbox`` computes from the official loader's float box.

    ``bbox`` is the converter's exact (x1, y1, x2, y2) (``SplitRow.bbox``). For ``"xywh"`` sources (the COCO-based
    datasets and mixup) it already holds ``x + w`` as ``frBbox`` computes it; for ``"xyxy"`` sources (ReferIt,
    Flickr30k) the official loader passes ``[x1, y1, x2 - x1, y2 - y1]``, whose right edge is ``x1 + (x2 - x1)``.
    """
    x1, y1, x2, y2 = (float(v) for v in bbox)
    if box_format == "xywh":
        return x1, y1, x2, y2
    if box_format == "xyxy":
        return x1, y1, x1 + (x2 - x1), y1 + (y2 - y1)
    raise ValueError(f"box_format must be 'xywh' or 'xyxy', got {box_format!r}")
