"""The official CLIP-VG training augmentation (spec §3.3), re-implemented on PIL + torch (no torchvision).

Every step takes a PIL image and a float32 ``(x1, y1, x2, y2)`` pixel box and returns both, so the box follows the
pixels. Randomness comes only from the ``numpy.random.Generator`` passed in, which makes a sample reproducible from
its seed (see :class:`clipvg_hf.data.GroundingDataset` for how seeds are derived per sample, worker and epoch).

The evaluation path is the image processor itself (:class:`CLIPVGEvalTransform`), so evaluation inputs are the
processor's by construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageEnhance
import torch

from ..image_processing_clipvg import IMAGENET_MEAN, IMAGENET_STD, CLIPVGImageProcessor, letterbox_geometry

__all__ = [
    "CROP_SHORT_SIDES",
    "SPATIAL_WORDS",
    "CLIPVGEvalTransform",
    "CLIPVGTrainTransform",
    "color_jitter",
    "has_spatial_word",
    "normalize_and_pad",
    "random_size_crop",
    "resize_long_side",
    "resize_short_side",
    "train_scales",
]

#: Expressions containing any of these substrings never take the crop branch (substring match, as the official
#: code does: "laptop" contains "top").
SPATIAL_WORDS = ("left", "right", "top", "bottom", "middle")
#: Short-side sizes of the crop branch's first resize.
CROP_SHORT_SIDES = (400, 500, 600)

Box = torch.Tensor  # float32 (4,) x1, y1, x2, y2 in pixels of the current image


def train_scales(size: int = 224, aug_scale: bool = True) -> tuple[int, ...]:
    """Long-side sizes of the multi-scale resize: ``size - 32 * i`` for i = 0..6 (224 ... 32), or just ``size``."""
    return tuple(size - 32 * i for i in range(7)) if aug_scale else (size,)


def has_spatial_word(text: str) -> bool:
    """Whether the lower-cased text contains a direction word (which rules out the crop branch)."""
    lowered = text.lower()
    return any(word in lowered for word in SPATIAL_WORDS)


def _resize(image: PIL.Image.Image, box: Box, width: int, height: int, ratio: float) -> tuple[PIL.Image.Image, Box]:
    """PIL bilinear resize to (width, height) with the box scaled by ``ratio``."""
    return image.resize((width, height), PIL.Image.BILINEAR), box * ratio


def resize_long_side(image: PIL.Image.Image, box: Box, size: int) -> tuple[PIL.Image.Image, Box]:
    """Resize so the long side is ``size`` (sides rounded as the eval letterbox rounds them)."""
    geometry = letterbox_geometry(image.height, image.width, size)
    return _resize(image, box, geometry.new_width, geometry.new_height, geometry.scale)


def resize_short_side(image: PIL.Image.Image, box: Box, size: int) -> tuple[PIL.Image.Image, Box]:
    """Resize so the short side is ``size``; sides are ``round(side * ratio)``."""
    ratio = size / min(image.height, image.width)
    return _resize(image, box, round(image.width * ratio), round(image.height * ratio), ratio)


def random_size_crop(
    image: PIL.Image.Image,
    box: Box,
    rng: np.random.Generator,
    min_size: int = 384,
    max_size: int = 600,
    max_tries: int = 20,
) -> tuple[PIL.Image.Image, Box, tuple[int, int, int, int] | None]:
    """Crop a random ``[min_size, min(side, max_size)]``-sided window, keeping the official acceptance test.

    A window (top, left, height, width) is accepted when the box centre's **x exceeds the window's top** and its
    **y exceeds the window's left** (the official code compares across axes; kept for parity). After up to
    ``max_tries`` refusals the image is returned uncropped. The box is shifted, then clamped to the window, so it may
    shrink or even lose its area. Returns the window too (None when nothing was cropped).
    """
    if min(image.width, max_size) < min_size or min(image.height, max_size) < min_size:
        raise ValueError(f"random_size_crop needs both sides >= {min_size}, got {image.width}x{image.height}")
    centre_x = float(box[0] + box[2]) / 2
    centre_y = float(box[1] + box[3]) / 2
    for _ in range(max_tries):
        width = int(rng.integers(min_size, min(image.width, max_size), endpoint=True))
        height = int(rng.integers(min_size, min(image.height, max_size), endpoint=True))
        top = int(rng.integers(0, image.height - height, endpoint=True))
        left = int(rng.integers(0, image.width - width, endpoint=True))
        if centre_x > top and centre_y > left:
            cropped = image.crop((left, top, left + width, top + height))
            shifted = box - torch.tensor([left, top, left, top], dtype=box.dtype)
            limit = torch.tensor([width, height, width, height], dtype=box.dtype)
            return cropped, torch.minimum(shifted, limit).clamp(min=0), (top, left, height, width)
    return image, box, None


def color_jitter(
    image: PIL.Image.Image, rng: np.random.Generator, strength: float = 0.4, p: float = 0.8
) -> tuple[PIL.Image.Image, list[tuple[str, float]]]:
    """With probability ``p``, change brightness, contrast and saturation in a random order.

    Each factor is drawn from U[1 - strength, 1 + strength] and applied with PIL's ``ImageEnhance`` (what torchvision's
    ``ColorJitter`` does on PIL images). Returns the image and the applied (operation, factor) list.
    """
    if rng.random() >= p:
        return image, []
    enhancers = {"brightness": PIL.ImageEnhance.Brightness, "contrast": PIL.ImageEnhance.Contrast,
                 "saturation": PIL.ImageEnhance.Color}
    applied = []
    for name in (list(enhancers)[i] for i in rng.permutation(3)):
        factor = float(rng.uniform(1 - strength, 1 + strength))
        image = enhancers[name](image).enhance(factor)
        applied.append((name, factor))
    return image, applied


def _centre_offset(free: int) -> int:
    """Centred padding offset with the official rounding (Python's half-to-even ``round``)."""
    return round(free / 2.0 - 0.1)


def normalize_and_pad(
    image: PIL.Image.Image, box: Box, size: int, rng: np.random.Generator | None = None
) -> dict[str, Any]:
    """ImageNet-normalise, paste onto a zero ``size``×``size`` canvas and express the box on it.

    With ``rng`` the image lands at a random offset (``aug_translate``), otherwise centred. Returns
    ``pixel_values`` (3, S, S) float32, ``pixel_mask`` (S, S) int64 with 1 = real pixel, ``labels`` the normalised
    ``(cx, cy, w, h)`` float32 box on the canvas, and ``offset`` (top, left).
    """
    if image.width > size or image.height > size:
        raise ValueError(f"image of {image.width}x{image.height} does not fit a {size}x{size} canvas")
    pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1).float()
    pixels = pixels.div(255)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]
    pixels = pixels.sub(mean).div(std)
    free_h, free_w = size - image.height, size - image.width
    if rng is None:
        top, left = _centre_offset(free_h), _centre_offset(free_w)
    else:
        top, left = int(rng.integers(0, free_h, endpoint=True)), int(rng.integers(0, free_w, endpoint=True))
    canvas = torch.zeros(3, size, size, dtype=torch.float32)
    mask = torch.zeros(size, size, dtype=torch.long)
    canvas[:, top : top + image.height, left : left + image.width] = pixels
    mask[top : top + image.height, left : left + image.width] = 1
    shifted = box + torch.tensor([left, top, left, top], dtype=box.dtype)
    cxcywh = torch.stack([(shifted[0] + shifted[2]) / 2, (shifted[1] + shifted[3]) / 2,
                          shifted[2] - shifted[0], shifted[3] - shifted[1]])
    labels = cxcywh / torch.tensor([size, size, size, size], dtype=torch.float32)
    return {"pixel_values": canvas, "pixel_mask": mask, "labels": labels, "offset": (top, left)}


@dataclass
class CLIPVGTrainTransform:
    """The official training augmentation with the release scripts' flags (``--aug_crop --aug_scale --aug_translate``).

    1. RandomSelect: expressions with a spatial word always take branch A; others take branch B with probability
       ``crop_prob`` (0.5 with ``aug_crop``). A = long-side resize to a random scale; B = short-side resize to
       400/500/600, :func:`random_size_crop` (384-600), then the same long-side resize.
    2. Colour jitter (0.4, p = 0.8). No flip (the official code disables it: it would break left/right words).
    3. Normalise and pad to ``size``, at a random offset with ``aug_translate``.

    Call with a PIL image, the box (x1, y1, x2, y2) in its pixels, the expression and a numpy Generator.
    """

    size: int = 224
    aug_scale: bool = True
    aug_crop: bool = True
    aug_color: bool = True
    aug_translate: bool = True
    crop_short_sides: Sequence[int] = CROP_SHORT_SIDES
    crop_min: int = 384
    crop_max: int = 600
    scales: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.scales = train_scales(self.size, self.aug_scale)

    @property
    def crop_prob(self) -> float:
        return 0.5 if self.aug_crop else 0.0

    def __call__(self, image: PIL.Image.Image, box: Any, text: str, rng: np.random.Generator) -> dict[str, Any]:
        box = torch.as_tensor(box, dtype=torch.float32).clone()
        image = image.convert("RGB")
        crop = None
        take_crop = not has_spatial_word(text) and rng.random() < self.crop_prob
        if take_crop:
            image, box = resize_short_side(image, box, int(rng.choice(self.crop_short_sides)))
            image, box, crop = random_size_crop(image, box, rng, self.crop_min, self.crop_max)
        scale = int(rng.choice(self.scales))
        image, box = resize_long_side(image, box, scale)
        jitter: list[tuple[str, float]] = []
        if self.aug_color:
            image, jitter = color_jitter(image, rng)
        out = normalize_and_pad(image, box, self.size, rng if self.aug_translate else None)
        out["meta"] = {"branch": "crop" if take_crop else "resize", "scale": scale, "crop": crop, "jitter": jitter}
        return out


class CLIPVGEvalTransform:
    """The evaluation transform: exactly :class:`CLIPVGImageProcessor` (letterbox, ImageNet normalisation, labels)."""

    def __init__(self, image_processor: CLIPVGImageProcessor | None = None):
        self.image_processor = image_processor or CLIPVGImageProcessor()

    def __call__(self, image: PIL.Image.Image, box: Any, text: str = "", rng: Any = None) -> dict[str, Any]:
        out = self.image_processor(images=[image], boxes=[list(box)], return_tensors="pt")
        return {"pixel_values": out["pixel_values"][0], "pixel_mask": out["pixel_mask"][0].long(),
                "labels": out["labels"][0]}
