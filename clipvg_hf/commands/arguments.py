"""``argparse`` types that range-check numbers while the arguments are parsed, so that a bad value is refused
(``error: argument --x: must be ...``, exit status 2) before anything is loaded, written or run."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ..checks import check_number
from ..errors import UsageError

__all__ = ["finite_float", "non_negative_float", "non_negative_int", "positive_float", "positive_int"]


def _number_type(
    kind: type, description: str, minimum: float | None = None, above: float | None = None
) -> Callable[[str], float | int]:
    """An argparse type: ``kind(text)`` checked by :func:`~clipvg_hf.checks.check_number`."""

    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {description}, got {text!r}") from None
        try:
            check_number("value", value, minimum=minimum, above=above, integer=kind is int)
        except UsageError:
            raise argparse.ArgumentTypeError(f"must be {description}, got {text!r}") from None
        return value

    parse.__name__ = description  # argparse names the type in its messages
    return parse


positive_int = _number_type(int, "a positive integer", minimum=1)
non_negative_int = _number_type(int, "an integer >= 0", minimum=0)
finite_float = _number_type(float, "a finite number")
positive_float = _number_type(float, "a finite number > 0", above=0)
non_negative_float = _number_type(float, "a finite number >= 0", minimum=0)
