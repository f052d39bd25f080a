"""``clipvg-app``: serve the Gradio demo of the ``"visual-grounding"`` pipeline (:mod:`clipvg_hf.app`).

clipvg-app --model DIR_OR_HUB_ID [--port 7860] [--host 127.0.0.1] [--dtype auto|fp32|bf16|int8]
"""

from __future__ import annotations

from ..app import parse_args, serve
from .errors import report_usage_errors

__all__ = ["main"]


@report_usage_errors
def main(argv: list[str] | None = None) -> int:
    """Serve until interrupted; a bad flag or a model that cannot load is one line ``error: ...``, exit status 2."""
    serve(parse_args(argv))
    return 0
