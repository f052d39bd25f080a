"""Optional ``torch.compile`` of a CLIP-VG model's three stages (visual tower, text tower, fusion)."""

from __future__ import annotations

from typing import Any

from .modeling_clipvg import CLIPVGForGrounding

__all__ = ["compile_model"]


def compile_model(model: CLIPVGForGrounding, **compile_kwargs: Any) -> CLIPVGForGrounding:
    """Compile the vision tower, text tower and fusion encoder with ``torch.compile`` (in place), and return the model.

    Optional: the first call of each new input shape compiles (minutes on a small CPU), so it pays off for long runs
    with few distinct shapes (pad text to a fixed bucket). Outputs match the eager model to float rounding.
    ``compile_kwargs`` go to ``torch.compile`` (e.g. ``mode="max-autotune"``, ``dynamic=True``).
    """
    compile_kwargs.setdefault("dynamic", True)
    for module in (
        *model.clip.vision_model.encoder.layers,
        *model.clip.text_model.encoder.layers,
        *model.fusion.layers,
    ):
        module.compile(**compile_kwargs)
    return model
