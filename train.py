"""Train CLIP-VG with Accelerate: ``accelerate launch train.py ...`` from a checkout.

The training loop lives in :mod:`clipvg_hf.train` (also ``accelerate launch -m clipvg_hf.train``, ``clipvg-train``);
this file only forwards the command line, so the documented entry point keeps working.
"""

import sys

from clipvg_hf.train import cli

if __name__ == "__main__":
    sys.exit(cli())
