"""Train CLIP-VG with Accelerate: ``accelerate launch train.py ...`` from a checkout.

The command lives in :mod:`clipvg_hf.commands.train` (also ``accelerate launch -m clipvg_hf.train``, ``clipvg-train``)
and the training loop in :mod:`clipvg_hf.training`;
this file only forwards the command line, so the documented entry point keeps working.
"""

import sys

from clipvg_hf.commands.train import main

if __name__ == "__main__":
    sys.exit(main())
