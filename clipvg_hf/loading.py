"""Loading a CLIP-VG model with its processor, the same way in every command.

A folder or Hub id that holds no CLIP-VG processor (a bare converted checkpoint, an OpenAI CLIP checkpoint used as
the start of training) gets :meth:`CLIPVGProcessor.from_defaults` at the model's image size.

:func:`load_grounding_model` is the one place where a saved model is checked on load: a name that is neither a
folder nor a loadable Hub id is "not found", a model of another type is refused, and so is a folder whose weights
miss tensors of the model (transformers would initialise them randomly) or hold NaN / infinite values. Each is a
:class:`~clipvg_hf.errors.UsageError` naming the argument.

``dtype=torch.bfloat16`` loads the model for low-precision inference (see :mod:`clipvg_hf.precision`): the weights
are held in bf16 once, the box head (``_keep_in_fp32_modules_strict``) stays fp32, so the boxes are computed in fp32
from bf16 features. ``dtype=torch.qint8`` loads in fp32, then quantises the linear layers outside the box head to
dynamic int8 (CPU only). :func:`cast_for_inference` does the same to a model already loaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModel, AutoProcessor

from .errors import UsageError, first_line
from .modeling_clipvg import CLIPVGPreTrainedModel
from .processing_clipvg import CLIPVGProcessor

__all__ = [
    "cast_for_inference",
    "check_finite_weights",
    "load_grounding_model",
    "load_model_and_processor",
    "load_processor",
]


def load_processor(name_or_path: str | Path, image_size: int) -> CLIPVGProcessor:
    """The processor saved with ``name_or_path`` if it is a CLIP-VG one, else the default at ``image_size`` px."""
    try:
        processor = AutoProcessor.from_pretrained(name_or_path)
    except (OSError, ValueError, TypeError):  # no processor files, or ones of another model type
        processor = None
    if isinstance(processor, CLIPVGProcessor):
        return processor
    return CLIPVGProcessor.from_defaults(image_size)


def non_finite_tensors(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors that hold a NaN or an infinite value."""
    return [
        name
        for name, value in tensors.items()
        if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]


def check_finite_weights(model: torch.nn.Module, where: str) -> None:
    """Refuse a model whose parameters or buffers hold NaN / infinite values (its boxes would be NaN)."""
    bad = non_finite_tensors(dict(model.state_dict()))
    if bad:
        raise UsageError(
            f"{where}: {len(bad)} weight tensors hold NaN or infinite values, e.g. {bad[:5]}; "
            "reconvert or retrain the model"
        )


def cast_for_inference(model: torch.nn.Module, dtype: torch.dtype | None) -> torch.nn.Module:
    """Cast a CLIP-VG / HiVG model in place to ``dtype`` (None: fp32) for inference, keeping the modules that the
    numerics need (the box head) in fp32, never rounded (:meth:`CLIPVGPreTrainedModel.to_inference_dtype`)."""
    return model.to_inference_dtype(dtype or torch.float32)


def load_grounding_model(
    name_or_path: str | Path,
    argument: str = "--model_name_or_path",
    auto_class=AutoModel,
    dtype: torch.dtype | None = None,
    **model_kwargs,
) -> CLIPVGPreTrainedModel:
    """A CLIP-VG or HiVG model (in eval mode), checked: every weight present and finite.

    ``dtype`` (None: as saved, fp32 for every model this package writes) loads the weights in that dtype, the box
    head in fp32 (:func:`cast_for_inference`).

    Raises :class:`UsageError` naming ``argument``: "not found" for a name that is no folder and no loadable Hub
    id (never a bare connection or repo-id error), a model of another type, missing weights, non-finite weights.
    """
    name = str(name_or_path)
    where = f"{argument} {name}"
    local = Path(name).expanduser()
    if not local.is_dir() and (local.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1):
        raise UsageError(f"{where}: model folder not found")
    if dtype is not None and dtype.is_floating_point and dtype != torch.float32:
        model_kwargs["dtype"] = dtype  # converted while loading; the box head stays fp32 (strict keep list)
    try:
        model, info = auto_class.from_pretrained(name, output_loading_info=True, **model_kwargs)
    except (OSError, ValueError) as error:  # no such folder / Hub id, unreachable Hub, a config of another type
        if not local.is_dir():
            raise UsageError(
                f"{where}: not found: no folder {name} here, and no Hub model of that id could be loaded "
                f"({first_line(error)})"
            ) from error
        raise UsageError(f"{where}: could not load a CLIP-VG model from this folder: {first_line(error)}") from error
    if not isinstance(model, CLIPVGPreTrainedModel):  # every model family's class is one
        raise UsageError(f"{where} holds a {type(model).__name__}, not a CLIP-VG model or a HiVG one")
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        raise UsageError(
            f"{where}: the weights miss {len(missing)} tensors of the {type(model).__name__}, e.g. {missing[:6]} "
            "(they would be random); the folder is incomplete or of another model"
        )
    check_finite_weights(model, where)
    if dtype is not None:
        cast_for_inference(model, dtype)
    return model.eval()


def load_model_and_processor(
    name_or_path: str | Path, argument: str = "--model_name_or_path", dtype: torch.dtype | None = None, **model_kwargs
) -> tuple[CLIPVGPreTrainedModel, CLIPVGProcessor]:
    """A checked CLIP-VG or HiVG model (see :func:`load_grounding_model`, in eval mode, in ``dtype``) and its
    processor."""
    model = load_grounding_model(name_or_path, argument, dtype=dtype, **model_kwargs)
    return model, load_processor(name_or_path, model.config.image_size)
