"""Score a pseudo-labelled split with a measurer model (reliability = IoU(prediction, pseudo box)).

    python -m clipvg_hf.curriculum.score --model_name_or_path runs/measurer/best --dataset DATA \
        --dataset_config refcoco-unsup-single --split train_pseudo --output_dir runs/reliability \
        [--source template] [--cpu]
    torchrun --nproc_per_node 2 -m clipvg_hf.curriculum.score ... --cpu   # several processes, each sample once

Writes ``scores.parquet``, ``reliability.json`` (measurer sha256, subsets, 1000-bin histogram) and
``histogram.png`` into ``--output_dir`` (see :mod:`clipvg_hf.curriculum.reliability`). Without ``--dataset_config``
the dataset is read as a Hub REC layout (:mod:`clipvg_hf.data.hub_layouts`), ``--split`` named as it names it.

``--dtype fp32`` (the default) is the exact path; ``bf16`` holds the measurer's weights in bfloat16 (box head fp32)
and ``auto`` picks bf16 where the hardware has bf16 units (:mod:`clipvg_hf.precision`). The scores' measurer record
holds the ``dtype`` and the ``hardware`` they were computed with.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from ..checks import check_model_source, check_output_dir, load_split_checked
from ..commands.arguments import non_negative_int, positive_int
from ..commands.errors import report_usage_errors
from ..data import load_split
from ..data.hub_layouts import open_split
from ..evaluation.results import model_fingerprint
from ..loading import load_model_and_processor
from ..precision import add_dtype_argument, dtype_name, hardware_record, resolve_dtype
from .reliability import ReliabilityScores, save_scores, score_split

__all__ = ["main", "score_model"]


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Reliability of pseudo-labels under a measurer model.")
    parser.add_argument("--model_name_or_path", dest="model", required=True, help="the measurer: a CLIP-VG folder")
    parser.add_argument("--dataset", required=True, help="converted dataset folder or Hub id")
    parser.add_argument(
        "--dataset_config",
        dest="config",
        help="dataset config, e.g. refcoco-unsup-single (leave it out for a Hub REC layout)",
    )
    parser.add_argument("--split", default="train_pseudo", help="the pseudo-labelled split to score")
    parser.add_argument("--source", action="append", dest="sources", help="score only this source (repeatable)")
    parser.add_argument("--output_dir", required=True, help="where scores.parquet / reliability.json go")
    parser.add_argument("--batch_size", type=positive_int, default=128)
    parser.add_argument("--num_workers", type=non_negative_int, default=0)
    parser.add_argument("--image_root", help="root of the images of a path-mode dataset")
    parser.add_argument(
        "--plain_forward",
        action="store_true",
        help="plain model(...) per expression instead of encoding each image once",
    )
    parser.add_argument("--no_plot", action="store_true", help="skip histogram.png")
    parser.add_argument("--cpu", action="store_true", help="force the CPU (also for several processes)")
    add_dtype_argument(parser, default="fp32")
    return parser


@report_usage_errors
def main(argv: list[str] | None = None) -> int:
    """Score and save; bad input is one line ``error: ...`` and exit status 2, before the model is loaded."""
    args = build_parser().parse_args(argv)
    check_model_source(args.model)
    check_output_dir(args.output_dir)
    if args.config is None:  # a Hub layout: unknown layout, missing --image_root, ... fail here
        for line in open_split(args.dataset, None, args.split, image_root=args.image_root).lines:
            print(line, file=sys.stderr)
    else:
        load_split_checked(args.dataset, args.config, args.split, load_split)
    accelerator = Accelerator(cpu=args.cpu)
    scores = score_model(
        args.model,
        args.dataset,
        args.config,
        args.split,
        sources=args.sources,
        accelerator=accelerator,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        image_root=args.image_root,
        grouped=not args.plain_forward,
        dtype=args.dtype,
    )
    if accelerator.is_main_process:
        report: dict[str, Any] = save_scores(scores, args.output_dir, plot=not args.no_plot)
        report_path = Path(args.output_dir) / "reliability.json"
        report["num_processes"] = accelerator.num_processes
        report_path.write_text(json.dumps(report, indent=1) + "\n")
        print(
            json.dumps(
                {"output_dir": args.output_dir, "num_processes": accelerator.num_processes, **report["summary"]}
            )
        )
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())
