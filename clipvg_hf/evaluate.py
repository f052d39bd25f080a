"""Evaluate a CLIP-VG model on converted dataset splits: Acc@0.5 and mean IoU, each sample counted exactly once.

    python -m clipvg_hf.evaluate --model_name_or_path DIR --dataset DATA --dataset_config refcoco-unsup-single \
        --split val --split testA --output results.json
    accelerate launch -m clipvg_hf.evaluate ...          # several processes; samples are gathered, not duplicated

IoU is computed as the official evaluation does: on the normalised letterbox canvas, prediction clamped to it,
against the official (int-truncated) box. The results JSON (:mod:`clipvg_hf.results`) is what ``clipvg-push``
turns into a model card.

The dataset may also be a REC dataset in one of the Hub layouts of :mod:`clipvg_hf.data.hub_layouts` (a Hub id or a
local folder of that layout), its split named as the dataset names it, without ``--dataset_config``::

    python -m clipvg_hf.evaluate --model_name_or_path DIR --dataset jxu124/refcoco-benchmark \
        --split refcoco_unc_val --output results.json --predictions predictions.jsonl

``--predictions`` writes one JSON line per expression: its ids (``split``, ``row_index``, ``source_row``,
``image_id``, ``ann_id``, ``ref_id``, ``sent_id``, ``file_name``, ``ref_file_name``), the ``expression``, the image
``width`` / ``height``, the predicted box ``pred_box`` (x1, y1, x2, y2 image pixels, as scored: clamped to the
letterbox canvas, so it may reach into the padding around the image) and ``pred_box_norm`` (divided by width and
height, lmms-eval's convention), the scored target ``target_box`` / ``target_box_norm`` (the official int box), the
exact ``bbox`` and the ``iou``. :func:`clipvg_hf.metrics.score_predictions` scores such a file.

``--dtype fp32`` (the default) is the exact path; ``bf16`` holds the weights in bfloat16 (box head fp32) and ``auto``
picks bf16 where the hardware has bf16 units (:mod:`clipvg_hf.precision`). The results file records the ``dtype`` and
the ``hardware`` (device; CPU model, ISA and bf16 units) the numbers were computed with.
"""

import argparse
import json
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import datasets
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .cli import (
    UsageError,
    check_model_source,
    check_output_file,
    non_negative_int,
    positive_int,
    report_usage_errors,
)
from .data import CLIPVGCollator, CLIPVGEvalTransform, GroundingDataset
from .data.hub_layouts import LayoutSplit, open_split
from .image_processing_clipvg import letterbox_geometry
from .loading import load_model_and_processor
from .metrics import GroundingMetrics
from .modeling_clipvg import CLIPVGForGrounding
from .precision import add_dtype_argument, dtype_name, hardware_record, resolve_dtype
from .processing_clipvg import CLIPVGProcessor
from .results import EvaluationResults, model_fingerprint, write_results

__all__ = [
    "check_finite_boxes",
    "eval_loader",
    "evaluate_loader",
    "evaluate_model",
    "evaluate_split",
    "gather_predictions",
    "predict_split",
    "prediction_records",
]


@torch.no_grad()
def gather_predictions(
    model: CLIPVGForGrounding, loader: DataLoader, accelerator: Accelerator, desc: str = "eval"
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(boxes, labels, row_index)`` of each batch of a prepared loader, gathered from every process.

    A batch of :func:`eval_loader` holds each distinct image once plus ``image_index``, so ``model(**batch)``
    encodes an image once for all its expressions (the boxes equal one image row per expression).

    A non-finite predicted box (NaN / infinite) is a :class:`~clipvg_hf.cli.UsageError` naming the rows, raised on
    every process alike: it is never scored as IoU 0 (or a NaN reliability).
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
    """Raise :class:`~clipvg_hf.cli.UsageError` if a predicted box holds NaN or an infinite value."""
    bad = ~torch.isfinite(boxes).all(dim=-1)
    if bool(bad.any()):
        rows = row_index[bad.to(row_index.device)].tolist()
        raise UsageError(
            f"the model predicted a non-finite box (NaN or infinite) for {len(rows)} samples of {desc!r}, e.g. "
            f"row_index {rows[:5]}: its weights are broken; reconvert or retrain it"
        )


def predict_split(
    model: CLIPVGForGrounding, loader: DataLoader, accelerator: Accelerator, desc: str = "eval"
) -> GroundingMetrics:
    """Run the model over a prepared loader and gather per-sample IoUs from every process, duplicates removed."""
    metrics = GroundingMetrics()
    for boxes, labels, row_index in gather_predictions(model, loader, accelerator, desc=desc):
        metrics.update(boxes, labels, row_index)
    return metrics


def eval_loader(
    split: datasets.Dataset,
    processor: CLIPVGProcessor,
    accelerator: Accelerator,
    *,
    batch_size: int = 128,
    num_workers: int = 0,
    image_root: str | None = None,
) -> DataLoader:
    """A prepared, sequential loader over one split with the official eval transform; each batch carries its
    distinct images once with ``image_index`` (the dataset knows which expressions share an image).

    Prepare it once and reuse it (accelerate keeps every prepared loader, and checkpoints their state).
    """
    view = GroundingDataset(split, CLIPVGEvalTransform(processor.image_processor), image_root=image_root)
    loader = DataLoader(
        view,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=CLIPVGCollator(processor.tokenizer, return_row_index=True, group_images=True),
    )
    return accelerator.prepare_data_loader(loader)


def evaluate_loader(
    model: CLIPVGForGrounding, loader: DataLoader, accelerator: Accelerator, desc: str = "eval"
) -> GroundingMetrics:
    """Evaluate a loader from :func:`eval_loader`; checks that every sample was counted exactly once."""
    metrics = predict_split(model, loader, accelerator, desc=desc)
    rows = metrics.per_sample()[1]
    if rows is not None and rows.numel() != len(loader.dataset):
        raise RuntimeError(f"evaluated {rows.numel()} samples of {len(loader.dataset)}")
    return metrics


def evaluate_split(
    model: CLIPVGForGrounding,
    split: datasets.Dataset,
    processor: CLIPVGProcessor,
    accelerator: Accelerator,
    *,
    batch_size: int = 128,
    num_workers: int = 0,
    image_root: str | None = None,
    desc: str = "eval",
) -> GroundingMetrics:
    """Evaluate one split with the official eval transform; returns the metrics holding every sample once."""
    loader = eval_loader(
        split, processor, accelerator, batch_size=batch_size, num_workers=num_workers, image_root=image_root
    )
    return evaluate_loader(model, loader, accelerator, desc=desc)


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
    warning printed on stderr by rank 0; a :class:`UsageError` for the first bad one."""
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
    """Evaluate a saved model on several splits; returns the results dict (see the module docstring).

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
        metrics = GroundingMetrics()
        kept = []
        for boxes, labels, rows in gather_predictions(accelerator.unwrap_model(model), loader, accelerator, desc=name):
            ious = metrics.update(boxes, labels, rows)
            if predictions is not None:
                kept.append((boxes.detach().cpu(), ious.detach().cpu(), rows.detach().cpu()))
        counted = metrics.per_sample()[1]
        if counted is not None and counted.numel() != len(loader.dataset):
            raise RuntimeError(f"evaluated {counted.numel()} samples of {len(loader.dataset)}")
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


@report_usage_errors
def main(argv: list[str] | None = None) -> int:
    """Evaluate and print the results; bad input is one line ``error: ...`` and exit status 2, before any work."""
    parser = argparse.ArgumentParser(description="Evaluate a CLIP-VG model (Acc@0.5, mean IoU).")
    parser.add_argument("--model_name_or_path", dest="model", required=True, help="CLIP-VG folder or Hub id")
    parser.add_argument(
        "--dataset", required=True, help="converted dataset folder, or a Hub id / local folder of a Hub REC layout"
    )
    parser.add_argument(
        "--dataset_config",
        dest="config",
        help="config of a converted folder, e.g. refcoco-unsup-single (not needed for a Hub layout)",
    )
    parser.add_argument(
        "--split", action="append", required=True, help="split to evaluate, as the dataset names it (repeatable)"
    )
    parser.add_argument("--output", help="results JSON to write")
    parser.add_argument("--predictions", help="write one JSON line per expression (ids, boxes, IoU) here")
    parser.add_argument("--batch_size", type=positive_int, default=128)
    parser.add_argument("--num_workers", type=non_negative_int, default=0)
    parser.add_argument("--image_root", help="root of the images of a path-mode dataset")
    parser.add_argument("--cpu", action="store_true", help="force the CPU (also for several processes)")
    add_dtype_argument(parser, default="fp32")
    args = parser.parse_args(argv)
    check_model_source(args.model)
    if args.output:
        check_output_file(args.output, "--output")
    if args.predictions:
        check_output_file(args.predictions, "--predictions")
    if args.image_root is not None and not Path(args.image_root).is_dir():
        parser.error(f"--image_root {args.image_root}: folder not found")
    # a missing folder, unknown config, split or layout, or a missing --image_root fails before the model is loaded
    opened = open_splits(args.dataset, args.config, args.split, args.image_root)
    accelerator = Accelerator(cpu=args.cpu)
    results = evaluate_model(
        args.model,
        args.dataset,
        args.config,
        args.split,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        image_root=args.image_root,
        accelerator=accelerator,
        predictions=args.predictions,
        opened=opened,
        dtype=args.dtype,
    )
    results["num_processes"] = accelerator.num_processes
    if accelerator.is_main_process:
        print(json.dumps(results, indent=2))
        if args.output:
            write_results(results, args.output)
    accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())
