"""What SSA and MSA share: the selection rule, logged curve points and tables, the selected config writer, the
rows of each pseudo-label source, and the command line (arguments, checks, training / scoring back-ends)."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..checks import check_dataset_name, check_model_source, check_output_dir, load_split_checked
from ..commands.arguments import finite_float, positive_int
from ..data import load_split
from ..errors import UsageError
from .reliability import expression_sources
from .runner import CachedTrainer, ScoreCommand, ScoreFn, TrainResult, TrainScriptTrainer, min_global_batch
from .search import OFFICIAL_GRID, STRATEGIES
from .selection import selected_config_name, write_selection_config

__all__ = [
    "SELECTION_RULE",
    "SelectionWriter",
    "add_common_arguments",
    "build_backends",
    "curve_table",
    "parse_curriculum_args",
    "prepare_run",
    "select_rows",
    "selection_writer",
    "source_rows",
    "training_point",
]

SELECTION_RULE = "reliability >= h"
SelectionWriter = Callable[[dict[int, tuple[float, str]]], dict[str, Any]]


def select_rows(reliability: dict[int, float], h: float) -> list[int]:
    """Rows whose reliability is at least ``h`` (sorted)."""
    return sorted(r for r, v in reliability.items() if v >= h)


def training_point(h: float, rows: list[int], result: TrainResult | None, status: str) -> dict[str, Any]:
    """One logged point of a P-R curve."""
    return {
        "h": h,
        "num_samples": len(rows),
        "status": status,
        "val_accuracy": None if result is None else result.val_accuracy,
        "val_miou": None if result is None else result.val_miou,
        "model_dir": None if result is None else result.model_dir,
        "command": None if result is None else result.command,
    }


def curve_table(points: Sequence[dict[str, Any]], best_h: float | None) -> str:
    """Markdown table of a P-R curve (h ascending), the best row marked."""
    lines = ["| h | samples | val Acc@0.5 | val mIoU | status |", "|---:|---:|---:|---:|---|"]
    for p in sorted(points, key=lambda p: p["h"]):
        acc = "—" if p["val_accuracy"] is None else f"{p['val_accuracy']:.4f}"
        miou = "—" if p["val_miou"] is None else f"{p['val_miou']:.4f}"
        mark = " **best**" if p["h"] == best_h else ""
        lines.append(f"| {p['h']:.2f} | {p['num_samples']} | {acc} | {miou} | {p['status']}{mark} |")
    return "\n".join(lines) + "\n"


def selection_writer(dataset: str, config: str, split: str, output_dir: Path, name: str) -> SelectionWriter:
    """Writes the selected rows as config ``name`` under ``output_dir`` and describes it."""

    def write(selection: dict[int, tuple[float, str]]) -> dict[str, Any]:
        folder = write_selection_config(dataset, config, split, selection, output_dir, name)
        return {
            "dataset": str(output_dir),
            "config": name,
            "split": split,
            "num_samples": len(selection),
            "folder": str(folder),
        }

    return write


def source_rows(dataset: str, config: str, split: str) -> dict[str, list[int]]:
    """Row indices of each pseudo-label source of a split, in row order."""
    by_source: dict[str, list[int]] = {}
    for row, source in sorted(expression_sources(load_split_checked(dataset, config, split, load_split)).items()):
        by_source.setdefault(source, []).append(row)
    return by_source


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by the SSA and MSA command lines."""
    parser.add_argument("--dataset", required=True, help="converted dataset folder")
    parser.add_argument(
        "--dataset_config", dest="config", required=True, help="config holding the pseudo-labelled split and val"
    )
    parser.add_argument("--split", default="train_pseudo", help="pseudo-labelled training split")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--search", choices=STRATEGIES, default="grid", help="threshold search strategy")
    parser.add_argument(
        "--thresholds",
        type=finite_float,
        nargs="+",
        default=list(OFFICIAL_GRID),
        help="candidate thresholds h (default: the official 0.1 grid)",
    )
    parser.add_argument(
        "--launcher",
        default="",
        help="command prefix for train.py / scoring, e.g. 'torchrun --nproc_per_node 4' (default: this python)",
    )
    parser.add_argument(
        "--train_script", help="a training script to run instead of the package module clipvg_hf.train"
    )
    parser.add_argument(
        "--min_samples",
        type=positive_int,
        help="skip training sets smaller than this (default: one global batch of train.py)",
    )
    parser.add_argument(
        "--score_args",
        default="",
        help="extra arguments of the score CLI, e.g. '--cpu' (a value starting with -- is taken as the value)",
    )
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then arguments for train.py")


def parse_curriculum_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse SSA / MSA arguments, checking them before any training or scoring starts.

    ``--score_args '--cpu'`` is read as the value it is (argparse alone would take ``--cpu`` for an option).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    end = argv.index("--") if "--" in argv else len(argv)
    for i in range(end - 1, -1, -1):
        if argv[i] == "--score_args" and i + 1 < end:
            argv[i : i + 2] = [f"--score_args={argv[i + 1]}"]
    args = parser.parse_args(argv)
    bad = [h for h in args.thresholds if not 0 <= h <= 1]
    if bad:
        parser.error(f"--thresholds are IoU thresholds in [0, 1], got {bad}")
    if getattr(args, "h0", None) is not None and not 0 <= args.h0 <= 1:
        parser.error(f"--h0 is an IoU threshold in [0, 1], got {args.h0}")
    if args.train_script and not Path(args.train_script).is_file():
        parser.error(f"--train_script {args.train_script}: file not found")
    if getattr(args, "measurer", None):
        check_model_source(args.measurer, "--measurer")
    check_output_dir(args.output_dir)
    if getattr(args, "output_config", None):  # it names the folder of the selected config
        check_dataset_name(args.output_config, "--output_config")
    try:
        shlex.split(args.score_args), shlex.split(args.launcher)
    except ValueError as error:
        raise UsageError(f"--score_args / --launcher: {error}") from None
    return args


def build_backends(args: argparse.Namespace) -> tuple[CachedTrainer, ScoreFn, list[str]]:
    """The cached train.py trainer and the score command described by the parsed arguments."""
    train_args = [a for a in args.train_args if a != "--"] if args.train_args else []
    launcher = shlex.split(args.launcher) or [sys.executable]
    trainer = TrainScriptTrainer(args.dataset, args.config, train_args, launcher=launcher, script=args.train_script)
    minimum = args.min_samples if args.min_samples is not None else min_global_batch(train_args, launcher)
    scorer = ScoreCommand(
        args.dataset, args.config, args.split, launcher=launcher, extra_args=shlex.split(args.score_args)
    )
    return CachedTrainer(trainer, minimum), scorer, train_args


def prepare_run(
    parser: argparse.ArgumentParser, argv: list[str] | None, method: str
) -> tuple[argparse.Namespace, CachedTrainer, ScoreFn, dict[str, list[int]], SelectionWriter]:
    """What an SSA / MSA command starts from: its checked arguments, the training and scoring back-ends, the rows of
    each source of the split, and the writer of the selected config (``--output_config``, default
    ``<config>-<method>``)."""
    args = parse_curriculum_args(parser, argv)
    trainer, scorer, _ = build_backends(args)
    by_source = source_rows(args.dataset, args.config, args.split)
    name = args.output_config or check_dataset_name(
        selected_config_name(args.config, method), "--output_config (default, from --dataset_config)"
    )
    writer = selection_writer(args.dataset, args.config, args.split, Path(args.output_dir) / "dataset", name)
    return args, trainer, scorer, by_source, writer
