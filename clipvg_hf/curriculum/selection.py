"""Materialise a selection of pseudo-labels as a dataset config that ``datasets.load_dataset`` and ``train.py`` load.

The selected config keeps the converted layout (one row per image, its kept ``expressions``) and adds two fields to
every expression: ``reliability`` (its score) and ``measurer`` (sha256 of the measurer's weights). The other
splits of the source config (``val``, ``testA``, ...) are copied unchanged, so the config trains and validates on
its own. The folder's ``README.md`` gets a ``configs:`` entry (other entries are kept).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

from ..data import load_split
from ..data.card import register_config

__all__ = ["read_row_indices", "selected_config_name", "write_row_indices", "write_selection_config"]


def selected_config_name(config: str, method: str) -> str:
    """``refcoco-unsup-single`` + ssa -> ``refcoco-unsup-single-ssa`` (the convert settings' names)."""
    return config if config.endswith(f"-{method}") else f"{config}-{method}"


def write_row_indices(rows: Sequence[int], path: str | Path) -> Path:
    """A JSON list of row indices (what ``train.py --train_row_indices`` reads)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(sorted(int(r) for r in rows)) + "\n")
    return path


def read_row_indices(path: str | Path) -> list[int]:
    """Row indices from a JSON list (or ``{"row_indices": [...]}``) or a text file with one integer per line."""
    path = Path(path)
    text = path.read_text()
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = [line.strip() for line in text.splitlines() if line.strip()]
    if isinstance(value, dict):
        value = value.get("row_indices")
    if not isinstance(value, list):
        raise ValueError(f"{path}: expected a JSON list of row indices (or one integer per line)")  # noqa: TRY004
    try:
        rows = [int(v) for v in value]
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: row indices must be integers ({err})") from err
    if len(set(rows)) != len(rows):
        raise ValueError(f"{path}: duplicate row indices")
    return rows


def _with_reliability(features: datasets.Features) -> datasets.Features:
    """The split's features with ``reliability`` and ``measurer`` added to each expression."""
    expression = dict(features["expressions"].feature)
    expression.update(reliability=datasets.Value("float32"), measurer=datasets.Value("string"))
    return datasets.Features({**features, "expressions": datasets.List(expression)})


def _write_table(table: pa.Table, features: datasets.Features, folder: Path, split: str) -> Path:
    """One parquet shard with the features in its schema metadata (``datasets`` restores them)."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(f"{split}-*.parquet"):
        stale.unlink()
    path = folder / f"{split}-00000-of-00001.parquet"
    pq.write_table(table.cast(features.arrow_schema), path)
    return path


def write_selection_config(
    dataset: str | Path,
    config: str,
    split: str,
    selection: Mapping[int, tuple[float, str]],
    output_dir: str | Path,
    output_config: str,
    *,
    copy_other_splits: bool = True,
) -> Path:
    """Write ``<output_dir>/<output_config>/`` with the selected expressions of ``split`` (row_index -> (reliability,
    measurer sha256)); images without a selected expression are dropped. Returns the config folder.
    """
    source = load_split(dataset, config, split)
    table = source.with_format("arrow")[:]
    kept_images, kept_expressions = [], []
    found = set()
    for image_row, expressions in enumerate(table.column("expressions").to_pylist()):
        chosen = []
        for expression in expressions:
            row = int(expression["row_index"])
            if row in selection:
                reliability, measurer = selection[row]
                chosen.append({**expression, "reliability": float(reliability), "measurer": str(measurer)})
                found.add(row)
        if chosen:
            kept_images.append(image_row)
            kept_expressions.append(chosen)
    missing = sorted(set(selection) - found)
    if missing:
        raise ValueError(f"{dataset}/{config}/{split}: selected rows not in the split, e.g. {missing[:5]}")
    features = _with_reliability(source.features)
    expression_type = features.arrow_schema.field("expressions").type
    selected = table.take(kept_images)
    selected = selected.set_column(
        selected.schema.get_field_index("expressions"), "expressions", pa.array(kept_expressions, type=expression_type)
    )
    folder = Path(output_dir) / output_config
    _write_table(selected, features, folder, split)
    splits = [split]
    if copy_other_splits:
        for other in datasets.get_dataset_split_names(str(dataset), config):
            if other != split:
                part = load_split(dataset, config, other)
                _write_table(part.with_format("arrow")[:], part.features, folder, other)
                splits.append(other)
    register_config(output_dir, output_config, splits)
    return folder
