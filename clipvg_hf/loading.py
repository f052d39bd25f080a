"""Loading a CLIP-VG model with its processor, the same way in every command.

A folder or Hub id that holds no CLIP-VG processor (a bare converted checkpoint, an OpenAI CLIP checkpoint used as
the start of training) gets :meth:`CLIPVGProcessor.from_defaults` at the model's image size.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoModel, AutoProcessor

from .modeling_clipvg import CLIPVGForGrounding
from .modeling_hivg import HiVGForGrounding
from .processing_clipvg import CLIPVGProcessor

__all__ = ["load_model_and_processor", "load_processor"]


def load_processor(name_or_path: str | Path, image_size: int) -> CLIPVGProcessor:
    """The processor saved with ``name_or_path`` if it is a CLIP-VG one, else the default at ``image_size`` px."""
    try:
        processor = AutoProcessor.from_pretrained(name_or_path)
    except (OSError, ValueError, TypeError):  # no processor files, or ones of another model type
        processor = None
    if isinstance(processor, CLIPVGProcessor):
        return processor
    return CLIPVGProcessor.from_defaults(image_size)


def load_model_and_processor(name_or_path: str | Path, **model_kwargs) -> tuple[CLIPVGForGrounding, CLIPVGProcessor]:
    """A CLIP-VG or HiVG model (in eval mode) and its processor; ``ValueError`` if the folder holds another type."""
    model = AutoModel.from_pretrained(name_or_path, **model_kwargs)
    if not isinstance(model, (CLIPVGForGrounding, HiVGForGrounding)):
        raise ValueError(f"{name_or_path} holds a {type(model).__name__}, not a CLIP-VG model or a HiVG one")
    return model.eval(), load_processor(name_or_path, model.config.image_size)
