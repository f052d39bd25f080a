"""The model-family registry: one row per family, and every "which family" question answered from it."""

import pytest
import torch
from transformers import AutoConfig, AutoModel

import clipvg_hf  # noqa: F401  (registers the families with the Auto classes)
from clipvg_hf.conversion.common import CheckpointConversionError, load_original_checkpoint
from clipvg_hf.errors import UsageError
from clipvg_hf.families import (
    FAMILIES,
    FAMILY_CHOICES,
    MODEL_CLASSES,
    convert_official_checkpoint,
    family_named,
    family_of_checkpoint,
    family_of_config,
    family_of_model,
    family_of_model_type,
)
from clipvg_hf.modeling_clipvg import CLIPVGPreTrainedModel
from clipvg_hf.testing_utils import tiny_clipvg_config

from conftest import CHECKPOINT
from utils.paths import HIVG_TINY_DIR


def test_each_family_is_registered_with_the_auto_classes():
    assert FAMILY_CHOICES == ("auto", "clipvg", "hivg")
    for family in FAMILIES.values():
        assert issubclass(family.model_class, CLIPVGPreTrainedModel)
        assert AutoConfig.for_model(family.model_type).__class__ is family.config_class
        assert (
            family.auto_map["AutoModel"]
            == f"{family.model_class.__module__.rsplit('.', 1)[-1]}.{family.model_class.__name__}"
        )
        assert {"boxes_clipvg.py", "packing_clipvg.py", "lean_ops_clipvg.py", "modeling_clipvg.py"} <= set(
            family.code_files
        )
    assert set(MODEL_CLASSES) == {f.model_class for f in FAMILIES.values()}
    model = AutoModel.from_config(tiny_clipvg_config())
    assert family_of_model(model) is FAMILIES["clipvg"] and family_of_model(torch.nn.Linear(1, 1)) is None


def test_configs_and_names_find_their_family():
    assert family_of_config({"model_type": "hivg"}) is FAMILIES["hivg"]
    assert family_of_config({}) is FAMILIES["clipvg"]  # a config.json without model_type is CLIP-VG's
    assert family_of_config(tiny_clipvg_config()) is FAMILIES["clipvg"]
    assert family_of_model_type("clip") is None
    with pytest.raises(UsageError, match="not a CLIP-VG model"):
        family_of_config({"model_type": "clip"})
    with pytest.raises(UsageError, match="choose one of clipvg, hivg"):
        family_named("owlv2")


def test_checkpoints_are_recognised_by_their_state_dict():
    clipvg, hivg = load_original_checkpoint(CHECKPOINT), load_original_checkpoint(HIVG_TINY_DIR / "checkpoint.pth")
    assert family_of_checkpoint(clipvg) is FAMILIES["clipvg"] and family_of_checkpoint(hivg) is FAMILIES["hivg"]
    assert family_of_checkpoint({"model": {"conv1.weight": torch.zeros(1)}}) is FAMILIES["clipvg"]  # names the gap
    assert family_of_checkpoint(hivg, "clipvg") is FAMILIES["clipvg"]  # forced


def test_options_of_another_family_are_refused_and_the_family_converter_runs():
    checkpoint = load_original_checkpoint(CHECKPOINT)
    with pytest.raises(
        CheckpointConversionError,
        match=r"--merge_lora applies only to HiVG checkpoints, and .* is "
        r"converted as CLIP-VG \(its state dict is not HiVG's\)",
    ):
        convert_official_checkpoint(CHECKPOINT, checkpoint, merge_lora=True)
    with pytest.raises(CheckpointConversionError, match=r"not a HiVG state dict"):
        convert_official_checkpoint(CHECKPOINT, checkpoint, "hivg", clip_config=None)
    family, model = convert_official_checkpoint(CHECKPOINT, checkpoint, merge_lora=False, clip_config=None)
    assert family is FAMILIES["clipvg"] and family_of_model(model) is family
