"""The ``evaluate`` metric ``clipvg_hf/metrics/grounding_accuracy``: loaded offline from its folder, equal to the
official Acc@0.5 on the parity fixture, and equal to the project's evaluation loop under accelerate (two processes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clipvg_hf.metrics import GROUNDING_ACCURACY_PATH

from conftest import PARITY_SPLITS, torchrun

evaluate = pytest.importorskip("evaluate")

SCRIPT = Path(__file__).with_name("_grounding_accuracy_ddp.py")
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def metric():
    return evaluate.load(str(GROUNDING_ACCURACY_PATH))


def test_official_fixture_accuracy_and_iou(metric, expected_tensors, expected_json):
    """On the boxes the official code produced, the metric reproduces its per-sample IoU and its Acc@0.5."""
    ious = sys.modules[type(metric).__module__].grounding_ious
    for split in PARITY_SPLITS:
        pred = expected_tensors[f"{split}/pred_boxes"].numpy()
        target = expected_tensors[f"{split}/target_boxes"].numpy()
        official = expected_tensors[f"{split}/iou"].double().numpy()
        result = metric.compute(predictions=pred, references=target, iou_thresholds=[0.25, 0.5, 0.75])
        np.testing.assert_allclose(ious(pred, target), official, atol=1e-6, rtol=0)
        assert result["accuracy"] == expected_json["splits"][split]["acc_at_0.5"]
        assert result["hits"] == int((official >= 0.5).sum()) and result["num_samples"] == len(official)
        assert result["hits@0.25"] == int((official >= 0.25).sum())
        assert result["hits@0.75"] == int((official >= 0.75).sum())
        assert result["mean_iou"] == pytest.approx(official.mean(), abs=1e-6)


def test_pixel_corners_and_the_canvas_clamp(metric):
    """xyxy pixels give the canvas IoU of the same boxes (scale-invariant); only cxcywh clamps the prediction."""
    side = 640.0
    pred = np.array([[0.5, 0.5, 0.4, 0.4], [1.1, 0.5, 0.6, 0.2], [0.2, 0.2, 0.1, 0.1]], dtype=np.float32)
    target = np.array([[0.52, 0.5, 0.4, 0.4], [0.9, 0.5, 0.2, 0.2], [0.7, 0.7, 0.1, 0.1]], dtype=np.float32)
    to_xyxy = lambda b: np.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], axis=1) * side  # noqa: E731
    canvas = metric.compute(predictions=pred, references=target)
    pixels = metric.compute(predictions=to_xyxy(pred), references=to_xyxy(target), box_format="xyxy")
    # row 1 sticks out of the canvas (x2 = 1.4): clamped to x2 = 1 it equals the target (IoU 1), unclamped 1/3
    assert canvas["hits"] == 2 and pixels["hits"] == 1 and canvas["num_samples"] == 3
    clamped = np.clip(to_xyxy(pred) / side, 0, 1) * side
    again = metric.compute(predictions=clamped, references=to_xyxy(target), box_format="xyxy")
    assert again["hits"] == canvas["hits"] and again["mean_iou"] == pytest.approx(canvas["mean_iou"], abs=1e-6)
    metric.add_batch(predictions=pred[:2], references=target[:2])
    metric.add_batch(predictions=pred[2:], references=target[2:])
    assert metric.compute() == canvas
    with pytest.raises(ValueError, match="box_format='xywh' is not supported"):
        metric.compute(predictions=pred, references=target, box_format="xywh")


GOOD = [[10.0, 10.0, 50.0, 50.0], [0.0, 0.0, 4.0, 4.0]]
BAD_INPUTS = [
    (
        {"references": [GOOD[0], [0.0, 0.0, float("inf"), 4.0]]},
        "references row 1: the box [0.0, 0.0, inf, 4.0] is not",
    ),
    ({"predictions": [[0.0, float("nan"), 4.0, 4.0], GOOD[1]]}, "predictions row 0: the box [0.0, nan, 4.0, 4.0] is"),
    ({"references": [GOOD[0], [1e39, 0.0, 4.0, 4.0]]}, "references row 1: the box [inf, 0.0, 4.0, 4.0]"),  # float32
    ({"references": [GOOD[0], [4.0, 0.0, 0.0, 4.0]]}, "references row 1: the xyxy box [4.0, 0.0, 0.0, 4.0] is inver"),
    ({"predictions": [[10.0, 50.0, 50.0, 10.0], GOOD[1]]}, "predictions row 0: the xyxy box [10.0, 50.0, 50.0, 10.0]"),
    ({"box_format": "cxcywh", "references": [[0.5, 0.5, -0.2, 0.2]] * 2}, "references row 0: the cxcywh box"),
    ({"iou_thresholds": [-1]}, "iou_thresholds must lie in [0, 1], got [-1.0]"),
    ({"iou_thresholds": [0.25, 1.5]}, "iou_thresholds must lie in [0, 1], got [1.5]"),
    ({"iou_thresholds": [float("nan")]}, "iou_thresholds must lie in [0, 1], got [nan]"),
]


@pytest.mark.parametrize(("change", "message"), BAD_INPUTS, ids=[str(i) for i in range(len(BAD_INPUTS))])
def test_non_finite_or_inverted_boxes_and_thresholds_outside_0_1_are_errors(metric, change, message):
    """Not a score: an inf reference would give IoU 0, an inverted box a negative area, accuracy@-1 always 1.0."""
    kwargs = {"predictions": GOOD, "references": GOOD, "box_format": "xyxy", **change}
    with pytest.raises(ValueError) as error:
        metric.compute(**kwargs)
    assert message in str(error.value) and "\n" not in str(error.value), error.value


def test_degenerate_boxes_and_threshold_bounds_are_scored(metric):
    """A box of zero width is no error (IoU 0), nor are the thresholds 0 and 1."""
    result = metric.compute(
        predictions=[[5.0, 5.0, 5.0, 9.0], GOOD[1]], references=GOOD, box_format="xyxy", iou_thresholds=[0, 1]
    )
    assert result["hits@0"] == 2 and result["hits@1"] == 1 and result["hits"] == 1


@pytest.mark.slow
def test_under_accelerate_equals_the_evaluation_loop(converted_dir, fixture_dataset, tmp_path):
    """Two processes: gathered and evaluate-distributed metric figures equal the evaluation loop's on every split."""
    env = {
        **os.environ,
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "PYTHONPATH": str(REPO_ROOT),
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    run = subprocess.run(
        [
            *torchrun(2),
            str(SCRIPT),
            str(converted_dir),
            str(fixture_dataset),
            str(GROUNDING_ACCURACY_PATH),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=REPO_ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results) == 4
    for split, figures in results.items():
        project = figures["project"]
        print(
            f"{split}: project {project}\n  evaluate (gathered) {figures['gathered']}\n"
            f"  evaluate (distributed) {figures['distributed']}"
        )
        for name in ("gathered", "distributed"):
            ours = figures[name]
            assert ours["num_samples"] == project["num_samples"], (split, name)
            assert ours["hits"] == project["hits@0.5"], (split, name)
            assert ours["accuracy"] == project["accuracy"], (split, name)
            assert ours["hits@0.25"] == project["hits@0.25"] and ours["hits@0.75"] == project["hits@0.75"]
            assert abs(ours["mean_iou"] - project["mean_iou"]) <= 1e-6, (split, name)


def test_metric_space_page_scores_json_boxes():
    """The metric Space's page (its app.py) parses JSON boxes and thresholds and reports the metric."""
    import importlib.util

    pytest.importorskip("gradio")
    spec = importlib.util.spec_from_file_location("grounding_accuracy_space", GROUNDING_ACCURACY_PATH / "app.py")
    page = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(page)
    boxes = "[[10, 10, 50, 50], [0, 0, 5, 5]]", "[[12, 10, 52, 50], [20, 20, 30, 30]]"
    result = page.score(*boxes, "xyxy", "0.5, 0.95")
    assert result["hits"] == 1 and result["hits@0.95"] == 0 and result["num_samples"] == 2
    with pytest.raises(page.gr.Error, match="Expecting .,. delimiter"):
        page.score("[[1, 2", "[]", "xyxy", "")


def test_readme_snippet_scores_a_loader_like_the_evaluation_loop(converted_dir, fixture_dataset, capsys):
    """The README's metric snippet, run on a prepared fixture loader, prints the evaluation loop's figures."""
    import ast

    import datasets
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    from clipvg_hf.data import CLIPVGCollator, CLIPVGEvalTransform, GroundingDataset
    from clipvg_hf.evaluation import eval_loader, evaluate
    from clipvg_hf.loading import load_model_and_processor

    from utils.readme_snippets import readme_snippet

    model, processor = load_model_and_processor(converted_dir)
    split = datasets.load_dataset(str(fixture_dataset), "refcoco-unsup-single", split="val")
    accelerator = Accelerator(cpu=True)
    loader = accelerator.prepare_data_loader(
        DataLoader(
            GroundingDataset(split, CLIPVGEvalTransform(processor.image_processor)),
            batch_size=5,
            collate_fn=CLIPVGCollator(processor.tokenizer),
        )
    )
    exec(readme_snippet("metric"), {"loader": loader, "model": model, "accelerator": accelerator})
    printed = ast.literal_eval(capsys.readouterr().out.strip().splitlines()[-1])
    project = evaluate(model, eval_loader(split, processor, accelerator, batch_size=5), accelerator).compute()
    assert printed["num_samples"] == project["num_samples"] == 18
    assert printed["accuracy"] == project["accuracy"]
    assert printed["mean_iou"] == pytest.approx(project["mean_iou"], abs=1e-6)
