"""Learning guards: a tiny CLIP-VG and a tiny HiVG, trained from scratch through the training command on generated
shapes (two objects of distinct colours, "the <colour> <shape>"), must ground held-out expressions.

Parity tests check that each step computes what the official code computes; these check that the steps add up to a
model that learns. A change to the initialisation, the loss, the optimiser, the schedule or the data path that stops
learning fails here. Thresholds sit below the worst held-out Acc@0.5 measured over seeds, a perturbed start and
AVX2 kernels (``MEASURED``; rerun ``python tests/test_learning.py`` to measure again), never the best.

HiVG, with its dense alignment and segmentation losses, reads the expression within the guard's steps: it must beat
every language-blind predictor (random object, largest object: 0.5) by far. CLIP-VG from scratch, with the demo
model's initialisation (8 fusion heads, query/key projections at twice their xavier scale), first learns to box *an*
object (0.5, the language-blind plateau) and then reads the colour after a plateau of random length: 5 to more than
20 epochs over the measured seeds and CPUs (one run ended at 0.535). Twice the learning rate, a third query/key gain,
batches of 16, 4 px patches and three objects per image were tried and do not shorten it within the guard's time
(the demo, with more objects and data, leaves it in epoch 3-4). So the CLIP-VG guard requires beating the image-blind
mean box (0.0) by far, which a broken gradient, loss or data path does not, and ``make demo`` shows it reading words.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from utils.paths import REPO_ROOT

pytestmark = pytest.mark.slow

SIZE = 32
SPEC = dict(image_size=SIZE, min_objects=2, max_objects=2, min_side=0.4, max_side=0.5, relational=0.0, columns=True)
PATCH = 8  # a 4 x 4 grid: few tokens per expression, so the guard trains in about a minute
IMAGES = {"train": 600, "val": 40, "test": 100}

#: Held-out Acc@0.5 of the guard runs (2 threads, 1036 steps at a constant 5e-4 after warm-up, fused AdamW, as the
#: demo trains), per CPU: seeds 0, 1, 2, seed 0 with every initial weight perturbed by N(0, 1e-6), and seed 0 with
#: ATEN_CPU_CAPABILITY=avx2 (where the default kernels are not AVX2 already). About 65 s of training for CLIP-VG,
#: 90 s for HiVG on 2 cores.
MEASURED = {
    "clipvg": {
        "AMD EPYC, AVX-512 kernels (AVX2 last)": [0.995, 0.85, 0.535, 0.915, 0.98],
        "AMD EPYC family 25 model 17, AVX2 only": [0.98, 0.80, 0.96, 0.95],
    },
    "hivg": {"AMD EPYC, AVX-512 kernels (AVX2 last)": [0.98, 0.995, 1.0, 0.99, 0.975]},
}
#: The worst measured run less a margin for other CPUs; the baseline each family must beat by far.
THRESHOLD = {"clipvg": 0.4, "hivg": 0.9}
BASELINE = {"clipvg": "mean_box", "hivg": "largest_object"}


def _pack(root: Path, seed: int) -> tuple[Path, dict[str, float]]:
    """Write and convert the shapes pack; returns the dataset folder and the test split's language-blind baselines."""
    from clipvg_hf.data import convert_dataset
    from clipvg_hf.demo_run import language_blind_baselines
    from clipvg_hf.demo_shapes import ShapesSpec, write_shapes_pack

    raw = root / "raw"
    write_shapes_pack(raw, IMAGES, ShapesSpec(**SPEC), seed=seed)
    convert_dataset(raw / "splits", raw / "image_data", root / "data", "shapes", "full")
    objects = json.loads((raw / "objects.json").read_text())
    rows = {split: torch.load(raw / "splits" / "shapes" / f"shapes_{split}.pth") for split in ("train", "test")}
    return root / "data", language_blind_baselines(objects, rows["train"], rows["test"], SIZE)


def _init(family: str, folder: Path, seed: int, noise: float) -> None:
    """A from-scratch model of the family, saved with its processor."""
    from clipvg_hf import HiVGConfig, HiVGForGrounding
    from clipvg_hf.demo_run import build_demo_model, demo_config
    from clipvg_hf.processing_clipvg import CLIPVGProcessor

    config = demo_config(SIZE, PATCH)
    if family == "clipvg":
        model = build_demo_model(config, seed, noise)
    else:
        values = {
            k: v
            for k, v in config.to_dict().items()
            if k not in ("model_type", "architectures", "transformers_version")
        }
        values.update(bridge_layers=[0, 2], bridge_text_layers=[2], token_mlp_size=64, lora_rank=4, lora_alpha=4)
        values.update(lora_dropout=0.0, lora_adapters=False)
        torch.manual_seed(seed)
        model = HiVGForGrounding(HiVGConfig(**values))
        with torch.no_grad():
            if noise:
                generator = torch.Generator().manual_seed(seed + 1)
                for parameter in model.parameters():
                    parameter.add_(torch.randn(parameter.shape, generator=generator) * noise)
    model.save_pretrained(folder)
    CLIPVGProcessor.from_defaults(SIZE).save_pretrained(folder)


def guard_run(family: str, root: Path, seed: int = 0, noise: float = 0.0, env: dict | None = None) -> dict:
    """Train one guard model; returns its held-out test Acc@0.5 and the language-blind baseline."""
    from clipvg_hf.demo_run import train_arguments
    from clipvg_hf.evaluation import evaluate_model

    data, baselines = _pack(root, seed)
    _init(family, root / "init", seed, noise)
    args = argparse.Namespace(
        epochs=28, batch_size=32, learning_rate=5e-4, warmup_steps=30, seed=seed, lr_scheduler="constant"
    )  # the demo's schedule: a constant rate after warm-up
    command = [sys.executable, "-m", "clipvg_hf.train", *train_arguments(root, args), "--model_family", family]
    run_env = {**os.environ, "OMP_NUM_THREADS": "2", **(env or {})}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT, env=run_env)
    assert result.returncode == 0, result.stderr[-3000:]
    results = evaluate_model(root / "run" / "best", str(data), "shapes-full", ["test"])
    return {
        "accuracy": results["splits"]["test"]["accuracy"],
        **{k.replace(" ", "_"): v for k, v in baselines.items()},
    }


@pytest.mark.parametrize("family", ["clipvg", "hivg"])
def test_a_tiny_model_learns_to_ground_from_scratch(family, tmp_path):
    outcome = guard_run(family, tmp_path)
    assert max(outcome["random_object"], outcome["largest_object"]) <= 0.55 and outcome["mean_box"] < 0.05  # the task
    assert THRESHOLD[family] - outcome[BASELINE[family]] >= 0.15  # far above its baseline
    assert outcome["accuracy"] >= THRESHOLD[family], outcome


if (
    __name__ == "__main__"
):  # the measurement behind THRESHOLD: seeds, a perturbed start and AVX2 kernels, one line each
    import tempfile

    settings = [(0, 0.0, None), (1, 0.0, None), (2, 0.0, None), (0, 1e-6, None), (0, 0.0, "avx2")]
    for family in sys.argv[1:] or ["clipvg", "hivg"]:
        for seed, noise, isa in settings:
            with tempfile.TemporaryDirectory() as folder:
                env = {"ATEN_CPU_CAPABILITY": isa} if isa else None
                outcome = guard_run(family, Path(folder), seed, noise, env)
            print(json.dumps({"family": family, "seed": seed, "noise": noise, "isa": isa or "default", **outcome}))
