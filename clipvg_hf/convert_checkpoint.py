"""The ``clipvg-convert-checkpoint`` command: an official CLIP-VG or HiVG checkpoint -> a transformers folder.

    python -m clipvg_hf.convert_checkpoint --checkpoint best_checkpoint.pth --output_dir clip-vg-refcoco

``--family auto`` (the default) tells the two families apart by the state dict's keys; ``--family clipvg`` /
``--family hivg`` force one. This module sits on top of both converters so that neither imports the other.
"""

import argparse
import sys

from .cli import exit_usage_error
from .convert_hivg_checkpoint import is_hivg_state_dict
from .convert_hivg_checkpoint import main as convert_hivg
from .convert_original_checkpoint import CheckpointConversionError, load_original_checkpoint
from .convert_original_checkpoint import main as convert_clipvg

__all__ = ["main"]

FAMILIES = ("auto", "clipvg", "hivg")


def main(argv: list[str] | None = None) -> int:
    """Read ``--family`` and ``--checkpoint``, then hand the whole command line to the family's converter."""
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--family", choices=FAMILIES, default="auto")
    pre.add_argument("--checkpoint")
    known, rest = pre.parse_known_args(argv)
    if known.family == "clipvg" or known.checkpoint is None:  # the CLIP-VG parser reports a missing --checkpoint
        return convert_clipvg(_without_family(argv))
    try:
        checkpoint = load_original_checkpoint(known.checkpoint)
    except (CheckpointConversionError, FileNotFoundError) as error:
        exit_usage_error(str(error))
    if known.family == "hivg" or is_hivg_state_dict(checkpoint["model"]):
        return convert_hivg(_without_family(argv), checkpoint=checkpoint)
    return convert_clipvg(_without_family(argv))


def _without_family(argv: list[str]) -> list[str]:
    """The command line minus ``--family X`` / ``--family=X`` (each converter knows its own family)."""
    out, skip = [], False
    for index, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg == "--family":
            skip = index + 1 < len(argv)
        elif not arg.startswith("--family="):
            out.append(arg)
    return out


if __name__ == "__main__":
    sys.exit(main())
