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

    clipvg-curriculum msa --dataset DATA --dataset_config refcoco-unsup-multi --output_dir runs/msa \
        [--order fixed|gain] [--sources template relation caption] [--h0 0.5] [--search bisect] -- <train.py args>
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .common import (
    SELECTION_RULE,
    SelectionWriter,
    curve_table,
    select_rows,
    training_point,
)
from .plots import plot_histogram_grid
from .reliability import ReliabilityScores
from .runner import CachedTrainer, ScoreFn
from .search import OFFICIAL_GRID, SearchResult, search_threshold
from .selection import write_row_indices

__all__ = ["DEFAULT_ORDER", "ORDERS", "run_msa"]

DEFAULT_ORDER = ("template", "relation", "caption")
ORDERS = ("fixed", "gain")


def _train_measurers(
    sources: Sequence[str], rows: dict[str, list[int]], trainer: CachedTrainer, out: Path, decisions: list[str]
) -> dict[str, dict[str, Any]]:
    """M_i trained on source i alone."""
    measurers = {}
    for source in sources:
        result, status = trainer(rows[source], out / "runs" / f"measurer_{source}")
        if result is None or result.model_dir is None:
            raise ValueError(f"cannot train a measurer on source {source!r} ({len(rows[source])} samples)")
        measurers[source] = {
            "model_dir": result.model_dir,
            "val_accuracy": result.val_accuracy,
            "num_samples": len(rows[source]),
            "status": status,
        }
        decisions.append(f"measurer M[{source}]: {len(rows[source])} samples, val acc {result.val_accuracy:.4f}")
    return measurers


def _score_grid(
    sources: Sequence[str],
    rows: dict[str, list[int]],
    measurers: dict[str, dict[str, Any]],
    scorer: ScoreFn,
    out: Path,
) -> tuple[dict[str, dict[int, float]], dict[str, str], dict[str, Any]]:
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
            grid[measurer][source] = {
                "kind": "SR" if measurer == source else "CR",
                "num_samples": int(values.size),
                "mean": float(values.mean()) if values.size else None,
                "fraction_at_0.5": float((values >= 0.5).mean()) if values.size else None,
            }
    png = plot_histogram_grid(cells, list(sources), list(sources), out / "reliability_grid.png")
    return reliability, sha, {"cells": grid, "png": png}


class _Greedy:
    """The state of one greedy MSA run: the union D so far, the logged steps and decisions, one training per call."""

    def __init__(
        self,
        rows: dict[str, list[int]],
        sources: list[str],
        reliability: dict[str, dict[int, float]],
        sha: dict[str, str],
        trainer: CachedTrainer,
        out: Path,
        decisions: list[str],
    ):
        self.rows, self.sources, self.reliability, self.sha = rows, sources, reliability, sha
        self.trainer, self.out, self.decisions = trainer, out, decisions
        self.chosen_rows: dict[int, tuple[float, str]] = {}
        self.selected: dict[str, dict[str, Any]] = {}
        self.steps: list[dict[str, Any]] = []

    def picked(self, source: str, measurer: str, h: float) -> list[int]:
        """The rows of ``source`` with reliability >= h under ``measurer``."""
        return select_rows({r: self.reliability[measurer][r] for r in self.rows[source]}, h)

    def candidate(self, source: str, measurer: str, h: float, tag: str) -> tuple[dict[str, Any], float | None]:
        """Train D ∪ (source's rows with reliability >= h under measurer)."""
        picked = self.picked(source, measurer, h)
        train_rows = sorted(set(self.chosen_rows) | set(picked))
        number = len(self.steps) + 1
        folder = self.out / "runs" / f"step{number}_{tag}_{source}_M{measurer}_h{h:.2f}"
        result, status = self.trainer(train_rows, folder)
        point = {
            **training_point(h, picked, result, status),
            "source": source,
            "measurer": measurer,
            "num_training_samples": len(train_rows),
        }
        self.decisions.append(
            f"step {number}: {source} via M[{measurer}] at h={h:.2f}: {len(picked)} new, "
            f"{len(train_rows)} in total, {status}"
            + ("" if result is None else f", val acc {result.val_accuracy:.4f}")
        )
        return point, None if result is None else result.val_accuracy

    def choose_measurer(self, pool: Sequence[str], h0: float, step: dict[str, Any]) -> dict[str, Any]:
        """The (source, measurer) of ``pool`` whose selection at h0 validates best (ties: pool order, own measurer)."""
        points = []
        for source in pool:
            for measurer in [source] + [m for m in self.sources if m != source]:  # own measurer first on ties
                points.append(self.candidate(source, measurer, h0, "measurer")[0])
        step["measurer_candidates"] = points
        trainable = [p for p in points if p["val_accuracy"] is not None]
        if trainable:
            return max(trainable, key=lambda p: p["val_accuracy"])  # first of the ties
        # nothing reaches h0: keep the first source's own measurer and let the h search decide
        self.decisions.append(
            f"step {len(self.steps) + 1}: no measurer selects a trainable set at h0={h0:.2f}; "
            f"using M[{pool[0]}] for {pool[0]}"
        )
        return {"source": pool[0], "measurer": pool[0], "val_accuracy": None, "model_dir": None}

    def tune_threshold(
        self, source: str, measurer: str, thresholds: Sequence[float], strategy: str, step: dict[str, Any]
    ) -> tuple[SearchResult, dict[float, dict[str, Any]]]:
        """Search h for ``source`` under ``measurer``; the logged curve goes into ``step``."""
        curve: dict[float, dict[str, Any]] = {}

        def evaluate(h: float) -> float | None:
            point, acc = self.candidate(source, measurer, h, "h")
            curve[h] = point
            return acc

        search = search_threshold(evaluate, thresholds, strategy)
        step.update(
            source=source,
            measurer=measurer,
            h_search={
                "strategy": strategy,
                "evaluation_order": search.order,
                "curve": [curve[h] for h in sorted(curve)],
            },
        )
        return search, curve

    def add(self, source: str, measurer: str, h: float) -> int:
        """Add the source's selection at h to D; returns how many rows it added."""
        picked = self.picked(source, measurer, h)
        self.chosen_rows.update({r: (self.reliability[measurer][r], self.sha[measurer]) for r in picked})
        self.selected[source] = {
            "measurer": measurer,
            "measurer_sha256": self.sha[measurer],
            "h": h,
            "num_samples": len(picked),
            "of": len(self.rows[source]),
        }
        return len(picked)

    def log(self, step: dict[str, Any], decision: str) -> None:
        step["decision"] = decision
        self.steps.append(step)
        self.decisions.append(decision)


def _step_result(
    top: dict[str, Any], search: SearchResult, curve: dict[float, dict[str, Any]], h0: float
) -> tuple[float, float, str | None] | None:
    """(h, val accuracy, model) of a step: the better of h0 (measurer choice) and the searched h; None if neither
    trained."""
    if top["val_accuracy"] is not None and (search.best_h is None or top["val_accuracy"] > search.best_score):
        return h0, top["val_accuracy"], top["model_dir"]  # h0 was not in the grid and is better
    if search.best_h is not None:
        return search.best_h, search.best_score, curve[search.best_h]["model_dir"]
    return None


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
    greedy = _Greedy(rows, sources, reliability, sha, trainer, out, decisions)
    best_acc: float | None = None
    best_model: str | None = None
    remaining = list(sources)
    while remaining:
        step: dict[str, Any] = {"step": len(greedy.steps) + 1, "previous_best": best_acc, "h0": h0}
        top = greedy.choose_measurer(remaining if order == "gain" else remaining[:1], h0, step)
        source, measurer = top["source"], top["measurer"]
        search, curve = greedy.tune_threshold(source, measurer, thresholds, strategy, step)
        result = _step_result(top, search, curve, h0)
        if result is None:
            greedy.log(step, f"stop: no training set of {source} could be trained")
            break
        h, acc, model = result
        step.update(h=h, val_accuracy=acc, model_dir=model)
        if best_acc is not None and acc <= best_acc:
            greedy.log(step, f"stop: adding {source} gives {acc:.4f} <= best {best_acc:.4f}")
            break
        added = greedy.add(source, measurer, h)
        best_acc, best_model = acc, model
        greedy.log(step, f"add {source} (M[{measurer}], h={h:.2f}, {added} samples): val acc {acc:.4f}")
        remaining.remove(source)
    return _write_report(
        greedy,
        out,
        order=order,
        h0=h0,
        thresholds=thresholds,
        strategy=strategy,
        measurers=measurers,
        grid=grid,
        best=(best_acc, best_model),
        write_selection=write_selection,
    )


def _write_report(
    greedy: _Greedy,
    out: Path,
    *,
    order: str,
    h0: float,
    thresholds: Sequence[float],
    strategy: str,
    measurers: dict[str, dict[str, Any]],
    grid: dict[str, Any],
    best: tuple[float | None, str | None],
    write_selection: SelectionWriter | None,
) -> dict[str, Any]:
    """Write the selection, ``msa.json`` and ``msa_steps.md``; returns the report."""
    chosen_rows, steps, sources = greedy.chosen_rows, greedy.steps, greedy.sources
    write_row_indices(sorted(chosen_rows), out / "selected_rows.json")
    selection = write_selection(chosen_rows) if write_selection and chosen_rows else None
    report = {
        "method": "MSA",
        "order": order,
        "source_order": sources,
        "h0": h0,
        "search": {"strategy": strategy, "candidates": sorted({float(h) for h in thresholds}), "rule": SELECTION_RULE},
        "measurers": {s: {**measurers[s], "weights_sha256": greedy.sha[s]} for s in sources},
        "reliability_grid": grid,
        "steps": steps,
        "selected": greedy.selected,
        "best": {"val_accuracy": best[0], "model_dir": best[1], "num_samples": len(chosen_rows)},
        "trainings": greedy.trainer.trainings,
        "selection": selection,
        "decisions": greedy.decisions,
    }
    (out / "msa.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "msa_steps.md").write_text(
        "".join(
            f"## step {s['step']}: {s.get('decision', '')}\n\n"
            + curve_table(s.get("h_search", {}).get("curve", []), s.get("h"))
            + "\n"
            for s in steps
        )
    )
    return report
