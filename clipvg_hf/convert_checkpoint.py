"""The ``clipvg-convert-checkpoint`` command: an official CLIP-VG or HiVG checkpoint -> a transformers folder.

    python -m clipvg_hf.convert_checkpoint --checkpoint best_checkpoint.pth --output_dir clip-vg-refcoco

``--family auto`` (the default) tells the two families apart by the state dict's keys; ``--family clipvg`` /
``--family hivg`` force one. One parser documents the flags of both families; the HiVG-only flags given for a
CLIP-VG checkpoint are refused, not ignored. This module sits on top of both converters so that neither imports the
other.
"""

import argparse
import sys

from .cli import UsageError, exit_usage_error
from .convert_hivg_checkpoint import add_hivg_arguments, is_hivg_state_dict
from .convert_hivg_checkpoint import run as convert_hivg
from .convert_original_checkpoint import (
    CheckpointConversionError,
    add_common_arguments,
    check_new_output_dir,
    load_original_checkpoint,
)
from .convert_original_checkpoint import run as convert_clipvg

__all__ = ["HIVG_ONLY_FLAGS", "build_parser", "main"]

FAMILIES = ("auto", "clipvg", "hivg")
#: Flags only the HiVG converter reads (attribute -> value that means "not given").
HIVG_ONLY_FLAGS = {"merge_lora": False, "clip_config": None, "bridge_text_source": None, "bridge_batch_mixing": False}


def build_parser() -> argparse.ArgumentParser:
    """The command's parser: the common flags, ``--family`` and the HiVG flags in their own group."""
    parser = argparse.ArgumentParser(
        prog="clipvg-convert-checkpoint",
        description="Convert an official CLIP-VG or HiVG checkpoint (best_checkpoint.pth) into a transformers folder "
        "(config, model.safetensors, processor). Read with torch.load(weights_only=True); every size is inferred "
        "from the state dict; NaN or infinite weights and a non-empty --output_dir are refused.",
    )
    add_common_arguments(parser)
    parser.add_argument(
        "--family",
        choices=FAMILIES,
        default="auto",
        help="model family of the checkpoint (default auto: recognised by its state dict's keys)",
    )
    add_hivg_arguments(
        parser.add_argument_group(
            "HiVG checkpoints only", "refused for a CLIP-VG checkpoint; --clip_config is required for HiVG"
        )
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Convert; bad input is one line ``error: ...`` and exit status 2, before anything is written."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        check_new_output_dir(args.output_dir)  # before the checkpoint is read
        checkpoint = load_original_checkpoint(args.checkpoint)
    except (UsageError, CheckpointConversionError, FileNotFoundError) as error:
        exit_usage_error(str(error))
    family = args.family
    if family == "auto":
        family = "hivg" if is_hivg_state_dict(checkpoint["model"]) else "clipvg"
    if family == "hivg":
        return convert_hivg(args, checkpoint=checkpoint)
    given = [f"--{name}" for name, unset in HIVG_ONLY_FLAGS.items() if getattr(args, name) != unset]
    if given:
        how = "--family clipvg" if args.family == "clipvg" else "its state dict has no HiVG bridges"
        verb = "applies" if len(given) == 1 else "apply"
        exit_usage_error(
            f"{' and '.join(given)} {verb} only to HiVG checkpoints, and {args.checkpoint} is converted as CLIP-VG "
            f"({how})"
        )
    return convert_clipvg(args, checkpoint=checkpoint)


if __name__ == "__main__":
    sys.exit(main())
