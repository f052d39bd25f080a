"""The CLIP-VG checkpoint converter under its former module name: the library is :mod:`clipvg_hf.conversion.clipvg`
(with :mod:`clipvg_hf.conversion.common`), the command ``clipvg-convert-checkpoint``; ``main`` here converts with
``--family clipvg``."""

import sys

from .commands.convert_checkpoint import main as _convert_main
from .conversion.clipvg import config_from_state_dict, convert_checkpoint, convert_state_dict
from .conversion.common import (
    CheckpointConversionError,
    add_common_arguments,
    check_finite,
    check_new_output_dir,
    load_original_checkpoint,
)

__all__ = [
    "CheckpointConversionError",
    "add_common_arguments",
    "check_finite",
    "check_new_output_dir",
    "config_from_state_dict",
    "convert_checkpoint",
    "convert_state_dict",
    "load_original_checkpoint",
    "main",
]


def main(argv: list[str] | None = None) -> int:
    """``clipvg-convert-checkpoint --family clipvg``."""
    return _convert_main([*(sys.argv[1:] if argv is None else argv), "--family", "clipvg"])


if __name__ == "__main__":
    sys.exit(main())
