"""HiVGForGrounding on small random configs: batch semantics, HiLoRA stages, LoRA merging, sizes, validation."""

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError

from clipvg_hf import HiVGConfig, HiVGForGrounding
from clipvg_hf.modeling_hivg import box_mask, hivg_patch_padding_mask, official_text_inputs

from _hivg_fixture import one_thread
from conftest import make_tiny_hivg_config

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


def _randomised(model: HiVGForGrounding) -> HiVGForGrounding:
    """Give the LoRA B matrices values (fresh ones are zero, which would hide every LoRA effect)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lora_B." in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    return model.eval()


def _inputs(batch_size=3):
    generator = torch.Generator().manual_seed(1)
    ids = torch.zeros(batch_size, 77, dtype=torch.long)
    for i in range(batch_size):
        ids[i, : 3 + i] = torch.tensor([49406, *torch.randint(1, 49000, (1 + i,), generator=generator), 49407])
    mask = torch.ones(batch_size, 64, 64, dtype=torch.long)
    mask[0, :, 40:] = 0
    return dict(pixel_values=torch.randn(batch_size, 3, 64, 64, generator=generator), input_ids=ids, pixel_mask=mask)


def test_per_sample_boxes_do_not_depend_on_the_batch_and_mixing_reproduces_the_batched_bridge():
    torch.manual_seed(0)
    model = _randomised(HiVGForGrounding(make_tiny_hivg_config()))
    inputs = _inputs()
    with torch.no_grad():
        together = model(**inputs).pred_boxes
        alone = torch.cat([model(**{k: v[i : i + 1] for k, v in inputs.items()}).pred_boxes for i in range(3)])
        mixed = model(**inputs, bridge_batch_mixing=True).pred_boxes
        mixed_alone = model(**{k: v[:1] for k, v in inputs.items()}, bridge_batch_mixing=True).pred_boxes
    torch.testing.assert_close(together, alone, atol=1e-6, rtol=0)
    assert (mixed - together).abs().max() > 1e-5  # the official bridge mixes samples ...
    torch.testing.assert_close(mixed_alone, alone[:1], atol=1e-6, rtol=0)  # ... except in a batch of one
    model.config.bridge_batch_mixing = True
    with torch.no_grad():
        assert torch.equal(model(**inputs).pred_boxes, mixed)


def _trainable(model):
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_hilora_stages_train_the_official_parameter_sets():
    sets = {stage: _trainable(HiVGForGrounding(make_tiny_hivg_config(hilora_stage=stage))) for stage in range(4)}
    clip_lora = {stage: {n for n in names if n.startswith("clip.")} for stage, names in sets.items()}
    assert clip_lora[0] == set()
    assert all(".lora_" in n for stage in (1, 2, 3) for n in clip_lora[stage])
    vision_layers = {
        stage: {int(n.split(".")[4]) for n in clip_lora[stage] if "vision_model" in n} for stage in (1, 2, 3)
    }
    assert vision_layers == {1: {0, 1, 2, 3}, 2: {0, 1, 2, 3}, 3: {0, 1, 2, 3}}  # 4-layer tower: all below 5/8/12
    assert {n for n in clip_lora[1] if "text_model" in n} == {n for n in clip_lora[3] if "text_model" in n} != set()
    bridges = {n for n in sets[0] if n.startswith("bridges.")}
    assert any("base_layer" in n for n in bridges) and any(".lora_A." in n for n in bridges)
    assert bridges <= sets[3]
    frozen = _trainable(HiVGForGrounding(make_tiny_hivg_config(trainable_clip="frozen")))
    assert not any(n.startswith("clip.") for n in frozen)


def test_hilora_limits_the_vision_lora_to_the_stage_blocks():
    config = make_tiny_hivg_config(
        vision_config=dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=12,
            num_attention_heads=2,
            patch_size=16,
            image_size=64,
            projection_dim=12,
        ),
        extract_layers=[0, 3, 7, 11],
        bridge_layers=[0, 3, 7, 11],
        hilora_stage=2,
    )
    names = _trainable(HiVGForGrounding(config))
    assert {int(n.split(".")[4]) for n in names if n.startswith("clip.vision_model")} == set(range(8))


def test_merge_lora_keeps_outputs_and_gives_plain_weights(tmp_path):
    model = _randomised(HiVGForGrounding(make_tiny_hivg_config()))
    inputs = _inputs()
    with torch.no_grad():
        before = model(**inputs).pred_boxes
        model.merge_lora()
        after = model(**inputs).pred_boxes
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)
    assert not model.config.lora_adapters
    assert not any(".lora_" in k or "base_layer" in k for k in model.state_dict())
    model.save_pretrained(tmp_path)
    reloaded = HiVGForGrounding.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(**inputs).pred_boxes, after)


def test_loss_has_the_seven_weighted_terms_and_trains():
    model = HiVGForGrounding(make_tiny_hivg_config(hilora_stage=3)).train()
    inputs, labels = _inputs(), torch.tensor([[0.5, 0.5, 0.4, 0.3], [0.3, 0.6, 0.2, 0.2], [0.7, 0.4, 0.3, 0.5]])
    out = model(**inputs, labels=labels)
    assert set(out.loss_dict) == {
        "loss_bbox",
        "loss_giou",
        "loss_contrastive",
        "loss_align_focal",
        "loss_align_dice",
        "loss_seg_focal",
        "loss_seg_dice",
    }
    torch.testing.assert_close(out.loss, sum(out.loss_dict.values()))
    out.loss.backward()
    lora_b = model.clip.vision_model.encoder.layers[0].self_attn.q_proj.lora_B["default"].weight
    assert lora_b.grad is not None and lora_b.grad.abs().sum() > 0
    assert out.seg_mask_logits.shape == (3, 1, 32, 32) and out.visual_token_similarity.shape == (3, 16)


def test_text_rule_and_box_mask():
    ids, padding = official_text_inputs(torch.tensor([[49406, 320, 49407, 49407]]), torch.tensor([[1, 1, 1, 0]]), 6)
    assert ids.tolist() == [[49406, 320, 49407, 0, 0, 0]]
    assert padding.tolist() == [[False, False, False, True, True, True]]
    mask = box_mask(torch.tensor([[0.5, 0.25, 0.5, 0.5]]), 8)
    assert mask[0].nonzero().min(0).values.tolist() == [0, 2] and mask[0].nonzero().max(0).values.tolist() == [3, 5]


def test_vit_b16_parameter_counts_are_the_official_minus_unused_modules():
    """Official (hivg_spec.md): 213,244,677 parameters, 63,623,940 trainable at stage 3, 59,691,780 at stage 0, of
    which 847,616 sit in modules its forward never uses (condition_text_proj, ml_text_feat_perceiver, reg_pos_embed,
    condition_text_pos_embed), which this port does not build."""
    unused = 2 * (512 * 768 + 768) + 512 + 77 * 768
    for stage, trainable in ((3, 63_623_940), (0, 59_691_780)):
        with torch.device("meta"):
            model = HiVGForGrounding(HiVGConfig(hilora_stage=stage))
        assert sum(p.numel() for p in model.parameters()) == 213_244_677 - unused
        assert sum(p.numel() for p in model.parameters() if p.requires_grad) == trainable - unused


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("bridge_layers", [0, 9], "bridge_layers"),
        ("bridge_text_layers", [5], "bridge_text_layers"),
        ("bridge_text_source", "average", "bridge_text_source"),
        ("hilora_stage", 4, "hilora_stage"),
        ("loss_weights", {"loss_box": 1.0}, "loss_weights"),
    ],
)
def test_config_refuses_settings_it_cannot_run(field, value, message):
    with pytest.raises(StrictDataclassClassValidationError, match=message):
        make_tiny_hivg_config(**{field: value})


def test_from_clip_pretrained_and_image_index(tmp_path):
    from transformers import CLIPConfig, CLIPModel

    towers = make_tiny_hivg_config()
    clip = CLIPModel(
        CLIPConfig(
            text_config=towers.text_config.to_dict(), vision_config=towers.vision_config.to_dict(), projection_dim=12
        )
    )
    clip.save_pretrained(tmp_path)
    model = HiVGForGrounding.from_clip_pretrained(
        str(tmp_path), fusion_num_heads=2, fusion_num_layers=1, fusion_intermediate_size=16, token_mlp_size=16
    ).eval()
    assert model.config.bridge_layers == model.config.extract_layers == [0, 1, 3]
    assert model.config.bridge_text_layers == [4]
    loaded = model.clip.state_dict()
    for key, value in clip.state_dict().items():
        module, _, leaf = key.rpartition(".")
        assert torch.equal(loaded.get(key, loaded.get(f"{module}.base_layer.{leaf}")), value), key
    inputs = _inputs(3)
    with torch.no_grad():
        repeated = model(
            **{
                **inputs,
                "pixel_values": inputs["pixel_values"][[0, 0, 1]],
                "pixel_mask": inputs["pixel_mask"][[0, 0, 1]],
            }
        ).pred_boxes
        indexed = model(
            **{**inputs, "pixel_values": inputs["pixel_values"][:2], "pixel_mask": inputs["pixel_mask"][:2]},
            image_index=torch.tensor([0, 0, 1]),
        ).pred_boxes
    assert torch.equal(repeated, indexed)


def test_output_attentions_of_fusion_and_towers_and_unknown_arguments_refused():
    torch.manual_seed(0)
    model = _randomised(HiVGForGrounding(make_tiny_hivg_config()))
    model.set_attn_implementation("eager")
    inputs = _inputs()
    with torch.no_grad():
        plain = model(**inputs)
        out = model(**inputs, output_attentions=True)
    assert plain.attentions is None and plain.vision_attentions is None and plain.text_attentions is None
    torch.testing.assert_close(out.pred_boxes, plain.pred_boxes, atol=1e-6, rtol=0)
    length = 1 + 1 + 16 + 77  # [REG], CLS, 4 x 4 patches, 77 text positions
    assert len(out.attentions) == 2 and all(a.shape == (3, 2, length, length) for a in out.attentions)
    padded_patches = 2 + hivg_patch_padding_mask(inputs["pixel_mask"], 4)[0].nonzero()[:, 0]
    assert len(padded_patches) == 4
    for weights in out.attentions:
        torch.testing.assert_close(weights.sum(-1), torch.ones(3, 2, length))
        assert weights[0, :, :, padded_patches].abs().max() == 0  # image 0's padded patches ...
        assert weights[0, :, :, 2 + 16 + 3 :].abs().max() == 0  # ... and text padding are never attended
    assert len(out.vision_attentions) == 4 and out.vision_attentions[0].shape == (3, 2, 17, 17)
    assert len(out.text_attentions) == 4 and out.text_attentions[0].shape == (3, 2, 77, 77)
    assert torch.triu(out.text_attentions[-1], diagonal=1).abs().max() == 0  # the text tower's causal mask
    assert len(model(**inputs, output_attentions=True, return_dict=False)) == len(out.to_tuple())
    with pytest.raises(TypeError, match="unexpected keyword argument 'output_scores'"):
        model(**inputs, output_scores=True)
