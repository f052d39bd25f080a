"""Multi-source self-paced adapting (MSA, paper Fig. 3(c); never released, see spec §6.5). Greedy:

1. train one measurer per source (M_i on source i alone) and let every measurer score every source, giving the
   n x n reliability grid (SR on the diagonal, CR elsewhere; ``reliability_grid.png``);
2. repeat, one source per step: for the next source (``fixed`` order, default template -> relation -> caption, or
   ``gain``: the remaining source whose best measurer gains most at h0), choose its measurer among all measurers by
   the validation accuracy of D ∪ {its samples with reliability >= h0}; tune that source's h (grid or bisect);
3. add the selected samples to D if validation improves on the best so far, else stop.

The first source is always added (nothing to compare with). Ties: earlier source in the order, then the source's
own measurer, then the measurers' order; smaller h. Every candidate (source, measurer, h, samples, val accuracy,
model) and decision is in ``msa.json``; the union D is written as a dataset config (``<config>-msa``).

    python -m clipvg_hf.curriculum.msa --dataset DATA --dataset_config refcoco-unsup-multi --output_dir runs/msa \
        [--order fixed|gain] [--sources template relation caption] [--h0 0.5] [--search bisect] -- <train.py args>
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..cli import finite_float, report_usage_errors
from .reliability import ReliabilityScores
from .runner import CachedTrainer, ScoreFn
from .search import OFFICIAL_GRID, search_threshold
from .selection import selected_config_name, write_row_indices
from .ssa import (
    SELECTION_RULE,
    SelectionWriter,
    _point,
    add_common_arguments,
    build_backends,
    curve_table,
    parse_curriculum_args,
    select_rows,
    selection_writer,
    source_rows,
)

__all__ = ["DEFAULT_ORDER", "main", "run_msa"]

DEFAULT_ORDER = ("template", "relation", "caption")
ORDERS = ("fixed", "gain")


def _train_measurers(sources: Sequence[str], rows: dict[str, list[int]], trainer: CachedTrainer, out: Path,
                     decisions: list[str]) -> dict[str, dict[str, Any]]:
    """M_i trained on source i alone."""
    measurers = {}
    for source in sources:
        result, status = trainer(rows[source], out / "runs" / f"measurer_{source}")
        if result is None or result.model_dir is None:
            raise ValueError(f"cannot train a measurer on source {source!r} ({len(rows[source])} samples)")
        measurers[source] = {"model_dir": result.model_dir, "val_accuracy": result.val_accuracy,
                             "num_samples": len(rows[source]), "status": status}
        decisions.append(f"measurer M[{source}]: {len(rows[source])} samples, val acc {result.val_accuracy:.4f}")
    return measurers


def _score_grid(sources: Sequence[str], rows: dict[str, list[int]], measurers: dict[str, dict[str, Any]],
                scorer: ScoreFn, out: Path) -> tuple[dict[str, dict[int, float]], dict[str, str], dict[str, Any]]:
    """Each measurer scores the whole split once; returns reliabilities, weight hashes and the grid summary."""
    reliability, sha, grid = {}, {}, {}
    cells = {}
    for measurer in sources:
        scores: ReliabilityScores = scorer(Path(measurers[measurer]["model_dir"]), out / "scores" / measurer)
        reliability[measurer] = scores.as_dict()
        sha[measurer] = scores.measurer.get("weights_sha256", "")
        grid[measurer] = {}
        for source in sources:
            values = np.array([reliability[measurer][r] for r in rows[source]], dtype=np.float64)
            cells[(measurer, source)] = values
            grid[measurer][source] = {"kind": "SR" if measurer == source else "CR", "num_samples": int(values.size),
                                      "mean": float(values.mean()) if values.size else None,
                                      "fraction_at_0.5": float((values >= 0.5).mean()) if values.size else None}
    from .plots import plot_histogram_grid

    png = plot_histogram_grid(cells, list(sources), list(sources), out / "reliability_grid.png")
    return reliability, sha, {"cells": grid, "png": png}


def run_msa(
    rows: dict[str, list[int]],
    trainer: CachedTrainer,
    scorer: ScoreFn,
    output_dir: str | Path,
    *,
    order: str = "fixed",
    h0: float = 0.5,
    thresholds: Sequence[float] = OFFICIAL_GRID,
    strategy: str = "grid",
    write_selection: SelectionWriter | None = None,
) -> dict[str, Any]:
    """Greedy MSA over ``rows`` (source -> row indices, in the source order); returns the ``msa.json`` report."""
    if order not in ORDERS:
        raise ValueError(f"unknown source order {order!r}; expected one of {ORDERS}")
    sources = [s for s in rows if rows[s]]
    if not sources:
        raise ValueError("no pseudo-label source has samples")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    decisions: list[str] = []
    measurers = _train_measurers(sources, rows, trainer, out, decisions)
    reliability, sha, grid = _score_grid(sources, rows, measurers, scorer, out)

    chosen_rows: dict[int, tuple[float, str]] = {}
    best_acc: float | None = None
    best_model: str | None = None
    remaining, steps, selected = list(sources), [], {}

    def candidate(source: str, measurer: str, h: float, tag: str) -> tuple[dict[str, Any], float | None]:
        """Train D ∪ (source's rows with reliability >= h under measurer)."""
        picked = select_rows({r: reliability[measurer][r] for r in rows[source]}, h)
        train_rows = sorted(set(chosen_rows) | set(picked))
        result, status = trainer(train_rows, out / "runs" / f"step{len(steps) + 1}_{tag}_{source}_M{measurer}_h{h:.2f}")
        point = {**_point(h, picked, result, status), "source": source, "measurer": measurer,
                 "num_training_samples": len(train_rows)}
        decisions.append(f"step {len(steps) + 1}: {source} via M[{measurer}] at h={h:.2f}: {len(picked)} new, "
                         f"{len(train_rows)} in total, {status}"
                         + ("" if result is None else f", val acc {result.val_accuracy:.4f}"))
        return point, None if result is None else result.val_accuracy

    while remaining:
        step: dict[str, Any] = {"step": len(steps) + 1, "previous_best": best_acc, "h0": h0}
        pool = remaining if order == "gain" else remaining[:1]
        measurer_points = []
        for source in pool:
            ranked = [source] + [m for m in sources if m != source]  # own measurer first on ties
            for measurer in ranked:
                point, _ = candidate(source, measurer, h0, "measurer")
                measurer_points.append(point)
        trainable = [p for p in measurer_points if p["val_accuracy"] is not None]
        step["measurer_candidates"] = measurer_points
        if trainable:
            top = max(trainable, key=lambda p: p["val_accuracy"])  # first of the ties: order, own measurer
        else:  # nothing reaches h0: keep the first source's own measurer and let the h search decide
            top = {"source": pool[0], "measurer": pool[0], "val_accuracy": None, "model_dir": None}
            decisions.append(f"step {len(steps) + 1}: no measurer selects a trainable set at h0={h0:.2f}; "
                             f"using M[{pool[0]}] for {pool[0]}")
        source, measurer = top["source"], top["measurer"]
        curve: dict[float, dict[str, Any]] = {}

        def evaluate(h: float, source: str = source, measurer: str = measurer,
                     curve: dict[float, dict[str, Any]] = curve) -> float | None:
            point, acc = candidate(source, measurer, h, "h")
            curve[h] = point
            return acc

        search = search_threshold(evaluate, thresholds, strategy)
        step.update(source=source, measurer=measurer,
                    h_search={"strategy": strategy, "evaluation_order": search.order,
                              "curve": [curve[h] for h in sorted(curve)]})
        if top["val_accuracy"] is not None and (search.best_h is None or top["val_accuracy"] > search.best_score):
            h, acc, model = h0, top["val_accuracy"], top["model_dir"]  # h0 was not in the grid and is better
        elif search.best_h is not None:
            h, acc, model = search.best_h, search.best_score, curve[search.best_h]["model_dir"]
        else:
            step["decision"] = f"stop: no training set of {source} could be trained"
            steps.append(step)
            decisions.append(step["decision"])
            break
        step.update(h=h, val_accuracy=acc, model_dir=model)
        if best_acc is not None and acc <= best_acc:
            step["decision"] = f"stop: adding {source} gives {acc:.4f} <= best {best_acc:.4f}"
            steps.append(step)
            decisions.append(step["decision"])
            break
        picked = select_rows({r: reliability[measurer][r] for r in rows[source]}, h)
        chosen_rows.update({r: (reliability[measurer][r], sha[measurer]) for r in picked})
        selected[source] = {"measurer": measurer, "measurer_sha256": sha[measurer], "h": h,
                            "num_samples": len(picked), "of": len(rows[source])}
        best_acc, best_model = acc, model
        step["decision"] = f"add {source} (M[{measurer}], h={h:.2f}, {len(picked)} samples): val acc {acc:.4f}"
        decisions.append(step["decision"])
        steps.append(step)
        remaining.remove(source)

    write_row_indices(sorted(chosen_rows), out / "selected_rows.json")
    selection = write_selection(chosen_rows) if write_selection and chosen_rows else None
    report = {
        "method": "MSA",
        "order": order, "source_order": sources, "h0": h0,
        "search": {"strategy": strategy, "candidates": sorted({float(h) for h in thresholds}),
                   "rule": SELECTION_RULE},
        "measurers": {s: {**measurers[s], "weights_sha256": sha[s]} for s in sources},
        "reliability_grid": grid,
        "steps": steps,
        "selected": selected,
        "best": {"val_accuracy": best_acc, "model_dir": best_model, "num_samples": len(chosen_rows)},
        "trainings": trainer.trainings,
        "selection": selection,
        "decisions": decisions,
    }
    (out / "msa.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "msa_steps.md").write_text("".join(
        f"## step {s['step']}: {s.get('decision', '')}\n\n" + curve_table(s.get("h_search", {}).get("curve", []),
                                                                            s.get("h")) + "\n" for s in steps))
    return report


@report_usage_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Multi-source self-paced adapting (MSA).")
    add_common_arguments(parser)
    parser.add_argument("--sources", nargs="+", help=f"sources in order (default: {' '.join(DEFAULT_ORDER)}, "
                        "those present)")
    parser.add_argument("--order", choices=ORDERS, default="fixed", help="fixed source order or greedy by gain")
    parser.add_argument("--h0", type=finite_float, default=0.5, help="threshold at which measurers are compared")
    parser.add_argument("--output_config", help="name of the selected config (default: <config>-msa)")
    args = parse_curriculum_args(parser, argv)
    if not 0 <= args.h0 <= 1:
        parser.error(f"--h0 is an IoU threshold in [0, 1], got {args.h0}")
    trainer, scorer, _ = build_backends(args)
    by_source = source_rows(args.dataset, args.config, args.split)
    wanted = args.sources or [s for s in DEFAULT_ORDER if s in by_source]
    unknown = [s for s in wanted if s not in by_source]
    if unknown or not wanted:
        parser.error(f"sources {unknown or wanted} not in {args.dataset}/{args.config}/{args.split}: "
                     f"{sorted(by_source)} (a merged file converted without train_separate/ has only 'pseudo')")
    name = args.output_config or selected_config_name(args.config, "msa")
    writer = selection_writer(args.dataset, args.config, args.split, Path(args.output_dir) / "dataset", name)
    report = run_msa({s: by_source[s] for s in wanted}, trainer, scorer, args.output_dir, order=args.order,
                     h0=args.h0, thresholds=args.thresholds, strategy=args.search, write_selection=writer)
    print("\n".join(report["decisions"]))
    print(json.dumps({"selected": report["selected"], "best": report["best"], "trainings": report["trainings"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
