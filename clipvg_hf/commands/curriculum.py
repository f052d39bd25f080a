"""``clipvg-curriculum {score,ssa,msa,grid} ...``: the self-paced curriculum steps of :mod:`clipvg_hf.curriculum`.

    clipvg-curriculum score --model_name_or_path runs/measurer/best --dataset DATA \
        --dataset_config refcoco-unsup-single --split train_pseudo --output_dir runs/reliability [--source template]
    torchrun --nproc_per_node 2 -m clipvg_hf.curriculum.score ... --cpu   # several processes, each sample once
    clipvg-curriculum ssa --dataset DATA --dataset_config refcoco-unsup-single --output_dir runs/ssa \
        [--search grid|bisect] [--measurer DIR] -- --model_name_or_path openai/clip-vit-base-patch16 --num_epochs 110
    clipvg-curriculum msa --dataset DATA --dataset_config refcoco-unsup-multi --output_dir runs/msa \
        [--order fixed|gain] [--sources template relation caption] [--h0 0.5] -- <clipvg-train args>
    clipvg-curriculum grid --scores template=runs/scores_Mtemplate relation=runs/scores_Mrelation --output grid.png

``score`` writes ``scores.parquet``, ``reliability.json`` and ``histogram.png`` (:mod:`clipvg_hf.curriculum.reliability`;
without ``--dataset_config`` the dataset is read as a Hub REC layout); ``ssa`` and ``msa`` search the reliability
thresholds (:mod:`clipvg_hf.curriculum.single_source`, :mod:`clipvg_hf.curriculum.multi_source`) and write the
selection as a dataset config; ``grid`` draws the SR/CR histogram grid of several score runs. Each step is also
``python -m clipvg_hf.curriculum.<step>``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from accelerate import Accelerator

from ..checks import check_model_source, check_output_dir, check_output_file, load_split_checked
from ..curriculum.common import add_common_arguments, curve_table, prepare_run
from ..curriculum.multi_source import DEFAULT_ORDER, ORDERS, run_msa
from ..curriculum.plots import plot_histogram_grid
from ..curriculum.reliability import load_scores, save_scores, score_model
from ..curriculum.single_source import run_ssa
from ..data import load_split
from ..data.hub_layouts import open_split
from ..errors import UsageError, first_line
from .arguments import add_loop_arguments, finite_float
from .errors import report_usage_errors

__all__ = ["STEPS", "grid_main", "main", "msa_main", "score_main", "ssa_main"]

PROG = "clipvg-curriculum"


def build_score_parser() -> argparse.ArgumentParser:
    """The arguments of ``clipvg-curriculum score``."""
    parser = argparse.ArgumentParser(
        prog=f"{PROG} score", description="Reliability of pseudo-labels under a measurer model."
    )
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
    parser.add_argument(
        "--plain_forward",
        action="store_true",
        help="plain model(...) per expression instead of encoding each image once",
    )
    parser.add_argument("--no_plot", action="store_true", help="skip histogram.png")
    add_loop_arguments(parser)
    return parser


@report_usage_errors
def score_main(argv: list[str] | None = None) -> int:
    """Score and save; bad input is one line ``error: ...`` and exit status 2, before the model is loaded."""
    args = build_score_parser().parse_args(argv)
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


@report_usage_errors
def ssa_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"{PROG} ssa", description="Single-source self-paced adapting (SSA).")
    add_common_arguments(parser)
    parser.add_argument("--source", help="only this pseudo-label source of the split (default: all rows)")
    parser.add_argument("--measurer", help="an already trained measurer folder (skips T0)")
    parser.add_argument("--output_config", help="name of the selected config (default: <config>-ssa)")
    args, trainer, scorer, by_source, writer = prepare_run(parser, argv, "ssa")
    if args.source and args.source not in by_source:
        parser.error(f"source {args.source!r} not in {args.dataset}/{args.config}/{args.split}: {sorted(by_source)}")
    rows = by_source[args.source] if args.source else sorted(r for rs in by_source.values() for r in rs)
    report = run_ssa(
        rows,
        trainer,
        scorer,
        args.output_dir,
        thresholds=args.thresholds,
        strategy=args.search,
        measurer_dir=args.measurer,
        write_selection=writer,
    )
    print(curve_table(report["curve"], report["best"]["h"]))
    print(json.dumps({"best": report["best"], "trainings": report["trainings"], "search": args.search}))
    return 0


@report_usage_errors
def msa_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"{PROG} msa", description="Multi-source self-paced adapting (MSA).")
    add_common_arguments(parser)
    parser.add_argument(
        "--sources", nargs="+", help=f"sources in order (default: {' '.join(DEFAULT_ORDER)}, those present)"
    )
    parser.add_argument("--order", choices=ORDERS, default="fixed", help="fixed source order or greedy by gain")
    parser.add_argument("--h0", type=finite_float, default=0.5, help="threshold at which measurers are compared")
    parser.add_argument("--output_config", help="name of the selected config (default: <config>-msa)")
    args, trainer, scorer, by_source, writer = prepare_run(parser, argv, "msa")
    wanted = args.sources or [s for s in DEFAULT_ORDER if s in by_source]
    unknown = [s for s in wanted if s not in by_source]
    if unknown or not wanted:
        parser.error(
            f"sources {unknown or wanted} not in {args.dataset}/{args.config}/{args.split}: "
            f"{sorted(by_source)} (a merged file converted without train_separate/ has only 'pseudo')"
        )
    report = run_msa(
        {s: by_source[s] for s in wanted},
        trainer,
        scorer,
        args.output_dir,
        order=args.order,
        h0=args.h0,
        thresholds=args.thresholds,
        strategy=args.search,
        write_selection=writer,
    )
    print("\n".join(report["decisions"]))
    print(json.dumps({"selected": report["selected"], "best": report["best"], "trainings": report["trainings"]}))
    return 0


@report_usage_errors
def grid_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"{PROG} grid", description="n x n SR/CR reliability histogram grid.")
    parser.add_argument("--scores", nargs="+", required=True, help="NAME=FOLDER of each measurer's score run")
    parser.add_argument("--sources", nargs="+", help="source columns (default: all, sorted)")
    parser.add_argument("--output", required=True, help="PNG to write")
    parser.add_argument("--json", help="also write the per-cell summaries here")
    args = parser.parse_args(argv)
    check_output_file(args.output, "--output")
    if args.json:
        check_output_file(args.json, "--json")
    specs = []
    for spec in args.scores:
        if "=" not in spec:
            parser.error(f"--scores entries are NAME=FOLDER, got {spec!r}")
        name, folder = spec.split("=", 1)
        if not (Path(folder).is_file() or (Path(folder) / "scores.parquet").is_file()):
            parser.error(f"--scores {spec}: {folder} holds no scores.parquet (run clipvg_hf.curriculum.score)")
        specs.append((name, folder))
    cells, names, all_sources = {}, [], set()
    for name, folder in specs:
        try:
            scores = load_scores(folder)
        except (OSError, ValueError) as error:  # not a scores file, non-finite reliabilities
            raise UsageError(f"--scores {name}={folder}: {first_line(error)}") from error
        names.append(name)
        for source in set(scores.source):
            cells[(name, source)] = scores.reliability[scores.source == source].astype(np.float64)
            all_sources.add(source)
    sources = args.sources or sorted(all_sources)
    png = plot_histogram_grid(cells, names, sources, args.output)
    summary = {
        f"{m}/{s}": {"num_samples": int(v.size), "mean": float(v.mean()) if v.size else None}
        for (m, s), v in cells.items()
    }
    if args.json:
        Path(args.json).write_text(json.dumps({"png": png, "cells": summary}, indent=1) + "\n")
    print(json.dumps({"png": png, "cells": summary}))
    return 0


STEPS = {
    "score": (score_main, "reliability of every training row under a measurer model (scores.parquet)"),
    "ssa": (ssa_main, "single-source self-paced adapting: search the reliability threshold"),
    "msa": (msa_main, "multi-source self-paced adapting: per-source thresholds, sources in order"),
    "grid": (grid_main, "n x n SR/CR reliability histogram grid of several score runs"),
}


@report_usage_errors
def main(argv: list[str] | None = None) -> int:
    """Run one step with its own arguments."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="CLIP-VG self-paced curriculum steps.",
        epilog="; ".join(f"{name}: {text}" for name, (_, text) in STEPS.items()),
    )
    parser.add_argument("command", choices=sorted(STEPS), help="which step (see its --help)")
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help="the step's own arguments")
    args = parser.parse_args(argv)
    step, _ = STEPS[args.command]
    return step(args.arguments)
