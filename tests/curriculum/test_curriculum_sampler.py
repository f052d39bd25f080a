"""CurriculumSampler: deterministic in (seed, epoch), constant length, pools by schedule; under 2 processes it and
ImageGroupedSampler give each rank disjoint batches of one global order."""

import json
import subprocess
from pathlib import Path

import pytest

from clipvg_hf.curriculum import CurriculumSampler, easy_to_hard_pool, threshold_pool

from conftest import torchrun

SCRIPT = Path(__file__).with_name("_curriculum_sampler_ddp.py")


def test_same_order_for_the_same_seed_and_epoch_and_fresh_order_per_epoch():
    pool = list(range(10, 30))
    a, b = CurriculumSampler(lambda e: pool, 12, seed=3), CurriculumSampler(lambda e: pool, 12, seed=3)
    a.set_epoch(4)
    b.set_epoch(4)
    assert list(a) == list(b) and len(a) == 12 and len(set(a)) == 12 and set(a) <= set(pool)
    b.set_epoch(5)
    assert list(a) != list(b)
    assert list(CurriculumSampler(lambda e: pool, 12, seed=4).indices(4)) != a.indices(4)


def test_small_pool_is_repeated_evenly_and_length_stays_constant():
    sampler = CurriculumSampler(lambda e: [1, 2, 3], 8)
    order = list(sampler)
    assert len(order) == 8 and {order.count(i) for i in (1, 2, 3)} <= {2, 3}
    with pytest.raises(ValueError, match="empty"):
        list(CurriculumSampler(lambda e: [], 4))
    with pytest.raises(ValueError, match="positive"):
        CurriculumSampler(lambda e: [1], 0)


def test_pools_threshold_and_easy_to_hard_growth():
    reliability = [0.9, 0.1, 0.5, 0.7, 0.3, 0.0]
    assert threshold_pool(reliability, 0.5)(0) == [0, 2, 3]
    with pytest.raises(ValueError, match="reliability >= 0.95"):
        threshold_pool(reliability, 0.95)
    pool = easy_to_hard_pool(reliability, start_fraction=0.5, full_at_epoch=2)
    assert pool(0) == [0, 2, 3]  # the three most reliable
    assert len(pool(1)) in (4, 5) and set(pool(0)) <= set(pool(1))
    assert pool(2) == pool(9) == list(range(6))


@pytest.mark.parametrize("kind, per_epoch", [("curriculum", 16), ("grouped", 40)])
def test_two_processes_disjoint_ranks_union_is_the_epoch_selection_and_resume(tmp_path, kind, per_epoch):
    """The same global order on both ranks, split into disjoint batches; also for ImageGroupedSampler."""
    run = subprocess.run(
        [
            *torchrun(2),
            str(SCRIPT),
            str(tmp_path),
            kind,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    for epoch in ("0", "1", "2"):
        e0, e1 = r0["epochs"][epoch], r1["epochs"][epoch]
        assert e0["order"] == e1["order"]  # same global order on both ranks
        assert e0["len"] == e1["len"] == per_epoch // (2 * 2)  # constant len(dl)
        assert not set(e0["seen"]) & set(e1["seen"])  # disjoint
        assert sorted(e0["seen"] + e1["seen"]) == sorted(e0["order"])  # union = the epoch's selection
        assert set(e0["order"]) <= set(e0["pool"])
    if kind == "curriculum":
        assert len(r0["epochs"]["0"]["pool"]) < len(r0["epochs"]["2"]["pool"]) == 40  # easy to hard
    else:
        assert r0["epochs"]["0"]["order"] != r0["epochs"]["1"]["order"]  # a fresh grouping every epoch
    for rank in (r0, r1):  # resuming epoch 2 after 2 batches yields the tail of that epoch
        assert rank["resumed"] == rank["epochs"]["2"]["seen"][2 * 2 :]
