"""The model families, one row each: every "which family is this?" question of the package is asked here.

A row holds the family's config and model classes, how its official state dict is recognised, its checkpoint
converter and the options only that converter takes, its model-card template, its remote-code files and its display
name. A successor family is one more row (plus its model files, converter and card template); the Auto-class
registration, ``clipvg-train --model_family``, model loading, ``clipvg-convert-checkpoint``, the release pipeline,
the staged Hub folder and the model card all read the table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForZeroShotObjectDetection,
    AutoProcessor,
    PretrainedConfig,
)
from transformers.dynamic_module_utils import get_relative_import_files

from .configuration_clipvg import CLIPVGConfig
from .configuration_hivg import HiVGConfig
from .conversion import clipvg as clipvg_conversion
from .conversion import hivg as hivg_conversion
from .conversion.common import CheckpointConversionError
from .errors import UsageError
from .image_processing_clipvg import CLIPVGImageProcessor
from .modeling_clipvg import CLIPVGForGrounding, CLIPVGPreTrainedModel
from .modeling_hivg import HiVGForGrounding
from .processing_clipvg import CLIPVGProcessor

__all__ = [
    "FAMILIES",
    "FAMILY_CHOICES",
    "MODEL_CLASSES",
    "ModelFamily",
    "auto_map",
    "code_files",
    "convert_official_checkpoint",
    "family_named",
    "family_of_checkpoint",
    "family_of_config",
    "family_of_model",
    "family_of_model_type",
    "known_model_types",
    "refuse_foreign_options",
    "register_auto_classes",
]

_PACKAGE_DIR = Path(__file__).resolve().parent


def _module_file(cls: type) -> str:
    return cls.__module__.rsplit(".", 1)[-1]


def auto_map(classes: Mapping[str, type]) -> dict[str, str]:
    """``{"AutoModel": "modeling_clipvg.CLIPVGForGrounding", ...}`` for remote code from flat files."""
    return {auto: f"{_module_file(cls)}.{cls.__name__}" for auto, cls in classes.items()}


def code_files(classes: Mapping[str, type]) -> tuple[str, ...]:
    """The flat ``.py`` files that define ``classes`` and every sibling file they import, as transformers follows
    them (what ``trust_remote_code=True`` downloads)."""
    names = []
    for cls in classes.values():
        defining = _PACKAGE_DIR / f"{_module_file(cls)}.py"
        names += [defining.name, *sorted(Path(f).name for f in get_relative_import_files(defining))]
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class ModelFamily:
    """One model family: what the package needs to tell it apart, build it, convert it and publish it."""

    name: str  # as the command lines spell it (--family, --model_family)
    display_name: str
    config_class: type[PretrainedConfig]
    model_class: type[CLIPVGPreTrainedModel]
    recognises: Callable[[Mapping[str, torch.Tensor]], bool]  # an official state dict of this family?
    converter: Callable[..., CLIPVGPreTrainedModel]  # (path, *, checkpoint, trainable_clip, fusion_num_heads, **opts)
    converter_module: str  # named in the model card
    converter_options: Mapping[str, Any] = field(default_factory=dict)  # family-only option -> "not given" value
    summary: Callable[[CLIPVGPreTrainedModel], str] = repr  # what the converter command prints
    card_template: str = "model_card"  # a file of clipvg_hf/hub/templates
    object_masks: bool = False  # its training loss takes the ground-truth object mask (GroundingDataset)

    @property
    def model_type(self) -> str:
        return self.config_class.model_type

    @property
    def model_classes(self) -> dict[str, type]:
        """Auto class -> class, as registered with transformers and named by a repo's ``auto_map``."""
        return {
            "AutoConfig": self.config_class,
            "AutoModel": self.model_class,
            "AutoModelForZeroShotObjectDetection": self.model_class,
        }

    @property
    def auto_map(self) -> dict[str, str]:
        return auto_map(self.model_classes)

    @property
    def code_files(self) -> tuple[str, ...]:
        """The remote-code files of the config and model, with every sibling file they import."""
        return code_files(self.model_classes)


FAMILIES: dict[str, ModelFamily] = {
    family.name: family
    for family in (
        ModelFamily(
            name="clipvg",
            display_name="CLIP-VG",
            config_class=CLIPVGConfig,
            model_class=CLIPVGForGrounding,
            recognises=clipvg_conversion.is_clipvg_state_dict,
            converter=clipvg_conversion.convert_checkpoint,
            converter_module=clipvg_conversion.__name__,
            summary=clipvg_conversion.summary,
            card_template="model_card",
        ),
        ModelFamily(
            name="hivg",
            display_name="HiVG",
            config_class=HiVGConfig,
            model_class=HiVGForGrounding,
            recognises=hivg_conversion.is_hivg_state_dict,
            converter=hivg_conversion.convert_official,
            converter_module=hivg_conversion.__name__,
            converter_options=hivg_conversion.OPTIONS,
            summary=hivg_conversion.summary,
            card_template="model_card_hivg",
            object_masks=True,
        ),
    )
}
#: What ``--family`` accepts: a family, or ``auto`` (recognised by the checkpoint's state dict).
FAMILY_CHOICES = ("auto", *FAMILIES)
#: The grounding model classes of every family (all are [`CLIPVGPreTrainedModel`]s).
MODEL_CLASSES: tuple[type[CLIPVGPreTrainedModel], ...] = tuple(f.model_class for f in FAMILIES.values())
_DEFAULT = FAMILIES["clipvg"]


def family_named(name: str) -> ModelFamily:
    """The family of a command-line name (``clipvg``, ``hivg``)."""
    if name not in FAMILIES:
        raise UsageError(f"unknown model family {name!r}; choose one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_of_model_type(model_type: str | None) -> ModelFamily | None:
    """The family whose config has this ``model_type``, or None."""
    return next((f for f in FAMILIES.values() if f.model_type == model_type), None)


def known_model_types() -> str:
    """The families' model types, for messages: "a CLIP-VG model ('clip_vg') or a HiVG model ('hivg')"."""
    return " or ".join(f"a {f.display_name} model ({f.model_type!r})" for f in FAMILIES.values())


def family_of_config(config: PretrainedConfig | Mapping[str, Any]) -> ModelFamily:
    """The family of a config (object or ``config.json`` dict) by its ``model_type``; none given is CLIP-VG's."""
    model_type = config.get("model_type") if isinstance(config, Mapping) else config.model_type
    family = family_of_model_type(model_type or _DEFAULT.model_type)
    if family is None:
        raise UsageError(f"model_type {model_type!r} is not a model family of this package: not {known_model_types()}")
    return family


def family_of_model(model: torch.nn.Module) -> ModelFamily | None:
    """The family whose model class ``model`` is, or None."""
    return next((f for f in FAMILIES.values() if isinstance(model, f.model_class)), None)


def family_of_checkpoint(checkpoint: Mapping[str, Any], requested: str = "auto") -> ModelFamily:
    """``requested`` unless it is ``auto``; else the family that recognises the checkpoint's state dict (CLIP-VG when
    none does: its converter then says what the state dict lacks)."""
    if requested != "auto":
        return family_named(requested)
    return next((f for f in FAMILIES.values() if f.recognises(checkpoint["model"])), _DEFAULT)


def refuse_foreign_options(
    family: ModelFamily, requested: str, path: str | Path, options: Mapping[str, Any], verb: str = "converted"
) -> None:
    """Refuse converter options that ``family`` does not take (e.g. HiVG's ``merge_lora`` for a CLIP-VG checkpoint)
    instead of ignoring them; ``verb`` says what is being done with the checkpoint, for the message."""
    foreign = [
        name for name, value in options.items() if name not in family.converter_options and value not in (None, False)
    ]
    if not foreign:
        return
    owners = " or ".join(f.display_name for f in FAMILIES.values() if foreign[0] in f.converter_options)
    how = f"--family {requested}" if requested != "auto" else f"its state dict is not {owners}'s"
    raise CheckpointConversionError(
        f"{' and '.join(f'--{name}' for name in foreign)} {'applies' if len(foreign) == 1 else 'apply'} only to "
        f"{owners} checkpoints, and {path} is {verb} as {family.display_name} ({how})"
    )


def convert_official_checkpoint(
    path: str | Path,
    checkpoint: Mapping[str, Any],
    requested: str = "auto",
    *,
    trainable_clip: str = "official",
    fusion_num_heads: int | None = None,
    **options: Any,
) -> tuple[ModelFamily, CLIPVGPreTrainedModel]:
    """Convert a loaded official checkpoint with its family's converter; returns the family and the model.

    ``options`` are family-only converter options (e.g. HiVG's ``merge_lora``); one given to a family that does not
    take it is refused (:func:`refuse_foreign_options`). Conversion errors are :class:`CheckpointConversionError`.
    """
    family = family_of_checkpoint(checkpoint, requested)
    refuse_foreign_options(family, requested, path, options)
    taken = {name: value for name, value in options.items() if name in family.converter_options}
    model = family.converter(
        path, checkpoint=checkpoint, trainable_clip=trainable_clip, fusion_num_heads=fusion_num_heads, **taken
    )
    return family, model


def register_auto_classes() -> None:
    """Register every family with the transformers Auto classes (done on ``import clipvg_hf``).

    ``save_pretrained`` then also writes ``auto_map`` and the flat code files, for users without this package. All
    families share the CLIP-VG processor.
    """
    for family in FAMILIES.values():
        AutoConfig.register(family.model_type, family.config_class, exist_ok=True)
        AutoModel.register(family.config_class, family.model_class, exist_ok=True)
        AutoModelForZeroShotObjectDetection.register(family.config_class, family.model_class, exist_ok=True)
        family.config_class.register_for_auto_class()
        family.model_class.register_for_auto_class("AutoModel")
        AutoImageProcessor.register(
            family.config_class, image_processor_classes={"pil": CLIPVGImageProcessor}, exist_ok=True
        )
        AutoProcessor.register(family.config_class, CLIPVGProcessor, exist_ok=True)
    CLIPVGImageProcessor.register_for_auto_class("AutoImageProcessor")
    CLIPVGProcessor.register_for_auto_class("AutoProcessor")
