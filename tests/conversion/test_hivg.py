"""The HiVG converter: peft nesting read from the keys, every key mapped or refused, sizes and variants inferred."""

import json
import logging

import pytest
import torch

from clipvg_hf.commands.convert_checkpoint import main as convert_main
from clipvg_hf.conversion.common import CheckpointConversionError
from clipvg_hf.conversion.hivg import (
    convert_checkpoint,
    convert_state_dict,
    is_hivg_state_dict,
    peft_nesting_depth,
    strip_peft_prefix,
)

from models.hivg._hivg_fixture import CHECKPOINTS, clip_config, converted, load_checkpoint, one_thread, split_inputs

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


def _nest(state_dict, extra_levels):
    """The state dict as one more (or fewer) HiLoRA stage would have written it."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith("clip."):
            rest = strip_peft_prefix({key: value}).popitem()[0].removeprefix("clip.")
            depth = peft_nesting_depth(state_dict) + extra_levels
            key = "clip." + "base_model.model." * depth + rest
        out[key] = value
    return out


def test_nesting_depth_is_read_from_the_keys():
    unc, gref = load_checkpoint("unc"), load_checkpoint("gref_umd")
    assert peft_nesting_depth(unc["model"]) == 4 and peft_nesting_depth(gref["model"]) == 2
    assert is_hivg_state_dict(unc["model"]) and is_hivg_state_dict(gref["model"])
    reference = converted("unc").state_dict()
    # the same tensors written by a stage-0 run (one nesting level) convert to the same model
    model = convert_checkpoint(checkpoint=dict(unc, model=_nest(unc["model"], -3)), clip_config=clip_config())
    assert all(torch.equal(model.state_dict()[k], v) for k, v in reference.items())
    mixed = dict(unc["model"])
    key = next(k for k in mixed if k.endswith("text_model.final_layer_norm.weight"))
    mixed["clip.base_model.model.text_model.final_layer_norm.weight"] = mixed.pop(key)
    with pytest.raises(CheckpointConversionError, match="different peft depths"):
        peft_nesting_depth(mixed)


def test_every_key_is_mapped_or_dropped_by_name():
    state_dict = strip_peft_prefix(load_checkpoint("unc")["model"])
    converted_sd, dropped = convert_state_dict(state_dict)
    assert sorted(dropped) == sorted(
        [
            "clip.text_model.embeddings.position_ids",
            "clip.vision_model.embeddings.position_ids",
            "condition_text_proj.weight",
            "condition_text_proj.bias",
            "ml_text_feat_perceiver.weight",
            "ml_text_feat_perceiver.bias",
            "reg_pos_embed.weight",
            "condition_text_pos_embed.weight",
        ]
    )
    assert "clip.vision_model.encoder.layers.0.self_attn.q_proj.base_layer.weight" in converted_sd
    assert "bridges.11.cross_attn.v_proj.lora_B.default.weight" in converted_sd
    assert converted_sd["bridges.0.adaptive_weights"].shape == (1, 77, 4)
    with pytest.raises(CheckpointConversionError, match=r"cannot be mapped: \['some_new_module.weight'\]"):
        convert_state_dict(dict(state_dict, **{"some_new_module.weight": torch.zeros(1)}))
    checkpoint = load_checkpoint("unc")
    checkpoint["model"]["clip." + "base_model.model." * 4 + "vision_model.extra_head.weight"] = torch.zeros(1)
    with pytest.raises(
        CheckpointConversionError, match=r"unexpected weights \['clip.vision_model.extra_head.weight'\]"
    ):
        convert_checkpoint(checkpoint=checkpoint, clip_config=clip_config())


def test_text_layers_and_mixup_variant_are_inferred():
    assert converted("unc").config.bridge_text_layers == [12]
    gref = converted("gref_umd").config
    assert gref.bridge_text_layers == list(range(1, 13)) and gref.hilora_stage == 1
    mixup = converted("mixup")
    assert mixup.config.bridge_text_source == "mixup" and mixup.condition_text_proj is not None
    assert not hasattr(mixup.bridges["0"], "gate")  # the unused gate and adaptive weights are dropped
    checkpoint = load_checkpoint("unc")
    checkpoint["args"].dataset = "gref_umd"  # says 12 text layers, the shapes say 1
    with pytest.raises(CheckpointConversionError, match="a --dataset gref_umd model reads"):
        convert_checkpoint(checkpoint=checkpoint, clip_config=clip_config())


def test_cli_auto_detects_hivg_and_merges_lora(tmp_path, caplog):
    heads = tmp_path / "clip_config.json"
    heads.write_text(json.dumps(clip_config()))
    out = tmp_path / "hivg-merged"
    with caplog.at_level(logging.INFO):
        code = convert_main(
            [
                "--checkpoint",
                str(CHECKPOINTS["unc"]),
                "--output_dir",
                str(out),
                "--merge_lora",
                "--clip_config",
                str(heads),
            ]
        )
    assert code == 0
    assert "peft nesting depth 4 (HiLoRA stage 3)" in caplog.text
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "hivg" and config["lora_adapters"] is False
    assert config["auto_map"]["AutoModel"] == "modeling_hivg.HiVGForGrounding"
    from transformers import AutoModel

    import clipvg_hf  # noqa: F401

    model = AutoModel.from_pretrained(out).eval()
    inputs = split_inputs("unc/testA")
    with torch.no_grad():
        reloaded = model(**inputs).pred_boxes
        reference = converted("unc")(**inputs).pred_boxes
    torch.testing.assert_close(reloaded, reference, atol=1e-6, rtol=0)


def _exit_status(argv):
    try:
        return convert_main(argv)
    except SystemExit as exit:
        return exit.code


def test_cli_refuses_bad_input_with_exit_status_2(tmp_path, capsys):
    assert (
        _exit_status(
            ["--family", "hivg", "--checkpoint", str(tmp_path / "missing.pth"), "--output_dir", str(tmp_path / "o")]
        )
        == 2
    )
    assert "error:" in capsys.readouterr().err
    bad = tmp_path / "clipvg_as_hivg.pth"
    torch.save({"model": {"clip.visual.conv1.weight": torch.zeros(2, 3, 16, 16)}}, bad)
    assert _exit_status(["--family", "hivg", "--checkpoint", str(bad), "--output_dir", str(tmp_path / "o")]) == 2
    assert "not a HiVG state dict" in capsys.readouterr().err


def test_bare_state_dict_needs_the_fusion_head_count(tmp_path, capsys):
    bare = tmp_path / "bare.pth"
    torch.save(load_checkpoint("unc")["model"], bare)
    argv = ["--family", "hivg", "--checkpoint", str(bare), "--output_dir", str(tmp_path / "o")]
    assert _exit_status(argv) == 2
    assert "pass --fusion_num_heads" in capsys.readouterr().err
    model = convert_checkpoint(bare, clip_config=clip_config(), fusion_num_heads=2)
    reference = converted("unc").state_dict()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in reference.items())


def test_head_counts_come_from_the_clip_config_and_are_never_guessed(tmp_path, capsys):
    out = tmp_path / "o"
    argv = ["--family", "hivg", "--checkpoint", str(CHECKPOINTS["unc"]), "--output_dir", str(out)]
    assert _exit_status(argv) == 2
    assert "does not hold CLIP's attention head counts: pass --clip_config" in capsys.readouterr().err
    with pytest.raises(CheckpointConversionError, match="pass --clip_config"):
        convert_checkpoint(checkpoint=load_checkpoint("unc"))
    heads = {"num_attention_heads": 2}
    cases = [
        ({"text_config": {"num_attention_heads": 0}, "vision_config": heads}, "text_config.num_attention_heads is 0"),
        ({"text_config": heads, "vision_config": {"num_attention_heads": 3}}, "attention heads (3). (--clip_config"),
        # a key the file omits has transformers' CLIP default (12 vision heads), never width // 64 (here 1)
        ({"text_config": heads, "vision_config": {}}, "attention heads (12). (--clip_config"),
        ({"text_config": {**heads, "hidden_act": "nope"}, "vision_config": heads}, "hidden_act is 'nope', not an"),
        ({"text_config": {**heads, "layer_norm_eps": "x"}, "vision_config": heads}, "layer_norm_eps is 'x', not a"),
        ({"text_config": heads}, "not a Hugging Face CLIP config.json"),
    ]
    for number, (config, message) in enumerate(cases):
        path = tmp_path / f"clip_config_{number}.json"
        path.write_text(json.dumps(config))
        assert _exit_status([*argv, "--clip_config", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, (config, err)
        assert not out.exists()
