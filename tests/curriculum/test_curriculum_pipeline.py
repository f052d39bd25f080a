"""SSA end to end for real: the fixture measurer scores, train.py trains tiny models on the subsets, the selection
is a dataset config that ``load_dataset`` and ``train.py`` read."""

import json
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest

from clipvg_hf.curriculum import read_row_indices
from clipvg_hf.data import CLIPVGEvalTransform, GroundingDataset
from clipvg_hf.evaluation import model_fingerprint

from conftest import make_tiny_config
from utils.paths import REPO_ROOT

ROOT = REPO_ROOT
CONFIG = "refcoco-unsup-single"


def tiny_config_file(path: Path) -> Path:
    """A from-scratch tiny model that takes the real CLIP tokenizer's ids (64 px images)."""
    text = {
        "vocab_size": 49408,
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 77,
        "projection_dim": 24,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 0,
    }
    make_tiny_config(text_config=text, max_text_length=77).to_json_file(path)
    return path


def test_ssa_cli_trains_on_subsets_and_writes_a_loadable_selection(
    converted_dir, fixture_dataset, expected_tensors, tmp_path
):
    out = tmp_path / "ssa"
    train_args = [
        "--config_file",
        str(tiny_config_file(tmp_path / "tiny.json")),
        "--num_epochs",
        "1",
        "--per_device_batch_size",
        "4",
        "--eval_batch_size",
        "32",
        "--num_workers",
        "0",
        "--cpu",
        "--no_aug_crop",
        "--no_aug_scale",
        "--keep_checkpoints",
        "0",
    ]
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "clipvg_hf.curriculum.ssa",
            "--dataset",
            str(fixture_dataset),
            "--dataset_config",
            CONFIG,
            "--output_dir",
            str(out),
            "--measurer",
            str(converted_dir),
            "--thresholds",
            "0.0",
            "0.3",
            "--search",
            "grid",
            "--score_args",
            "--cpu --no_plot",
            "--",
            *train_args,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((out / "ssa.json").read_text())
    assert report["search"]["strategy"] == "grid" and report["trainings"] == {"measurer": 0, "search": 2, "total": 2}
    reliability = expected_tensors["unc/train_pseudo/reliability"].numpy()
    for point in report["curve"]:  # each logged number is the one its train.py run saved
        metrics = json.loads((Path(point["model_dir"]) / "val_metrics.json").read_text())
        assert point["val_accuracy"] == metrics["accuracy"] and point["status"] == "trained"
        rows = read_row_indices(Path(point["model_dir"]).parent / "train_rows.json")
        assert rows == np.flatnonzero(reliability >= point["h"] - 1e-6).tolist() and point["num_samples"] == len(rows)
    logged = {p["h"]: p["val_accuracy"] for p in report["curve"]}
    assert report["best"]["h"] == max(logged, key=lambda h: (logged[h], -h))

    sha = model_fingerprint(converted_dir)["weights_sha256"]
    selection = report["selection"]
    assert selection["config"] == f"{CONFIG}-ssa"
    assert datasets.get_dataset_config_names(selection["dataset"]) == [f"{CONFIG}-ssa"]
    train = datasets.load_dataset(selection["dataset"], selection["config"], split="train_pseudo")
    kept = [e for row in train["expressions"] for e in row]
    assert sorted(e["row_index"] for e in kept) == read_row_indices(out / "selected_rows.json")
    assert all(e["reliability"] >= report["best"]["h"] and e["measurer"] == sha for e in kept)
    assert all(abs(e["reliability"] - reliability[e["row_index"]]) <= 1e-5 for e in kept)
    val = datasets.load_dataset(selection["dataset"], selection["config"], split="val")
    assert len(val) == len(datasets.load_dataset(str(fixture_dataset), CONFIG, split="val"))
    view = GroundingDataset(train, CLIPVGEvalTransform())  # the selection feeds the training pipeline
    assert len(view) == len(kept) and view[0]["pixel_values"].shape[-1] == 224


def test_train_rows_file_with_unknown_rows_is_refused(fixture_dataset, tmp_path):
    from clipvg_hf import training

    split = datasets.load_dataset(str(fixture_dataset), CONFIG, split="train_pseudo")
    rows = tmp_path / "rows.json"
    rows.write_text("[0, 3, 19]")
    assert training.positions_of_rows(GroundingDataset(split), str(rows)) == [0, 3, 19]
    rows.write_text("[0, 99]")
    with pytest.raises(ValueError, match=r"rows.json: 1 row indices are not in the training split"):
        training.positions_of_rows(GroundingDataset(split), str(rows))
