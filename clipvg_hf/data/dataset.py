"""Per-expression views of the image-grouped parquet splits, for PyTorch ``DataLoader``s (with or without accelerate)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from typing import Any

import datasets
import numpy as np
import PIL.Image
import pyarrow as pa
import pyarrow.compute as pc
import torch

from ..boxes_clipvg import frbbox_corners
from .decode import open_raw_image
from .object_mask import rasterize_box
from .registry import DATASETS, split_config_name

__all__ = [
    "GroundingDataset",
    "load_split",
    "local_cache_dir",
    "sample_rng",
    "streaming_samples",
    "transform_items",
]

#: Box column used by default: the official int-truncated box (parity with the paper's numbers).
DEFAULT_BOX_KEY = "bbox_official"

Transform = Callable[[PIL.Image.Image, Any, str, np.random.Generator], dict[str, Any]]


def local_cache_dir(folder: str | os.PathLike) -> str:
    """An Arrow cache directory for a local dataset folder, named after its path and its files' sizes and mtimes.

    datasets keys the cache of a local parquet folder by the folder's base name and the config only, so a
    re-converted folder, or another folder of the same name, would be served stale rows from the cache.
    """
    root = os.path.abspath(folder)
    digest = hashlib.sha256(root.encode())
    for directory, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            stat = os.stat(os.path.join(directory, name))
            digest.update(
                f"{os.path.relpath(os.path.join(directory, name), root)}:{stat.st_size}:{stat.st_mtime_ns}".encode()
            )
    return os.path.join(datasets.config.HF_DATASETS_CACHE, "clipvg-local", digest.hexdigest()[:20])


def load_split(dataset: str | os.PathLike, config: str, split: str | None = None, **kwargs: Any) -> Any:
    """``datasets.load_dataset`` for a converted folder or a Hub id; local folders get :func:`local_cache_dir`."""
    if os.path.isdir(dataset):
        kwargs.setdefault("cache_dir", local_cache_dir(dataset))
    return datasets.load_dataset(str(dataset), config, split=split, **kwargs)


def sample_rng(seed: int | None, epoch: int, index: int) -> np.random.Generator:
    """The random stream of one sample.

    With an integer ``seed`` it depends only on (seed, epoch, index): identical whatever the worker count or order.
    With ``seed=None`` it is drawn from torch's global RNG, which DataLoader re-seeds per worker and per epoch
    (reproducible under ``torch.manual_seed`` for a fixed ``num_workers``).
    """
    if seed is None:
        return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
    return np.random.default_rng([seed, epoch, index])


class GroundingDataset(torch.utils.data.Dataset):
    """Flat per-expression view of one converted split, in the original file order (``row_index``).

    Each item runs ``transform(image, box, text, rng)`` (e.g. :class:`CLIPVGTrainTransform` or
    :class:`CLIPVGEvalTransform`) and adds ``text`` (lower-cased, as the official loader does) and ``row_index``.
    Without a transform it returns the raw PIL image, box and text. Call :meth:`set_epoch` each epoch (accelerate's
    prepared loader and the HF Trainer do when the sampler has no ``set_epoch``) for per-epoch augmentation with a
    fixed ``seed``. A ``DataLoader`` fetches batches through :meth:`__getitems__`, which reads each image once for its
    adjacent expressions in the batch.

    Args:
        split: one split of a converted config, as loaded by ``datasets.load_dataset``.
        transform: maps (image, box, text, rng) to model inputs.
        seed: see :func:`sample_rng`.
        sources: keep only expressions from these pseudo-label sources (e.g. ``["template", "caption"]``).
        box_key: ``"bbox_official"`` (int-truncated, official) or ``"bbox"`` (exact float).
        image_root: re-root path-mode images.
        object_masks: give every expression HiVG's ground-truth object mask: the exact float box rasterised at the
            image's size as pycocotools' ``frBbox`` draws it (:mod:`clipvg_hf.data.object_mask`), passed to the
            transform as ``object_mask``, which carries it with the image (``object_mask`` (S, S) in the output).
        box_format: how the split files stored the boxes (``"xywh"`` or ``"xyxy"``), which decides the float
            corners of the mask; read from the split's config name when omitted.
    """

    def __init__(
        self,
        split: datasets.Dataset,
        transform: Transform | None = None,
        *,
        seed: int | None = None,
        sources: Sequence[str] | None = None,
        box_key: str = DEFAULT_BOX_KEY,
        image_root: str | os.PathLike | None = None,
        object_masks: bool = False,
        box_format: str | None = None,
    ):
        if box_key not in ("bbox", "bbox_official"):
            raise ValueError(f"box_key must be 'bbox' or 'bbox_official', got {box_key!r}")
        self.split = split.cast_column("image", datasets.Image(decode=False))
        self.transform, self.seed, self.box_key, self.image_root = transform, seed, box_key, image_root
        self.mask_box_format = (box_format or split_box_format(split)) if object_masks else None
        self.epoch = 0
        self.image_index, self.position, self.row_index = self._build_index(sources)

    def _build_index(self, sources: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image row, position in its list, row_index) per kept expression, sorted by row_index."""
        table: pa.Table = self.split.with_format("arrow", columns=["expressions"])[:]
        lists = table.column("expressions").combine_chunks()
        lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
        image_index = np.repeat(np.arange(len(lengths)), lengths)
        position = np.concatenate([np.arange(n) for n in lengths]) if len(lengths) else np.zeros(0, dtype=np.int64)
        flat = pc.list_flatten(lists)
        row_index = flat.field("row_index").to_numpy(zero_copy_only=False)
        keep = np.ones(len(row_index), dtype=bool)
        if sources is not None:
            keep = np.isin(flat.field("source").to_numpy(zero_copy_only=False), list(sources))
        order = np.argsort(row_index[keep], kind="stable")
        return image_index[keep][order], position[keep][order], row_index[keep][order]

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of an epoch (with a fixed ``seed``)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.row_index)

    def raw_item(self, index: int) -> dict[str, Any]:
        """The decoded image, the chosen box, the lower-cased text and provenance of one expression."""
        row = self.split[int(self.image_index[index])]
        return self._expression(row, index, self._open_image(row))

    def _open_image(self, row: dict[str, Any]) -> PIL.Image.Image:
        """The image of a row: decoded, or opened undecoded for transforms that decode it themselves."""
        lazy = bool(getattr(self.transform, "lazy_image", False))
        image = open_raw_image(row["image"], row["file_name"], self.image_root, decode=not lazy)
        if image.size != (row["width"], row["height"]):
            raise ValueError(
                f"image {row['file_name']!r} is {image.width}x{image.height}, but the dataset says "
                f"{row['width']}x{row['height']} (wrong image_root?)"
            )
        return image

    def _expression(self, row: dict[str, Any], index: int, image: PIL.Image.Image) -> dict[str, Any]:
        """One expression of an image row, with the image given."""
        expression = row["expressions"][int(self.position[index])]
        item = {
            "image": image,
            "box": expression[self.box_key],
            "text": expression["expression"].lower(),
            "row_index": expression["row_index"],
            "source": expression["source"],
            "file_name": row["file_name"],
            "image_id": int(self.image_index[index]),
        }
        if self.mask_box_format is not None:
            corners = frbbox_corners(expression["bbox"], self.mask_box_format)
            item["object_mask"] = rasterize_box(corners, row["height"], row["width"])
        return item

    def _check_index(self, index: int) -> int:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} expressions")
        return index % len(self)

    def _transformed(self, run: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """:func:`transform_items` with this view's transform, seed and epoch (raw items without a transform)."""
        return run if self.transform is None else transform_items(self.transform, run, self.seed, self.epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._transformed([self.raw_item(self._check_index(index))])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """A batch of items, equal to ``[self[i] for i in indices]``; what a ``DataLoader`` calls.

        Consecutive indices on the same image (file order in evaluation, :class:`~clipvg_hf.data.ImageGroupedSampler`
        in training) read the row and open or decode the image once: an undecoded JPEG keeps each decoded scale for
        the next expression, and a deterministic transform letterboxes the image once (see :meth:`_transformed`).
        """
        positions = [self._check_index(index) for index in indices]
        images = self.image_index[positions]
        starts = [0, *(np.flatnonzero(images[1:] != images[:-1]) + 1).tolist(), len(positions)]
        items: list[dict[str, Any]] = []
        for start, stop in zip(starts[:-1], starts[1:]):
            row = self.split[int(images[start])]
            image = self._open_image(row)
            items += self._transformed([self._expression(row, position, image) for position in positions[start:stop]])
        return items


def transform_items(
    transform: Transform, run: list[dict[str, Any]], seed: int | None, epoch: int
) -> list[dict[str, Any]]:
    """``transform`` applied to raw items of one image (keys image, box, text, row_index, file_name, optionally
    image_id), each output with its ``text``, ``row_index`` and ``image_id`` (when given).

    A transform with a ``transform_run(image, boxes)`` method (a deterministic one, such as the evaluation letterbox)
    processes the image once for the whole run; others run item by item, each with its own random stream
    (:func:`sample_rng`). Items with an ``object_mask`` hand it to the transform (``object_mask=`` /
    ``object_masks=``). An image that fails to decode inside the transform is reported with its file name.
    """
    masks = [item["object_mask"] for item in run] if run and "object_mask" in run[0] else None
    try:
        shared = getattr(transform, "transform_run", None)
        if shared is not None and len(run) > 1:
            boxes = [item["box"] for item in run]
            outs = shared(run[0]["image"], boxes) if masks is None else shared(run[0]["image"], boxes, masks)
        else:
            outs = [
                transform(
                    item["image"],
                    item["box"],
                    item["text"],
                    sample_rng(seed, epoch, int(item["row_index"])),
                    **({} if masks is None else {"object_mask": mask}),
                )
                for item, mask in zip(run, masks or [None] * len(run), strict=True)
            ]
    except OSError as err:  # an undecoded image fails inside the transform (e.g. a truncated file)
        raise ValueError(f"cannot read image {run[0]['file_name']!r}: {type(err).__name__}: {err}") from err
    for out, item in zip(outs, run, strict=True):
        out.update(text=item["text"], row_index=item["row_index"])
        if "image_id" in item:  # the dataset image row: expressions of one image share it
            out["image_id"] = item["image_id"]
    return outs


def split_box_format(split: datasets.Dataset) -> str:
    """How the split files of a converted config stored their boxes, from its config name (``refcoco-full`` ->
    ``"xywh"``); an error naming the config when it is not a known dataset."""
    config = split.info.config_name or ""
    name = split_config_name(config)[0]
    formats = {info.name: info.box_format for info in DATASETS.values()}
    if name not in formats:
        raise ValueError(
            f"cannot tell the box format of config {config!r} (dataset {name!r}); pass box_format="
            f"'xywh' or 'xyxy' to build object masks"
        )
    return formats[name]


def streaming_samples(
    split: datasets.IterableDataset,
    transform: Transform,
    *,
    seed: int | None = None,
    box_key: str = DEFAULT_BOX_KEY,
    object_masks: bool = False,
    box_format: str | None = None,
) -> datasets.IterableDataset:
    """Transformed per-expression samples from a streamed split (image order, not ``row_index`` order).

    Each image is read and decoded once for all its expressions (:func:`transform_items`); with an integer ``seed``
    a sample equals the one ``GroundingDataset(..., seed=seed)`` gives in epoch 0, ``object_masks`` and
    ``box_format`` included. Shards stay whole, so ``split_dataset_by_node`` / accelerate give each rank its own
    parquet files.
    """
    lazy = bool(getattr(transform, "lazy_image", False))
    mask_format = (box_format or split_box_format(split)) if object_masks else None
    keys = ("pixel_values", "pixel_mask", "labels", "text", "row_index") + (("object_mask",) if object_masks else ())

    def apply(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {key: [] for key in keys}
        rows = zip(
            batch["image"], batch["file_name"], batch["expressions"], batch["height"], batch["width"], strict=True
        )
        for cell, file_name, expressions, *size in rows:
            image = open_raw_image(cell, file_name, decode=not lazy)
            run = [
                {
                    "image": image,
                    "box": e[box_key],
                    "text": e["expression"].lower(),
                    "row_index": e["row_index"],
                    "file_name": file_name,
                }
                for e in expressions
            ]
            if mask_format is not None:
                for item, expression in zip(run, expressions, strict=True):
                    item["object_mask"] = rasterize_box(frbbox_corners(expression["bbox"], mask_format), *size)
            for sample in transform_items(transform, run, seed, 0):
                for key in keys:
                    out[key].append(sample[key])
        return out

    columns = ["image", "file_name", "width", "height", "expressions"]
    return split.cast_column("image", datasets.Image(decode=False)).map(
        apply, batched=True, batch_size=1, remove_columns=columns
    )
