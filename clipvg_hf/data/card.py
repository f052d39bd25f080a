"""The dataset card of a converted folder: its ``configs:`` block and the documentation of the schema.

:func:`write_configs` is the one writer of a folder's ``configs:`` metadata (on ``huggingface_hub.DatasetCard``):
the converter (:func:`write_dataset_card`) and the curriculum selections (:func:`register_config`) both go
through it, so other metadata and the card body survive each other's updates.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from huggingface_hub import DatasetCard, DatasetCardData

from .registry import EVAL_SPLITS
from .staging import write_text_atomic

__all__ = ["config_entry", "register_config", "write_configs", "write_dataset_card"]

_SHARD_RE = re.compile(r"^(?P<split>\w+)-\d{5}-of-\d{5}\.parquet$")
_CARD_METADATA = {"task_categories": ["zero-shot-object-detection"], "tags": ["visual-grounding", "clip-vg"]}
_SELECTIONS_BODY = "\n# Curriculum selections\n\nWritten by `clipvg_hf.curriculum` (SSA / MSA selections).\n"


def config_entry(config: str, splits: Sequence[str]) -> dict[str, Any]:
    """One ``configs:`` entry: each split's parquet shards under ``<config>/``."""
    return {"config_name": config, "data_files": [{"split": s, "path": f"{config}/{s}-*.parquet"} for s in splits]}


def write_configs(
    output_dir: str | Path,
    entries: Sequence[Mapping[str, Any]],
    *,
    replace_all: bool = False,
    metadata: Mapping[str, Any] | None = None,
    body: str | None = None,
) -> Path:
    """Add or replace ``entries`` in ``<output_dir>/README.md`` (all configs with ``replace_all``).

    Other configs, other metadata and the card body are kept unless ``metadata`` / ``body`` are given.
    """
    path = Path(output_dir) / "README.md"
    old = DatasetCard.load(path) if path.is_file() else None
    data = old.data.to_dict() if old is not None else {}
    names = {entry["config_name"] for entry in entries}
    kept = [] if replace_all else [c for c in data.get("configs") or [] if c.get("config_name") not in names]
    data.update(metadata or {})
    data["configs"] = [*kept, *(dict(entry) for entry in entries)]
    text = body if body is not None else (old.text if old is not None else _SELECTIONS_BODY)
    card = DatasetCard(f"---\n{DatasetCardData(**data).to_yaml()}\n---\n{text}")
    write_text_atomic(path, str(card))  # replaced, never rewritten in place (see .staging)
    return path


def register_config(output_dir: str | Path, config: str, splits: Sequence[str]) -> Path:
    """Add (or replace) ``config`` in the ``configs:`` of ``<output_dir>/README.md``, keeping the rest."""
    return write_configs(output_dir, [config_entry(config, splits)])


def _configs_on_disk(output_dir: Path) -> dict[str, list[str]]:
    """Config folder -> split names, read from the parquet file names present."""
    configs: dict[str, list[str]] = {}
    for folder in sorted(p for p in output_dir.iterdir() if p.is_dir() and p.name != "rejects"):
        splits = sorted({m.group("split") for f in folder.glob("*.parquet") if (m := _SHARD_RE.match(f.name))})
        if splits:
            order = {s: i for i, s in enumerate(("train", "train_pseudo", *EVAL_SPLITS))}
            configs[folder.name] = sorted(splits, key=lambda s: order.get(s, 99))
    return configs


def write_dataset_card(output_dir: str | Path) -> Path:
    """(Re)write ``README.md`` with the ``configs:`` of every config folder present and the documentation."""
    out = Path(output_dir)
    configs = _configs_on_disk(out)
    log_path = out / "conversion.json"
    log = json.loads(log_path.read_text()) if log_path.is_file() else {}
    table = ["| config | split | expressions | images |", "|---|---|---:|---:|"]
    for config, splits in configs.items():
        files = log.get(config, {}).get("files", [])
        for split in splits:
            expressions = sum(f["rows_out"] for f in files if f["split"] == split)
            images = sum(pq.ParquetFile(f).metadata.num_rows for f in (out / config).glob(f"{split}-*.parquet"))
            table.append(f"| {config} | {split} | {expressions} | {images} |")
    return write_configs(
        out,
        [config_entry(c, s) for c, s in configs.items()],
        replace_all=True,
        metadata=_CARD_METADATA,
        body=_CARD_BODY.format(table="\n".join(table)) + "\n",
    )


_CARD_BODY = """# CLIP-VG visual grounding splits

The official CLIP-VG / TransVG label packs (RefCOCO, RefCOCO+, RefCOCOg, ReferItGame, Flickr30k Entities) converted
to parquet by `clipvg_hf` (`clipvg-convert-splits`). Load a config with
`datasets.load_dataset(<this folder or repo>, "<config>")`; add `streaming=True` to stream the shards.

## Configs and splits

Config names are `<dataset>-<setting>`. Datasets (official key in brackets): `refcoco` (unc), `refcocoplus` (unc+),
`refcocog-google` (gref), `refcocog-umd` (gref_umd), `referit` (referit), `flickr30k` (flickr). Settings:

| setting | training split | labels |
|---|---|---|
| `full` | `train` | fully supervised (human annotations, TransVG's files) |
| `full-ssa` | `train` | fully supervised, SSA-filtered train set (released for RefCOCOg-umd) |
| `unsup-single` | `train_pseudo` | unsupervised, single-source pseudo-template labels |
| `unsup-single-ssa` | `train_pseudo` | the same after single-source self-paced curriculum selection (SSA) |
| `unsup-multi` | `train_pseudo` | unsupervised, template + relation + caption pseudo-labels (`train_separate/` concatenated in order) |
| `unsup-multi-msa` | `train_pseudo` | the same after multi-source selection (MSA) |

Evaluation splits keep the official names: `val`, `testA`, `testB` (RefCOCO/RefCOCO+), `test`. They hold
ground-truth labels in every setting, as in the official code.

{table}

## Schema

One row per **image** of a split (so an image's bytes are stored once per split), with all its expressions:

- `image`: the original file bytes (or, if converted with `--image_mode path`, an absolute path).
- `file_name`, `width`, `height`: the image file name in the official image folder and its size in pixels, as
  PIL reads it **without** EXIF rotation (the official loader never rotates). `datasets`' own `Image` decoding
  applies EXIF rotation; `clipvg_hf.data.GroundingDataset` decodes the raw bytes like the official loader.
- `expressions`: list of
  - `row_index`: position of the row in the official split file (for `unsup-multi*`, in the merged
    `<dataset>_train_pseudo.pth`, i.e. the concatenation of `train_separate/` files 1, 2, 3);
  - `expression`: the text exactly as in the file (the training pipeline lower-cases it);
  - `bbox`: `(x1, y1, x2, y2)` in absolute pixels, the file's numbers converted exactly (RefCOCO-family files store
    `(x, y, w, h)`, so `x2 = x + w`; ReferIt and Flickr files already store corners);
  - `bbox_official`: the integer box the official loader trains and evaluates on: every stored number is truncated
    toward zero first, so for RefCOCO-family `x2 = int(x) + int(w)` (not `int(x + w)`). Use it for parity with
    the paper's numbers;
  - `source`: `human` (annotations), `template`, `relation`, `caption` (pseudo-label generators), or `pseudo`
    (pseudo-labels of unknown generator: a merged multi-source file converted without `train_separate/`);
  - `source_file`, `source_row`: the `.pth` file and 0-based row the expression was read from;
  - `ann_file`: the annotation-file field of supervised RefCOCO/ReferIt rows (null for pseudo-labels and Flickr).

`GroundingDataset` (in `clipvg_hf.data`) turns a split into the flat per-expression view, in `row_index` order.

## Conversion

Rows in and out per file are in `conversion.json`. Rows that could not be used (a missing or unreadable image,
a malformed tuple, a box outside the image or without area after truncation, an empty expression) stop the
conversion with an error naming file, row and reason, unless `--rejects` was given, in which case they are listed in
`rejects/<config>.jsonl`. The 5th field of RefCOCO/ReferIt rows (relation parses, or a placeholder) is not kept.
"""
