"""Loading the transformers pipelines the generator uses, with the model checked against the task *before* any work."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoConfig, pipeline
from transformers.models.auto import modeling_auto

__all__ = ["CAPTION_TASK", "ModelCheckError", "ModelInfo", "check_model", "load_pipeline"]

#: transformers 5 serves captioning models (BLIP, GIT, Florence-2, ...) through ``image-text-to-text``; the
#: ``image-to-text`` task name of transformers 4 is accepted as an alias.
CAPTION_TASK = "image-text-to-text"

_TASK_MODELS: dict[str, tuple[dict[str, str], ...]] = {
    "object-detection": (modeling_auto.MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES,),
    "zero-shot-object-detection": (modeling_auto.MODEL_FOR_ZERO_SHOT_OBJECT_DETECTION_MAPPING_NAMES,),
    "zero-shot-image-classification": (modeling_auto.MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES,),
    CAPTION_TASK: (modeling_auto.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,),
}
_ALIASES = {"image-to-text": CAPTION_TASK}


class ModelCheckError(ValueError):
    """A model id that cannot be resolved, or whose architecture does not serve the requested task."""


@dataclass(frozen=True)
class ModelInfo:
    """What the dataset card records about a model: the id as given, its task, type and resolved revision."""

    model: str
    task: str
    model_type: str
    revision: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "task": self.task, "model_type": self.model_type, "revision": self.revision}


def check_model(model: str, tasks: str | tuple[str, ...], flag: str, revision: str | None = None) -> ModelInfo:
    """Resolve ``model``'s config (no weights) and the first of ``tasks`` its architecture serves.

    Raises :class:`ModelCheckError` naming ``flag`` for an unknown id / path or a model of another task.
    """
    wanted = tuple(_ALIASES.get(t, t) for t in ((tasks,) if isinstance(tasks, str) else tasks))
    try:
        config = AutoConfig.from_pretrained(model, revision=revision)
    except (OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelCheckError(f"{flag} {model!r}: not a model id or folder transformers can load ({first})") from None
    for task in wanted:
        if any(config.model_type in names for names in _TASK_MODELS[task]):
            return ModelInfo(model, task, config.model_type, getattr(config, "_commit_hash", None) or revision)
    raise ModelCheckError(
        f"{flag} {model!r} is a {config.model_type!r} model, which does not serve {' or '.join(wanted)}"
    )


def load_pipeline(info: ModelInfo, device: str | None = None, bf16: bool = False) -> Any:
    """The transformers pipeline of a checked model (bf16 only on CUDA, as an opt-in)."""
    kwargs: dict[str, Any] = {}
    if device is not None:
        kwargs["device"] = device
    if bf16 and torch.cuda.is_available():
        kwargs["dtype"] = torch.bfloat16
    return pipeline(info.task, model=info.model, revision=info.revision, **kwargs)
