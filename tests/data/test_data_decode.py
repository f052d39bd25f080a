"""JPEG decoding through simplejpeg gives PIL's pixels bit for bit, and falls back to PIL where it cannot decode;
every decoder refuses an image over PIL's pixel limit from its header."""

import io

import numpy as np
import PIL.Image
import pytest

from clipvg_hf.data.decode import check_pixel_limit, decode_at_least, decode_jpeg_rgb, open_raw_image

from utils.bomb_images import huge_header_jpeg
from utils.data_factory import COCO_DIR, build_pack, coco_pseudo_row, save_split
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


# -- the pixel limit: one guard for every decoder -------------------------------------------------------------------
def _rejects_as_bomb(read) -> str:
    with pytest.raises((ValueError, PIL.Image.DecompressionBombError)) as error:
        read()
    assert "DecompressionBomb" in f"{type(error.value).__name__}: {error.value}", error.value
    return str(error.value)


def test_a_huge_header_jpeg_is_refused_before_any_pixel_is_allocated(tmp_path):
    """A 14000 x 14000 JPEG of a few hundred bytes: simplejpeg would allocate 588 MB for it; the guard reads the
    header and refuses, in every mode the data loaders read an image."""
    import tracemalloc

    data = huge_header_jpeg()
    assert len(data) < 2000
    path = tmp_path / "bomb.jpg"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        assert "14000x14000" in _rejects_as_bomb(lambda: decode_jpeg_rgb(data))
        message = _rejects_as_bomb(lambda: open_raw_image({"bytes": data, "path": None}, "bomb.jpg"))
        assert message.startswith("cannot read image 'bomb.jpg': DecompressionBombError")
        _rejects_as_bomb(lambda: open_raw_image({"bytes": None, "path": str(path)}, "bomb.jpg"))
        _rejects_as_bomb(lambda: open_raw_image({"bytes": data, "path": None}, "bomb.jpg", decode=False))
        _rejects_as_bomb(lambda: open_raw_image({}, "bomb.jpg", image_root=tmp_path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, f"{peak / 2**20:.0f} MiB allocated"


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_the_limit_is_pils_setting_for_jpeg_and_other_formats(monkeypatch):
    """Lowering ``PIL.Image.MAX_IMAGE_PIXELS`` lowers it for simplejpeg as for PIL: refused above twice the setting
    (where PIL refuses), read at it, and ``None`` turns it off."""
    image = PIL.Image.new("RGB", (40, 25), (10, 200, 30))  # 1000 pixels
    jpeg = _encode(image, quality=90)
    png = io.BytesIO()
    image.save(png, format="PNG")
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 499)
    _rejects_as_bomb(lambda: decode_jpeg_rgb(jpeg))
    for data, name in ((jpeg, "small.jpg"), (png.getvalue(), "small.png")):
        _rejects_as_bomb(lambda data=data, name=name: open_raw_image({"bytes": data, "path": None}, name))
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 500)
    assert decode_jpeg_rgb(jpeg).size == (40, 25)
    assert open_raw_image({"bytes": png.getvalue(), "path": None}, "small.png").size == (40, 25)
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", None)
    check_pixel_limit(10**6, 10**6)


def test_training_data_with_draft_decode_refuses_the_bomb(monkeypatch):
    """The training transform's reduced-scale decoding opens through the same guard."""
    image = PIL.Image.new("RGB", (64, 48), (10, 200, 30))
    jpeg = _encode(image, quality=90)
    opened = open_raw_image({"bytes": jpeg, "path": None}, "small.jpg", decode=False)
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 100)
    _rejects_as_bomb(lambda: decode_at_least(opened, 16, 12))


def test_conversion_reports_the_bomb_as_a_bad_row(tmp_path, capsys):
    """``clipvg-convert-splits`` opens images with PIL, whose limit is the same setting: the row is refused."""
    from clipvg_hf.commands.convert_splits import main

    splits, images = build_pack(tmp_path / "pack")
    (images / COCO_DIR / "bomb.jpg").write_bytes(huge_header_jpeg())
    save_split(splits / "unc" / "unc_train_pseudo.pth", [coco_pseudo_row("bomb.jpg", [1.0, 1.0, 5.0, 5.0], "x")])
    argv = ["--split_root", str(splits), "--image_root", str(images), "--output_dir", str(tmp_path / "hf")]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--setting", "unsup-single", "--datasets", "unc"])
    error = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(error.splitlines()) == 1
    assert "unc_train_pseudo.pth: row 0:" in error and "DecompressionBombError" in error
    assert not (tmp_path / "hf").exists()
