"""``python -m clipvg_hf.curriculum.ssa``: ``clipvg-curriculum ssa`` (:mod:`clipvg_hf.commands.curriculum`); the
search itself is :mod:`clipvg_hf.curriculum.single_source`."""

import sys

from clipvg_hf.commands.curriculum import ssa_main

__all__ = ["main"]

main = ssa_main

if __name__ == "__main__":
    sys.exit(main())
