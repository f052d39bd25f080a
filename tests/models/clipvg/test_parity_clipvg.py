"""The converted official checkpoint computes what the official implementation computed (fixture tolerances)."""

import pytest
import torch

from clipvg_hf.boxes_clipvg import grounding_iou

from conftest import PARITY_SPLITS


def _inputs(expected_tensors, split, *, hf_padding=False):
    """Model inputs from the stored official ones (pad mask inverted to the HF pixel mask)."""
    ids = expected_tensors[f"{split}/input_ids"].long()
    mask = expected_tensors[f"{split}/text_mask"].long()
    if hf_padding:  # pad to the longest expression with <|endoftext|> as transformers' CLIP tokenizer does
        length = int(mask.sum(1).max())
        ids, mask = ids[:, :length].clone(), mask[:, :length]
        ids[mask == 0] = 49407
    return dict(
        pixel_values=expected_tensors[f"{split}/pixel_values"].float(),
        pixel_mask=1 - expected_tensors[f"{split}/pad_mask"].long(),
        input_ids=ids,
        attention_mask=mask,
    )


@pytest.mark.parametrize("split", PARITY_SPLITS + ("unc/train_pseudo",))
@pytest.mark.parametrize("hf_padding", [False, True], ids=["official-77-zero-pad", "hf-eot-pad-longest"])
def test_pred_boxes_and_iou_match_official(converted_model, expected_tensors, expected_json, split, hf_padding):
    with torch.no_grad():
        out = converted_model(**_inputs(expected_tensors, split, hf_padding=hf_padding))
    assert out.pred_boxes.shape == (expected_tensors[f"{split}/pixel_values"].shape[0], 1, 4)
    boxes = out.pred_boxes[:, 0]
    torch.testing.assert_close(boxes, expected_tensors[f"{split}/pred_boxes"], atol=1e-5, rtol=0)
    iou = grounding_iou(boxes, expected_tensors[f"{split}/target_boxes"])
    reference = expected_tensors[f"{split}/reliability" if split.endswith("pseudo") else f"{split}/iou"]
    torch.testing.assert_close(iou, reference, atol=1e-5, rtol=0)
    if split in expected_json["splits"]:
        assert int((iou >= 0.5).sum()) / len(iou) == expected_json["splits"][split]["acc_at_0.5"]


def test_features_and_token_mask_match_official(converted_model, expected_tensors):
    with torch.no_grad():
        out = converted_model(**_inputs(expected_tensors, "unc/val"), output_hidden_states=True)
    torch.testing.assert_close(out.visual_features, expected_tensors["unc/val/visual_multilevel"], atol=1e-4, rtol=0)
    torch.testing.assert_close(out.text_features, expected_tensors["unc/val/text_features"], atol=1e-4, rtol=0)
    assert torch.equal(out.patch_attention_mask, 1 - expected_tensors["unc/val/visual_token_mask"].long())
    # the fixture holds images whose border patches change if the mask downsample antialiases
    assert out.patch_attention_mask.any() and not out.patch_attention_mask.all()
    assert len(out.hidden_states) == converted_model.config.fusion_num_layers + 1


def test_reliability_subsets_match_official(converted_model, expected_tensors, expected_json):
    with torch.no_grad():
        out = converted_model(**_inputs(expected_tensors, "unc/train_pseudo"))
    iou = grounding_iou(out.pred_boxes[:, 0], expected_tensors["unc/train_pseudo/target_boxes"])
    for threshold, indices in expected_json["reliability_subsets"].items():
        t = float(threshold)
        chosen = (iou == 1.0) if t == 1.0 else (iou > t)
        assert chosen.nonzero().flatten().tolist() == indices, threshold


def test_loss_and_gradients_match_official(converted_model, expected_tensors, expected_json):
    model = converted_model
    model.zero_grad(set_to_none=True)
    labels = expected_tensors["unc/train_pseudo/target_boxes"]
    out = model(**_inputs(expected_tensors, "unc/train_pseudo"), labels=labels)  # eval mode: dropout off
    for name, value in expected_json["loss_on_pseudo"].items():
        assert abs(out.loss_dict[name].item() - value) <= 1e-5, name
    assert abs(out.loss.item() - sum(expected_json["loss_on_pseudo"].values())) <= 2e-5
    out.loss.backward()
    probes = {
        "grad_probe/reg_token_grad": model.reg_token.grad,
        "grad_probe/bbox_last_layer_weight_grad": model.box_head.layers[-1].weight.grad,
    }
    for key, grad in probes.items():
        reference = expected_tensors[key]
        assert (grad - reference).abs().max() <= 1e-5 * reference.abs().max(), key
    # only the visual position embedding of CLIP received a gradient
    clip_grads = [n for n, p in model.clip.named_parameters() if p.grad is not None]
    assert clip_grads == ["vision_model.embeddings.position_embedding.weight"]
    model.zero_grad(set_to_none=True)


def test_trainable_count_matches_official_minus_unused_projection(converted_model, expected_json):
    hidden = converted_model.config.fusion_hidden_size
    unused_visu_proj = 512 * hidden + hidden  # Linear(512 -> hidden), defined but never used by the official model
    n_trainable = sum(p.numel() for p in converted_model.parameters() if p.requires_grad)
    assert n_trainable == expected_json["n_trainable"] - unused_visu_proj
