"""``python -m clipvg_hf.evaluate``: the ``clipvg-evaluate`` command (:mod:`clipvg_hf.commands.evaluate`); the loop
and metrics are in :mod:`clipvg_hf.evaluation`."""

import sys

from clipvg_hf.commands.evaluate import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
