"""``python -m clipvg_hf.curriculum.grid``: ``clipvg-curriculum grid`` (:mod:`clipvg_hf.commands.curriculum`)."""

import sys

from clipvg_hf.commands.curriculum import grid_main

__all__ = ["main"]

main = grid_main

if __name__ == "__main__":
    sys.exit(main())
