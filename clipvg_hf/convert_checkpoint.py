"""``python -m clipvg_hf.convert_checkpoint``: the ``clipvg-convert-checkpoint`` command
(:mod:`clipvg_hf.commands.convert_checkpoint`) under its former module name."""

import sys

from .commands.convert_checkpoint import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
