"""What every command does with bad input: one line ``error: ...`` on stderr naming what is wrong, exit status 2.

A user error (a bad flag value, a missing or unreadable file, a dataset without the asked split) is raised as a
:class:`~clipvg_hf.errors.UsageError` (or one of its typed subclasses) anywhere below a command's ``main`` and
reported by :func:`report_usage_errors`; a traceback is left only for bugs. ``argparse``'s own ``parser.error``
ends the same way (one ``error:`` line, exit status 2).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

from ..errors import UsageError, first_line

__all__ = ["report_usage_errors"]


def report_usage_errors(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Decorate a command's ``main(argv) -> int``: a :class:`~clipvg_hf.errors.UsageError` becomes one line
    ``error: ...`` on stderr and exit status 2."""

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except UsageError as error:  # the first line only: never a wrapped library traceback
            print(f"error: {first_line(error)}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
