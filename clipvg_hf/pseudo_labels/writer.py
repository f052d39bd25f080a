"""From the intermediate detections dataset to pseudo-labels and the project's dataset format.

Labels are generated shard by shard, images in collection order. The random streams (template sampling, caption
sampling) restart with the seed at every shard, as the official generator restarted them at every split file (one
process per file of about 1000 images), so a shard's labels depend on that shard alone.

Output: the converter's parquet layout (one row per image with all its expressions, image bytes stored once per
split, written by :mod:`clipvg_hf.data.convert`'s shard writer), with two configs:

- ``<name>-unsup-single``: split ``train_pseudo`` = the template labels;
- ``<name>-unsup-multi``: split ``train_pseudo`` = template, relation and caption labels (``row_index`` = position
  in their concatenation in that order, as the official merged multi-source file), plus one split per source
  (``train_template``, ``train_relation``, ``train_caption``), like the official ``train_separate/`` files.

Every expression carries its ``source``; the dataset card records the models, every threshold, the seed and the
counts per source.

The whole output (configs, card, ``pseudo_labels.json``, the rejects report) is written into a staged copy of the
folder and swapped in at the end (:func:`clipvg_hf.data.staging.staged_folder`): an error or a killed run leaves the
earlier version as it was. Every image embedded is checked against the fingerprint its detections were made from.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from ..boxes_clipvg import official_box
from ..data.convert import _ImageMeta, _write_shards
from ..data.splits import SplitRow
from ..data.staging import staged_folder, write_text_atomic
from .captions import CaptionMatcher
from .detections import (
    DetectedImage,
    LoadedImage,
    fingerprint_change,
    fingerprint_of,
    image_bytes,
    load_image,
    read_detection_shard,
    read_shard_side,
)
from .relations import GeometricRelations, RelationModel, relation_targets, relation_text
from .templates import TemplateEngine

__all__ = ["SOURCES", "ImageChangedError", "LabelCounts", "Labeler", "config_names", "write_dataset"]

#: Pseudo-label sources, in the official merge order.
SOURCES = ("template", "relation", "caption")
_LABELS = pa.schema(
    [
        ("index", pa.int64()),
        ("file_name", pa.string()),
        ("source", pa.string()),
        ("expression", pa.string()),
        ("box", pa.list_(pa.float64(), 4)),
    ]
)


class ImageChangedError(ValueError):
    """An image's bytes differ from those its detections were made from; nothing was written."""


def config_names(name: str) -> tuple[str, str]:
    """The two configs of a generated dataset."""
    return f"{name}-unsup-single", f"{name}-unsup-multi"


@dataclass
class LabelCounts:
    """Per source: images in, images with no detection, images with at least one label, expressions out."""

    images_in: int = 0
    images_without_detection: int = 0
    images_labelled: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SOURCES, 0))
    expressions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SOURCES, 0))
    captions_unmatched: int = 0
    captions_missing: int = 0

    def add(self, other: LabelCounts) -> None:
        self.images_in += other.images_in
        self.images_without_detection += other.images_without_detection
        self.captions_unmatched += other.captions_unmatched
        self.captions_missing += other.captions_missing
        for source in SOURCES:
            self.images_labelled[source] += other.images_labelled[source]
            self.expressions[source] += other.expressions[source]

    def as_dict(self) -> dict[str, Any]:
        return {
            "images_in": self.images_in,
            "images_without_detection": self.images_without_detection,
            "images_labelled": dict(self.images_labelled),
            "expressions": dict(self.expressions),
            "captions_unmatched": self.captions_unmatched,
            "captions_missing": self.captions_missing,
        }


@dataclass
class Labeler:
    """Template, relation and caption labels of the images of one detection shard."""

    engine: TemplateEngine
    relations: RelationModel | None = None
    captions: CaptionMatcher | None = None
    caption_query: int = 6

    def label_image(
        self, item: DetectedImage, template_rng: random.Random, caption_rng: random.Random
    ) -> dict[str, list[tuple[str, tuple[float, ...]]]]:
        """``source -> [(expression, box)]`` of one image."""
        out: dict[str, list[tuple[str, tuple[float, ...]]]] = {s: [] for s in SOURCES}
        rows = self.engine.sample(self.engine.candidates(item.for_templates()), template_rng)
        out["template"] = [(c.text, c.box) for c in rows]
        if self.relations is not None:
            targets = relation_targets(self.engine, item.detections, item.width, item.height)
            image = None  # decoded only for plugged-in models: the geometric rules need no pixels
            if not isinstance(self.relations, GeometricRelations):
                loaded = load_image(item.record)
                image = loaded.image if isinstance(loaded, LoadedImage) else None
            out["relation"] = [
                (relation_text(r), tuple(r.subject.box))
                for r in self.relations(image, item.width, item.height, targets)
            ]
        if self.captions is not None and item.caption:
            matched = self.captions.matches(item.caption, item.detections, item.width, item.height)
            out["caption"] = [
                (item.caption, d.box) for d in self.captions.sample(matched, caption_rng, self.caption_query)
            ]
        return out

    def label_shard(self, shard: Path, out: Path, seed: int) -> LabelCounts:
        """Label every image of a detection shard into ``out`` (a small parquet file of rows); return the counts."""
        counts = LabelCounts()
        template_rng, caption_rng = random.Random(seed), random.Random(seed)
        rows: list[dict[str, Any]] = []
        for item in read_detection_shard(shard):
            counts.images_in += 1
            counts.images_without_detection += not item.detections
            if self.captions is not None and not item.caption:
                counts.captions_missing += 1
            labels = self.label_image(item, template_rng, caption_rng)
            if self.captions is not None and item.caption and not labels["caption"]:
                counts.captions_unmatched += 1
            for source, found in labels.items():
                counts.images_labelled[source] += bool(found)
                counts.expressions[source] += len(found)
                rows += [
                    {
                        "index": item.record.index,
                        "file_name": item.record.file_name,
                        "source": source,
                        "expression": text,
                        "box": list(box),
                    }
                    for text, box in found
                ]
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=_LABELS), out)
        return counts


def _split_rows(
    labels: Path, source_of_split: dict[str, Sequence[str]], offsets: dict[str, dict[str, int]]
) -> dict[str, dict[int, list[tuple[int, SplitRow]]]]:
    """``split -> image index -> [(row_index, SplitRow)]`` of one shard's labels (``offsets`` are advanced)."""
    by_split: dict[str, dict[int, list[tuple[int, SplitRow]]]] = {split: {} for split in source_of_split}
    for row in pq.read_table(labels).to_pylist():
        box = tuple(row["box"])
        for split, sources in source_of_split.items():
            if row["source"] not in sources:
                continue
            position = offsets[split][row["source"]]
            offsets[split][row["source"]] += 1
            split_row = SplitRow(
                row["file_name"],
                row["expression"],
                box,
                official_box(box, "xyxy"),
                None,
                row["source"],
                row["source"],
                position,
            )
            row_index = position + sum(offsets["_total"][s] for s in sources[: sources.index(row["source"])])
            by_split[split].setdefault(row["index"], []).append((row_index, split_row))
    return by_split


def write_dataset(
    output_dir: Path,
    name: str,
    detection_shards: Sequence[Path],
    labeler: Labeler,
    seed: int,
    manifest: dict[str, Any],
    files: Mapping[str, str] | None = None,
) -> LabelCounts:
    """Label every shard (in order) and write both configs, the dataset card and ``files`` (relative path -> text,
    e.g. the rejects report) as one staged version of ``output_dir``; returns the total counts.

    Raises :class:`ImageChangedError` (``output_dir`` left as it was) when an image is not the one its detections
    were made from.
    """
    with staged_folder(output_dir) as stage:
        counts = _write_dataset(stage, name, detection_shards, labeler, seed, manifest)
        for relative, text in (files or {}).items():
            write_text_atomic(stage / relative, text)
    return counts


def _write_dataset(
    output_dir: Path,
    name: str,
    detection_shards: Sequence[Path],
    labeler: Labeler,
    seed: int,
    manifest: dict[str, Any],
) -> LabelCounts:
    work = output_dir / "labels"
    shutil.rmtree(work, ignore_errors=True)  # a killed earlier run's work files (links into the old version)
    counts = LabelCounts()
    label_files = []
    bar = tqdm(detection_shards, desc="labels", unit="shard", disable=None if len(detection_shards) > 1 else True)
    for shard in bar:
        out = work / shard.with_suffix(".labels.parquet").name
        counts.add(labeler.label_shard(shard, out, seed))
        label_files.append(out)
    single, multi = config_names(name)
    layout = {(single, "train_pseudo"): ("template",), (multi, "train_pseudo"): SOURCES}
    layout.update({(multi, f"train_{s}"): (s,) for s in SOURCES})
    totals = dict(counts.expressions)
    for config in (single, multi):
        splits = {split: sources for (cfg, split), sources in layout.items() if cfg == config}
        offsets = {split: dict.fromkeys(SOURCES, 0) for split in splits} | {"_total": totals}
        written: dict[str, list[Path]] = {split: [] for split in splits}
        staging = output_dir / config / "_staging"
        for shard, labels in zip(detection_shards, label_files):
            by_split = _split_rows(labels, splits, offsets)
            if any(by_split.values()):
                _write_shard_files(shard, by_split, staging, written)
        _finalise(output_dir / config, staging, written)
    shutil.rmtree(work, ignore_errors=True)
    manifest = {**manifest, "name": name, "seed": seed, "configs": [single, multi], "counts": counts.as_dict()}
    write_text_atomic(output_dir / "pseudo_labels.json", json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    write_card(output_dir, manifest)
    return counts


def _write_shard_files(
    shard: Path,
    by_split: dict[str, dict[int, list[tuple[int, SplitRow]]]],
    staging: Path,
    written: dict[str, list[Path]],
) -> None:
    """Write one output file per split for the images of one detection shard, through the converter's writer.

    Each image's bytes are read once, checked against the fingerprint recorded with its detections, and embedded
    from that copy (so the dataset never pairs one image's boxes with another's bytes).
    """
    wanted = {index for rows in by_split.values() for index in rows}
    recorded = read_shard_side(shard).get("images")
    staging.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=staging) as scratch:
        metas: dict[str, _ImageMeta] = {}
        order: list[tuple[int, str]] = []
        for item in read_detection_shard(shard):
            if item.record.index not in wanted:
                continue
            try:
                data = image_bytes(item.record)
            except OSError as err:
                raise ImageChangedError(
                    f"{shard.name}: image {item.record.file_name!r} can no longer be read ({err.strerror or err}); "
                    "run without --labels_only to detect the collection again"
                ) from None
            if recorded is not None:
                change = fingerprint_change(recorded.get(item.record.file_name), fingerprint_of(data))
                if change is not None:
                    raise ImageChangedError(
                        f"{shard.name}: image {item.record.file_name!r} changed since its detections ({change}); "
                        "run without --labels_only to detect it again"
                    )
            path = Path(scratch) / f"{item.record.index:012d}"
            path.write_bytes(data)
            metas[item.record.file_name] = _ImageMeta(path, item.width, item.height)
            order.append((item.record.index, item.record.file_name))
        for split, rows in by_split.items():
            groups = [(file_name, rows[index]) for index, file_name in order if index in rows]
            if not groups:
                continue
            folder = Path(scratch) / split
            _write_shards(groups, metas, folder, split, 1, True)
            target = staging / f"{split}-{len(written[split]):05d}.parquet"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(next(folder.glob(f"{split}-*.parquet"))), target)
            written[split].append(target)


def _finalise(config_dir: Path, staging: Path, written: dict[str, list[Path]]) -> None:
    """Rename staged files to ``<split>-0000i-of-0000n.parquet`` (replacing any earlier output of the config)."""
    for split, files in written.items():
        for stale in config_dir.glob(f"{split}-*.parquet"):
            stale.unlink()
        for i, path in enumerate(files):
            path.rename(config_dir / f"{split}-{i:05d}-of-{len(files):05d}.parquet")
    shutil.rmtree(staging, ignore_errors=True)


def write_card(output_dir: Path, manifest: dict[str, Any]) -> Path:
    """``README.md`` with the configs YAML and what produced the labels (models, thresholds, seed, counts)."""
    yaml = ["---", "configs:"]
    for config in manifest["configs"]:
        splits = sorted(
            {p.name.split("-")[0] for p in (output_dir / config).glob("*-of-*.parquet")},
            key=lambda s: (s != "train_pseudo", s),
        )
        if not splits:
            continue
        yaml += [f"- config_name: {config}", "  data_files:"]
        for split in splits:
            yaml += [f"  - split: {split}", f"    path: {config}/{split}-*.parquet"]
    yaml += ["tags:", "- visual-grounding", "- clip-vg", "- pseudo-labels", "---", ""]
    c = manifest["counts"]
    table = ["| source | images labelled | expressions |", "|---|---:|---:|"]
    table += [f"| {s} | {c['images_labelled'][s]} | {c['expressions'][s]} |" for s in SOURCES]
    models = "\n".join(
        f"- {role}: `{m['model']}` ({m['task']}, {m['model_type']}, revision {m['revision']})"
        for role, m in manifest.get("models", {}).items()
        if m
    )
    body = f"""# Pseudo-language labels for `{manifest["name"]}`

Generated by `clipvg-pseudo-label` (clipvg_hf.pseudo_labels) from unlabelled images, following CLIP-VG's
unsupervised setting: template labels (the official Pseudo-Q template rules), geometric relation labels (in place of
RelTR) and caption labels (a captioner's sentence, its subject matched to a detected box).

Configs: `{manifest["configs"][0]}` (templates, split `train_pseudo`) and `{manifest["configs"][1]}` (all sources in
`train_pseudo`, plus `train_template`, `train_relation`, `train_caption`). The schema is that of the converted
CLIP-VG splits (one row per image with its expressions; `bbox` is `x1, y1, x2, y2` pixels; `source` names the
generator). Train with `train.py --dataset <this folder> --dataset_config {manifest["configs"][0]}`.

## Models
{models or "- (none recorded)"}

## Counts
Images in: {c["images_in"]}; without any detection: {c["images_without_detection"]}; rejected (unreadable):
{manifest.get("rejected", 0)}; captions unmatched to a detection: {c["captions_unmatched"]}; images without a
caption: {c["captions_missing"]}.

{chr(10).join(table)}

## Settings
Seed {manifest["seed"]} (restarted at every shard of {manifest.get("shard_size")} images, as the official generator
restarted it at every split file).

```json
{json.dumps(manifest.get("settings", {}), indent=1, sort_keys=True)}
```
"""
    path = output_dir / "README.md"
    write_text_atomic(path, "\n".join(yaml) + body)
    return path
