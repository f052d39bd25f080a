"""Synthetic pseudo-label sources with known corruption, and cheap deterministic trainers/scorers for SSA/MSA tests.

A sample has a clean box; its pseudo box is the clean box jittered (clean label) or another object's box (corrupt).
A measurer "predicts the clean box with noise" (its noise level says how good it is); reliability is the official
IoU between that prediction and the pseudo box. The trainer's "validation accuracy" is a fixed real function of the
training set: 0.5 x recall of the clean samples + 0.5 x precision (no training, but a deterministic, meaningful
objective with an interior optimum).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from clipvg_hf.boxes_clipvg import grounding_iou
from clipvg_hf.curriculum import ReliabilityScores, TrainResult


def make_sources(sizes: dict[str, int], corruption: dict[str, float], seed: int = 0) -> dict[str, dict]:
    """Per source: row indices, clean (cx, cy, w, h) boxes, pseudo boxes and the corrupted mask; rows are global."""
    rng = np.random.default_rng(seed)
    out, start = {}, 0
    for source, n in sizes.items():
        centre = rng.uniform(0.3, 0.7, (n, 2))
        size = rng.uniform(0.15, 0.35, (n, 2))
        clean = np.concatenate([centre, size], axis=1)
        corrupt = rng.random(n) < corruption[source]
        pseudo = clean + rng.normal(0, 0.01, clean.shape)
        other = np.concatenate([rng.uniform(0.2, 0.8, (n, 2)), rng.uniform(0.1, 0.3, (n, 2))], axis=1)
        pseudo[corrupt] = other[corrupt]
        out[source] = {"rows": list(range(start, start + n)), "clean": clean, "pseudo": pseudo, "corrupt": corrupt}
        start += n
    return out


def measurer_scores(sources: dict[str, dict], noise: float, seed: int, sha: str) -> ReliabilityScores:
    """A measurer predicting the clean boxes with Gaussian ``noise``: reliabilities of every source's samples."""
    rng = np.random.default_rng(seed)
    rows, rel, src, preds, targets = [], [], [], [], []
    for source, data in sources.items():
        pred = data["clean"] + rng.normal(0, noise, data["clean"].shape)
        pred[:, 2:] = np.abs(pred[:, 2:])
        iou = grounding_iou(torch.tensor(pred, dtype=torch.float32), torch.tensor(data["pseudo"], dtype=torch.float32))
        rows += data["rows"]
        rel += iou.tolist()
        src += [source] * len(data["rows"])
        preds.append(pred)
        targets.append(data["pseudo"])
    return ReliabilityScores(
        np.array(rows, dtype=np.int64),
        np.array(rel, dtype=np.float32),
        np.array(src, dtype=object),
        np.concatenate(preds).astype(np.float32),
        np.concatenate(targets).astype(np.float32),
        {"weights_sha256": sha},
    )


class SyntheticTrainer:
    """Val accuracy = 0.5 recall + 0.5 precision of the clean samples; the 'model' is the row set's name."""

    def __init__(self, sources: dict[str, dict]):
        self.clean = {r for d in sources.values() for r, bad in zip(d["rows"], d["corrupt"]) if not bad}
        self.calls: list[list[int]] = []

    def __call__(self, rows, output_dir: Path) -> TrainResult:
        self.calls.append(list(rows))
        good = len(self.clean.intersection(rows))
        accuracy = 0.5 * good / len(self.clean) + 0.5 * good / len(rows)
        return TrainResult(val_accuracy=round(accuracy, 6), num_samples=len(rows), model_dir=str(output_dir))


class SyntheticScorer:
    """Measurer folder name -> its precomputed scores (the folder names are the measurers' run folders)."""

    def __init__(self, by_measurer: dict[str, ReliabilityScores]):
        self.by_measurer = by_measurer
        self.calls: list[str] = []

    def __call__(self, model_dir: Path, output_dir: Path) -> ReliabilityScores:
        name = Path(model_dir).name
        self.calls.append(name)
        return self.by_measurer[name]
