"""CLIPVGImageProcessor: official letterbox parity, image modes, bad input and exact box post-processing."""

import numpy as np
import PIL.Image
import pytest
import torch

from clipvg_hf.boxes_clipvg import boxes_to_xyxy, letterbox_geometry, xyxy_to_canvas_cxcywh
from clipvg_hf.image_processing_clipvg import CLIPVGImageProcessor

from utils.parity_processing import EVAL_SPLITS, expected_tensors, fixture_pixel_tolerance, load_split


@pytest.fixture(scope="module")
def image_processor() -> CLIPVGImageProcessor:
    return CLIPVGImageProcessor()


def _fixture_batch(image_processor, split):
    samples = load_split(split)
    images = [PIL.Image.open(s.image_path) for s in samples]
    (box_format,) = {s.box_format for s in samples}
    inputs = image_processor(
        images, boxes=[s.box for s in samples], box_format=box_format, truncate_boxes=True, return_tensors="pt"
    )
    return samples, images, inputs


@pytest.mark.parametrize("split", EVAL_SPLITS)
def test_matches_official_eval_transform(image_processor, split):
    """Pixels, pad mask and targets equal what the official eval transform produced for the fixture images."""
    _, _, inputs = _fixture_batch(image_processor, split)
    expected = expected_tensors()
    stored_pixels = expected[f"{split}/pixel_values"]
    pixel_delta = (inputs["pixel_values"] - stored_pixels.float()).abs().max().item()
    label_delta = (inputs["labels"] - expected[f"{split}/target_boxes"]).abs().max().item()
    print(f"{split}: max|Δ| pixels {pixel_delta:.3g}, labels {label_delta:.3g}")
    assert inputs["pixel_values"].dtype == torch.float32
    assert pixel_delta <= fixture_pixel_tolerance()
    # The fixture stores fp16; our fp32 pixels round to exactly the stored values (all but one strip's few pixels
    # before Pillow 13, see fixture_pixel_tolerance).
    mismatched = (inputs["pixel_values"].half() != stored_pixels).float().mean()
    assert mismatched == 0 if int(PIL.__version__.split(".")[0]) >= 13 else mismatched < 0.01
    assert torch.equal(inputs["pixel_mask"], 1 - expected[f"{split}/pad_mask"].long())
    assert label_delta <= 1e-6


def test_batch_result_does_not_depend_on_batching(image_processor):
    _, images, inputs = _fixture_batch(image_processor, "unc/val")
    single = image_processor(images[10], return_tensors="pt")  # the 900x40 strip
    assert torch.equal(single["pixel_values"][0], inputs["pixel_values"][10])
    assert torch.equal(single["pixel_mask"][0], inputs["pixel_mask"][10])


def test_resized_side_uses_round_not_int(image_processor):
    """900x40 at 224: 40 * 224 / 900 = 9.96 must give 10 rows (int() would give 9), centred with round(d/2 - 0.1)."""
    image = PIL.Image.new("RGB", (900, 40), (200, 10, 10))
    mask = image_processor(image, return_tensors="np")["pixel_mask"][0]
    rows = np.flatnonzero(mask.any(axis=1))
    assert len(rows) == round(40 * 224 / 900) == 10
    assert rows[0] == round((224 - 10) / 2 - 0.1)
    assert mask.any(axis=0).all()  # the long side fills the canvas


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "1", "I", "F"])
def test_every_pil_mode_is_converted_like_pil(image_processor, mode):
    rng = np.random.default_rng(0)
    rgb = PIL.Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8))
    if mode == "I;16":
        image = PIL.Image.fromarray(rng.integers(0, 300, (37, 53), dtype=np.uint16))
    else:
        image = rgb.convert(mode)
    assert image.mode == mode
    out = image_processor(image, return_tensors="np")["pixel_values"]
    reference = image_processor(image.convert("RGB"), return_tensors="np")["pixel_values"]
    assert out.shape == (1, 3, 224, 224)
    np.testing.assert_array_equal(out, reference)


def test_transparent_pixels_are_not_composited_on_white(image_processor):
    """PIL's RGBA->RGB drops alpha (the official behaviour); transformers' convert_to_rgb would paint them white."""
    image = PIL.Image.new("RGBA", (32, 32), (10, 20, 30, 0))
    pixels = image_processor(image, return_tensors="np")["pixel_values"][0]
    expected = (np.array([10, 20, 30]) / 255 - np.array(image_processor.image_mean)) / np.array(
        image_processor.image_std
    )
    np.testing.assert_allclose(pixels[:, 112, 112], expected, atol=1e-6)


def test_numpy_torch_and_path_inputs_match_pil(image_processor):
    samples = load_split("unc/val")
    path = samples[13].image_path  # the RGBA image
    rgb = np.array(PIL.Image.open(path).convert("RGB"))
    reference = image_processor(PIL.Image.open(path), return_tensors="np")["pixel_values"]
    for other in (rgb, torch.from_numpy(rgb).permute(2, 0, 1), str(path), path):
        np.testing.assert_array_equal(image_processor(other, return_tensors="np")["pixel_values"], reference)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (PIL.Image.new("RGB", (0, 5)), "empty image"),
        (PIL.Image.new("L", (7, 0)), "empty image"),
        (np.zeros((0, 4, 3), dtype=np.uint8), "non-empty image"),
        ([], "empty list of images"),
        (None, "None instead of an image"),
    ],
)
def test_empty_images_are_rejected(image_processor, image, message):
    with pytest.raises(ValueError, match=message):
        image_processor(image)


def test_unreadable_and_missing_files_are_rejected(image_processor, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"this is not a jpeg")
    with pytest.raises(ValueError, match="Could not read image .*broken.jpg"):
        image_processor(str(broken))
    truncated = tmp_path / "truncated.png"
    PIL.Image.new("RGB", (64, 64), (1, 2, 3)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:60])
    with pytest.raises(ValueError, match="Could not read image .*truncated.png"):
        image_processor(truncated)
    with pytest.raises(ValueError, match="Could not read image .*missing.png"):
        image_processor(str(tmp_path / "missing.png"))


@pytest.mark.parametrize(
    ("boxes", "kwargs", "message"),
    [
        ([[1, 2, 3]], {}, r"shape \(4,\) or \(N, 4\)"),
        ([[5, 5, 1, 9]], {}, "x2 >= x1"),
        ([[0, 0, 1, 1], [0, 0, 2, 2]], {}, "2 boxes for 1 images"),
        ([[0, 0, float("nan"), 1]], {}, "finite"),
        ([[0, 0, 1, 1]], {"box_format": "cxcywh"}, "box_format='cxcywh' is not supported"),
    ],
)
def test_bad_boxes_are_rejected(image_processor, boxes, kwargs, message):
    with pytest.raises(ValueError, match=message):
        image_processor(PIL.Image.new("RGB", (20, 10)), boxes=boxes, **kwargs)


def test_settings_that_break_the_letterbox_are_rejected():
    with pytest.raises(ValueError, match="longest_edge"):
        CLIPVGImageProcessor(size={"height": 224, "width": 224})
    with pytest.raises(ValueError, match="do_resize=False"):
        CLIPVGImageProcessor(do_resize=False)


def test_box_truncation_follows_the_official_loader():
    """xywh annotations: every number is cut first, so x2 = int(x) + int(w), not int(x + w)."""
    box = [0.9, 2.7, 10.6, 3.8]
    np.testing.assert_array_equal(boxes_to_xyxy(box, "xywh", truncate=True), [[0, 2, 10, 5]])
    np.testing.assert_array_equal(boxes_to_xyxy(box, "xywh", truncate=False), [[0.9, 2.7, 11.5, 6.5]])


@pytest.mark.parametrize("split", EVAL_SPLITS)
def test_post_processing_inverts_the_letterbox_exactly(image_processor, split):
    """Original pixels -> canvas labels -> post-processing gives the original box back."""
    samples, images, inputs = _fixture_batch(image_processor, split)
    target_sizes = [(image.height, image.width) for image in images]
    originals = np.concatenate([boxes_to_xyxy(s.box, s.box_format, truncate=True) for s in samples])
    # float64 canvas boxes: exact up to rounding error
    exact = np.stack(
        [
            xyxy_to_canvas_cxcywh(box[None], letterbox_geometry(h, w, 224), 224)[0]
            for box, (h, w) in zip(originals, target_sizes, strict=True)
        ]
    )
    results = image_processor.post_process_object_detection(
        {"pred_boxes": torch.from_numpy(exact)[:, None]}, target_sizes=target_sizes
    )
    back = torch.stack([r["boxes"][0] for r in results]).numpy()
    clamped = np.minimum(originals, np.array([[w, h, w, h] for h, w in target_sizes]))
    np.testing.assert_allclose(back, clamped, rtol=0, atol=1e-9)
    # the processor's float32 labels: within float32 resolution of a few hundred pixels
    results = image_processor.post_process_object_detection(
        {"pred_boxes": inputs["labels"][:, None]}, target_sizes=torch.tensor(target_sizes)
    )
    back32 = torch.stack([r["boxes"][0] for r in results]).numpy()
    np.testing.assert_allclose(back32, clamped, rtol=0, atol=1e-3)


def test_canvas_box_maps_to_pixels_and_back(image_processor):
    """Canvas -> original pixels -> canvas is the identity for boxes inside the image area."""
    rng = np.random.default_rng(1)
    for height, width in [(480, 640), (700, 33), (40, 900), (412, 448), (224, 224)]:
        geometry = letterbox_geometry(height, width, 224)
        x1y1 = rng.uniform(0, 0.4, (6, 2)) * [width, height]
        x2y2 = x1y1 + rng.uniform(0.1, 0.5, (6, 2)) * [width, height]
        canvas = xyxy_to_canvas_cxcywh(np.concatenate([x1y1, x2y2], 1), geometry, 224)
        pixels = image_processor.post_process_object_detection(
            {"pred_boxes": torch.from_numpy(canvas)[None]}, target_sizes=[(height, width)]
        )[0]["boxes"]
        again = xyxy_to_canvas_cxcywh(pixels.numpy(), geometry, 224)
        np.testing.assert_allclose(again, canvas, rtol=0, atol=1e-12)


def test_post_processing_clamps_to_the_image_and_reports_constant_scores(image_processor):
    whole_canvas = torch.tensor([[[0.5, 0.5, 1.0, 1.0]]])
    result = image_processor.post_process_object_detection({"pred_boxes": whole_canvas}, target_sizes=[(40, 900)])[0]
    torch.testing.assert_close(result["boxes"], torch.tensor([[0.0, 0.0, 900.0, 40.0]]), rtol=0, atol=1e-4)
    # CLIP-VG has no confidence head: one box per query, score 1.0 whatever the threshold up to 1
    assert result["scores"].tolist() == [1.0] and result["labels"].tolist() == [0]
    assert (
        len(image_processor.post_process_object_detection({"pred_boxes": whole_canvas}, threshold=1.0)[0]["boxes"])
        == 1
    )
    # without target sizes: normalised corners on the canvas
    normalised = image_processor.post_process_object_detection({"pred_boxes": whole_canvas})[0]["boxes"]
    torch.testing.assert_close(normalised, torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    with pytest.raises(ValueError, match="2 target sizes for 1 images"):
        image_processor.post_process_object_detection({"pred_boxes": whole_canvas}, target_sizes=[(1, 1), (2, 2)])


def test_logits_when_present_become_sigmoid_scores(image_processor):
    outputs = {"pred_boxes": torch.full((2, 1, 4), 0.5), "logits": torch.tensor([[[0.0]], [[-3.0]]])}
    results = image_processor.post_process_object_detection(outputs, threshold=0.1)
    assert results[0]["scores"].tolist() == [0.5]
    assert len(results[1]["boxes"]) == 0  # sigmoid(-3) = 0.047 < 0.1


def test_image_processor_save_and_load(image_processor, tmp_path):
    custom = CLIPVGImageProcessor(size={"longest_edge": 160}, truncate_boxes=True)
    custom.save_pretrained(tmp_path)
    loaded = CLIPVGImageProcessor.from_pretrained(tmp_path)
    assert loaded.to_dict()["image_processor_type"] == "CLIPVGImageProcessor"
    assert loaded.size.longest_edge == 160 and loaded.truncate_boxes is True
    out = loaded(PIL.Image.new("RGB", (50, 20)), boxes=[1.7, 1.2, 10.9, 5.5], return_tensors="np")
    assert out["pixel_values"].shape == (1, 3, 160, 160)
    geometry = letterbox_geometry(20, 50, 160)
    np.testing.assert_allclose(
        out["labels"], xyxy_to_canvas_cxcywh(np.array([[1.0, 1.0, 10.0, 5.0]]), geometry, 160), atol=1e-7
    )


def test_do_convert_rgb_false_keeps_the_channels(image_processor):
    rgba = np.random.default_rng(0).integers(0, 256, (20, 30, 4), dtype=np.uint8)
    kept = image_processor(rgba, do_convert_rgb=False, image_mean=[0.0] * 4, image_std=[1.0] * 4, return_tensors="np")[
        "pixel_values"
    ]
    assert kept.shape == (1, 4, 224, 224)
    converted = image_processor(rgba, return_tensors="np")["pixel_values"]  # alpha dropped, as convert("RGB")
    expected = image_processor(np.ascontiguousarray(rgba[..., :3]), return_tensors="np")["pixel_values"]
    assert converted.shape == (1, 3, 224, 224) and np.array_equal(converted, expected)
    grey = PIL.Image.fromarray(rgba[..., 0])
    assert image_processor(grey, do_convert_rgb=False, image_mean=[0.0], image_std=[1.0], return_tensors="np")[
        "pixel_values"
    ].shape == (1, 1, 224, 224)
    assert image_processor(grey, return_tensors="np")["pixel_values"].shape == (1, 3, 224, 224)
