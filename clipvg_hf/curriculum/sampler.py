"""A curriculum sampler that is correct under accelerate/DDP (``hf_ecosystem.md`` §4).

Every rank yields the *same* global order (accelerate's ``BatchSamplerShard`` splits it into disjoint per-rank
batches; never pre-shard by rank), deterministic in (seed, epoch) without the global RNG, with a constant length
so ``len(dataloader)``, the LR schedule and resumption with ``skip_first_batches`` stay stable. Call
``prepared_loader.set_epoch(epoch)`` every epoch (also when resuming): accelerate forwards it to the sampler; a
``set_epoch`` on the raw sampler is overwritten by the prepared loader.

The pool of an epoch comes from a callable; two schedules are provided:

- :func:`threshold_pool`: the samples with reliability >= h (SSA's selection, every epoch);
- :func:`easy_to_hard_pool`: within-run self-paced learning: the pool starts with the ``start_fraction`` most
  reliable samples and grows linearly to ``end_fraction`` at ``full_at_epoch``.

:func:`sampler_from_scores` builds either from a ``scores.parquet`` of ``clipvg-curriculum score`` for the rows of a
training set (what ``train.py --curriculum_scores`` uses).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

from .reliability import expression_sources, load_scores

__all__ = [
    "POOLS",
    "CurriculumSampler",
    "check_scores_of_split",
    "easy_to_hard_pool",
    "reliability_of_rows",
    "sampler_from_scores",
    "threshold_pool",
]

POOLS = ("threshold", "easy_to_hard")

PoolFn = Callable[[int], Sequence[int]]


class CurriculumSampler(Sampler[int]):
    """``num_samples`` dataset positions per epoch drawn from ``pool_for_epoch(epoch)``.

    A pool at least ``num_samples`` large gives a random subset without repetition; a smaller pool is repeated in
    fresh permutations (each member drawn as evenly as possible). The same (seed, epoch) gives the same order.
    """

    def __init__(self, pool_for_epoch: PoolFn, num_samples: int, seed: int = 0):
        if num_samples <= 0:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        self.pool_for_epoch, self.num_samples, self.seed = pool_for_epoch, int(num_samples), int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def indices(self, epoch: int | None = None) -> list[int]:
        """The global order of an epoch (what every rank iterates)."""
        epoch = self.epoch if epoch is None else epoch
        pool = [int(i) for i in self.pool_for_epoch(epoch)]
        if not pool:
            raise ValueError(f"the curriculum pool of epoch {epoch} is empty")
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order: list[int] = []
        while len(order) < self.num_samples:
            order += [pool[i] for i in torch.randperm(len(pool), generator=generator).tolist()]
        return order[: self.num_samples]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())


def threshold_pool(reliability: Sequence[float], h: float) -> PoolFn:
    """Every epoch: the positions with reliability >= h."""
    pool = np.flatnonzero(np.asarray(reliability, dtype=np.float64) >= h).tolist()
    if not pool:
        raise ValueError(f"no sample has reliability >= {h}")
    return lambda epoch: pool


def easy_to_hard_pool(
    reliability: Sequence[float], *, start_fraction: float = 0.5, end_fraction: float = 1.0, full_at_epoch: int = 10
) -> PoolFn:
    """The most reliable ``start_fraction`` of the samples at epoch 0, growing linearly to ``end_fraction`` at
    ``full_at_epoch`` (then constant). Ties in reliability keep position order.
    """
    if not 0 < start_fraction <= end_fraction <= 1:
        raise ValueError(f"need 0 < start_fraction <= end_fraction <= 1, got {start_fraction}, {end_fraction}")
    ranked = np.argsort(-np.asarray(reliability, dtype=np.float64), kind="stable").tolist()

    def pool(epoch: int) -> list[int]:
        progress = min(1.0, epoch / full_at_epoch) if full_at_epoch > 0 else 1.0
        fraction = start_fraction + (end_fraction - start_fraction) * progress
        return sorted(ranked[: max(1, round(fraction * len(ranked)))])

    return pool


def reliability_of_rows(scores_path: str | Path, row_index: Sequence[int]) -> np.ndarray:
    """The reliability of each of ``row_index`` (training-set order) read from a scores file; every row must be
    scored (a row the measurer never saw is an error, never a silent zero)."""
    scores = load_scores(scores_path).as_dict()
    missing = [int(r) for r in row_index if int(r) not in scores]
    if missing:
        raise ValueError(
            f"{scores_path}: {len(missing)} training rows have no reliability score, e.g. "
            f"row_index {missing[:5]} (score the same split and sources)"
        )
    return np.array([scores[int(r)] for r in row_index], dtype=np.float64)


def _same_dataset(recorded: str, given: str) -> bool:
    """The same dataset name, or two spellings of the same local folder."""
    if recorded == given:
        return True
    first, second = Path(recorded).expanduser(), Path(given).expanduser()
    return first.is_dir() and second.is_dir() and first.resolve() == second.resolve()


def check_scores_of_split(scores_path: str | Path, dataset: str, config: str, split_name: str, split: Any) -> None:
    """Refuse a scores file of another dataset, config, split or version of the split (rows are matched by
    ``row_index``, which every converted split numbers from 0: scores of another dataset would silently apply).

    The file's recorded dataset (``clipvg-curriculum score`` writes name, config, split and sources) must be
    ``dataset`` / ``config`` / ``split_name``, and its rows exactly the expressions of ``split`` (of the scored
    sources). ``ValueError`` says what differs.
    """
    scores = load_scores(scores_path)
    recorded = scores.dataset or {}
    if not all(recorded.get(key) for key in ("name", "config", "split")):
        raise ValueError(
            "the file records no dataset, config and split (it was not written by clipvg-curriculum score); "
            "score the training split again"
        )
    if not _same_dataset(str(recorded["name"]), str(dataset)):
        raise ValueError(f"scores of dataset {recorded['name']}, but training reads --dataset {dataset}")
    for key, given in (("config", config), ("split", split_name)):
        if recorded[key] != given:
            raise ValueError(f"scores of {key} {recorded[key]!r}, but training reads {key} {given!r}")
    sources = recorded.get("sources")
    expected = {row for row, source in expression_sources(split).items() if not sources or source in sources}
    scored = {int(row) for row in scores.row_index}
    if len(scores.row_index) != len(expected) or scored != expected:
        of = f" of sources {sources}" if sources else ""
        raise ValueError(
            f"{len(scores.row_index)} rows scored, but split {split_name!r} of {config} has {len(expected)} "
            f"expressions{of} ({len(scored - expected)} scored rows are not in it): scores of another version of "
            "the dataset; score it again"
        )


def sampler_from_scores(
    scores_path: str | Path,
    row_index: Sequence[int],
    *,
    pool: str = "threshold",
    threshold: float = 0.0,
    start_fraction: float = 0.5,
    end_fraction: float = 1.0,
    full_at_epoch: int = 10,
    num_samples: int | None = None,
    seed: int = 0,
) -> CurriculumSampler:
    """A :class:`CurriculumSampler` over the positions of a training set whose rows are ``row_index``.

    ``pool="threshold"``: every epoch the rows with reliability >= ``threshold`` (SSA's selection);
    ``pool="easy_to_hard"``: the pool of :func:`easy_to_hard_pool`. ``num_samples`` (per epoch, constant) defaults
    to the size of the largest pool, so an epoch of the full pool visits each of its rows once.
    """
    reliability = reliability_of_rows(scores_path, row_index)
    if pool == "threshold":
        pool_for_epoch = threshold_pool(reliability, threshold)
        largest = len(pool_for_epoch(0))
    elif pool == "easy_to_hard":
        pool_for_epoch = easy_to_hard_pool(
            reliability, start_fraction=start_fraction, end_fraction=end_fraction, full_at_epoch=full_at_epoch
        )
        largest = len(pool_for_epoch(max(full_at_epoch, 0)))
    else:
        raise ValueError(f"unknown curriculum pool {pool!r}; expected one of {POOLS}")
    return CurriculumSampler(pool_for_epoch, num_samples or largest, seed=seed)
