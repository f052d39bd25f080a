"""``python -m clipvg_hf.curriculum``: the ``clipvg-curriculum`` command (:mod:`clipvg_hf.commands.curriculum`)."""

import sys

from clipvg_hf.commands.curriculum import main

if __name__ == "__main__":
    sys.exit(main())
