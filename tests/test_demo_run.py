"""The offline demo pipeline end to end at a tiny size (the full run is `make demo`), and its pieces."""

import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

from clipvg_hf.demo_run import language_blind_baselines, sincos_position_table
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


def _resolve(scene, expression: str) -> list[int]:
    """The objects of ``scene`` an expression can mean, read word by word (independent of the generator)."""
    words = expression.split()[1:]  # drop "the"
    centres = [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in scene.boxes]
    if words[0] in ("bigger", "smaller"):
        same = [i for i, s in enumerate(scene.shapes) if s == words[1]]
        sides = [scene.boxes[i][2] - scene.boxes[i][0] for i in same]
        pick = max if words[0] == "bigger" else min
        return [i for i, side in zip(same, sides) if side == pick(sides) and sides.count(side) == 1]
    if words[-2:] == ["the", "left"] and words[-3] == "from":  # "<ordinal> <shape> from the left"
        same = sorted((centres[i][0], i) for i, s in enumerate(scene.shapes) if s == words[1])
        rank = ["first", "second", "third", "fourth"].index(words[0])
        return [same[rank][1]] if rank < len(same) else []
    if len(words) == 2:  # "<colour> <shape>"
        return [i for i, (c, s) in enumerate(zip(scene.colors, scene.shapes)) if (c, s) == tuple(words)]
    shape, rest = words[0], " ".join(words[1:])
    for phrase, axis, sign in (("left of", 0, -1), ("right of", 0, 1), ("above", 1, -1), ("below", 1, 1)):
        if rest.startswith(phrase + " the "):
            color, anchor_shape = rest[len(phrase) + 5 :].split()
            (anchor,) = [
                i for i, (c, s) in enumerate(zip(scene.colors, scene.shapes)) if (c, s) == (color, anchor_shape)
            ]
            return [
                i
                for i, s in enumerate(scene.shapes)
                if s == shape and sign * (centres[i][axis] - centres[anchor][axis]) > 0
            ]
    raise AssertionError(f"cannot parse {expression!r}")


def test_every_expression_type_identifies_exactly_its_object():
    import collections

    import numpy as np

    from clipvg_hf.demo_shapes import EXPRESSION_TYPES

    spec = ShapesSpec(image_size=32, min_objects=3, max_objects=3, min_side=0.25, max_side=0.45, shared_shape=0.7)
    rng = np.random.default_rng(0)
    seen = collections.Counter()
    for _ in range(300):
        scene = make_scene(rng, spec)
        for index in range(len(scene.boxes)):
            for kind, expressions in scene.candidate_expressions(index).items():
                for expression in expressions:
                    assert _resolve(scene, expression) == [index], (expression, scene)
                    seen[kind] += 1
                if kind != "attribute":  # the relational types never name the object's colour
                    assert all(scene.colors[index] not in e.split()[:2] for e in expressions)
        assert len(scene.referring_expressions(rng)) == len(scene.boxes)
    assert set(seen) == set(EXPRESSION_TYPES) and min(seen.values()) >= 50, seen


def test_language_blind_baselines_on_a_known_case():
    objects = {"a.png": {"boxes": [[0, 0, 10, 10], [20, 20, 40, 40]]}}
    rows = [("a.png", [0, 0, 10, 10], "the red square"), ("a.png", [20, 20, 40, 40], "the blue circle")]
    baselines = language_blind_baselines(objects, rows, rows, size=64)
    assert baselines["random object"] == 0.5  # each expression: one of two objects is right
    assert baselines["largest object"] == 0.5
    assert baselines["mean box"] == 0.0


def test_shape_word_baseline_on_a_known_case():
    from clipvg_hf.demo_run import shape_word_baseline

    objects = {
        "a.png": {"boxes": [[0, 0, 8, 8], [10, 10, 20, 20], [20, 0, 30, 8]], "shapes": ["circle", "circle", "square"]}
    }
    rows = [("a.png", [0, 0, 8, 8], "the first circle from the left"), ("a.png", [20, 0, 30, 8], "the red square")]
    assert shape_word_baseline(objects, rows) == (0.5 + 1.0) / 2


def test_init_noise_perturbs_every_weight_by_about_its_scale():
    from clipvg_hf.demo_run import build_demo_model, demo_config

    plain, noisy = (build_demo_model(demo_config(), 3, noise).state_dict() for noise in (0.0, 1e-6))
    differences = torch.cat([(noisy[k] - plain[k]).flatten() for k in plain if plain[k].is_floating_point()])
    assert 0.5e-6 < differences.std() < 2e-6 and (differences != 0).float().mean() > 0.99


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
    per_type = summary["per_expression_type"]["val"]
    assert per_type["all"]["expressions"] == sum(v["expressions"] for k, v in per_type.items() if k != "all")
    assert per_type["all"]["accuracy"] == pytest.approx(summary["validation_accuracy"], abs=1e-6)
    assert summary["machine"]["isa"] and summary["machine"]["threads"] >= 1 and "expression type" in run.stdout
    assert summary["mixed_precision"] == "no"
    records = [json.loads(line) for line in (out / "run" / "log.jsonl").read_text().splitlines()]
    assert len(records) == 1 and records[0]["global_step"] > 0


@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_the_demo_hands_its_mixed_precision_to_accelerate_launch(tmp_path, precision):
    from clipvg_hf.commands.demo import build_parser
    from clipvg_hf.demo_run import train_command

    args = build_parser().parse_args(["--mixed_precision", precision])
    command = train_command(tmp_path, args)
    launcher = command[: command.index("-m", 3)]
    assert launcher[launcher.index("--mixed_precision") + 1] == precision and "--cpu" in launcher
