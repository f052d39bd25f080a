"""The offline demo pipeline end to end at a tiny size (the full run is `make demo`), and its pieces."""

import json
import subprocess
import sys

import torch
from PIL import Image

from clipvg_hf.demo import language_blind_baselines, sincos_position_table
from clipvg_hf.demo_shapes import ShapesSpec, draw_scene, make_scene, write_shapes_pack


def test_shapes_are_deterministic_distinct_and_drawn_inside_their_boxes(tmp_path):
    import numpy as np

    spec = ShapesSpec()
    a, b = make_scene(np.random.default_rng(3), spec), make_scene(np.random.default_rng(3), spec)
    assert a == b and len(set(a.colors)) == len(a.colors)  # colours identify the objects
    image = draw_scene(a, spec.image_size)
    for (x1, y1, x2, y2), color in zip(a.boxes, a.colors):
        inside = np.asarray(image)[y1:y2, x1:x2].reshape(-1, 3)
        from clipvg_hf.demo_shapes import COLORS

        assert (inside == COLORS[color]).all(axis=1).mean() > 0.4  # the shape fills its box
    counts = write_shapes_pack(tmp_path, {"train": 3, "val": 2}, spec, seed=1)
    rows = torch.load(tmp_path / "splits" / "shapes" / "shapes_val.pth")
    assert counts["val"] == len(rows) and all(len(r) == 3 and r[2].startswith("the ") for r in rows)
    assert Image.open(tmp_path / "image_data" / "shapes" / "images" / rows[0][0]).size == (64, 64)


def test_language_blind_baselines_on_a_known_case():
    objects = {"a.png": {"boxes": [[0, 0, 10, 10], [20, 20, 40, 40]]}}
    rows = [("a.png", [0, 0, 10, 10], "the red square"), ("a.png", [20, 20, 40, 40], "the blue circle")]
    baselines = language_blind_baselines(objects, rows, rows, size=64)
    assert baselines["random object"] == 0.5  # each expression: one of two objects is right
    assert baselines["largest object"] == 0.5
    assert baselines["mean box"] == 0.0


def test_sincos_positions_distinguish_every_patch():
    table = sincos_position_table(8, 64)
    assert table.shape == (65, 64) and table[0].abs().sum() == 0
    distances = torch.cdist(table[1:], table[1:]) + torch.eye(64) * 10
    assert distances.min() > 0.1


def test_demo_runs_end_to_end_at_a_tiny_size(tmp_path):
    out = tmp_path / "demo"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "clipvg_hf.demo",
            "--output_dir",
            str(out),
            "--train_images",
            "24",
            "--val_images",
            "6",
            "--test_images",
            "4",
            "--epochs",
            "1",
            "--batch_size",
            "8",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    summary = json.loads((out / "summary.json").read_text())
    assert run.returncode == (0 if summary["reached"] else 1), run.stderr[-3000:]
    assert "shapes-full" in run.stdout and "language-blind" in run.stdout
    assert set(summary["language_blind_baselines"]) == {"mean box", "largest object", "random object"}
    assert summary["best_language_blind_baseline"] == max(summary["language_blind_baselines"].values())
    assert (out / "predictions.png").is_file() and (out / "training_curve.png").is_file()
    assert (out / "run" / "best" / "model.safetensors").is_file()
    records = [json.loads(line) for line in (out / "run" / "log.jsonl").read_text().splitlines()]
    assert len(records) == 1 and records[0]["global_step"] > 0
