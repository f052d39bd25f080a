"""HiVG through the processor, the visual-grounding pipeline and the predict CLI, from image files."""

import json
from pathlib import Path

import PIL.Image
import pytest
import torch

from clipvg_hf import CLIPVGImageProcessor, CLIPVGProcessor, build_clip_tokenizer

from _hivg_fixture import converted, expected_json, expected_tensors, one_thread

IMAGES = Path(__file__).resolve().parents[2] / "fixtures" / "parity" / "tiny" / "image_data"  # the same files
_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


@pytest.fixture(scope="module")
def processor():
    return CLIPVGProcessor(CLIPVGImageProcessor(size={"longest_edge": 224}), build_clip_tokenizer())


def _split_files(split):
    meta = expected_json()["splits"][split]
    return [IMAGES / f for f in meta["image_files"]], meta["phrases"]


def test_processor_inputs_reproduce_the_official_boxes_in_both_semantics(processor):
    """Decoded files, letterbox, CLIP tokenizer (padded to the longest with <|endoftext|>): the model applies HiVG's
    text rule and antialiased patch mask itself."""
    files, phrases = _split_files("unc/val")
    images = [PIL.Image.open(f).convert("RGB") for f in files]
    inputs = processor(images=images, text=phrases, return_tensors="pt")
    assert inputs["input_ids"].shape[1] < 77 and (inputs["input_ids"] == 49407).sum() > len(phrases)
    model, tensors = converted("unc"), expected_tensors()
    with torch.no_grad():
        per_sample = model(**inputs, output_hidden_states=True)
        batched = model(**inputs, bridge_batch_mixing=True)
    assert torch.equal(per_sample.patch_attention_mask == 0, tensors["unc/val/visual_token_mask"].bool())
    torch.testing.assert_close(per_sample.pred_boxes[:, 0], tensors["unc/val/pred_boxes_bs1"], atol=1e-5, rtol=0)
    torch.testing.assert_close(batched.pred_boxes[:, 0], tensors["unc/val/pred_boxes"], atol=1e-5, rtol=0)


def test_pipeline_and_predict_cli_on_a_hivg_folder(tmp_path, processor, capsys):
    from transformers import pipeline

    from clipvg_hf.commands.predict import main as predict_main

    folder = tmp_path / "hivg"
    converted("unc", merge_lora=True).save_pretrained(folder)
    processor.save_pretrained(folder)
    files, phrases = _split_files("unc/testA")
    image = PIL.Image.open(files[0])
    grounder = pipeline("visual-grounding", model=str(folder))
    results = grounder(str(files[0]), text=phrases[:2])
    official = processor.post_process_grounded_object_detection(
        {"pred_boxes": expected_tensors()["unc/testA/pred_boxes_bs1"][:2, None]},
        target_sizes=[(image.height, image.width)] * 2,
        text_labels=phrases[:2],
    )
    for result, reference, phrase in zip(results, official, phrases):
        assert result["label"] == phrase
        box = torch.tensor([result["box"][k] for k in ("xmin", "ymin", "xmax", "ymax")])
        torch.testing.assert_close(box, reference["boxes"][0], atol=1e-3, rtol=0)
    assert not predict_main(["--model_name_or_path", str(folder), "--image", str(files[0]), "--text", phrases[0]])
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["label"] == phrases[0]
    torch.testing.assert_close(
        torch.tensor(rows[0]["box"], dtype=torch.float32), official[0]["boxes"][0], atol=1e-2, rtol=0
    )


def test_evaluation_on_the_converted_dataset_gives_the_official_per_sample_ious(fixture_dataset, tmp_path, processor):
    import datasets
    from accelerate import Accelerator

    from clipvg_hf.evaluation import eval_loader, evaluate
    from clipvg_hf.loading import load_model_and_processor

    folder = tmp_path / "hivg"
    converted("unc").save_pretrained(folder)
    processor.save_pretrained(folder)
    model, loaded_processor = load_model_and_processor(folder)
    data = datasets.load_dataset(str(fixture_dataset), "refcoco-unsup-single", split="val")
    accelerator = Accelerator(cpu=True)
    metrics = evaluate(model, eval_loader(data, loaded_processor, accelerator, batch_size=5), accelerator)
    ious, rows = metrics.per_sample()
    assert rows.tolist() == list(range(len(ious)))
    torch.testing.assert_close(ious.float(), expected_tensors()["unc/val/iou_bs1"], atol=1e-5, rtol=0)
    assert metrics.compute()["accuracy"] == expected_json()["splits"]["unc/val"]["acc_at_0.5_bs1"]


def test_hivg_split_files_convert_and_evaluate_to_the_official_numbers(tmp_path, processor):
    """HiVG's own split rows (a {"height", "width"} dict where TransVG's carry a mask file) convert as they are."""
    from clipvg_hf.data import convert_pack
    from clipvg_hf.evaluation import evaluate_model

    convert_pack(
        Path(__file__).resolve().parents[2] / "fixtures" / "hivg_tiny" / "splits", IMAGES, tmp_path / "data", "full"
    )
    folder = tmp_path / "hivg"
    converted("unc").save_pretrained(folder)
    processor.save_pretrained(folder)
    from accelerate import Accelerator

    results = evaluate_model(
        folder,
        str(tmp_path / "data"),
        "refcoco-full",
        ["val", "testA"],
        batch_size=6,
        accelerator=Accelerator(cpu=True),
    )
    for split in ("val", "testA"):
        official = expected_tensors()[f"unc/{split}/iou_bs1"]
        assert results["splits"][split]["num_samples"] == len(official)
        assert abs(results["splits"][split]["mean_iou"] - official.mean().item()) < 1e-6
        assert results["splits"][split]["accuracy"] == expected_json()["splits"][f"unc/{split}"]["acc_at_0.5_bs1"]
