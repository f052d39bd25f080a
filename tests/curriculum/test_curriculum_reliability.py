"""Reliability scoring reproduces the official evaluate_for_filtering on the fixture, in one process and in two."""

import json
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from accelerate import Accelerator

from clipvg_hf.curriculum import (
    load_scores,
    reliability_histogram,
    save_scores,
    threshold_subsets,
)
from clipvg_hf.curriculum.reliability import score_model
from clipvg_hf.curriculum.selection import read_row_indices
from clipvg_hf.evaluation import model_fingerprint

from conftest import torchrun

CONFIG = "refcoco-unsup-single"


def test_reliabilities_and_subsets_equal_the_official_ones(
    converted_dir, fixture_dataset, expected_tensors, expected_json, tmp_path
):
    scores = score_model(
        converted_dir, fixture_dataset, CONFIG, "train_pseudo", accelerator=Accelerator(cpu=True), batch_size=7
    )  # grouped inference: each image encoded once
    expected = expected_tensors["unc/train_pseudo/reliability"].numpy()
    assert scores.row_index.tolist() == list(range(len(expected)))
    assert np.abs(scores.reliability - expected).max() <= 1e-5
    assert threshold_subsets(scores) == expected_json["reliability_subsets"]
    fingerprint = model_fingerprint(converted_dir)
    assert {k: scores.measurer[k] for k in fingerprint} == fingerprint  # plus the precision it ran in
    assert scores.measurer["dtype"] == "float32" and "hardware" in scores.measurer
    report = save_scores(scores, tmp_path)
    assert json.loads((tmp_path / "reliability.json").read_text())["subsets"] == expected_json["reliability_subsets"]
    hist = report["histogram"]
    assert hist["bins"] == 1000 and len(hist["counts"]) == 1000
    assert sum(hist["counts"]) + hist["num_zero"] == 20 and hist["num_zero"] == int((expected == 0).sum())
    assert (tmp_path / "histogram.png").stat().st_size > 1000
    table = pq.read_table(tmp_path / "scores.parquet")
    assert set(table.column("measurer").to_pylist()) == {scores.measurer["weights_sha256"]}
    back = load_scores(tmp_path)
    assert back.as_dict() == scores.as_dict() and back.measurer == scores.measurer


def test_histogram_bins_are_right_closed_over_0_1():
    hist = reliability_histogram(np.array([0.0, 0.001, 0.0015, 0.5, 1.0, 1.0]))
    counts = hist["counts"]
    assert counts[0] == 1 and counts[1] == 1 and counts[499] == 1 and counts[999] == 2 and hist["num_zero"] == 1
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        reliability_histogram(np.array([1.5]))


def test_two_processes_score_every_sample_exactly_once(
    converted_dir, fixture_dataset, expected_tensors, expected_json, tmp_path
):
    run = subprocess.run(
        [
            *torchrun(2),
            "-m",
            "clipvg_hf.curriculum.score",
            "--model_name_or_path",
            str(converted_dir),
            "--dataset",
            str(fixture_dataset),
            "--dataset_config",
            CONFIG,
            "--output_dir",
            str(tmp_path),
            "--batch_size",
            "3",
            "--cpu",
            "--no_plot",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "reliability.json").read_text())
    assert report["num_processes"] == 2  # not two independent single-process runs
    assert report["subsets"] == expected_json["reliability_subsets"]
    scores = load_scores(tmp_path)
    assert scores.row_index.tolist() == list(range(20))  # 20 samples over 2 x 3: padding duplicates dropped
    assert np.abs(scores.reliability - expected_tensors["unc/train_pseudo/reliability"].numpy()).max() <= 1e-5


def test_bad_inputs_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no reliability scores"):
        load_scores(tmp_path)
    pq.write_table(__import__("pyarrow").table({"x": [1]}), tmp_path / "scores.parquet")
    with pytest.raises(ValueError, match="scores.parquet: not a reliability file"):
        load_scores(tmp_path)
    rows = tmp_path / "rows.json"
    rows.write_text('["a"]')
    with pytest.raises(ValueError, match="rows.json: row indices must be integers"):
        read_row_indices(rows)
    rows.write_text("[1, 1]")
    with pytest.raises(ValueError, match="duplicate"):
        read_row_indices(rows)
    rows.write_text("3\n4\n")
    assert read_row_indices(rows) == [3, 4]


def _scores(reliability, pred_box=0.5):
    from clipvg_hf.curriculum import ReliabilityScores

    n = len(reliability)
    boxes = np.full((n, 4), pred_box, dtype=np.float32)
    dataset = {"name": "data", "config": CONFIG, "split": "train_pseudo", "sources": None}
    return ReliabilityScores(
        np.arange(n), np.array(reliability, np.float32), np.array(["template"] * n), boxes, boxes, {}, dataset
    )


def test_non_finite_reliabilities_are_refused_when_written_and_when_read(tmp_path):
    with pytest.raises(ValueError, match=r"scores.parquet not written: 2 rows hold a NaN or infinite reliability"):
        save_scores(_scores([0.5, float("nan"), float("nan")]), tmp_path / "w", plot=False)
    scores = _scores([0.5, 0.2, 0.1])
    scores.pred_boxes[1, 0] = float("inf")
    with pytest.raises(
        ValueError, match=r"1 rows hold a NaN or infinite reliability or predicted box, e\.g\. row_index \[1\]"
    ):
        save_scores(scores, tmp_path / "w", plot=False)
    assert not (tmp_path / "w" / "scores.parquet").exists()
    save_scores(_scores([0.5, 0.2, 0.1]), tmp_path / "r", plot=False)
    table = pq.read_table(tmp_path / "r" / "scores.parquet")  # a file broken after the fact (or by another writer)
    column = table.schema.get_field_index("reliability")
    for values, message in (
        ([0.5, None, 0.1], r"r/scores.parquet: 1 rows hold a NaN or infinite reliability .* row_index \[1\]"),
        ([0.5, float("inf"), 0.1], r"1 rows hold a NaN or infinite reliability"),
        ([0.5, 0.2, 1.5], r"1 reliabilities lie outside \[0, 1\], e\.g\. row_index \[2\]"),
    ):
        broken = table.set_column(column, "reliability", pa.array(values, pa.float32()))
        pq.write_table(broken, tmp_path / "r" / "scores.parquet")
        with pytest.raises(ValueError, match=message):
            load_scores(tmp_path / "r")


def test_scoring_with_a_broken_measurer_is_one_line_and_writes_nothing(
    converted_dir, fixture_dataset, tmp_path, capsys
):
    import shutil

    from safetensors.torch import load_file, save_file

    from clipvg_hf.commands.curriculum import score_main as main

    measurer = tmp_path / "measurer"
    shutil.copytree(converted_dir, measurer)
    weights = load_file(measurer / "model.safetensors")
    weights["box_head.layers.0.weight"][0, 0] = float("nan")
    save_file(weights, measurer / "model.safetensors", metadata={"format": "pt"})
    out = tmp_path / "scores"
    argv = ["--model_name_or_path", str(measurer), "--dataset", str(fixture_dataset), "--dataset_config", CONFIG]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--output_dir", str(out), "--cpu", "--no_plot"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert (
        err.strip().splitlines()[-1].startswith(f"error: --model_name_or_path {measurer}: 1 weight tensors hold NaN")
    )
    assert not (out / "scores.parquet").exists()
