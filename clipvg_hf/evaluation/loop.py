"""The evaluation loop: a prepared loader over one split, the model's boxes gathered from every process, and the
metrics holding each sample exactly once.

IoU is computed as the official evaluation does: on the normalised letterbox canvas, prediction clamped to it,
against the official (int-truncated) box. Under several processes accelerate shards the samples and
``gather_for_metrics`` drops the padding duplicates; :func:`check_each_sample_once` proves it.

``evaluate_model`` writes, with ``predictions``, one JSON line per expression: its ids (``split``, ``row_index``,
``source_row``, ``image_id``, ``ann_id``, ``ref_id``, ``sent_id``, ``file_name``, ``ref_file_name``), the
``expression``, the image ``width`` / ``height``, the predicted box ``pred_box`` (x1, y1, x2, y2 image pixels, as
scored: clamped to the letterbox canvas, so it may reach into the padding around the image) and ``pred_box_norm``
(divided by width and height, lmms-eval's convention), the scored target ``target_box`` / ``target_box_norm`` (the
official int box), the exact ``bbox`` and the ``iou``. :func:`clipvg_hf.evaluation.score_predictions` scores such a
file.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from ..boxes_clipvg import letterbox_geometry
from ..data import CLIPVGCollator, CLIPVGEvalTransform, GroundingDataset
from ..data.hub_layouts import LayoutSplit, open_split
from ..errors import UsageError
from ..loading import load_model_and_processor
from ..modeling_clipvg import CLIPVGPreTrainedModel
from ..precision import dtype_name, hardware_record, resolve_dtype
from ..processing_clipvg import CLIPVGProcessor
from .metrics import GroundingMetrics
from .results import EvaluationResults, model_fingerprint

__all__ = [
    "check_each_sample_once",
    "check_finite_boxes",
    "eval_loader",
    "evaluate",
    "evaluate_model",
    "gather_predictions",
    "open_splits",
    "prediction_records",
]


def eval_loader(
    split: datasets.Dataset,
    processor: CLIPVGProcessor,
    accelerator: Accelerator,
    *,
    sources: list[str] | None = None,
    by_image: bool = False,
    group_images: bool = True,
    batch_size: int = 128,
    num_workers: int = 0,
    image_root: str | None = None,
) -> DataLoader:
    """A prepared, sequential loader over one split with the official eval transform.

    ``sources``: only the expressions of these pseudo-label sources. ``by_image``: visit the expressions image by
    image (a stable sort on the dataset's image), so that a batch holds as few distinct images as possible. With
    ``group_images`` each batch carries its distinct images once with ``image_index`` (the dataset knows which
    expressions share an image); without, one image row per expression. Prepare it once and reuse it (accelerate
    keeps every prepared loader, and checkpoints their state).
    """
    view = GroundingDataset(
        split, CLIPVGEvalTransform(processor.image_processor), sources=sources, image_root=image_root
    )
    dataset = Subset(view, np.argsort(view.image_index, kind="stable").tolist()) if by_image else view
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=CLIPVGCollator(processor.tokenizer, return_row_index=True, group_images=group_images),
    )
    return accelerator.prepare_data_loader(loader)


@torch.no_grad()
def gather_predictions(
    model: CLIPVGPreTrainedModel, loader: DataLoader, accelerator: Accelerator, desc: str = "eval"
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(boxes, labels, row_index)`` of each batch of a prepared loader, gathered from every process.

    A batch of :func:`eval_loader` holds each distinct image once plus ``image_index``, so ``model(**batch)``
    encodes an image once for all its expressions (the boxes equal one image row per expression).

    A non-finite predicted box (NaN / infinite) is a :class:`~clipvg_hf.errors.UsageError` naming the rows, raised
    on every process alike: it is never scored as IoU 0 (or a NaN reliability).
    """
    model.eval()
    for batch in tqdm(loader, desc=desc, disable=not accelerator.is_local_main_process, leave=False):
        row_index = batch.pop("row_index")
        labels = batch.pop("labels")
        boxes = model(**batch).pred_boxes[:, 0]
        boxes, labels, row_index = accelerator.gather_for_metrics((boxes.float(), labels, row_index))
        check_finite_boxes(boxes, row_index, desc)
        yield boxes, labels, row_index


def check_finite_boxes(boxes: torch.Tensor, row_index: torch.Tensor, desc: str = "eval") -> None:
    """Raise :class:`~clipvg_hf.errors.UsageError` if a predicted box holds NaN or an infinite value."""
    bad = ~torch.isfinite(boxes).all(dim=-1)
    if bool(bad.any()):
        rows = row_index[bad.to(row_index.device)].tolist()
        raise UsageError(
            f"the model predicted a non-finite box (NaN or infinite) for {len(rows)} samples of {desc!r}, e.g. "
            f"row_index {rows[:5]}: its weights are broken; reconvert or retrain it"
        )


def check_each_sample_once(row_index: torch.Tensor | None, loader: DataLoader) -> None:
    """Every sample of ``loader``'s dataset counted exactly once: no row twice (padding duplicates of the last
    batch under several processes must have been dropped) and as many rows as the dataset holds."""
    if row_index is None:
        return
    if row_index.unique().numel() != row_index.numel():
        raise RuntimeError("a sample was evaluated twice (duplicate row indices)")
    if row_index.numel() != len(loader.dataset):
        raise RuntimeError(f"evaluated {row_index.numel()} samples of {len(loader.dataset)}")


def evaluate(
    model: CLIPVGPreTrainedModel,
    loader: DataLoader,
    accelerator: Accelerator,
    *,
    desc: str = "eval",
    predictions: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None,
) -> GroundingMetrics:
    """Run ``model`` over a loader from :func:`eval_loader`; returns the metrics, every sample counted exactly once
    (checked). ``predictions``: a list that receives each batch's ``(boxes, ious, row_index)`` on the CPU."""
    metrics = GroundingMetrics()
    for boxes, labels, row_index in gather_predictions(model, loader, accelerator, desc=desc):
        ious = metrics.update(boxes, labels, row_index)
        if predictions is not None:
            predictions.append((boxes.detach().cpu(), ious.detach().cpu(), row_index.detach().cpu()))
    check_each_sample_once(metrics.per_sample()[1], loader)
    return metrics


def prediction_records(
    split: datasets.Dataset,
    split_name: str,
    boxes: torch.Tensor,
    ious: torch.Tensor,
    row_index: torch.Tensor,
    size: int,
) -> list[dict[str, Any]]:
    """One record per expression (see the module docstring) from canvas ``(cx, cy, w, h)`` predictions."""
    meta: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
    for row in split.select_columns(["file_name", "width", "height", "expressions"]):
        for expression in row["expressions"]:
            meta[int(expression["row_index"])] = (row, expression)
    records = []
    for box, iou, index in zip(boxes.double().tolist(), ious.tolist(), row_index.tolist(), strict=True):
        row, expression = meta[int(index)]
        width, height = int(row["width"]), int(row["height"])
        geometry = letterbox_geometry(height, width, size)
        cx, cy, w, h = box
        corners = [min(max(v, 0.0), 1.0) * size for v in (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)]
        offsets = (geometry.left, geometry.top) * 2
        pred = [(v - o) / geometry.scale for v, o in zip(corners, offsets, strict=True)]
        target = [float(v) for v in expression["bbox_official"]]
        scale = (width, height) * 2
        records.append(
            {
                "split": split_name,
                "row_index": int(index),
                "source_row": expression.get("source_row"),
                **{key: expression.get(key) for key in ("image_id", "ann_id", "ref_id", "sent_id")},
                "file_name": row["file_name"],
                "ref_file_name": expression.get("ref_file_name"),
                "expression": expression["expression"],
                "width": width,
                "height": height,
                "pred_box": pred,
                "pred_box_norm": [v / s for v, s in zip(pred, scale, strict=True)],
                "target_box": target,
                "target_box_norm": [v / s for v, s in zip(target, scale, strict=True)],
                "bbox": list(expression["bbox"]),
                "iou": float(iou),
            }
        )
    return records


def _is_main_rank() -> bool:
    """Rank 0 (or no distributed launch), read from the launcher's environment: no process group needed."""
    return os.environ.get("RANK", "0") == "0"


def open_splits(
    dataset: str, config: str | None, splits: list[str], image_root: str | None = None, num_rows: int | None = None
) -> dict[str, LayoutSplit]:
    """Every split opened and checked (:func:`clipvg_hf.data.hub_layouts.open_split`), its report and partition
    warning printed on stderr by rank 0; a :class:`~clipvg_hf.errors.UsageError` for the first bad one."""
    opened = {}
    for name in splits:
        opened[name] = open_split(dataset, config, name, image_root=image_root, num_rows=num_rows)
        if _is_main_rank():
            for line in opened[name].lines:
                print(line, file=sys.stderr)
    return opened


def evaluate_model(
    model_dir: str | Path,
    dataset: str,
    config: str | None,
    splits: list[str],
    *,
    batch_size: int = 128,
    num_workers: int = 0,
    image_root: str | None = None,
    accelerator: Accelerator | None = None,
    predictions: str | Path | None = None,
    opened: Mapping[str, LayoutSplit] | None = None,
    num_rows: int | None = None,
    dtype: str | torch.dtype | None = None,
) -> dict[str, Any]:
    """Evaluate a saved model on several splits; returns the results dict (:mod:`clipvg_hf.evaluation.results`).

    ``config`` None reads a Hub-layout dataset (see :mod:`clipvg_hf.data.hub_layouts`); such a split's results
    also hold its layout, row counts, rejected count and partition ``note``. ``predictions``: write the
    per-expression JSON lines there. ``opened``: splits already opened by :func:`open_splits`; ``num_rows``: the
    source row count the partition check uses (a stand-in for a large split, see ``open_split``). ``dtype``: the
    model's number format, ``"auto"``, ``"fp32"``, ``"bf16"`` or a ``torch.dtype`` (None: fp32), see
    :mod:`clipvg_hf.precision`; the results record it.
    """
    accelerator = accelerator or Accelerator()
    dtype = resolve_dtype(dtype, accelerator.device, note=accelerator.is_main_process)
    model, processor = load_model_and_processor(model_dir, dtype=dtype)
    model = accelerator.prepare_model(model, evaluation_mode=True)
    opened = dict(opened or {})
    for name in splits:
        if name not in opened:
            opened.update(open_splits(dataset, config, [name], image_root, num_rows))
    layouts = sorted({one.layout.name for one in opened.values() if one.layout is not None})
    results = EvaluationResults(
        model=model_fingerprint(model_dir) if Path(model_dir).is_dir() else {"path": str(model_dir)},
        dataset={"name": str(dataset), "config": config or "default", **({"layout": layouts[0]} if layouts else {})},
        dtype=dtype_name(dtype),
        hardware=hardware_record(accelerator.device),
    )
    if accelerator.mixed_precision != "no":  # autocast on top of the weights' dtype
        results.hardware["mixed_precision"] = accelerator.mixed_precision
    records: list[dict[str, Any]] = []
    size = int(processor.image_processor.size.longest_edge)
    for name in splits:
        split = opened[name]
        loader = eval_loader(
            split.data,
            processor,
            accelerator,
            batch_size=batch_size,
            num_workers=num_workers,
            image_root=None if split.layout is not None else image_root,
        )
        kept: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = [] if predictions is not None else None
        metrics = evaluate(accelerator.unwrap_model(model), loader, accelerator, desc=name, predictions=kept)
        results.splits[name] = metrics.compute()
        if split.report is not None:
            results.splits[name].update(split.report.to_dict())
        if kept:
            records += prediction_records(
                split.data, name, *(torch.cat(part) for part in zip(*kept, strict=True)), size=size
            )
    if predictions is not None and accelerator.is_main_process:
        records.sort(key=lambda r: (splits.index(r["split"]), r["row_index"]))
        Path(predictions).write_text("".join(json.dumps(r, allow_nan=False) + "\n" for r in records))
    return results.to_dict()
