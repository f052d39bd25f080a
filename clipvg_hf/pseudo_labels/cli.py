"""``clipvg-pseudo-label``: turn an image folder (or a ``datasets`` image dataset) into a CLIP-VG training dataset.

    clipvg-pseudo-label --image_dir photos/ --output_dir data/photos --detector facebook/detr-resnet-50 \\
        --attribute_model openai/clip-vit-base-patch32 --captioner Salesforce/blip-image-captioning-base
    accelerate launch -m clipvg_hf.pseudo_labels --image_dir photos/ ...   # shards over processes / GPUs

Stages: (1) detections (+ attributes, + captions) per shard of ``--shard_size`` images, written to
``<output_dir>/detections/`` — each process handles the shards ``k`` with ``k % world_size == rank``, and a rerun
skips finished shards; (2) on the main process, template / relation / caption labels from those detections, written
as ``<name>-unsup-single`` and ``<name>-unsup-multi`` configs with a dataset card. ``--labels_only`` reruns (2) alone.
``--official_splits DIR`` then also writes those labels as the official CLIP-VG split files (:mod:`.official_splits`).
Models, the input, the output folder, the name and every setting are checked before any work: a bad one is a one-line
error, exit status 2. A finished shard is skipped only while every image of it has the size and SHA-256 recorded with
it; the labels stage writes a staged version of ``--output_dir`` swapped in at the end.
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

from .templates import OFFICIAL_SEED, TemplateConfig
from .vocab import attribute_vocabulary, coco_classes, visual_genome_classes

__all__ = ["build_parser", "cli", "main"]

_VOCABULARIES = {"coco": coco_classes, "visual_genome": visual_genome_classes}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipvg-pseudo-label",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = parser.add_argument_group("input (one of)")
    src.add_argument("--image_dir", help="folder of images (recursive; sorted by relative path)")
    src.add_argument("--dataset", help="a datasets image dataset: Hub id or local folder")
    src.add_argument("--dataset_config", default=None)
    src.add_argument("--dataset_split", default="train")
    src.add_argument("--image_column", default="image")
    src.add_argument("--name_column", default=None, help="column holding unique file names (default: from the image)")
    src.add_argument("--streaming", action="store_true", help="stream the dataset instead of downloading it")
    out = parser.add_argument_group("output")
    out.add_argument("--output_dir", required=True)
    out.add_argument("--name", default=None, help="dataset name in the config names (default: the input's name)")
    out.add_argument(
        "--rejects", default=None, help="where to list unreadable images (default <output_dir>/rejects.jsonl)"
    )
    out.add_argument(
        "--shard_size",
        type=int,
        default=1000,
        help="images per detection shard; the sampling seed restarts per shard (official split size)",
    )
    out.add_argument("--labels_only", action="store_true", help="regenerate labels from existing detections")
    out.add_argument(
        "--official_splits",
        default=None,
        metavar="DIR",
        help="also write the labels as the official CLIP-VG split files (.pth) under DIR, for the original code",
    )
    out.add_argument(
        "--official_dataset",
        default=None,
        help="official dataset key fixing those files' row layout: referit (default; x1,y1,x2,y2), "
        "unc, unc+, gref, gref_umd (x,y,w,h) or flickr (3 fields)",
    )
    out.add_argument(
        "--overwrite_official_splits", action="store_true", help="replace split files already in --official_splits"
    )
    models = parser.add_argument_group("models")
    models.add_argument("--detector", help="object-detection or zero-shot-object-detection model id / folder")
    models.add_argument("--detector_revision", default=None)
    models.add_argument(
        "--vocabulary",
        default="coco",
        help="classes for a zero-shot detector: coco, visual_genome or a file (one class a line)",
    )
    models.add_argument(
        "--pipeline_queries",
        action="store_true",
        help="OWL-ViT / OWLv2: one forward per class as the pipeline does (default: all at once)",
    )
    models.add_argument("--detection_threshold", type=float, default=0.3)
    models.add_argument("--max_detections", type=int, default=36)
    models.add_argument("--attribute_model", default=None, help="zero-shot-image-classification model (CLIP, SigLIP)")
    models.add_argument("--attribute_revision", default=None)
    models.add_argument("--attribute_vocabulary", default=None, help="file of attribute words (default: VG 400)")
    models.add_argument("--attribute_template", default="This is a photo of {}.")
    models.add_argument("--captioner", default=None, help="image-text-to-text captioning model (BLIP, GIT, ...)")
    models.add_argument("--captioner_revision", default=None)
    models.add_argument("--caption_prompt", default="")
    models.add_argument("--caption_max_new_tokens", type=int, default=30)
    models.add_argument("--caption_query", type=int, default=6, help="caption rows sampled per image (official 6)")
    models.add_argument(
        "--relations", default="geometric", help="geometric, none, or module:callable returning a RelationModel"
    )
    models.add_argument("--batch_size", type=int, default=8)
    models.add_argument("--device", default=None, help="torch device of the pipelines (default: this process's)")
    models.add_argument("--bf16", action="store_true", help="bfloat16 models on CUDA (opt-in)")
    models.add_argument("--cpu", action="store_true", help="run on the CPU even when CUDA is available")
    tpl = parser.add_argument_group("template rules (official values by default)")
    for f in dataclasses.fields(TemplateConfig):
        if f.name == "seed":
            continue
        if f.type in ("bool", bool):
            tpl.add_argument(f"--{f.name}", type=_boolean, default=f.default, metavar="{true,false}")
        else:
            tpl.add_argument(f"--{f.name}", type=int if f.type in ("int", int) else float, default=f.default)
    tpl.add_argument("--seed", type=int, default=OFFICIAL_SEED, help="template / caption sampling seed (official)")
    return parser


def _boolean(text: str) -> bool:
    if text.lower() not in ("true", "false", "1", "0"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() in ("true", "1")


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _read_word_list(path: str, flag: str) -> list[str]:
    file = Path(path)
    if not file.is_file():
        _fail(f"{flag} {path!r}: file not found")
    words = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not words:
        _fail(f"{flag} {path!r}: no entries")
    return words


# -- checks before any work -------------------------------------------------------------------------------------
def _check(args: argparse.Namespace) -> dict[str, Any]:
    """Validate the input, settings and every model; return the checked model infos."""
    from .models import ModelCheckError, check_model

    _check_numbers(args)
    if not args.labels_only:
        if (args.image_dir is None) == (args.dataset is None):
            _fail("give exactly one of --image_dir or --dataset")
        if args.image_dir is not None and not Path(args.image_dir).is_dir():
            _fail(f"--image_dir {args.image_dir!r}: not a folder")
        if args.detector is None:
            _fail("--detector is required (unless --labels_only)")
    if args.relations not in ("geometric", "none") and ":" not in args.relations:
        _fail(f"--relations {args.relations!r}: expected geometric, none or module:callable")
    _check_official_splits(args)
    _check_output(args)
    infos: dict[str, Any] = {}
    if args.labels_only:
        _check_detections(Path(args.output_dir))
        return infos
    try:
        infos["detector"] = check_model(
            args.detector, ("object-detection", "zero-shot-object-detection"), "--detector", args.detector_revision
        )
        if args.attribute_model:
            infos["attributes"] = check_model(
                args.attribute_model, "zero-shot-image-classification", "--attribute_model", args.attribute_revision
            )
        if args.captioner:
            infos["captioner"] = check_model(args.captioner, "image-to-text", "--captioner", args.captioner_revision)
    except ModelCheckError as err:
        _fail(str(err))
    return infos


#: Every number the command takes: ``(minimum, maximum)`` (None: no bound). Thresholds and ratios are fractions;
#: counts are at least 1 (0 boxes, rows or tokens would only make an empty dataset); seeds are >= 0 (Python's
#: ``random`` seeds -n like n).
NUMBER_RANGES: dict[str, tuple[float | None, float | None]] = {
    "shard_size": (1, None),
    "batch_size": (1, None),
    "detection_threshold": (0, 1),
    "max_detections": (1, None),
    "caption_max_new_tokens": (1, None),
    "caption_query": (1, None),
    "seed": (0, None),
    "topn": (1, None),
    "each_image_query": (1, None),
    "attr_iou_thresh": (0, 1),
    "attr_conf_thresh": (0, 1),
    "tiny_area_ratio": (0, 1),
    "overlap_iou": (0, 1),
    "clothes_inside": (0, 1),
    "hat_top": (0, 1),
    "pants_bottom": (0, 1),
    "spatial_spread": (0, None),
    "behind_ratio": (0, 1),
    "front_ratio": (0, 1),
}


def _check_numbers(args: argparse.Namespace) -> None:
    """Every number finite and in its range (:data:`NUMBER_RANGES`), before anything is read or loaded."""
    from ..checks import check_number
    from ..errors import UsageError

    for name, (low, high) in NUMBER_RANGES.items():
        try:
            check_number(f"--{name}", getattr(args, name), minimum=low, maximum=high)
        except UsageError as err:
            _fail(str(err))


def _check_detections(output_dir: Path) -> None:
    """Detection shards to label from, and every image they read from a file still there (the labels stage stores
    the images in the dataset)."""
    from .detections import missing_image_files

    shards = sorted((output_dir / "detections").glob("shard-*.parquet"))
    if not shards:
        _fail(f"{output_dir / 'detections'}: no detection shards (run without --labels_only first)")
    missing = [m for shard in shards for m in missing_image_files(shard)]
    if missing:
        name, path = missing[0]
        _fail(
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
    _fail(
        f"none of the {len(rejects)} input images could be read{first}; every reason is in "
        f"{shards[0].parent}/shard-*.json"
    )


def _check_official_splits(args: argparse.Namespace) -> None:
    """``--official_splits`` must name a folder without split files (unless overwriting) and a known dataset key."""
    if args.official_splits is None:
        if args.official_dataset is not None or args.overwrite_official_splits:
            _fail("--official_dataset and --overwrite_official_splits need --official_splits DIR")
        return
    from .official_splits import OFFICIAL_KEYS, target_problem

    args.official_dataset = args.official_dataset or "referit"
    if args.official_dataset not in OFFICIAL_KEYS:
        _fail(f"--official_dataset {args.official_dataset!r}: expected one of {list(OFFICIAL_KEYS)}")
    problem = target_problem(args.official_splits, args.overwrite_official_splits)
    if problem:
        _fail(problem)


def _check_output(args: argparse.Namespace) -> None:
    """``--output_dir`` must be a folder holding no other dataset; ``--name`` (default: the recorded name of an earlier
    run there, else the input's name) a plain name, the one an earlier run there used."""
    from ..checks import check_dataset_name
    from ..data.staging import dataset_folder_problem
    from ..errors import UsageError

    problem = dataset_folder_problem(args.output_dir, "pseudo-labels")
    if problem:
        _fail(problem)
    manifest = Path(args.output_dir) / "pseudo_labels.json"
    recorded = None
    if manifest.is_file():
        try:
            recorded = json.loads(manifest.read_text(encoding="utf-8"))["name"]
        except (ValueError, KeyError, TypeError, OSError) as err:
            _fail(f"{manifest}: unreadable record of an earlier run ({type(err).__name__}); give another --output_dir")
    if args.name is not None and recorded is not None and args.name != recorded:
        _fail(
            f"--name {args.name!r}: --output_dir {args.output_dir} holds the pseudo-labels named {recorded!r}; "
            f"rerun with --name {recorded} or give another --output_dir"
        )
    argument = "--name"
    if args.name is None:
        if recorded is not None:
            args.name = recorded
        else:
            source = next(flag for flag in ("image_dir", "dataset", "output_dir") if getattr(args, flag))
            value = getattr(args, source)
            args.name = Path(value).resolve().name if source != "dataset" else Path(value).name
            argument = f"--name (default, from --{source})"
    try:
        check_dataset_name(args.name, argument)
    except UsageError as err:
        _fail(f"{err}{'; give --name' if argument != '--name' else ''}")


def _records(args: argparse.Namespace) -> tuple[Iterator[Any], int | None, str]:
    """The input's image records, their number when known, and the default dataset name."""
    from .detections import dataset_images, folder_images

    if args.image_dir is not None:
        records, others = folder_images(args.image_dir)
        if not records:
            _fail(
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
        _fail(f"--dataset {args.dataset!r}: cannot load split {args.dataset_split!r}: {err}".splitlines()[0])
    if data.column_names is not None and args.image_column not in data.column_names:
        _fail(f"--image_column {args.image_column!r}: not a column of {args.dataset!r} ({data.column_names})")
    total = None if args.streaming else len(data)
    if total == 0:
        _fail(f"--dataset {args.dataset!r}: split {args.dataset_split!r} is empty")
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
                _fail(f"{path}: made with other settings ({side['meta']}); use another --output_dir or --labels_only")
            done = sorted(
                pq.read_table(path, columns=["file_name"]).column("file_name").to_pylist()
                + [r["file_name"] for r in side["rejects"]]
            )
            if done != sorted(r.file_name for r in shard):
                _fail(f"{path}: made from other images than shard {number} of this input; use another --output_dir")
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
        _fail(f"--relations {spec!r}: {err}")


def run_labels(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """Stage 2: labels from every detection shard, the dataset, the card and the rejects report."""
    from .captions import CaptionMatcher
    from .detections import read_shard_side
    from .templates import TemplateEngine
    from .writer import ImageChangedError, Labeler, write_dataset

    output_dir = Path(args.output_dir)
    shards = sorted((output_dir / "detections").glob("shard-*.parquet"))
    if not shards:
        _fail(f"{output_dir / 'detections'}: no detection shards (run without --labels_only first)")
    sides = [read_shard_side(s) for s in shards]
    _check_some_readable(shards, sides)
    if not args.labels_only:  # (checked before any work with --labels_only)
        _check_detections(output_dir)
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
        _fail(str(err))
    if not inside:
        from ..data.staging import write_text_atomic

        write_text_atomic(rejects_path, rejects_text)
    summary = {**counts.as_dict(), "rejected": len(rejects), "rejects_file": str(rejects_path)}
    if args.official_splits is not None:
        from .official_splits import OfficialSplitsError, write_official_splits

        try:
            summary["official_splits"] = write_official_splits(
                output_dir, name, shards, args.official_splits, args.official_dataset
            )
        except OfficialSplitsError as err:
            _fail(str(err))
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = build_parser().parse_args(argv)
    infos = _check(args)
    from accelerate import PartialState

    state = PartialState(cpu=args.cpu)
    name = args.name  # checked (and defaulted) by _check
    if not args.labels_only:
        run_detections(args, infos, state)
        state.wait_for_everyone()
    if not state.is_main_process:  # no barrier after the labels stage: it may outlast the collective timeout
        return None
    summary = run_labels(args, name)
    print(json.dumps(summary, sort_keys=True))
    return summary


def cli() -> int:
    """Console-script entry point (``clipvg-pseudo-label``): exit status 0, or 2 for a refused input."""
    main()
    return 0


if __name__ == "__main__":  # pragma: no cover
    main()
