"""The data fast paths: exact by default (same pixels as the official-style flow), opt-ins keep the geometry.

Also smoke runs of both benchmarks (tiny sizes, no timing asserts).
"""

import numpy as np
import PIL.Image
import pytest
import torch

from benchmarks import bench_data, bench_model
from clipvg_hf.data import CLIPVGTrainTransform
from clipvg_hf.data import decode as decode_module
from clipvg_hf.data.transforms import decode_at_least, draft_region, normalize_and_pad

from utils.paths import COCO_IMAGES

COCO = COCO_IMAGES
TEXTS = ("a person", "the dog", "man on the left", "laptop")  # the last two never take the crop branch


def _images():
    return [PIL.Image.open(path) for path in sorted(COCO.glob("*.jpg"))] + [PIL.Image.open(COCO / "rgba_small.png")]


def _box(image):
    return [image.width * 0.2, image.height * 0.3, image.width * 0.7, image.height * 0.9]


def test_normalize_and_pad_matches_torch_arithmetic():
    image = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (150, 201, 3), dtype=np.uint8))
    box = torch.tensor([10.0, 20.0, 100.0, 120.0])
    ours = normalize_and_pad(image, box, 224, np.random.default_rng(1))
    reference = bench_data.official_normalize_and_pad(image, box, 224, np.random.default_rng(1))
    for key in ("pixel_values", "pixel_mask", "labels"):
        assert torch.equal(ours[key], reference[key]), key


@pytest.mark.parametrize("seed", range(6))
def test_train_transform_gives_the_official_style_pixels(seed):
    official, ours = bench_data.OfficialStyleTrainTransform(), CLIPVGTrainTransform()
    for image in _images():
        for text in TEXTS:
            a = official(image, _box(image), text, np.random.default_rng(seed))
            b = ours(image, _box(image), text, np.random.default_rng(seed))
            for key in ("pixel_values", "pixel_mask", "labels"):
                assert torch.equal(a[key], b[key]), (image.filename, text, key)


@pytest.mark.parametrize("seed", range(6))
def test_opt_in_fast_decode_and_resize_keep_geometry_and_randomness(seed):
    exact, fast = CLIPVGTrainTransform(), CLIPVGTrainTransform(draft_decode=True, fused_crop_resize=True)
    assert fast.lazy_image and not exact.lazy_image
    for path in sorted(COCO.glob("*.jpg")):
        for text in TEXTS:
            decoded = PIL.Image.open(path).convert("RGB")
            a = exact(decoded, _box(decoded), text, np.random.default_rng(seed))
            b = fast(PIL.Image.open(path), _box(decoded), text, np.random.default_rng(seed))  # not yet decoded
            assert a["meta"] == b["meta"] and a["offset"] == b["offset"]
            assert torch.equal(a["pixel_mask"], b["pixel_mask"])
            torch.testing.assert_close(a["labels"], b["labels"], atol=1e-6, rtol=0)
            real = a["pixel_mask"].bool()
            difference = (a["pixel_values"] - b["pixel_values"])[:, real].abs().mean()
            assert difference < 0.2, (path.name, text, float(difference))  # normalised units: ~10 grey levels


def test_draft_region_decodes_reduced_but_keeps_the_region():
    path = sorted(COCO.glob("*.jpg"))[0]
    full = PIL.Image.open(path).convert("RGB")
    source = (40.0, 60.0, 440.0, 560.0)  # 400 x 500 pixels of the full image, wanted at 100 x 125
    image, mapped = draft_region(PIL.Image.open(path), source, 100, 125)
    assert image.width < full.width and image.height < full.height  # decoded at a DCT scale of 1/2 or less
    fx, fy = image.width / full.width, image.height / full.height
    assert (mapped[2] - mapped[0]) >= 100 and (mapped[3] - mapped[1]) >= 125  # still covers the output
    assert mapped == pytest.approx((40 * fx, 60 * fy, 440 * fx, 560 * fy))
    assert image.mode == "RGB"
    reduced = np.asarray(image.resize((100, 125), PIL.Image.BILINEAR, box=mapped), dtype=np.float32)
    exact = np.asarray(full.resize((100, 125), PIL.Image.BILINEAR, box=source), dtype=np.float32)
    assert np.abs(reduced - exact).mean() < 6  # grey levels: the same picture, slightly smoother
    png = PIL.Image.open(COCO / "rgba_small.png")
    decoded, mapped = draft_region(png, (0, 0, 10, 10), 5, 5)  # only JPEGs have DCT scales
    assert decoded.mode == "RGB" and decoded.size == png.size and mapped == (0, 0, 10, 10)


@pytest.mark.parametrize("fast", [True, False], ids=["simplejpeg", "pil-draft"])
def test_decode_at_least_picks_the_draft_scale_with_either_decoder(fast, monkeypatch):
    """Both decoders reduce by the same power of two, and give nearly the same pixels."""
    if not fast:
        monkeypatch.setattr(decode_module, "simplejpeg", None)
    path = sorted(COCO.glob("*.jpg"))[0]  # 481 x 640
    with PIL.Image.open(path) as reference:
        reference.draft("RGB", (100, 150))
        expected = np.asarray(reference.convert("RGB"), dtype=np.float32)
    image = decode_at_least(PIL.Image.open(path), 100, 150)  # 481 // 100 = 4, 640 // 150 = 4 -> 1/4
    assert image.mode == "RGB" and image.size == (121, 160) == expected.shape[1::-1]
    assert np.abs(np.asarray(image, dtype=np.float32) - expected).mean() < 0.5
    decoded = PIL.Image.open(path).convert("RGB")
    assert decode_at_least(decoded, 100, 150) is decoded  # already decoded: left alone


def test_bench_model_quick_smoke(tmp_path):
    result = bench_model.main(["--quick", "--repeats", "1", "--json", str(tmp_path / "model.json")])
    assert (tmp_path / "model.json").is_file()
    for name, row in result["eval"]["paths"].items():
        assert row["max_abs_box_diff"] < 1e-5, name
        assert row["per_s"] > 0 and row["flops_per_unit"] > 0
    assert set(result["train"]["paths"]) == {"official settings", "ours", "ours, frozen ViT (deviation)"}


def test_bench_model_bf16_autocast_path_on_cpu(tmp_path):
    """The path CUDA runs by default (bf16 autocast for our paths), forced on the CPU."""
    result = bench_model.main(["--quick", "--repeats", "1", "--bf16", "on", "--json", str(tmp_path / "model.json")])
    rows = result["eval"]["paths"]
    assert rows["official settings"]["max_abs_box_diff"] == 0  # the reference stays fp32
    for name in ("ours (grouped by image)", "ours, image per expression"):
        assert 0 < rows[name]["max_abs_box_diff"] < 0.05, name  # bf16 rounding: visible, but small
    assert all(row["per_s"] > 0 for row in result["train"]["paths"].values())


def test_bench_data_quick_smoke(tmp_path):
    result = bench_data.main(["--quick", "--samples", "16", "--json", str(tmp_path / "data.json")])
    assert result["identical_samples"] == result["checked_samples"] > 0
    assert {row["path"] for row in result["rows"]} >= {"official-style", "ours"}


def test_bench_data_refcoco_shaped_pack_groups_its_runs(tmp_path):
    result = bench_data.main(
        [
            "--quick",
            "--samples",
            "32",
            "--jpeg_only",
            "--expressions_per_image",
            "7",
            "--json",
            str(tmp_path / "data.json"),
        ]
    )
    assert result["expressions"] == 35  # the fixture's 5 JPEG photos, 7 expressions each
    per_decode = {row["path"]: row["expressions_per_decode"] for row in result["rows"] if row["mode"] == "train"}
    assert per_decode["ours"] == 1.0  # never two of one image in a row without grouping
    assert per_decode["ours, grouped by image (opt-in)"] > 4
