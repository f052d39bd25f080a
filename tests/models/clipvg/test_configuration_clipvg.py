"""CLIPVGConfig: official defaults, strict validation, serialisation."""

import pytest
from huggingface_hub.errors import StrictDataclassClassValidationError, StrictDataclassFieldValidationError
from transformers import AutoConfig, CLIPTextConfig, CLIPVisionConfig

import clipvg_hf  # noqa: F401
from clipvg_hf import CLIPVGConfig
from clipvg_hf.configuration_clipvg import default_extract_layers


def test_defaults_are_the_released_vit_b16_model():
    config = CLIPVGConfig()
    assert config.model_type == "clip_vg"
    assert isinstance(config.vision_config, CLIPVisionConfig) and isinstance(config.text_config, CLIPTextConfig)
    assert (
        config.vision_config.hidden_size,
        config.vision_config.patch_size,
        config.vision_config.num_hidden_layers,
    ) == (768, 16, 12)
    assert (config.text_config.hidden_size, config.text_config.max_position_embeddings) == (512, 77)
    assert config.extract_layers == [0, 3, 7, 11]
    assert (config.fusion_hidden_size, config.fusion_num_layers, config.fusion_num_heads) == (512, 6, 8)
    assert (config.fusion_intermediate_size, config.fusion_dropout, config.max_text_length) == (2048, 0.1, 77)
    assert config.trainable_clip == "official" and config.image_size == 224
    assert config.num_patches_per_side == 14 and config.num_fusion_positions == 275


def test_official_extract_layer_rule():
    assert default_extract_layers(12) == [0, 3, 7, 11]
    assert default_extract_layers(24) == [0, 7, 15, 23]
    assert default_extract_layers(2) == [0, 1]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(trainable_clip="some"), "trainable_clip='some'"),
        (dict(extract_layers=[0, 12]), "extract_layers"),
        (dict(extract_layers=[]), "extract_layers"),
        (dict(fusion_num_heads=7), "not divisible"),
        (dict(fusion_dropout=1.0), "fusion_dropout"),
        (dict(max_text_length=78), "max_text_length=78"),
        (dict(image_size=200), "image_size=200"),
        (dict(fusion_num_heads=0), "fusion_num_heads=0 must be a positive integer"),
        (dict(fusion_hidden_size=-8), "fusion_hidden_size=-8 must be a positive integer"),
        (dict(projection_dim=0), "projection_dim=0"),
        (dict(text_config=dict(num_hidden_layers=-3)), "text_config.num_hidden_layers=-3 must be a positive integer"),
        (dict(text_config=dict(vocab_size=0)), "text_config.vocab_size=0"),
        (dict(vision_config=dict(patch_size=0)), "vision_config.patch_size=0"),
        (dict(vision_config=dict(num_attention_heads=-1)), "vision_config.num_attention_heads=-1"),
    ],
)
def test_invalid_values_raise_clear_errors(kwargs, message):
    with pytest.raises(StrictDataclassClassValidationError, match=message):
        CLIPVGConfig(**kwargs)


def test_wrong_types_are_rejected():
    with pytest.raises(StrictDataclassFieldValidationError, match="fusion_num_layers"):
        CLIPVGConfig(fusion_num_layers="six")


def test_round_trip_through_auto_config(tmp_path, tiny_config):
    tiny_config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, CLIPVGConfig)
    strip = lambda d: {k: v for k, v in d.items() if k != "_name_or_path"}  # noqa: E731
    assert strip(loaded.to_dict()) == strip(tiny_config.to_dict())
    assert isinstance(loaded.vision_config, CLIPVisionConfig) and loaded.vision_config.image_size == 64


def test_unset_sizes_follow_the_towers():
    text = dict(
        vocab_size=99,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=16,
        projection_dim=32,
    )
    vision = dict(
        hidden_size=32, intermediate_size=37, num_hidden_layers=6, num_attention_heads=4, image_size=48, patch_size=8
    )
    config = CLIPVGConfig(text_config=text, vision_config=vision, projection_dim=32)
    assert (config.image_size, config.max_text_length) == (48, 16)
    assert config.extract_layers == default_extract_layers(6) == [0, 1, 3, 5]
    assert CLIPVGConfig(image_size=448).vision_config.image_size == 448
