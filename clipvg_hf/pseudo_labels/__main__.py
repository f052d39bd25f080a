"""``python -m clipvg_hf.pseudo_labels``: the ``clipvg-pseudo-label`` command (:mod:`clipvg_hf.commands.pseudo_label`)."""

import sys

from clipvg_hf.commands.pseudo_label import main

sys.exit(main())
