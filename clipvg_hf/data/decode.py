"""Decoding images as the official loader does (PIL, RGB, no EXIF rotation), faster where the pixels allow.

- :func:`open_raw_image`: an ``Image`` cell of a converted split (bytes or a path, optionally re-rooted) to RGB;
- :func:`decode_jpeg_rgb`: JPEG bytes through simplejpeg (extra ``fast``), PIL's pixels bit for bit;
- :func:`decode_at_least`: an undecoded JPEG at the smallest DCT scale that keeps a given size (opt-in
  ``draft_decode`` of the training transform), each scale decoded once per opened image;
- :func:`check_pixel_limit`: the one decompression-bomb guard, PIL's pixel limit (``2 * PIL.Image.MAX_IMAGE_PIXELS``,
  the size at which ``PIL.Image.open`` refuses), checked on the header's dimensions before any decoder allocates
  pixels: simplejpeg reads the JPEG header first, and every PIL read goes through :func:`open_image` (conversion,
  the app and ``predict`` open with ``PIL.Image.open``, which applies the same limit from the same setting).
"""

from __future__ import annotations

import io
import os
from typing import Any

import PIL.Image

from .splits import image_path_problem

try:  # optional (extra "fast"): libjpeg-turbo without PIL's per-row decoding overhead
    import simplejpeg
except ImportError:  # pragma: no cover - exercised where the extra is missing
    simplejpeg = None

__all__ = [
    "DECODED_SCALES",
    "as_rgb",
    "check_pixel_limit",
    "decode_at_least",
    "decode_full",
    "decode_jpeg_rgb",
    "open_image",
    "open_raw_image",
]

#: Key of ``PIL.Image.info`` under which an image opened undecoded by :func:`open_raw_image` keeps its decodes
#: (DCT scale -> RGB image), so that the expressions sharing it decode each scale once.
DECODED_SCALES = "clipvg_decoded_scales"


def check_pixel_limit(width: int, height: int) -> None:
    """Refuse an image whose header declares more pixels than PIL decodes: ``PIL.Image.DecompressionBombError``.

    The limit is PIL's own, read at each call: ``2 * PIL.Image.MAX_IMAGE_PIXELS`` (about 179 million pixels by
    default; ``PIL.Image.MAX_IMAGE_PIXELS = None`` turns it off, as it does for PIL). Checked before decoding, so a
    small file declaring huge dimensions never allocates its pixels, whichever decoder would read it.
    """
    limit = PIL.Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > 2 * limit:
        raise PIL.Image.DecompressionBombError(
            f"image size {width}x{height} ({width * height} pixels) exceeds the limit of {2 * limit} pixels "
            "(2 x PIL.Image.MAX_IMAGE_PIXELS): refused as a possible decompression bomb"
        )


def open_image(source: str | os.PathLike | io.BytesIO) -> PIL.Image.Image:
    """``PIL.Image.open`` (lazy: the header only) with :func:`check_pixel_limit` on the declared size."""
    image = PIL.Image.open(source)
    try:
        check_pixel_limit(*image.size)
    except PIL.Image.DecompressionBombError:
        image.close()
        raise
    return image


def decode_jpeg_rgb(data: bytes, min_width: int = 0, min_height: int = 0) -> PIL.Image.Image | None:
    """Decode JPEG bytes to an RGB image with simplejpeg, or None when it is not installed or cannot decode them.

    Both simplejpeg and PIL decode with libjpeg-turbo's defaults (accurate integer IDCT, smooth chroma upsampling), so
    the pixels are PIL's bit for bit (tested on baseline, progressive, grey and every chroma subsampling); simplejpeg
    skips PIL's row-by-row buffering and is about 1.6x faster. CMYK / YCCK streams (which PIL converts with its own
    formula) and damaged files (strict mode) return None, so PIL reads them and reports its own error.
    ``min_width`` / ``min_height``: decode at the smallest DCT scale that keeps the image at least that large.
    A header declaring more pixels than :func:`check_pixel_limit` allows raises ``DecompressionBombError``.
    """
    if simplejpeg is None or not data.startswith(b"\xff\xd8"):
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None  # no readable header: PIL reports the damage
    check_pixel_limit(width, height)
    if colorspace not in ("YCbCr", "Gray", "RGB"):
        return None  # CMYK / YCCK: PIL converts these with its own formula
    try:
        pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=min_width, min_height=min_height)
    except ValueError:
        return None
    return PIL.Image.frombuffer("RGB", (pixels.shape[1], pixels.shape[0]), pixels, "raw", "RGB", 0, 1)


def open_raw_image(
    image: dict[str, Any], file_name: str, image_root: str | os.PathLike | None = None, decode: bool = True
) -> PIL.Image.Image:
    """Decode an undecoded ``Image`` cell to RGB like the official loader: PIL, no EXIF rotation.

    ``image_root`` re-roots path-mode rows (``<image_root>/<file_name>``) for users whose images moved.
    ``decode=False`` returns the opened, not yet decoded image in its own mode (for transforms that decode at a
    reduced scale, see ``CLIPVGTrainTransform.draft_decode``); a JPEG keeps its decodes per scale in
    ``info[DECODED_SCALES]``.
    """
    problem = image_path_problem(file_name) if image_root is not None else None
    if problem:  # a file name from the data never reaches outside the given root
        raise ValueError(f"cannot read image {file_name!r}: {problem}")
    try:
        path = os.path.join(image_root, file_name) if image_root is not None else image.get("path")
        data = image.get("bytes") if image_root is None else None
        if data is None and decode and str(path).lower().endswith((".jpg", ".jpeg")):
            with open(path, "rb") as handle:  # read once: simplejpeg first, PIL if it declines
                data = handle.read()
        if not decode:
            opened = open_image(io.BytesIO(data) if data is not None else path)
            if opened.format == "JPEG":
                opened.info[DECODED_SCALES] = {}
            return opened
        fast = decode_jpeg_rgb(data) if data is not None else None
        if fast is not None:
            return fast
        with open_image(io.BytesIO(data) if data is not None else path) as opened:
            return opened.convert("RGB")
    except Exception as err:
        raise ValueError(f"cannot read image {file_name!r}: {type(err).__name__}: {err}") from err


def as_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """The image in RGB mode, without the copy ``convert("RGB")`` makes of an image that already is."""
    return image if image.mode == "RGB" else image.convert("RGB")


def decode_at_least(image: PIL.Image.Image, width: int, height: int) -> PIL.Image.Image:
    """Decode an opened, not yet decoded JPEG at the smallest DCT scale (1, 1/2, 1/4 or 1/8, chosen as PIL's
    ``draft`` chooses it) that keeps it at least ``width`` x ``height``; RGB. Other images are decoded as they are.

    With simplejpeg installed the decoding skips PIL's row buffering (entropy decoding, which no DCT scale avoids,
    dominates the cost of a photo); otherwise PIL's ``draft`` does it, on a fresh handle so that ``image`` itself
    stays undecoded. An image opened by :func:`~clipvg_hf.data.open_raw_image` keeps its decodes per scale, so the
    expressions of one image that share it (``GroundingDataset.__getitems__``) decode each scale once.
    """
    if image.format != "JPEG" or not image.tile:  # tile is emptied once the image is decoded
        return as_rgb(image)
    factor = min(image.width // max(width, 1), image.height // max(height, 1))
    scale = next(s for s in (8, 4, 2, 1) if factor >= s)
    memo = image.info.get(DECODED_SCALES)
    if memo is not None and scale in memo:
        return memo[scale]
    data = _file_bytes(image)
    decoded = decode_jpeg_rgb(data, -(-image.width // scale), -(-image.height // scale)) if data is not None else None
    if decoded is None:
        source = open_image(io.BytesIO(data)) if data is not None else image
        source.draft("RGB", (width, height))
        decoded = as_rgb(source)
        decoded.load()
    if memo is not None:
        memo[scale] = decoded
    return decoded


def decode_full(image: PIL.Image.Image) -> PIL.Image.Image:
    """The image at full scale in RGB; an undecoded JPEG goes through :func:`decode_at_least` (same pixels)."""
    return decode_at_least(image, image.width, image.height)


def _file_bytes(image: PIL.Image.Image) -> bytes | None:
    """The encoded bytes behind an opened image (its file or buffer), or None."""
    handle = getattr(image, "fp", None)
    if handle is None:
        return None
    position = handle.tell()
    handle.seek(0)
    data = handle.read()
    handle.seek(position)
    return data
