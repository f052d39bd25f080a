"""The evaluation-results file: what `clipvg-evaluate` (:mod:`clipvg_hf.evaluation`) writes and the Hub cards and
curricula read.

A results file is JSON::

    {"model": {"path": ..., "weights_sha256": <64 hex>, "config_sha256": <64 hex>},
     "dataset": {"name": <folder or Hub id>, "config": "refcoco-unsup-single"},
     "metric": "Acc@0.5",
     "splits": {"val": {"accuracy": 0.62, "mean_iou": 0.55, "num_samples": 10834, ...}, ...},
     "dtype": "float32",
     "hardware": {"device": "cpu", "cpu": {"cpu": <model name>, "isa": "AVX512", "bf16_units": [...], ...}},
     "num_processes": 1}

The weights fingerprint ties the numbers to the exact weights they were computed for; ``dtype`` (``float32``,
``bfloat16`` or ``int8``, see :mod:`clipvg_hf.precision`) and ``hardware`` say how they were computed (files written before
they were recorded have neither, and were computed in float32).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ResultsError
from .metrics import ACCURACY_IOU_THRESHOLD

__all__ = [
    "METRIC",
    "EvaluationResults",
    "ResultsError",
    "check_results_for_model",
    "load_results",
    "model_fingerprint",
    "weights_sha256",
    "write_results",
]

METRIC = f"Acc@{ACCURACY_IOU_THRESHOLD}"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def no_weights_message(folder: Path) -> str:
    """Why ``folder`` cannot be fingerprinted or published, and what to do about it."""
    others = sorted(p.name for p in folder.glob("*") if p.suffix in (".bin", ".pth", ".pt", ".ckpt"))
    hint = (
        f" (found {others}: load the model and re-save it with save_pretrained, or convert an official checkpoint "
        "with python -m clipvg_hf.convert_checkpoint)"
        if others
        else ""
    )
    return f"{folder} has no model weights: expected model.safetensors or model.safetensors.index.json{hint}"


def weights_sha256(model_dir: str | Path) -> str:
    """sha256 of ``model.safetensors``; for sharded weights, of the sorted ``"<shard> <sha256>"`` lines."""
    folder = Path(model_dir)
    single = folder / "model.safetensors"
    if single.is_file():
        return _file_sha256(single)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        lines = "".join(f"{name} {_file_sha256(folder / name)}\n" for name in shards)
        return hashlib.sha256(lines.encode()).hexdigest()
    raise ResultsError(no_weights_message(folder))


def model_fingerprint(model_dir: str | Path) -> dict[str, str]:
    """sha256 of the weights (single file or shards) and of the canonical config, to match results to a model."""
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    config.pop("transformers_version", None)
    canonical = json.dumps(config, sort_keys=True).encode()
    return {
        "path": str(model_dir),
        "weights_sha256": weights_sha256(model_dir),
        "config_sha256": hashlib.sha256(canonical).hexdigest(),
    }


@dataclass
class EvaluationResults:
    """One evaluation of one model on named splits of one dataset config."""

    model: dict[str, Any]
    dataset: dict[str, str]
    metric: str = METRIC
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)
    num_processes: int | None = None
    dtype: str | None = None  # the model's number format: "float32" / "bfloat16" / "int8"
    hardware: dict[str, Any] | None = None  # device, and the CPU summary on a CPU

    def to_dict(self) -> dict[str, Any]:
        data = {"model": self.model, "dataset": self.dataset, "metric": self.metric, "splits": self.splits}
        if self.dtype is not None:
            data["dtype"] = self.dtype
        if self.hardware is not None:
            data["hardware"] = self.hardware
        if self.num_processes is not None:
            data["num_processes"] = self.num_processes
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str = "results") -> EvaluationResults:
        """Check a parsed results file (model fingerprint, dataset, metric, splits); :class:`ResultsError` if bad."""
        problems = _problems(data)
        if problems:
            raise ResultsError(f"{source} is not a clipvg_hf.evaluate results file: " + "; ".join(problems))
        return cls(
            data["model"],
            data["dataset"],
            data["metric"],
            data["splits"],
            data.get("num_processes"),
            data.get("dtype"),
            data.get("hardware"),
        )

    @classmethod
    def read(cls, path: str | Path) -> EvaluationResults:
        path = Path(path)
        if not path.is_file():
            raise ResultsError(f"results file not found: {path}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ResultsError(f"{path} is not JSON: {error}") from error
        return cls.from_dict(data, str(path))

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def check_weights(self, weights_digest: str, results_name: str = "results") -> None:
        """Raise :class:`ResultsError` if these results were computed for other weights than ``weights_digest``."""
        recorded = self.model["weights_sha256"]
        if recorded != weights_digest:
            raise ResultsError(
                f"{results_name} belongs to another model: it was computed for weights sha256 {recorded[:12]}…, but "
                f"the weights being pushed have sha256 {weights_digest[:12]}…; evaluate this model folder "
                "(python -m clipvg_hf.evaluate --model_name_or_path DIR ...) and pass the new results file"
            )


def _problems(data: Any) -> list[str]:
    """What makes ``data`` not a results file (empty when it is one)."""
    if not isinstance(data, dict):
        return ["the file must hold a JSON object"]
    problems = []
    model = data.get("model")
    if not isinstance(model, dict) or not _SHA256.match(str(model.get("weights_sha256", ""))):
        problems.append("model.weights_sha256 (64 hex digits) is missing")
    dataset = data.get("dataset")
    if not isinstance(dataset, dict) or not dataset.get("name") or not dataset.get("config"):
        problems.append("dataset.name and dataset.config are required")
    if "dtype" in data and data["dtype"] not in ("float32", "bfloat16", "float16", "int8"):
        problems.append(f"dtype must be float32, bfloat16, float16 or int8, got {data['dtype']!r}")
    if data.get("metric") != METRIC:
        problems.append(f"metric must be {METRIC!r}, got {data.get('metric')!r}")
    splits = data.get("splits")
    if not isinstance(splits, dict) or not splits:
        problems.append("splits must map split names to scores")
        return problems
    for name, scores in splits.items():
        accuracy = scores.get("accuracy") if isinstance(scores, dict) else None
        if not isinstance(accuracy, (int, float)) or not 0.0 <= accuracy <= 1.0:
            problems.append(f"splits.{name}.accuracy must be a fraction in [0, 1]")
        if not isinstance(scores, dict) or not isinstance(scores.get("num_samples"), int):
            problems.append(f"splits.{name}.num_samples must be an integer")
    return problems


def load_results(path: str | Path) -> dict[str, Any]:
    """Read and check a results file (see the module docstring); returns it as a dict."""
    return EvaluationResults.read(path).to_dict()


def write_results(results: dict[str, Any] | EvaluationResults, path: str | Path) -> Path:
    """Write a results dict / :class:`EvaluationResults` as indented JSON (parent folders created)."""
    if isinstance(results, dict):
        results = EvaluationResults(
            results["model"],
            results["dataset"],
            results["metric"],
            results["splits"],
            results.get("num_processes"),
            results.get("dtype"),
            results.get("hardware"),
        )
    return results.write(path)


def check_results_for_model(results: dict[str, Any], weights_digest: str, results_name: str = "results") -> None:
    """Raise :class:`ResultsError` if ``results`` (a dict) were computed for other weights than ``weights_digest``."""
    EvaluationResults(results["model"], results["dataset"]).check_weights(weights_digest, results_name)
