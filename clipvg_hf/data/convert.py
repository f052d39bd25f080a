"""Convert official CLIP-VG split packs into a Hugging Face dataset folder (parquet shards + dataset card).

One *config* per (dataset, setting), named ``<dataset name>-<setting>`` (e.g. ``refcoco-unsup-single``), holding
the setting's training split (``train`` for the supervised settings, ``train_pseudo`` for the unsupervised ones)
plus every evaluation split present (``val``, ``testA``, ``testB``, ``test``). Each parquet row is one *image* with
all its expressions (so an image is stored once per split); :class:`clipvg_hf.data.GroundingDataset` gives the flat
per-expression view in the original file order.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import PIL.Image
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Features, Image, List, Value
from tqdm.auto import tqdm
from transformers import CLIPTokenizer

from ..processing_clipvg import build_clip_tokenizer, clean_text
from .card import write_dataset_card
from .registry import EVAL_SPLITS, SETTINGS, Setting, config_name
from .splits import (
    DATASETS,
    DatasetInfo,
    SplitFileError,
    SplitRow,
    SplitRowError,
    dataset_info,
    load_split_file,
    parse_rows,
    same_rows,
    separate_source_files,
)
from .staging import dataset_folder_problem, staged_folder, write_text_atomic

__all__ = [
    "EVAL_SPLITS",
    "SETTINGS",
    "ConversionError",
    "FileReport",
    "Reject",
    "Setting",
    "config_name",
    "convert_dataset",
    "convert_pack",
    "format_summary",
    "grounding_features",
    "write_dataset_card",
]

#: Rows per parquet row group (each row is an image with all its expressions).
ROW_GROUP_SIZE = 64
#: A typical data-parallel world size: streaming shards per rank need at least this many files.
DEFAULT_NUM_SHARDS = 8


class ConversionError(ValueError):
    """A row or file cannot be converted; the message names file, row and reason."""


@dataclass
class Reject:
    """A row (or whole file, row None) left out of the output, with the reason."""

    config: str
    split: str
    file: str
    row: int | None
    reason: str


@dataclass
class FileReport:
    """Row counts of one input file in one output split."""

    config: str
    split: str
    file: str
    rows_in: int = 0
    rows_out: int = 0
    rejected: int = 0
    images: int = 0
    shards: int = 0
    duplicates: int = 0  # kept rows repeating an earlier (image, expression, box) of the same file
    note: str = ""


@dataclass
class _Split:
    """Rows gathered for one output split, before image checks."""

    name: str
    rows: list[SplitRow | None] = field(default_factory=list)
    files: list[tuple[str, int, int]] = field(default_factory=list)  # (file, first row, row count) in `rows`
    rejects: list[Reject] = field(default_factory=list)
    note: str = ""


def grounding_features(embed_images: bool = True) -> Features:
    """Schema of one parquet row: an image and all of its expressions in this split."""
    expression = {
        "row_index": Value("int64"),
        "expression": Value("string"),
        "bbox": List(Value("float64"), length=4),
        "bbox_official": List(Value("int32"), length=4),
        "source": Value("string"),
        "source_file": Value("string"),
        "source_row": Value("int64"),
        "ann_file": Value("string"),
    }
    return Features(
        {
            "image": Image(),
            "file_name": Value("string"),
            "width": Value("int32"),
            "height": Value("int32"),
            "expressions": List(expression),
        }
    )


# ---------------------------------------------------------------------------------------------------------------
# Reading the pack
# ---------------------------------------------------------------------------------------------------------------


def _split_of(path: Path, info: DatasetInfo) -> str:
    """The split name encoded in ``<key>_<split>.pth``; errors on files of another dataset or unknown splits."""
    prefix = f"{info.key}_"
    if not path.name.startswith(prefix) or path.suffix != ".pth":
        raise SplitFileError(path, f"unexpected file name (expected '{info.key}_<split>.pth')")
    split = path.name[len(prefix) : -len(".pth")]
    if split not in info.splits:
        raise SplitFileError(path, f"unknown split {split!r} for dataset {info.key!r}; accepted: {list(info.splits)}")
    return split


def _read_rows(path: Path, info: DatasetInfo, source: str, split: _Split, config: str, collect: bool) -> list[Any]:
    """Load and parse one file into ``split`` (bad rows become rejects when ``collect``); return the raw rows."""
    raw = load_split_file(path)
    errors: list[SplitRowError] | None = [] if collect else None
    try:
        parsed = parse_rows(_progress(raw, f"parse {path.name}"), info, path.name, source, errors)
    except SplitRowError as err:
        raise ConversionError(f"{path}: row {err.row}: {err.reason}") from err
    split.files.append((path.name, len(split.rows), len(parsed)))
    split.rows.extend(parsed)
    split.rejects.extend(Reject(config, split.name, path.name, e.row, e.reason) for e in errors or [])
    return raw


def _read_train_split(
    folder: Path, info: DatasetInfo, setting: Setting, config: str, collect: bool, train_file: Path | None
) -> _Split | None:
    """The setting's training rows: an explicit file, the train_separate/ concatenation, or <key>_<train>.pth."""
    split = _Split(setting.train_split)
    merged = train_file or folder / f"{info.key}_{setting.train_split}.pth"
    separate = folder / "train_separate"
    if setting.name.startswith("unsup-multi") and separate.is_dir() and train_file is None:
        raw_all: list[Any] = []
        for path, source in separate_source_files(separate, info.key):
            raw_all += _read_rows(path, info, source, split, config, collect)
        if merged.is_file():
            mismatch = same_rows(load_split_file(merged), raw_all)
            if mismatch is not None:
                raise ConversionError(
                    f"{merged}: row {mismatch}: differs from the concatenation of train_separate/ "
                    "(expected the merged file to be files 1_, 2_, 3_ concatenated in order)"
                )
            split.note = f"equals train_separate/ concatenation ({merged.name})"
        return split
    if not merged.is_file():
        if train_file is not None:
            raise ConversionError(f"{train_file}: file not found")
        return None
    _read_rows(merged, info, setting.train_source, split, config, collect)
    return split


def _count_rows(paths: Sequence[Path]) -> int:
    """Rows of split files that are rejected whole (0 for a file that cannot be read), so every row is counted."""
    total = 0
    for path in paths:
        try:
            total += len(load_split_file(path))
        except SplitFileError:
            pass
    return total


def _gather_splits(
    folder: Path, info: DatasetInfo, setting: Setting, config: str, collect: bool, train_file: Path | None
) -> tuple[list[_Split], list[Reject], list[FileReport]]:
    """All splits of one dataset folder for one setting, plus file-level rejects and notes on skipped files."""
    file_rejects: list[Reject] = []
    notes: list[FileReport] = []
    splits: list[_Split] = []
    train = _read_train_split(folder, info, setting, config, collect, train_file)
    if train is not None:
        splits.append(train)
    wanted = {setting.train_split, *EVAL_SPLITS}
    for path in sorted(folder.glob("*.pth")):
        try:
            name = _split_of(path, info)
        except SplitFileError as err:
            if not collect:
                raise ConversionError(str(err)) from err
            file_rejects.append(Reject(config, "-", path.name, None, err.reason))
            rows = _count_rows([path])
            notes.append(
                FileReport(config, "-", path.name, rows_in=rows, rejected=rows, note=f"rejected: {err.reason}")
            )
            continue
        if name == setting.train_split:
            continue
        if name not in wanted:
            notes.append(FileReport(config, name, path.name, note=f"skipped: not part of setting {setting.name!r}"))
            continue
        split = _Split(name)
        _read_rows(path, info, "human", split, config, collect)
        splits.append(split)
    order = {s: i for i, s in enumerate((setting.train_split, *EVAL_SPLITS))}
    splits.sort(key=lambda s: order[s.name])
    return splits, file_rejects, notes


# ---------------------------------------------------------------------------------------------------------------
# Images and boxes
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ImageMeta:
    path: Path
    width: int
    height: int


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path`` stays inside ``root`` by its name (symbolic links the user made inside root are followed)."""
    path_text, root_text = os.path.normpath(os.path.abspath(path)), os.path.normpath(os.path.abspath(root))
    return path_text == root_text or path_text.startswith(root_text.rstrip(os.sep) + os.sep)


def _probe_image(path: Path, root: Path) -> _ImageMeta | str:
    """Width and height of an image that decodes completely, or the reason it cannot be used.

    Every pixel is decoded (``Image.verify()`` does not decode JPEG data, so a truncated JPEG would pass it and fail
    later in training or evaluation).
    """
    if not _inside(path, root):
        return f"image path {path} lies outside --image_root {root}"
    if not path.is_file():
        return f"image not found: {path}"
    try:
        with PIL.Image.open(path) as image:
            width, height = image.size
            image.load()
    except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError) as err:  # PIL's broken-file errors
        return f"unreadable image {path}: {type(err).__name__}: {err}"
    if width <= 0 or height <= 0:
        return f"image {path} has no pixels ({width}x{height})"
    return _ImageMeta(path, width, height)


def _box_problem(row: SplitRow, meta: _ImageMeta, tolerance: float) -> str | None:
    """Why a row's box is unusable on its image (outside it, or no area after truncation), or None."""
    x1, y1, x2, y2 = row.bbox_official
    if x2 <= x1 or y2 <= y1:
        return f"box has no area after the official int truncation: {list(row.bbox_official)} (from {list(row.bbox)})"
    fx1, fy1, fx2, fy2 = row.bbox
    if fx1 < -tolerance or fy1 < -tolerance or fx2 > meta.width + tolerance or fy2 > meta.height + tolerance:
        return f"box {list(row.bbox)} (x1, y1, x2, y2) lies outside the {meta.width}x{meta.height} image"
    return None


def _text_problems(rows: Sequence[SplitRow | None]) -> dict[int, str]:
    """Rows whose expression exceeds CLIP's text context: the one rule, applied here, so that training, evaluation
    and the pipeline never meet such a row (they would refuse or truncate it)."""
    present = [(i, row) for i, row in enumerate(rows) if row is not None]
    if not present:
        return {}
    tokenizer = _tokenizer()
    texts = [clean_text(row.expression) for _, row in present]
    lengths = [len(ids) for ids in tokenizer(texts, verbose=False)["input_ids"]]
    limit = tokenizer.model_max_length
    return {
        i: f"expression has {n} tokens with [SOT] and [EOT], more than CLIP's text context of {limit}"
        for (i, _), n in zip(present, lengths, strict=True)
        if n > limit
    }


@functools.cache
def _tokenizer() -> CLIPTokenizer:
    """OpenAI's CLIP tokenizer from the BPE file shipped with the package (built once)."""
    return build_clip_tokenizer()


def _refuse_if_no_image_found(splits: Sequence[_Split], image_dir: Path) -> None:
    """Every row rejected because its image is missing means a wrong --image_root, not bad rows: an error."""
    missing = [r for s in splits for r in s.rejects if r.reason.startswith("image not found")]
    if missing and not any(row is not None for s in splits for row in s.rows):
        raise ConversionError(
            f"none of the images of {len(missing)} rows was found under {image_dir}; "
            "is --image_root the official image_data folder?"
        )


def _check_rows(
    split: _Split, image_dir: Path, image_root: Path, config: str, collect: bool, tolerance: float
) -> dict[str, _ImageMeta]:
    """Check every expression, image and box of a split; bad rows become rejects (set to None) or raise."""
    metas: dict[str, _ImageMeta | str] = {}
    text_problems = _text_problems(split.rows)
    for file, start, count in split.files:
        for index in range(start, start + count):
            row = split.rows[index]
            if row is None:
                continue
            if row.file_name not in metas:
                metas[row.file_name] = _probe_image(image_dir / row.file_name, image_root)
            meta = metas[row.file_name]
            problem = text_problems.get(index)
            if problem is None:
                problem = meta if isinstance(meta, str) else _box_problem(row, meta, tolerance)
            if problem is None:
                continue
            if not collect:
                raise ConversionError(f"{file}: row {row.source_row}: {problem}")
            split.rejects.append(Reject(config, split.name, file, row.source_row, problem))
            split.rows[index] = None
    return {name: meta for name, meta in metas.items() if isinstance(meta, _ImageMeta)}


# ---------------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------------


def _group_by_image(rows: Sequence[SplitRow | None]) -> list[tuple[str, list[tuple[int, SplitRow]]]]:
    """Group (row index, row) pairs by image, images in order of first appearance, rows in file order."""
    groups: dict[str, list[tuple[int, SplitRow]]] = {}
    for index, row in enumerate(rows):
        if row is not None:
            groups.setdefault(row.file_name, []).append((index, row))
    return list(groups.items())


def _shard_bounds(num_items: int, num_shards: int) -> list[tuple[int, int]]:
    """Contiguous, non-empty, near-equal [start, stop) ranges; fewer shards when there are fewer items."""
    count = max(1, min(num_shards, num_items))
    edges = [round(i * num_items / count) for i in range(count + 1)]
    return [(edges[i], edges[i + 1]) for i in range(count)]


def _image_row(file_name: str, meta: _ImageMeta, rows: list[tuple[int, SplitRow]], embed: bool) -> dict[str, Any]:
    """One parquet row: the image (bytes once, or a path) and all of its expressions."""
    image = (
        {"bytes": meta.path.read_bytes(), "path": file_name}
        if embed
        else {"bytes": None, "path": str(meta.path.resolve())}
    )
    return {
        "image": image,
        "file_name": file_name,
        "width": meta.width,
        "height": meta.height,
        "expressions": [
            {
                "row_index": index,
                "expression": row.expression,
                "bbox": list(row.bbox),
                "bbox_official": list(row.bbox_official),
                "source": row.source,
                "source_file": row.source_file,
                "source_row": row.source_row,
                "ann_file": row.ann_file,
            }
            for index, row in rows
        ],
    }


def _write_shards(
    groups: list[tuple[str, list[tuple[int, SplitRow]]]],
    metas: dict[str, _ImageMeta],
    out_dir: Path,
    split: str,
    num_shards: int,
    embed: bool,
) -> int:
    """Write ``<split>-0000i-of-0000n.parquet`` files (never an empty one); return how many were written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(f"{split}-*.parquet"):
        stale.unlink()
    if not groups:
        return 0
    schema = grounding_features(embed).arrow_schema
    bounds = _shard_bounds(len(groups), num_shards)
    bar = tqdm(
        total=len(groups),
        desc=f"write {out_dir.name}/{split}",
        leave=False,
        disable=None if len(groups) >= 500 else True,
    )
    for shard, (start, stop) in enumerate(bounds):
        path = out_dir / f"{split}-{shard:05d}-of-{len(bounds):05d}.parquet"
        with pq.ParquetWriter(path, schema) as writer:
            for chunk in range(start, stop, ROW_GROUP_SIZE):
                batch = [
                    _image_row(name, metas[name], rows, embed)
                    for name, rows in groups[chunk : min(stop, chunk + ROW_GROUP_SIZE)]
                ]
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                bar.update(len(batch))
    bar.close()
    return len(bounds)


def _progress(items: Any, desc: str) -> Any:
    """A tqdm bar for large inputs only (and only on a terminal)."""
    size = len(items)
    return tqdm(items, desc=desc, leave=False, disable=None if size >= 2000 else True)


# ---------------------------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class _CheckedDataset:
    """One dataset folder read and checked, not yet written."""

    config: str
    image_dir: Path
    splits: list[_Split]
    metas: list[dict[str, _ImageMeta]]
    rejects: list[Reject]
    reports: list[FileReport]


def _read_and_check(
    split_root: str | Path,
    image_root: str | Path,
    dataset: str,
    setting: str,
    *,
    collect_rejects: bool,
    box_tolerance: float,
    train_file: str | Path | None,
) -> _CheckedDataset:
    """Every file, row, expression, image and box of one dataset folder checked (bad ones raise or are rejects)."""
    info = dataset_info(dataset)
    if setting not in SETTINGS:
        raise ConversionError(f"unknown setting {setting!r}; expected one of {sorted(SETTINGS)}")
    cfg = config_name(dataset, setting)
    if isinstance(box_tolerance, bool) or not math.isfinite(box_tolerance) or box_tolerance < 0:
        raise ConversionError(f"box tolerance must be a finite number >= 0, got {box_tolerance!r}")
    folder = Path(split_root) / info.key
    if not folder.is_dir():
        raise ConversionError(f"{folder}: dataset folder not found")
    if not Path(image_root).is_dir():
        raise ConversionError(f"{image_root}: image root not found")
    image_dir = Path(image_root) / info.image_dir
    splits, rejects, reports = _gather_splits(
        folder, info, SETTINGS[setting], cfg, collect_rejects, Path(train_file) if train_file else None
    )
    if not splits:
        raise ConversionError(f"{folder}: no split files for setting {setting!r}")
    metas = [_check_rows(s, image_dir, Path(image_root), cfg, collect_rejects, box_tolerance) for s in splits]
    _refuse_if_no_image_found(splits, image_dir)
    return _CheckedDataset(cfg, image_dir, splits, metas, rejects, reports)


def _write_checked(checked: _CheckedDataset, output_dir: str | Path, num_shards: int, embed_images: bool) -> None:
    """Write the parquet shards of a checked dataset (its config folder replaced whole: no split of an earlier
    conversion is left in it) and count every file's rows into its reports."""
    cfg = checked.config
    shutil.rmtree(Path(output_dir) / cfg, ignore_errors=True)
    for split, metas in zip(checked.splits, checked.metas, strict=True):
        shards = _write_shards(
            _group_by_image(split.rows), metas, Path(output_dir) / cfg, split.name, num_shards, embed_images
        )
        for file, start, count in split.files:
            kept = [r for r in split.rows[start : start + count] if r is not None]
            checked.reports.append(
                FileReport(
                    cfg,
                    split.name,
                    file,
                    rows_in=count,
                    rows_out=len(kept),
                    rejected=sum(1 for r in split.rejects if r.file == file),
                    images=len({r.file_name for r in kept}),
                    shards=shards,
                    duplicates=len(kept) - len({(r.file_name, r.expression, r.bbox) for r in kept}),
                    note=split.note,
                )
            )
        checked.rejects.extend(split.rejects)


def _check_num_shards(num_shards: int) -> None:
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
        raise ConversionError(f"number of shards must be a positive integer, got {num_shards!r}")


def convert_dataset(
    split_root: str | Path,
    image_root: str | Path,
    output_dir: str | Path,
    dataset: str,
    setting: str,
    *,
    collect_rejects: bool = False,
    embed_images: bool = True,
    num_shards: int = DEFAULT_NUM_SHARDS,
    box_tolerance: float = 1.0,
    train_file: str | Path | None = None,
) -> tuple[list[FileReport], list[Reject]]:
    """Convert ``<split_root>/<dataset>/`` of one setting into ``<output_dir>/<config>/<split>-*.parquet``.

    Also records the counts in ``conversion.json`` and rewrites the dataset card. Raises :class:`ConversionError`
    on the first bad row or file unless ``collect_rejects``, in which case bad rows
    are returned as :class:`Reject` records (and counted in the reports) and everything else is written. Boxes may
    exceed the image by ``box_tolerance`` pixels (annotation rounding) before they count as outside it. Everything
    is checked before anything is written, and the new version is written beside ``output_dir`` and swapped in at
    the end (:func:`~clipvg_hf.data.staging.staged_folder`), so an error or a killed run leaves ``output_dir`` as it
    was. An ``output_dir`` holding another kind of dataset is refused.
    """
    _check_num_shards(num_shards)
    _check_output_dir(output_dir)
    checked = _read_and_check(
        split_root,
        image_root,
        dataset,
        setting,
        collect_rejects=collect_rejects,
        box_tolerance=box_tolerance,
        train_file=train_file,
    )
    with staged_folder(output_dir) as stage:
        _write_checked(checked, stage, num_shards, embed_images)
        write_conversion_log(stage, checked.reports, checked.rejects, setting)
        write_dataset_card(stage)
    return checked.reports, checked.rejects


def convert_pack(
    split_root: str | Path,
    image_root: str | Path,
    output_dir: str | Path,
    setting: str,
    datasets: Sequence[str] | None = None,
    *,
    collect_rejects: bool = False,
    embed_images: bool = True,
    num_shards: int = DEFAULT_NUM_SHARDS,
    box_tolerance: float = 1.0,
    train_file: str | Path | None = None,
) -> tuple[list[FileReport], list[Reject]]:
    """Convert every dataset folder of one pack (or the listed ones) into ``output_dir``.

    A folder under ``split_root`` that is not an official dataset key is an error (or a file-level reject). Every
    dataset is checked before any is written; all of them are written into one staged version of ``output_dir``,
    swapped in at the end (see :func:`convert_dataset`).
    """
    root = Path(split_root)
    if not root.is_dir():
        raise ConversionError(f"{root}: split root not found")
    _check_num_shards(num_shards)
    _check_output_dir(output_dir)
    extra: list[Reject] = []
    reports: list[FileReport] = []
    if datasets is None:
        present = sorted(p.name for p in root.iterdir() if p.is_dir())
        unknown = [name for name in present if name not in DATASETS]
        if unknown and not collect_rejects:
            raise ConversionError(f"{root}: unknown dataset folder(s) {unknown}; expected any of {sorted(DATASETS)}")
        datasets = [name for name in present if name in DATASETS]
        for name in unknown:
            extra.append(Reject("_pack", "-", f"{name}/", None, "unknown dataset folder"))
            rows = _count_rows(sorted((root / name).rglob("*.pth")))
            reports.append(
                FileReport(
                    "_pack", "-", f"{name}/", rows_in=rows, rejected=rows, note="rejected: unknown dataset folder"
                )
            )
    else:
        for name in datasets:
            dataset_info(name)
    checked = [
        _read_and_check(
            root,
            image_root,
            name,
            setting,
            collect_rejects=collect_rejects,
            box_tolerance=box_tolerance,
            train_file=train_file,
        )
        for name in datasets
    ]
    rejects: list[Reject] = list(extra)
    with staged_folder(output_dir) as stage:
        for one in checked:
            _write_checked(one, stage, num_shards, embed_images)
            write_conversion_log(stage, one.reports, one.rejects, setting)
            reports += one.reports
            rejects += one.rejects
        if checked:
            write_dataset_card(stage)
        if extra:
            write_conversion_log(stage, [], extra, setting)
    return reports, rejects


def _check_output_dir(output_dir: str | Path) -> None:
    """An output folder that is a file or holds another kind of dataset (pseudo-labels, ...) is refused."""
    problem = dataset_folder_problem(output_dir, "converted")
    if problem is not None:
        raise ConversionError(problem)


def write_conversion_log(
    output_dir: str | Path, reports: list[FileReport], rejects: list[Reject], setting: str
) -> None:
    """Record counts in ``conversion.json`` (merged across runs) and rejects in ``rejects/<config>.jsonl``."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "conversion.json"
    log = json.loads(log_path.read_text()) if log_path.is_file() else {}
    for config in {r.config for r in reports}:
        log[config] = {"setting": setting, "files": [asdict(r) for r in reports if r.config == config]}
    write_text_atomic(log_path, json.dumps(log, indent=1, sort_keys=True) + "\n")
    by_config: dict[str, list[Reject]] = {}
    for reject in rejects:
        by_config.setdefault(reject.config, []).append(reject)
    for config in {r.config for r in reports} | set(by_config):
        path = out / "rejects" / f"{config}.jsonl"
        if config in by_config:
            write_text_atomic(path, "".join(json.dumps(asdict(r)) + "\n" for r in by_config[config]))
        elif path.is_file():
            path.unlink()


def format_summary(reports: Sequence[FileReport], rejects: Sequence[Reject] = ()) -> str:
    """A fixed-width table of rows in/out per file, then totals and the rejection reasons."""
    header = ("config", "split", "file", "rows in", "rows out", "rejected", "images", "shards", "note")
    lines = [header] + [
        (
            r.config,
            r.split,
            r.file,
            str(r.rows_in),
            str(r.rows_out),
            str(r.rejected),
            str(r.images),
            str(r.shards),
            r.note,
        )
        for r in reports
    ]
    lines.append(
        (
            "total",
            "",
            "",
            str(sum(r.rows_in for r in reports)),
            str(sum(r.rows_out for r in reports)),
            str(sum(r.rejected for r in reports)),
            "",
            "",
            "",
        )
    )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]

    def fmt(line: Sequence[str]) -> str:  # text columns left-aligned, counts right-aligned
        return "  ".join(
            cell.ljust(w) if i < 3 or i == 8 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths))
        )

    text = [fmt(lines[0]), "  ".join("-" * w for w in widths)] + [fmt(line) for line in lines[1:]]
    duplicated = [f"{r.file} ({r.duplicates})" for r in reports if r.duplicates]
    if duplicated:
        text.append("")
        text.append(
            f"kept {sum(r.duplicates for r in reports)} duplicate rows (the image, expression and box of an "
            f"earlier row of the same file, as the official loader keeps them): {', '.join(duplicated)}"
        )
    file_rejects = [r for r in rejects if r.row is None]
    if file_rejects:
        text.append("")
        text += [f"rejected file {r.file}: {r.reason}" for r in file_rejects]
    return "\n".join(line.rstrip() for line in text)
