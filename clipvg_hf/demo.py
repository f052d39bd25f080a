"""``python -m clipvg_hf.demo``: the ``clipvg-demo`` command (:mod:`clipvg_hf.commands.demo`); the demo's steps are
:mod:`clipvg_hf.demo_run`."""

import sys

from clipvg_hf.commands.demo import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
