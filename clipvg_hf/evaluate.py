"""Evaluate a CLIP-VG model on converted dataset splits: Acc@0.5 and mean IoU, each sample counted exactly once.

    python -m clipvg_hf.evaluate --model_name_or_path DIR --dataset DATA --dataset_config refcoco-unsup-single \
        --split val --split testA --output results.json
    accelerate launch -m clipvg_hf.evaluate ...          # several processes; samples are gathered, not duplicated

IoU is computed as the official evaluation does: on the normalised letterbox canvas, prediction clamped to it,
against the official (int-truncated) box. The results JSON (:mod:`clipvg_hf.results`) is what ``clipvg-push``
turns into a model card.
"""

import argparse
import json
import sys
from collections.abc import Iterator
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
    load_split_checked,
    non_negative_int,
    positive_int,
    report_usage_errors,
)
from .data import CLIPVGCollator, CLIPVGEvalTransform, GroundingDataset, load_split
from .loading import load_model_and_processor
from .metrics import GroundingMetrics
from .modeling_clipvg import CLIPVGForGrounding
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


def evaluate_model(
    model_dir: str | Path,
    dataset: str,
    config: str,
    splits: list[str],
    *,
    batch_size: int = 128,
    num_workers: int = 0,
    image_root: str | None = None,
    accelerator: Accelerator | None = None,
) -> dict[str, Any]:
    """Evaluate a saved model on several splits; returns the results dict (see the module docstring)."""
    accelerator = accelerator or Accelerator()
    model, processor = load_model_and_processor(model_dir)
    model = accelerator.prepare_model(model, evaluation_mode=True)
    results = EvaluationResults(
        model=model_fingerprint(model_dir) if Path(model_dir).is_dir() else {"path": str(model_dir)},
        dataset={"name": str(dataset), "config": config},
    )
    for name in splits:
        split = load_split(dataset, config, name)
        metrics = evaluate_split(
            accelerator.unwrap_model(model),
            split,
            processor,
            accelerator,
            batch_size=batch_size,
            num_workers=num_workers,
            image_root=image_root,
            desc=name,
        )
        results.splits[name] = metrics.compute()
    return results.to_dict()


@report_usage_errors
def main(argv: list[str] | None = None) -> int:
    """Evaluate and print the results; bad input is one line ``error: ...`` and exit status 2, before any work."""
    parser = argparse.ArgumentParser(description="Evaluate a CLIP-VG model (Acc@0.5, mean IoU).")
    parser.add_argument("--model_name_or_path", dest="model", required=True, help="CLIP-VG folder or Hub id")
    parser.add_argument("--dataset", required=True, help="converted dataset folder or Hub id")
    parser.add_argument(
        "--dataset_config", dest="config", required=True, help="dataset config, e.g. refcoco-unsup-single"
    )
    parser.add_argument("--split", action="append", required=True, help="split to evaluate (repeatable)")
    parser.add_argument("--output", help="results JSON to write")
    parser.add_argument("--batch_size", type=positive_int, default=128)
    parser.add_argument("--num_workers", type=non_negative_int, default=0)
    parser.add_argument("--image_root", help="root of the images of a path-mode dataset")
    parser.add_argument("--cpu", action="store_true", help="force the CPU (also for several processes)")
    args = parser.parse_args(argv)
    check_model_source(args.model)
    if args.output:
        check_output_file(args.output, "--output")
    if args.image_root is not None and not Path(args.image_root).is_dir():
        parser.error(f"--image_root {args.image_root}: folder not found")
    for split in args.split:  # a missing folder, unknown config or split fails before the model is loaded
        load_split_checked(args.dataset, args.config, split, load_split)
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
