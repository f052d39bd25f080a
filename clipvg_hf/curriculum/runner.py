"""Training and scoring back-ends of SSA/MSA: the train / score modules as subprocesses, or any injected callable.

A *train function* maps (training row indices, output folder) to a :class:`TrainResult` (the best model folder and
its validation Acc@0.5). :class:`CachedTrainer` wraps one so that a training set is trained at most once (e.g.
SSA's h = 0 is the measurer's own training set), skips sets too small to train, and counts real trainings.
A *score function* maps (measurer folder, output folder) to :class:`ReliabilityScores` of the whole split.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from .reliability import ReliabilityScores, load_scores, save_scores
from .selection import write_row_indices

__all__ = [
    "TRAIN_MODULE",
    "CachedTrainer",
    "ScoreCommand",
    "TrainResult",
    "TrainScriptTrainer",
    "in_process_scorer",
    "min_global_batch",
    "rows_digest",
]

TRAIN_MODULE = "clipvg_hf.train"  # launched with ``-m`` (python, torchrun and accelerate launch all accept it)


@dataclass
class TrainResult:
    """One training: the best model folder (None for synthetic trainers) and its validation numbers."""

    val_accuracy: float
    num_samples: int
    model_dir: str | None = None
    val_miou: float | None = None
    command: list[str] | None = None
    output_dir: str | None = None


TrainFn = Callable[[Sequence[int], Path], TrainResult]
ScoreFn = Callable[[Path, Path], ReliabilityScores]


def rows_digest(rows: Sequence[int]) -> str:
    """Order-free identity of a training set."""
    return hashlib.sha256(json.dumps(sorted(int(r) for r in rows)).encode()).hexdigest()[:16]


class CachedTrainer:
    """Train each distinct row set once; sets smaller than ``min_samples`` are skipped (``None``)."""

    def __init__(self, train: TrainFn, min_samples: int = 1):
        self.train, self.min_samples = train, max(1, min_samples)
        self.cache: dict[str, TrainResult] = {}
        self.trainings = 0

    def __call__(self, rows: Sequence[int], output_dir: str | Path) -> tuple[TrainResult | None, str]:
        """(result, status) with status ``trained``, ``reused`` or ``skipped``."""
        if len(rows) < self.min_samples:
            return None, "skipped"
        key = rows_digest(rows)
        if key in self.cache:
            return self.cache[key], "reused"
        result = self.train(list(rows), Path(output_dir))
        self.cache[key] = result
        self.trainings += 1
        return result, "trained"


def _option(args: Sequence[str], name: str, default: str) -> str:
    """The value of ``--name value`` / ``--name=value`` in an argument list."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return default


def min_global_batch(train_args: Sequence[str], launcher: Sequence[str]) -> int:
    """The smallest training set the training loop accepts: one batch per process (it drops the last partial batch)."""
    batch = int(_option(train_args, "--per_device_batch_size", "64"))
    processes = int(_option(launcher, "--nproc_per_node", _option(launcher, "--num_processes", "1")))
    return batch * processes


class TrainScriptTrainer:
    """Run the training module on a subset of rows (``--train_row_indices``) and read ``best/val_metrics.json``.

    ``launcher`` prefixes the command (default ``python``; e.g. ``torchrun --nproc_per_node 2`` or
    ``accelerate launch``), which runs ``-m clipvg_hf.train`` from the installed package, or ``script`` (a custom
    training script path) when one is given. A folder whose ``done.json`` records the same rows and arguments is not
    trained again, so an interrupted SSA/MSA run resumes where it stopped.
    """

    def __init__(
        self,
        dataset: str | Path,
        config: str,
        train_args: Sequence[str] = (),
        *,
        launcher: Sequence[str] | None = None,
        script: str | Path | None = None,
        timeout: float | None = None,
    ):
        self.dataset, self.config, self.train_args = str(dataset), config, list(train_args)
        self.launcher = list(launcher) if launcher else [sys.executable]
        self.entry = [str(script)] if script else ["-m", TRAIN_MODULE]
        self.timeout = timeout

    def command(self, rows_file: Path, output_dir: Path) -> list[str]:
        return [
            *self.launcher,
            *self.entry,
            "--dataset",
            self.dataset,
            "--dataset_config",
            self.config,
            "--train_row_indices",
            str(rows_file),
            "--output_dir",
            str(output_dir),
            "--overwrite_output_dir",
            *self.train_args,
        ]  # a training interrupted before done.json starts over

    def __call__(self, rows: Sequence[int], output_dir: Path) -> TrainResult:
        output_dir.mkdir(parents=True, exist_ok=True)
        rows_file = write_row_indices(rows, output_dir / "train_rows.json")
        command = self.command(rows_file, output_dir)
        done = output_dir / "done.json"
        if done.is_file():
            previous = json.loads(done.read_text())
            if previous.get("command") == command and previous.get("rows") == rows_digest(rows):
                return TrainResult(**previous["result"])
        with open(output_dir / "train.log", "w") as log:
            run = subprocess.run(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=self.timeout,
                check=False,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        if run.returncode != 0:
            tail = (output_dir / "train.log").read_text()[-3000:]
            raise RuntimeError(f"training in {output_dir} failed (exit {run.returncode}):\n{tail}")
        metrics_file = output_dir / "best" / "val_metrics.json"
        if not metrics_file.is_file():
            raise RuntimeError(f"training in {output_dir} wrote no {metrics_file}")
        metrics = json.loads(metrics_file.read_text())
        result = TrainResult(
            val_accuracy=metrics["accuracy"],
            num_samples=len(rows),
            model_dir=str(output_dir / "best"),
            val_miou=metrics.get("mean_iou"),
            command=command,
            output_dir=str(output_dir),
        )
        done.write_text(json.dumps({"command": command, "rows": rows_digest(rows), "result": asdict(result)}))
        return result


class ScoreCommand:
    """Score with ``python -m clipvg_hf.curriculum.score`` (under ``launcher``), then read the scores back."""

    def __init__(
        self,
        dataset: str | Path,
        config: str,
        split: str,
        *,
        launcher: Sequence[str] | None = None,
        extra_args: Sequence[str] = (),
        timeout: float | None = None,
    ):
        self.dataset, self.config, self.split = str(dataset), config, split
        self.launcher = list(launcher) if launcher else [sys.executable]
        self.extra_args, self.timeout = list(extra_args), timeout

    def __call__(self, model_dir: Path, output_dir: Path) -> ReliabilityScores:
        output_dir.mkdir(parents=True, exist_ok=True)
        command = [
            *self.launcher,
            "-m",
            "clipvg_hf.curriculum.score",
            "--model_name_or_path",
            str(model_dir),
            "--dataset",
            self.dataset,
            "--dataset_config",
            self.config,
            "--split",
            self.split,
            "--output_dir",
            str(output_dir),
            *self.extra_args,
        ]
        run = subprocess.run(command, capture_output=True, text=True, timeout=self.timeout, check=False)
        if run.returncode != 0:
            raise RuntimeError(f"scoring with {model_dir} failed (exit {run.returncode}):\n{run.stderr[-3000:]}")
        return load_scores(output_dir)


def in_process_scorer(
    dataset: str | Path, config: str, split: str, *, cpu: bool = True, batch_size: int = 128, plot: bool = True
) -> ScoreFn:
    """A score function running in this process (one process; handy in notebooks and tests)."""

    def score(model_dir: Path, output_dir: Path) -> ReliabilityScores:
        from accelerate import Accelerator

        from .reliability import score_model

        scores = score_model(
            model_dir, dataset, config, split, accelerator=Accelerator(cpu=cpu), batch_size=batch_size
        )
        save_scores(scores, output_dir, plot=plot)
        return scores

    return score
