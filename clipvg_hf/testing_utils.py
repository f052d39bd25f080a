"""Small random configurations for tests, benchmark smoke runs and examples (as ``transformers.testing_utils``)."""

from typing import Any

from .configuration_clipvg import CLIPVGConfig

__all__ = ["tiny_clipvg_config"]


def tiny_clipvg_config(**overrides: Any) -> CLIPVGConfig:
    """A CLIP-VG config with the full structure at toy size: 64 px images, a 4-layer vision and 2-layer text tower,
    2 fusion layers. The odd MLP width (37) makes a mixed-up dimension fail loudly. ``overrides`` replace top-level
    fields (pass whole ``text_config`` / ``vision_config`` dicts to change the towers)."""
    kwargs: dict[str, Any] = dict(
        text_config=dict(
            vocab_size=99,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=16,
            projection_dim=24,
            bos_token_id=97,
            eos_token_id=98,
            pad_token_id=0,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=4,
            num_attention_heads=4,
            patch_size=16,
            image_size=64,
            projection_dim=24,
        ),
        projection_dim=24,
        extract_layers=[0, 1, 3],
        fusion_hidden_size=32,
        fusion_num_layers=2,
        fusion_num_heads=4,
        fusion_intermediate_size=64,
        max_text_length=16,
        image_size=64,
    )
    kwargs.update(overrides)
    return CLIPVGConfig(**kwargs)
