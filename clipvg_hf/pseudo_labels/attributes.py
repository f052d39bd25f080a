"""Attributes of detected boxes from a zero-shot image classifier (CLIP, SigLIP, ...) on each box crop.

Replaces the official bottom-up-attention attribute head: each crop is scored against the attribute vocabulary
(the 400 Visual Genome attributes by default) exactly as the ``zero-shot-image-classification`` pipeline scores one
image (softmax over the vocabulary; sigmoid for SigLIP), but many crops share one forward pass and one encoding of
the vocabulary. The template engine then applies the official confidence rule: the top attribute is used only when
its score exceeds ``attr_conf_thresh`` (0.3).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import PIL.Image
import torch

from .templates import Detection
from .vocab import attribute_vocabulary

__all__ = ["DEFAULT_ATTRIBUTE_TEMPLATE", "AttributeClassifier"]

#: The zero-shot pipeline's default hypothesis template.
DEFAULT_ATTRIBUTE_TEMPLATE = "This is a photo of {}."


class AttributeClassifier:
    """Top attribute (word, score) of every detection of an image, from its crop; batched over crops."""

    def __init__(
        self,
        pipe: Any,
        vocabulary: Sequence[str] | None = None,
        template: str = DEFAULT_ATTRIBUTE_TEMPLATE,
        batch_size: int = 32,
    ):
        self.pipe, self.batch_size = pipe, batch_size
        self.vocabulary = list(vocabulary if vocabulary is not None else attribute_vocabulary())
        self.template = template
        self._text_inputs: Any = None

    def _texts(self) -> Any:
        if self._text_inputs is None:
            kwargs: dict[str, Any] = {"padding": True}
            if "siglip" in self.pipe.model.config.model_type:
                kwargs.update(padding="max_length", max_length=64, truncation=True)
            sequences = [self.template.format(word) for word in self.vocabulary]
            self._text_inputs = self.pipe.tokenizer(sequences, return_tensors="pt", **kwargs).to(self.pipe.device)
        return self._text_inputs

    @torch.inference_mode()
    def scores(self, crops: Sequence[PIL.Image.Image]) -> torch.Tensor:
        """``(len(crops), len(vocabulary))`` scores, as the pipeline computes them for one image."""
        out = []
        for start in range(0, len(crops), self.batch_size):
            batch = list(crops[start : start + self.batch_size])
            pixels = self.pipe.image_processor(images=batch, return_tensors="pt")
            pixels = pixels.to(self.pipe.device).to(self.pipe.dtype)
            logits = self.pipe.model(**self._texts(), **pixels).logits_per_image.float()
            out.append(torch.sigmoid(logits) if "siglip" in self.pipe.model.config.model_type else logits.softmax(-1))
        return torch.cat(out) if out else torch.zeros(0, len(self.vocabulary))

    def __call__(
        self, images: Sequence[PIL.Image.Image], detections: Sequence[Sequence[Detection]]
    ) -> list[list[Detection]]:
        """Each image's detections with ``attribute`` / ``attribute_score`` set; the crops of all images are batched.

        The top attribute is the first maximum on ties (as ``argmax``); boxes under one pixel wide or high get none.
        """
        crops, positions = [], []
        for n, (image, dets) in enumerate(zip(images, detections)):
            for i, det in enumerate(dets):
                x1, y1, x2, y2 = det.box
                if x2 - x1 >= 1 and y2 - y1 >= 1:
                    crops.append(image.crop((x1, y1, x2, y2)))
                    positions.append((n, i))
        result = [list(dets) for dets in detections]
        if not crops:
            return result
        best, index = self.scores(crops).max(dim=-1)  # torch.max returns the first maximal index
        for (n, i), score, idx in zip(positions, best.tolist(), index.tolist()):
            result[n][i] = replace(result[n][i], attribute=self.vocabulary[idx], attribute_score=float(score))
        return result
