"""``clipvg-convert-checkpoint``: an official CLIP-VG or HiVG checkpoint -> a transformers folder.

    clipvg-convert-checkpoint --checkpoint best_checkpoint.pth --output_dir clip-vg-refcoco
    clipvg-convert-checkpoint --checkpoint hivg.pth --output_dir hivg-refcoco --clip_config clip/config.json

``--family auto`` (the default) asks the model-family registry (:mod:`clipvg_hf.families`) which family the state
dict is; ``--family clipvg`` / ``--family hivg`` force one. One parser documents the flags of every family; a flag
of another family than the checkpoint's is refused, not ignored. The output folder must be new or empty, for every
family, and is checked before the checkpoint is read.
"""

from __future__ import annotations

import argparse
import logging

from ..conversion.common import add_common_arguments, check_new_output_dir, load_original_checkpoint, save_converted
from ..conversion.hivg import OPTIONS as HIVG_OPTIONS
from ..conversion.hivg import add_hivg_arguments
from ..errors import UsageError
from ..families import FAMILY_CHOICES, convert_official_checkpoint
from .errors import report_usage_errors

__all__ = ["build_parser", "main"]


def build_parser(prog: str = "clipvg-convert-checkpoint") -> argparse.ArgumentParser:
    """The command's parser: the common flags, ``--family`` and each family's own flags in their own group."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Convert an official CLIP-VG or HiVG checkpoint (best_checkpoint.pth) into a transformers folder "
        "(config, model.safetensors, remote code, processor). Read with torch.load(weights_only=True); every size is "
        "inferred from the state dict; NaN or infinite weights and a non-empty --output_dir are refused.",
    )
    add_common_arguments(parser)
    parser.add_argument(
        "--family",
        choices=FAMILY_CHOICES,
        default="auto",
        help="model family of the checkpoint (default auto: recognised by its state dict's keys)",
    )
    add_hivg_arguments(
        parser.add_argument_group(
            "HiVG checkpoints only", "refused for a CLIP-VG checkpoint; --clip_config is required for HiVG"
        )
    )
    return parser


@report_usage_errors
def main(argv: list[str] | None = None) -> int:
    """Convert; bad input is one line ``error: ...`` and exit status 2, before anything is written."""
    args = build_parser().parse_args(argv)
    check_new_output_dir(args.output_dir)  # before the checkpoint is read
    try:
        checkpoint = load_original_checkpoint(args.checkpoint)
    except FileNotFoundError as error:
        raise UsageError(str(error)) from error
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    family, model = convert_official_checkpoint(
        args.checkpoint,
        checkpoint,
        args.family,
        trainable_clip=args.trainable_clip,
        fusion_num_heads=args.fusion_num_heads,
        **{name: getattr(args, name) for name in HIVG_OPTIONS},
    )
    del checkpoint
    save_converted(model, args.output_dir)
    print(f"wrote {args.output_dir}: {family.summary(model)}")
    return 0
