"""Referring-expression datasets in the layouts people hold on the Hub, read as the project's image-grouped rows.

A *layout* says how one dataset row holds images, boxes, sentences and ids. :func:`detect_layout` picks it from a
``datasets`` dataset's features; :func:`layout_rows` turns the rows into the rows :class:`GroundingDataset` reads
(an image with all its expressions, ``bbox`` exact and ``bbox_official`` int-truncated, (x1, y1, x2, y2) pixels),
keeping every identity field of the source (image, annotation, ref and sentence ids, the REFER file name, the source
row) so that results can be joined with other tools; :func:`open_split` does both for a Hub id or a local folder.

Layouts (:data:`LAYOUTS`):

- ``jxu124/refcoco-benchmark`` (also ``jxu124/refclef-benchmark``): one row per image, ``ref_list`` of refs with
  their sentences, images embedded, COCO boxes (x, y, w, h) pixels; splits such as ``refcoco_unc_val``;
- ``jxu124/refcoco`` (``refcocoplus``, ``refcocog``): one row per object, ``sentences``, boxes (x1, y1, x2, y2)
  pixels (the official int box is taken from the COCO (x, y, w, h) in ``raw_anns``), images NOT embedded:
  ``image_path`` (``coco/train2014/COCO_train2014_*.jpg``) is read under ``image_root``, as
  ``<image_root>/<image_path>`` or else ``<image_root>/<file name>`` (a COCO train2014 folder); never outside it;
- ``lmms-lab/RefCOCO`` (``RefCOCOplus``, ``RefCOCOg``, and the ``lmms-lab-encoder`` copies): one row per object,
  sentences in ``answer``, images embedded, (x, y, w, h) pixels; its RefCOCO ``val`` (8,811 rows) and RefCOCOg
  ``val`` (7,573) mix the UNC/UMD val with the Google val, and RefCOCO ``test`` (5,000) is the Google test:
  :func:`partition_note` says so (:data:`KNOWN_PARTITIONS`);
- ``Kangheng/refcoco`` (``refcocop``, ``refcocog``): one row per sentence (``question``), images embedded, ``bbox``
  a JSON string read as (x1, y1, x2, y2) pixels (the order is not documented by the dataset), no COCO ids.

The official int box (``bbox_official``, what CLIP-VG's Acc@0.5 scores against) truncates the COCO (x, y, w, h) as
the official loader does; an (x1, y1, x2, y2) source without the COCO box gets ``w = x2 - x1`` rounded to 1e-6.

Adding a layout is a small mapping, not a fork: :func:`register_layout` with a :class:`MappedLayout` naming the
columns, e.g.::

    register_layout(MappedLayout(
        name="me/my-refs", columns={"image": "img", "sentences": "texts", "bbox": "box", "image_id": "img_id"},
        box_format="xyxy"))

Rows that cannot be used (a box with no area after the official int truncation, a box outside its image by more
than ``box_tolerance`` pixels, a missing or unreadable image, an expression without visible text or longer than
CLIP's text context) are *rejected*: counted, listed in the :class:`SplitReport` with the source row and the reason,
never silently dropped.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import PIL.Image

from ..boxes_clipvg import exact_box, official_box
from ..checks import looks_local
from ..errors import UsageError, first_line
from .decode import open_image
from .splits import has_visible_text, image_path_problem

__all__ = [
    "KNOWN_PARTITIONS",
    "LAYOUTS",
    "Layout",
    "LayoutSplit",
    "MappedLayout",
    "Ref",
    "SplitReport",
    "convert_hub_dataset",
    "detect_layout",
    "is_native",
    "layout_features",
    "layout_rows",
    "open_split",
    "partition_note",
    "register_layout",
]

#: Identity fields each expression keeps from its source (strings: some sources use string ids), besides
#: ``source_row`` (the row of the source split) and ``source_file`` (``<dataset>:<split>``).
ID_FIELDS = ("image_id", "ann_id", "ref_id", "sent_id", "ref_file_name")


@dataclass
class Ref:
    """One referred object of a source row with its sentences, before any check."""

    image_key: str  # rows with the same key share one image
    file_name: str  # the image's file name (for a path layout: its path under image_root)
    box: Any  # four numbers in ``box_format``
    box_format: str  # "xywh" or "xyxy"
    sentences: list[tuple[str, Any]]  # (text, sentence id or None)
    image: dict[str, Any] | None = None  # an undecoded Image cell {"bytes", "path"} (embedded layouts)
    image_path: str | None = None  # path relative to image_root (path layouts)
    width: int | None = None  # as the source declares it (else read from the image header)
    height: int | None = None
    official_box: Any = None  # the box the official int truncation starts from (default: ``box``)
    official_format: str | None = None
    ids: dict[str, Any] = field(default_factory=dict)  # image_id, ann_id, ref_id, ref_file_name


@dataclass(frozen=True)
class Layout:
    """How one Hub layout holds its data: the columns that identify it and a reader of one row into refs."""

    name: str
    required: frozenset[str]  # top-level columns that must all be present
    read: Callable[[Mapping[str, Any]], list[Ref]]
    images: str = "embedded"  # "embedded" or "path" (then image_root is required)
    row_unit: str = "object"  # "image", "object" or "sentence": what one source row is
    repos: tuple[str, ...] = ()
    image_columns: tuple[str, ...] = ("image",)  # Image columns read undecoded
    accepts: Callable[[datasets.Features], bool] | None = None  # a finer test than the columns


@dataclass(frozen=True)
class MappedLayout:
    """A layout described by a mapping of roles to column names, for flat one-row-per-object/sentence datasets.

    Roles: ``image`` (an embedded Image column) or ``image_path`` (a path under image_root), ``sentences`` (a
    string, a list of strings, or a list of {``sent``/``raw``, ``sent_id``} structs), ``bbox`` (four numbers or a
    JSON string of them), optionally ``width`` / ``height`` (or ``size``: [w, h]), ``file_name`` and the id columns
    ``image_id``, ``ann_id``, ``ref_id``. Rows with the same ``image_id`` (else the same image bytes or path) share
    an image.
    """

    name: str
    columns: Mapping[str, str]
    box_format: str = "xyxy"
    row_unit: str = "object"
    repos: tuple[str, ...] = ()

    def layout(self) -> Layout:
        if self.box_format not in ("xywh", "xyxy"):
            raise ValueError(f"layout {self.name!r}: box_format must be 'xywh' or 'xyxy', got {self.box_format!r}")
        if "sentences" not in self.columns or "bbox" not in self.columns:
            raise ValueError(f"layout {self.name!r}: the mapping needs 'sentences' and 'bbox' columns")
        if ("image" in self.columns) == ("image_path" in self.columns):
            raise ValueError(f"layout {self.name!r}: map exactly one of 'image' (embedded) or 'image_path'")
        columns = dict(self.columns)
        path_mode = "image_path" in columns

        def read(row: Mapping[str, Any]) -> list[Ref]:
            sentences = _sentences(row[columns["sentences"]])
            width, height = _declared_size(row, columns)
            ids = {key: row.get(columns[key]) for key in ("image_id", "ann_id", "ref_id") if key in columns}
            file_name = str(row[columns["file_name"]]) if "file_name" in columns else ""
            if path_mode:
                path = str(row[columns["image_path"]])
                key = f"path:{path}"
                image = None
            else:
                image = row[columns["image"]]
                path = None
                key = f"id:{ids['image_id']}" if ids.get("image_id") is not None else _bytes_key(image)
                file_name = file_name or (image or {}).get("path") or ""
            return [
                Ref(
                    image_key=key,
                    file_name=Path(path).name if path else file_name,
                    box=_box_value(row[columns["bbox"]]),
                    box_format=self.box_format,
                    sentences=sentences,
                    image=image,
                    image_path=path,
                    width=width,
                    height=height,
                    ids={**ids, "ref_file_name": file_name or None},
                )
            ]

        return Layout(
            self.name,
            frozenset(columns.values()),
            read,
            images="path" if path_mode else "embedded",
            row_unit=self.row_unit,
            repos=self.repos,
            image_columns=() if path_mode else (columns["image"],),
        )


# ---------------------------------------------------------------------------------------------------------------
# Field helpers
# ---------------------------------------------------------------------------------------------------------------


def _sentences(value: Any) -> list[tuple[str, Any]]:
    """(text, sentence id) pairs from a string, a list of strings or a list of REFER sentence structs."""
    if value is None:
        return []
    if isinstance(value, str):
        return [(value, None)]
    out = []
    for item in value:
        if isinstance(item, Mapping):
            text = item.get("sent") or item.get("raw") or ""
            out.append((str(text), item.get("sent_id")))
        else:
            out.append((str(item), None))
    return out


def _box_value(value: Any) -> Any:
    """A box column value: four numbers, or a JSON string of them (Kangheng); returned as given if unreadable."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _declared_size(row: Mapping[str, Any], columns: Mapping[str, str]) -> tuple[int | None, int | None]:
    if "size" in columns:
        size = row.get(columns["size"])
        return (int(size[0]), int(size[1])) if size is not None and len(size) == 2 else (None, None)
    width = row.get(columns["width"]) if "width" in columns else None
    height = row.get(columns["height"]) if "height" in columns else None
    return (int(width) if width is not None else None, int(height) if height is not None else None)


def _bytes_key(image: Mapping[str, Any] | None) -> str:
    data = (image or {}).get("bytes")
    if data:
        return "sha1:" + hashlib.sha1(data).hexdigest()
    return f"path:{(image or {}).get('path')}"


_COCO_ID = re.compile(r"^COCO_(?:train|val)\d{4}_(\d{12})")


def _coco_image_file(file_name: str) -> tuple[str | None, str]:
    """The COCO image id and image file name of a REFER-style name (``COCO_train2014_<12 digits>_<suffix>.jpg``)."""
    match = _COCO_ID.match(file_name or "")
    if not match:
        return None, file_name
    prefix = file_name[: match.end()]
    return str(int(match.group(1))), prefix + Path(file_name).suffix


def _json_field(text: Any) -> dict[str, Any]:
    if isinstance(text, Mapping):
        return dict(text)
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _coco_xywh(xyxy: Any) -> list[float] | None:
    """The COCO (x, y, w, h) behind an (x1, y1, x2, y2) box of a COCO-based source: ``w = x2 - x1`` rounded to
    1e-6 (COCO boxes have 2 decimals), so the official truncation ``int(x) + int(w)`` is the native path's."""
    try:
        x1, y1, x2, y2 = (float(v) for v in xyxy)
    except (TypeError, ValueError):
        return None
    return [x1, y1, round(x2 - x1, 6), round(y2 - y1, 6)]


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


# ---------------------------------------------------------------------------------------------------------------
# The built-in layouts
# ---------------------------------------------------------------------------------------------------------------


def _read_benchmark(row: Mapping[str, Any]) -> list[Ref]:
    """jxu124/refcoco-benchmark, jxu124/refclef-benchmark: one image, its refs in ``ref_list``."""
    info = row.get("image_info") or {}
    file_name = str(info.get("file_name") or (row.get("image") or {}).get("path") or "")
    refs = []
    for ref in row.get("ref_list") or []:
        ann, ref_info = ref.get("ann_info") or {}, ref.get("ref_info") or {}
        refs.append(
            Ref(
                image_key=f"id:{info.get('id')}" if info.get("id") is not None else _bytes_key(row.get("image")),
                file_name=file_name,
                box=ann.get("bbox"),
                box_format="xywh",
                sentences=_sentences(ref_info.get("sentences")),
                image=row.get("image"),
                width=info.get("width"),
                height=info.get("height"),
                ids={
                    "image_id": info.get("id", ref_info.get("image_id")),
                    "ann_id": ann.get("id", ref_info.get("ann_id")),
                    "ref_id": ref_info.get("ref_id"),
                    "ref_file_name": ref_info.get("file_name"),
                },
            )
        )
    return refs


def _read_jxu124_refcoco(row: Mapping[str, Any]) -> list[Ref]:
    """jxu124/refcoco, refcocoplus, refcocog: one object; xyxy ``bbox``; COCO xywh in ``raw_anns``; image by path."""
    image_info = _json_field(row.get("raw_image_info"))
    coco_box = _json_field(row.get("raw_anns")).get("bbox")
    path = str(row.get("image_path") or "")
    return [
        Ref(
            image_key=f"path:{path}",
            file_name=str(image_info.get("file_name") or Path(path).name),
            box=row.get("bbox"),
            box_format="xyxy",
            sentences=_sentences(row.get("sentences")),
            image_path=path,
            width=image_info.get("width"),
            height=image_info.get("height"),
            official_box=coco_box if coco_box is not None else _coco_xywh(row.get("bbox")),
            official_format="xywh",
            ids={
                "image_id": row.get("image_id"),
                "ann_id": row.get("ann_id"),
                "ref_id": row.get("ref_id"),
                "ref_file_name": row.get("file_name"),
            },
        )
    ]


def _read_lmms_lab(row: Mapping[str, Any]) -> list[Ref]:
    """lmms-lab/RefCOCO*: one object, sentences in ``answer``, COCO xywh ``bbox``, ``question_id`` = COCO ann id."""
    image_id, image_file = _coco_image_file(str(row.get("file_name") or ""))
    return [
        Ref(
            image_key=f"id:{image_id}" if image_id is not None else _bytes_key(row.get("image")),
            file_name=image_file,
            box=row.get("bbox"),
            box_format="xywh",
            sentences=_sentences(row.get("answer")),
            image=row.get("image"),
            ids={"image_id": image_id, "ann_id": row.get("question_id"), "ref_file_name": row.get("file_name")},
        )
    ]


def _read_kangheng(row: Mapping[str, Any]) -> list[Ref]:
    """Kangheng/refcoco*: one sentence (``question``), ``bbox`` a JSON string (x1, y1, x2, y2), ``image_size`` [w, h]."""
    size = row.get("image_size")
    width, height = (int(size[0]), int(size[1])) if size is not None and len(size) == 2 else (None, None)
    image = row.get("image")
    box = _box_value(row.get("bbox"))
    return [
        Ref(
            image_key=_bytes_key(image),
            file_name=str((image or {}).get("path") or ""),
            box=box,
            box_format="xyxy",
            official_box=_coco_xywh(box),
            official_format="xywh",
            sentences=_sentences(row.get("question")),
            image=image,
            width=width,
            height=height,
        )
    ]


def _is_kangheng(features: datasets.Features) -> bool:
    return features.get("bbox") is not None and getattr(features["bbox"], "dtype", None) == "string"


#: Registered layouts, most specific (most required columns) first when several match.
LAYOUTS: dict[str, Layout] = {}


def register_layout(layout: Layout | MappedLayout) -> Layout:
    """Add (or replace) a layout; a :class:`MappedLayout` is turned into a :class:`Layout`. Returns it."""
    if isinstance(layout, MappedLayout):
        layout = layout.layout()
    LAYOUTS[layout.name] = layout
    return layout


for _layout in (
    Layout(
        "jxu124/refcoco-benchmark",
        frozenset({"ref_list", "image_info", "image"}),
        _read_benchmark,
        row_unit="image",
        repos=("jxu124/refcoco-benchmark", "jxu124/refclef-benchmark"),
    ),
    Layout(
        "jxu124/refcoco",
        frozenset({"image_path", "bbox", "sentences", "raw_image_info", "image_id", "ann_id", "ref_id"}),
        _read_jxu124_refcoco,
        images="path",
        repos=("jxu124/refcoco", "jxu124/refcocoplus", "jxu124/refcocog"),
        image_columns=(),
    ),
    Layout(
        "lmms-lab/RefCOCO",
        frozenset({"question_id", "image", "answer", "bbox", "file_name"}),
        _read_lmms_lab,
        repos=("lmms-lab/RefCOCO", "lmms-lab/RefCOCOplus", "lmms-lab/RefCOCOg", "lmms-lab-encoder/RefCOCO"),
    ),
    Layout(
        "Kangheng/refcoco",
        frozenset({"question", "bbox", "image", "image_size"}),
        _read_kangheng,
        row_unit="sentence",
        repos=("Kangheng/refcoco", "Kangheng/refcocop", "Kangheng/refcocog"),
        accepts=_is_kangheng,
    ),
):
    register_layout(_layout)


#: Source splits that are not the official partition their name suggests: (layout, split, rows) -> one line.
KNOWN_PARTITIONS: dict[tuple[str, str, int], str] = {
    ("lmms-lab/RefCOCO", "val", 8811): (
        "lmms-lab RefCOCO 'val' (8,811 objects) is UNC val (3,811) + Google val (5,000): "
        "not comparable with published RefCOCO UNC val numbers"
    ),
    ("lmms-lab/RefCOCO", "test", 5000): (
        "lmms-lab RefCOCO 'test' (5,000 objects) is the Google test split (UNC has no 'test'): "
        "not comparable with UNC testA/testB numbers"
    ),
    ("lmms-lab/RefCOCO", "val", 7573): (
        "lmms-lab RefCOCOg 'val' (7,573 objects) is UMD val (2,573) + Google val (5,000): "
        "not comparable with published RefCOCOg UMD val numbers"
    ),
}


def partition_note(layout: str, split: str, num_rows: int) -> str | None:
    """The one-line warning for a source split that mixes or renames official partitions (by its row count)."""
    return KNOWN_PARTITIONS.get((layout, split, int(num_rows)))


# ---------------------------------------------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------------------------------------------


NATIVE_COLUMNS = frozenset({"image", "file_name", "width", "height", "expressions"})


def is_native(features: datasets.Features) -> bool:
    """Whether a split already has the project's rows (a ``clipvg-convert-splits`` / pseudo-label config)."""
    return NATIVE_COLUMNS <= set(features)


def detect_layout(features: datasets.Features, where: str = "the dataset") -> Layout:
    """The registered layout of a dataset's features; :class:`UsageError` (one line) naming the columns found and
    the layouts supported when none (or several equally specific ones) match."""
    columns = set(features)
    matches = [
        layout
        for layout in LAYOUTS.values()
        if layout.required <= columns and (layout.accepts is None or layout.accepts(features))
    ]
    if not matches:
        supported = "; ".join(f"{name} ({', '.join(sorted(layout.required))})" for name, layout in LAYOUTS.items())
        raise UsageError(
            f"{where}: unknown layout: columns {sorted(columns)}; supported layouts (required columns): {supported}; "
            "add one with clipvg_hf.data.hub_layouts.register_layout"
        )
    best = max(len(layout.required) for layout in matches)
    top = [layout for layout in matches if len(layout.required) == best]
    if len(top) > 1:
        raise UsageError(f"{where}: columns {sorted(columns)} match several layouts: {[m.name for m in top]}")
    return top[0]


# ---------------------------------------------------------------------------------------------------------------
# Conversion to the project's rows
# ---------------------------------------------------------------------------------------------------------------


def layout_features() -> datasets.Features:
    """The project's row schema (:func:`~clipvg_hf.data.convert.grounding_features`) with the identity fields
    (:data:`ID_FIELDS`, strings) added to each expression."""
    from .convert import grounding_features

    features = grounding_features(True)
    expression = dict(features["expressions"].feature)
    for name in ID_FIELDS:
        expression[name] = datasets.Value("string")
    features["expressions"] = datasets.List(expression)
    return features


@dataclass
class SplitReport:
    """What reading one source split gave: counts, rejected rows with reasons, a partition warning."""

    dataset: str
    split: str
    layout: str
    source_rows: int
    expressions_in: int = 0
    expressions: int = 0
    images: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)  # {source_row, sentence, reason}
    note: str | None = None

    def summary(self) -> str:
        """One line: layout, counts, rejections (with the most common reason)."""
        text = (
            f"{self.dataset} split {self.split!r} (layout {self.layout}): {self.source_rows} source rows, "
            f"{self.expressions_in} expressions in, {self.expressions} kept on {self.images} images, "
            f"{len(self.rejected)} rejected"
        )
        if self.rejected:
            first = self.rejected[0]
            text += f" (e.g. row {first['source_row']}: {first['reason']})"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "layout": self.layout,
            "source_rows": self.source_rows,
            "expressions_in": self.expressions_in,
            "expressions": self.expressions,
            "images": self.images,
            "rejected": len(self.rejected),
            **({"note": self.note} if self.note else {}),
        }


@dataclass
class _Image:
    cell: dict[str, Any]
    file_name: str
    width: int
    height: int

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


def _box_problem(box: Any, fmt: str, official: Any, official_fmt: str) -> tuple[tuple, tuple] | str:
    """(exact xyxy, official int xyxy) of a box, or why it is unusable (not 4 finite numbers, no area)."""
    values = []
    for raw in (box, official):
        if isinstance(raw, str) or not isinstance(raw, Iterable):
            return f"box must be 4 numbers, got {raw!r}"
        raw = list(raw)
        if len(raw) != 4 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in raw
        ):
            return f"box must be 4 finite numbers, got {raw!r}"
        values.append(raw)
    exact = exact_box(values[0], fmt)
    truncated = official_box(values[1], official_fmt)
    if exact[2] <= exact[0] or exact[3] <= exact[1]:
        return f"degenerate box {values[0]} ({fmt}): no area"
    if truncated[2] <= truncated[0] or truncated[3] <= truncated[1]:
        return f"box has no area after the official int truncation: {list(truncated)} (from {values[1]})"
    return exact, truncated


def _resolve_path(image_root: Path, image_path: str) -> Path | str:
    """``<root>/<image_path>`` if it is a file, else ``<root>/<its file name>``; never a path leaving the root."""
    problem = image_path_problem(image_path)
    if problem:
        return problem.replace("the image folder under --image_root", "--image_root")
    for candidate in (image_root / image_path, image_root / Path(image_path).name):
        if candidate.is_file():
            return candidate
    return f"image not found under --image_root {image_root}: {image_path}"


def _probe(ref: Ref, image_root: Path | None) -> _Image | str:
    """The image of a ref (its cell, file name and size), or why it cannot be used."""
    if ref.image_path is not None:
        if image_root is None:
            return "this layout stores image paths; --image_root is required"
        path = _resolve_path(image_root, ref.image_path)
        if isinstance(path, str):
            return path
        source: Any = path
        cell = {"bytes": None, "path": str(path.resolve())}
        file_name = path.relative_to(image_root).as_posix()
    else:
        data = (ref.image or {}).get("bytes")
        if not data:
            return "missing image (no embedded bytes)"
        source = io.BytesIO(data)
        cell = {"bytes": data, "path": ref.file_name or None}
        file_name = ref.file_name
    try:
        with open_image(source) as image:
            width, height = image.size
    except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError) as error:
        return f"unreadable image {ref.image_path or ref.file_name!r}: {type(error).__name__}: {first_line(error)}"
    return _Image(cell, file_name, width, height)


def _image_problem(ref: Ref, image: _Image | str) -> str | None:
    """Why this ref cannot use the (shared) image of its key: its own image missing, a size it declares otherwise."""
    if isinstance(image, str):
        return image
    if ref.image_path is None and not (ref.image or {}).get("bytes"):
        return "missing image (no embedded bytes)"
    if ref.width is not None and ref.height is not None and (int(ref.width), int(ref.height)) != image.size:
        return (
            f"image {image.file_name!r} is {image.width}x{image.height}, but the dataset says {ref.width}x{ref.height}"
        )
    return None


def _text_problems(texts: list[str]) -> dict[int, str]:
    """Expressions without visible text or longer than CLIP's text context (the converter's rule)."""
    from ..processing_clipvg import clean_text
    from .convert import _tokenizer

    problems = {
        i: f"expression {t!r} has no visible character" for i, t in enumerate(texts) if not has_visible_text(t)
    }
    rest = [i for i in range(len(texts)) if i not in problems]
    if rest:
        tokenizer = _tokenizer()
        lengths = tokenizer([clean_text(texts[i]) for i in rest], verbose=False)["input_ids"]
        limit = tokenizer.model_max_length
        for i, ids in zip(rest, lengths, strict=True):
            if len(ids) > limit:
                problems[i] = f"expression has {len(ids)} tokens with [SOT] and [EOT], more than CLIP's {limit}"
    return problems


def layout_rows(
    split: Iterable[Mapping[str, Any]],
    layout: Layout,
    *,
    dataset: str = "dataset",
    split_name: str = "split",
    image_root: str | os.PathLike | None = None,
    box_tolerance: float = 1.0,
    num_rows: int | None = None,
) -> tuple[list[dict[str, Any]], SplitReport]:
    """The project's image-grouped rows (schema :func:`layout_features`) of one source split, and its report.

    Expressions are numbered (``row_index``) in source order, one per sentence, rejected ones included (so an id
    never moves); images are grouped by the layout's image key, in order of first appearance. ``num_rows``: the row
    count :func:`partition_note` checks (default: the rows read) - for a small stand-in of a large split.
    """
    root = Path(image_root) if image_root is not None else None
    report = SplitReport(dataset, split_name, layout.name, 0)
    images: dict[str, _Image | str] = {}
    groups: dict[str, list[dict[str, Any]]] = {}
    pending: list[tuple[str, dict[str, Any]]] = []
    row_index = 0
    for source_row, row in enumerate(split):
        report.source_rows += 1
        try:
            refs = layout.read(row)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            report.rejected.append(
                {"source_row": source_row, "sentence": None, "reason": f"unreadable row: {first_line(error)}"}
            )
            continue
        for ref in refs:
            if not ref.sentences:
                report.rejected.append({"source_row": source_row, "sentence": None, "reason": "no sentence"})
            own_missing = ref.image_path is None and not (ref.image or {}).get("bytes")
            if not own_missing and ref.image_key not in images:  # the first ref with the image reads its header
                images[ref.image_key] = _probe(ref, root)
            image = images.get(ref.image_key, "missing image (no embedded bytes)")
            boxes = _box_problem(
                ref.box,
                ref.box_format,
                ref.official_box if ref.official_box is not None else ref.box,
                ref.official_format or ref.box_format,
            )
            problem = _image_problem(ref, image) or (boxes if isinstance(boxes, str) else None)
            if problem is None:
                (x1, y1, x2, y2), _ = boxes
                tol = box_tolerance
                if x1 < -tol or y1 < -tol or x2 > image.width + tol or y2 > image.height + tol:
                    problem = (
                        f"box {[x1, y1, x2, y2]} (x1, y1, x2, y2) lies outside the {image.width}x{image.height} image"
                    )
            for position, (text, sent_id) in enumerate(ref.sentences):
                report.expressions_in += 1
                if problem is not None:
                    report.rejected.append({"source_row": source_row, "sentence": position, "reason": problem})
                else:
                    exact, truncated = boxes
                    expression = {
                        "row_index": row_index,
                        "expression": text,
                        "bbox": list(exact),
                        "bbox_official": list(truncated),
                        "source": "human",
                        "source_file": f"{dataset}:{split_name}",
                        "source_row": source_row,
                        "ann_file": None,
                        "sent_id": _str_or_none(sent_id),
                        **{key: _str_or_none(ref.ids.get(key)) for key in ID_FIELDS if key != "sent_id"},
                    }
                    pending.append((ref.image_key, expression))
                row_index += 1
    problems = _text_problems([e["expression"] for _, e in pending])
    for index, (key, expression) in enumerate(pending):
        if index in problems:
            report.rejected.append(
                {
                    "source_row": expression["source_row"],
                    "sentence": expression["row_index"],
                    "reason": problems[index],
                }
            )
        else:
            groups.setdefault(key, []).append(expression)
    report.rejected.sort(key=lambda r: (r["source_row"], r["sentence"] if r["sentence"] is not None else -1))
    rows = []
    for key, expressions in groups.items():
        image = images[key]
        assert not isinstance(image, str)
        rows.append(
            {
                "image": image.cell,
                "file_name": image.file_name,
                "width": image.width,
                "height": image.height,
                "expressions": expressions,
            }
        )
    report.images = len(rows)
    report.expressions = sum(len(r["expressions"]) for r in rows)
    report.note = partition_note(layout.name, split_name, report.source_rows if num_rows is None else num_rows)
    return rows, report


@dataclass
class LayoutSplit:
    """A split ready for :class:`GroundingDataset`: the rows, and (for a Hub layout) the layout and its report."""

    data: datasets.Dataset
    layout: Layout | None = None
    report: SplitReport | None = None

    @property
    def lines(self) -> list[str]:
        """What a command prints about the split: the report line and the partition warning, if any."""
        if self.report is None:
            return []
        lines = [self.report.summary()]
        if self.report.note:
            lines.append(f"warning: {self.report.note}")
        return lines


def _load_raw(dataset: str, config: str | None, split: str, streaming: bool = False) -> Any:
    from .dataset import load_split

    if looks_local(str(dataset)) and not Path(dataset).expanduser().is_dir():
        raise UsageError(f"--dataset {dataset}: dataset folder not found")
    try:
        return load_split(dataset, config, split, streaming=streaming)
    except (ValueError, OSError, ConnectionError) as error:  # unknown config / split, unreachable Hub id
        where = f"--dataset {dataset}" + (f" --dataset_config {config}" if config else "") + f" split {split!r}"
        raise UsageError(f"{where}: {first_line(error)}") from error


def open_split(
    dataset: str | os.PathLike,
    config: str | None,
    split: str,
    *,
    image_root: str | os.PathLike | None = None,
    box_tolerance: float = 1.0,
    num_rows: int | None = None,
) -> LayoutSplit:
    """One split of a converted folder (native rows, returned as loaded) or of a Hub layout (a Hub id or a local
    folder of that layout, split named as the dataset names it), as rows :class:`GroundingDataset` reads.

    Bad input is a :class:`UsageError` in one line: a missing folder or split, an unknown layout (the columns found
    and the layouts supported), a path layout without ``image_root`` (or an embedded one with it), a split whose
    every row is rejected. ``num_rows`` stands in for the source row count in the partition check
    (:func:`partition_note`), for tests with a small stand-in of a large split.
    """
    dataset = str(dataset)
    if image_root is not None and not Path(image_root).is_dir():
        raise UsageError(f"--image_root {image_root}: folder not found")
    raw = _load_raw(dataset, config, split)
    if is_native(raw.features):
        return LayoutSplit(raw)
    layout = detect_layout(raw.features, f"--dataset {dataset} split {split!r}")
    if layout.images == "path" and image_root is None:
        raise UsageError(
            f"--dataset {dataset}: layout {layout.name} stores image paths, not images; pass --image_root, the "
            "folder holding them (for COCO: train2014 or the folder above coco/train2014)"
        )
    if layout.images == "embedded" and image_root is not None:
        raise UsageError(f"--image_root: layout {layout.name} of --dataset {dataset} embeds its images; leave it out")
    for column in layout.image_columns:
        if isinstance(raw.features.get(column), datasets.Image):
            raw = raw.cast_column(column, datasets.Image(decode=False))
    rows, report = layout_rows(
        raw,
        layout,
        dataset=dataset,
        split_name=split,
        image_root=image_root,
        box_tolerance=box_tolerance,
        num_rows=num_rows,
    )
    if not rows:
        reason = report.rejected[0]["reason"] if report.rejected else "the split is empty"
        raise UsageError(
            f"--dataset {dataset} split {split!r}: all {report.expressions_in} expressions of "
            f"{report.source_rows} rows rejected, e.g. {reason}"
        )
    data = datasets.Dataset.from_list(rows, features=layout_features(), split=datasets.Split(split))
    return LayoutSplit(data, layout, report)


# ---------------------------------------------------------------------------------------------------------------
# Writing a Hub layout in the project's own format
# ---------------------------------------------------------------------------------------------------------------

_HUB_CARD_BODY = """# {config}: {source} in the clipvg_hf format

Converted by `clipvg-convert-splits --from_hub {source}` (layout `{layout}`, see `clipvg_hf.data.hub_layouts`).
One row per image with all its expressions (images stored once per split); each expression keeps its source ids
(`image_id`, `ann_id`, `ref_id`, `sent_id`, `ref_file_name`, `source_row`). Boxes: `bbox` exact and `bbox_official`
(the official int truncation) as (x1, y1, x2, y2) pixels. Load with `datasets.load_dataset(<folder>, "{config}")`.
Counts and rejected rows: `conversion.json`, `rejects/{config}.jsonl`.

{table}
{notes}"""


def convert_hub_dataset(
    source: str,
    output_dir: str | os.PathLike,
    *,
    config: str | None = None,
    splits: list[str] | None = None,
    image_root: str | os.PathLike | None = None,
    embed_images: bool = True,
    num_shards: int = 8,
) -> list[SplitReport]:
    """Write the splits of a Hub-layout dataset (a Hub id or a local folder) as one config of the project's format:
    ``<output_dir>/<config>/<split>-0000i-of-0000n.parquet``, ``conversion.json``, ``rejects/<config>.jsonl`` and a
    card. ``config`` defaults to the source's name (``jxu124/refcoco-benchmark`` -> ``refcoco-benchmark``);
    ``splits`` to every split of the source. Images of a path layout are embedded unless ``embed_images`` is False.
    The folder is written staged (:func:`~clipvg_hf.data.staging.staged_folder`): a failed run leaves it as it was.
    """
    from ..checks import check_dataset_name
    from .card import config_entry, write_configs
    from .staging import dataset_folder_problem, staged_folder, write_text_atomic

    config = check_dataset_name(config or Path(str(source).rstrip("/")).name.lower(), "--config")
    problem = dataset_folder_problem(output_dir, "converted")
    if problem is not None:
        raise UsageError(problem)
    if splits is None:
        if looks_local(str(source)) and not Path(source).is_dir():
            raise UsageError(f"--from_hub {source}: dataset folder not found")
        try:
            splits = list(datasets.get_dataset_split_names(str(source)))
        except (ValueError, OSError, ConnectionError) as error:
            raise UsageError(f"--from_hub {source}: {first_line(error)}") from error
    opened = {name: open_split(source, None, name, image_root=image_root) for name in splits}
    reports = [one.report for one in opened.values() if one.report is not None]
    if len(reports) != len(opened):
        raise UsageError(f"--from_hub {source} is already in the clipvg_hf format: load it with --dataset_config")
    with staged_folder(output_dir) as stage:
        folder = Path(stage) / config
        if folder.exists():
            import shutil

            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for name, one in opened.items():
            data = one.data
            if embed_images and one.layout is not None and one.layout.images == "path":
                data = data.cast_column("image", datasets.Image(decode=False)).map(
                    lambda row: {"image": {"bytes": Path(row["image"]["path"]).read_bytes(), "path": row["file_name"]}}
                )
            count = max(1, min(num_shards, len(data)))
            for index in range(count):
                shard = data.shard(num_shards=count, index=index, contiguous=True)
                shard.to_parquet(str(folder / f"{name}-{index:05d}-of-{count:05d}.parquet"))
        log_path = Path(stage) / "conversion.json"
        log = json.loads(log_path.read_text()) if log_path.is_file() else {}
        log[config] = {
            "setting": "hub-layout",
            "source": str(source),
            "layout": reports[0].layout,
            "files": [
                {
                    "config": config,
                    "split": r.split,
                    "file": f"{source}:{r.split}",
                    "rows_in": r.expressions_in,
                    "rows_out": r.expressions,
                    "rejected": len(r.rejected),
                    "images": r.images,
                    "source_rows": r.source_rows,
                    "note": r.note or "",
                }
                for r in reports
            ],
        }
        write_text_atomic(log_path, json.dumps(log, indent=1, sort_keys=True) + "\n")
        rejects = [
            json.dumps(
                {
                    "config": config,
                    "split": r.split,
                    "file": f"{source}:{r.split}",
                    "row": x["source_row"],
                    "sentence": x["sentence"],
                    "reason": x["reason"],
                }
            )
            + "\n"
            for r in reports
            for x in r.rejected
        ]
        rejects_path = Path(stage) / "rejects" / f"{config}.jsonl"
        if rejects:
            rejects_path.parent.mkdir(exist_ok=True)
            write_text_atomic(rejects_path, "".join(rejects))
        elif rejects_path.is_file():
            rejects_path.unlink()
        table = ["| split | source rows | expressions | rejected | images |", "|---|---:|---:|---:|---:|"]
        table += [
            f"| {r.split} | {r.source_rows} | {r.expressions} | {len(r.rejected)} | {r.images} |" for r in reports
        ]
        notes = "".join(f"\n**{r.split}**: {r.note}\n" for r in reports if r.note)
        write_configs(
            stage,
            [config_entry(config, list(opened))],
            metadata={"task_categories": ["zero-shot-object-detection"], "tags": ["visual-grounding", "clip-vg"]},
            body=_HUB_CARD_BODY.format(
                config=config, source=source, layout=reports[0].layout, table="\n".join(table), notes=notes
            ),
        )
    return reports
