"""``clipvg-pseudo-label``: turn an image folder (or a ``datasets`` image dataset) into a CLIP-VG training dataset.

    clipvg-pseudo-label --image_dir photos/ --output_dir data/photos --detector facebook/detr-resnet-50 \\
        --attribute_model openai/clip-vit-base-patch32 --captioner Salesforce/blip-image-captioning-base
    accelerate launch -m clipvg_hf.pseudo_labels --image_dir photos/ ...   # shards over processes / GPUs

Stages: (1) detections (+ attributes, + captions) per shard of ``--shard_size`` images, written to
``<output_dir>/detections/`` — each process handles the shards ``k`` with ``k % world_size == rank``, and a rerun
skips finished shards; (2) on the main process, template / relation / caption labels from those detections, written
as ``<name>-unsup-single`` and ``<name>-unsup-multi`` configs with a dataset card. ``--labels_only`` reruns (2) alone.
``--official_splits DIR`` then also writes those labels as the official CLIP-VG split files (:mod:`clipvg_hf.pseudo_labels.official_splits`).
Models, the input, the output folder, the name and every setting are checked before any work: a bad one is a one-line
error, exit status 2. A finished shard is skipped only while every image of it has the size and SHA-256 recorded with
it; the labels stage writes a staged version of ``--output_dir`` swapped in at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from ..checks import check_dataset_name, check_number
from ..errors import UsageError
from ..pseudo_labels.stages import check_detections, run_detections, run_labels
from ..pseudo_labels.templates import OFFICIAL_SEED, TemplateConfig
from .errors import report_usage_errors

__all__ = ["NUMBER_RANGES", "build_parser", "main", "pseudo_label"]


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


# -- checks before any work -------------------------------------------------------------------------------------
def _check(args: argparse.Namespace) -> dict[str, Any]:
    """Validate the input, settings and every model; return the checked model infos."""
    from ..pseudo_labels.models import check_model

    _check_numbers(args)
    if not args.labels_only:
        if (args.image_dir is None) == (args.dataset is None):
            raise UsageError("give exactly one of --image_dir or --dataset")
        if args.image_dir is not None and not Path(args.image_dir).is_dir():
            raise UsageError(f"--image_dir {args.image_dir!r}: not a folder")
        if args.detector is None:
            raise UsageError("--detector is required (unless --labels_only)")
    if args.relations not in ("geometric", "none") and ":" not in args.relations:
        raise UsageError(f"--relations {args.relations!r}: expected geometric, none or module:callable")
    _check_official_splits(args)
    _check_output(args)
    infos: dict[str, Any] = {}
    if args.labels_only:
        check_detections(Path(args.output_dir))
        return infos
    # a ModelCheckError (a UsageError) names the flag of a model that cannot serve its task
    infos["detector"] = check_model(
        args.detector, ("object-detection", "zero-shot-object-detection"), "--detector", args.detector_revision
    )
    if args.attribute_model:
        infos["attributes"] = check_model(
            args.attribute_model, "zero-shot-image-classification", "--attribute_model", args.attribute_revision
        )
    if args.captioner:
        infos["captioner"] = check_model(args.captioner, "image-to-text", "--captioner", args.captioner_revision)
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
    for name, (low, high) in NUMBER_RANGES.items():
        check_number(f"--{name}", getattr(args, name), minimum=low, maximum=high)


def _check_official_splits(args: argparse.Namespace) -> None:
    """``--official_splits`` must name a folder without split files (unless overwriting) and a known dataset key."""
    if args.official_splits is None:
        if args.official_dataset is not None or args.overwrite_official_splits:
            raise UsageError("--official_dataset and --overwrite_official_splits need --official_splits DIR")
        return
    from ..pseudo_labels.official_splits import OFFICIAL_KEYS, target_problem

    args.official_dataset = args.official_dataset or "referit"
    if args.official_dataset not in OFFICIAL_KEYS:
        raise UsageError(f"--official_dataset {args.official_dataset!r}: expected one of {list(OFFICIAL_KEYS)}")
    problem = target_problem(args.official_splits, args.overwrite_official_splits)
    if problem:
        raise UsageError(problem)


def _check_output(args: argparse.Namespace) -> None:
    """``--output_dir`` must be a folder holding no other dataset; ``--name`` (default: the recorded name of an earlier
    run there, else the input's name) a plain name, the one an earlier run there used."""
    from ..data.staging import dataset_folder_problem

    problem = dataset_folder_problem(args.output_dir, "pseudo-labels")
    if problem:
        raise UsageError(problem)
    manifest = Path(args.output_dir) / "pseudo_labels.json"
    recorded = None
    if manifest.is_file():
        try:
            recorded = json.loads(manifest.read_text(encoding="utf-8"))["name"]
        except (ValueError, KeyError, TypeError, OSError) as err:
            raise UsageError(
                f"{manifest}: unreadable record of an earlier run ({type(err).__name__}); give another --output_dir"
            ) from err
    if args.name is not None and recorded is not None and args.name != recorded:
        raise UsageError(
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
        raise UsageError(f"{err}{'; give --name' if argument != '--name' else ''}") from err


def pseudo_label(argv: list[str] | None = None) -> dict[str, Any] | None:
    """Parse and check the arguments, run both stages and print the summary; returns it on the main process (None
    on the others). A refused input is a :class:`~clipvg_hf.errors.UsageError` raised before any work."""
    args = build_parser().parse_args(argv)
    infos = _check(args)
    from accelerate import PartialState  # after the checks: a refused input answers at once

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


@report_usage_errors
def main(argv: list[str] | None = None) -> int:
    """``clipvg-pseudo-label``: exit status 0, or one line ``error: ...`` and exit status 2 for a refused input."""
    pseudo_label(argv)
    return 0
