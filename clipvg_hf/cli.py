"""What every command does with bad input: one line ``error: ...`` on stderr naming what is wrong, exit status 2.

A user error (a bad flag value, a missing or unreadable file, a dataset without the asked split) is raised as
:class:`UsageError` anywhere below a command's ``main`` and reported by :func:`report_usage_errors`; a traceback is
left only for bugs. The ``argparse`` types below range-check numbers while the arguments are parsed, so nothing is
loaded, written or run before a bad value is refused.
"""

from __future__ import annotations

import argparse
import functools
import math
import pickle
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

__all__ = [
    "UsageError",
    "check_dataset_name",
    "check_number",
    "check_output_file",
    "exit_usage_error",
    "finite_float",
    "first_line",
    "non_negative_float",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "report_usage_errors",
    "torch_load_reason",
]

F = TypeVar("F", bound=Callable[..., Any])


class UsageError(ValueError):
    """Bad input from the user (not a bug): shown as one line, exit status 2."""


def first_line(error: BaseException | str) -> str:
    """The first non-empty line of an error message (library errors often append advice or a traceback)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if lines:
        return lines[0]
    return type(error).__name__ if isinstance(error, BaseException) else "invalid input"


def exit_usage_error(message: str) -> NoReturn:
    """Print ``error: message`` (first line only: never a wrapped library traceback) and exit with status 2."""
    print(f"error: {first_line(message)}", file=sys.stderr)
    raise SystemExit(2)


def report_usage_errors(main: F) -> F:
    """Decorate a command's ``main``: a :class:`UsageError` becomes ``error: ...`` and exit status 2."""

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except UsageError as error:
            exit_usage_error(str(error))

    return wrapper  # type: ignore[return-value]


def check_number(
    name: str,
    value: float | int | None,
    *,
    minimum: float | None = None,
    above: float | None = None,
    integer: bool = False,
    maximum: float | None = None,
) -> None:
    """Raise :class:`UsageError` unless ``value`` is finite and ``>= minimum`` / ``> above`` / ``<= maximum``
    (None passes)."""
    if value is None:
        return
    if isinstance(value, bool) or (integer and not isinstance(value, int)) or not math.isfinite(float(value)):
        kind = "an integer" if integer else "a finite number"
        raise UsageError(f"{name} must be {kind}, got {value!r}")
    if minimum is not None and value < minimum:
        raise UsageError(f"{name} must be at least {minimum:g}, got {value!r}")
    if above is not None and value <= above:
        raise UsageError(f"{name} must be greater than {above:g}, got {value!r}")
    if maximum is not None and value > maximum:
        raise UsageError(f"{name} must be at most {maximum:g}, got {value!r}")


def _number_type(kind: type, description: str, minimum: float | None = None, above: float | None = None):
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


def check_output_file(path: str | Path, name: str) -> Path:
    """An output file path whose folder exists and which is not a folder itself (checked before any work)."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{name} {path} is a folder; give a file name")
    if not path.parent.is_dir():
        raise UsageError(f"{name} {path}: folder {path.parent} does not exist")
    return path


def check_output_dir(path: str | Path, name: str = "--output_dir") -> Path:
    """An output folder that is not an existing file (created later by the command)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{name} {path} is a file, not a folder")
    return path


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_dataset_name(name: str, argument: str) -> str:
    """A dataset or config name that becomes a folder name: letters, digits, ``.``, ``_``, ``-`` (no path separator,
    no ``..``, nothing a ``data_files`` pattern would read as a wildcard); raises :class:`UsageError` otherwise."""
    if not _NAME.fullmatch(name) or ".." in name or len(name) > 100:
        raise UsageError(
            f"{argument} {name!r}: not a name (it names a folder of the output): use letters, digits, '.', '_' and "
            "'-', starting with a letter or digit, without '..', no path separator, at most 100 characters"
        )
    return name


def looks_local(name: str) -> bool:
    """Whether a model / dataset argument names a local folder rather than a Hub id (``org/name`` or ``name``)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or Path(name).expanduser().exists()


def check_model_source(name: str, argument: str = "--model_name_or_path") -> None:
    """A model argument must be an existing folder or look like a Hub id: never "malformed repo id" for a typo."""
    if looks_local(name) and not Path(name).expanduser().is_dir():
        raise UsageError(f"{argument} {name}: model folder not found")


def load_split_checked(dataset: str, config: str, split: str, loader: Callable[..., Any], **kwargs: Any) -> Any:
    """``loader(dataset, config, split)``; a missing folder, an unknown config or split is a :class:`UsageError`."""
    if looks_local(str(dataset)) and not Path(dataset).expanduser().is_dir():
        raise UsageError(f"--dataset {dataset}: dataset folder not found")
    try:
        return loader(dataset, config, split, **kwargs)
    except (ValueError, OSError, ConnectionError) as error:  # unknown config / split, unreachable Hub id
        where = f"--dataset {dataset} --dataset_config {config} split {split!r}"
        raise UsageError(f"{where}: {first_line(error)}") from error


def torch_load_reason(error: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused or failed on a file, in words for the user.

    Names the refused class when there is one and never repeats torch's advice to retry with ``weights_only=False``
    (that would run whatever code the file holds).
    """
    text = str(error)
    match = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) (\S+)", text)
    if match:
        return f"the pickle references {match.group(1)}, which is not allowlisted (it is never unpickled)"
    if isinstance(error, EOFError):
        return "the file ends early (empty or cut off)"
    context = error.__context__
    if context is not None and str(context):  # torch wraps the unpickler's own error
        return f"not a valid torch file ({first_line(context)})"
    if isinstance(error, pickle.UnpicklingError) or "weights_only" in text:
        return "not a valid torch file"
    return f"not a valid torch file ({type(error).__name__}: {first_line(error)})"
