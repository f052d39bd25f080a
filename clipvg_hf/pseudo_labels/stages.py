"""The two stages of ``clipvg-pseudo-label`` (:mod:`clipvg_hf.commands.pseudo_label`), run on the checked arguments.

Stage 1, :func:`run_detections`: detections (+ attributes, + captions) per shard of ``shard_size`` images, written
to ``<output_dir>/detections/``; each process handles the shards ``k`` with ``k % world_size == rank``, and a rerun
skips finished shards while every image of a shard has the size and SHA-256 recorded with it. Stage 2,
:func:`run_labels`, on the main process: template / relation / caption labels from those detections, written as
``<name>-unsup-single`` and ``<name>-unsup-multi`` configs with a dataset card (a staged version of ``output_dir``
swapped in at the end) and, with ``official_splits``, as the official split files. A problem found on the way is a
:class:`~clipvg_hf.errors.UsageError`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from tqdm.auto import tqdm

from ..errors import UsageError
from .templates import TemplateConfig
from .vocab import attribute_vocabulary, coco_classes, visual_genome_classes

__all__ = ["check_detections", "detect_shard", "run_detections", "run_labels"]

_VOCABULARIES = {"coco": coco_classes, "visual_genome": visual_genome_classes}


def _read_word_list(path: str, flag: str) -> list[str]:
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"{flag} {path!r}: file not found")
    words = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not words:
        raise UsageError(f"{flag} {path!r}: no entries")
    return words


def check_detections(output_dir: Path) -> None:
    """Detection shards to label from, and every image they read from a file still there (the labels stage stores
    the images in the dataset)."""
    from .detections import missing_image_files

    shards = sorted((output_dir / "detections").glob("shard-*.parquet"))
    if not shards:
        raise UsageError(f"{output_dir / 'detections'}: no detection shards (run without --labels_only first)")
    missing = [m for shard in shards for m in missing_image_files(shard)]
    if missing:
        name, path = missing[0]
        raise UsageError(
            f"{len(missing)} image(s) the detections in {output_dir / 'detections'} were made from are gone "
            f"(first: {name!r} at {path}); the labels stage stores every image: restore them, or detect again "
            "into another --output_dir"
        )


def _check_some_readable(shards: Sequence[Path], sides: Sequence[dict[str, Any]]) -> None:
    """At least one input image was read: a run where every image is a reject is an error, not an empty dataset."""
    if any(pq.ParquetFile(shard).metadata.num_rows for shard in shards):
        return
    rejects = [r for side in sides for r in side["rejects"]]
    first = f" (first: {rejects[0]['reason']})" if rejects else ""
    raise UsageError(
        f"none of the {len(rejects)} input images could be read{first}; every reason is in "
        f"{shards[0].parent}/shard-*.json"
    )


def _records(args: argparse.Namespace) -> tuple[Iterator[Any], int | None, str]:
    """The input's image records, their number when known, and the default dataset name."""
    from .detections import dataset_images, folder_images

    if args.image_dir is not None:
        records, others = folder_images(args.image_dir)
        if not records:
            raise UsageError(
                f"--image_dir {args.image_dir!r}: no image files ({', '.join(('.jpg', '.png', '...'))}); "
                f"{others} other file(s)"
            )
        return iter(records), len(records), Path(args.image_dir).resolve().name
    import datasets

    try:
        data = datasets.load_dataset(
            args.dataset, args.dataset_config, split=args.dataset_split, streaming=args.streaming
        )
    except Exception as err:  # datasets raises many kinds for a bad id / config / split
        raise UsageError(
            f"--dataset {args.dataset!r}: cannot load split {args.dataset_split!r}: {err}".splitlines()[0]
        ) from err
    if data.column_names is not None and args.image_column not in data.column_names:
        raise UsageError(
            f"--image_column {args.image_column!r}: not a column of {args.dataset!r} ({data.column_names})"
        )
    total = None if args.streaming else len(data)
    if total == 0:
        raise UsageError(f"--dataset {args.dataset!r}: split {args.dataset_split!r} is empty")
    return dataset_images(data, args.image_column, args.name_column), total, Path(args.dataset).name


def _shards(records: Iterator[Any], size: int) -> Iterator[tuple[int, list[Any]]]:
    shard: list[Any] = []
    number = 0
    for record in records:
        shard.append(record)
        if len(shard) == size:
            yield number, shard
            number, shard = number + 1, []
    if shard:
        yield number, shard


# -- stage 1: detections ----------------------------------------------------------------------------------------
def _detection_settings(args: argparse.Namespace, infos: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "detection_threshold",
        "max_detections",
        "vocabulary",
        "pipeline_queries",
        "attribute_vocabulary",
        "attribute_template",
        "caption_prompt",
        "caption_max_new_tokens",
        "shard_size",
    )
    return {"models": {k: v.as_dict() for k, v in infos.items()}, **{k: getattr(args, k) for k in keys}}


def _build_stages(args: argparse.Namespace, infos: dict[str, Any], device: str | None) -> dict[str, Any]:
    from .attributes import AttributeClassifier
    from .captions import Captioner
    from .detections import Detector
    from .models import load_pipeline

    info = infos["detector"]
    vocabulary = None
    if info.task == "zero-shot-object-detection":
        source = args.vocabulary
        vocabulary = (
            list(_VOCABULARIES[source]()) if source in _VOCABULARIES else _read_word_list(source, "--vocabulary")
        )
    stages: dict[str, Any] = {
        "detector": Detector(
            load_pipeline(info, device, args.bf16),
            info.task,
            args.detection_threshold,
            args.max_detections,
            vocabulary,
            args.batch_size,
            not args.pipeline_queries,
        )
    }
    if "attributes" in infos:
        words = (
            _read_word_list(args.attribute_vocabulary, "--attribute_vocabulary")
            if args.attribute_vocabulary
            else list(attribute_vocabulary())
        )
        stages["attributes"] = AttributeClassifier(
            load_pipeline(infos["attributes"], device, args.bf16), words, args.attribute_template, 4 * args.batch_size
        )
    if "captioner" in infos:
        stages["captioner"] = Captioner(
            load_pipeline(infos["captioner"], device, args.bf16),
            args.caption_prompt,
            args.caption_max_new_tokens,
            args.batch_size,
        )
    return stages


def detect_shard(records: Sequence[Any], stages: dict[str, Any], batch_size: int) -> tuple[list[Any], list[Any]]:
    """Detections, attributes and captions of one shard's images; unreadable images become rejects."""
    from .detections import DetectedImage, Reject, load_image

    items, rejects = [], []
    for start in range(0, len(records), batch_size):
        loaded = []
        for record in records[start : start + batch_size]:
            result = load_image(record)
            (rejects if isinstance(result, Reject) else loaded).append(result)
        images = [x.image for x in loaded]
        detections = stages["detector"](images)
        if "attributes" in stages:
            detections = stages["attributes"](images, detections)
        captions = stages["captioner"](images) if "captioner" in stages else [None] * len(images)
        items += [
            DetectedImage(x.record, x.image.width, x.image.height, d, c)
            for x, d, c in zip(loaded, detections, captions)
        ]
    return items, rejects


def _stale_image(side: dict[str, Any], shard: Sequence[Any]) -> str | None:
    """Why a finished shard no longer fits its images (one whose size or SHA-256 changed), or None."""
    from .detections import fingerprint_change, image_fingerprint

    recorded = side.get("images")
    if recorded is None:
        return "it records no image fingerprints (an earlier version made it)"
    for record in shard:
        change = fingerprint_change(recorded.get(record.file_name), image_fingerprint(record))
        if change is not None:
            return f"image {record.file_name!r} changed since ({change})"
    return None


def run_detections(args: argparse.Namespace, infos: dict[str, Any], state: Any) -> None:
    """Stage 1 on this process: its shards, skipping the finished ones (same settings, same images: names, sizes
    and SHA-256), detecting again those whose images changed, and refusing others."""
    from .detections import image_fingerprint, read_shard_side, write_detection_shard

    records, total, _ = _records(args)
    folder = Path(args.output_dir) / "detections"
    settings = _detection_settings(args, infos)
    stages: dict[str, Any] | None = None
    device = args.device or (None if args.cpu else str(state.device))
    bar = tqdm(total=total, desc=f"detect (process {state.process_index})", disable=not state.is_local_main_process)
    for number, shard in _shards(records, args.shard_size):
        bar.update(len(shard))
        if number % state.num_processes != state.process_index:
            continue
        path = folder / f"shard-{number:05d}.parquet"
        if path.is_file():
            side = read_shard_side(path)
            if side["meta"] != settings:
                raise UsageError(
                    f"{path}: made with other settings ({side['meta']}); use another --output_dir or --labels_only"
                )
            done = sorted(
                pq.read_table(path, columns=["file_name"]).column("file_name").to_pylist()
                + [r["file_name"] for r in side["rejects"]]
            )
            if done != sorted(r.file_name for r in shard):
                raise UsageError(
                    f"{path}: made from other images than shard {number} of this input; use another --output_dir"
                )
            stale = _stale_image(side, shard)
            if stale is None:
                continue
            print(f"note: {path}: {stale}; detecting the shard again", file=sys.stderr)
        stages = stages or _build_stages(args, infos, device)
        fingerprints = {r.file_name: image_fingerprint(r) for r in shard}
        items, rejects = detect_shard(shard, stages, args.batch_size)
        write_detection_shard(path, items, rejects, settings, fingerprints)
    bar.close()


# -- stage 2: labels ----------------------------------------------------------------------------------------------
def _relation_model(spec: str) -> Any:
    from .relations import GeometricRelations

    if spec == "none":
        return None
    if spec == "geometric":
        return GeometricRelations()
    import importlib

    module, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)()
    except (ImportError, AttributeError) as err:
        raise UsageError(f"--relations {spec!r}: {err}") from err


def run_labels(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """Stage 2: labels from every detection shard, the dataset, the card and the rejects report."""
    from .captions import CaptionMatcher
    from .detections import read_shard_side
    from .templates import TemplateEngine
    from .writer import ImageChangedError, Labeler, write_dataset

    output_dir = Path(args.output_dir)
    shards = sorted((output_dir / "detections").glob("shard-*.parquet"))
    if not shards:
        raise UsageError(f"{output_dir / 'detections'}: no detection shards (run without --labels_only first)")
    sides = [read_shard_side(s) for s in shards]
    _check_some_readable(shards, sides)
    if not args.labels_only:  # (checked before any work with --labels_only)
        check_detections(output_dir)
    config = TemplateConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TemplateConfig)})
    engine = TemplateEngine(config)
    has_captions = bool(sides[0]["meta"]["models"].get("captioner"))
    labeler = Labeler(
        engine, _relation_model(args.relations), CaptionMatcher(engine) if has_captions else None, args.caption_query
    )
    rejects = [r for side in sides for r in side["rejects"]]
    rejects_path = Path(args.rejects) if args.rejects else output_dir / "rejects.jsonl"
    rejects_text = "".join(json.dumps(r) + "\n" for r in rejects)
    inside = rejects_path.resolve().is_relative_to(output_dir.resolve())
    files = {rejects_path.resolve().relative_to(output_dir.resolve()).as_posix(): rejects_text} if inside else {}
    manifest = {
        "models": sides[0]["meta"]["models"],
        "rejected": len(rejects),
        "shard_size": args.shard_size,
        "settings": {
            "detection": {k: v for k, v in sides[0]["meta"].items() if k != "models"},
            "templates": dataclasses.asdict(config),
            "relations": args.relations,
            "caption_query": args.caption_query,
        },
    }
    try:  # one staged version of output_dir (the rejects report inside it too), swapped in at the end
        counts = write_dataset(output_dir, name, shards, labeler, args.seed, manifest, files)
    except ImageChangedError as err:
        raise UsageError(str(err)) from err
    if not inside:
        from ..data.staging import write_text_atomic

        write_text_atomic(rejects_path, rejects_text)
    summary = {**counts.as_dict(), "rejected": len(rejects), "rejects_file": str(rejects_path)}
    if args.official_splits is not None:
        from .official_splits import write_official_splits

        summary["official_splits"] = write_official_splits(  # an OfficialSplitsError is a UsageError
            output_dir, name, shards, args.official_splits, args.official_dataset
        )
    return summary
