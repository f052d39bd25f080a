"""``python -m clipvg_hf.curriculum.score``: ``clipvg-curriculum score`` (:mod:`clipvg_hf.commands.curriculum`);
the scoring itself is :func:`clipvg_hf.curriculum.reliability.score_model`."""

import sys

from clipvg_hf.commands.curriculum import score_main

__all__ = ["main"]

main = score_main

if __name__ == "__main__":
    sys.exit(main())
