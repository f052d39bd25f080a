"""Smoke run of benchmarks/bench_curriculum.py: the simulated sources and the oracle measurer's selection.

The full benchmark trains many models (minutes each); here only ``--quick --oracle_only`` runs: data, conversion,
known corruption and the kept sets of a measurer that predicts the clean boxes with noise. No timing asserts.
"""

import json

import pytest

from benchmarks import bench_curriculum

pytestmark = pytest.mark.usefixtures("restore_thread_settings")


def test_selection_with_a_noisy_clean_box_measurer_removes_most_corrupted_labels(tmp_path):
    out = tmp_path / "bench"
    summary = bench_curriculum.main(["--quick", "--oracle_only", "--output_dir", str(out)])
    sources = summary["sources"]
    assert set(sources) == {"template", "relation"}
    rate = {s: v["corrupted"] / v["rows"] for s, v in sources.items()}
    assert 0 < rate["template"] < rate["relation"]  # the relation source is the noisier one
    (oracle,) = summary["oracle_precision_recall"].values()
    for source in ("template", "relation", "all"):
        at = {p["h"]: p for p in oracle[source]}
        assert at[0.0]["kept"] == at[0.0]["rows"] and at[0.0]["clean_recall"] == 1.0
        point = at[0.5]
        assert point["corrupted_removed"] >= 0.8  # most corrupted labels are dropped ...
        assert point["clean_recall"] >= 0.5  # ... while most clean ones stay
        assert point["kept_corruption"] <= point["source_corruption"] / 2
    assert json.loads((out / "bench_curriculum.json").read_text())["sources"] == sources
    assert "oracle" in (out / "report.md").read_text()
