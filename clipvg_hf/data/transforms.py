"""The official CLIP-VG training augmentation (spec §3.3), re-implemented on PIL + torch (no torchvision).

Every step takes a PIL image and a float32 ``(x1, y1, x2, y2)`` pixel box and returns both, so the box follows the
pixels. Randomness comes only from the ``numpy.random.Generator`` passed in, which makes a sample reproducible from
its seed (see :class:`clipvg_hf.data.GroundingDataset` for how seeds are derived per sample, worker and epoch).

The evaluation path is the image processor itself (:class:`CLIPVGEvalTransform`), so evaluation inputs are the
processor's by construction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageEnhance
import torch

from ..boxes_clipvg import crop_box, letterbox_geometry, letterbox_offset
from ..image_processing_clipvg import IMAGENET_MEAN, IMAGENET_STD, CLIPVGImageProcessor
from .decode import as_rgb, decode_at_least, decode_full
from .object_mask import crop_object_mask, pad_object_mask, resize_object_mask

__all__ = [
    "CROP_SHORT_SIDES",
    "SPATIAL_WORDS",
    "CLIPVGEvalTransform",
    "CLIPVGTrainTransform",
    "color_jitter",
    "crop_box",
    "decode_at_least",
    "draft_region",
    "has_spatial_word",
    "normalize_and_pad",
    "random_crop_window",
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


def resize_long_side(image: PIL.Image.Image, box: Box, size: int, draft: bool = False) -> tuple[PIL.Image.Image, Box]:
    """Resize so the long side is ``size`` (sides rounded as the eval letterbox rounds them).

    ``draft=True`` (opt-in, **changes pixels**): a JPEG that is not decoded yet is decoded at the smallest DCT
    scale (1/2, 1/4, 1/8) that still covers the target size, then resized. Same output size and box, slightly
    different (smoother) pixels, several times cheaper for large photos.
    """
    geometry = letterbox_geometry(image.height, image.width, size)
    if draft:
        image = decode_at_least(image, geometry.new_width, geometry.new_height)
    return _resize(image, box, geometry.new_width, geometry.new_height, geometry.scale)


def draft_region(
    image: PIL.Image.Image, source: tuple[float, float, float, float], width: int, height: int
) -> tuple[PIL.Image.Image, tuple[float, float, float, float]]:
    """Decode an opened, not yet decoded JPEG at the smallest DCT scale at which ``source`` still covers ``width`` x
    ``height`` pixels (:func:`decode_at_least`); returns the RGB image and ``source`` in its (reduced) pixels.
    """
    full_w, full_h = image.size
    needed = (
        math.ceil(full_w * width / (source[2] - source[0])),
        math.ceil(full_h * height / (source[3] - source[1])),
    )
    image = decode_at_least(image, *needed)
    fx, fy = image.width / full_w, image.height / full_h
    return image, (source[0] * fx, source[1] * fy, source[2] * fx, source[3] * fy)


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
    window = random_crop_window(image.width, image.height, box, rng, min_size, max_size, max_tries)
    if window is None:
        return image, box, None
    top, left, height, width = window
    return image.crop((left, top, left + width, top + height)), crop_box(box, window), window


def random_crop_window(
    width: int,
    height: int,
    box: Box,
    rng: np.random.Generator,
    min_size: int = 384,
    max_size: int = 600,
    max_tries: int = 20,
) -> tuple[int, int, int, int] | None:
    """The (top, left, height, width) window :func:`random_size_crop` picks for an image of this size, or None."""
    if min(width, max_size) < min_size or min(height, max_size) < min_size:
        raise ValueError(f"random_size_crop needs both sides >= {min_size}, got {width}x{height}")
    centre_x = float(box[0] + box[2]) / 2
    centre_y = float(box[1] + box[3]) / 2
    for _ in range(max_tries):
        crop_w = int(rng.integers(min_size, min(width, max_size), endpoint=True))
        crop_h = int(rng.integers(min_size, min(height, max_size), endpoint=True))
        top = int(rng.integers(0, height - crop_h, endpoint=True))
        left = int(rng.integers(0, width - crop_w, endpoint=True))
        if centre_x > top and centre_y > left:
            return top, left, crop_h, crop_w
    return None


def color_jitter(
    image: PIL.Image.Image, rng: np.random.Generator, strength: float = 0.4, p: float = 0.8
) -> tuple[PIL.Image.Image, list[tuple[str, float]]]:
    """With probability ``p``, change brightness, contrast and saturation in a random order.

    Each factor is drawn from U[1 - strength, 1 + strength] and applied with PIL's ``ImageEnhance`` (what torchvision's
    ``ColorJitter`` does on PIL images). Returns the image and the applied (operation, factor) list.
    """
    if rng.random() >= p:
        return image, []
    enhancers = {
        "brightness": PIL.ImageEnhance.Brightness,
        "contrast": PIL.ImageEnhance.Contrast,
        "saturation": PIL.ImageEnhance.Color,
    }
    applied = []
    for name in (list(enhancers)[i] for i in rng.permutation(3)):
        factor = float(rng.uniform(1 - strength, 1 + strength))
        image = enhancers[name](image).enhance(factor)
        applied.append((name, factor))
    return image, applied


@lru_cache(maxsize=1)
def _normalisation_table() -> np.ndarray:
    """(3, 256) float32: ``(v / 255 - mean) / std`` for every byte value, in float32 as the tensor ops compute it.

    Each step is one correctly rounded float32 operation, so looking the values up gives the same bits as computing
    ``pixels.div(255).sub(mean).div(std)`` on the image.
    """
    values = np.arange(256, dtype=np.float32)[None, :] / np.float32(255)
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)[:, None]
    std = np.asarray(IMAGENET_STD, dtype=np.float32)[:, None]
    table = (values - mean) / std
    table.setflags(write=False)
    return table


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
    pixels = np.asarray(as_rgb(image), dtype=np.uint8)
    free_h, free_w = size - image.height, size - image.width
    if rng is None:
        top, left = letterbox_offset(free_h), letterbox_offset(free_w)
    else:
        top, left = int(rng.integers(0, free_h, endpoint=True)), int(rng.integers(0, free_w, endpoint=True))
    canvas = np.zeros((3, size, size), dtype=np.float32)
    table = _normalisation_table()
    for channel in range(3):  # a table look-up per plane, written in place: no float temporaries, no torch threads
        np.take(
            table[channel],
            pixels[..., channel],
            mode="clip",
            out=canvas[channel, top : top + image.height, left : left + image.width],
        )
    canvas = torch.from_numpy(canvas)
    mask = torch.zeros(size, size, dtype=torch.long)
    mask[top : top + image.height, left : left + image.width] = 1
    # float32 NumPy scalars round exactly as the equivalent torch float32 ops, without their per-call overhead
    x1, y1, x2, y2 = (np.float32(v) for v in box.tolist())
    x1, x2 = x1 + np.float32(left), x2 + np.float32(left)
    y1, y2 = y1 + np.float32(top), y2 + np.float32(top)
    two, side = np.float32(2), np.float32(size)
    cxcywh = np.array([(x1 + x2) / two, (y1 + y2) / two, x2 - x1, y2 - y1], dtype=np.float32)
    labels = torch.from_numpy(cxcywh / side)
    return {"pixel_values": canvas, "pixel_mask": mask, "labels": labels, "offset": (top, left)}


@dataclass
class CLIPVGTrainTransform:
    """The official training augmentation with the release scripts' flags (``--aug_crop --aug_scale --aug_translate``).

    1. RandomSelect: expressions with a spatial word always take branch A; others take branch B with probability
       ``crop_prob`` (0.5 with ``aug_crop``). A = long-side resize to a random scale; B = short-side resize to
       400/500/600, :func:`random_size_crop` (384-600), then the same long-side resize.
    2. Colour jitter (0.4, p = 0.8). No flip (the official code disables it: it would break left/right words).
    3. Normalise and pad to ``size``, at a random offset with ``aug_translate``.

    Call with a PIL image, the box (x1, y1, x2, y2) in its pixels, the expression and a numpy Generator. With an
    ``object_mask`` (H, W) at the image's size (HiVG's ground-truth mask, :mod:`clipvg_hf.data.object_mask`) the
    output has ``object_mask`` (S, S) uint8 too: nearest-resized, cropped and padded with the image, as HiVG does.
    """

    @property
    def lazy_image(self) -> bool:
        """Whether the transform wants the image undecoded (only for ``draft_decode``)."""
        return self.draft_decode

    size: int = 224
    aug_scale: bool = True
    aug_crop: bool = True
    aug_color: bool = True
    aug_translate: bool = True
    #: Opt-in, changes pixels: decode JPEGs at a reduced DCT scale when the resize branch shrinks them (see
    #: :func:`resize_long_side`). Same random parameters, sizes and boxes. Needs an image that is not decoded yet
    #: (``GroundingDataset`` passes one when the transform sets ``lazy_image``).
    draft_decode: bool = False
    #: Opt-in, changes pixels: the crop branch's upscale-crop-downscale becomes one resize of the source region
    #: (same window, sizes and boxes; one resampling instead of two, and no upscaled full image). With
    #: ``draft_decode`` too, that region is decoded at a reduced DCT scale as well.
    fused_crop_resize: bool = False
    crop_short_sides: Sequence[int] = CROP_SHORT_SIDES
    crop_min: int = 384
    crop_max: int = 600
    scales: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.scales = train_scales(self.size, self.aug_scale)

    @property
    def crop_prob(self) -> float:
        return 0.5 if self.aug_crop else 0.0

    @property
    def deterministic(self) -> bool:
        """Whether every expression of an image gets the same pixels (no random crop, scale, colour or placement),
        so that a batch can hold each image once."""
        return not (self.aug_crop or self.aug_color or self.aug_translate or len(self.scales) > 1)

    def __call__(
        self,
        image: PIL.Image.Image,
        box: Any,
        text: str,
        rng: np.random.Generator,
        object_mask: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        box = torch.as_tensor(box, dtype=torch.float32).clone()
        crop = None
        take_crop = not has_spatial_word(text) and rng.random() < self.crop_prob
        if take_crop and self.fused_crop_resize:
            image, box, crop, scale, mask_sizes = self._fused_crop_resize(image, box, rng)
            object_mask = _carry_mask(object_mask, mask_sizes[0], crop, mask_sizes[1])
            return self._finish(image, box, rng, crop, scale, "crop", object_mask)
        short_side = None
        if take_crop:
            image = decode_full(image)
            image, box = resize_short_side(image, box, int(rng.choice(self.crop_short_sides)))
            short_side = (image.height, image.width)
            image, box, crop = random_size_crop(image, box, rng, self.crop_min, self.crop_max)
        scale = int(rng.choice(self.scales))
        draft = self.draft_decode and not take_crop
        image, box = resize_long_side(image if draft else decode_full(image), box, scale, draft=draft)
        object_mask = _carry_mask(object_mask, short_side, crop, (image.height, image.width))
        return self._finish(image, box, rng, crop, scale, "crop" if take_crop else "resize", object_mask)

    def _finish(
        self,
        image: PIL.Image.Image,
        box: Box,
        rng: np.random.Generator,
        crop: Any,
        scale: int,
        branch: str,
        object_mask: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """Colour jitter, normalise and pad (the steps after the resize); the object mask lands where the image does."""
        jitter: list[tuple[str, float]] = []
        if self.aug_color:
            image, jitter = color_jitter(image, rng)
        out = normalize_and_pad(image, box, self.size, rng if self.aug_translate else None)
        out["meta"] = {"branch": branch, "scale": scale, "crop": crop, "jitter": jitter}
        if object_mask is not None:
            out["object_mask"] = pad_object_mask(object_mask, self.size, out["offset"])
        return out

    def _fused_crop_resize(
        self, image: PIL.Image.Image, box: Box, rng: np.random.Generator
    ) -> tuple[PIL.Image.Image, Box, tuple[int, int, int, int] | None, int, tuple[tuple[int, int], tuple[int, int]]]:
        """The crop branch with one resize: same random draws, window, output size and box as the exact branch.

        Also returns the (height, width) of the short-side resize and of the final resize, which the object mask
        goes through step by step as in the exact branch.
        """
        short = int(rng.choice(self.crop_short_sides))
        ratio = short / min(image.height, image.width)
        resized_w, resized_h = round(image.width * ratio), round(image.height * ratio)
        box = box * ratio
        window = random_crop_window(resized_w, resized_h, box, rng, self.crop_min, self.crop_max)
        top, left, height, width = window if window is not None else (0, 0, resized_h, resized_w)
        if window is not None:
            box = crop_box(box, window)
        scale = int(rng.choice(self.scales))
        geometry = letterbox_geometry(height, width, scale)
        sx, sy = image.width / resized_w, image.height / resized_h
        source = (left * sx, top * sy, (left + width) * sx, (top + height) * sy)
        if self.draft_decode:  # the window shrinks at least ~2x on its way to the canvas: decode it reduced
            image, source = draft_region(image, source, geometry.new_width, geometry.new_height)
        image = decode_full(image).resize((geometry.new_width, geometry.new_height), PIL.Image.BILINEAR, box=source)
        sizes = ((resized_h, resized_w), (geometry.new_height, geometry.new_width))
        return image, box * geometry.scale, window, scale, sizes


def _carry_mask(
    mask: torch.Tensor | None,
    short_side: tuple[int, int] | None,
    crop: tuple[int, int, int, int] | None,
    final: tuple[int, int],
) -> torch.Tensor | None:
    """An object mask through the geometric steps of a training sample: the crop branch's short-side resize and crop
    (when ``short_side`` is given), then the long-side resize to ``final`` (height, width)."""
    if mask is None:
        return None
    if short_side is not None:
        mask = crop_object_mask(resize_object_mask(mask, *short_side), crop)
    return resize_object_mask(mask, *final)


class CLIPVGEvalTransform:
    """The evaluation transform: exactly :class:`CLIPVGImageProcessor` (letterbox, ImageNet normalisation, labels)."""

    def __init__(self, image_processor: CLIPVGImageProcessor | None = None):
        self.image_processor = image_processor or CLIPVGImageProcessor()

    def __call__(
        self,
        image: PIL.Image.Image,
        box: Any,
        text: str = "",
        rng: Any = None,
        object_mask: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        return self.transform_run(image, [box], None if object_mask is None else [object_mask])[0]

    def transform_run(
        self, image: PIL.Image.Image, boxes: Sequence[Any], object_masks: Sequence[torch.Tensor] | None = None
    ) -> list[dict[str, Any]]:
        """Several expressions of one image: the image is letterboxed once, each box mapped onto the canvas.

        ``object_masks`` (one (H, W) mask per box, at the image's size) are nearest-resized and padded with the
        image (HiVG's ground-truth masks); each output then has ``object_mask`` (S, S) uint8.
        """
        out = self.image_processor(
            images=[image] * len(boxes), boxes=[list(box) for box in boxes], return_tensors="pt"
        )
        mask = out["pixel_mask"].long()
        items = [
            {"pixel_values": out["pixel_values"][i], "pixel_mask": mask[i], "labels": out["labels"][i]}
            for i in range(len(boxes))
        ]
        if object_masks is not None:
            size = mask.shape[-1]
            geometry = letterbox_geometry(image.height, image.width, size)
            for item, object_mask in zip(items, object_masks, strict=True):
                resized = resize_object_mask(object_mask, geometry.new_height, geometry.new_width)
                item["object_mask"] = pad_object_mask(resized, size, (geometry.top, geometry.left))
        return items
