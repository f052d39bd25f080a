#!/usr/bin/env python
"""Convert an official CLIP-VG split pack into a Hugging Face dataset folder, from a checkout.

The command lives in :mod:`clipvg_hf.commands.convert_splits` (also ``clipvg-convert-splits``); see its help.
"""

import sys

from clipvg_hf.commands.convert_splits import main

if __name__ == "__main__":
    sys.exit(main())
