"""Learning guards: a tiny CLIP-VG and a tiny HiVG, trained from scratch through the training command on generated
shapes (two objects of distinct colours, "the <colour> <shape>"), must ground held-out expressions.

Parity tests check that each step computes what the official code computes; these check that the steps add up to a
model that learns. A change to the initialisation, the loss, the optimiser, the schedule or the data path that stops
learning fails here. Thresholds sit below the worst held-out Acc@0.5 measured over seeds, a perturbed start and
AVX2 kernels (``MEASURED``; rerun ``python tests/test_learning.py`` to measure again), never the best.

Both families must beat every predictor that ignores the expression. Each test image has two objects in separate
strips and one expression for each, so such a predictor, giving both expressions the same box, hits at most one:
Acc@0.5 0.5 at most, exactly (``_blind_ceiling``). Above it, only a model that reads the words can score.

From scratch a model first learns to box *an* object (the blind 0.5) and reads the colour after a plateau of random
length; its way out is a second-order gradient that batch noise drowns. CLIP-VG therefore trains on batches of 128
from 2,000 images: nine of ten measured runs left the plateau in epochs 4-8 and ended at 0.965-1.0, the tenth
(seed 8) left it in epoch 9 and ended at 0.575. At batches of 32 over 600 images the plateau had lasted 5 to more
than 20 epochs. HiVG, with its dense alignment and segmentation losses, reads the colour within its steps at
batches of 32 and must reach 0.9.
"""

import argparse
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from utils.paths import REPO_ROOT

pytestmark = pytest.mark.slow

SIZE = 32
SPEC = dict(image_size=SIZE, min_objects=2, max_objects=2, min_side=0.4, max_side=0.5, relational=0.0, columns=True)
PATCH = 8  # a 4 x 4 grid: few tokens per expression, so the guard trains in about a minute
#: Training images, batch size and epochs per family (a constant 5e-4 after warm-up, fused AdamW, as the demo trains).
RECIPE = {
    "clipvg": {"train_images": 2000, "batch_size": 128, "epochs": 12},
    "hivg": {"train_images": 600, "batch_size": 32, "epochs": 28},
}
HELD_OUT = {"val": 40, "test": 100}

#: Held-out Acc@0.5 of the guard runs at ``RECIPE`` on 2 threads, per CPU: the seeds listed, seed 0 with every
#: initial weight perturbed by N(0, 1e-6), and seed 0 with ATEN_CPU_CAPABILITY=avx2 where the default kernels are
#: wider. About 70 s of training for CLIP-VG (372 steps), 90 s for HiVG (1036 steps) on 2 cores.
MEASURED = {
    "clipvg": {  # seeds 0-8, perturbed
        "AMD EPYC family 25 model 17, AVX2 only": [0.99, 0.995, 0.99, 0.995, 1.0, 0.985, 0.99, 0.965, 0.575, 0.975],
    },
    "hivg": {  # seeds 0-2, perturbed, AVX2
        "AMD EPYC, AVX-512 kernels (AVX2 last)": [0.98, 0.995, 1.0, 0.99, 0.975],
    },
}
#: Below the worst measured run and above the blind ceiling (0.5): a pass proves the model reads the expression.
THRESHOLD = {"clipvg": 0.55, "hivg": 0.9}


def _pack(root: Path, seed: int, train_images: int) -> tuple[Path, dict[str, float]]:
    """Write and convert the shapes pack; returns the dataset folder and the test split's language-blind baselines."""
    from clipvg_hf.data import convert_dataset
    from clipvg_hf.demo_run import language_blind_baselines
    from clipvg_hf.demo_shapes import ShapesSpec, write_shapes_pack

    raw = root / "raw"
    write_shapes_pack(raw, {"train": train_images, **HELD_OUT}, ShapesSpec(**SPEC), seed=seed)
    convert_dataset(raw / "splits", raw / "image_data", root / "data", "shapes", "full")
    objects = json.loads((raw / "objects.json").read_text())
    rows = {split: torch.load(raw / "splits" / "shapes" / f"shapes_{split}.pth") for split in ("train", "test")}
    baselines = language_blind_baselines(objects, rows["train"], rows["test"], SIZE)
    return root / "data", {**baselines, "blind ceiling": _blind_ceiling(rows["test"])}


def _blind_ceiling(rows: list) -> float:
    """The most Acc@0.5 any predictor that ignores the words can reach on ``rows`` ((file, box, text) rows).

    The objects of an image sit in separate vertical strips, so no box has IoU >= 0.5 with two of them: a predictor
    that gives every expression of an image the same box hits at most the expressions of one object.
    """
    per_object = Counter((file_name, tuple(box)) for file_name, box, _ in rows)
    best: dict[str, int] = {}
    for (file_name, _), count in per_object.items():
        best[file_name] = max(best.get(file_name, 0), count)
    return sum(best.values()) / len(rows)


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
    """Train one guard model; returns its held-out test Acc@0.5, validation curve and language-blind baselines."""
    from clipvg_hf.demo_run import train_arguments
    from clipvg_hf.evaluation import evaluate_model

    recipe = RECIPE[family]
    data, baselines = _pack(root, seed, recipe["train_images"])
    _init(family, root / "init", seed, noise)
    args = argparse.Namespace(
        epochs=recipe["epochs"],
        batch_size=recipe["batch_size"],
        learning_rate=5e-4,
        warmup_steps=30,
        seed=seed,
        lr_scheduler="constant",
    )  # the demo's schedule: a constant rate after warm-up
    command = [sys.executable, "-m", "clipvg_hf.train", *train_arguments(root, args), "--model_family", family]
    run_env = {**os.environ, "OMP_NUM_THREADS": "2", **(env or {})}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT, env=run_env)
    assert result.returncode == 0, result.stderr[-3000:]
    results = evaluate_model(root / "run" / "best", str(data), "shapes-full", ["test"])
    log = [json.loads(line) for line in (root / "run" / "log.jsonl").read_text().splitlines()]
    return {
        "accuracy": results["splits"]["test"]["accuracy"],
        "validation_curve": [round(r["validation_accuracy"], 3) for r in log if "validation_accuracy" in r],
        **{k.replace(" ", "_"): v for k, v in baselines.items()},
    }


@pytest.mark.parametrize("family", ["clipvg", "hivg"])
def test_a_tiny_model_learns_to_ground_from_scratch(family, tmp_path):
    outcome = guard_run(family, tmp_path)
    ceiling = outcome["blind_ceiling"]
    assert ceiling == 0.5 and outcome["mean_box"] < 0.05  # the task: two objects, the words pick one
    assert max(outcome["random_object"], outcome["largest_object"]) <= ceiling
    assert THRESHOLD[family] > ceiling  # only a model that reads the words can pass
    assert outcome["accuracy"] >= THRESHOLD[family], outcome


def _measure(families: list[str], seeds: list[int]) -> None:
    """The measurement behind ``THRESHOLD``, one JSON line per run: each seed, seed 0 with every initial weight
    perturbed by N(0, 1e-6), and seed 0 on AVX2 kernels where the default kernels are wider."""
    import tempfile

    settings = [(seed, 0.0, None) for seed in seeds] + [(0, 1e-6, None)]
    if torch.backends.cpu.get_cpu_capability() != "AVX2":
        settings.append((0, 0.0, "avx2"))
    for family in families:
        for seed, noise, isa in settings:
            with tempfile.TemporaryDirectory() as folder:
                env = {"ATEN_CPU_CAPABILITY": isa} if isa else None
                outcome = guard_run(family, Path(folder), seed, noise, env)
            print(json.dumps({"family": family, "seed": seed, "noise": noise, "isa": isa or "default", **outcome}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=_measure.__doc__)
    parser.add_argument("families", nargs="*", metavar="{clipvg,hivg}", help="default: both")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    cli = parser.parse_args()
    if set(cli.families) - set(RECIPE):
        parser.error(f"families: choose from {sorted(RECIPE)}, got {cli.families}")
    _measure(cli.families or ["clipvg", "hivg"], cli.seeds)
