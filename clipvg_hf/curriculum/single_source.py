"""Single-source self-paced adapting (SSA, paper Fig. 3(b); the authors never released it, see spec §6.4).

1. T0: train a measurer on the whole source (or take ``--measurer``);
2. score every sample of the source with it (reliability = IoU(prediction, pseudo box));
3. for candidate thresholds h, train on the samples with reliability >= h and validate on the labelled ``val``
   split (search: the official 0.1 grid, or ``bisect`` on a unimodal curve);
4. keep the best h and its model; write the selection as a dataset config.

    clipvg-curriculum ssa --dataset DATA --dataset_config refcoco-unsup-single --output_dir runs/ssa \
        [--search grid|bisect] [--thresholds 0.0 0.1 ...] [--measurer DIR] [--launcher "torchrun --nproc_per_node 4"] \
        -- --model_name_or_path openai/clip-vit-base-patch16 --num_epochs 110   # everything after -- goes to train.py

Outputs in ``--output_dir``: ``ssa.json`` (every decision: measurer, each h with its sample count, val accuracy,
model and command, the best h, the number of trainings), ``ssa_curve.md`` / ``ssa_curve.png`` (accuracy vs h),
``scores/`` (reliabilities, histogram), ``runs/`` (one train.py run per training set) and ``dataset/`` with the
selected config (``<config>-ssa``; load it with ``datasets.load_dataset(<output-dir>/dataset, "<config>-ssa")``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .common import (
    SELECTION_RULE,
    SelectionWriter,
    curve_table,
    select_rows,
    training_point,
)
from .plots import plot_curve
from .reliability import ReliabilityScores
from .runner import CachedTrainer, ScoreFn
from .search import OFFICIAL_GRID, search_threshold
from .selection import write_row_indices

__all__ = ["run_ssa"]


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
        points[h] = training_point(h, chosen, result, status)
        decisions.append(
            f"h={h:.2f}: {len(chosen)} samples, {status}"
            + ("" if result is None else f", val acc {result.val_accuracy:.4f}")
        )
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
        "search": {
            "strategy": strategy,
            "candidates": sorted({float(h) for h in thresholds}),
            "evaluation_order": search.order,
            "rule": SELECTION_RULE,
            "tie_break": "smaller h (more data)",
        },
        "measurer": measurer,
        "curve": curve,
        "best": {
            "h": search.best_h,
            "val_accuracy": best["val_accuracy"],
            "val_miou": best["val_miou"],
            "num_samples": best["num_samples"],
            "model_dir": best["model_dir"],
        },
        "trainings": {
            "measurer": int(measurer["trained"]),
            "search": trainer.trainings - trainings_before,
            "total": trainer.trainings,
        },
        "selection": selection,
        "decisions": decisions,
    }
    (out / "ssa_curve.md").write_text(curve_table(curve, search.best_h))
    report["curve_png"] = plot_curve(
        [p["h"] for p in curve],
        [p["val_accuracy"] for p in curve],
        out / "ssa_curve.png",
        best=search.best_h,
        title=f"SSA ({strategy} search)",
    )
    (out / "ssa.json").write_text(json.dumps(report, indent=1) + "\n")
    return report
