"""Checks of user input that commands and libraries share: numbers, output paths, names that become folders, model
and dataset sources. Each raises :class:`~clipvg_hf.errors.UsageError` with a message naming the argument, so the
command layer shows it as one line ``error: ...`` (exit status 2) before anything is loaded, written or run.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import UsageError, first_line

__all__ = [
    "check_dataset_name",
    "check_model_source",
    "check_number",
    "check_output_dir",
    "check_output_file",
    "load_split_checked",
    "looks_local",
]


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
