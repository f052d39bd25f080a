"""``clipvg-predict``: ground referring expressions in an image from the command line.

    clipvg-predict --model_name_or_path DIR --image photo.jpg --text "the man on the left" \
        [--text ...] [--output boxes.png]

Prints one JSON object per expression (``label``, ``box`` as [x1, y1, x2, y2] pixels, ``score``) and, with
``--output``, draws the boxes on the image. ``DIR`` is a saved CLIP-VG model (for example written by
``clipvg-convert-checkpoint``) or a Hub id; a model saved without a processor gets the default
one (the letterbox at the model's image size and OpenAI's tokenizer from the BPE file shipped with the package).

Over a whole dataset split instead of one image (a converted folder with ``--dataset_config``, or a Hub REC layout
of :mod:`clipvg_hf.data.hub_layouts`, a Hub id or local folder, split named as the dataset names it)::

    clipvg-predict --model_name_or_path DIR --dataset jxu124/refcoco-benchmark \
        --split refcoco_unc_testA --output predictions.jsonl

writes one JSON line per expression (ids, boxes in pixels and normalised, IoU: see :mod:`clipvg_hf.evaluation.loop`)
and prints the scores.

``--dtype fp32`` (the default) is the exact path; ``--dtype auto`` runs the model in bf16 where the hardware has bf16
units (a CPU with AMX or AVX512-BF16, a bf16 GPU; the box head stays fp32) and says so on stderr, fp32 elsewhere;
``--dtype bf16`` forces bf16 (:mod:`clipvg_hf.precision`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import PIL.Image
import PIL.ImageDraw
import PIL.ImageOps
import torch
from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor, pipeline

from ..checks import check_output_file
from ..errors import UsageError, first_line
from ..loading import load_grounding_model
from ..precision import add_dtype_argument, resolve_dtype
from ..processing_clipvg import CLIPVGProcessor
from .arguments import positive_int
from .errors import report_usage_errors

__all__ = ["draw_boxes", "main", "parse_args", "predict"]

_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="clipvg-predict", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model_name_or_path", dest="model", required=True, help="saved CLIP-VG model folder or Hub id"
    )
    parser.add_argument("--image", help="image file")
    parser.add_argument("--text", action="append", help="referring expression (repeatable)")
    parser.add_argument(
        "--output", help="write the image with the boxes drawn on it here (with --dataset: the JSON lines file)"
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0 (default: cpu)")
    parser.add_argument(
        "--dataset", help="predict a whole split: a converted folder, or a Hub REC layout (id or folder)"
    )
    parser.add_argument("--dataset_config", help="config of a converted folder (not needed for a Hub layout)")
    parser.add_argument("--split", help="with --dataset: the split, as the dataset names it")
    parser.add_argument("--image_root", help="with --dataset: the image folder of a layout that stores image paths")
    parser.add_argument("--batch_size", type=positive_int, default=64, help="with --dataset: expressions per batch")
    add_dtype_argument(parser, default="fp32")
    args = parser.parse_args(argv)
    if args.dataset is None:
        missing = [flag for flag in ("image", "text") if getattr(args, flag) is None]
        if missing:
            parser.error(
                f"the following arguments are required: {', '.join('--' + m for m in missing)} (or --dataset)"
            )
    elif args.image is not None or args.text is not None:
        parser.error("--dataset predicts a whole split: leave out --image and --text")
    elif args.split is None or args.output is None:
        parser.error("--dataset needs --split and --output (the JSON lines file to write)")
    return args


def predict_dataset(args: argparse.Namespace) -> int:
    """``--dataset``: every expression of one split through :func:`clipvg_hf.evaluation.evaluate_model`, written as
    JSON lines to ``--output``; the scores printed."""
    from accelerate import Accelerator

    from ..evaluation import evaluate_model, open_splits

    check_output_file(args.output, "--output")
    _check_device(args.device)
    if args.image_root is not None and not Path(args.image_root).is_dir():
        raise UsageError(f"--image_root {args.image_root}: folder not found")
    opened = open_splits(args.dataset, args.dataset_config, [args.split], args.image_root)
    accelerator = Accelerator(cpu=torch.device(args.device).type == "cpu")
    dtype = resolve_dtype(args.dtype, accelerator.device, note=accelerator.is_main_process)
    results = evaluate_model(
        args.model,
        args.dataset,
        args.dataset_config,
        [args.split],
        batch_size=args.batch_size,
        image_root=args.image_root,
        accelerator=accelerator,
        predictions=args.output,
        opened=opened,
        dtype=dtype,
    )
    if accelerator.is_main_process:
        print(json.dumps(results["splits"][args.split], indent=2, allow_nan=False))
    return 0


def _load_image(path: str) -> PIL.Image.Image:
    """Open the image as the pipeline sees it (RGB), with a clear error when it is missing or unreadable."""
    if not Path(path).is_file():
        raise UsageError(f"image file not found: {path}")
    try:
        with PIL.Image.open(path) as image:
            image = PIL.ImageOps.exif_transpose(image)
            return image.convert("RGB")
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as error:  # PIL's pixel limit, as data.decode
        raise UsageError(f"could not read image {path}: {error}") from error


def _check_device(device: str) -> None:
    """A torch device that exists here (``cpu``, ``cuda:0`` with a GPU present, ...)."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as error:
        raise UsageError(
            f"--device {device!r} is not a torch device ({first_line(error)}); e.g. cpu, cuda:0"
        ) from None
    if parsed.type == "cuda" and (not torch.cuda.is_available() or (parsed.index or 0) >= torch.cuda.device_count()):
        raise UsageError(f"--device {device}: no such CUDA device here")
    if parsed.type not in ("cpu", "cuda") and not hasattr(torch, parsed.type):
        raise UsageError(f"--device {device}: unsupported device type")


def _load_model_and_processor(model: str, device: str, dtype: torch.dtype | None = None) -> tuple[Any, Any]:
    """Load the model through the checked loading path ("not found", missing or non-finite weights are one-line
    errors) in ``dtype`` (None: fp32; the box head stays fp32), and its processor or the default one if the folder
    holds none."""
    grounding_model = load_grounding_model(
        model, "--model_name_or_path", AutoModelForZeroShotObjectDetection, dtype=dtype
    )
    try:
        grounding_model = grounding_model.to(device)
    except RuntimeError as error:
        raise UsageError(f"could not move the model to --device {device}: {first_line(error)}") from error
    try:
        processor = AutoProcessor.from_pretrained(model)
    except (OSError, ValueError, TypeError):
        print(f"note: {model} holds no processor; using the default CLIP-VG processor", file=sys.stderr)
        processor = CLIPVGProcessor.from_defaults(grounding_model.config.image_size)
    return grounding_model, processor


def predict(model: Any, processor: Any, image: PIL.Image.Image, texts: list[str]) -> list[dict[str, Any]]:
    """Run the visual-grounding pipeline: one ``{"label", "box", "score"}`` per expression."""
    grounder = pipeline("visual-grounding", model=model, processor=processor, device=model.device)
    results = grounder(image, text=texts)
    boxes = [
        {"label": r["label"], "box": [r["box"][k] for k in ("xmin", "ymin", "xmax", "ymax")], "score": r["score"]}
        for r in results
    ]
    broken = [b["label"] for b in boxes if not all(math.isfinite(v) for v in [*b["box"], b["score"]])]
    if broken:  # NaN / infinite weights: never printed as a result
        raise UsageError(
            f"the model predicted a non-finite box for {broken[0]!r}: its weights are broken "
            "(NaN or infinite values); reconvert or retrain it"
        )
    return boxes


def draw_boxes(image: PIL.Image.Image, results: list[dict[str, Any]]) -> PIL.Image.Image:
    """A copy of ``image`` with each box outlined and labelled with its expression."""
    canvas = image.copy()
    draw = PIL.ImageDraw.Draw(canvas)
    width = max(2, round(max(image.size) / 200))
    for index, result in enumerate(results):
        colour = _COLOURS[index % len(_COLOURS)]
        x1, y1, x2, y2 = result["box"]
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)
        draw.text((x1 + width + 1, y1 + width + 1), result["label"], fill=colour)
    return canvas


@report_usage_errors
def main(argv: list[str] | None = None) -> int:
    """Print the boxes as JSON; bad input is one line ``error: ...`` and exit status 2, checked before any work."""
    args = parse_args(argv)
    if args.dataset is not None:
        return predict_dataset(args)
    empty = [i for i, text in enumerate(args.text) if not text.strip()]
    if empty:
        raise UsageError(f"--text number {empty[0] + 1} is empty; give a referring expression")
    if args.output:
        check_output_file(args.output, "--output")
        if Path(args.output).suffix.lower() not in PIL.Image.registered_extensions():
            raise UsageError(f"--output {args.output}: unknown image format; use e.g. .png or .jpg")
    _check_device(args.device)
    image = _load_image(args.image)
    dtype = resolve_dtype(args.dtype, args.device)
    model, processor = _load_model_and_processor(args.model, args.device, dtype)
    try:
        results = predict(model, processor, image, args.text)
    except ValueError as error:  # the pipeline's own input checks (e.g. an image too thin to letterbox)
        raise UsageError(f"{first_line(error)}") from error
    if args.output:
        draw_boxes(image, results).save(args.output)
    print(json.dumps(results, indent=2, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
