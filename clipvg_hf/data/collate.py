"""Batching per-expression samples into ``CLIPVGForGrounding`` inputs, with dynamic text padding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import default_collate

from ..processing_clipvg import CLIP_CONTEXT_LENGTH, build_clip_tokenizer, clean_text

__all__ = ["CLIPVGCollator"]


class CLIPVGCollator:
    """Stack images, masks and boxes; tokenize the texts and pad them to the longest of the batch (at most 77).

    Texts are cleaned and lower-cased like the official pipeline (:func:`clean_text`). A text longer than CLIP's
    context (75 BPE tokens) raises, naming the sample, as the official tokenizer does. Returns ``pixel_values``
    (B, 3, S, S), ``pixel_mask`` (B, S, S) long (1 = real pixel), ``input_ids`` / ``attention_mask`` (B, L) and
    ``labels`` (B, 4) normalised (cx, cy, w, h); plus ``row_index`` (B,) when ``return_row_index``, and
    ``object_mask`` (B, S, S) uint8 (one per expression: HiVG's ground-truth masks) when the samples carry one.

    With ``group_images`` (evaluation: deterministic pixels) samples of the same dataset image (``image_id``, set by
    :class:`~clipvg_hf.data.GroundingDataset`) share one image row: ``pixel_values`` / ``pixel_mask`` hold the I
    distinct images in order of first appearance and ``image_index`` (B,) names each expression's image, so
    ``model(**batch)`` encodes every image once (same boxes as one row per expression).
    """

    def __init__(
        self,
        tokenizer: Any = None,
        max_length: int = CLIP_CONTEXT_LENGTH,
        return_row_index: bool = False,
        group_images: bool = False,
    ):
        self.tokenizer = tokenizer if tokenizer is not None else build_clip_tokenizer()
        self.max_length = max_length
        self.return_row_index = return_row_index
        self.group_images = group_images

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not samples:
            raise ValueError("cannot collate an empty batch")
        texts = [clean_text(s["text"]) for s in samples]
        text = self.tokenizer(texts, padding="longest", truncation=False, return_tensors="pt")
        lengths = text["attention_mask"].sum(dim=1)
        for sample, length in zip(samples, lengths.tolist()):
            if length > self.max_length:
                raise ValueError(
                    f"expression of row {sample.get('row_index', '?')} is {length} tokens long, over the "
                    f"{self.max_length}-token CLIP context: {sample['text']!r}"
                )
        images, image_index = self._images(samples)
        # default_collate stacks straight into shared memory inside a DataLoader worker (no copy on the way out)
        batch = {
            "pixel_values": default_collate([torch.as_tensor(s["pixel_values"], dtype=torch.float32) for s in images]),
            "pixel_mask": default_collate([torch.as_tensor(s["pixel_mask"]).long() for s in images]),
            "input_ids": text["input_ids"],
            "attention_mask": text["attention_mask"],
            "labels": default_collate([torch.as_tensor(s["labels"], dtype=torch.float32) for s in samples]),
        }
        carried = sum("object_mask" in s for s in samples)
        if carried not in (0, len(samples)):
            raise ValueError(f"{carried} of {len(samples)} samples carry an object_mask; all or none must")
        if carried:
            batch["object_mask"] = default_collate(
                [torch.as_tensor(s["object_mask"], dtype=torch.uint8) for s in samples]
            )
        if image_index is not None:
            batch["image_index"] = image_index
        if self.return_row_index:
            batch["row_index"] = torch.tensor([int(s["row_index"]) for s in samples])
        return batch

    def _images(self, samples: Sequence[dict[str, Any]]) -> tuple[Sequence[dict[str, Any]], torch.Tensor | None]:
        """The samples whose pixels go into the batch, and each expression's image row (None: one per sample)."""
        if not self.group_images:
            return samples, None
        first: dict[int, int] = {}
        for position, sample in enumerate(samples):
            if "image_id" not in sample:
                raise ValueError("group_images needs samples with an image_id (from GroundingDataset)")
            first.setdefault(int(sample["image_id"]), position)
        row_of = {image_id: row for row, image_id in enumerate(first)}
        index = torch.tensor([row_of[int(s["image_id"])] for s in samples], dtype=torch.long)
        return [samples[position] for position in first.values()], index
