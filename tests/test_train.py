"""The training module (clipvg_hf.train; train.py forwards to it) end to end on the fixture data: one process, two
processes, and a run killed and resumed."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import torchrun
from utils.paths import REPO_ROOT

ROOT = REPO_ROOT


@pytest.fixture(scope="module")
def no_dropout_model(converted_model, tmp_path_factory) -> Path:
    """The converted fixture model with dropout off, so runs with different process counts are comparable."""
    folder = tmp_path_factory.mktemp("nodrop") / "model"
    converted_model.config.fusion_dropout = 0.0
    converted_model.save_pretrained(folder)
    converted_model.config.fusion_dropout = 0.1
    return folder


def _args(model, dataset, out, *extra):
    return [
        "--model_name_or_path",
        str(model),
        "--dataset",
        str(dataset),
        "--dataset_config",
        "refcoco-unsup-single",
        "--output_dir",
        str(out),
        "--num_epochs",
        "2",
        "--num_workers",
        "0",
        "--no_aug_crop",
        "--cpu",
        *extra,
    ]


def _run(args, nproc=1, timeout=600):
    launcher = [sys.executable, "-m", "clipvg_hf.train"] if nproc == 1 else [*torchrun(nproc), "-m", "clipvg_hf.train"]
    result = subprocess.run(launcher + args, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _records(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


COMMON = ("--per_device_batch_size", "4", "--checkpointing_steps", "1", "--keep_checkpoints", "3")


@pytest.fixture(scope="module")
def reference_run(converted_dir, fixture_dataset, tmp_path_factory) -> Path:
    """One uninterrupted single-process run, checkpointing every step (the resume test's reference too)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    result = _run(_args(converted_dir, fixture_dataset, out, *COMMON))
    assert "1 process(es)" in result.stdout
    return out


def test_single_process_run_saves_best_model_logs_and_checkpoints(converted_dir, reference_run):
    out = reference_run
    records = _records(out)
    assert [r["epoch"] for r in records] == [0, 1]
    assert records[0]["train_lr"] == 2.5e-4 and records[1]["train_lr"] == pytest.approx(1.25e-4)  # cosine per epoch
    assert all(0 <= r["validation_accuracy"] <= 1 and r["global_step"] == 5 * (r["epoch"] + 1) for r in records)
    best = json.loads((out / "best" / "val_metrics.json").read_text())
    assert best["accuracy"] == max(r["validation_accuracy"] for r in records) and best["num_samples"] == 18
    # the newest three complete checkpoints are kept; no partial folder is left behind
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch_1", "step_10", "step_9"]
    from transformers import AutoModel, AutoProcessor

    import clipvg_hf  # noqa: F401

    model = AutoModel.from_pretrained(out / "best")
    AutoProcessor.from_pretrained(out / "best")
    # the visual position embedding trained (official policy), the rest of CLIP did not
    before = load_file(converted_dir / "model.safetensors")
    after = model.state_dict()
    assert not torch.equal(
        after["clip.vision_model.embeddings.position_embedding.weight"],
        before["clip.vision_model.embeddings.position_embedding.weight"],
    )
    assert torch.equal(
        after["clip.vision_model.encoder.layers.0.mlp.fc1.weight"],
        before["clip.vision_model.encoder.layers.0.mlp.fc1.weight"],
    )


def test_two_processes_match_one_process_on_the_same_global_batch(no_dropout_model, fixture_dataset, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _run(_args(no_dropout_model, fixture_dataset, one, "--per_device_batch_size", "4", "--num_epochs", "1"))
    result = _run(
        _args(no_dropout_model, fixture_dataset, two, "--per_device_batch_size", "2", "--num_epochs", "1"), nproc=2
    )
    assert "2 process(es)" in result.stdout  # not silently two independent single-process runs
    w1 = load_file(one / "checkpoints" / "epoch_0" / "model.safetensors")
    w2 = load_file(two / "checkpoints" / "epoch_0" / "model.safetensors")
    # Same samples per step; only the order of float reductions differs. Adam moves every weight by at most about
    # lr per step whatever the gradient's size, so a rounding difference in a gradient changes a weight by a
    # fraction of lr: a tiny fraction where the gradient is large, up to the whole step where it is rounding noise
    # itself. Attention key biases have an exactly zero gradient (softmax ignores a shift shared by all keys), so
    # they are bounded by lr x steps only. For the other weights the spread measured between reduction orders alone
    # (1 vs 2 threads, 1 vs 2 processes, AVX2 vs AVX-512 kernels, on AMD EPYC and Intel Xeon) is at most 6.2e-6 =
    # 0.025 lr; a genuinely different gradient (other samples, a wrong average) moves weights by up to lr a step.
    # The bound, lr / 10, sits between the two.
    lr, steps = 2.5e-4, 5
    key_bias = {k for k in w1 if k.endswith("k_proj.bias")}
    worst = max((w1[k] - w2[k]).abs().max().item() for k in w1 if k not in key_bias)
    assert worst <= lr / 10, worst
    assert max((w1[k] - w2[k]).abs().max().item() for k in key_bias) <= lr * steps
    r1, r2 = _records(one)[0], _records(two)[0]
    assert r1["global_step"] == r2["global_step"] == 5
    assert r1["validation_accuracy"] == r2["validation_accuracy"]
    assert r1["validation_miou"] == pytest.approx(r2["validation_miou"], abs=1e-6)


def test_killed_run_resumes_to_the_same_weights(converted_dir, fixture_dataset, reference_run, tmp_path):
    reference = reference_run
    common = COMMON
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "clipvg_hf.train", *_args(converted_dir, fixture_dataset, killed, *common)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "step_7").exists():  # inside the second epoch
        assert proc.poll() is None and time.time() < deadline, "training ended before it could be killed"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "checkpoints" / "epoch_1").exists()

    result = _run(_args(converted_dir, fixture_dataset, killed, *common, "--resume_from_checkpoint", "latest"))
    assert "resumed from" in result.stdout
    ref_weights = load_file(reference / "checkpoints" / "epoch_1" / "model.safetensors")
    new_weights = load_file(killed / "checkpoints" / "epoch_1" / "model.safetensors")
    assert all(torch.equal(ref_weights[k], new_weights[k]) for k in ref_weights)
    assert _records(reference)[-1]["validation_accuracy"] == _records(killed)[-1]["validation_accuracy"]
    assert _records(reference)[-1]["validation_miou"] == _records(killed)[-1]["validation_miou"]


def test_train_steps_and_fused_adamw_reach_the_plain_run(converted_dir, fixture_dataset, reference_run, tmp_path):
    """--train_steps 7 rounds up to 2 epochs of 5 steps; the fused AdamW takes the plain AdamW's steps."""
    out = tmp_path / "fused"
    args = _args(
        converted_dir,
        fixture_dataset,
        out,
        "--per_device_batch_size",
        "4",
        "--optim",
        "adamw_torch_fused",
        "--train_steps",
        "7",
    )
    args[args.index("--num_epochs") + 1] = "9"  # overridden by --train_steps
    _run(args)
    assert [(r["epoch"], r["global_step"]) for r in _records(out)] == [(0, 5), (1, 10)]
    plain = load_file(reference_run / "checkpoints" / "epoch_1" / "model.safetensors")
    fused = load_file(out / "checkpoints" / "epoch_1" / "model.safetensors")
    moved = [k for k in plain if not torch.equal(plain[k], load_file(converted_dir / "model.safetensors")[k])]
    assert moved, "nothing trained"
    key_bias = {k for k in plain if k.endswith("k_proj.bias")}  # zero true gradient: only bounded by lr x steps
    assert max((fused[k] - plain[k]).abs().max().item() for k in plain if k not in key_bias) <= 1e-5
    assert max((fused[k] - plain[k]).abs().max().item() for k in key_bias) <= 2.5e-4 * 10


def test_bad_optimizer_and_step_budget_are_refused_up_front(converted_dir, fixture_dataset, tmp_path):
    # the checkout's train.py forwards to the package's training module
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            *_args(converted_dir, fixture_dataset, tmp_path / "x", "--optim", "sgd"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode != 0 and "--optim must be adamw_torch or adamw_torch_fused, got 'sgd'" in result.stderr
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "clipvg_hf.train",
            *_args(converted_dir, fixture_dataset, tmp_path / "y", "--train_steps", "0"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode != 0 and "--train_steps must be positive, got 0" in result.stderr
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "clipvg_hf.train",
            *_args(converted_dir, fixture_dataset, tmp_path / "z", "--group_by_image", "-1"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode != 0
    assert "--group_by_image must be 0 (off) or a positive run length, got -1" in result.stderr
    assert not any((tmp_path / name).exists() for name in "xyz")  # refused before anything was written


def test_grouped_fast_augment_run_trains(converted_dir, fixture_dataset, reference_run, tmp_path):
    """--group_by_image and --fast_augment: the opt-in data path trains end to end and validates each epoch."""
    out = tmp_path / "grouped"
    result = _run(
        _args(
            converted_dir,
            fixture_dataset,
            out,
            "--per_device_batch_size",
            "4",
            "--group_by_image",
            "3",
            "--fast_augment",
        )
    )
    assert "opt-in data shortcuts: group_by_image=3, fast_augment=True" in result.stdout
    records = _records(out)
    assert [r["epoch"] for r in records] == [0, 1] and all(r["train_loss"] > 0 for r in records)
    grouped = load_file(out / "checkpoints" / "epoch_1" / "model.safetensors")
    plain = load_file(reference_run / "checkpoints" / "epoch_1" / "model.safetensors")
    key = "clip.vision_model.embeddings.position_embedding.weight"
    assert not torch.equal(grouped[key], plain[key])  # another order and other pixels than the plain run


def test_two_runs_with_the_same_seed_on_two_threads_are_bit_identical(converted_dir, fixture_dataset, tmp_path):
    """Same seed, data, machine and thread count: the same weights and log, bit for bit (dropout on). The fusion
    gathers at least 32k elements per step, where an unordered parallel backward would show."""
    config = json.loads((converted_dir / "config.json").read_text())
    patches = (config["image_size"] // config["vision_config"]["patch_size"]) ** 2
    assert 8 * (1 + patches) * config["fusion_hidden_size"] >= 32768  # the visual rows alone, per step
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        extra = ("--per_device_batch_size", "8", "--num_epochs", "2", "--seed", "5")
        result = subprocess.run(
            [sys.executable, "-m", "clipvg_hf.train", *_args(converted_dir, fixture_dataset, out, *extra)],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=ROOT,
            env=env,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        runs.append(out)
    first, second = (load_file(out / "checkpoints" / "epoch_1" / "model.safetensors") for out in runs)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    timing = ("seconds", "per_second", "time")
    logs = [[{k: v for k, v in r.items() if not any(t in k for t in timing)} for r in _records(out)] for out in runs]
    assert logs[0] == logs[1] and logs[0][-1]["train_loss"] > 0
