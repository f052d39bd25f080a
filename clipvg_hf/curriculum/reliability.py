"""Reliability of pseudo-labels: IoU between a measurer model's prediction and the pseudo box (spec §6.2).

The measurer predicts every expression of a (pseudo-labelled) split with the *eval* transform; the reliability of
a sample is ``grounding_iou(prediction, pseudo box)``, computed exactly as Acc@0.5 is (normalised letterbox frame,
prediction clamped, official int-truncated box). Under several processes the samples are sharded by accelerate
and gathered back with ``gather_for_metrics`` by :mod:`clipvg_hf.evaluation`, which checks that each sample is scored
exactly once.

Outputs (:func:`save_scores`): ``scores.parquet`` (one row per expression: ``row_index``, ``source``,
``reliability``, boxes and the measurer's weights sha256), ``reliability.json`` (measurer fingerprint, the official
threshold subsets, a 1000-bin histogram over (0, 1], per-source summaries) and ``histogram.png``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from accelerate import Accelerator

from ..boxes_clipvg import grounding_iou
from ..data import load_split
from ..data.hub_layouts import open_split
from ..evaluation import check_each_sample_once, eval_loader, gather_predictions, model_fingerprint
from ..loading import load_model_and_processor
from ..precision import dtype_name, hardware_record, resolve_dtype
from ..processing_clipvg import CLIPVGProcessor
from .search import OFFICIAL_GRID

__all__ = [
    "HISTOGRAM_BINS",
    "ReliabilityScores",
    "check_scores",
    "expression_sources",
    "load_scores",
    "reliability_histogram",
    "save_scores",
    "score_model",
    "score_split",
    "threshold_subsets",
]

#: Bins of the reliability histogram over (0, 1] (the paper's Fig. 5).
HISTOGRAM_BINS = 1000


@dataclass
class ReliabilityScores:
    """Per-expression reliabilities of one split under one measurer, sorted by ``row_index``."""

    row_index: np.ndarray  # (N,) int64
    reliability: np.ndarray  # (N,) float32
    source: np.ndarray  # (N,) str, pseudo-label source of each expression
    pred_boxes: np.ndarray  # (N, 4) float32, normalised (cx, cy, w, h) on the canvas
    target_boxes: np.ndarray  # (N, 4) float32
    measurer: dict[str, str] = field(default_factory=dict)  # model_fingerprint() of the measurer
    dataset: dict[str, Any] = field(default_factory=dict)  # name, config, split, sources

    def as_dict(self) -> dict[int, float]:
        """``row_index -> reliability``."""
        return {int(r): float(v) for r, v in zip(self.row_index, self.reliability)}

    def for_source(self, source: str) -> ReliabilityScores:
        """The scores of one pseudo-label source only."""
        keep = self.source == source
        return ReliabilityScores(
            self.row_index[keep],
            self.reliability[keep],
            self.source[keep],
            self.pred_boxes[keep],
            self.target_boxes[keep],
            self.measurer,
            {**self.dataset, "sources": [source]},
        )


def expression_sources(split: datasets.Dataset) -> dict[int, str]:
    """``row_index -> source`` of every expression of a converted split (read from arrow, images untouched)."""
    table = split.with_format("arrow", columns=["expressions"])[:]
    flat = pc.list_flatten(table.column("expressions").combine_chunks())
    rows = flat.field("row_index").to_numpy(zero_copy_only=False)
    sources = flat.field("source").to_pylist()
    return dict(zip(rows.tolist(), sources))


@torch.no_grad()
def score_split(
    model: torch.nn.Module,
    split: datasets.Dataset,
    processor: CLIPVGProcessor,
    accelerator: Accelerator,
    *,
    sources: list[str] | None = None,
    batch_size: int = 128,
    num_workers: int = 0,
    image_root: str | None = None,
    grouped: bool = True,
) -> ReliabilityScores:
    """Score every expression of ``split`` with ``model`` (the measurer); every process gets all the scores.

    Expressions are visited image by image; with ``grouped`` a batch carries each distinct image once plus
    ``image_index`` (from the dataset), so the model encodes it once for all its expressions in the batch.
    """
    loader = eval_loader(
        split,
        processor,
        accelerator,
        sources=sources,
        by_image=True,
        group_images=grouped,
        batch_size=batch_size,
        num_workers=num_workers,
        image_root=image_root,
    )
    if len(loader.dataset) == 0:
        raise ValueError(f"no expressions to score (sources={sources})")
    preds, targets, rows = [], [], []
    for boxes, labels, row_index in gather_predictions(model, loader, accelerator, desc="score"):
        preds.append(boxes.cpu())
        targets.append(labels.cpu())
        rows.append(row_index.cpu())
    pred, target, row = torch.cat(preds), torch.cat(targets), torch.cat(rows)
    check_each_sample_once(row, loader)
    order = row.argsort()
    pred, target, row = pred[order], target[order], row[order]
    reliability = grounding_iou(pred, target)
    source_of = expression_sources(split)
    return ReliabilityScores(
        row_index=row.numpy().astype(np.int64),
        reliability=reliability.numpy().astype(np.float32),
        source=np.array([source_of[int(r)] for r in row.tolist()], dtype=object),
        pred_boxes=pred.numpy(),
        target_boxes=target.numpy(),
    )


def score_model(
    model_dir: str | Path,
    dataset: str | Path,
    config: str | None,
    split: str = "train_pseudo",
    *,
    sources: list[str] | None = None,
    accelerator: Accelerator | None = None,
    batch_size: int = 128,
    num_workers: int = 0,
    image_root: str | None = None,
    grouped: bool = True,
    dtype: str | torch.dtype | None = None,
) -> ReliabilityScores:
    """Load the measurer and score ``dataset/config/split``; the scores carry the measurer's fingerprint, the
    ``dtype`` it ran in (``"auto"``, ``"fp32"``, ``"bf16"`` or a ``torch.dtype``; None: fp32) and the hardware."""
    accelerator = accelerator or Accelerator()
    dtype = resolve_dtype(dtype, accelerator.device, note=accelerator.is_main_process)
    model, processor = load_model_and_processor(model_dir, dtype=dtype)
    model = accelerator.prepare_model(model, evaluation_mode=True)
    if config is None:  # a Hub REC layout, read as the project's rows
        data = open_split(dataset, None, split, image_root=image_root).data
    else:
        data = load_split(dataset, config, split)
    scores = score_split(
        accelerator.unwrap_model(model),
        data,
        processor,
        accelerator,
        sources=sources,
        batch_size=batch_size,
        num_workers=num_workers,
        image_root=image_root,
        grouped=grouped,
    )
    scores.measurer = model_fingerprint(model_dir) if Path(model_dir).is_dir() else {"path": str(model_dir)}
    scores.measurer.update(dtype=dtype_name(dtype), hardware=hardware_record(accelerator.device))
    scores.dataset = {"name": str(dataset), "config": config, "split": split, "sources": sources}
    return scores


def threshold_subsets(scores: ReliabilityScores) -> dict[str, list[int]]:
    """The official subsets: row indices with IoU > t for t = 0.0 … 0.9, and "1.0" = IoU == 1.0.

    Comparisons are in float32, as the official code compares float32 tensors with Python floats.
    """
    rel = scores.reliability.astype(np.float32)
    subsets = {f"{t:.1f}": scores.row_index[rel > np.float32(t)].tolist() for t in OFFICIAL_GRID}
    subsets["1.0"] = scores.row_index[rel == np.float32(1.0)].tolist()
    return subsets


def reliability_histogram(reliability: np.ndarray, bins: int = HISTOGRAM_BINS) -> dict[str, Any]:
    """Counts over ``bins`` right-closed bins of (0, 1]: bin k holds (k/bins, (k+1)/bins]; zeros are counted apart."""
    rel = np.asarray(reliability, dtype=np.float64)
    if rel.size and (np.isnan(rel).any() or rel.min() < 0 or rel.max() > 1):
        raise ValueError("reliabilities must lie in [0, 1]")
    positive = rel[rel > 0]
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, positive, side="left") - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    return {
        "bins": bins,
        "range": [0.0, 1.0],
        "closed": "right",
        "counts": counts.tolist(),
        "num_zero": int((rel == 0).sum()),
        "num_samples": int(rel.size),
    }


def _summary(reliability: np.ndarray) -> dict[str, float | int]:
    """Mean, median and the fraction above 0.5 (what Acc@0.5 on the pseudo-labels would be)."""
    rel = np.asarray(reliability, dtype=np.float64)
    if rel.size == 0:
        return {"num_samples": 0}
    return {
        "num_samples": int(rel.size),
        "mean": float(rel.mean()),
        "median": float(np.median(rel)),
        "fraction_at_0.5": float((rel >= 0.5).mean()),
    }


def check_scores(scores: ReliabilityScores, where: str) -> None:
    """Every reliability a number in [0, 1] and every predicted box finite; ``ValueError`` naming ``where`` and the
    rows otherwise (a NaN would silently fall out of a threshold pool, or rank last in easy_to_hard)."""
    reliability = np.asarray(scores.reliability, dtype=np.float64)
    boxes = np.asarray(scores.pred_boxes, dtype=np.float64).reshape(len(reliability), -1)
    bad = ~np.isfinite(reliability) | ~np.isfinite(boxes).all(axis=1)
    if bad.any():
        rows = np.asarray(scores.row_index)[bad][:5].tolist()
        raise ValueError(
            f"{where}: {int(bad.sum())} rows hold a NaN or infinite reliability or predicted box, e.g. row_index "
            f"{rows} (the measurer's weights are broken); score again with a working measurer"
        )
    outside = (reliability < 0) | (reliability > 1)
    if outside.any():
        rows = np.asarray(scores.row_index)[outside][:5].tolist()
        raise ValueError(f"{where}: {int(outside.sum())} reliabilities lie outside [0, 1], e.g. row_index {rows}")


def save_scores(scores: ReliabilityScores, output_dir: str | Path, plot: bool = True) -> dict[str, Any]:
    """Write ``scores.parquet``, ``reliability.json`` and (when matplotlib is installed) ``histogram.png``.

    Non-finite reliabilities or boxes are refused (see :func:`check_scores`) before anything is written."""
    check_scores(scores, f"{Path(output_dir) / 'scores.parquet'} not written")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    sha = scores.measurer.get("weights_sha256", "")
    table = pa.table(
        {
            "row_index": pa.array(scores.row_index, pa.int64()),
            "source": pa.array(scores.source.tolist(), pa.string()),
            "reliability": pa.array(scores.reliability, pa.float32()),
            "pred_box": pa.array(scores.pred_boxes.tolist(), pa.list_(pa.float32(), 4)),
            "target_box": pa.array(scores.target_boxes.tolist(), pa.list_(pa.float32(), 4)),
            "measurer": pa.array([sha] * len(scores.row_index), pa.string()),
        }
    )
    table = table.replace_schema_metadata(
        {"clipvg_measurer": json.dumps(scores.measurer), "clipvg_dataset": json.dumps(scores.dataset)}
    )
    pq.write_table(table, out / "scores.parquet")
    report = {
        "measurer": scores.measurer,
        "dataset": scores.dataset,
        "summary": _summary(scores.reliability),
        "subsets": threshold_subsets(scores),
        "subset_rule": "IoU > t for t = 0.0 ... 0.9; '1.0' is IoU == 1.0 (official evaluate_for_filtering)",
        "histogram": reliability_histogram(scores.reliability),
        "by_source": {s: _summary(scores.reliability[scores.source == s]) for s in sorted(set(scores.source))},
    }
    if plot:
        from .plots import plot_histogram

        report["histogram_png"] = plot_histogram(scores.reliability, out / "histogram.png", title=_title(scores))
    (out / "reliability.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def _title(scores: ReliabilityScores) -> str:
    """Plot title: measurer hash and the scored data."""
    data = scores.dataset
    what = f"{data.get('config', '?')}/{data.get('split', '?')}"
    if data.get("sources"):
        what += f" [{','.join(data['sources'])}]"
    return f"measurer {scores.measurer.get('weights_sha256', '?')[:10]} on {what}"


def load_scores(path: str | Path) -> ReliabilityScores:
    """Read ``scores.parquet`` (a file or the folder holding it) back; errors name the file."""
    path = Path(path)
    if path.is_dir():
        path = path / "scores.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no reliability scores (run `python -m clipvg_hf.curriculum.score`)")
    table = pq.read_table(path)
    missing = {"row_index", "source", "reliability", "pred_box", "target_box"} - set(table.column_names)
    if missing:
        raise ValueError(f"{path}: not a reliability file, missing columns {sorted(missing)}")
    meta = table.schema.metadata or {}
    scores = ReliabilityScores(
        row_index=table.column("row_index").to_numpy(),
        reliability=table.column("reliability").to_numpy().astype(np.float32),
        source=np.array(table.column("source").to_pylist(), dtype=object),
        pred_boxes=np.array(table.column("pred_box").to_pylist(), dtype=np.float32).reshape(-1, 4),
        target_boxes=np.array(table.column("target_box").to_pylist(), dtype=np.float32).reshape(-1, 4),
        measurer=json.loads(meta.get(b"clipvg_measurer", b"{}")),
        dataset=json.loads(meta.get(b"clipvg_dataset", b"{}")),
    )
    check_scores(scores, str(path))
    return scores
