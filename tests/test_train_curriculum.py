"""train.py with the curriculum sampler under accelerate on two CPU processes (torchrun): disjoint rank batches
that together are each epoch's draw from the growing easy-to-hard pool, and a mid-epoch resume that trains on
exactly the rows the uninterrupted run did."""

import json
import subprocess
from dataclasses import replace
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clipvg_hf.curriculum import ReliabilityScores, load_scores, sampler_from_scores, save_scores
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
        {"name": str(fixture_dataset), "config": CONFIG, "split": "train_pseudo", "sources": None},
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
    from clipvg_hf.commands.train import main

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


def _refused(capsys, argv) -> str:
    from clipvg_hf.commands.train import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err, err
    return err.strip().splitlines()[-1]


def test_scores_of_another_dataset_config_split_or_version_are_refused(
    converted_dir, fixture_dataset, scores_file, tmp_path, capsys
):
    """Rows are matched by row_index, which every split numbers from 0: the scores must be of this very split."""
    good = load_scores(scores_file)
    recorded = dict(good.dataset)
    more = len(good.row_index)
    cases = [
        (dict(recorded, name=str(tmp_path / "other-data")), f"scores of dataset {tmp_path / 'other-data'}, but"),
        (dict(recorded, config="referit-unsup-single"), "scores of config 'referit-unsup-single', but training reads"),
        (dict(recorded, split="val"), "scores of split 'val', but training reads split 'train_pseudo'"),
        ({}, "the file records no dataset, config and split"),
        (recorded, f"{more + 1} rows scored, but split 'train_pseudo' of {CONFIG} has {more} expressions (1 scored"),
    ]
    for number, (dataset, message) in enumerate(cases):
        scores = replace(good, dataset=dataset)
        if number == len(cases) - 1:  # scores of a bigger version of the split: one row the split does not have
            scores = replace(
                scores,
                row_index=np.append(good.row_index, 999),
                reliability=np.append(good.reliability, np.float32(0.5)),
                source=np.append(good.source, "template"),
                pred_boxes=np.vstack([good.pred_boxes, good.pred_boxes[:1]]),
                target_boxes=np.vstack([good.target_boxes, good.target_boxes[:1]]),
            )
        folder = tmp_path / f"scores{number}"
        save_scores(scores, folder, plot=False)
        out = tmp_path / f"run{number}"
        argv = ["--model_name_or_path", str(converted_dir), "--dataset", str(fixture_dataset)]
        argv += ["--dataset_config", CONFIG, "--output_dir", str(out), "--num_workers", "0", "--cpu"]
        line = _refused(capsys, [*argv, "--curriculum_scores", str(folder / "scores.parquet")])
        assert line.startswith(f"error: --curriculum_scores {folder / 'scores.parquet'}: ") and message in line, line
        assert not (out / "checkpoints").exists() and not (out / "log.jsonl").exists()


def test_nan_reliabilities_never_reach_training(converted_dir, fixture_dataset, scores_file, tmp_path, capsys):
    """A NaN row would silently fall out of a threshold pool or rank last in easy_to_hard: the file is refused."""
    table = pq.read_table(scores_file)
    column = table.schema.get_field_index("reliability")
    values = table.column("reliability").to_numpy().copy()
    values[3] = np.nan
    pq.write_table(
        table.set_column(column, "reliability", pa.array(values, pa.float32())), tmp_path / "scores.parquet"
    )
    argv = ["--model_name_or_path", str(converted_dir), "--dataset", str(fixture_dataset), "--dataset_config", CONFIG]
    argv += ["--output_dir", str(tmp_path / "run"), "--num_workers", "0", "--cpu"]
    for pool in ("threshold", "easy_to_hard"):
        line = _refused(
            capsys, [*argv, "--curriculum_scores", str(tmp_path / "scores.parquet"), "--curriculum_pool", pool]
        )
        assert "1 rows hold a NaN or infinite reliability or predicted box, e.g. row_index [3]" in line, line
    assert not (tmp_path / "run" / "checkpoints").exists()
