"""Threshold search, SSA and MSA decision logic on synthetic sources with known corruption (no model training)."""

import json

import numpy as np
import pytest

from clipvg_hf.curriculum import OFFICIAL_GRID, CachedTrainer, search_threshold
from clipvg_hf.curriculum.common import select_rows
from clipvg_hf.curriculum.multi_source import run_msa
from clipvg_hf.curriculum.single_source import run_ssa

from utils.curriculum_synthetic import (
    SyntheticScorer,
    SyntheticTrainer,
    make_sources,
    measurer_scores,
)


def test_grid_search_evaluates_every_candidate_and_picks_the_first_maximum():
    curve = {0.0: 0.2, 0.1: 0.5, 0.2: 0.7, 0.3: 0.7, 0.4: 0.1}
    result = search_threshold(curve.get, curve, "grid")
    assert result.order == sorted(curve) and result.best_h == 0.2 and result.best_score == 0.7


@pytest.mark.parametrize("peak", range(10))
def test_bisect_finds_the_peak_of_a_unimodal_curve_with_fewer_evaluations(peak):
    curve = {h: 1.0 - abs(k - peak) / 10 for k, h in enumerate(OFFICIAL_GRID)}
    result = search_threshold(curve.get, OFFICIAL_GRID, "bisect")
    assert result.best_h == OFFICIAL_GRID[peak]
    assert len(result.evaluated) <= 7 < len(OFFICIAL_GRID)
    assert result.best_h == max(result.evaluated, key=lambda h: (result.evaluated[h], -h))  # argmax of the log


def test_untrainable_candidates_never_win_and_unknown_strategy_is_refused():
    curve = {0.0: 0.3, 0.5: 0.4, 0.9: None}
    assert search_threshold(curve.get, curve, "grid").best_h == 0.5
    assert search_threshold(lambda h: None, [0.1], "grid").best_h is None
    with pytest.raises(ValueError, match="unknown search strategy"):
        search_threshold(curve.get, curve, "random")


@pytest.fixture(scope="module")
def three_sources():
    """Template clean-ish, relation noisier, caption mostly corrupted; measurers of matching quality."""
    sources = make_sources(
        {"template": 120, "relation": 80, "caption": 80}, {"template": 0.3, "relation": 0.5, "caption": 0.85}, seed=1
    )
    noise = {"template": 0.02, "relation": 0.04, "caption": 0.15}
    scores = {
        f"measurer_{s}": measurer_scores(sources, noise[s], seed=i, sha=f"sha-{s}") for i, s in enumerate(sources)
    }
    return sources, scores


@pytest.mark.parametrize("strategy", ["grid", "bisect"])
def test_ssa_keeps_the_argmax_of_its_logged_curve_and_removes_most_corrupted_labels(three_sources, tmp_path, strategy):
    sources, scores = three_sources
    template = sources["template"]
    trainer = CachedTrainer(SyntheticTrainer({"template": template}), min_samples=4)
    scorer = SyntheticScorer({"measurer": scores["measurer_template"]})
    written = {}
    report = run_ssa(
        template["rows"],
        trainer,
        scorer,
        tmp_path,
        strategy=strategy,
        write_selection=lambda sel: written.update(sel) or {"num_samples": len(sel)},
    )
    logged = {p["h"]: p["val_accuracy"] for p in report["curve"] if p["val_accuracy"] is not None}
    assert report["best"]["h"] == max(logged, key=lambda h: (logged[h], -h))
    assert report["best"]["val_accuracy"] == logged[report["best"]["h"]]
    assert report["search"]["strategy"] == strategy
    # h = 0 is the measurer's own training set: reused, not retrained
    status = {p["h"]: p["status"] for p in report["curve"]}
    assert status.get(0.0, "reused") == "reused"
    assert report["trainings"]["total"] == 1 + report["trainings"]["search"]
    assert report["trainings"]["search"] == sum(s == "trained" for s in status.values())
    if strategy == "bisect":
        assert report["trainings"]["search"] < len(OFFICIAL_GRID) - 1
    # the kept set: far fewer corrupted labels, most clean ones kept
    corrupt = {r for r, bad in zip(template["rows"], template["corrupt"]) if bad}
    kept = set(written)
    assert kept == set(json.loads((tmp_path / "selected_rows.json").read_text()))
    rate_before, rate_after = template["corrupt"].mean(), len(kept & corrupt) / len(kept)
    clean_recall = len(kept - corrupt) / (len(template["rows"]) - len(corrupt))
    assert rate_after <= rate_before / 2 and clean_recall >= 0.5, (rate_before, rate_after, clean_recall)
    assert (tmp_path / "ssa.json").is_file() and "| h |" in (tmp_path / "ssa_curve.md").read_text()


def test_ssa_logs_skipped_thresholds_with_too_few_samples(three_sources, tmp_path):
    sources, scores = three_sources
    template = sources["template"]
    trainer = CachedTrainer(SyntheticTrainer({"template": template}), min_samples=len(template["rows"]) // 2)
    report = run_ssa(
        template["rows"],
        trainer,
        SyntheticScorer({"measurer": scores["measurer_template"]}),
        tmp_path,
        thresholds=[0.0, 0.5, 0.99],
    )
    status = {p["h"]: p["status"] for p in report["curve"]}
    assert status[0.99] == "skipped" and report["best"]["h"] != 0.99


@pytest.mark.parametrize("order", ["fixed", "gain"])
def test_msa_decisions_follow_the_logged_validation_numbers(three_sources, tmp_path, order):
    sources, scores = three_sources
    rows = {s: d["rows"] for s, d in sources.items()}
    trainer = CachedTrainer(SyntheticTrainer(sources), min_samples=4)
    scorer = SyntheticScorer(scores)
    written = {}
    report = run_msa(
        rows,
        trainer,
        scorer,
        tmp_path,
        order=order,
        h0=0.5,
        strategy="grid",
        write_selection=lambda sel: written.update(sel) or {"num_samples": len(sel)},
    )
    assert sorted(scorer.calls) == sorted(scores)  # each measurer scored the split once
    assert set(report["reliability_grid"]["cells"]) == set(rows)
    assert report["reliability_grid"]["cells"]["template"]["template"]["kind"] == "SR"
    best = None
    for step in report["steps"]:
        candidates = [c for c in step["measurer_candidates"] if c["val_accuracy"] is not None]
        top = max(candidates, key=lambda c: c["val_accuracy"])
        assert (step["source"], step["measurer"]) == (top["source"], top["measurer"])  # measurer chosen by val acc
        if order == "fixed":
            assert {c["source"] for c in candidates} == {step["source"]}
        curve = {p["h"]: p["val_accuracy"] for p in step["h_search"]["curve"] if p["val_accuracy"] is not None}
        assert step["val_accuracy"] == max([*curve.values(), top["val_accuracy"]])  # h tuned on the logged curve
        if step["decision"].startswith("stop"):
            assert best is not None and step["val_accuracy"] <= best  # greedy stops without improvement
            assert step is report["steps"][-1]
        else:
            assert best is None or step["val_accuracy"] > best
            best = step["val_accuracy"]
    assert report["best"]["val_accuracy"] == best
    added = [s["source"] for s in report["steps"] if s["decision"].startswith("add")]
    assert list(report["selected"]) == added
    if order == "fixed":
        assert added == list(rows)[: len(added)]
    # the selection is exactly the union of each added source's rows above its h under its measurer
    expected = set()
    for source, info in report["selected"].items():
        rel = scores[f"measurer_{info['measurer']}"].as_dict()
        expected |= set(select_rows({r: rel[r] for r in rows[source]}, info["h"]))
    assert set(written) == expected
    assert all(sha.startswith("sha-") for _, sha in written.values())
    assert report["trainings"] == len(trainer.cache)  # every distinct training set trained once
    saved = json.loads((tmp_path / "msa.json").read_text())
    assert saved["steps"] == report["steps"] and saved["decisions"] == report["decisions"]


def test_msa_stops_when_a_source_only_adds_noise(tmp_path):
    sources = make_sources({"template": 100, "caption": 100}, {"template": 0.2, "caption": 1.0}, seed=3)
    scores = {f"measurer_{s}": measurer_scores(sources, 0.02, seed=i, sha=s) for i, s in enumerate(sources)}
    trainer = CachedTrainer(SyntheticTrainer(sources), min_samples=4)
    report = run_msa(
        {s: d["rows"] for s, d in sources.items()},
        trainer,
        SyntheticScorer(scores),
        tmp_path,
        thresholds=[0.0, 0.5, 0.8],
    )
    assert list(report["selected"]) == ["template"]
    assert report["steps"][-1]["decision"].startswith("stop")
    assert np.isclose(report["best"]["val_accuracy"], report["steps"][0]["val_accuracy"])
