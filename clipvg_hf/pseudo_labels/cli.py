"""The ``clipvg-pseudo-label`` command under its former name: :mod:`clipvg_hf.commands.pseudo_label`; the stages
it runs are :mod:`clipvg_hf.pseudo_labels.stages`."""

import sys

from clipvg_hf.commands.pseudo_label import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
