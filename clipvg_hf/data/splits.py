"""Reading the official CLIP-VG / TransVG split files (``<root>/<dataset>/<dataset>_<split>.pth``) safely.

Every row of a split file becomes a :class:`SplitRow`: the image file name, the box in (x1, y1, x2, y2) absolute
pixels both *exactly* as the file stores it and *int-truncated as the official loader does*, the expression and where
the row came from. Files are unpickled with ``torch.load(weights_only=True)`` plus a tiny numpy allowlist, so no
arbitrary code ever runs. Bad rows raise :class:`SplitRowError` naming the file, the row and the reason; the
converter can collect them into a rejects report instead.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..boxes_clipvg import exact_box, official_box
from ..errors import torch_load_reason
from .registry import DATASETS, MIXUP_IMAGE_DIRS, SOURCES, DatasetInfo

__all__ = [
    "DATASETS",
    "SOURCES",
    "DatasetInfo",
    "SplitFileError",
    "SplitRow",
    "SplitRowError",
    "dataset_info",
    "exact_box",
    "has_visible_text",
    "image_path_problem",
    "load_split_file",
    "official_box",
    "parse_row",
    "parse_rows",
    "same_rows",
    "separate_source_files",
]


class SplitFileError(ValueError):
    """A whole split file is unusable (missing, not a list, unsafe pickle, unknown dataset or split)."""

    def __init__(self, file: str | Path, reason: str):
        self.file, self.reason = str(file), reason
        super().__init__(f"{file}: {reason}")


class SplitRowError(ValueError):
    """One row of a split file is malformed; carries the file, the 0-based row index and the reason."""

    def __init__(self, file: str | Path, row: int, reason: str):
        self.file, self.row, self.reason = str(file), row, reason
        super().__init__(f"{file}: row {row}: {reason}")


@dataclass(frozen=True)
class SplitRow:
    """One expression-box pair of a split file, with both box conventions and its provenance."""

    file_name: str
    expression: str
    bbox: tuple[float, float, float, float]  # x1, y1, x2, y2 absolute pixels, exact (x2 = x + w in float64)
    bbox_official: tuple[int, int, int, int]  # x1, y1, x2, y2 int-truncated exactly as the official loader does
    ann_file: str | None  # 2nd field of 5-field rows (annotation file, or None for a pseudo-label placeholder)
    source: str  # one of SOURCES
    source_file: str  # name of the .pth file the row was read from
    source_row: int  # 0-based position in source_file


def dataset_info(key: str) -> DatasetInfo:
    """Look up an official dataset key, with a clear error for unknown ones."""
    try:
        return DATASETS[key]
    except KeyError:
        raise SplitFileError(key, f"unknown dataset {key!r}; expected one of {sorted(DATASETS)}") from None


# numpy objects a split file may legitimately hold (e.g. a box saved as an ndarray); nothing else is allowed.
def _numpy_allowlist() -> list[Any]:
    core = np._core.multiarray
    allow: list[Any] = [np.ndarray, np.dtype, core._reconstruct, core.scalar]
    # files pickled under numpy 1.x name these "numpy.core.multiarray.*"
    allow += [(core._reconstruct, "numpy.core.multiarray._reconstruct"), (core.scalar, "numpy.core.multiarray.scalar")]
    allow += [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "int16", "uint8")]
    return allow


def load_split_file(path: str | Path) -> list[Any]:
    """Unpickle an official split file without executing arbitrary code and check that it is a list."""
    path = Path(path)
    if not path.is_file():
        raise SplitFileError(path, "file not found")
    try:
        with torch.serialization.safe_globals(_numpy_allowlist()):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError for disallowed globals, EOFError/RuntimeError for corrupt files
        raise SplitFileError(path, f"cannot be loaded safely (weights_only=True): {torch_load_reason(err)}") from err
    if not isinstance(data, (list, tuple)):
        raise SplitFileError(path, f"expected a list of rows, got {type(data).__name__}")
    if not data:
        raise SplitFileError(path, "holds no rows (an empty list)")
    return list(data)


def _as_box(value: Any) -> tuple[float, float, float, float] | None:
    """Four finite numbers as floats, or None."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        return None
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            return None
        v = float(v)
        if not math.isfinite(v):
            return None
        out.append(v)
    return tuple(out)  # type: ignore[return-value]


def parse_row(row: Any, index: int, info: DatasetInfo, file: str, source: str) -> SplitRow:
    """Validate one raw row against the dataset's layout and convert its box; raise SplitRowError if malformed."""
    if not isinstance(row, (tuple, list)):
        raise SplitRowError(file, index, f"expected a tuple, got {type(row).__name__}")
    if len(row) != info.num_fields:
        raise SplitRowError(file, index, f"expected {info.num_fields} fields for {info.key!r}, got {len(row)}")
    if info.num_fields == 3:
        image, raw_box, expression = row
        ann_file = None
    else:
        image, ann, raw_box, expression, _attributes = row
        ann_file = ann if isinstance(ann, str) and ann != "useless placeholder" else None
    if not isinstance(image, str) or not image.strip():
        raise SplitRowError(file, index, f"image file name must be a non-empty string, got {image!r}")
    if info.key == "mixup":
        image, ann_file = _mixup_image(image, row[1], file, index), None
    escape = image_path_problem(image)
    if escape:
        raise SplitRowError(file, index, escape)
    box = _as_box(raw_box)
    if box is None:
        raise SplitRowError(file, index, f"box must be 4 finite numbers, got {raw_box!r}")
    if not isinstance(expression, str):
        raise SplitRowError(file, index, f"expression must be a string, got {type(expression).__name__}")
    if not expression.strip():
        raise SplitRowError(file, index, "empty expression")
    if not has_visible_text(expression):
        raise SplitRowError(file, index, f"expression {expression!r} has no visible character")
    return SplitRow(
        file_name=image,
        expression=expression,
        bbox=exact_box(box, info.box_format),
        bbox_official=official_box(box, info.box_format),
        ann_file=ann_file,
        source=source,
        source_file=file,
        source_row=index,
    )


def _mixup_image(image: str, tag: Any, file: str, index: int) -> str:
    """A mixup row's image under the image root: ``COCO_*`` files in the COCO folder, others in the folder their
    2nd field names (``"referit"`` or ``"flickr"``), as HiVG's loader picks it."""
    if image.split("_")[0] == "COCO":
        return f"{MIXUP_IMAGE_DIRS['coco']}/{image}"
    if isinstance(tag, str) and tag in ("referit", "flickr"):
        return f"{MIXUP_IMAGE_DIRS[tag]}/{image}"
    raise SplitRowError(
        file,
        index,
        f"mixup row of a non-COCO image {image!r} must name its source 'referit' or "
        f"'flickr' in the 2nd field, got {tag!r}",
    )


def image_path_problem(name: str) -> str | None:
    """Why an image name from a split file could point outside the image folder (absolute, ``..``), or None."""
    parts = re.split(r"[\\/]", name)
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or "\0" in name:
        return f"image path {name!r} is absolute; it must be relative to the image folder under --image_root"
    if ".." in parts:
        return f"image path {name!r} leaves the image folder ('..'); it must stay inside --image_root"
    return None


def has_visible_text(text: str) -> bool:
    """Whether a text holds a letter, digit, punctuation mark or symbol (not only spaces or zero-width marks)."""
    return any(unicodedata.category(ch)[0] in "LNPS" for ch in text)


def parse_rows(
    rows: Sequence[Any], info: DatasetInfo, file: str, source: str, errors: list[SplitRowError] | None = None
) -> list[SplitRow | None]:
    """Parse every row; with ``errors`` given, collect bad rows there (as None in the output) instead of raising."""
    out: list[SplitRow | None] = []
    for index, row in enumerate(rows):
        try:
            out.append(parse_row(row, index, info, file, source))
        except SplitRowError as err:
            if errors is None:
                raise
            errors.append(err)
            out.append(None)
    return out


_SEPARATE_RE = re.compile(r"^(\d+)_(.+)\.pth$")


def separate_source_files(folder: Path, key: str) -> list[tuple[Path, str]]:
    """The multi-source ``train_separate/`` files in merge order (numeric prefix), each with its source name.

    Names look like ``1_unc+_train_pseudo_template_0_5.pth``; the source is whichever of template / relation /
    caption the name contains.
    """
    found: list[tuple[int, Path, str]] = []
    for path in sorted(folder.iterdir()):
        if path.suffix != ".pth":
            continue
        match = _SEPARATE_RE.match(path.name)
        if not match or not match.group(2).startswith(f"{key}_"):
            raise SplitFileError(
                path, f"unexpected file in train_separate/ (expected '<n>_{key}_..._<source>_...pth')"
            )
        sources = [s for s in ("template", "relation", "caption") if s in match.group(2)]
        if len(sources) != 1:
            raise SplitFileError(
                path, "cannot tell the pseudo-label source (template / relation / caption) from the name"
            )
        found.append((int(match.group(1)), path, sources[0]))
    orders = [n for n, _, _ in found]
    if len(set(orders)) != len(orders):
        raise SplitFileError(folder, f"duplicate numeric prefixes in train_separate/: {sorted(orders)}")
    return [(path, source) for _, path, source in sorted(found)]


def same_rows(a: Iterable[Any], b: Iterable[Any]) -> int | None:
    """Index of the first differing row of two raw row lists (or of the length mismatch), None if equal."""
    a, b = list(a), list(b)
    for i, (ra, rb) in enumerate(zip(a, b)):
        if _normalise(ra) != _normalise(rb):
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def _normalise(value: Any) -> Any:
    """Turn tensors/arrays/tuples into nested lists so rows compare by value."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    return value
