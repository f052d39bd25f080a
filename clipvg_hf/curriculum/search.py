"""Search for the reliability threshold h with the best validation accuracy (the P-R curve of SSA/MSA).

Two strategies over an ascending list of candidate thresholds:

- ``grid``: evaluate every candidate (the official 0.1 grid: 0.0, 0.1, ..., 0.9);
- ``bisect``: assume the curve is unimodal and binary-search its peak by comparing neighbours (h_k vs h_k+1),
  needing about 2·log2(n) evaluations instead of n (fewer with reuse). On a curve that is not unimodal it may miss
  the global best; the evaluated points are all logged.

Either way the chosen h is the argmax of the *evaluated* points; ties go to the smaller h (more data). A candidate
that cannot be trained (too few samples) evaluates to ``None`` and never wins.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["OFFICIAL_GRID", "STRATEGIES", "SearchResult", "search_threshold"]

#: The threshold grid: the official subsets (``IoU > t``, plus "1.0" = IoU == 1) and SSA / MSA's default candidates.
OFFICIAL_GRID = tuple(round(0.1 * i, 1) for i in range(10))
STRATEGIES = ("grid", "bisect")


@dataclass
class SearchResult:
    """The evaluated points in evaluation order, and the best one."""

    strategy: str
    evaluated: dict[float, float | None] = field(default_factory=dict)
    order: list[float] = field(default_factory=list)
    best_h: float | None = None
    best_score: float | None = None


def _key(score: float | None) -> float:
    return float("-inf") if score is None else score


def search_threshold(
    evaluate: Callable[[float], float | None], thresholds: Sequence[float], strategy: str = "grid"
) -> SearchResult:
    """Search ``thresholds`` with ``evaluate(h) -> accuracy or None``; each h is evaluated at most once."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown search strategy {strategy!r}; expected one of {STRATEGIES}")
    grid = sorted({float(h) for h in thresholds})
    if not grid:
        raise ValueError("no candidate thresholds")
    result = SearchResult(strategy)

    def f(k: int) -> float:
        h = grid[k]
        if h not in result.evaluated:
            result.evaluated[h] = evaluate(h)
            result.order.append(h)
        return _key(result.evaluated[h])

    if strategy == "grid":
        for k in range(len(grid)):
            f(k)
    else:
        lo, hi = 0, len(grid) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if f(mid) < f(mid + 1):
                lo = mid + 1
            else:
                hi = mid
        f(lo)
    candidates = [h for h in sorted(result.evaluated) if result.evaluated[h] is not None]
    if candidates:
        result.best_h = max(candidates, key=lambda h: (result.evaluated[h], -h))
        result.best_score = result.evaluated[result.best_h]
    return result
