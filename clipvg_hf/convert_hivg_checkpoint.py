"""The HiVG checkpoint converter under its former module name: the library is :mod:`clipvg_hf.conversion.hivg`, the
command ``clipvg-convert-checkpoint``; ``main`` here converts with ``--family hivg``."""

import sys

from .commands.convert_checkpoint import main as _convert_main
from .conversion.hivg import (
    config_from_state_dict,
    convert_checkpoint,
    convert_state_dict,
    is_hivg_state_dict,
    peft_nesting_depth,
    read_clip_config,
    strip_peft_prefix,
)

__all__ = [
    "config_from_state_dict",
    "convert_checkpoint",
    "convert_state_dict",
    "is_hivg_state_dict",
    "main",
    "peft_nesting_depth",
    "read_clip_config",
    "strip_peft_prefix",
]


def main(argv: list[str] | None = None) -> int:
    """``clipvg-convert-checkpoint --family hivg``."""
    return _convert_main([*(sys.argv[1:] if argv is None else argv), "--family", "hivg"])


if __name__ == "__main__":
    sys.exit(main())
