"""Training order that keeps a few expressions of one image together, so that a batch decodes the image once.

RefCOCO-style splits hold several expressions per image (about 7 in RefCOCO), and decoding a JPEG costs more than
the whole augmentation of one expression that follows it. :class:`ImageGroupedSampler` visits every expression once
per epoch, like a shuffled ``RandomSampler``, but in runs of up to ``max_per_image`` expressions of one image;
``GroundingDataset.__getitems__`` then reads and decodes each run's image once. Each expression keeps its own random
augmentation; what changes is which expressions share a batch (an opt-in: the official loader shuffles
expressions independently).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["ImageGroupedSampler", "image_ids"]


def _per_position(dataset: torch.utils.data.Dataset, attribute: str) -> np.ndarray:
    """A per-position column of a :class:`~clipvg_hf.data.GroundingDataset`, also through ``Subset``s."""
    if isinstance(dataset, torch.utils.data.Subset):
        return _per_position(dataset.dataset, attribute)[np.asarray(dataset.indices, dtype=np.int64)]
    values = getattr(dataset, attribute, None)
    if values is None:
        raise TypeError(f"{type(dataset).__name__} has no {attribute}: expected a GroundingDataset")
    return np.asarray(values, dtype=np.int64)


def image_ids(dataset: torch.utils.data.Dataset) -> np.ndarray:
    """The image row of every position of a :class:`~clipvg_hf.data.GroundingDataset` (what group-by-image uses)."""
    return _per_position(dataset, "image_index")


def row_indices(dataset: torch.utils.data.Dataset) -> np.ndarray:
    """The ``row_index`` of every position of a :class:`~clipvg_hf.data.GroundingDataset` (what curricula use)."""
    return _per_position(dataset, "row_index")


class ImageGroupedSampler(Sampler[int]):
    """Every position once per epoch, in shuffled runs of at most ``max_per_image`` expressions of one image.

    The epoch's order: the expressions of each image in random order, cut into chunks of ``max_per_image``; the chunks
    of all images shuffled together. Deterministic in (seed, epoch) without the global RNG and identical on every
    rank, so accelerate's batch sharding splits it as it splits a ``RandomSampler``; call ``set_epoch`` each epoch
    (a prepared loader's ``set_epoch`` forwards it).

    Args:
        image_of: the image of each dataset position (:func:`image_ids`).
        max_per_image: the longest run of one image's expressions (1 = no grouping, a plain shuffle).
        seed: the order's seed.
    """

    def __init__(self, image_of: Sequence[int], max_per_image: int = 4, seed: int = 0):
        if max_per_image < 1:
            raise ValueError(f"max_per_image must be at least 1, got {max_per_image}")
        self.image_of = np.asarray(image_of, dtype=np.int64)
        if self.image_of.ndim != 1 or len(self.image_of) == 0:
            raise ValueError("image_of must list the image of at least one position")
        self.max_per_image, self.seed, self.epoch = int(max_per_image), int(seed), 0
        self._image_codes = np.unique(self.image_of, return_inverse=True)[1]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.image_of)

    def indices(self, epoch: int | None = None) -> list[int]:
        """The order of an epoch (every rank iterates the same one)."""
        epoch = self.epoch if epoch is None else int(epoch)
        rng = np.random.default_rng([self.seed, epoch])
        shuffled = rng.permutation(len(self.image_of))
        codes = self._image_codes[shuffled]
        by_image = np.argsort(codes, kind="stable")
        grouped, sorted_codes = shuffled[by_image], codes[by_image]  # by image, random order inside each image
        first = np.r_[True, sorted_codes[1:] != sorted_codes[:-1]]
        run_start = np.maximum.accumulate(np.where(first, np.arange(len(grouped)), 0))
        within = np.arange(len(grouped)) - run_start
        chunk = np.cumsum(within % self.max_per_image == 0) - 1  # a new chunk every max_per_image of an image
        chunk_rank = rng.permutation(int(chunk[-1]) + 1)
        return grouped[np.argsort(chunk_rank[chunk], kind="stable")].tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())
