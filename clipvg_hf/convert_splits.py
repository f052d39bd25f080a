"""``python -m clipvg_hf.convert_splits``: the ``clipvg-convert-splits`` command
(:mod:`clipvg_hf.commands.convert_splits`); the conversion itself is :mod:`clipvg_hf.data`."""

import sys

from clipvg_hf.commands.convert_splits import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
