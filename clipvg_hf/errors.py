"""The errors the package raises for bad input, and how a message is cut to one line.

Every class here is a :class:`UsageError`: the user gave something that cannot work (a flag value, a file, a
model, a split), and the message says what and why. Libraries raise them; the command layer
(:func:`clipvg_hf.commands.errors.report_usage_errors`) shows each as one line ``error: ...`` with exit status 2, and
leaves a traceback only for bugs. They are ``ValueError``\\ s, so library callers may catch them as such.

The module needs nothing beyond the standard library: ``pipelines.py`` imports it and is shipped to a Space with
its sibling modules.
"""

from __future__ import annotations

import pickle
import re

__all__ = [
    "HubPublishError",
    "ModelCheckError",
    "OfficialSplitsError",
    "ResultsError",
    "UsageError",
    "first_line",
    "torch_load_reason",
]


class UsageError(ValueError):
    """Bad input from the user (not a bug): shown as one line, exit status 2."""


class HubPublishError(UsageError):
    """Publishing cannot go ahead; the message says why and what to do."""


class ModelCheckError(UsageError):
    """A model id that cannot be resolved, or whose architecture does not serve the requested task."""


class OfficialSplitsError(UsageError):
    """The official files cannot be written (bad target folder, unsafe image name); nothing was written."""


class ResultsError(UsageError):
    """A results file is missing, malformed, or belongs to other weights; the message says which and why."""


def first_line(error: BaseException | str) -> str:
    """The first non-empty line of an error message (library errors often append advice or a traceback)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if lines:
        return lines[0]
    return type(error).__name__ if isinstance(error, BaseException) else "invalid input"


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
