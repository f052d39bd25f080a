"""``clipvg-evaluate``: Acc@0.5 and mean IoU of a CLIP-VG or HiVG model on dataset splits, each sample counted once.

    clipvg-evaluate --model_name_or_path DIR --dataset DATA --dataset_config refcoco-unsup-single \
        --split val --split testA --output results.json
    accelerate launch -m clipvg_hf.evaluate ...          # several processes; samples are gathered, not duplicated

The dataset may also be a REC dataset in one of the Hub layouts of :mod:`clipvg_hf.data.hub_layouts` (a Hub id or a
local folder of that layout), its split named as the dataset names it, without ``--dataset_config``::

    clipvg-evaluate --model_name_or_path DIR --dataset jxu124/refcoco-benchmark \
        --split refcoco_unc_val --output results.json --predictions predictions.jsonl

``--predictions`` writes one JSON line per expression (ids, boxes, IoU; see :mod:`clipvg_hf.evaluation.loop`). The
results JSON (:mod:`clipvg_hf.evaluation.results`) is what ``clipvg-push`` turns into a model card. ``--dtype fp32``
(the default) is the exact path; ``bf16`` holds the weights in bfloat16 (box head fp32) and ``auto`` picks bf16
where the hardware has bf16 units (:mod:`clipvg_hf.precision`). The results file records the ``dtype`` and the
``hardware`` the numbers were computed with.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from accelerate import Accelerator

from ..checks import check_model_source, check_output_file
from ..errors import UsageError
from ..evaluation import evaluate_model, open_splits, write_results
from .arguments import add_loop_arguments
from .errors import report_usage_errors

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The arguments of ``clipvg-evaluate``."""
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
    add_loop_arguments(parser)
    return parser


@report_usage_errors
def main(argv: list[str] | None = None) -> int:
    """Evaluate and print the results; bad input is one line ``error: ...`` and exit status 2, before any work."""
    args = build_parser().parse_args(argv)
    check_model_source(args.model)
    if args.output:
        check_output_file(args.output, "--output")
    if args.predictions:
        check_output_file(args.predictions, "--predictions")
    if args.image_root is not None and not Path(args.image_root).is_dir():
        raise UsageError(f"--image_root {args.image_root}: folder not found")
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
