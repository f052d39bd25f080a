"""The one staging writer of every dataset folder: an interrupted run never leaves a mixed dataset.

Every writer of a dataset folder (the split converter, the pseudo-label writer, the official split files) writes its
new version through :func:`staged_folder`: a sibling folder ``.<name>.staging-<pid>`` that starts as the current
folder (files hard-linked, so nothing is copied) and is swapped in when the writer returns. The swap renames the old
folder to ``.<name>.replaced-<pid>``, the staged one to the folder's name, then removes the old one. A run killed
before the swap leaves the old folder as it was (the next run removes its staging folder); killed between the two
renames, the next run puts the old folder back. A writer that raises leaves the old folder as it was too.

Files of a staging folder may be links to the old folder's files, so a writer replaces a file (a new file, or
:func:`write_bytes_atomic`), never rewrites one in place.

:func:`dataset_folder_problem` is the check, before any work, that an output folder holds no other dataset: each
kind of dataset folder is recognised by the file its writer leaves (``conversion.json``, ``pseudo_labels.json``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "KINDS",
    "dataset_folder_problem",
    "folder_kinds",
    "staged_folder",
    "write_bytes_atomic",
    "write_text_atomic",
]

#: Dataset folder kinds: the file that marks a folder of that kind, and the command that writes it.
KINDS = {
    "converted": ("conversion.json", "clipvg-convert-splits"),
    "pseudo-labels": ("pseudo_labels.json", "clipvg-pseudo-label"),
}
_STAGING, _REPLACED = "staging", "replaced"


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a temporary name beside ``path``, then rename it into place (never a half-written file, and
    a hard-linked file it replaces is left as it was)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_text_atomic(path: str | Path, text: str) -> None:
    """:func:`write_bytes_atomic` for UTF-8 text."""
    write_bytes_atomic(path, text.encode("utf-8"))


# -- what a folder holds ------------------------------------------------------------------------------------------
def folder_kinds(folder: str | Path) -> list[str]:
    """The dataset kinds whose mark ``folder`` holds (a pseudo-label run also leaves ``detections/`` first)."""
    path = Path(folder)
    kinds = [kind for kind, (mark, _) in KINDS.items() if (path / mark).is_file()]
    if "pseudo-labels" not in kinds and (path / "detections").is_dir():
        kinds.append("pseudo-labels")
    return kinds


def _looks_like_a_dataset(folder: Path) -> str | None:
    """What makes an unmarked folder a dataset: a dataset card or parquet files (top level or one folder down)."""
    if (folder / "README.md").is_file():
        return "README.md"
    for pattern in ("*.parquet", "*/*.parquet"):
        found = next(iter(sorted(folder.glob(pattern))), None)
        if found is not None:
            return found.relative_to(folder).as_posix()
    return None


def dataset_folder_problem(folder: str | Path, kind: str, argument: str = "--output_dir") -> str | None:
    """Why ``folder`` cannot receive a dataset of ``kind``, or None.

    Accepted: a folder that does not exist yet, or one holding only a dataset of the same kind (rewritten: its other
    configs are kept) and files of no dataset. Refused: a file, a folder holding another kind of dataset, or an
    unmarked dataset (a card or parquet files written by something else).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; expected one of {sorted(KINDS)}")
    path = Path(folder)
    if path.exists() and not path.is_dir():
        return f"{argument} {folder} is a file, not a folder"
    if not path.is_dir():
        return None
    others = [k for k in folder_kinds(path) if k != kind]
    if others:
        mark, command = KINDS[others[0]]
        return (
            f"{argument} {folder} holds a {others[0]} dataset ({mark}, written by {command}); "
            f"its card and configs would be replaced: give another folder"
        )
    if kind not in folder_kinds(path):
        found = _looks_like_a_dataset(path)
        if found is not None:
            return (
                f"{argument} {folder} holds another dataset ({found}; no {KINDS[kind][0]}): "
                "its card and configs would be replaced: give another folder"
            )
    return None


# -- staging ------------------------------------------------------------------------------------------------------
def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _siblings(target: Path, what: str) -> list[tuple[Path, int]]:
    """``.<name>.<what>-<pid>`` folders beside ``target`` with their pid."""
    prefix = f".{target.name}.{what}-"
    found = []
    if target.parent.is_dir():
        for entry in sorted(target.parent.iterdir()):
            suffix = entry.name[len(prefix) :]
            if entry.name.startswith(prefix) and suffix.isdigit() and entry.is_dir() and not entry.is_symlink():
                found.append((entry, int(suffix)))
    return found


def _recover(target: Path) -> None:
    """Clean up after a killed run: put back an old folder left by a cut swap, remove dead runs' staging folders."""
    for old, pid in _siblings(target, _REPLACED):
        if _alive(pid):
            continue
        if not target.exists():  # killed between the two renames: the old version comes back
            os.rename(old, target)
        else:  # killed after the swap, while removing the old version
            shutil.rmtree(old, ignore_errors=True)
    for stage, pid in _siblings(target, _STAGING):
        if not _alive(pid) or pid == os.getpid():
            shutil.rmtree(stage, ignore_errors=True)


def _link_tree(source: Path, destination: Path) -> None:
    """``destination`` as a copy of ``source`` made of hard links (symbolic links copied as links, not followed)."""
    destination.mkdir()
    with os.scandir(source) as entries:
        for entry in entries:
            target = destination / entry.name
            if entry.is_symlink():
                os.symlink(os.readlink(entry.path), target)
            elif entry.is_dir():
                _link_tree(Path(entry.path), target)
            elif entry.is_file():
                try:
                    os.link(entry.path, target)
                except OSError:  # a file system without hard links
                    shutil.copy2(entry.path, target)
            else:
                raise OSError(f"{entry.path}: not a file, folder or link; cannot stage it")


@contextlib.contextmanager
def staged_folder(target: str | Path) -> Iterator[Path]:
    """Yield a sibling staging folder holding ``target``'s current content; swap it in when the block returns.

    If the block raises (or the process dies), ``target`` is left as it was; the staging folder is removed (by the
    next run when the process died). A ``target`` that is a symbolic link is followed: the folder it names is
    replaced and the link kept.
    """
    target = Path(os.path.realpath(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    _recover(target)
    stage = target.parent / f".{target.name}.{_STAGING}-{os.getpid()}"
    try:
        if target.is_dir():
            _link_tree(target, stage)
        else:
            stage.mkdir()
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if target.is_dir():
        old = target.parent / f".{target.name}.{_REPLACED}-{os.getpid()}"
        os.rename(target, old)
        os.rename(stage, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(stage, target)
