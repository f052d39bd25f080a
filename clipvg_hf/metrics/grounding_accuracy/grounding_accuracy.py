"""Grounding accuracy (Acc@0.5 as CLIP-VG computes it, Acc at other IoU thresholds, mean IoU) as an `evaluate` metric.

Self-contained (numpy, datasets and evaluate only) so that it loads from a folder or a metric Space without the
clipvg_hf package: ``evaluate.load("path/to/grounding_accuracy")``.
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

_CITATION = """\
@article{xiao2023clip,
  title={CLIP-VG: Self-paced Curriculum Adapting of CLIP for Visual Grounding},
  author={Xiao, Linhui and Yang, Xiaoshan and Peng, Fang and Yan, Ming and Wang, Yaowei and Xu, Changsheng},
  journal={IEEE Transactions on Multimedia},
  year={2023}
}
"""

_DESCRIPTION = """\
Referring expression comprehension (visual grounding) accuracy: the share of (image, expression) pairs whose
predicted box overlaps the ground-truth box with IoU >= 0.5 (Acc@0.5), the accuracy at further IoU thresholds, and
the mean IoU. With normalised (cx, cy, w, h) boxes on the letterboxed canvas (``box_format="cxcywh"``) the IoU is
exactly CLIP-VG's: float32 arithmetic, the prediction clamped to [0, 1] after conversion to corners, the target not,
1e-16 added to the union. With (x1, y1, x2, y2) pixel boxes (``box_format="xyxy"``) no clamp is applied.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: one box per sample, four numbers in the layout given by `box_format`.
    references: the ground-truth box of each sample, same layout.
    box_format: "cxcywh" (default; normalised centre, width, height on the square canvas, as CLIP-VG's
        `pred_boxes`) or "xyxy" (corner coordinates, in pixels of the image or any common frame).
    iou_thresholds: thresholds at which accuracy is reported, besides 0.5 (default: (0.5,)). A hit is IoU >= t.
        Each must lie in [0, 1].
    Boxes must be finite and not inverted (x2 >= x1 and y2 >= y1, or w >= 0 and h >= 0 in "cxcywh"); a bad box or
    threshold is a ValueError naming the argument and the row.
Returns:
    accuracy: Acc@0.5, the share of samples with IoU >= 0.5.
    hits: number of samples with IoU >= 0.5.
    accuracy@t, hits@t: the same for each threshold t of `iou_thresholds`.
    mean_iou: mean of the per-sample IoUs.
    num_samples: number of samples.
Examples:
    >>> import evaluate
    >>> metric = evaluate.load("path/to/grounding_accuracy")
    >>> metric.compute(predictions=[[10, 10, 50, 50]], references=[[12, 10, 52, 50]], box_format="xyxy")
    {'accuracy': 1.0, 'hits': 1, 'mean_iou': 0.904..., 'num_samples': 1}
"""

BOX_FORMATS = ("cxcywh", "xyxy")
ACCURACY_IOU_THRESHOLD = 0.5


def _corners(boxes: np.ndarray, box_format: str) -> np.ndarray:
    """(N, 4) float32 corners (x1, y1, x2, y2) from boxes in `box_format`."""
    if box_format == "xyxy":
        return boxes
    cx, cy, w, h = boxes.T
    half = np.float32(0.5)
    return np.stack([cx - half * w, cy - half * h, cx + half * w, cy + half * h], axis=-1)


def grounding_ious(predictions: np.ndarray, references: np.ndarray, box_format: str = "cxcywh") -> np.ndarray:
    """Per-sample IoU in float32; in "cxcywh" the prediction is clamped to the [0, 1] canvas, the target is not."""
    pred = _corners(np.asarray(predictions, dtype=np.float32).reshape(-1, 4), box_format)
    target = _corners(np.asarray(references, dtype=np.float32).reshape(-1, 4), box_format)
    if box_format == "cxcywh":
        pred = np.clip(pred, np.float32(0), np.float32(1))
    inter_w = np.maximum(np.minimum(pred[:, 2], target[:, 2]) - np.maximum(pred[:, 0], target[:, 0]), np.float32(0))
    inter_h = np.maximum(np.minimum(pred[:, 3], target[:, 3]) - np.maximum(pred[:, 1], target[:, 1]), np.float32(0))
    inter = inter_w * inter_h
    area_pred = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    area_target = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])
    return inter / (area_pred + area_target - inter + np.float32(1e-16))


def _box_problem(name: str, boxes: list[list[float]] | np.ndarray, box_format: str) -> str | None:
    """Why ``boxes`` cannot be scored (the first non-finite or inverted box, named by argument and row), or None."""
    array = np.asarray(boxes, dtype=np.float32).astype(np.float64).reshape(-1, 4)  # as scored: float32
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        return f"{name} row {row}: the box {array[row].tolist()} is not finite"
    first, second = (array[:, 2] - array[:, 0], array[:, 3] - array[:, 1]) if box_format == "xyxy" else array[:, 2:].T
    bad = (first < 0) | (second < 0)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        what = "inverted (x2 < x1 or y2 < y1)" if box_format == "xyxy" else "of negative width or height"
        return f"{name} row {row}: the {box_format} box {array[row].tolist()} is {what}"
    return None


def _threshold_key(name: str, threshold: float) -> str:
    return f"{name}@{threshold:g}"


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class GroundingAccuracy(evaluate.Metric):
    """Acc@0.5, accuracy at other IoU thresholds and mean IoU of one predicted box per referring expression."""

    def _info(self) -> evaluate.MetricInfo:
        box = datasets.Sequence(datasets.Value("float32"), length=4)
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": box, "references": box}),
            reference_urls=["https://arxiv.org/abs/2305.08685"],
        )

    def _compute(
        self,
        predictions: list[list[float]],
        references: list[list[float]],
        box_format: str = "cxcywh",
        iou_thresholds: tuple[float, ...] | list[float] = (ACCURACY_IOU_THRESHOLD,),
    ) -> dict[str, float | int]:
        if box_format not in BOX_FORMATS:
            raise ValueError(f"box_format={box_format!r} is not supported; choose one of {BOX_FORMATS}.")
        if len(predictions) == 0:
            raise ValueError("no samples to evaluate")
        thresholds = [float(t) for t in iou_thresholds]
        outside = [t for t in thresholds if not 0.0 <= t <= 1.0]  # NaN included
        if outside:
            raise ValueError(f"iou_thresholds must lie in [0, 1], got {outside}")
        for name, boxes in (("predictions", predictions), ("references", references)):
            problem = _box_problem(name, boxes, box_format)
            if problem:
                raise ValueError(problem)
        ious = grounding_ious(predictions, references, box_format)
        if not np.isfinite(ious).all():
            bad = int(np.flatnonzero(~np.isfinite(ious))[0])
            raise ValueError(
                f"sample {bad}: the IoU is not a finite number "
                f"(boxes {list(predictions[bad])}, {list(references[bad])})"
            )
        wide = ious.astype(np.float64)  # thresholds compare in float64: 0.7 means 0.7, not float32(0.7)
        hits = int((wide >= ACCURACY_IOU_THRESHOLD).sum())
        result: dict[str, float | int] = {"accuracy": hits / len(ious), "hits": hits}
        for threshold in sorted(set(thresholds) - {ACCURACY_IOU_THRESHOLD}):
            at = int((wide >= threshold).sum())
            result[_threshold_key("accuracy", threshold)] = at / len(ious)
            result[_threshold_key("hits", threshold)] = at
        result["mean_iou"] = float(wide.mean())
        result["num_samples"] = len(ious)
        return result
