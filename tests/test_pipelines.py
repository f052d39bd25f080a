"""End to end with the converted fixture checkpoint: processor -> model parity, both pipelines, README snippets."""

import PIL.Image
import pytest
import torch
from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor, pipeline

import clipvg_hf  # noqa: F401  (registers CLIP-VG and the "visual-grounding" task)
from clipvg_hf import VisualGroundingPipeline

from utils.parity_processing import (
    EVAL_SPLITS,
    expected_json,
    expected_tensors,
    load_split,
    official_hits_iou,
    save_fixture_model,
)
from utils.readme_snippets import PROCESSOR_AND_MODEL, VISUAL_GROUNDING_PIPELINE


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_fixture_model(tmp_path_factory.mktemp("clipvg_fixture_model"))


@pytest.fixture(scope="module")
def model(model_dir):
    return AutoModelForZeroShotObjectDetection.from_pretrained(model_dir).eval()


@pytest.fixture(scope="module")
def processor(model_dir):
    return AutoProcessor.from_pretrained(model_dir)


def _expected_pixel_boxes(processor, split, indices, images):
    """The official predictions of the fixture, mapped to original pixels."""
    pred = expected_tensors()[f"{split}/pred_boxes"][indices][:, None].double()
    sizes = [(image.height, image.width) for image in images]
    return torch.cat(
        [
            r["boxes"]
            for r in processor.image_processor.post_process_object_detection({"pred_boxes": pred}, target_sizes=sizes)
        ]
    )


@pytest.mark.parametrize("split", EVAL_SPLITS)
def test_processor_and_converted_model_reproduce_official_predictions(model, processor, split):
    samples = load_split(split)
    (box_format,) = {s.box_format for s in samples}
    inputs = processor(
        images=[PIL.Image.open(s.image_path) for s in samples],
        text=[s.phrase for s in samples],
        boxes=[s.box for s in samples],
        box_format=box_format,
        truncate_boxes=True,
        return_tensors="pt",
    )
    labels = inputs.pop("labels")
    with torch.no_grad():
        outputs = model(**inputs)
    expected = expected_tensors()
    assert outputs.logits is None and outputs.pred_boxes.shape == (len(samples), 1, 4)
    pred = outputs.pred_boxes[:, 0]
    delta = (pred - expected[f"{split}/pred_boxes"]).abs().max().item()
    print(f"{split}: max|Δ| pred_boxes {delta:.3g}")
    assert delta <= 1e-4
    hits, iou = official_hits_iou(pred, labels)
    assert hits.sum().item() / len(samples) == expected_json()["splits"][split]["acc_at_0.5"]
    assert torch.equal(hits, expected[f"{split}/iou"] >= 0.5)
    torch.testing.assert_close(iou, expected[f"{split}/iou"], atol=1e-5, rtol=0)


def test_zero_shot_object_detection_pipeline(model_dir, processor):
    """The stock transformers pipeline works unmodified; candidate labels are the expressions."""
    detector = pipeline("zero-shot-object-detection", model=str(model_dir))
    samples = load_split("unc/val")[:2]  # two expressions about the same image
    image = PIL.Image.open(samples[0].image_path).convert("RGB")
    results = detector(image, candidate_labels=[s.phrase for s in samples])
    assert [r["label"] for r in results] == [s.phrase for s in samples]
    assert all(r["score"] == 1.0 for r in results)
    expected = _expected_pixel_boxes(processor, "unc/val", [0, 1], [image, image])
    for result, box in zip(results, expected, strict=True):
        got = torch.tensor([result["box"][k] for k in ("xmin", "ymin", "xmax", "ymax")], dtype=torch.float64)
        assert (got - box).abs().max() <= 1.0  # the stock pipeline truncates to whole pixels


def test_visual_grounding_pipeline_batches_the_expressions_of_an_image(model_dir, model, processor):
    grounder = pipeline("visual-grounding", model=str(model_dir))
    assert isinstance(grounder, VisualGroundingPipeline)
    batch_sizes = []
    handle = grounder.model.register_forward_pre_hook(
        lambda m, args, kwargs: batch_sizes.append(len(kwargs["input_ids"])), with_kwargs=True
    )
    samples = load_split("unc/val")
    try:
        image_a, image_b = (PIL.Image.open(samples[i].image_path).convert("RGB") for i in (0, 2))
        single = grounder(image_a, text=samples[0].phrase)
        many = grounder([image_a, image_b], text=[[samples[0].phrase, samples[1].phrase], [samples[2].phrase]])
        as_dicts = grounder([{"image": str(samples[2].image_path), "text": [samples[2].phrase]}])
    finally:
        handle.remove()
    assert batch_sizes == [1, 2, 1, 1]
    expected = _expected_pixel_boxes(processor, "unc/val", [0, 1, 2], [image_a, image_a, image_b])
    flat = [single[0], *many[0], *many[1]]
    assert [r["label"] for r in flat] == [samples[i].phrase for i in (0, 0, 1, 2)]
    for result, index in zip(flat, (0, 0, 1, 2), strict=True):
        got = torch.tensor([result["box"][k] for k in ("xmin", "ymin", "xmax", "ymax")], dtype=torch.float64)
        tolerance = 1e-4 * max(image_a.size if index < 2 else image_b.size)  # 1e-4 on the canvas, in pixels
        assert (got - expected[index]).abs().max() <= tolerance
        assert result["score"] == 1.0
    assert as_dicts[0][0]["box"] == many[1][0]["box"]


def test_visual_grounding_pipeline_rejects_bad_input(model_dir):
    grounder = pipeline("visual-grounding", model=str(model_dir))
    image = PIL.Image.new("RGB", (32, 32))
    with pytest.raises(ValueError, match="needs an image and `text`"):
        grounder(image)
    with pytest.raises(ValueError, match="Expression 0 is empty"):
        grounder(image, text="   ")
    with pytest.raises(TypeError, match="threshold"):
        grounder(image, text="a cat", threshold=0.3)


def test_readme_snippets_run(model_dir, capsys):
    photo = str(load_split("unc/val")[0].image_path)
    for snippet in (PROCESSOR_AND_MODEL, VISUAL_GROUNDING_PIPELINE):
        exec(snippet.replace("path/to/clipvg-model", str(model_dir)).replace("photo.jpg", photo), {})
    printed = capsys.readouterr().out
    assert printed.count("the umbrella") == 2 and "woman holding a pink umbrella" in printed


@pytest.fixture(scope="module")
def grounder(model_dir):
    return pipeline("visual-grounding", model=str(model_dir))


@pytest.mark.parametrize(
    ("image", "text", "message"),
    [
        ("rgb", 123, "`text` must be a string or a list of strings, got int 123"),
        ("rgb", ["a", 5], "`text` item 1 must be a string, got int 5"),
        ("{tmp}/missing.jpg", "a", "Image file not found: '{tmp}/missing.jpg'"),
        ("{tmp}/bad.jpg", "a", "Could not load image '{tmp}/bad.jpg'"),
        ("http://127.0.0.1:9/photo.jpg", "a", "Could not load image 'http://127.0.0.1:9/photo.jpg'"),
        ("thin", "a", "Image of 10000x1 pixels is too thin"),
    ],
)
def test_bad_inputs_are_errors_naming_the_input(grounder, tmp_path, image, text, message):
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    images = {"rgb": PIL.Image.new("RGB", (64, 48)), "thin": PIL.Image.new("RGB", (10000, 1))}
    source = images.get(image, image.format(tmp=tmp_path))
    with pytest.raises(ValueError) as error:
        grounder(source, text=text, timeout=5)
    assert message.format(tmp=tmp_path) in str(error.value)
