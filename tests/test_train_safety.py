"""The training command refuses bad input before any work, never mixes two runs, never unpickles code on resume."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from clipvg_hf import training
from clipvg_hf.commands import train


class Payload:
    """Unpickling this runs code: it writes ``marker`` (what a crafted checkpoint file would do)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


def _base(out, dataset="missing-dataset", model=None):
    args = [
        "--dataset",
        str(dataset),
        "--dataset_config",
        "refcoco-unsup-single",
        "--output_dir",
        str(out),
        "--num_workers",
        "0",
        "--cpu",
    ]
    return args + (["--model_name_or_path", str(model)] if model else [])


def _exit_message(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        train.main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "Traceback" not in err
    return err.splitlines()[-1]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--num_epochs", "-3"], "--num_epochs must be at least 1, got -3"),
        (["--num_epochs", "0"], "--num_epochs must be at least 1, got 0"),
        (["--warmup_steps", "-5"], "--warmup_steps must be at least 0, got -5"),
        (["--gradient_accumulation_steps", "0"], "--gradient_accumulation_steps must be at least 1"),
        (["--per_device_batch_size", "0"], "--per_device_batch_size must be at least 1"),
        (["--eval_batch_size", "-1"], "--eval_batch_size must be at least 1"),
        (["--learning_rate", "nan"], "--learning_rate must be a finite number"),
        (["--learning_rate", "0"], "--learning_rate must be greater than 0"),
        (["--max_grad_norm", "-1"], "--max_grad_norm must be at least 0"),
        (["--checkpointing_steps", "0"], "--checkpointing_steps must be at least 1"),
        (["--lr_scheduler", "linear"], "--lr_scheduler must be cosine or constant"),
        (["--scheduler_step", "batch"], "--scheduler_step must be epoch or step"),
        (["--trainable_clip", "everything"], "--trainable_clip must be official, frozen or all, got 'everything'"),
        (["--train_split", "val"], "--train_split val is an evaluation split"),
        (["--train_split", "testA"], "--train_split testA is an evaluation split"),
        (["--num_workers", "-1"], "--num_workers must be at least 0"),
        (["--max_train_samples", "0"], "--max_train_samples must be at least 1"),
        (["--model_name_or_path", "runs/typo/best"], "--model_name_or_path runs/typo/best: model folder not found"),
        (["--train_row_indices", "nowhere.json"], "--train_row_indices nowhere.json: file not found"),
        (["--resume_from_checkpoint", "nowhere"], "--resume_from_checkpoint nowhere is not a complete checkpoint"),
    ],
)
def test_bad_values_are_refused_before_any_work(capsys, tmp_path, extra, message):
    out = tmp_path / "run"
    assert message in _exit_message(capsys, [*_base(out), *extra])
    assert not out.exists()  # refused before anything was created


def test_output_dir_that_is_a_file_and_unknown_dataset_split_are_one_line_errors(
    capsys, tmp_path, converted_dir, fixture_dataset
):
    file = tmp_path / "file"
    file.write_text("x")
    assert "--output_dir" in _exit_message(capsys, _base(file)) and file.read_text() == "x"
    err = _exit_message(capsys, _base(tmp_path / "a", fixture_dataset, converted_dir) + ["--train_split", "nope"])
    assert "--dataset_config refcoco-unsup-single split 'nope'" in err
    err = _exit_message(
        capsys,
        [
            "--dataset",
            str(fixture_dataset),
            "--dataset_config",
            "refcoco-bogus",
            "--output_dir",
            str(tmp_path / "b"),
            "--cpu",
        ],
    )
    assert "--dataset_config refcoco-bogus" in err
    assert "dataset folder not found" in _exit_message(capsys, _base(tmp_path / "c", tmp_path / "no/such/data"))


def _earlier_run(out: Path) -> None:
    (out / "checkpoints" / "epoch_0").mkdir(parents=True)
    (out / "best").mkdir()
    (out / "log.jsonl").write_text('{"epoch": 0}\n')
    (out / "notes.txt").write_text("mine")


def test_a_used_output_dir_is_refused_or_replaced_only_when_asked(capsys, tmp_path):
    out = tmp_path / "run"
    _earlier_run(out)
    err = _exit_message(capsys, _base(out))
    assert "holds an earlier run (checkpoints, best, log.jsonl)" in err and "--overwrite_output_dir" in err
    assert (out / "log.jsonl").read_text() == '{"epoch": 0}\n' and (out / "best").is_dir()  # untouched
    err = _exit_message(capsys, [*_base(out), "--resume_from_checkpoint", "latest"])
    assert "holds an earlier run" in err and "no complete checkpoint" in err  # never a silent fresh start
    training.prepare_output_dir(training.TrainArguments(output_dir=str(out), overwrite_output_dir=True))
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # the earlier run's files only


@pytest.fixture(scope="module")
def one_epoch_run(converted_dir, fixture_dataset, tmp_path_factory) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("safety") / "run"
    args = [
        *_base(out, fixture_dataset, converted_dir),
        "--num_epochs",
        "1",
        "--per_device_batch_size",
        "4",
        "--max_train_samples",
        "4",
        "--eval_batch_size",
        "32",
        "--no_aug_crop",
        "--no_aug_scale",
    ]
    train.main(args)
    return out, args


def test_the_schedule_is_checkpointed_as_json_not_pickle(one_epoch_run):
    checkpoint = one_epoch_run[0] / "checkpoints" / "epoch_0"
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["scheduler"]["last_epoch"] == 1 and state["epoch"] == 1
    assert not list(checkpoint.glob("custom_checkpoint_*"))


def test_resuming_never_runs_code_from_the_checkpoint(capsys, one_epoch_run, tmp_path):
    out, args = one_epoch_run
    checkpoint = out / "checkpoints" / "epoch_0"
    marker = tmp_path / "ran"
    crafted = checkpoint / "custom_checkpoint_0.pkl"  # accelerate unpickles this with weights_only=False
    torch.save(Payload(marker), crafted)
    args = [*args, "--resume_from_checkpoint", "latest"]
    err = _exit_message(capsys, args)
    assert "holds custom_checkpoint_0.pkl" in err and "never loaded" in err and not marker.exists()
    crafted.unlink()
    state = training.train(*train.parse_arguments(args))  # the finished run resumes (nothing left to train)
    assert state["epoch"] == 1 and not marker.exists()
    assert "resumed from" in capsys.readouterr().out

    torch.save({"state": Payload(marker), "param_groups": []}, checkpoint / "optimizer.bin")
    err = _exit_message(capsys, [*args[:-1], str(checkpoint)])
    assert "cannot be loaded safely" in err and "weights_only=False" not in err
    assert not marker.exists()


def _with_output_dir(args: list[str], out: Path) -> list[str]:
    args = list(args)
    args[args.index("--output_dir") + 1] = str(out)
    return args


def test_another_runs_checkpoint_is_not_resumed_into_a_used_output_dir(capsys, one_epoch_run, tmp_path):
    run, args = one_epoch_run
    used = tmp_path / "used"
    _earlier_run(used)
    before = sorted(str(p.relative_to(used)) for p in used.rglob("*"))
    checkpoint = run / "checkpoints" / "epoch_0"
    err = _exit_message(capsys, [*_with_output_dir(args, used), "--resume_from_checkpoint", str(checkpoint)])
    assert f"--resume_from_checkpoint {checkpoint} is not a checkpoint of --output_dir {used}" in err
    assert "holds an earlier run (checkpoints, best, log.jsonl)" in err and "--overwrite_output_dir" in err
    assert sorted(str(p.relative_to(used)) for p in used.rglob("*")) == before  # its checkpoints are kept
    assert (used / "log.jsonl").read_text() == '{"epoch": 0}\n'  # and its log is not mixed with another run


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--learning_rate", "1e-3"], "--learning_rate 0.001 differs from the 0.00025 of the run in"),
        (["--num_epochs", "2"], "--num_epochs 2 differs from the 1 of the run in"),
        (["--train_steps", "5"], "--train_steps 5 differs from the None of the run in"),
    ],
)
def test_resuming_with_another_schedule_is_refused(capsys, one_epoch_run, extra, message):
    run, args = one_epoch_run
    log = (run / "log.jsonl").read_text()
    err = _exit_message(capsys, [*args, *extra, "--resume_from_checkpoint", "latest"])
    assert message in err and "resume with --" in err
    assert (run / "log.jsonl").read_text() == log


def test_an_unreadable_random_state_file_is_an_error_on_resume(capsys, one_epoch_run, tmp_path):
    run, args = one_epoch_run
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    rng = copy / "checkpoints" / "epoch_0" / "random_states_0.pkl"
    argv = [*_with_output_dir(args, copy), "--resume_from_checkpoint", "latest"]
    rng.write_bytes(rng.read_bytes()[:40])  # cut off
    assert "random_states_0.pkl cannot be loaded safely: " in _exit_message(capsys, argv)
    marker = tmp_path / "ran"
    torch.save(Payload(marker), rng)
    err = _exit_message(capsys, argv)
    assert "random_states_0.pkl cannot be loaded safely: the pickle references" in err and not marker.exists()
    rng.unlink()
    assert "random_states_0.pkl cannot be loaded safely: the file is missing" in _exit_message(capsys, argv)
