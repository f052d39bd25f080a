"""bf16 mixed precision on the CPU through accelerate (``accelerate launch --cpu --mixed_precision bf16``): a
2-step run of the training command on the fixture model trains, with a finite loss."""

import json
import math
import subprocess
import sys

import pytest

from utils.paths import REPO_ROOT


@pytest.mark.slow
def test_two_step_bf16_cpu_run_trains_with_a_finite_loss(converted_dir, fixture_dataset, tmp_path):
    out = tmp_path / "run"
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1"]
    launcher += ["--num_machines", "1", "--dynamo_backend", "no", "--mixed_precision", "bf16"]
    args = ["-m", "clipvg_hf.train", "--model_name_or_path", str(converted_dir), "--dataset", str(fixture_dataset)]
    args += ["--dataset_config", "refcoco-unsup-single", "--output_dir", str(out), "--num_workers", "0"]
    args += ["--no_aug_crop", "--cpu", "--per_device_batch_size", "4", "--train_steps", "2"]
    result = subprocess.run(launcher + args, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert records and all(math.isfinite(r["train_loss"]) for r in records)
    assert records[-1]["global_step"] >= 2  # --train_steps rounds up to whole epochs (5 steps here)
