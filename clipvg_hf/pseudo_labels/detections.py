"""Detections from any transformers detector pipeline, and the intermediate detections dataset.

Two detector kinds, both through their transformers pipeline:

- ``object-detection`` (DETR, Deformable / Conditional DETR, RT-DETR, YOLOS, ...): the model's own classes;
- ``zero-shot-object-detection`` (OWLv2, Grounding DINO, ...) with a class vocabulary (the packaged COCO or Visual
  Genome lists, or a file). The transformers pipeline runs one forward pass per vocabulary entry and image; for
  OWL-ViT / OWLv2 the whole vocabulary shares one pass (see :class:`Detector`).

Every image's detections (label, pixel box ``x1, y1, x2, y2``, score, and later its attribute) and caption are written
to ``detections/shard-NNNNN.parquet`` (one row per image), so labels can be regenerated without detecting again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import PIL.Image
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ..data import open_raw_image
from .templates import Detection, ImageDetections

__all__ = [
    "GROUPED_QUERY_MODELS",
    "IMAGE_EXTENSIONS",
    "DetectedImage",
    "Detector",
    "ImageRecord",
    "LoadedImage",
    "Reject",
    "dataset_images",
    "detections_schema",
    "folder_images",
    "missing_image_files",
    "image_bytes",
    "image_fingerprint",
    "load_image",
    "read_detection_shard",
    "read_shard_side",
    "write_detection_shard",
]

#: Zero-shot detectors whose text queries are independent, so a vocabulary can share one forward pass.
GROUPED_QUERY_MODELS = ("owlvit", "owlv2")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class ImageRecord:
    """One input image: its position in the collection, its name, and where its bytes are; ``problem``: why it is
    not read at all (a link leaving ``--image_dir``), reported as its reject."""

    index: int
    file_name: str
    path: str | None = None
    data: bytes | None = None
    problem: str | None = None


@dataclass(frozen=True)
class LoadedImage:
    record: ImageRecord
    image: PIL.Image.Image


@dataclass(frozen=True)
class Reject:
    """An input image that could not be used, with the reason (written to the ``--rejects`` report)."""

    index: int
    file_name: str
    reason: str


@dataclass
class DetectedImage:
    """One image of the intermediate dataset."""

    record: ImageRecord
    width: int
    height: int
    detections: list[Detection] = field(default_factory=list)
    caption: str | None = None

    def for_templates(self) -> ImageDetections:
        """The template engine's view: attribute boxes are the detections themselves (one model labels every box)."""
        with_attr = [d for d in self.detections if d.attribute is not None]
        return ImageDetections(self.record.file_name, self.width, self.height, self.detections, with_attr)


# -- inputs -----------------------------------------------------------------------------------------------------
def folder_images(image_dir: str | os.PathLike) -> tuple[list[ImageRecord], int]:
    """Image files under ``image_dir`` (recursive, sorted by relative path) and the number of other files skipped.

    A file that is a link resolving outside ``image_dir`` is never read: its record carries the reason (``problem``)
    instead of a path, so it becomes a reject. Links to folders are not followed (``Path.rglob``).
    """
    root = Path(image_dir)
    inside = root.resolve()
    records, others = [], 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            name = path.relative_to(root).as_posix()
            target = path.resolve()
            if target.is_relative_to(inside):
                records.append(ImageRecord(len(records), name, str(path)))
            else:
                problem = f"image {name!r} is a link leaving --image_dir (to {target}): not read"
                records.append(ImageRecord(len(records), name, problem=problem))
        else:
            others += 1
    return records, others


def dataset_images(dataset: Any, image_column: str = "image", name_column: str | None = None) -> Iterator[ImageRecord]:
    """Records of a ``datasets`` image dataset (map-style or streaming); images are read undecoded.

    File names come from ``name_column`` when given (they must be unique), else ``<index>_<file name>`` from the
    image's own path, else ``<index>`` (8 digits).
    """
    import datasets

    if isinstance(dataset, (datasets.Dataset, datasets.IterableDataset)):
        dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
    for index, row in enumerate(dataset):
        cell = row[image_column]
        data, path = (cell.get("bytes"), cell.get("path")) if isinstance(cell, dict) else (None, None)
        if name_column is not None:
            name = str(row[name_column])
        elif path:
            name = f"{index:08d}_{Path(path).name}"  # unique even when two source folders share a file name
        else:
            name = f"{index:08d}"
        yield ImageRecord(index, name, None if data is not None else path, data)


def load_image(record: ImageRecord) -> LoadedImage | Reject:
    """Decode an image to RGB as the training loader does (no EXIF rotation), or say why it cannot be used."""
    if record.problem is not None:
        return Reject(record.index, record.file_name, record.problem)
    try:
        image = open_raw_image({"bytes": record.data, "path": record.path}, record.file_name)
    except ValueError as err:
        return Reject(record.index, record.file_name, str(err))
    if image.width <= 0 or image.height <= 0:
        return Reject(record.index, record.file_name, f"image {record.file_name!r} has no pixels")
    return LoadedImage(record, image)


# -- the detector -----------------------------------------------------------------------------------------------
class Detector:
    """Batched detection through a transformers ``object-detection`` or ``zero-shot-object-detection`` pipeline.

    Labels are lower-cased and stripped; boxes (the pipeline's integer pixel corners) are clipped to the image and
    dropped when that leaves no area; at most ``max_detections`` boxes per image (highest scores) above ``threshold``
    are kept, in the pipeline's order.

    The zero-shot pipeline runs one forward pass per vocabulary entry and reports a box once for every class above
    the threshold. For OWL-ViT / OWLv2 (``GROUPED_QUERY_MODELS``) all entries share one pass per image instead
    (``grouped_queries``, the default): the same per-class scores, and each box keeps its best class, which is the
    models' own post-processing; ``grouped_queries=False`` keeps the pipeline's behaviour.
    """

    def __init__(
        self,
        pipe: Any,
        task: str,
        threshold: float = 0.3,
        max_detections: int = 36,
        vocabulary: Sequence[str] | None = None,
        batch_size: int = 8,
        grouped_queries: bool = True,
    ):
        if task == "zero-shot-object-detection" and not vocabulary:
            raise ValueError("a zero-shot-object-detection model needs a class vocabulary")
        self.pipe, self.task, self.threshold = pipe, task, threshold
        self.max_detections, self.vocabulary, self.batch_size = max_detections, list(vocabulary or ()), batch_size
        self.grouped_queries = grouped_queries

    def __call__(self, images: Sequence[PIL.Image.Image]) -> list[list[Detection]]:
        """Detections per image. Images of one size share pipeline batches (the pipelines cannot batch images
        that their processor turns into tensors of different sizes); the result is in input order."""
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            by_size.setdefault(image.size, []).append(i)
        result: list[list[Detection]] = [[] for _ in images]
        for positions in by_size.values():
            group = [images[i] for i in positions]
            for i, found in zip(positions, self._run(group)):
                result[i] = self._detections(found, images[i].width, images[i].height)
        return result

    @property
    def grouped(self) -> bool:
        """Whether all vocabulary entries share one forward pass per image (OWL-ViT / OWLv2, unless disabled)."""
        return (
            self.task == "zero-shot-object-detection"
            and self.grouped_queries
            and self.pipe.model.config.model_type in GROUPED_QUERY_MODELS
        )

    @torch.inference_mode()
    def _run_grouped(self, images: list[PIL.Image.Image]) -> list[list[dict[str, Any]]]:
        """The pipeline's scores for every class at once; each box keeps its best class (the model's own rule)."""
        text = self.pipe.tokenizer(self.vocabulary, padding=True, return_tensors="pt").to(self.pipe.device)
        found: list[list[dict[str, Any]]] = []
        for start in range(0, len(images), self.batch_size):
            batch = images[start : start + self.batch_size]
            pixels = self.pipe.image_processor(images=batch, return_tensors="pt").to(self.pipe.device)
            outputs = self.pipe.model(
                input_ids=text["input_ids"].repeat(len(batch), 1),
                attention_mask=text["attention_mask"].repeat(len(batch), 1),
                pixel_values=pixels["pixel_values"].to(self.pipe.dtype),
            )
            sizes = torch.tensor([[im.height, im.width] for im in batch], dtype=torch.int32)
            for result in self.pipe.image_processor.post_process_object_detection(
                outputs=outputs, threshold=self.threshold, target_sizes=sizes
            ):
                dets = [
                    {
                        "score": score.item(),
                        "label": self.vocabulary[label.item()],
                        "box": dict(zip(("xmin", "ymin", "xmax", "ymax"), box.int().tolist())),
                    }
                    for score, label, box in zip(result["scores"], result["labels"], result["boxes"])
                    if score.item() != 0
                ]
                found.append(sorted(dets, key=lambda d: d["score"], reverse=True))
        return found

    def _run(self, images: list[PIL.Image.Image]) -> list[list[dict[str, Any]]]:
        if self.grouped:
            return self._run_grouped(images)
        if self.task == "zero-shot-object-detection":
            inputs: list[Any] = [{"image": im, "candidate_labels": self.vocabulary} for im in images]
        else:
            inputs = list(images)
        outputs = self.pipe(inputs, threshold=self.threshold, batch_size=self.batch_size)
        return [outputs] if len(images) == 1 and (not outputs or isinstance(outputs[0], dict)) else outputs

    def _detections(self, found: Iterable[dict[str, Any]], width: int, height: int) -> list[Detection]:
        """Clip boxes to the image, drop those left without area, keep the ``max_detections`` best (in order)."""
        out = []
        for f in found:
            box = f["box"]
            x1, y1 = min(max(float(box["xmin"]), 0.0), width), min(max(float(box["ymin"]), 0.0), height)
            x2, y2 = min(max(float(box["xmax"]), 0.0), width), min(max(float(box["ymax"]), 0.0), height)
            if x2 > x1 and y2 > y1:
                out.append(Detection(str(f["label"]).strip().lower(), (x1, y1, x2, y2), float(f["score"])))
        if len(out) > self.max_detections:
            keep = set(sorted(range(len(out)), key=lambda i: -out[i].score)[: self.max_detections])
            out = [d for i, d in enumerate(out) if i in keep]
        return out


# -- the intermediate dataset -------------------------------------------------------------------------------------
_DETECTION = pa.struct(
    [
        ("label", pa.string()),
        ("box", pa.list_(pa.float64(), 4)),
        ("score", pa.float64()),
        ("attribute", pa.string()),
        ("attribute_score", pa.float64()),
    ]
)


def detections_schema() -> pa.Schema:
    """One row per image: the image (bytes or path, as ``datasets.Image``), its size, detections and caption."""
    return pa.schema(
        [
            ("index", pa.int64()),
            ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            ("file_name", pa.string()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("detections", pa.list_(_DETECTION)),
            ("caption", pa.string()),
        ]
    )


def _row(item: DetectedImage) -> dict[str, Any]:
    rec = item.record
    return {
        "index": rec.index,
        "image": {"bytes": rec.data, "path": rec.path if rec.data is None else rec.file_name},
        "file_name": rec.file_name,
        "width": item.width,
        "height": item.height,
        "detections": [
            {
                "label": d.label,
                "box": list(d.box),
                "score": d.score,
                "attribute": d.attribute,
                "attribute_score": d.attribute_score,
            }
            for d in item.detections
        ],
        "caption": item.caption,
    }


def write_detection_shard(
    path: Path,
    items: Sequence[DetectedImage],
    rejects: Sequence[Reject],
    meta: dict[str, Any],
    fingerprints: dict[str, Any] | None = None,
) -> None:
    """Write one shard atomically (``.tmp`` then rename) with its rejects, run settings and the fingerprint of
    every image it was made from (``file name -> {"size", "sha256"}``, :func:`image_fingerprint`) beside it.

    The parquet file is written last, so its presence means the shard is complete (resume skips it while every
    fingerprint still matches).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    side = path.with_suffix(".json")
    side_tmp = side.with_name(side.name + ".tmp")
    record = {"meta": meta, "rejects": [asdict(r) for r in rejects]}
    if fingerprints is not None:
        record["images"] = fingerprints
    side_tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(side_tmp, side)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.Table.from_pylist([_row(i) for i in items], schema=detections_schema()), tmp)
    os.replace(tmp, path)


def read_detection_shard(path: Path, batch_rows: int = 1024) -> Iterator[DetectedImage]:
    """Stream the images of one shard (row batches: memory stays flat whatever the shard size)."""
    handle = pq.ParquetFile(path)
    for batch in handle.iter_batches(batch_size=batch_rows):
        for row in batch.to_pylist():
            image = row["image"] or {}
            record = ImageRecord(
                row["index"],
                row["file_name"],
                image.get("path") if image.get("bytes") is None else None,
                image.get("bytes"),
            )
            dets = [
                Detection(d["label"], tuple(d["box"]), d["score"], d["attribute"], d["attribute_score"] or 0.0)
                for d in row["detections"]
            ]
            yield DetectedImage(record, row["width"], row["height"], dets, row["caption"])


def missing_image_files(path: Path) -> list[tuple[str, str]]:
    """``(file name, path)`` of the images of a shard that are read from their files (not stored as bytes) and are no
    longer files. Reads the names and paths only (the bytes column's null count says which rows have bytes)."""
    handle = pq.ParquetFile(path)
    meta = handle.metadata
    missing = []
    for group in range(meta.num_row_groups):
        chunks = meta.row_group(group)
        position = {chunks.column(i).path_in_schema: i for i in range(chunks.num_columns)}
        stats = chunks.column(position["image.bytes"]).statistics
        null_count = stats.null_count if stats is not None and stats.has_null_count else None
        if null_count == 0:
            continue  # every image of the group is stored as bytes
        columns = ["file_name", "image.path"] + ([] if null_count == chunks.num_rows else ["image.bytes"])
        for row in handle.read_row_group(group, columns=columns).to_pylist():
            image = row["image"] or {}
            if image.get("bytes") is None and not (image.get("path") and Path(image["path"]).is_file()):
                missing.append((row["file_name"], image.get("path")))
    return missing


def read_shard_side(path: Path) -> dict[str, Any]:
    """The rejects and settings recorded beside a shard."""
    return json.loads(path.with_suffix(".json").read_text())


def image_bytes(record: ImageRecord) -> bytes:
    """The original file bytes of an image (stored once in the output dataset)."""
    if record.data is not None:
        return record.data
    with open(record.path, "rb") as handle:
        return handle.read()


def fingerprint_of(data: bytes) -> dict[str, Any]:
    """Size and SHA-256 of an image's bytes: what a shard's detections were made from."""
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def image_fingerprint(record: ImageRecord) -> dict[str, Any] | None:
    """:func:`fingerprint_of` the record's bytes now, or None when they cannot be read (a rejected image)."""
    try:
        return fingerprint_of(image_bytes(record))
    except (OSError, TypeError):
        return None


def fingerprint_change(recorded: dict[str, Any] | None, now: dict[str, Any] | None) -> str | None:
    """How an image differs from the one a shard was made from (size, then content), or None when it is the same."""
    if recorded == now:
        return None
    if recorded is None or now is None:
        return "was unreadable" if recorded is None else "can no longer be read"
    if recorded["size"] != now["size"]:
        return f"size {recorded['size']} -> {now['size']} bytes"
    return "same size, other content (SHA-256)"
