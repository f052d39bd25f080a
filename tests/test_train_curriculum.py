"""train.py with the curriculum sampler under accelerate on two CPU processes (torchrun): disjoint rank batches
that together are each epoch's draw from the growing easy-to-hard pool, and a mid-epoch resume that trains on
exactly the rows the uninterrupted run did."""

import json
import subprocess
from pathlib import Path

import datasets
import numpy as np
import pytest

from clipvg_hf.curriculum import ReliabilityScores, sampler_from_scores, save_scores
from clipvg_hf.curriculum.reliability import expression_sources

from conftest import torchrun

CONFIG = "refcoco-unsup-single"
BATCH = 2


@pytest.fixture(scope="module")
def scores_file(fixture_dataset, tmp_path_factory) -> Path:
    """A reliability per training row of the fixture (a fixed permutation of 1/N, 2/N, ...)."""
    split = datasets.load_dataset(str(fixture_dataset), CONFIG, split="train_pseudo")
    sources = expression_sources(split)
    rows = np.array(sorted(sources), dtype=np.int64)
    reliability = ((rows * 7) % len(rows) + 1) / len(rows)
    boxes = np.zeros((len(rows), 4), dtype=np.float32)
    scores = ReliabilityScores(
        rows,
        reliability.astype(np.float32),
        np.array([sources[r] for r in rows.tolist()]),
        boxes,
        boxes,
        {"weights_sha256": "0" * 64},
    )
    out = tmp_path_factory.mktemp("scores")
    save_scores(scores, out, plot=False)
    return out / "scores.parquet"


def _train(model, dataset, scores, out, *extra):
    command = [
        *torchrun(2),
        "-m",
        "clipvg_hf.train",
        "--model_name_or_path",
        str(model),
        "--dataset",
        str(dataset),
        "--dataset_config",
        CONFIG,
        "--output_dir",
        str(out),
        "--num_epochs",
        "2",
        "--per_device_batch_size",
        str(BATCH),
        "--num_workers",
        "0",
        "--no_aug_crop",
        "--cpu",
        "--curriculum_scores",
        str(scores),
        "--curriculum_pool",
        "easy_to_hard",
        "--curriculum_start_fraction",
        "0.5",
        "--curriculum_full_at_epoch",
        "1",
        "--log_sample_order",
        *extra,
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    return [
        [json.loads(line) for line in (out / "sample_order" / f"rank{r}.jsonl").read_text().splitlines()]
        for r in (0, 1)
    ]


@pytest.mark.slow
def test_two_processes_train_on_the_curriculum_and_resume_mid_epoch(
    converted_dir, fixture_dataset, scores_file, tmp_path
):
    full = _train(
        converted_dir,
        fixture_dataset,
        scores_file,
        tmp_path / "full",
        "--checkpointing_steps",
        "1",
        "--keep_checkpoints",
        "20",
    )
    rows = datasets.load_dataset(str(fixture_dataset), CONFIG, split="train_pseudo")
    row_index = np.array(sorted(expression_sources(rows)))
    sampler = sampler_from_scores(
        scores_file, row_index, pool="easy_to_hard", start_fraction=0.5, full_at_epoch=1, seed=13
    )
    steps = len(sampler) // (2 * BATCH)
    for epoch in (0, 1):
        r0, r1 = full[0][epoch]["rows"], full[1][epoch]["rows"]
        expected = row_index[sampler.indices(epoch)].tolist()
        assert len(r0) == len(r1) == steps * BATCH
        assert sorted(r0 + r1) == sorted(expected[: 2 * steps * BATCH])  # the ranks split the epoch's draw
        assert set(r0 + r1) == set(row_index[sampler.pool_for_epoch(epoch)].tolist())  # covering the pool
    assert len(set(row_index[sampler.pool_for_epoch(0)].tolist())) < len(row_index)  # easy first, then all
    assert not set(full[0][1]["rows"]) & set(full[1][1]["rows"])  # the full pool: every row on one rank only

    checkpoint = tmp_path / "full" / "checkpoints" / f"step_{steps + 2}"  # two steps into epoch 1
    resumed = _train(
        converted_dir, fixture_dataset, scores_file, tmp_path / "resumed", "--resume_from_checkpoint", str(checkpoint)
    )
    for rank in (0, 1):
        (record,) = resumed[rank]
        assert record["epoch"] == 1 and record["skipped_batches"] == 2
        assert record["rows"] == full[rank][1]["rows"][2 * BATCH :]


def test_unscored_rows_and_bad_curriculum_flags_are_refused(
    converted_dir, fixture_dataset, scores_file, tmp_path, capsys
):
    with pytest.raises(ValueError, match=r"1 training rows have no reliability score, e\.g\. row_index \[999\]"):
        sampler_from_scores(scores_file, [0, 1, 999])
    from clipvg_hf.train import main

    common = [
        "--model_name_or_path",
        str(converted_dir),
        "--dataset",
        str(fixture_dataset),
        "--dataset_config",
        CONFIG,
        "--output_dir",
        str(tmp_path / "run"),
        "--curriculum_scores",
        str(scores_file),
    ]
    for extra, message in (
        (["--curriculum_pool", "hardest"], "--curriculum_pool must be one of threshold, easy"),
        (["--group_by_image", "2"], "--curriculum_scores and --group_by_image"),
        (["--curriculum_start_fraction", "0"], "need 0 < --curriculum_start_fraction"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main([*common, *extra])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
