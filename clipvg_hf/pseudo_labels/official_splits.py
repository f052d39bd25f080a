"""The generated pseudo-labels also as the official CLIP-VG / Pseudo-Q split files, for the original code.

Read from the finished ``<name>-unsup-single`` / ``<name>-unsup-multi`` configs (so it runs once, on the main
process, after the labels stage), written under ``DIR`` as the official packs lay them out::

    DIR/unsup_single_source/<key>/<key>_train_pseudo.pth                 template labels
    DIR/unsup_multi_source/<key>/<key>_train_pseudo.pth                  template + relation + caption, in order
    DIR/unsup_multi_source/<key>/train_separate/1_<key>_train_pseudo_template.pth   (2_ relation, 3_ caption)
    DIR/image_data/<image folder of key>                                 a link to the image folder (no copy)
    DIR/README.md                                                        how to point the original code at them

``<key>`` is an official dataset key; it fixes the row layout, as the official ``post_process.py`` writes it:
``[image, 'useless placeholder', box, expression, 'useless placeholder']`` with box ``x, y, w, h`` (unc, unc+, gref,
gref_umd) or ``x1, y1, x2, y2`` (referit), and ``[image, [x1, y1, x2, y2], expression]`` for flickr. Rows hold plain
Python types only (``torch.load(weights_only=True)`` reads them without an allow-list). ``DIR`` is written as one
staged version swapped in at the end (:func:`clipvg_hf.data.staging.staged_folder`), so an error or a killed run
leaves the earlier files as they were, never some of each. A source without labels gets no ``train_separate`` file
(an empty split file is refused by the project's converter).
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch

from ..data.registry import DATASETS
from ..data.splits import image_path_problem
from ..data.staging import staged_folder, write_bytes_atomic
from ..errors import OfficialSplitsError
from .detections import image_bytes, read_detection_shard

__all__ = [
    "OFFICIAL_KEYS",
    "OfficialSplitsError",
    "existing_split_files",
    "official_row",
    "target_problem",
    "write_official_splits",
]

#: The dataset keys the official loader accepts (``--dataset`` of train_clip_vg.py).
OFFICIAL_KEYS = ("unc", "unc+", "gref", "gref_umd", "referit", "flickr")
PLACEHOLDER = "useless placeholder"
SINGLE_ROOT, MULTI_ROOT, IMAGE_ROOT = "unsup_single_source", "unsup_multi_source", "image_data"
#: ``train_separate/`` numbering: the official merge order.
SEPARATE_ORDER = ("template", "relation", "caption")


@dataclass(frozen=True)
class _Label:
    """One expression of a generated split."""

    row_index: int
    file_name: str
    source: str
    expression: str
    box: tuple[float, float, float, float]


def official_row(file_name: str, box: Sequence[float], expression: str, key: str) -> list[Any]:
    """One row of an official ``<key>_train_pseudo.pth`` from an ``x1, y1, x2, y2`` pixel box."""
    info = DATASETS[key]
    x1, y1, x2, y2 = (float(v) for v in box)
    stored = [x1, y1, x2 - x1, y2 - y1] if info.box_format == "xywh" else [x1, y1, x2, y2]
    if info.num_fields == 3:
        return [str(file_name), stored, str(expression)]
    return [str(file_name), PLACEHOLDER, stored, str(expression), PLACEHOLDER]


def existing_split_files(target: Path) -> list[Path]:
    """Split files already in a target folder (its top level and the two split roots; links are not followed)."""
    found = sorted(target.glob("*.pth"))
    for root in (SINGLE_ROOT, MULTI_ROOT):
        if (target / root).is_dir():
            found += sorted((target / root).rglob("*.pth"))
    return found


def target_problem(target: str | Path, overwrite: bool) -> str | None:
    """Why ``target`` cannot receive the official files (a file; split files there without ``overwrite``), or None."""
    path = Path(target)
    if path.exists() and not path.is_dir():
        return f"--official_splits {target}: is a file, not a folder"
    if path.is_dir() and not overwrite:
        present = existing_split_files(path)
        if present:
            return (
                f"--official_splits {target}: already holds split files ({present[0].relative_to(path)}"
                f"{f' and {len(present) - 1} more' if len(present) > 1 else ''}); "
                "pass --overwrite_official_splits to replace them"
            )
    return None


def _read_labels(config_dir: Path, split: str) -> list[_Label]:
    """The expressions of one generated split, in ``row_index`` order."""
    labels = []
    for path in sorted(config_dir.glob(f"{split}-*-of-*.parquet")):
        for image in pq.read_table(path, columns=["file_name", "expressions"]).to_pylist():
            labels += [
                _Label(e["row_index"], image["file_name"], e["source"], e["expression"], tuple(e["bbox"]))
                for e in image["expressions"]
            ]
    return sorted(labels, key=lambda label: label.row_index)


def _split_files(output_dir: Path, name: str, key: str) -> dict[str, list[list[Any]]]:
    """``relative path -> rows`` of every official file to write (empty sources left out)."""
    from .writer import config_names

    single, multi = config_names(name)
    files: dict[str, list[list[Any]]] = {}

    def rows(labels: list[_Label]) -> list[list[Any]]:
        return [official_row(x.file_name, x.box, x.expression, key) for x in labels]

    template = rows(_read_labels(output_dir / single, "train_pseudo"))
    if template:
        files[f"{SINGLE_ROOT}/{key}/{key}_train_pseudo.pth"] = template
    merged: list[list[Any]] = []
    for number, source in enumerate(SEPARATE_ORDER, start=1):
        part = rows(_read_labels(output_dir / multi, f"train_{source}"))
        if part:
            files[f"{MULTI_ROOT}/{key}/train_separate/{number}_{key}_train_pseudo_{source}.pth"] = part
        merged += part
    if merged:
        files[f"{MULTI_ROOT}/{key}/{key}_train_pseudo.pth"] = merged
    return files


def _image_folder(detection_shards: Sequence[Path]) -> Path | None:
    """The folder every input image is a file of, under its file name (an ``--image_dir`` input), or None."""
    roots = set()
    for shard in detection_shards:
        for item in read_detection_shard(shard):
            path, name = item.record.path, item.record.file_name
            if path is None or not Path(path).as_posix().endswith(f"/{name}"):
                return None
            roots.add(Path(path[: len(path) - len(name)]).resolve())
            if len(roots) > 1:
                return None
    return roots.pop() if roots else None


def _images_to_write(detection_shards: Sequence[Path], wanted: set[str]) -> Iterator[tuple[str, bytes]]:
    """``(file name, bytes)`` of the labelled images of an input that has no image folder (a datasets input)."""
    for shard in detection_shards:
        for item in read_detection_shard(shard):
            if item.record.file_name in wanted:
                yield item.record.file_name, image_bytes(item.record)


def _save_atomic(rows: list[list[Any]], path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(rows, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def _link_images(folder: Path, link: Path, shown: Path) -> str | None:
    """Make ``link`` (``shown`` once in place) point at the image folder (replacing an earlier link); the reason
    when it cannot."""
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink():
        link.unlink()
    elif link.exists():
        return f"{shown} exists and is not a link; left as it is"
    try:
        link.symlink_to(folder, target_is_directory=True)
    except OSError as err:  # a file system without symbolic links
        return f"cannot link {shown} to {folder}: {err.strerror or err}"
    return None


def _place_images(
    image_dir: Path, shown: Path, folder: Path | None, detection_shards: Sequence[Path], names: set[str]
) -> tuple[str, str | None]:
    """Put the images where the official loader looks (``image_dir``, ``shown`` in messages: its final place): a
    link to ``folder``, or (no folder) the labelled images written once; returns where they are and a note when
    the link could not be made."""
    if folder is not None:
        note = (
            _link_images(folder, image_dir, shown) if folder.is_dir() else f"image folder {folder} not found: link it"
        )
        return f"{shown} -> {folder} (a link; the images are not copied)", note
    if image_dir.is_symlink():  # an earlier run's link: never write into the folder it points at
        image_dir.unlink()
    for file_name, data in _images_to_write(detection_shards, names):
        write_bytes_atomic(image_dir / file_name, data)
    return f"{shown} ({len(names)} images written: the input's images are not files under their names)", None


def write_official_splits(
    output_dir: str | Path, name: str, detection_shards: Sequence[Path], target: str | Path, key: str = "referit"
) -> dict[str, Any]:
    """Write the official split files of a generated dataset under ``target``; return what was written and how to
    run the original code on it. Raises :class:`OfficialSplitsError` before writing anything on an unsafe name."""
    if key not in OFFICIAL_KEYS:
        raise OfficialSplitsError(f"--official_dataset {key!r}: expected one of {list(OFFICIAL_KEYS)}")
    target = Path(target).resolve()
    files = _split_files(Path(output_dir), name, key)
    names = {row[0] for rows in files.values() for row in rows}
    for file_name in sorted(names):
        problem = image_path_problem(file_name)
        if problem:
            raise OfficialSplitsError(f"--official_splits: {problem} (file name of a generated label)")
    folder = _image_folder(detection_shards)
    with staged_folder(target) as stage:  # all files or none: a killed run never mixes two runs' files
        stale = [
            p
            for p in existing_split_files(stage)
            if p.parent != stage and p.relative_to(stage).as_posix() not in files  # only under the split roots
        ]
        for relative, rows in files.items():
            _save_atomic(rows, stage / relative)
        for path in stale:
            path.unlink()
        image_dir = Path(IMAGE_ROOT) / DATASETS[key].image_dir
        images, note = _place_images(stage / image_dir, target / image_dir, folder, detection_shards, names)
        summary = _summary(target, key, files, images, note)
        _write_readme(stage, summary, folder)
    return summary


def _summary(
    target: Path, key: str, files: dict[str, list[list[Any]]], images: str, note: str | None
) -> dict[str, Any]:
    """What was written under ``target`` and the arguments of the original code."""
    summary = {
        "dataset": key,
        "files": {relative: len(rows) for relative, rows in files.items()},
        "data_root": str(target / IMAGE_ROOT),
        "split_roots": {
            "single": str(target / SINGLE_ROOT),
            "multi": str(target / MULTI_ROOT),
        },
        "images": images,
        "readme": str(target / "README.md"),
    }
    summary["original_code"] = {
        scenario: f"--dataset {key} --data_root {summary['data_root']} --split_root {root}"
        for scenario, root in summary["split_roots"].items()
    }
    if note:
        summary["note"] = note
    return summary


def _write_readme(target: Path, summary: dict[str, Any], folder: Path | None) -> None:
    key = summary["dataset"]
    info = DATASETS[key]
    box = "x, y, w, h (top-left corner and size)" if info.box_format == "xywh" else "x1, y1, x2, y2"
    layout = (
        "[image file, box, expression]"
        if info.num_fields == 3
        else "[image file, 'useless placeholder', box, expression, 'useless placeholder']"
    )
    listing = "\n".join(f"- `{relative}`: {count} rows" for relative, count in summary["files"].items())
    link = (
        f"`{IMAGE_ROOT}/{info.image_dir}` is a link to `{folder}`: if the images move, point it at their new folder."
        if folder is not None
        else f"The labelled images were written to `{IMAGE_ROOT}/{info.image_dir}` under their file names."
    )
    data_root, roots, args = summary["data_root"], summary["split_roots"], summary["original_code"]
    text = f"""# Pseudo-labels in the official CLIP-VG split layout (`--dataset {key}`)

Written by `clipvg-pseudo-label --official_splits` from the generated `-unsup-single` / `-unsup-multi` configs:
the same rows in the same order. Each file is a list of rows

    {layout}

with the box as {box} in pixels of the original image and the image named relative to the image folder. Rows hold
plain Python types: `torch.load(path, weights_only=True)` reads them.

{listing}

{link}

The original code (`train_clip_vg.py`, `eval.py`; `--sup_type un` trains on `{key}_train_pseudo.pth`, and the
loader also reads a labelled `{key}_val.pth` every epoch for validation: put one beside it):

    {args["single"]}
    {args["multi"]}

This project's converter reads them back (`--setting unsup-single` with the first split root, `unsup-multi` with the
second, which concatenates `train_separate/` in order):

    clipvg-convert-splits --split_root {roots["multi"]} --image_root {data_root} \\
        --setting unsup-multi --datasets {key} --output_dir OUT
"""
    write_bytes_atomic(target / "README.md", text.encode())
