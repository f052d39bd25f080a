"""Two CPU processes train HiVG (HiLoRA stage 3) like one process on the same global batch."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from _hivg_fixture import converted
from conftest import torchrun

ROOT = Path(__file__).resolve().parents[3]


def _run(args, nproc, home):
    launcher = [sys.executable, "-m", "clipvg_hf.train"] if nproc == 1 else [*torchrun(nproc), "-m", "clipvg_hf.train"]
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HOME": str(home)}
    result = subprocess.run(launcher + args, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_two_processes_match_one_process_on_the_same_global_batch(fixture_dataset, tmp_path):
    model = converted("unc")
    folder = tmp_path / "model"
    # no dropout, and no contrastive term: its softmax runs over each process's own rows (as officially), so it is
    # the one loss term that depends on how the global batch is split
    saved = dict(model.config.loss_weights), model.config.fusion_dropout, model.config.lora_dropout
    model.config.loss_weights["loss_contrastive"] = 0.0
    model.config.fusion_dropout = model.config.lora_dropout = 0.0
    model.save_pretrained(folder)
    model.config.loss_weights, model.config.fusion_dropout, model.config.lora_dropout = saved
    runs = {}
    for nproc, batch in ((1, "4"), (2, "2")):
        out = tmp_path / f"run{nproc}"
        result = _run(
            [
                "--model_name_or_path",
                str(folder),
                "--model_family",
                "hivg",
                "--dataset",
                str(fixture_dataset),
                "--dataset_config",
                "refcoco-unsup-single",
                "--output_dir",
                str(out),
                "--num_epochs",
                "1",
                "--num_workers",
                "0",
                "--no_aug_crop",
                "--cpu",
                "--per_device_batch_size",
                batch,
                "--learning_rate",
                "1e-4",
            ],
            nproc,
            tmp_path,
        )
        assert f"{nproc} process(es)" in result.stdout
        runs[nproc] = out
    w1 = load_file(runs[1] / "checkpoints" / "epoch_0" / "model.safetensors")
    w2 = load_file(runs[2] / "checkpoints" / "epoch_0" / "model.safetensors")
    start = model.state_dict()
    moved = [k for k in w1 if not (w1[k] == start[k]).all()]
    assert any(".lora_" in k for k in moved) and any(k.startswith("bridges.") for k in moved)
    # only the order of float reductions differs; attention key biases have an exactly zero gradient (a shift
    # shared by all keys), so Adam turns their rounding noise into steps bounded only by lr x steps
    key_bias = {k for k in w1 if k.endswith("k_proj.bias") or k.endswith("k_proj.base_layer.bias")}
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1 if k not in key_bias) <= 2e-6
    assert max((w1[k] - w2[k]).abs().max().item() for k in key_bias) <= 1e-4 * 5
    r1, r2 = (json.loads((runs[n] / "log.jsonl").read_text().splitlines()[0]) for n in (1, 2))
    assert r1["global_step"] == r2["global_step"] == 5
    assert r1["validation_miou"] == pytest.approx(r2["validation_miou"], abs=1e-5)
