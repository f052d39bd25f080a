"""Grounding metrics: Acc@0.5 and mean IoU, computed as the official CLIP-VG evaluation does."""

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..modeling_clipvg import grounding_iou

__all__ = ["ACCURACY_IOU_THRESHOLD", "GROUNDING_ACCURACY_PATH", "GroundingMetrics", "summarize_ious"]

#: Folder of the ``evaluate`` metric: ``evaluate.load(str(GROUNDING_ACCURACY_PATH))`` (needs no clipvg_hf).
GROUNDING_ACCURACY_PATH = Path(__file__).resolve().parent / "grounding_accuracy"

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
