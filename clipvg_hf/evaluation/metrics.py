"""Grounding metrics: Acc@0.5 and mean IoU, computed as the official CLIP-VG evaluation does; and
:func:`score_predictions`, which scores a predictions file (one JSON line per expression, from
``clipvg-evaluate --predictions`` or any model) as lmms-eval does.

The ``evaluate``-library metric that needs no clipvg_hf lives apart, as packaged data, in
``clipvg_hf/metrics/grounding_accuracy`` (:data:`clipvg_hf.metrics.GROUNDING_ACCURACY_PATH`)."""

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..boxes_clipvg import grounding_iou

__all__ = [
    "ACCURACY_IOU_THRESHOLD",
    "LMMS_EVAL_THRESHOLDS",
    "GroundingMetrics",
    "score_predictions",
    "summarize_ious",
]

#: A prediction counts as correct when its IoU with the target is at least this.
ACCURACY_IOU_THRESHOLD = 0.5


def summarize_ious(ious: torch.Tensor, threshold: float = ACCURACY_IOU_THRESHOLD) -> dict[str, float | int]:
    """Acc@threshold, mean IoU and the number of samples from per-sample IoUs."""
    ious = ious.detach().flatten().double().cpu()
    n = ious.numel()
    if n == 0:
        raise ValueError("no samples to evaluate")
    hits = int((ious >= threshold).sum())
    return {"accuracy": hits / n, "mean_iou": float(ious.mean()), "num_samples": n}


@dataclass
class GroundingMetrics:
    """Accumulates per-sample IoUs over batches (each sample counted once, by its row index)."""

    threshold: float = ACCURACY_IOU_THRESHOLD
    ious: list[torch.Tensor] = field(default_factory=list)
    row_indices: list[torch.Tensor] = field(default_factory=list)

    def update(
        self, pred_boxes: torch.Tensor, target_boxes: torch.Tensor, row_index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Add a batch of (cx, cy, w, h) predictions and targets; returns the batch IoUs."""
        iou = grounding_iou(pred_boxes.reshape(-1, 4).float(), target_boxes.reshape(-1, 4).float())
        self.ious.append(iou.detach().cpu())
        if row_index is not None:
            self.row_indices.append(row_index.detach().cpu().reshape(-1))
        return iou

    def per_sample(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """All IoUs, sorted by row index when row indices were given (which must then be unique)."""
        ious = torch.cat(self.ious) if self.ious else torch.zeros(0)
        if not self.row_indices:
            return ious, None
        rows = torch.cat(self.row_indices)
        if rows.unique().numel() != rows.numel():
            raise RuntimeError("a sample was evaluated twice (duplicate row indices)")
        order = rows.argsort()
        return ious[order], rows[order]

    def compute(self) -> dict[str, float | int]:
        return summarize_ious(self.per_sample()[0], self.threshold)


#: lmms-eval's REC accuracy thresholds (``refcoco_ACC@t``: a hit when IoU >= t).
LMMS_EVAL_THRESHOLDS = (0.1, 0.3, 0.5, 0.7, 0.9)


def _box_of(record: Mapping[str, Any], key: str, where: str) -> list[float]:
    box = record.get(key)
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        raise ValueError(f"{where}: {key!r} must be a list of 4 numbers, got {box!r}")
    values = []
    for v in box:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{where}: {key!r} must hold 4 finite numbers, got {box!r}")
        values.append(float(v))
    if values[2] < values[0] or values[3] < values[1]:
        raise ValueError(f"{where}: {key!r} {values} is inverted (x2 < x1 or y2 < y1)")
    return values


def _read_records(predictions: "str | Path | Iterable[Mapping[str, Any]]") -> list[tuple[str, Mapping[str, Any]]]:
    if not isinstance(predictions, (str, Path)):
        return [(f"record {i}", r) for i, r in enumerate(predictions)]
    path = Path(predictions)
    if not path.is_file():
        raise ValueError(f"predictions file not found: {path}")
    records = []
    with path.open() as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path} line {number}: not JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path} line {number}: expected a JSON object")
            records.append((f"{path} line {number}", record))
    return records


def score_predictions(
    predictions: "str | Path | Iterable[Mapping[str, Any]]",
    *,
    pred_key: str = "pred_box_norm",
    target_key: str = "target_box_norm",
    thresholds: Sequence[float] = LMMS_EVAL_THRESHOLDS,
    by_split: bool = False,
) -> dict[str, Any]:
    """Score a predictions file (JSON lines) or records as lmms-eval scores REC, plus CLIP-VG's Acc@0.5.

    Each record holds a predicted and a target box (x1, y1, x2, y2) in one frame: by default ``pred_box_norm`` and
    ``target_box_norm`` (normalised by the image width and height, lmms-eval's convention); ``pred_key="pred_box",
    target_key="target_box"`` scores the pixel boxes (the same IoUs). IoU is computed on continuous areas (a zero
    union gives 0). Returns ``accuracy`` (Acc@0.5, a hit when IoU >= 0.5) and ``hits``, ``ACC@t`` for each threshold
    (lmms-eval's ``refcoco_ACC@t``), ``center_accuracy`` (the predicted box's centre inside the target box, borders
    included: lmms-eval's ``Center_ACC``), ``mean_iou`` and ``num_samples``; with ``by_split`` the same per value
    of the records' ``split`` under ``splits``. A bad line (not JSON, a missing, non-finite or inverted box) is a
    ``ValueError`` naming the file and line.
    """
    records = _read_records(predictions)
    if not records:
        raise ValueError("no predictions to score")
    bad = [t for t in thresholds if not (isinstance(t, (int, float)) and 0.0 <= t <= 1.0)]
    if bad:
        raise ValueError(f"thresholds must lie in [0, 1], got {bad}")
    scored = []
    for where, record in records:
        pred, target = _box_of(record, pred_key, where), _box_of(record, target_key, where)
        inter_w = max(0.0, min(pred[2], target[2]) - max(pred[0], target[0]))
        inter_h = max(0.0, min(pred[3], target[3]) - max(pred[1], target[1]))
        inter = inter_w * inter_h
        union = (pred[2] - pred[0]) * (pred[3] - pred[1]) + (target[2] - target[0]) * (target[3] - target[1]) - inter
        iou = inter / union if union > 0 else 0.0
        cx, cy = (pred[0] + pred[2]) / 2, (pred[1] + pred[3]) / 2
        centre = target[0] <= cx <= target[2] and target[1] <= cy <= target[3]
        scored.append((str(record.get("split", "")), iou, centre))

    def summary(rows: list[tuple[str, float, bool]]) -> dict[str, Any]:
        n = len(rows)
        hits = sum(iou >= ACCURACY_IOU_THRESHOLD for _, iou, _ in rows)
        out: dict[str, Any] = {"accuracy": hits / n, "hits": hits}
        for t in thresholds:
            out[f"ACC@{t:g}"] = sum(iou >= t for _, iou, _ in rows) / n
        out["center_accuracy"] = sum(c for _, _, c in rows) / n
        out["mean_iou"] = sum(iou for _, iou, _ in rows) / n
        out["num_samples"] = n
        return out

    result = summary(scored)
    if by_split:
        names = sorted({name for name, _, _ in scored})
        result["splits"] = {name: summary([r for r in scored if r[0] == name]) for name in names}
    return result
