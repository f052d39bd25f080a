"""Smoke run of benchmarks/bench_unsupervised.py: ``--quick`` end to end, with real (tiny) trainings.

Pseudo-labels from the noisy oracle detector, SSA and MSA over them, and the four trainings of one seed; the models
learn nothing in 24 steps, so only the report's shape is checked. No timing or accuracy asserts.
"""

import json

import pytest

from benchmarks import bench_unsupervised

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("restore_thread_settings")]


def test_quick_run_reports_every_method_with_its_choice_and_label_counts(tmp_path):
    output = tmp_path / "bench" / "result.json"
    summary = bench_unsupervised.main(["--quick", "--output", str(output)])
    assert json.loads(output.read_text()) == json.loads(json.dumps(summary))
    (seed,) = summary["seeds"]
    assert seed["seed"] == 13 and summary["data_seed"] == 13
    methods = seed["methods"]
    assert set(methods) == {"all pseudo-labels", "SSA", "MSA", "true expressions"}
    for name, m in methods.items():
        assert 0.0 <= m["test"] <= 1.0 and 0.0 <= m["val"] <= 1.0, name
        assert m["trainings"] >= 1 and m["num_rows"] > 0, name
        assert summary["methods"][name]["test"] == {"13": m["test"]}
    thresholds = summary["args"]["thresholds"]
    assert methods["SSA"]["h"] in thresholds
    assert methods["SSA"]["num_rows"] <= methods["all pseudo-labels"]["num_rows"]
    assert methods["MSA"]["selected"] and set(methods["MSA"]["selected"]) <= {"template", "relation"}
    for choice in methods["MSA"]["selected"].values():
        assert choice["h"] in summary["args"]["msa_thresholds"]
        assert choice["measurer"] in {"template", "relation"}
    counts = summary["label_counts"]["expressions"]
    assert counts["template"] > 0 and counts["relation"] > 0
    for source, v in summary["sources"].items():
        assert v["rows"] == counts[source] and 0.0 < v["precision"] <= 1.0
    assert summary["label_precision"]["no_noise"] == {"template": 1.0, "relation": 1.0}
    wins = summary["msa_beats_all_pseudo_labels"]
    assert wins["of"] == 1 and wins["seeds"] in (0, 1)
    assert summary["hardware"]["cpu"] and summary["wall_seconds"] > 0
    assert (tmp_path / "bench" / "work" / "seed13" / "msa" / "msa.json").is_file()
