"""CLIPVGForGrounding on random weights: shapes, loss, masks, trainable policies, precision, saving."""

import math

import pytest
import torch
from transformers import AutoModel, AutoModelForZeroShotObjectDetection, CLIPConfig, CLIPModel

import clipvg_hf  # noqa: F401
from clipvg_hf import CLIPVGConfig, CLIPVGForGrounding
from clipvg_hf.modeling_clipvg import grounding_loss, patch_padding_mask

from conftest import make_tiny_config


def _batch(config, batch=3, length=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    size = config.image_size
    ids = torch.randint(1, 90, (batch, length), generator=g)
    attention = torch.ones(batch, length, dtype=torch.long)
    attention[-1, 4:] = 0  # a shorter expression
    pixel_mask = torch.ones(batch, size, size, dtype=torch.long)
    pixel_mask[0, :, 40:] = 0  # letterbox padding on the right
    return dict(
        pixel_values=torch.randn(batch, 3, size, size, generator=g),
        input_ids=ids,
        attention_mask=attention,
        pixel_mask=pixel_mask,
        labels=torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.3, 0.6, 0.1, 0.1], [0.7, 0.2, 0.4, 0.2]])[:batch],
    )


def test_full_size_trainable_parameters_equal_official_minus_unused_visu_proj():
    model = CLIPVGForGrounding(CLIPVGConfig())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == 21_832_964 - 262_656 == 21_570_308
    clip_trainable = [n for n, p in model.clip.named_parameters() if p.requires_grad]
    assert clip_trainable == ["vision_model.embeddings.position_embedding.weight"]


def test_forward_shapes_and_loss(tiny_config):
    model = CLIPVGForGrounding(tiny_config).eval()
    out = model(**_batch(tiny_config), output_hidden_states=True)
    assert out.pred_boxes.shape == (3, 1, 4) and out.logits is None
    assert ((out.pred_boxes > 0) & (out.pred_boxes < 1)).all()
    assert out.visual_features.shape == (3, 1 + 16, 3 * 32)
    assert out.text_features.shape == (3, 7, 24)
    assert out.patch_attention_mask.shape == (3, 16) and out.patch_attention_mask.dtype == torch.long
    assert set(out.loss_dict) == {"loss_bbox", "loss_giou"}
    torch.testing.assert_close(out.loss, out.loss_dict["loss_bbox"] + out.loss_dict["loss_giou"])
    # tuple output carries the same boxes (without hidden states the last fusion layer updates [REG] only)
    as_tuple = model(**_batch(tiny_config), return_dict=False)
    boxes = [t for t in as_tuple if torch.is_tensor(t) and t.shape == out.pred_boxes.shape]
    assert len(boxes) == 1
    torch.testing.assert_close(boxes[0], out.pred_boxes, atol=1e-6, rtol=0)


def test_loss_matches_the_definition():
    pred = torch.tensor([[0.5, 0.5, 0.4, 0.4], [0.2, 0.2, 0.2, 0.2]])
    target = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.8, 0.8, 0.2, 0.2]])
    terms = grounding_loss(pred, target)
    l1 = (pred - target).abs().sum() / 2
    # box 0: target inside prediction, IoU 0.25, hull = prediction -> GIoU 0.25
    # box 1: disjoint, IoU 0, union 0.08, hull 0.8**2 -> GIoU = -(0.64 - 0.08)/0.64
    giou = torch.tensor([0.25, -(0.64 - 0.08) / 0.64])
    torch.testing.assert_close(terms["loss_bbox"], l1)
    torch.testing.assert_close(terms["loss_giou"], (1 - giou).mean())
    with pytest.raises(ValueError, match="rows \\[1\\]"):
        grounding_loss(pred, torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.5, 0.5, -0.1, 0.2]]))


def test_patch_mask_is_non_antialiased_bilinear_rounded():
    # a patch is padding iff >= 3 of its 4 central pixels are padding (2 of 4 rounds half to even -> kept)
    pixel_mask = torch.ones(1, 32, 32, dtype=torch.long)
    pixel_mask[0, :, 24:] = 0  # columns 24..31 padded: patch column 1 has centre cols 23 (real) and 24 (pad)
    assert patch_padding_mask(pixel_mask, 2).tolist() == [[False, False, False, False]]
    pixel_mask[0, :, 23:] = 0
    assert patch_padding_mask(pixel_mask, 2).tolist() == [[False, True, False, True]]


def test_text_padding_and_padded_patches_do_not_change_the_box(tiny_config):
    model = CLIPVGForGrounding(tiny_config).eval()
    batch = _batch(tiny_config, batch=1)
    batch.pop("labels")
    with torch.no_grad():
        base = model(**batch).pred_boxes
        longer = dict(
            batch,
            input_ids=torch.cat([batch["input_ids"], torch.full((1, 5), 3)], 1),
            attention_mask=torch.cat([batch["attention_mask"], torch.zeros(1, 5, dtype=torch.long)], 1),
        )
        torch.testing.assert_close(model(**longer).pred_boxes, base, atol=1e-6, rtol=0)
        # padded patches are masked keys in the fusion: their features do not reach the box
        # (the CLIP vision tower itself has no mask, as in the official model)
        visual = model.get_multilevel_visual_features(batch["pixel_values"])
        text = model.get_text_token_features(batch["input_ids"])
        padded = patch_padding_mask(batch["pixel_mask"], tiny_config.num_patches_per_side)
        assert padded[0].tolist() == [False, False, False, True] * 4  # patch column 3 lies in the padding
        text_padding = batch["attention_mask"] == 0
        boxes = model.ground(visual, text, text_padding, padded)[0]
        torch.testing.assert_close(boxes, base[:, 0], atol=1e-6, rtol=0)
        altered = visual.clone()
        altered[:, 1:][padded] += 5.0
        torch.testing.assert_close(model.ground(altered, text, text_padding, padded)[0], boxes, atol=1e-6, rtol=0)
        # ... but the expression matters
        other = dict(batch, input_ids=batch["input_ids"].flip(1))
        assert not torch.allclose(model(**other).pred_boxes, base)


@pytest.mark.parametrize(
    "policy, expected_clip",
    [
        ("official", ["vision_model.embeddings.position_embedding.weight"]),
        ("frozen", []),
        ("all", None),
    ],
)
def test_trainable_clip_policies_survive_save_and_load(tmp_path, policy, expected_clip):
    config = make_tiny_config(trainable_clip=policy)
    model = CLIPVGForGrounding(config)
    model.save_pretrained(tmp_path)
    for m in (model, AutoModel.from_pretrained(tmp_path)):
        names = [n for n, p in m.clip.named_parameters() if p.requires_grad]
        if expected_clip is None:
            unused = {
                "visual_projection.weight",
                "logit_scale",
                "vision_model.post_layernorm.weight",
                "vision_model.post_layernorm.bias",
            }
            assert set(names) == {n for n, _ in m.clip.named_parameters()} - unused
        else:
            assert names == expected_clip
        assert all(p.requires_grad for n, p in m.named_parameters() if not n.startswith("clip."))


def test_every_trainable_parameter_gets_a_gradient(tiny_config):
    for policy in ("official", "all", "frozen"):
        model = CLIPVGForGrounding(make_tiny_config(trainable_clip=policy)).train()
        model(**_batch(tiny_config)).loss.backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert missing == [], (policy, missing)


def test_official_initialisation(tiny_config):
    model = CLIPVGForGrounding(make_tiny_config(fusion_hidden_size=64, fusion_intermediate_size=256))
    layer = model.fusion.layers[0]
    d = 64
    packed_bound = math.sqrt(6 / (d + 3 * d))  # xavier over the packed (3d, d) in-projection
    q = layer.self_attn.q_proj.weight
    assert q.abs().max() <= packed_bound and q.abs().max() > 0.9 * packed_bound
    assert layer.self_attn.q_proj.bias.abs().max() == 0
    assert layer.fc1.weight.abs().max() <= math.sqrt(6 / (d + 256))
    assert 0.8 < model.fusion_position_embeddings.weight.std() < 1.2  # N(0, 1) embeddings
    assert model.visual_proj.weight.abs().max() <= 1 / math.sqrt(model.visual_proj.in_features)


def _attention_implementations(model) -> dict[str, set[str]]:
    """Attention implementation of every attention module, by module class."""
    found = {}
    for module in model.modules():
        if type(module).__name__.endswith("Attention"):
            found.setdefault(type(module).__name__, set()).add(module.config._attn_implementation)
    return found


@pytest.mark.parametrize("request_as", ["string", "dict"])
def test_eager_reaches_both_towers_and_the_fusion_and_agrees_with_sdpa(tmp_path, tiny_config, request_as):
    CLIPVGForGrounding(tiny_config).save_pretrained(tmp_path)
    batch = _batch(tiny_config)
    eager = "eager" if request_as == "string" else {"": "eager", "text_config": "eager", "vision_config": "eager"}
    boxes = {}
    for impl, requested in (("sdpa", None), ("eager", eager)):
        kwargs = {} if requested is None else {"attn_implementation": requested}
        model = AutoModel.from_pretrained(tmp_path, **kwargs).eval()
        assert _attention_implementations(model) == {"CLIPAttention": {impl}, "CLIPVGFusionAttention": {impl}}
        assert len([m for m in model.clip.modules() if type(m).__name__ == "CLIPAttention"]) == 2 + 4
        with torch.no_grad():
            boxes[impl] = model(**batch).pred_boxes
    torch.testing.assert_close(boxes["sdpa"], boxes["eager"], atol=1e-5, rtol=0)


def test_output_attentions_of_fusion_and_towers(tiny_config):
    model = CLIPVGForGrounding(tiny_config).eval()
    model.set_attn_implementation("eager")
    batch = _batch(tiny_config)
    with torch.no_grad():
        out = model(**batch, output_attentions=True)
        plain = model(**batch)
    length = 1 + 7 + 1 + 16  # [REG], text, visual CLS, patches
    assert len(out.attentions) == tiny_config.fusion_num_layers
    assert all(a.shape == (3, tiny_config.fusion_num_heads, length, length) for a in out.attentions)
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(3, 4, length))  # softmax rows
    # padded text tokens (last expression, positions 4..6) receive no attention
    assert out.attentions[0][2, :, :, 1 + 4 : 1 + 7].abs().max() < 1e-6
    assert len(out.vision_attentions) == 4 and len(out.text_attentions) == 2
    assert out.vision_attentions[0].shape == (3, 4, 17, 17) and out.text_attentions[0].shape == (3, 4, 7, 7)
    torch.testing.assert_close(out.pred_boxes, plain.pred_boxes, atol=1e-6, rtol=0)
    assert plain.attentions is None and plain.vision_attentions is None
    with pytest.raises(TypeError, match="output_attention"):
        model(**batch, output_attention=True)  # a misspelt argument is an error, not silently ignored


def test_transformers_feature_api(tiny_config):
    model = CLIPVGForGrounding(tiny_config).eval()
    batch = _batch(tiny_config)
    with torch.no_grad():
        text = model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        image = model.get_image_features(pixel_values=batch["pixel_values"], pixel_mask=batch["pixel_mask"])
        reference = model.clip.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert text.last_hidden_state.shape == (3, 7, 32) and text.pooler_output.shape == (3, 24)
    torch.testing.assert_close(text.pooler_output, reference.pooler_output)
    assert image.last_hidden_state.shape == (3, 17, 32) and image.pooler_output.shape == (3, 24)
    assert isinstance(model.get_text_features(input_ids=batch["input_ids"], return_dict=False), tuple)
    assert model.get_input_embeddings() is model.clip.text_model.embeddings.token_embedding
    assert model.base_model is model.clip


def _drop_tensors(folder, prefixes) -> list[str]:
    """Remove the tensors whose names start with any of ``prefixes`` from a saved model; their names."""
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    tensors = load_file(path)
    dropped = sorted(k for k in tensors if k.startswith(prefixes))
    save_file({k: v for k, v in tensors.items() if k not in dropped}, path, metadata={"format": "pt"})
    return dropped


def test_missing_tensors_get_the_official_initialisation(tmp_path):
    config = make_tiny_config(fusion_hidden_size=64, fusion_intermediate_size=256)
    saved = CLIPVGForGrounding(config)
    saved.save_pretrained(tmp_path)
    attention = "clip.text_model.encoder.layers.0.self_attn."
    dropped = _drop_tensors(
        tmp_path,
        (
            "box_head.",
            "fusion.layers.0.fc1.weight",
            "reg_token",
            attention,
            "clip.vision_model.encoder.layers.1.mlp.fc1.",
        ),
    )
    model, info = CLIPVGForGrounding.from_pretrained(tmp_path, output_loading_info=True)
    assert sorted(info["missing_keys"]) == dropped
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # loaded tensors are kept as they were
    loaded = saved.state_dict()
    for name, tensor in model.state_dict().items():
        if name not in dropped:
            assert torch.equal(tensor, loaded[name]), name
    # missing ones follow CLIP-VG's rules ...
    fc1 = model.fusion.layers[0].fc1.weight
    assert 0.9 * math.sqrt(6 / (64 + 256)) < fc1.abs().max() <= math.sqrt(6 / (64 + 256))  # xavier-uniform
    for linear in model.box_head.layers:  # PyTorch's default Linear
        bound = 1 / math.sqrt(linear.in_features)
        assert linear.weight.abs().max() <= bound and linear.bias.abs().max() <= bound
    assert 0.6 < model.reg_token.std() < 1.4  # N(0, 1)
    # ... and CLIP's own inside CLIP: q/k/v std width**-0.5 * (2 * layers)**-0.5, fc1 std (2 * width)**-0.5
    q = model.clip.text_model.encoder.layers[0].self_attn.q_proj.weight
    assert abs(q.std().item() - 32**-0.5 * 4**-0.5) < 0.15 * 32**-0.5 * 4**-0.5
    fc1 = model.clip.vision_model.encoder.layers[1].mlp.fc1.weight
    assert abs(fc1.std().item() - 64**-0.5) < 0.15 * 64**-0.5


def test_config_values_passed_at_load_are_validated(tmp_path, tiny_config):
    from huggingface_hub.errors import StrictDataclassClassValidationError

    CLIPVGForGrounding(tiny_config).save_pretrained(tmp_path)
    with pytest.raises(StrictDataclassClassValidationError, match="trainable_clip='everything'"):
        CLIPVGForGrounding.from_pretrained(tmp_path, trainable_clip="everything")
    with pytest.raises(StrictDataclassClassValidationError, match="fusion_num_heads=0"):
        AutoModel.from_pretrained(tmp_path, fusion_num_heads=0)
    model = CLIPVGForGrounding.from_pretrained(tmp_path, trainable_clip="frozen")
    assert not any(p.requires_grad for p in model.clip.parameters())
    model.config.trainable_clip = "everything"
    with pytest.raises(ValueError, match="trainable_clip='everything'"):
        model.apply_trainable_clip_policy()


def test_bfloat16_forward_on_cpu(tiny_config):
    model = CLIPVGForGrounding(tiny_config).eval()
    batch = _batch(tiny_config)
    with torch.no_grad():
        reference = model(**batch).pred_boxes
        as_bf16 = model.to(torch.bfloat16)(**batch)
    assert as_bf16.pred_boxes.dtype == torch.bfloat16 and torch.isfinite(as_bf16.loss)
    torch.testing.assert_close(as_bf16.pred_boxes.float(), reference, atol=3e-2, rtol=0)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = model.float()(**batch)
    torch.testing.assert_close(autocast.pred_boxes.float(), reference, atol=3e-2, rtol=0)


def test_save_load_both_auto_classes(tmp_path, tiny_config):
    model = CLIPVGForGrounding(tiny_config).eval()
    model.save_pretrained(tmp_path)
    batch = _batch(tiny_config)
    with torch.no_grad():
        reference = model(**batch).pred_boxes
        for auto in (AutoModel, AutoModelForZeroShotObjectDetection):
            loaded = auto.from_pretrained(tmp_path)
            assert type(loaded) is CLIPVGForGrounding
            assert torch.equal(loaded(**batch).pred_boxes, reference)


def test_from_clip_pretrained_keeps_clip_weights(tmp_path):
    tiny = make_tiny_config()
    clip = CLIPModel(
        CLIPConfig(
            text_config=tiny.text_config.to_dict(), vision_config=tiny.vision_config.to_dict(), projection_dim=24
        )
    )
    clip.save_pretrained(tmp_path)
    model = CLIPVGForGrounding.from_clip_pretrained(str(tmp_path), max_text_length=16)
    assert model.config.extract_layers == [0, 1, 3] and model.config.fusion_hidden_size == 32
    for name, tensor in clip.state_dict().items():
        assert torch.equal(model.clip.state_dict()[name], tensor), name
    assert [n for n, p in model.clip.named_parameters() if p.requires_grad] == [
        "vision_model.embeddings.position_embedding.weight"
    ]


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(pixel_values=torch.zeros(1, 3, 32, 32)), "pixel_values must be"),
        (dict(input_ids=torch.ones(3, 17, dtype=torch.long)), "max_text_length=16"),
        (dict(labels=torch.zeros(3, 2)), "labels must be"),
        (dict(pixel_mask=torch.ones(3, 32, 32)), "pixel_mask must be"),
    ],
)
def test_bad_inputs_raise_clear_errors(tiny_config, change, message):
    model = CLIPVGForGrounding(tiny_config)
    batch = _batch(tiny_config)
    batch.update(change)
    if "input_ids" in change:
        batch["attention_mask"] = None
    with pytest.raises(ValueError, match=message):
        model(**batch)


def test_gradient_checkpointing_gives_same_gradients(tiny_config):
    torch.manual_seed(0)
    model = CLIPVGForGrounding(make_tiny_config(fusion_dropout=0.0)).train()
    batch = _batch(tiny_config)
    model(**batch).loss.backward()
    reference = model.reg_token.grad.clone()
    model.zero_grad()
    model.activation_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in model.fusion.layers)
    model(**batch).loss.backward()
    torch.testing.assert_close(model.reg_token.grad, reference, atol=1e-6, rtol=1e-5)
