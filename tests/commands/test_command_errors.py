"""One error style for every command: a user error is one line ``error: ...`` naming the argument, file or split,
exit status 2, raised before any model is loaded or anything is written (each command's ``main`` in-process)."""

import pyarrow.parquet as pq
import pytest

from clipvg_hf.commands import demo, evaluate, push
from clipvg_hf.commands.curriculum import grid_main, msa_main, score_main, ssa_main

CONFIG = "refcoco-unsup-single"


def _fails(capsys, main, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "Traceback" not in err, err
    last = err.splitlines()[-1]
    assert "error: " in last
    return last


@pytest.fixture
def paths(converted_dir, fixture_dataset, tmp_path):
    return {"model": str(converted_dir), "data": str(fixture_dataset), "tmp": str(tmp_path)}


CASES = [
    (evaluate.main, ["--batch_size", "0"], "argument --batch_size: must be a positive integer, got '0'"),
    (evaluate.main, ["--num_workers", "-1"], "argument --num_workers: must be an integer >= 0"),
    (evaluate.main, ["--split", "nope"], "--dataset_config refcoco-unsup-single split 'nope'"),
    (evaluate.main, ["--model_name_or_path", "{tmp}/no/model"], "model folder not found"),
    (evaluate.main, ["--output", "{tmp}/no/dir/results.json"], "folder {tmp}/no/dir does not exist"),
    (evaluate.main, ["--dataset", "{tmp}/no/data"], "--dataset {tmp}/no/data: dataset folder not found"),
    (score_main, ["--batch_size", "0"], "argument --batch_size: must be a positive integer"),
    (score_main, ["--split", "nope"], "split 'nope'"),
    (score_main, ["--output_dir", "{tmp}/file"], "--output_dir {tmp}/file is a file, not a folder"),
    (ssa_main, ["--score_args", "--cpu", "--thresholds", "0.2", "1.5"], "--thresholds are IoU thresholds in [0, 1]"),
    (ssa_main, ["--score_args", "--cpu", "--min_samples", "0"], "argument --min_samples: must be a positive integer"),
    (ssa_main, ["--score_args", "--cpu", "--measurer", "{tmp}/no/measurer"], "--measurer {tmp}/no/measurer: model"),
    (ssa_main, ["--score_args", "--cpu", "--split", "nope"], "split 'nope'"),
    (msa_main, ["--h0", "2"], "--h0 is an IoU threshold in [0, 1], got 2.0"),
    (msa_main, ["--thresholds", "nan"], "argument --thresholds: must be a finite number, got 'nan'"),
]
BASE = {
    evaluate.main: [
        "--model_name_or_path",
        "{model}",
        "--dataset",
        "{data}",
        "--dataset_config",
        CONFIG,
        "--split",
        "val",
        "--cpu",
    ],
    score_main: [
        "--model_name_or_path",
        "{model}",
        "--dataset",
        "{data}",
        "--dataset_config",
        CONFIG,
        "--output_dir",
        "{tmp}/scores",
        "--cpu",
    ],
    ssa_main: ["--dataset", "{data}", "--dataset_config", CONFIG, "--output_dir", "{tmp}/ssa"],
    msa_main: ["--dataset", "{data}", "--dataset_config", CONFIG, "--output_dir", "{tmp}/msa"],
}


@pytest.mark.parametrize(
    ("main", "extra", "message"), CASES, ids=[f"{m.__module__}.{m.__name__}:{e[0]}" for m, e, _ in CASES]
)
def test_bad_arguments_are_one_line_errors_before_any_work(capsys, paths, tmp_path, main, extra, message):
    (tmp_path / "file").write_text("x")
    argv = [a.format(**paths) for a in BASE[main] + extra]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert message.format(**paths) in _fails(capsys, main, argv)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output folder, no results file


@pytest.mark.parametrize(
    ("main", "argv", "message"),
    [
        (grid_main, ["--scores", "nofolder", "--output", "{tmp}/g.png"], "--scores entries are NAME=FOLDER"),
        (grid_main, ["--scores", "a={tmp}/none", "--output", "{tmp}/g.png"], "holds no scores.parquet"),
        (grid_main, ["--scores", "a={tmp}", "--output", "{tmp}/no/g.png"], "--output {tmp}/no/g.png: folder"),
        (demo.main, ["--epochs", "0", "--output_dir", "{tmp}/demo"], "argument --epochs: must be a positive integer"),
        (demo.main, ["--learning_rate", "-1", "--output_dir", "{tmp}/demo"], "argument --learning_rate: must be"),
        (demo.main, ["--output_dir", "{tmp}/file"], "--output_dir {tmp}/file is a file"),
        (
            demo.main,
            ["--mixed_precision", "fp16", "--output_dir", "{tmp}/demo"],
            "argument --mixed_precision: invalid",
        ),
    ],
)
def test_grid_and_demo_refuse_bad_arguments(capsys, tmp_path, main, argv, message):
    (tmp_path / "file").write_text("x")
    assert message.format(tmp=tmp_path) in _fails(capsys, main, [a.format(tmp=tmp_path) for a in argv])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_dataset_dry_run_stages_the_parquet_that_would_be_uploaded(fixture_dataset, tmp_path):
    out = tmp_path / "upload"
    assert (
        push.main(["dataset", "--data_dir", str(fixture_dataset), "--repo_id", "org/data", "--dry_run", str(out)]) == 0
    )
    staged = sorted(out.rglob("*.parquet"))
    local = sorted((fixture_dataset / CONFIG).glob("val-*.parquet"))
    val = [p for p in staged if p.parent.name == CONFIG and p.name.startswith("val-")]
    assert [p.name for p in val] == [p.name for p in local]  # the same shards under the same names
    assert sum(pq.read_metadata(p).num_rows for p in val) == sum(pq.read_metadata(p).num_rows for p in local)
    first = pq.read_table(val[0]).to_pylist()[0]
    assert first["image"]["bytes"]  # the image bytes that would leave the machine are in the staged file
