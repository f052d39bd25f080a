"""The side-by-side harness measures what it says (the official code itself is not installed here)."""

import time

import torch

from benchmarks.bench_vs_official import interleaved_pairs, summarise


def test_interleaved_pairs_time_both_sides_and_count_page_faults():
    def slow_and_allocating() -> None:
        time.sleep(0.03)
        torch.ones(16 * 2**20)  # 64 MiB: fresh pages from the system, touched by the fill

    measured = interleaved_pairs(slow_and_allocating, lambda: time.sleep(0.005), repeats=3, gemm_size=64)
    assert [len(measured["times_s"][side]) for side in ("official", "ours")] == [3, 3]
    result = summarise(measured, units=2, flops={"official": 4e6, "ours": 2e6})
    assert result["ratio_min"] > 1 and result["ratio_min"] <= result["ratio_median"] <= result["ratio_max"]
    assert result["official"]["minor_faults_median"] > 0
    assert result["official"]["minor_faults_median"] > result["ours"]["minor_faults_median"]
    assert result["ours"]["per_s"] == 2 / result["ours"]["median_s"]
