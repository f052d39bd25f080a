"""The official-checkpoint converter: safe loading, size inference, complete key mapping, clear refusals."""

import argparse
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from clipvg_hf.conversion.clipvg import config_from_state_dict, convert_checkpoint, convert_state_dict
from clipvg_hf.conversion.common import CheckpointConversionError, load_original_checkpoint

from conftest import CHECKPOINT


@pytest.fixture(scope="module")
def official():
    return load_original_checkpoint(CHECKPOINT)


def test_reads_the_official_format_with_weights_only(official):
    assert isinstance(official["args"], argparse.Namespace)
    assert {"model", "optimizer", "lr_scheduler", "epoch", "args"} <= set(official)
    assert len(official["model"]) == 425


def test_infers_the_fixture_sizes(official):
    config = config_from_state_dict(official["model"], official["args"])
    vision, text = config.vision_config, config.text_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads, vision.patch_size) == (
        64,
        12,
        1,
        16,
    )
    assert (text.hidden_size, text.num_hidden_layers, text.vocab_size, text.max_position_embeddings) == (
        64,
        3,
        49408,
        77,
    )
    assert (config.fusion_hidden_size, config.fusion_num_layers, config.fusion_num_heads) == (64, 2, 2)
    assert config.fusion_intermediate_size == 128 and config.extract_layers == [0, 3, 7, 11]
    assert config.num_fusion_positions == 275


def test_every_key_is_mapped_and_only_aliases_and_visu_proj_are_dropped(official):
    converted, dropped = convert_state_dict(official["model"])
    assert set(dropped) == {
        k for k in official["model"] if k.startswith(("image_encoder_clip_vg.", "text_encoder_clip_vg.", "visu_proj."))
    }
    # packed attention split in q, k, v order, projections transposed
    packed = official["model"]["vl_transformer.encoder.layers.1.self_attn.in_proj_weight"]
    assert torch.equal(converted["fusion.layers.1.self_attn.k_proj.weight"], packed[64:128])
    assert torch.equal(converted["clip.text_projection.weight"], official["model"]["clip.text_projection"].t())
    assert torch.equal(
        converted["clip.vision_model.embeddings.position_embedding.weight"],
        official["model"]["clip.visual.positional_embedding"],
    )


def test_cli_writes_a_folder_holding_exactly_the_checkpoint_weights(tmp_path, official):
    out = tmp_path / "model"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "clipvg_hf.convert_checkpoint",
            "--checkpoint",
            str(CHECKPOINT),
            "--output_dir",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "visu_proj" in result.stderr + result.stdout  # the drop is reported
    assert {
        "config.json",
        "model.safetensors",
        "modeling_clipvg.py",
        "configuration_clipvg.py",
        "processor_config.json",
        "tokenizer.json",
    } <= {p.name for p in out.iterdir()}
    saved = load_file(out / "model.safetensors")
    converted, _ = convert_state_dict(official["model"])
    assert set(saved) == set(converted)
    assert all(torch.equal(saved[k], converted[k]) for k in saved)


def test_unknown_key_is_refused_by_name(tmp_path, official):
    state = dict(official["model"])
    state["clip.visual.extra_adapter.weight"] = torch.zeros(2)
    path = tmp_path / "bad.pth"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointConversionError, match="extra_adapter"):
        convert_checkpoint(path)


class Payload:
    """Stands for any class a malicious or foreign checkpoint could ask pickle to build."""


def test_arbitrary_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "args": Payload()}, path)
    with pytest.raises(CheckpointConversionError, match="cannot be read"):
        load_original_checkpoint(path)


def test_missing_file_and_foreign_state_dict(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_original_checkpoint(tmp_path / "nope.pth")
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(CheckpointConversionError, match="missing"):
        convert_checkpoint(path)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "clipvg_hf.convert_original_checkpoint",
            "--checkpoint",
            str(path),
            "--output_dir",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "error:" in result.stderr and not (tmp_path / "o").exists()
