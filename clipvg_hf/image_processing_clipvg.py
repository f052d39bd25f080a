"""Image processor of CLIP-VG: the official evaluation letterbox, pixel mask and box post-processing."""

from typing import NamedTuple

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "LetterboxGeometry", "letterbox_geometry"]

# CLIP-VG normalises with ImageNet statistics, not CLIP's.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class LetterboxGeometry(NamedTuple):
    """Where an image of a given size lands on the square canvas."""

    scale: float
    new_height: int
    new_width: int
    top: int
    left: int


def letterbox_geometry(height: int, width: int, size: int) -> LetterboxGeometry:
    """Resize the long side to ``size`` and centre the result, with the official rounding.

    The resized sides are ``round(side * scale)`` and the offsets ``round(free / 2 - 0.1)`` (Python's
    half-to-even ``round``), which is what the released checkpoints were evaluated with.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got height={height}, width={width}")
    scale = size / max(height, width)
    new_height, new_width = round(height * scale), round(width * scale)
    top = round((size - new_height) / 2.0 - 0.1)
    left = round((size - new_width) / 2.0 - 0.1)
    return LetterboxGeometry(scale, new_height, new_width, top, left)
