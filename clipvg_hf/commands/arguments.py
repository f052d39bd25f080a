"""``argparse`` types that range-check numbers while the arguments are parsed, so that a bad value is refused
(``error: argument --x: must be ...``, exit status 2) before anything is loaded, written or run; and the arguments
that every command running the evaluation loop shares."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ..checks import check_number
from ..errors import UsageError
from ..precision import add_dtype_argument

__all__ = [
    "add_loop_arguments",
    "finite_float",
    "non_negative_float",
    "non_negative_int",
    "positive_float",
    "positive_int",
]


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


def add_loop_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of a run of the evaluation loop (:func:`clipvg_hf.evaluation.eval_loader`): ``--batch_size``,
    ``--num_workers``, ``--image_root``, ``--cpu`` and ``--dtype`` (fp32 by default: the exact path)."""
    parser.add_argument("--batch_size", type=positive_int, default=128)
    parser.add_argument("--num_workers", type=non_negative_int, default=0)
    parser.add_argument("--image_root", help="root of the images of a path-mode dataset")
    parser.add_argument("--cpu", action="store_true", help="force the CPU (also for several processes)")
    add_dtype_argument(parser, default="fp32")
