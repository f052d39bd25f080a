"""JPEG decoding through simplejpeg gives PIL's pixels bit for bit, and falls back to PIL where it cannot decode."""

import io

import numpy as np
import PIL.Image
import pytest

from clipvg_hf.data.decode import decode_jpeg_rgb, open_raw_image

from utils.paths import COCO_IMAGES

COCO = COCO_IMAGES
PHOTOS = sorted(COCO.glob("*.jpg"))


def _pil_rgb(data: bytes) -> np.ndarray:
    with PIL.Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def _encode(image: PIL.Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **options)
    return buffer.getvalue()


@pytest.mark.parametrize("path", PHOTOS, ids=lambda p: p.name)
def test_fixture_photos_decode_to_the_pil_pixels(path):
    data = path.read_bytes()
    fast = decode_jpeg_rgb(data)
    assert fast is not None and fast.mode == "RGB"
    assert np.array_equal(np.asarray(fast), _pil_rgb(data))


@pytest.mark.parametrize(
    "options",
    [
        {"subsampling": 0, "quality": 95},
        {"subsampling": 1, "quality": 80},
        {"subsampling": 2, "quality": 60},
        {"progressive": True, "quality": 85},
        {"optimize": True, "quality": 75, "subsampling": 2},
    ],
    ids=["444", "422", "420", "progressive", "optimized"],
)
def test_encoder_variants_and_odd_sizes_decode_to_the_pil_pixels(options):
    with PIL.Image.open(PHOTOS[0]) as photo:
        crop = photo.convert("RGB").crop((3, 5, 336, 256))  # 333 x 251: odd sides, partial MCUs
    for image in (crop, crop.convert("L")):
        data = _encode(image, **options)
        fast = decode_jpeg_rgb(data)
        assert fast is not None and np.array_equal(np.asarray(fast), _pil_rgb(data)), (image.mode, options)


def test_cmyk_and_non_jpeg_fall_back_to_pil(tmp_path):
    with PIL.Image.open(PHOTOS[1]) as photo:
        cmyk = _encode(photo.convert("CMYK").resize((64, 48)))
    assert decode_jpeg_rgb(cmyk) is None
    path = tmp_path / "cmyk.jpg"
    path.write_bytes(cmyk)
    image = open_raw_image({"bytes": None, "path": str(path)}, "cmyk.jpg")
    assert image.mode == "RGB" and np.array_equal(np.asarray(image), _pil_rgb(cmyk))
    png = io.BytesIO()
    PIL.Image.new("RGB", (8, 8), "red").save(png, format="PNG")
    assert decode_jpeg_rgb(png.getvalue()) is None


def test_damaged_jpeg_is_refused_with_the_file_name():
    data = PHOTOS[2].read_bytes()
    truncated = data[: len(data) // 2]
    assert decode_jpeg_rgb(truncated) is None  # strict: simplejpeg does not fill in the missing half
    with pytest.raises(ValueError, match="cannot read image 'broken.jpg'"):
        open_raw_image({"bytes": truncated, "path": None}, "broken.jpg")
