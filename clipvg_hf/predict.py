"""``python -m clipvg_hf.predict``: the ``clipvg-predict`` command (:mod:`clipvg_hf.commands.predict`)."""

import sys

from clipvg_hf.commands.predict import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
