"""Converted official HiVG checkpoints compute what the official implementation computed (fixture tolerances)."""

import pytest
import torch

from clipvg_hf.boxes_clipvg import grounding_iou
from clipvg_hf.modeling_hivg import official_text_inputs

from _hivg_fixture import converted, expected_json, expected_tensors, one_thread, split_inputs, split_targets

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)

SPLITS = (
    "unc/val",
    "unc/testA",
    "unc/train",
    "flickr/test",
    "referit/test",
    "gref_umd/val",
    "mixup/val",
    "mixup_model/unc/testA",
)


def _model_of(split):
    return converted(expected_json()["splits"][split]["model"])


def _run(model, inputs, batch_mixing, batch_size=None, **kwargs):
    """Forward in consecutive batches of ``batch_size`` (all at once by default), outputs concatenated."""
    n = inputs["input_ids"].shape[0]
    step = batch_size or n
    outputs = []
    with torch.no_grad():
        for start in range(0, n, step):
            chunk = {k: v[start : start + step] for k, v in inputs.items()}
            outputs.append(model(**chunk, bridge_batch_mixing=batch_mixing, **kwargs))
    return outputs


@pytest.mark.parametrize("split", SPLITS)
def test_boxes_iou_and_accuracy_in_both_batch_semantics(split):
    tensors, meta = expected_tensors(), expected_json()["splits"][split]
    model, inputs = _model_of(split), split_inputs(split)
    targets, _ = split_targets(split)
    runs = {"": (True, None), "_bs1": (False, None)}  # per-sample semantics: the whole split at once equals bs 1
    if f"{split}/pred_boxes_bs4" in tensors:
        runs["_bs4"] = (True, 4)
    for suffix, (mixing, batch_size) in runs.items():
        boxes = torch.cat([o.pred_boxes[:, 0] for o in _run(model, inputs, mixing, batch_size)])
        torch.testing.assert_close(boxes, tensors[f"{split}/pred_boxes{suffix}"], atol=1e-5, rtol=0)
        iou = grounding_iou(boxes, targets)
        torch.testing.assert_close(iou, tensors[f"{split}/iou{suffix}"], atol=1e-5, rtol=0)
        assert torch.equal(iou >= 0.5, tensors[f"{split}/iou{suffix}"] >= 0.5)
        assert int((iou >= 0.5).sum()) / len(iou) == meta[f"acc_at_0.5{suffix}"]
    # the two semantics really differ on this fixture (so each comparison above is a real test)
    assert (tensors[f"{split}/pred_boxes"] - tensors[f"{split}/pred_boxes_bs1"]).abs().max() > 1e-4


@pytest.mark.parametrize("split", SPLITS)
def test_auxiliary_outputs_and_masks(split):
    tensors = expected_tensors()
    source = expected_json()["splits"][split].get("inputs_from", split)
    (out,) = _run(_model_of(split), split_inputs(split), True, output_hidden_states=True)
    reference = tensors[f"{split}/logits_per_text"]
    torch.testing.assert_close(out.logits_per_text, reference, atol=1e-4 * reference.abs().max().item(), rtol=0)
    assert torch.equal(out.logits_per_image, out.logits_per_text.t())
    torch.testing.assert_close(
        out.visual_token_similarity, tensors[f"{split}/visu_token_similarity"], atol=1e-4, rtol=0
    )
    torch.testing.assert_close(
        out.seg_mask_logits[:, 0, 3::7, 5::7], tensors[f"{split}/seg_mask_sub"], atol=1e-4, rtol=0
    )
    assert torch.equal(out.patch_attention_mask == 0, tensors[f"{source}/visual_token_mask"].bool())
    _, text_padding = official_text_inputs(split_inputs(split)["input_ids"], None, 77)
    assert torch.equal(text_padding, tensors[f"{source}/text_pad_mask"].bool())


# (split, fixture name, how to read it from the output) for the intermediates of the official forward
_STATE = {
    "text_hidden_states_1": lambda o: o.text_hidden_states[1],
    "text_hidden_states_12": lambda o: o.text_hidden_states[12],
    "text_features": lambda o: o.text_features,
    "text_eos_embed": lambda o: o.text_embeds,
    "vision_embeddings": lambda o: o.vision_hidden_states[0],
    "visual_multilevel": lambda o: o.visual_features,
    "bridge_text_states": lambda o: o.bridge_text_states[0],
    "bridge_text_states_0": lambda o: o.bridge_text_states[0],
    "bridge_text_states_11": lambda o: o.bridge_text_states[-1],
    "bridge_delta_0": lambda o: o.bridge_deltas[0],
    "bridge_delta_11": lambda o: o.bridge_deltas[-1],
    "reg_output": lambda o: o.fusion_output[:, 0],
}


@pytest.mark.parametrize("split", ["unc/testA", "gref_umd/val", "mixup_model/unc/testA"])
def test_intermediates_match_official(split):
    tensors = expected_tensors()
    model, inputs = _model_of(split), split_inputs(split)
    (batched,) = _run(model, inputs, True, output_hidden_states=True)
    (per_sample,) = _run(model, inputs, False, output_hidden_states=True)
    names = list(expected_json()["splits"][split]["intermediates"])
    assert names
    for name in names:
        out = per_sample if name.endswith("_bs1") else batched
        got = _STATE[name.removesuffix("_bs1")](out)
        torch.testing.assert_close(
            got, tensors[f"{split}/{name}"], atol=1e-4, rtol=0, msg=lambda m, n=name: f"{n}: {m}"
        )


def test_seven_loss_terms_and_gradients_match_official():
    model = converted("unc")
    tensors, reference = expected_tensors(), expected_json()["loss_on_train"]
    targets, object_mask = split_targets("unc/train")
    model.zero_grad(set_to_none=True)
    out = model(**split_inputs("unc/train"), labels=targets, object_mask=object_mask, bridge_batch_mixing=True)
    renamed = {"loss_algin_focal": "loss_align_focal"}  # the official key has a typo
    for name, value in reference.items():
        if name != "total":
            assert abs(out.loss_dict[renamed.get(name, name)].item() - value) <= 1e-5, name
    assert abs(out.loss.item() - reference["total"]) <= 1e-5 * max(1.0, reference["total"])
    out.loss.backward()
    bridge = model.bridges
    vision, text = model.clip.vision_model.encoder.layers, model.clip.text_model.encoder.layers
    probes = {
        "reg_token": model.reg_token,
        "bbox_last_layer_weight": model.box_head.layers[-1].weight,
        "vl_pos_embed": model.fusion_position_embeddings.weight,
        "seg_conv1_weight": model.seg_head[0].weight,
        "visu_token_mlp_fc2_weight": model.token_mlp.fc2.weight,
        "ml_visual_projection_weight": model.multilevel_proj.weight,
        "bridge_cross_gate_weight_0": bridge["0"].gate.weight,
        "bridge_adaptive_weights_11_0": bridge["11"].adaptive_weights,
        "bridge_cross_attn_k_proj_weight_3": bridge["3"].cross_attn.k_proj.base_layer.weight,
        "vision_lora_B_layer0_q_proj": vision[0].self_attn.q_proj.lora_B["default"].weight,
        "vision_lora_A_layer11_out_proj": vision[11].self_attn.out_proj.lora_A["default"].weight,
        "text_lora_B_layer11_v_proj": text[11].self_attn.v_proj.lora_B["default"].weight,
    }
    for name, param in probes.items():
        grad = param.grad[0] if name == "bridge_adaptive_weights_11_0" else param.grad
        expected = tensors[f"grad_probe/{name}"]
        assert (grad - expected).abs().max() <= 1e-5 * expected.abs().max(), name
    model.zero_grad(set_to_none=True)


def test_merged_lora_matches_adapters():
    adapters, merged = converted("unc"), converted("unc", merge_lora=True)
    assert not merged.config.lora_adapters and not any(".lora_" in k for k in merged.state_dict())
    inputs = split_inputs("unc/val")
    for mixing in (True, False):
        (a,) = _run(adapters, inputs, mixing)
        (b,) = _run(merged, inputs, mixing)
        torch.testing.assert_close(b.pred_boxes, a.pred_boxes, atol=1e-6, rtol=0)


def test_hf_tokenizer_padding_gives_the_official_boxes():
    """Ids padded with <|endoftext|> to the longest expression plus a mask: the model applies HiVG's text rule."""
    inputs = split_inputs("unc/val")
    ids = inputs["input_ids"]
    mask = (ids != 0).long()
    length = int(mask.sum(1).max())
    padded = ids[:, :length].masked_fill(mask[:, :length] == 0, 49407)
    (out,) = _run(converted("unc"), dict(inputs, input_ids=padded, attention_mask=mask[:, :length]), True)
    torch.testing.assert_close(out.pred_boxes[:, 0], expected_tensors()["unc/val/pred_boxes"], atol=1e-5, rtol=0)
