"""The error and argument helpers under their former name, for the modules being reworked beside the command layer
(the checkpoint converters, ``data/splits.py``, ``data/hub_layouts.py``) until they import :mod:`clipvg_hf.errors`,
:mod:`clipvg_hf.checks` and :mod:`clipvg_hf.commands` themselves."""

from __future__ import annotations

from typing import NoReturn

from .checks import check_dataset_name, check_output_dir, looks_local
from .commands.arguments import positive_int
from .commands.errors import report_usage_errors, usage_error_exit
from .errors import UsageError, first_line, torch_load_reason

__all__ = [
    "UsageError",
    "check_dataset_name",
    "check_output_dir",
    "exit_usage_error",
    "first_line",
    "looks_local",
    "positive_int",
    "report_usage_errors",
    "torch_load_reason",
]


def exit_usage_error(message: str) -> NoReturn:
    """Print ``error: message`` (first line only) and exit with status 2."""
    raise usage_error_exit(message)
