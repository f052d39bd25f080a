"""What every Hub command shares: its error type, its result, repo-id and token checks, logging."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import constants as hub_constants
from huggingface_hub import get_token

from ..errors import HubPublishError

__all__ = ["HubPublishError", "PushResult", "configure_logging", "looks_local", "resolve_token", "validate_repo_id"]

_REPO_ID = re.compile(r"^(?P<org>[A-Za-z0-9][A-Za-z0-9_.-]{0,95})/(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]{0,95})$")


@dataclass
class PushResult:
    """What a push did (or, for a dry run, would do)."""

    repo_id: str
    repo_type: str
    files: list[str]
    notes: list[str] = field(default_factory=list)
    url: str | None = None
    folder: Path | None = None  # the staged (dry-run) folder


def validate_repo_id(repo_id: str) -> str:
    """Return ``repo_id`` if it is ``ORG/NAME`` with Hub-legal characters, else raise :class:`HubPublishError`."""
    match = _REPO_ID.match(repo_id or "")
    if match is None or any(bad in repo_id for bad in ("--", "..")) or repo_id.endswith((".git", ".")):
        raise HubPublishError(
            f"malformed repo id {repo_id!r}: expected ORG/NAME (letters, digits, '-', '_', '.'; no '--' or '..'; "
            "at most 96 characters each), e.g. my-org/clip-vg-refcoco"
        )
    return repo_id


def resolve_token(token: str | None = None) -> str:
    """The token to push with: ``token``, else ``HF_TOKEN`` or the one saved by ``hf auth login``."""
    if hub_constants.HF_HUB_OFFLINE:
        raise HubPublishError("HF_HUB_OFFLINE is set: unset it (or set it to 0) to push to the Hub")
    token = token or get_token()
    if not token:
        raise HubPublishError(
            "no Hugging Face token: set HF_TOKEN, run `hf auth login`, or pass --token (a token with write access)"
        )
    return token


def looks_local(name: str) -> bool:
    """True for a dataset name that is a local path rather than a Hub id."""
    return (
        Path(name).expanduser().exists()
        or name.startswith(("/", ".", "~"))
        or "\\" in name
        or _REPO_ID.match(name) is None
    )


def configure_logging() -> None:
    """Plain INFO logging for the command line."""
    logging.basicConfig(level=os.environ.get("CLIPVG_LOG_LEVEL", "INFO"), format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
