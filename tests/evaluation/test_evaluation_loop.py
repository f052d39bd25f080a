"""The evaluation library (:mod:`clipvg_hf.evaluation`) and the ``clipvg-evaluate`` command reproduce the official per-sample IoU and Acc@0.5, in one process and in two."""

import json
import subprocess
import sys

import datasets
import pytest
import torch
from accelerate import Accelerator

from clipvg_hf.evaluation import (
    GroundingMetrics,
    eval_loader,
    evaluate,
    evaluate_model,
    model_fingerprint,
    summarize_ious,
)
from clipvg_hf.loading import load_model_and_processor

from conftest import torchrun

SPLITS = {
    "unc/val": ("refcoco-unsup-single", "val"),
    "unc/testA": ("refcoco-unsup-single", "testA"),
    "referit/test": ("referit-unsup-single", "test"),
    "flickr/test": ("flickr30k-unsup-single", "test"),
}


@pytest.mark.parametrize("fixture_split", list(SPLITS))
def test_per_sample_iou_equals_official(
    converted_dir, fixture_dataset, expected_tensors, expected_json, fixture_split
):
    config, split = SPLITS[fixture_split]
    model, processor = load_model_and_processor(converted_dir)
    data = datasets.load_dataset(str(fixture_dataset), config, split=split)
    accelerator = Accelerator(cpu=True)
    metrics = evaluate(model, eval_loader(data, processor, accelerator, batch_size=5), accelerator)
    ious, rows = metrics.per_sample()
    assert rows.tolist() == list(range(len(ious)))  # every row once, in file order
    torch.testing.assert_close(ious.float(), expected_tensors[f"{fixture_split}/iou"], atol=1e-5, rtol=0)
    assert metrics.compute()["accuracy"] == expected_json["splits"][fixture_split]["acc_at_0.5"]


def test_metrics_refuse_double_counting():
    metrics = GroundingMetrics()
    box = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    metrics.update(box, box, torch.tensor([3]))
    metrics.update(box, box, torch.tensor([3]))
    with pytest.raises(RuntimeError, match="twice"):
        metrics.compute()
    assert summarize_ious(torch.tensor([0.5, 0.49, 1.0])) == {
        "accuracy": 2 / 3,
        "mean_iou": pytest.approx(0.6633333),
        "num_samples": 3,
    }


def test_cli_single_and_two_processes_agree(converted_dir, fixture_dataset, expected_json, tmp_path):
    args = [
        "--model_name_or_path",
        str(converted_dir),
        "--dataset",
        str(fixture_dataset),
        "--dataset_config",
        "refcoco-unsup-single",
        "--split",
        "val",
        "--split",
        "testA",
        "--batch_size",
        "4",
        "--cpu",
    ]
    single = tmp_path / "single.json"
    run = subprocess.run(
        [sys.executable, "-m", "clipvg_hf.evaluate", *args, "--output", str(single)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    double = tmp_path / "double.json"
    run = subprocess.run(
        [
            *torchrun(2),
            "-m",
            "clipvg_hf.evaluate",
            *args,
            "--output",
            str(double),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    one, two = json.loads(single.read_text()), json.loads(double.read_text())
    assert one["num_processes"] == 1 and two["num_processes"] == 2
    # 18 and 6 samples in batches of 4 over 2 processes: the padding duplicates are not counted
    for split in ("val", "testA"):
        assert two["splits"][split]["num_samples"] == one["splits"][split]["num_samples"]
        assert two["splits"][split]["accuracy"] == one["splits"][split]["accuracy"]
        assert two["splits"][split]["mean_iou"] == pytest.approx(one["splits"][split]["mean_iou"], abs=1e-6)
    assert one["splits"]["val"]["num_samples"] == expected_json["splits"]["unc/val"]["n"]
    assert one["splits"]["testA"]["accuracy"] == expected_json["splits"]["unc/testA"]["acc_at_0.5"]
    assert one["model"] == model_fingerprint(converted_dir)
    assert one["dataset"] == {"name": str(fixture_dataset), "config": "refcoco-unsup-single"}


def test_evaluate_model_rejects_a_non_clipvg_folder(tmp_path):
    from transformers import CLIPConfig, CLIPModel

    CLIPModel(
        CLIPConfig(
            text_config=dict(
                hidden_size=32,
                intermediate_size=37,
                num_hidden_layers=1,
                num_attention_heads=4,
                vocab_size=99,
                bos_token_id=97,
                eos_token_id=98,
                pad_token_id=0,
            ),
            vision_config=dict(
                hidden_size=32,
                intermediate_size=37,
                num_hidden_layers=1,
                num_attention_heads=4,
                image_size=32,
                patch_size=16,
            ),
            projection_dim=16,
        )
    ).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not a CLIP-VG model"):
        evaluate_model(tmp_path, "unused", "unused", ["val"])
