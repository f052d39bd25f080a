"""Configuration of HiVG: CLIP-VG's towers and fusion head plus cross-modal bridges, HiLoRA and auxiliary heads."""

from huggingface_hub.dataclasses import strict

from .configuration_clipvg import CLIPVGConfig

__all__ = ["BRIDGE_TEXT_SOURCES", "HILORA_STAGE_VISION_LAYERS", "HiVGConfig", "default_bridge_text_layers"]

#: Where the bridges read their text from:
#: - ``"adaptive"``: CLIP text hidden states ``bridge_text_layers`` (before the final layer norm), each re-weighted by
#:   ``1 + W_i`` with a learned (positions x width) table and concatenated, then projected by a gate (the released
#:   single-dataset models);
#: - ``"mixup"``: the projected text features through ``condition_text_proj`` (the mixup pre-training models).
BRIDGE_TEXT_SOURCES = ("adaptive", "mixup")

#: How many leading vision blocks have trainable self-attention LoRA in HiLoRA stages 1, 2 and 3 (stage 0 none).
HILORA_STAGE_VISION_LAYERS = {0: 0, 1: 5, 2: 8, 3: 12}

_LOSS_WEIGHTS = {
    "loss_bbox": 2.0,
    "loss_giou": 2.0,
    "loss_contrastive": 1.0,
    "loss_align_focal": 20.0,
    "loss_align_dice": 2.0,
    "loss_seg_focal": 20.0,
    "loss_seg_dice": 2.0,
}


def default_bridge_text_layers(dataset: str | None, num_text_layers: int = 12) -> list[int]:
    """The text ``hidden_states`` indices the official code feeds to the bridges when trained on ``dataset``.

    RefCOCOg (``gref``, ``gref_umd``) reads every layer, RefCOCO+ (``unc+``) and ReferIt the middle and the last,
    everything else (RefCOCO, Flickr30k, mixup) the last only.
    """
    if dataset in ("gref", "gref_umd"):
        return list(range(1, num_text_layers + 1))
    if dataset in ("unc+", "referit"):
        return [num_text_layers // 2, num_text_layers]
    return [num_text_layers]


@strict
class HiVGConfig(CLIPVGConfig):
    r"""Configuration of [`HiVGForGrounding`]; the fields it shares with [`CLIPVGConfig`] mean the same.

    The defaults describe the released HiVG-B model for RefCOCO: CLIP ViT-B/16 towers, bridges in vision blocks
    0/3/7/11 reading the last text layer, LoRA (rank 32, alpha 16) on every attention projection, a 6-layer pre-norm
    fusion encoder of width 512 with a final layer norm.

    Args:
        bridge_layers (`list[int]`): 0-based vision blocks holding a cross-modal bridge between self-attention and MLP.
        bridge_text_layers (`list[int]`): text ``hidden_states`` indices the bridges read (1 = first block's output,
            ``num_hidden_layers`` = the last block's output before the final layer norm); sets parameter shapes.
        bridge_text_source (`str`): ``"adaptive"`` or ``"mixup"`` (see ``BRIDGE_TEXT_SOURCES``).
        bridge_batch_mixing (`bool`): reproduce the official bridge exactly, including its mixing of the samples of a
            batch (each sample's visual tokens attend to token slices of every sample). The released models were
            trained and evaluated that way, so their reported numbers need it, with the same batch composition. The
            default ``False`` attends within each sample: a box never depends on the other rows of the batch.
        lora_rank (`int`), lora_alpha (`float`), lora_dropout (`float`): the HiLoRA adapters on the q/k/v/out
            projections of both towers' self-attention and of the bridges' cross-attention.
        lora_adapters (`bool`): whether the model holds separate LoRA adapters (peft layers, needed for training);
            ``False`` after [`HiVGForGrounding.merge_lora`], when the weights are plain and peft is not needed.
        hilora_stage (`int`): which parameters train under ``trainable_clip="official"``: 0 (warm-up) the bridges
            and the grounding modules, 1/2/3 in addition the text LoRA and the vision LoRA of blocks 0-4/0-7/0-11.
        token_mlp_size (`int`): hidden width of the text-to-patch alignment MLP.
        loss_weights (`dict[str, float]`): weight of each loss term (official: boxes x2, alignment and segmentation
            focal x20 and dice x2, contrastive x1).
    """

    model_type = "hivg"

    bridge_layers: list[int] | tuple[int, ...] = (0, 3, 7, 11)
    bridge_text_layers: list[int] | tuple[int, ...] = (12,)
    bridge_text_source: str = "adaptive"
    bridge_batch_mixing: bool = False
    lora_rank: int = 32
    lora_alpha: float | int = 16
    lora_dropout: float | int = 0.1
    lora_adapters: bool = True
    hilora_stage: int = 3
    token_mlp_size: int = 3072
    loss_weights: dict | None = None

    def __post_init__(self, **kwargs):
        self.bridge_layers = [int(i) for i in self.bridge_layers]
        self.bridge_text_layers = [int(i) for i in self.bridge_text_layers]
        self.loss_weights = dict(_LOSS_WEIGHTS, **(self.loss_weights or {}))
        super().__post_init__(**kwargs)

    def validate_hivg(self):
        """Strict-dataclass validator: reject settings the model cannot run with, naming the field."""
        n_vision, n_text = self.vision_config.num_hidden_layers, self.text_config.num_hidden_layers
        if any(not 0 <= i < n_vision for i in self.bridge_layers) or len(set(self.bridge_layers)) != len(
            self.bridge_layers
        ):
            raise ValueError(f"bridge_layers={self.bridge_layers} must be distinct block indices below {n_vision}.")
        if not self.bridge_text_layers or any(not 0 <= i <= n_text for i in self.bridge_text_layers):
            raise ValueError(
                f"bridge_text_layers={self.bridge_text_layers} must be non-empty text hidden_states indices in "
                f"[0, {n_text}]."
            )
        if self.bridge_text_source not in BRIDGE_TEXT_SOURCES:
            raise ValueError(f"bridge_text_source={self.bridge_text_source!r}; choose one of {BRIDGE_TEXT_SOURCES}.")
        if self.hilora_stage not in HILORA_STAGE_VISION_LAYERS:
            raise ValueError(f"hilora_stage={self.hilora_stage} must be one of {sorted(HILORA_STAGE_VISION_LAYERS)}.")
        if self.lora_rank < 1 or not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(
                f"lora_rank={self.lora_rank} must be positive and lora_dropout={self.lora_dropout} in [0, 1)."
            )
        unknown = set(self.loss_weights) - set(_LOSS_WEIGHTS)
        if unknown:
            raise ValueError(f"loss_weights has unknown terms {sorted(unknown)}; known: {sorted(_LOSS_WEIGHTS)}.")

    @property
    def num_bridge_text_layers(self) -> int:
        """How many text layers each bridge concatenates (1 for the mixup source)."""
        return 1 if self.bridge_text_source == "mixup" else len(self.bridge_text_layers)
