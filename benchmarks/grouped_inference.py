"""A grouped inference path of CLIP-VG for the benchmarks, whose boxes equal the plain ``model(...)`` forward pass
(within 1e-5).

Several expressions are grounded per image (≈ 7 on RefCOCO). Evaluation and scoring batches already hold each
distinct image once with ``image_index`` (``CLIPVGCollator(group_images=True)``), so ``model(**batch)`` encodes it
once; this module adds what the forward pass does not: the text padded only to the longest expression of a chunk,
a bound on the expressions fused at once, and optional autocast / compilation.

API (used by ``benchmarks/bench_model.py``):

``predict_boxes_grouped(model, pixel_values, pixel_mask, image_index, input_ids, attention_mask, *,
expression_batch_size=None, autocast_dtype=None) -> torch.Tensor``
    ``pixel_values`` (I, 3, S, S) distinct letterboxed images; ``pixel_mask`` (I, S, S), 1 = real pixel, or None;
    ``image_index`` (E,) int, the image (row of ``pixel_values``) of each expression; ``input_ids`` and
    ``attention_mask`` (E, L), any L <= 77, any pad id. Returns (E, 4) float32 boxes, normalised (cx, cy, w, h) on
    the canvas: ``model(pixel_values[image_index], input_ids, attention_mask, pixel_mask[image_index])
    .pred_boxes[:, 0]``. Runs without autograd. ``expression_batch_size`` bounds the expressions fused at once
    (memory); ``autocast_dtype`` (e.g. ``torch.bfloat16`` on CUDA) is an opt-in that changes the numbers.

``trim_text_padding(input_ids, attention_mask) -> (input_ids, attention_mask)``
    Drop the trailing columns that are padding in every row (77-token inputs become longest-expression inputs).

``compile_model`` (optional ``torch.compile`` of the three stages) is in ``clipvg_hf.inference``.
"""

from __future__ import annotations

import contextlib

import torch

from clipvg_hf.modeling_clipvg import CLIPVGForGrounding, patch_padding_mask

__all__ = ["predict_boxes_grouped", "trim_text_padding"]


def trim_text_padding(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut the text to the longest real length of the batch.

    Exact for CLIP-VG: the text tower runs with its causal mask only (real tokens never see later padding) and the
    fusion masks padded text tokens as keys. Only trailing all-padding columns are removed.
    """
    if input_ids.shape != attention_mask.shape or input_ids.dim() != 2:
        raise ValueError(
            f"input_ids {tuple(input_ids.shape)} and attention_mask {tuple(attention_mask.shape)} "
            "must be the same (batch, length) shape"
        )
    real_columns = attention_mask.bool().any(dim=0).nonzero()
    length = int(real_columns.max()) + 1 if len(real_columns) else 1
    return input_ids[:, :length], attention_mask[:, :length]


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast on ``device`` to ``dtype``, or nothing."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def predict_boxes_grouped(
    model: CLIPVGForGrounding,
    pixel_values: torch.Tensor,
    pixel_mask: torch.Tensor | None,
    image_index: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *,
    expression_batch_size: int | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """One box per expression, encoding each of the ``I`` distinct images once (see the module docstring).

    Cost: ``I`` vision-tower passes instead of ``E``, the visual projection once per image, the text tower and the
    fusion on the longest real expression length. Set ``model.eval()`` first (dropout), as for the plain path.
    """
    device = model.device
    image_index = torch.as_tensor(image_index, dtype=torch.long)
    model._check_inputs(pixel_values, input_ids, attention_mask, pixel_mask, None, image_index)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if pixel_mask is None:
        pixel_mask = torch.ones(pixel_values.shape[0], *pixel_values.shape[2:], dtype=torch.long)
    image_index = image_index.to(device)
    chunk = expression_batch_size or max(1, input_ids.shape[0])
    with torch.no_grad(), _autocast(device, autocast_dtype):
        visual_features = model.get_multilevel_visual_features(pixel_values.to(device))
        visual_tokens = model.project_visual_features(visual_features)
        patch_padding = patch_padding_mask(pixel_mask.to(device), model.config.num_patches_per_side)
        boxes = []
        for start in range(0, input_ids.shape[0], chunk):
            ids, mask = trim_text_padding(input_ids[start : start + chunk], attention_mask[start : start + chunk])
            rows = image_index[start : start + chunk]
            text_features = model.get_text_token_features(ids.to(device))
            box = model.ground_packed(visual_tokens, text_features, mask.to(device) == 0, patch_padding, rows)
            boxes.append(box.float())
    return torch.cat(boxes) if boxes else torch.zeros(0, 4, device=device)
