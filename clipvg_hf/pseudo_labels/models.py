"""Loading the transformers pipelines the generator uses, with the model checked against the task *before* any work."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoConfig, pipeline
from transformers.models.auto import modeling_auto
from transformers.pipelines import SUPPORTED_TASKS
from transformers.utils import logging as hf_logging

from ..errors import ModelCheckError

__all__ = ["CAPTION_TASK", "ModelCheckError", "ModelInfo", "check_model", "check_weights", "load_pipeline"]

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


@dataclass(frozen=True)
class ModelInfo:
    """What the dataset card records about a model: the id as given, its task, type and resolved revision."""

    model: str
    task: str
    model_type: str
    revision: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "task": self.task, "model_type": self.model_type, "revision": self.revision}


def check_model(
    model: str, tasks: str | tuple[str, ...], flag: str, revision: str | None = None, weights: bool = True
) -> ModelInfo:
    """Resolve ``model``'s config and the first of ``tasks`` its architecture serves, then (``weights``) load it as
    its pipeline will and refuse it when that leaves weights random (:func:`check_weights`).

    Raises :class:`ModelCheckError` naming ``flag`` for an unknown id / path or a model of another task: by its
    ``model_type`` (a CLIP as a detector) or by its weights (a BLIP captioning checkpoint as a zero-shot classifier
    shares BLIP's ``model_type``, but holds no text encoder).
    """
    wanted = tuple(_ALIASES.get(t, t) for t in ((tasks,) if isinstance(tasks, str) else tasks))
    try:
        config = AutoConfig.from_pretrained(model, revision=revision)
    except (OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelCheckError(f"{flag} {model!r}: not a model id or folder transformers can load ({first})") from None
    for task in wanted:
        if any(config.model_type in names for names in _TASK_MODELS[task]):
            info = ModelInfo(model, task, config.model_type, getattr(config, "_commit_hash", None) or revision)
            if weights:
                check_weights(info, flag, getattr(config, "architectures", None) or [])
            return info
    raise ModelCheckError(
        f"{flag} {model!r} is a {config.model_type!r} model, which does not serve {' or '.join(wanted)}"
    )


def check_weights(info: ModelInfo, flag: str, architectures: list[str] | None = None) -> None:
    """Load ``info.model`` with the model class its pipeline uses and refuse it when weights of that class are
    missing from the checkpoint (or have another shape): transformers would initialise them at random and only warn.

    The error names the model, the class it would be loaded as, a few missing weights and the task the checkpoint
    has (from its ``architectures``). The model is loaded once here and freed: a wrong checkpoint is refused before
    any image is read.
    """
    model_class = SUPPORTED_TASKS[info.task]["pt"][0]
    with _quiet_transformers():
        try:
            model, loading = model_class.from_pretrained(
                info.model, revision=info.revision, dtype="auto", output_loading_info=True
            )
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ModelCheckError(f"{flag} {info.model!r}: cannot load its weights as a {info.task} model ({first})")
    loaded_as = type(model).__name__
    del model
    missing = sorted(loading.get("missing_keys") or ()) + sorted(
        str(key[0] if isinstance(key, tuple) else key) for key in loading.get("mismatched_keys") or ()
    )
    if not missing:
        return
    names = list(architectures or ())
    has = ", ".join(f"{name} ({' / '.join(_tasks_of(name)) or 'another task'})" for name in names) or "unknown"
    examples = ", ".join(repr(key) for key in missing[:3])
    raise ModelCheckError(
        f"{flag} {info.model!r} is not a {info.task} model: its checkpoint holds {has}, and loading it as "
        f"{loaded_as} leaves {len(missing)} weights random (e.g. {examples})"
    )


def _tasks_of(architecture: str) -> list[str]:
    """The generator's tasks whose model classes include ``architecture`` (a class name from a config)."""
    found = []
    for task, mappings in _TASK_MODELS.items():
        for names in mappings:
            if any(architecture in ((n,) if isinstance(n, str) else tuple(n)) for n in names.values()):
                found.append(task)
                break
    return found


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No load report or progress bar from the check's own loading (the verdict is this module's error)."""
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_pipeline(info: ModelInfo, device: str | None = None, bf16: bool = False) -> Any:
    """The transformers pipeline of a checked model (bf16 only on CUDA, as an opt-in)."""
    kwargs: dict[str, Any] = {}
    if device is not None:
        kwargs["device"] = device
    if bf16 and torch.cuda.is_available():
        kwargs["dtype"] = torch.bfloat16
    return pipeline(info.task, model=info.model, revision=info.revision, **kwargs)
