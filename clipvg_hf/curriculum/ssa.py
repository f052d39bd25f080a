"""Single-source self-paced adapting (SSA, paper Fig. 3(b); the authors never released it, see spec §6.4).

1. T0: train a measurer on the whole source (or take ``--measurer``);
2. score every sample of the source with it (reliability = IoU(prediction, pseudo box));
3. for candidate thresholds h, train on the samples with reliability >= h and validate on the labelled ``val``
   split (search: the official 0.1 grid, or ``bisect`` on a unimodal curve);
4. keep the best h and its model; write the selection as a dataset config.

    python -m clipvg_hf.curriculum.ssa --dataset DATA --dataset_config refcoco-unsup-single --output_dir runs/ssa \
        [--search grid|bisect] [--thresholds 0.0 0.1 ...] [--measurer DIR] [--launcher "torchrun --nproc_per_node 4"] \
        -- --model_name_or_path openai/clip-vit-base-patch16 --num_epochs 110   # everything after -- goes to train.py

Outputs in ``--output_dir``: ``ssa.json`` (every decision: measurer, each h with its sample count, val accuracy,
model and command, the best h, the number of trainings), ``ssa_curve.md`` / ``ssa_curve.png`` (accuracy vs h),
``scores/`` (reliabilities, histogram), ``runs/`` (one train.py run per training set) and ``dataset/`` with the
selected config (``<config>-ssa``; load it with ``datasets.load_dataset(<output-dir>/dataset, "<config>-ssa")``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import datasets

from ..cli import (
    UsageError,
    check_model_source,
    check_output_dir,
    finite_float,
    load_split_checked,
    positive_int,
    report_usage_errors,
)
from ..data import load_split
from .reliability import ReliabilityScores, expression_sources
from .runner import (
    CachedTrainer,
    ScoreCommand,
    ScoreFn,
    TrainResult,
    TrainScriptTrainer,
    min_global_batch,
)
from .search import OFFICIAL_GRID, STRATEGIES, search_threshold
from .selection import selected_config_name, write_row_indices, write_selection_config

__all__ = ["SELECTION_RULE", "curve_table", "main", "run_ssa", "select_rows"]

SELECTION_RULE = "reliability >= h"
SelectionWriter = Callable[[dict[int, tuple[float, str]]], dict[str, Any]]


def select_rows(reliability: dict[int, float], h: float) -> list[int]:
    """Rows whose reliability is at least ``h`` (sorted)."""
    return sorted(r for r, v in reliability.items() if v >= h)


def _point(h: float, rows: list[int], result: TrainResult | None, status: str) -> dict[str, Any]:
    """One logged point of a P-R curve."""
    return {"h": h, "num_samples": len(rows), "status": status,
            "val_accuracy": None if result is None else result.val_accuracy,
            "val_miou": None if result is None else result.val_miou,
            "model_dir": None if result is None else result.model_dir,
            "command": None if result is None else result.command}


def curve_table(points: Sequence[dict[str, Any]], best_h: float | None) -> str:
    """Markdown table of a P-R curve (h ascending), the best row marked."""
    lines = ["| h | samples | val Acc@0.5 | val mIoU | status |", "|---:|---:|---:|---:|---|"]
    for p in sorted(points, key=lambda p: p["h"]):
        acc = "—" if p["val_accuracy"] is None else f"{p['val_accuracy']:.4f}"
        miou = "—" if p["val_miou"] is None else f"{p['val_miou']:.4f}"
        mark = " **best**" if p["h"] == best_h else ""
        lines.append(f"| {p['h']:.2f} | {p['num_samples']} | {acc} | {miou} | {p['status']}{mark} |")
    return "\n".join(lines) + "\n"


def run_ssa(
    rows: Sequence[int],
    trainer: CachedTrainer,
    scorer: ScoreFn,
    output_dir: str | Path,
    *,
    thresholds: Sequence[float] = OFFICIAL_GRID,
    strategy: str = "grid",
    measurer_dir: str | Path | None = None,
    write_selection: SelectionWriter | None = None,
) -> dict[str, Any]:
    """Run SSA over the training rows ``rows`` of one source; returns (and writes) the ``ssa.json`` report."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    decisions: list[str] = []
    measurer: dict[str, Any] = {"trained": measurer_dir is None}
    if measurer_dir is None:
        result, _status = trainer(rows, out / "runs" / "measurer")
        if result is None or result.model_dir is None:
            raise ValueError(f"cannot train a measurer on {len(rows)} samples")
        measurer_dir = result.model_dir
        measurer.update(val_accuracy=result.val_accuracy, num_samples=len(rows))
        decisions.append(f"T0: trained the measurer on all {len(rows)} samples: val acc {result.val_accuracy:.4f}")
    scores: ReliabilityScores = scorer(Path(measurer_dir), out / "scores")
    measurer.update(model_dir=str(measurer_dir), fingerprint=scores.measurer)
    reliability = {r: v for r, v in scores.as_dict().items() if r in set(rows)}
    if len(reliability) != len(rows):
        raise ValueError(f"the measurer scored {len(reliability)} of the {len(rows)} training rows")
    decisions.append(f"scored {len(rows)} samples with measurer {scores.measurer.get('weights_sha256', '?')[:12]}")

    points: dict[float, dict[str, Any]] = {}
    trainings_before = trainer.trainings

    def evaluate(h: float) -> float | None:
        chosen = select_rows(reliability, h)
        result, status = trainer(chosen, out / "runs" / f"h_{h:.2f}")
        points[h] = _point(h, chosen, result, status)
        decisions.append(f"h={h:.2f}: {len(chosen)} samples, {status}"
                         + ("" if result is None else f", val acc {result.val_accuracy:.4f}"))
        return None if result is None else result.val_accuracy

    search = search_threshold(evaluate, thresholds, strategy)
    if search.best_h is None:
        raise RuntimeError("no candidate threshold could be trained (all subsets too small)")
    best = points[search.best_h]
    decisions.append(f"best h={search.best_h:.2f} (val acc {search.best_score:.4f}) of {len(points)} evaluated")
    selected = select_rows(reliability, search.best_h)
    write_row_indices(selected, out / "selected_rows.json")
    sha = scores.measurer.get("weights_sha256", "")
    selection = write_selection({r: (reliability[r], sha) for r in selected}) if write_selection else None

    curve = [points[h] for h in sorted(points)]
    report = {
        "method": "SSA",
        "search": {"strategy": strategy, "candidates": sorted({float(h) for h in thresholds}),
                   "evaluation_order": search.order, "rule": SELECTION_RULE,
                   "tie_break": "smaller h (more data)"},
        "measurer": measurer,
        "curve": curve,
        "best": {"h": search.best_h, "val_accuracy": best["val_accuracy"], "val_miou": best["val_miou"],
                 "num_samples": best["num_samples"], "model_dir": best["model_dir"]},
        "trainings": {"measurer": int(measurer["trained"]), "search": trainer.trainings - trainings_before,
                      "total": trainer.trainings},
        "selection": selection,
        "decisions": decisions,
    }
    (out / "ssa_curve.md").write_text(curve_table(curve, search.best_h))
    from .plots import plot_curve

    report["curve_png"] = plot_curve([p["h"] for p in curve], [p["val_accuracy"] for p in curve],
                                     out / "ssa_curve.png", best=search.best_h, title=f"SSA ({strategy} search)")
    (out / "ssa.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def selection_writer(dataset: str, config: str, split: str, output_dir: Path, name: str) -> SelectionWriter:
    """Writes the selected rows as config ``name`` under ``output_dir`` and describes it."""

    def write(selection: dict[int, tuple[float, str]]) -> dict[str, Any]:
        folder = write_selection_config(dataset, config, split, selection, output_dir, name)
        return {"dataset": str(output_dir), "config": name, "split": split, "num_samples": len(selection),
                "folder": str(folder)}

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
    parser.add_argument("--dataset_config", dest="config", required=True,
                        help="config holding the pseudo-labelled split and val")
    parser.add_argument("--split", default="train_pseudo", help="pseudo-labelled training split")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--search", choices=STRATEGIES, default="grid", help="threshold search strategy")
    parser.add_argument("--thresholds", type=finite_float, nargs="+", default=list(OFFICIAL_GRID),
                        help="candidate thresholds h (default: the official 0.1 grid)")
    parser.add_argument("--launcher", default="", help="command prefix for train.py / scoring, e.g. "
                        "'torchrun --nproc_per_node 4' (default: this python)")
    parser.add_argument("--train_script", help="train.py to run (default: the repository's)")
    parser.add_argument("--min_samples", type=positive_int, help="skip training sets smaller than this (default: one "
                        "global batch of train.py)")
    parser.add_argument("--score_args", default="", help="extra arguments of the score CLI, e.g. '--cpu' "
                        "(a value starting with -- is taken as the value)")
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
    if args.train_script and not Path(args.train_script).is_file():
        parser.error(f"--train_script {args.train_script}: file not found")
    if getattr(args, "measurer", None):
        check_model_source(args.measurer, "--measurer")
    check_output_dir(args.output_dir)
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
    scorer = ScoreCommand(args.dataset, args.config, args.split, launcher=launcher,
                          extra_args=shlex.split(args.score_args))
    return CachedTrainer(trainer, minimum), scorer, train_args


@report_usage_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Single-source self-paced adapting (SSA).")
    add_common_arguments(parser)
    parser.add_argument("--source", help="only this pseudo-label source of the split (default: all rows)")
    parser.add_argument("--measurer", help="an already trained measurer folder (skips T0)")
    parser.add_argument("--output_config", help="name of the selected config (default: <config>-ssa)")
    args = parse_curriculum_args(parser, argv)
    trainer, scorer, _ = build_backends(args)
    by_source = source_rows(args.dataset, args.config, args.split)
    if args.source and args.source not in by_source:
        parser.error(f"source {args.source!r} not in {args.dataset}/{args.config}/{args.split}: {sorted(by_source)}")
    rows = by_source[args.source] if args.source else sorted(r for rs in by_source.values() for r in rs)
    name = args.output_config or selected_config_name(args.config, "ssa")
    writer = selection_writer(args.dataset, args.config, args.split, Path(args.output_dir) / "dataset", name)
    report = run_ssa(rows, trainer, scorer, args.output_dir, thresholds=args.thresholds, strategy=args.search,
                     measurer_dir=args.measurer, write_selection=writer)
    print(curve_table(report["curve"], report["best"]["h"]))
    print(json.dumps({"best": report["best"], "trainings": report["trainings"], "search": args.search}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
