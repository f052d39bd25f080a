"""Figures of the curriculum: reliability histogram with a density curve, the n x n SR/CR grid, the P-R curve.

matplotlib is optional (extras ``plot``/``test``): every function returns ``None`` without writing when it is not
installed, so the JSON outputs never depend on it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["density_curve", "plot_curve", "plot_histogram", "plot_histogram_grid"]


def _pyplot():
    """matplotlib.pyplot on the Agg backend, or None when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def density_curve(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Gaussian kernel density estimate on ``grid`` (Scott's bandwidth), evaluated through a fine histogram."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2 or values.std() == 0:
        return np.zeros_like(grid)
    bandwidth = 1.06 * values.std() * values.size ** (-1 / 5)
    counts, edges = np.histogram(values, bins=2000, range=(0.0, 1.0))
    centres = (edges[:-1] + edges[1:]) / 2
    weights = counts / values.size
    diffs = (grid[:, None] - centres[None, :]) / bandwidth
    return (np.exp(-0.5 * diffs**2) @ weights) / (bandwidth * math.sqrt(2 * math.pi))


def _draw_histogram(ax, reliability: np.ndarray, bins: int, title: str) -> None:
    """Counts in ``bins`` bins over (0, 1] and a density curve scaled to counts."""
    positive = np.asarray(reliability, dtype=np.float64)
    positive = positive[positive > 0]
    counts, edges = np.histogram(positive, bins=bins, range=(0.0, 1.0))
    ax.stairs(counts, edges, fill=True, color="tab:blue", alpha=0.7)  # one artist, not one patch per bin
    grid = np.linspace(0.0, 1.0, 500)
    ax.plot(grid, density_curve(positive, grid) * positive.size / bins, color="tab:red", lw=1.2)
    ax.set_xlim(0, 1)
    ax.set_title(title, fontsize=8)
    ax.set_xlabel("reliability (IoU)", fontsize=7)
    ax.tick_params(labelsize=6)


def plot_histogram(reliability: np.ndarray, path: str | Path, *, bins: int = 1000, title: str = "") -> str | None:
    """One reliability histogram (PNG) with its density curve; returns the path, or None without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    _draw_histogram(ax, reliability, bins, title)
    ax.set_ylabel("samples", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def plot_histogram_grid(
    cells: Mapping[tuple[str, str], np.ndarray],
    measurers: Sequence[str],
    sources: Sequence[str],
    path: str | Path,
    *,
    bins: int = 1000,
) -> str | None:
    """The n x n grid H_ij = source j scored by measurer i (row i, column j): SR on the diagonal, CR elsewhere."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(
        len(measurers), len(sources), figsize=(3.2 * len(sources), 2.4 * len(measurers)), squeeze=False
    )
    for i, measurer in enumerate(measurers):
        for j, source in enumerate(sources):
            kind = "SR" if measurer == source else "CR"
            values = cells.get((measurer, source), np.zeros(0))
            _draw_histogram(axes[i][j], values, bins, f"{kind}: M[{measurer}] on {source}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def plot_curve(
    thresholds: Sequence[float],
    accuracies: Sequence[float | None],
    path: str | Path,
    *,
    best: float | None = None,
    title: str = "",
) -> str | None:
    """Validation accuracy against the reliability threshold h (the paper's P-R curve); skipped points omitted."""
    plt = _pyplot()
    if plt is None:
        return None
    points = [(h, a) for h, a in zip(thresholds, accuracies) if a is not None]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    if points:
        xs, ys = zip(*sorted(points))
        ax.plot(xs, ys, marker="o")
    if best is not None:
        ax.axvline(best, color="tab:red", ls="--", lw=1)
    ax.set_xlabel("reliability threshold h")
    ax.set_ylabel("val Acc@0.5")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)
