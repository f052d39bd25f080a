"""CLIPVGProcessor and the offline CLIP tokenizer: official ids, text rules, pairing, saving and remote code."""

import gzip
import json
import textwrap
import warnings

import numpy as np
import PIL.Image
import pytest
import torch

from clipvg_hf import CLIPVGImageProcessor, CLIPVGProcessor
from clipvg_hf.processing_clipvg import build_clip_tokenizer, clean_text, default_bpe_path

from utils.parity_processing import (
    BPE_PATH,
    EVAL_SPLITS,
    expected_json,
    expected_tensors,
    fixture_pixel_tolerance,
    load_split,
    run_fresh_python,
)


@pytest.fixture(scope="module")
def tokenizer():
    return build_clip_tokenizer(BPE_PATH)


@pytest.fixture(scope="module")
def processor(tokenizer):
    return CLIPVGProcessor(CLIPVGImageProcessor(), tokenizer)


def _official_cases(kind: str) -> list[dict]:
    cases = expected_json()["tokenizer_cases"]
    return [c for c in cases if (kind in c)]


@pytest.mark.parametrize("case", _official_cases("ids"), ids=lambda c: repr(c["text"][:24]))
def test_tokenizer_ids_equal_official(tokenizer, case):
    assert tokenizer(clean_text(case["text"]))["input_ids"] == case["ids"]


def test_html_entities_need_the_official_cleaning(tokenizer):
    (case,) = [c for c in _official_cases("ids") if "&amp;" in c["text"]]
    assert tokenizer(case["text"])["input_ids"] != case["ids"]  # CLIPTokenizer alone does not un-escape HTML
    assert clean_text("Caf\u00c3\u00a9  &amp;amp;  Table\n") == "caf\u00e9 & table"  # ftfy, double unescape, spaces


@pytest.mark.parametrize("case", _official_cases("error"), ids=lambda c: repr(c["text"][:24]))
def test_over_long_expression_official_error_and_truncation(processor, tokenizer, case):
    """The official tokenizer refused this text: truncation=False refuses it too; the default truncates and warns."""
    assert case["error"].startswith("Input ")  # the official RuntimeError message quotes the text
    with pytest.raises(ValueError, match=r"Expression 0 \('a a a .*more than 77.*truncation=True"):
        processor(text=case["text"], truncation=False)
    with pytest.warns(UserWarning, match=r"Expression 0 \('a a a .*truncated to its first 75 BPE tokens"):
        out = processor(text=[case["text"], "short one"])
    full = tokenizer(clean_text(case["text"]), verbose=False)["input_ids"]
    assert len(full) > 77
    assert out["input_ids"][0] == full[:76] + [tokenizer.eos_token_id]
    # every official case that did not raise stays within the context, and warns about nothing
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        processor(text=[c["text"] for c in _official_cases("ids") if c["text"].strip()], truncation=False)


def test_bundled_bpe_file_is_openais(tokenizer):
    assert default_bpe_path().read_bytes() == BPE_PATH.read_bytes()
    bundled = build_clip_tokenizer()
    assert bundled.get_vocab() == tokenizer.get_vocab() and len(bundled) == 49408
    assert (bundled.bos_token_id, bundled.eos_token_id, bundled.pad_token_id) == (49406, 49407, 49407)


def test_bad_bpe_file_is_rejected(tmp_path):
    with pytest.raises(FileNotFoundError, match="openai/clip-vit-base-patch16"):
        build_clip_tokenizer(tmp_path / "nope.txt.gz")
    bad = tmp_path / "bad.txt.gz"
    with gzip.open(bad, "wt") as handle:
        handle.write("#version: 0.2\na b\n")
    with pytest.raises(ValueError, match="not OpenAI's CLIP BPE file"):
        build_clip_tokenizer(bad)


@pytest.mark.parametrize("split", EVAL_SPLITS)
def test_processor_matches_official_inputs(processor, split):
    samples = load_split(split)
    (box_format,) = {s.box_format for s in samples}
    images = [PIL.Image.open(s.image_path) for s in samples]
    inputs = processor(
        images=images,
        text=[s.phrase for s in samples],
        boxes=[s.box for s in samples],
        box_format=box_format,
        truncate_boxes=True,
        padding="max_length",
        return_tensors="pt",
    )
    expected = expected_tensors()
    text_mask = expected[f"{split}/text_mask"].long()
    assert inputs["input_ids"].shape == (len(samples), 77)
    assert torch.equal(inputs["attention_mask"], text_mask)
    assert torch.equal(inputs["input_ids"] * text_mask, expected[f"{split}/input_ids"].long())
    pixel_delta = (inputs["pixel_values"] - expected[f"{split}/pixel_values"].float()).abs().max()
    assert pixel_delta <= fixture_pixel_tolerance()
    assert torch.equal(inputs["pixel_mask"], 1 - expected[f"{split}/pad_mask"].long())
    assert (inputs["labels"] - expected[f"{split}/target_boxes"]).abs().max() <= 1e-6


def test_default_padding_is_longest_and_text_is_lower_cased(processor):
    out = processor(text=["The MAN on the LEFT", "a dog"], return_tensors="pt")
    lower = processor(text=["the man on the left", "a dog"], return_tensors="pt")
    assert torch.equal(out["input_ids"], lower["input_ids"])
    assert out["input_ids"].shape == (2, 7)
    assert out["attention_mask"].tolist() == [[1] * 7, [1] * 4 + [0] * 3]


def test_expressions_share_one_image_or_pair_up(processor):
    first = PIL.Image.new("RGB", (60, 30), (255, 0, 0))
    second = PIL.Image.new("RGB", (30, 60), (0, 0, 255))
    # each distinct image once, and the image of each expression in image_index
    shared = processor(images=first, text=["left", "right", "top"], return_tensors="pt")
    assert shared["pixel_values"].shape == (1, 3, 224, 224) and shared["pixel_mask"].shape == (1, 224, 224)
    assert shared["image_index"].tolist() == [0, 0, 0] and shared["input_ids"].shape[0] == 3
    alone = processor(images=first, return_tensors="pt")
    assert torch.equal(shared["pixel_values"], alone["pixel_values"])
    assert torch.equal(shared["pixel_mask"], alone["pixel_mask"])
    paired = processor(images=[first, second], text=["left", "right"], return_tensors="pt")
    grouped = processor(images=[first, second], text=[["left"], ["right", "top"]], return_tensors="pt")
    assert paired["image_index"].tolist() == [0, 1] and grouped["image_index"].tolist() == [0, 1, 1]
    assert torch.equal(grouped["pixel_values"], paired["pixel_values"])
    assert grouped["input_ids"][2].tolist()[:3] == processor.tokenizer("top")["input_ids"]
    boxes = processor(images=first, text=["a", "b"], boxes=[[0, 0, 60, 30], [0, 0, 30, 30]], return_tensors="pt")
    torch.testing.assert_close(boxes["labels"][0], torch.tensor([0.5, 0.5, 1.0, 0.5]))
    assert boxes["labels"].shape == (2, 4) and boxes["pixel_values"].shape[0] == 1
    wide = processor(
        images=[second, first], text=[["x"], ["a", "b"]], boxes=[[0, 0, 30, 60], [0, 0, 60, 30], [0, 0, 30, 30]]
    )
    torch.testing.assert_close(torch.as_tensor(wide["labels"][1]), torch.tensor([0.5, 0.5, 1.0, 0.5]))


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"text": ""}, "Expression 0 is empty"),
        ({"text": ["a dog", "  \n "]}, "Expression 1 is empty"),
        ({"text": []}, "non-empty list"),
        ({}, "Pass images, text or both"),
        ({"images": "3", "text": ["a", "b", "c"]}, None),
        ({"text": "a", "boxes": [0, 0, 1, 1]}, "need images"),
        ({"text": "a", "max_length": 100, "padding": "max_length"}, "exceeds CLIP's text context of 77"),
    ],
)
def test_bad_processor_input_is_a_clear_error(processor, kwargs, error):
    images = [PIL.Image.new("RGB", (8, 8))] * 2
    if kwargs.get("images") == "3":
        kwargs["images"], error = images, "Got 2 images and 3 expressions"
    with pytest.raises(ValueError, match=error):
        processor(**kwargs)


def test_grounded_post_processing_attaches_the_expressions(processor):
    image = PIL.Image.new("RGB", (300, 200))
    texts = ["the left one", "the right one"]
    inputs = processor(images=image, text=texts, boxes=[[30, 40, 120, 180], [150, 0, 300, 200]], return_tensors="pt")
    outputs = {"pred_boxes": inputs["labels"].double()[:, None]}
    results = processor.post_process_grounded_object_detection(
        outputs, target_sizes=[(200, 300)] * 2, text_labels=texts
    )
    assert [r["text_labels"] for r in results] == [["the left one"], ["the right one"]]
    expected = [[30.0, 40.0, 120.0, 180.0], [150.0, 0.0, 300.0, 200.0]]  # float32 labels: within 1e-4 px
    torch.testing.assert_close(
        torch.cat([r["boxes"] for r in results]).float(), torch.tensor(expected), atol=1e-4, rtol=0
    )
    owl_style = processor.post_process_grounded_object_detection(outputs, text_labels=[[t] for t in texts])
    assert owl_style[1]["text_labels"] == ["the right one"]
    assert processor.post_process_grounded_object_detection(outputs)[0]["text_labels"] is None
    with pytest.raises(ValueError, match="1 text labels for 2 rows"):
        processor.post_process_grounded_object_detection(outputs, text_labels=texts[:1])


_LOAD_AND_RUN = textwrap.dedent(
    """
    import json, sys, numpy as np, PIL.Image
    {imports}
    from transformers import AutoImageProcessor, AutoProcessor
    processor = AutoProcessor.from_pretrained({folder!r}{remote})
    image_processor = AutoImageProcessor.from_pretrained({folder!r}{remote})
    out = processor(images=PIL.Image.open({image!r}), text=["Woman holding a PINK umbrella", "the umbrella"],
                    boxes=[[95, 178, 345, 639], [0, 38, 331, 259]], return_tensors="np")
    np.savez("out.npz", **{{k: np.asarray(v) for k, v in out.items()}})
    print(json.dumps({{"processor": type(processor).__module__ + "." + type(processor).__name__,
                      "image_processor": type(image_processor).__module__ + "." + type(image_processor).__name__,
                      "tokenizer": type(processor.tokenizer).__name__,
                      "size": image_processor.size.longest_edge}}))
    """
)


def _reference_output(processor, image_path):
    out = processor(
        images=PIL.Image.open(image_path),
        text=["Woman holding a PINK umbrella", "the umbrella"],
        boxes=[[95, 178, 345, 639], [0, 38, 331, 259]],
        return_tensors="np",
    )
    return {k: np.asarray(v) for k, v in out.items()}


def _assert_same_output(workdir, reference):
    loaded = np.load(workdir / "out.npz")
    assert sorted(loaded.files) == sorted(reference)
    for key, value in reference.items():
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)


def test_save_and_load_with_the_package(processor, tmp_path):
    folder = tmp_path / "saved"
    processor.save_pretrained(folder)
    config = json.loads((folder / "processor_config.json").read_text())
    assert config["processor_class"] == "CLIPVGProcessor"
    assert config["image_processor"]["image_processor_type"] == "CLIPVGImageProcessor"
    image = load_split("unc/val")[0].image_path
    code = _LOAD_AND_RUN.format(imports="import clipvg_hf", folder=str(folder), remote="", image=str(image))
    info = json.loads(run_fresh_python(code, tmp_path, with_package=True))
    assert info == {
        "processor": "clipvg_hf.processing_clipvg.CLIPVGProcessor",
        "image_processor": "clipvg_hf.image_processing_clipvg.CLIPVGImageProcessor",
        "tokenizer": "CLIPTokenizer",
        "size": 224,
    }
    _assert_same_output(tmp_path, _reference_output(processor, image))


def test_save_and_load_as_remote_code_without_the_package(processor, tmp_path):
    folder = tmp_path / "remote"
    CLIPVGProcessor.register_for_auto_class()
    CLIPVGImageProcessor.register_for_auto_class()
    try:
        processor.save_pretrained(folder)
    finally:
        CLIPVGProcessor._auto_class = None
        CLIPVGImageProcessor._auto_class = None
    assert {"processing_clipvg.py", "image_processing_clipvg.py"} <= {p.name for p in folder.iterdir()}
    image = load_split("unc/val")[0].image_path
    imports = (
        "try:\n    import clipvg_hf\nexcept ImportError:\n    pass\n"
        "else:\n    sys.exit('clipvg_hf must not be importable')"
    )
    code = _LOAD_AND_RUN.format(
        imports=imports, folder=str(folder), remote=", trust_remote_code=True", image=str(image)
    )
    info = json.loads(run_fresh_python(code, tmp_path, with_package=False))
    assert info["processor"].startswith("transformers_modules.") and info["processor"].endswith(
        "processing_clipvg.CLIPVGProcessor"
    )
    assert info["image_processor"].endswith("image_processing_clipvg.CLIPVGImageProcessor")
    assert "clipvg_hf" not in info["processor"] + info["image_processor"]
    _assert_same_output(tmp_path, _reference_output(processor, image))
