#!/usr/bin/env python
"""Publish CLIP-VG on the Hugging Face Hub, from a checkout.

The command lives in :mod:`clipvg_hf.commands.push` (also ``clipvg-push``); see its help.
"""

import sys

from clipvg_hf.commands.push import main

if __name__ == "__main__":
    sys.exit(main())
