"""``python -m clipvg_hf.train`` (also ``accelerate launch -m clipvg_hf.train``): the ``clipvg-train`` command
(:mod:`clipvg_hf.commands.train`); the training loop is :mod:`clipvg_hf.training`."""

import sys

from clipvg_hf.commands.train import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
