"""``python -m clipvg_hf.pseudo_labels``: the ``clipvg-pseudo-label`` command."""

from .cli import cli

raise SystemExit(cli())
