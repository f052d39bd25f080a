"""Configuration of CLIP-VG: a CLIP text tower, a CLIP vision tower and the grounding fusion head."""

from huggingface_hub.dataclasses import strict
from transformers import CLIPTextConfig, CLIPVisionConfig, PreTrainedConfig

__all__ = ["CLIPVGConfig", "TRAINABLE_CLIP_POLICIES", "default_extract_layers"]

#: Which CLIP parameters receive gradients.
#: - ``"official"``: only the visual position embedding (what the released CLIP-VG recipe trains);
#: - ``"frozen"``: none (skips the backward pass through the vision tower; a deviation from the paper);
#: - ``"all"``: every CLIP parameter (for training small models from scratch).
TRAINABLE_CLIP_POLICIES = ("official", "frozen", "all")

# CLIP ViT-B/16, the backbone of every released CLIP-VG checkpoint.
_DEFAULT_VISION = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "patch_size": 16,
    "image_size": 224,
    "projection_dim": 512,
}
_DEFAULT_TEXT = {
    "hidden_size": 512,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "max_position_embeddings": 77,
    "projection_dim": 512,
}


def default_extract_layers(num_layers: int) -> list[int]:
    """The official choice of vision blocks for a tower of ``num_layers``: first, ~1/3, ~2/3 and last.

    Gives ``[0, 3, 7, 11]`` for 12 layers (ViT-B) and ``[0, 7, 15, 23]`` for 24 (ViT-L), as the released models use.
    """
    picks = [0, num_layers // 3 - 1, 2 * num_layers // 3 - 1, num_layers - 1]
    return sorted({max(0, i) for i in picks})


#: sizes that must be positive integers, on the config and on each tower's config
_POSITIVE_FIELDS = (
    "projection_dim",
    "fusion_hidden_size",
    "fusion_num_layers",
    "fusion_num_heads",
    "fusion_intermediate_size",
    "max_text_length",
    "image_size",
)
_TOWER_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
_POSITIVE_TOWER_FIELDS = {
    "text_config": (*_TOWER_FIELDS, "vocab_size", "max_position_embeddings"),
    "vision_config": (*_TOWER_FIELDS, "image_size", "patch_size", "num_channels"),
}


def _check_positive(config: PreTrainedConfig, prefix: str, fields: tuple[str, ...]) -> None:
    """Raise naming the first of ``fields`` that is not a positive integer."""
    for field in fields:
        value = getattr(config, field)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{prefix}{field}={value!r} must be a positive integer.")


@strict
class CLIPVGConfig(PreTrainedConfig):
    r"""Configuration of [`CLIPVGForGrounding`].

    The defaults describe the released CLIP-VG model: CLIP ViT-B/16 towers and a 6-layer post-norm fusion encoder of
    width 512 with a [REG] token and a box regression head.

    Args:
        text_config (`dict` or `CLIPTextConfig`, *optional*): the CLIP text tower (ViT-B/16's by default).
        vision_config (`dict` or `CLIPVisionConfig`, *optional*): the CLIP vision tower (ViT-B/16's by default).
        projection_dim (`int`): output size of CLIP's text projection, the input size of the fusion's text projection.
        extract_layers (`list[int]`, *optional*): 0-based indices of the vision blocks whose raw outputs are
            concatenated into the multi-level visual feature; by default the official choice for the tower's depth
            ([`default_extract_layers`]). The official numbering ``[0, 3, 7, 11]`` is transformers'
            ``hidden_states[1, 4, 8, 12]`` (``hidden_states[0]`` is the embedding output).
        fusion_hidden_size (`int`): width of the vision-language fusion encoder.
        fusion_num_layers (`int`): number of fusion encoder layers.
        fusion_num_heads (`int`): attention heads in the fusion encoder.
        fusion_intermediate_size (`int`): feed-forward width of the fusion encoder.
        fusion_dropout (`float`): dropout on attention weights and both residual branches of the fusion encoder.
        fusion_activation (`str`): feed-forward activation of the fusion encoder.
        max_text_length (`int`, *optional*): text context length; the fusion has one learned position per text
            token. Defaults to the text tower's ``max_position_embeddings``.
        image_size (`int`, *optional*): side of the square letterboxed canvas fed to the vision tower. Defaults to
            the vision tower's ``image_size`` (224 without a vision config).
        trainable_clip (`str`): which CLIP parameters train, one of ``"official"``, ``"frozen"``, ``"all"``.
        initializer_range (`float`): std of the normal initialisation of CLIP-style weights.
    """

    model_type = "clip_vg"
    sub_configs_defaults = {"text_config": CLIPTextConfig, "vision_config": CLIPVisionConfig}

    text_config: dict | CLIPTextConfig | None = None
    vision_config: dict | CLIPVisionConfig | None = None
    projection_dim: int = 512
    extract_layers: list[int] | tuple[int, ...] | None = None
    fusion_hidden_size: int = 512
    fusion_num_layers: int = 6
    fusion_num_heads: int = 8
    fusion_intermediate_size: int = 2048
    fusion_dropout: float | int = 0.1
    fusion_activation: str = "relu"
    max_text_length: int | None = None
    image_size: int | None = None
    trainable_clip: str = "official"
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        if self.text_config is None:
            self.text_config = dict(_DEFAULT_TEXT)
        if self.vision_config is None:
            self.vision_config = dict(_DEFAULT_VISION, image_size=self.image_size or _DEFAULT_VISION["image_size"])
        super().__post_init__(**kwargs)  # builds the sub-configs
        # unset sizes follow the towers (so that e.g. a CLIP checkpoint's config describes a matching CLIP-VG)
        if self.image_size is None:
            self.image_size = self.vision_config.image_size
        if self.max_text_length is None:
            self.max_text_length = self.text_config.max_position_embeddings
        if self.extract_layers is None:
            self.extract_layers = default_extract_layers(self.vision_config.num_hidden_layers)
        self.extract_layers = [int(i) for i in self.extract_layers]

    @property
    def num_patches_per_side(self) -> int:
        """Side of the patch grid, e.g. 14 for patch 16 at 224."""
        return self.image_size // self.vision_config.patch_size

    @property
    def num_fusion_positions(self) -> int:
        """Length of the fusion sequence: [REG], text tokens, visual CLS, patches (275 for ViT-B/16 at 224)."""
        return 1 + self.max_text_length + 1 + self.num_patches_per_side**2

    def validate_clipvg(self):
        """Strict-dataclass validator: reject settings the model cannot run with, naming the field."""
        if self.trainable_clip not in TRAINABLE_CLIP_POLICIES:
            raise ValueError(
                f"trainable_clip={self.trainable_clip!r} is not supported; choose one of {TRAINABLE_CLIP_POLICIES}."
            )
        vision, text = self.vision_config, self.text_config
        _check_positive(self, "", _POSITIVE_FIELDS)
        for name, sub_config in (("text_config", text), ("vision_config", vision)):
            _check_positive(sub_config, f"{name}.", _POSITIVE_TOWER_FIELDS[name])
        n_layers = vision.num_hidden_layers
        if not self.extract_layers or any(not 0 <= i < n_layers for i in self.extract_layers):
            raise ValueError(
                f"extract_layers={self.extract_layers} must be non-empty 0-based block indices below the vision "
                f"tower's {n_layers} layers."
            )
        if self.fusion_hidden_size % self.fusion_num_heads:
            raise ValueError(
                f"fusion_hidden_size={self.fusion_hidden_size} is not divisible by fusion_num_heads="
                f"{self.fusion_num_heads}."
            )
        if not 0.0 <= self.fusion_dropout < 1.0:
            raise ValueError(f"fusion_dropout={self.fusion_dropout} must lie in [0, 1).")
        if self.image_size != vision.image_size:
            raise ValueError(
                f"image_size={self.image_size} differs from vision_config.image_size={vision.image_size}."
            )
        if self.image_size % vision.patch_size:
            raise ValueError(f"image_size={self.image_size} is not a multiple of patch_size={vision.patch_size}.")
        if self.max_text_length > text.max_position_embeddings:
            raise ValueError(
                f"max_text_length={self.max_text_length} exceeds the text tower's "
                f"{text.max_position_embeddings} positions."
            )
        if text.projection_dim is not None and text.projection_dim != self.projection_dim:
            raise ValueError(
                f"text_config.projection_dim={text.projection_dim} differs from projection_dim={self.projection_dim}."
            )
