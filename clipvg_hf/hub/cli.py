"""``python -m clipvg_hf.hub.cli``: the ``clipvg-push`` command (:mod:`clipvg_hf.commands.push`); the publishing
itself is :mod:`clipvg_hf.hub`."""

import sys

from clipvg_hf.commands.push import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
