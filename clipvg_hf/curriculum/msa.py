"""``python -m clipvg_hf.curriculum.msa``: ``clipvg-curriculum msa`` (:mod:`clipvg_hf.commands.curriculum`); the
search itself is :mod:`clipvg_hf.curriculum.multi_source`."""

import sys

from clipvg_hf.commands.curriculum import msa_main

__all__ = ["main"]

main = msa_main

if __name__ == "__main__":
    sys.exit(main())
