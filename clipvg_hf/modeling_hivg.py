"""HiVG: CLIP-VG's successor with multi-layer adaptive cross-modal bridges, HiLoRA and auxiliary grounding heads.

The computation follows the released HiVG model (Xiao et al., ACM MM 2024):

* text: the CLIP text tower on ids zero-padded to ``max_text_length`` with its causal mask only; its hidden states
  feed the bridges, its final-layer-normed and projected tokens feed the fusion;
* vision: the CLIP vision tower where blocks ``config.bridge_layers`` carry a bridge between self-attention and MLP:
  layer norm, cross-attention from the visual tokens to gated, re-weighted multi-layer text states (no text mask:
  padding positions are attended too), an MLP, added as a residual;
* the raw outputs of blocks ``config.extract_layers`` concatenated and projected twice (``multilevel_proj``,
  ``visual_proj``);
* fusion: [REG], visual CLS, patches, text tokens through a pre-norm encoder with a final layer norm;
* heads: a 3-layer MLP box head on [REG]; CLIP contrastive logits of the bridged towers; text-to-patch similarity and
  a segmentation mask from the fusion outputs of the patches and the text's end token.

HiLoRA (LoRA on the q/k/v/out projections of both towers' self-attention and of the bridges' cross-attention) is
built with ``peft``'s current API and can be merged into plain weights ([`HiVGForGrounding.merge_lora`]), after which
peft is no longer needed. This file is uploaded next to the model as Hub remote code, so it imports only its sibling
modules.
"""

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPConfig, CLIPModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.loss.loss_for_object_detection import dice_loss, sigmoid_focal_loss
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.clip.modeling_clip import CLIPAttention

from .configuration_clipvg import default_extract_layers
from .configuration_hivg import HILORA_STAGE_VISION_LAYERS, HiVGConfig
from .modeling_clipvg import (
    CLIPVGBoxHead,
    CLIPVGFusionLayer,
    CLIPVGGroundingOutput,
    CLIPVGPreTrainedModel,
    _torch_default_linear_init,
    eager_attention_forward,
    grounding_loss,
)

try:  # peft is needed for models holding LoRA adapters only; merged models load without it
    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners.tuners_utils import BaseTunerLayer
except ImportError:
    LoraConfig = inject_adapter_in_model = BaseTunerLayer = None

__all__ = [
    "HiVGForGrounding",
    "HiVGGroundingOutput",
    "HiVGPreTrainedModel",
    "box_mask",
    "hivg_loss",
    "hivg_patch_padding_mask",
    "official_text_inputs",
]

#: Modules that carry HiLoRA adapters (full-name regular expression, as peft matches a string target).
LORA_TARGET_MODULES = (
    r"clip\.(text|vision)_model\.encoder\.layers\.\d+\.self_attn\.(q|k|v|out)_proj"
    r"|bridges\.\d+\.cross_attn\.(q|k|v|out)_proj"
)
_VISION_LAYER = re.compile(r"clip\.vision_model\.encoder\.layers\.(\d+)\.")


# ----------------------------------------------------------------------------------------------------------------
# Inputs, masks and losses
# ----------------------------------------------------------------------------------------------------------------
def official_text_inputs(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None, length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """HiVG's text rule: ids with every padding position set to 0, right-padded with 0 to exactly ``length``.

    The bridges attend to every text position, padding included, so the pad id and the length change the result:
    the released models saw OpenAI's ``clip.tokenize`` output (id 0 to 77). Returns the ids and the fusion's text
    padding mask, True where the id is 0 (the official rule).
    """
    ids = input_ids.to(torch.long)
    if attention_mask is not None:
        ids = ids.masked_fill(attention_mask == 0, 0)
    if ids.shape[1] < length:
        ids = F.pad(ids, (0, length - ids.shape[1]), value=0)
    return ids, ids == 0


def hivg_patch_padding_mask(pixel_mask: torch.Tensor, grid_size: int) -> torch.Tensor:
    """Which patches count as padding (True), from a pixel mask with 1 = real pixel, as HiVG computes it.

    The padding mask is shrunk to the patch grid with antialiased bilinear interpolation (torchvision >= 0.17's
    ``Resize`` default, which HiVG was trained with) and rounded half to even; CLIP-VG's rule does not antialias.
    """
    padding = (1 - pixel_mask.to(torch.float32)).unsqueeze(1)
    small = F.interpolate(padding, size=(grid_size, grid_size), mode="bilinear", align_corners=False, antialias=True)
    return small.round().to(torch.bool).flatten(1)


def box_mask(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Rasterise normalised (cx, cy, w, h) boxes on the ``size`` x ``size`` canvas: 1 where a pixel centre is inside.

    A fallback only: the official ground-truth object mask is the box rasterised at the original resolution, then
    resized and letterboxed with the image (what ``GroundingDataset(..., object_masks=True)`` and the collator give,
    and what training passes as ``object_mask``). This approximation is used when a caller has only the boxes; the
    two differ by at most a pixel row or column at each edge.
    """
    cx, cy, w, h = boxes.float().unbind(-1)
    x1, x2, y1, y2 = (cx - w / 2) * size, (cx + w / 2) * size, (cy - h / 2) * size, (cy + h / 2) * size
    centres = torch.arange(size, device=boxes.device, dtype=torch.float32) + 0.5
    inside_x = (centres[None] >= x1[:, None]) & (centres[None] < x2[:, None])
    inside_y = (centres[None] >= y1[:, None]) & (centres[None] < y2[:, None])
    return (inside_y[:, :, None] & inside_x[:, None, :]).to(torch.long)


def hivg_loss(
    pred_boxes: torch.Tensor,
    target_boxes: torch.Tensor,
    logits_per_text: torch.Tensor,
    visual_token_similarity: torch.Tensor,
    seg_mask_logits: torch.Tensor,
    object_mask: torch.Tensor,
    weights: dict[str, float],
) -> dict[str, torch.Tensor]:
    """The HiVG training loss: weighted box L1 and GIoU, CLIP contrastive, text-to-patch and segmentation focal + dice.

    ``object_mask`` (B, H, W) is the ground-truth object on the canvas; the alignment terms compare it, nearest
    downsampled to the patch grid, with ``visual_token_similarity`` (B, num_patches); the segmentation terms compare
    it with ``seg_mask_logits`` (B, 1, h, w) bilinearly upsampled. Focal and dice are DETR's (as the official code).
    Returns each weighted term and their sum under ``"loss"``.
    """
    batch_size = pred_boxes.shape[0]
    terms = grounding_loss(pred_boxes, target_boxes)
    del terms["loss"]
    labels = torch.arange(batch_size, device=logits_per_text.device)
    terms["loss_contrastive"] = (
        F.cross_entropy(logits_per_text, labels) + F.cross_entropy(logits_per_text.t(), labels)
    ) / 2
    mask = object_mask.to(visual_token_similarity.device, torch.float32).unsqueeze(1)
    grid = math.isqrt(visual_token_similarity.shape[-1])
    patch_target = (F.interpolate(mask, size=(grid, grid), mode="nearest")[:, 0] > 0.5).flatten(1).float()
    terms["loss_align_focal"] = sigmoid_focal_loss(visual_token_similarity, patch_target, batch_size)
    terms["loss_align_dice"] = dice_loss(visual_token_similarity, patch_target, batch_size)
    seg = F.interpolate(seg_mask_logits, size=mask.shape[-2:], mode="bilinear", align_corners=False).flatten(1)
    pixel_target = mask.flatten(1)
    terms["loss_seg_focal"] = sigmoid_focal_loss(seg, pixel_target, batch_size)
    terms["loss_seg_dice"] = dice_loss(seg, pixel_target, batch_size)
    weighted = {name: value * weights[name] for name, value in terms.items()}
    weighted["loss"] = sum(weighted.values())
    return weighted


# ----------------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class HiVGGroundingOutput(CLIPVGGroundingOutput):
    r"""Output of [`HiVGForGrounding`]: CLIP-VG's fields plus the auxiliary heads.

    Args:
        logits_per_text (`torch.FloatTensor` of shape `(batch_size, batch_size)`):
            CLIP logits between every expression's end token and every image's CLS of the bridged towers.
        logits_per_image (`torch.FloatTensor` of shape `(batch_size, batch_size)`): the transpose.
        visual_token_similarity (`torch.FloatTensor` of shape `(batch_size, num_patches)`):
            text-to-patch alignment logits (the expression's end token against each fused patch).
        seg_mask_logits (`torch.FloatTensor` of shape `(batch_size, 1, 8 * grid, 8 * grid)`):
            segmentation-mask logits on a grid eight times finer than the patches.
        text_hidden_states (`tuple(torch.FloatTensor)`, *optional*): the text tower's hidden states, embeddings first,
            before the final layer norm (with `output_hidden_states=True`).
        text_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`, *optional*): the projected end token.
        vision_hidden_states (`tuple(torch.FloatTensor)`, *optional*): the bridged vision tower's hidden states,
            the embeddings after the pre-layernorm first.
        bridge_text_states (`tuple(torch.FloatTensor)`, *optional*): the text each bridge attends to (per sample,
            before any batch mixing), in the order of `config.bridge_layers`.
        bridge_deltas (`tuple(torch.FloatTensor)`, *optional*): each bridge's residual branch.
        fusion_output (`torch.FloatTensor` of shape `(batch_size, sequence_length, fusion_hidden_size)`, *optional*):
            the fusion encoder output after its final layer norm (the heads' input).
    """

    logits_per_text: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    visual_token_similarity: torch.FloatTensor | None = None
    seg_mask_logits: torch.FloatTensor | None = None
    text_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    text_embeds: torch.FloatTensor | None = None
    vision_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    bridge_text_states: tuple[torch.FloatTensor, ...] | None = None
    bridge_deltas: tuple[torch.FloatTensor, ...] | None = None
    fusion_output: torch.FloatTensor | None = None


# ----------------------------------------------------------------------------------------------------------------
# Cross-modal bridge
# ----------------------------------------------------------------------------------------------------------------
class HiVGMLP(nn.Module):
    """Linear, QuickGELU, linear (the activation HiVG hard-codes for its bridge and token MLPs)."""

    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.fc2 = nn.Linear(intermediate_size, hidden_size)
        self.activation_fn = ACT2FN["quick_gelu"]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(hidden_states)))


class HiVGCrossAttention(CLIPAttention):
    """CLIP attention (the vision tower's sizes) from visual tokens to text states as keys and values, no mask."""

    def forward(self, hidden_states: torch.Tensor, text_states: torch.Tensor) -> torch.Tensor:
        batch_size, length, _ = hidden_states.shape
        query = self.q_proj(hidden_states).view(batch_size, length, self.num_heads, self.head_dim).transpose(1, 2)
        key = self.k_proj(text_states).view(batch_size, -1, self.num_heads, self.head_dim).transpose(1, 2)
        value = self.v_proj(text_states).view(batch_size, -1, self.num_heads, self.head_dim).transpose(1, 2)
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        output, _ = attention(
            self, query, key, value, None, scaling=self.scale, dropout=self.dropout if self.training else 0.0
        )
        return self.out_proj(output.reshape(batch_size, length, self.embed_dim))


class HiVGBridge(nn.Module):
    """Multi-layer adaptive cross-modal bridge of one vision block: returns the residual added to the visual tokens."""

    def __init__(self, config: HiVGConfig):
        super().__init__()
        vision, text = config.vision_config, config.text_config
        self.norm = nn.LayerNorm(vision.hidden_size, eps=vision.layer_norm_eps)
        self.cross_attn = HiVGCrossAttention(config.vision_config)
        self.mlp = HiVGMLP(vision.hidden_size, vision.intermediate_size)
        self.adaptive = config.bridge_text_source == "adaptive"
        if self.adaptive:
            n_layers = config.num_bridge_text_layers
            self.gate = nn.Linear(n_layers * text.hidden_size, vision.hidden_size)
            self.adaptive_weights = nn.Parameter(torch.empty(n_layers, config.max_text_length, text.hidden_size))

    def text_states(self, sources: list[torch.Tensor]) -> torch.Tensor:
        """The (B, L, vision width) text this bridge attends to, from the bridge text sources of the model."""
        if not self.adaptive:
            return sources[-1]
        weighted = [states * weights + states for states, weights in zip(sources, self.adaptive_weights)]
        return self.gate(torch.cat(weighted, dim=-1))

    def forward(self, hidden_states: torch.Tensor, text_states: torch.Tensor, batch_mixing: bool) -> torch.Tensor:
        if batch_mixing:
            # The official layout: sequence-major text states read back as if batch-major, so row b attends to the
            # flat rows [b*L, (b+1)*L) of all samples' tokens (the projections are per token, so order is free).
            text_states = text_states.transpose(0, 1).reshape(text_states.shape)
        return self.mlp(self.cross_attn(self.norm(hidden_states), text_states))


# ----------------------------------------------------------------------------------------------------------------
# Fusion encoder (pre-norm)
# ----------------------------------------------------------------------------------------------------------------
class HiVGFusionLayer(CLIPVGFusionLayer):
    """Pre-norm transformer encoder layer (CLIP-VG's modules): norm, attention, add; norm, feed-forward, add."""

    def forward(self, hidden_states, position_embeddings, attention_mask) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, weights = self.self_attn(
            self.self_attn_layer_norm(hidden_states), position_embeddings, attention_mask
        )
        hidden_states = hidden_states + F.dropout(attended, p=self.dropout, training=self.training)
        ffn = self.fc2(
            F.dropout(
                self.activation_fn(self.fc1(self.final_layer_norm(hidden_states))),
                p=self.dropout,
                training=self.training,
            )
        )
        return hidden_states + F.dropout(ffn, p=self.dropout, training=self.training), weights


class HiVGFusionEncoder(nn.Module):
    """The stack of pre-norm fusion layers and the final layer norm."""

    def __init__(self, config: HiVGConfig):
        super().__init__()
        self.layers = nn.ModuleList(HiVGFusionLayer(config) for _ in range(config.fusion_num_layers))
        self.layer_norm = nn.LayerNorm(config.fusion_hidden_size)
        self.gradient_checkpointing = False

    def forward(
        self,
        hidden_states,
        position_embeddings,
        attention_mask,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ):
        """The normalised output; with ``output_hidden_states`` the input and every layer's output; with
        ``output_attentions`` every layer's attention weights (None entries unless the attention is eager)."""
        all_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            hidden_states, weights = layer(hidden_states, position_embeddings, attention_mask)
            if output_hidden_states:
                all_states += (hidden_states,)
            if output_attentions:
                all_attentions += (weights,)
        return self.layer_norm(hidden_states), all_states, all_attentions


# ----------------------------------------------------------------------------------------------------------------
# Pretrained model base
# ----------------------------------------------------------------------------------------------------------------
def _lora_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, peft LoRA layer) pairs under ``module``."""
    if BaseTunerLayer is None:
        return []
    return [(name, m) for name, m in module.named_modules() if isinstance(m, BaseTunerLayer)]


class HiVGPreTrainedModel(CLIPVGPreTrainedModel):
    """Weight initialisation, loading and the HiLoRA trainable-parameter policy of HiVG models."""

    config: HiVGConfig
    config_class = HiVGConfig
    supports_gradient_checkpointing = False  # the bridged vision tower runs its blocks piece by piece
    _no_split_modules = [
        "HiVGFusionLayer",
        "CLIPEncoderLayer",
        "CLIPTextEmbeddings",
        "CLIPVisionEmbeddings",
        "HiVGBridge",
    ]

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise the HiVG modules as the official code does, one module at a time (CLIP's are CLIP's business).

        CLIP-VG's rules for the fusion and the box head; PyTorch defaults for the bridges' and heads' new layers,
        N(0, 1) for the adaptive weights, [REG] and the fusion positions; the multi-level projection starts as four
        copies of CLIP's visual projection; LoRA A Kaiming-uniform and B zero (peft's). Every call goes through
        ``transformers.initialization``, which leaves loaded tensors alone.
        """
        super()._init_weights(module)
        if isinstance(module, (HiVGCrossAttention, HiVGMLP)):
            for child in module.children():
                if isinstance(_base(child), nn.Linear):
                    _torch_default_linear_init(_base(child))
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, HiVGBridge) and module.adaptive:
            _torch_default_linear_init(module.gate)
            init.normal_(module.adaptive_weights, std=1.0)
        elif isinstance(module, HiVGForGrounding):
            self._init_top_level(module)

    @staticmethod
    def _init_top_level(module: "HiVGForGrounding") -> None:
        """The modules held directly by the model, and every LoRA adapter (CLIP's ones sit in CLIP's subtree)."""
        linears = [module.visual_proj, module.text_proj, module.multilevel_proj]
        if module.condition_text_proj is not None:
            linears.append(module.condition_text_proj)
        for linear in linears:
            _torch_default_linear_init(linear)
        init.copy_(
            module.multilevel_proj.weight,
            torch.cat([module.clip.visual_projection.weight] * len(module.config.extract_layers), dim=1),
        )
        for conv in module.seg_head:
            init.kaiming_uniform_(conv.weight, a=math.sqrt(5))
        init.normal_(module.reg_token, std=1.0)
        init.normal_(module.fusion_position_embeddings.weight, std=1.0)
        init.constant_(module.clip.logit_scale, module.clip.config.logit_scale_init_value)
        for _, lora in _lora_layers(module):
            for adapter in lora.lora_A.values():
                init.kaiming_uniform_(adapter.weight, a=math.sqrt(5))
            for adapter in lora.lora_B.values():
                init.zeros_(adapter.weight)

    def apply_trainable_clip_policy(self) -> None:
        """Set ``requires_grad`` from ``config.trainable_clip`` and ``config.hilora_stage``.

        ``"official"`` follows the HiLoRA recipe: CLIP's own weights stay frozen; in stage 0 only the bridges and the
        grounding modules train, in stages 1/2/3 also the text LoRA and the vision self-attention LoRA of blocks
        0-4/0-7/0-11. Earlier blocks keep training in later stages (as in the official code, whose stage k starts as a
        tensor-for-tensor copy of stage k-1). ``"frozen"`` trains no CLIP parameter, ``"all"`` every one. The bridges
        (with their LoRA) and the grounding modules always train.
        """
        policy, stage = self.config.trainable_clip, self.config.hilora_stage
        vision_limit = HILORA_STAGE_VISION_LAYERS[stage]
        for name, param in self.named_parameters():
            if not name.startswith("clip.") or policy == "all":
                param.requires_grad_(True)
            elif policy == "frozen" or (".lora_A." not in name and ".lora_B." not in name):
                param.requires_grad_(False)
            elif name.startswith("clip.text_model."):
                param.requires_grad_(stage >= 1)
            else:
                layer = _VISION_LAYER.match(name)
                param.requires_grad_(layer is not None and int(layer.group(1)) < vision_limit)


def _base(linear: nn.Module) -> nn.Module:
    """The plain linear layer under a peft LoRA layer (the layer itself when it has no adapter)."""
    return linear.get_base_layer() if BaseTunerLayer is not None and isinstance(linear, BaseTunerLayer) else linear


# ----------------------------------------------------------------------------------------------------------------
# Grounding model
# ----------------------------------------------------------------------------------------------------------------
class HiVGForGrounding(HiVGPreTrainedModel):
    """HiVG: predicts the box a referring expression describes, one box per (image, expression) pair."""

    def __init__(self, config: HiVGConfig):
        super().__init__(config)
        self.clip = self._build_clip_towers(config)
        hidden = config.fusion_hidden_size
        vision_width = config.vision_config.hidden_size
        self.bridges = nn.ModuleDict({str(i): HiVGBridge(config) for i in config.bridge_layers})
        self.condition_text_proj = (
            nn.Linear(config.projection_dim, vision_width) if config.bridge_text_source == "mixup" else None
        )
        self.multilevel_proj = nn.Linear(len(config.extract_layers) * vision_width, config.projection_dim)
        self.visual_proj = nn.Linear(config.projection_dim, hidden)
        self.text_proj = nn.Linear(config.projection_dim, hidden)
        self.reg_token = nn.Parameter(torch.empty(1, hidden))
        self.fusion_position_embeddings = nn.Embedding(config.num_fusion_positions, hidden)
        self.fusion = HiVGFusionEncoder(config)
        self.box_head = CLIPVGBoxHead(hidden)
        self.token_norm = nn.LayerNorm(hidden, eps=1e-5)
        self.token_mlp = HiVGMLP(hidden, config.token_mlp_size)
        self.seg_head = nn.Sequential(*(nn.ConvTranspose2d(hidden, hidden, 2, stride=2, bias=False) for _ in range(3)))
        if config.lora_adapters:
            self._inject_lora()
        self.post_init()
        self.apply_trainable_clip_policy()

    @classmethod
    def _clip_config_defaults(cls, clip_config: CLIPConfig, config_kwargs: dict) -> None:
        """HiVG's defaults for [`from_clip_pretrained`]: the fusion width is CLIP's projection size, the extracted
        and bridged blocks the official choice for the tower's depth, the bridge text the last text layer."""
        config_kwargs.setdefault("fusion_hidden_size", clip_config.projection_dim)
        config_kwargs.setdefault("extract_layers", default_extract_layers(clip_config.vision_config.num_hidden_layers))
        config_kwargs.setdefault("bridge_layers", config_kwargs["extract_layers"])
        config_kwargs.setdefault("bridge_text_layers", [clip_config.text_config.num_hidden_layers])

    def _load_clip_weights(self, clip: CLIPModel) -> None:
        """Copy a pretrained CLIP's weights under the LoRA wrappers (the adapters keep their fresh initialisation);
        the multi-level projection starts as copies of CLIP's visual projection."""
        wrapped = {name for name, _ in _lora_layers(self.clip)}
        weights = {}
        for key, value in clip.state_dict().items():
            module, _, leaf = key.rpartition(".")
            weights[f"{module}.base_layer.{leaf}" if module in wrapped else key] = value
        self.clip.load_state_dict(weights, strict=False)
        with torch.no_grad():
            self.multilevel_proj.weight.copy_(
                torch.cat([clip.visual_projection.weight] * len(self.config.extract_layers), 1)
            )

    def _inject_lora(self) -> None:
        """Wrap every HiLoRA target projection in a peft LoRA layer (one adapter, ``"default"``)."""
        if inject_adapter_in_model is None:
            raise ImportError(
                "this HiVG model holds LoRA adapters (config.lora_adapters=True), which need peft: "
                "`pip install peft`, or load a folder converted with --merge_lora"
            )
        lora_config = LoraConfig(
            r=self.config.lora_rank,
            lora_alpha=self.config.lora_alpha,
            lora_dropout=self.config.lora_dropout,
            bias="none",
            target_modules=LORA_TARGET_MODULES,
        )
        inject_adapter_in_model(lora_config, self)
        self.__dict__.pop("peft_config", None)  # not a peft-managed adapter of transformers' integration

    def merge_lora(self) -> "HiVGForGrounding":
        """Fold every LoRA adapter into its weight (``W + alpha / r * B @ A``) and drop the peft layers, in place.

        The merged model computes the same outputs up to fp32 rounding, runs faster, and saves plain transformers
        weights (``config.lora_adapters`` becomes ``False``) that load without peft.
        """
        for name, lora in _lora_layers(self):
            lora.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(self.get_submodule(parent_name), child, lora.get_base_layer())
        self.config.lora_adapters = False
        self.apply_trainable_clip_policy()
        return self

    # -- the towers ---------------------------------------------------------------------------------------------------
    def encode_text(
        self, input_ids: torch.Tensor, output_attentions: bool = False
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """Text tower on official (zero-padded) ids: hidden states before the final norm, projected tokens, end token,
        and (with ``output_attentions``) each block's attention weights.

        The end token is the position of the largest id (OpenAI's end-of-text, 49407), as the official model takes it.
        """
        outputs = self.clip.text_model(
            input_ids=input_ids, output_hidden_states=True, output_attentions=output_attentions
        )
        text_features = self.clip.text_projection(outputs.last_hidden_state)
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        text_embeds = self.clip.text_projection(outputs.last_hidden_state[rows, input_ids.argmax(-1)])
        return outputs.hidden_states, text_features, text_embeds, outputs.attentions if output_attentions else None

    def bridge_text_sources(self, text_hidden_states: tuple[torch.Tensor, ...], text_features: torch.Tensor):
        """What the bridges read: the chosen text hidden states, or (mixup) the conditioned text features."""
        if self.condition_text_proj is not None:
            return [self.condition_text_proj(text_features)]
        return [text_hidden_states[i] for i in self.config.bridge_text_layers]

    def encode_image(
        self,
        pixel_values: torch.Tensor,
        bridge_sources: list[torch.Tensor],
        batch_mixing: bool,
        output_attentions: bool = False,
    ) -> tuple[tuple[torch.Tensor, ...], list[torch.Tensor], list[torch.Tensor], tuple[torch.Tensor, ...] | None]:
        """Bridged vision tower: (hidden states, embeddings first; each bridge's text; each bridge's residual; each
        block's self-attention weights with ``output_attentions``)."""
        vision = self.clip.vision_model
        hidden_states = vision.pre_layrnorm(vision.embeddings(pixel_values.to(self.clip.dtype)))
        states, bridge_texts, deltas = [hidden_states], [], []
        attentions = () if output_attentions else None
        for index, layer in enumerate(vision.encoder.layers):
            attended, weights = layer.self_attn(layer.layer_norm1(hidden_states))
            hidden_states = hidden_states + attended
            if output_attentions:
                attentions += (weights,)
            bridge = self.bridges[str(index)] if str(index) in self.bridges else None
            if bridge is not None:
                bridge_texts.append(bridge.text_states(bridge_sources))
                deltas.append(bridge(hidden_states, bridge_texts[-1], batch_mixing))
                hidden_states = hidden_states + deltas[-1]
            hidden_states = hidden_states + layer.mlp(layer.layer_norm2(hidden_states))
            states.append(hidden_states)
        return tuple(states), bridge_texts, deltas, attentions

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        object_mask: torch.Tensor | None = None,
        bridge_batch_mixing: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        image_index: torch.Tensor | None = None,
    ) -> HiVGGroundingOutput | tuple:
        r"""Predict one box per (image, expression), with HiVG's auxiliary outputs.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, image_size, image_size)`):
                letterboxed images from [`CLIPVGImageProcessor`].
            input_ids (`torch.LongTensor` of shape `(batch_size, text_length)`):
                CLIP token ids, ``text_length <= config.max_text_length``. Padding is set to id 0 and extended to
                ``max_text_length`` (HiVG's text rule, [`official_text_inputs`]); without `attention_mask` the ids
                must already be zero-padded.
            attention_mask (`torch.LongTensor` of shape `(batch_size, text_length)`, *optional*):
                1 for real tokens, 0 for padding.
            pixel_mask (`torch.LongTensor` of shape `(batch_size, image_size, image_size)`, *optional*):
                1 for real pixels, 0 for letterbox padding; all ones when omitted.
            labels (`torch.FloatTensor` of shape `(batch_size, 4)`, *optional*):
                target boxes, normalised (cx, cy, w, h) on the canvas; the loss is returned when given.
            object_mask (`torch.Tensor` of shape `(batch_size, image_size, image_size)`, *optional*):
                the ground-truth object mask on the canvas (any integer or bool dtype, 1 = object) for the alignment
                and segmentation losses, as the data pipeline makes it (the box drawn at the original resolution and
                carried through the image's transforms). Only when it is omitted does the loss fall back to the box
                rasterised from `labels` on the canvas ([`box_mask`]), an approximation of it.
            bridge_batch_mixing (`bool`, *optional*): override `config.bridge_batch_mixing` (True reproduces the
                official batched computation, whose outputs depend on the batch composition).
            output_attentions (`bool`, *optional*):
                return the attention weights of the fusion layers (`attentions`) and of both CLIP towers' self-attention
                (`vision_attentions`, `text_attentions`); they exist with ``attn_implementation="eager"`` only (SDPA
                computes no weights and gives ``None`` entries).
            image_index (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
                `pixel_values` / `pixel_mask` hold distinct images and expression `i` is grounded in image
                `image_index[i]` (CLIP-VG's layout). The bridges make the visual features depend on the expression,
                so each image is still encoded once per expression.
        """
        output_hidden_states, output_attentions, return_dict = self._output_flags(
            output_hidden_states, output_attentions, return_dict
        )
        mixing = self.config.bridge_batch_mixing if bridge_batch_mixing is None else bridge_batch_mixing
        self._check_inputs(pixel_values, input_ids, attention_mask, pixel_mask, labels, image_index)
        if pixel_mask is None:
            pixel_mask = torch.ones(pixel_values.shape[0], *pixel_values.shape[2:], device=pixel_values.device)
        if image_index is not None:  # one row per expression
            rows = image_index.to(pixel_values.device, torch.long)
            pixel_values, pixel_mask = pixel_values[rows], pixel_mask[rows.to(pixel_mask.device)]
        ids, text_padding = official_text_inputs(input_ids, attention_mask, self.config.max_text_length)

        text_hidden_states, text_features, text_embeds, text_attentions = self.encode_text(ids, output_attentions)
        sources = self.bridge_text_sources(text_hidden_states, text_features)
        vision_states, bridge_texts, deltas, vision_attentions = self.encode_image(
            pixel_values, sources, mixing, output_attentions
        )
        visual_features = torch.cat([vision_states[i + 1] for i in self.config.extract_layers], dim=-1)
        visual = self.visual_proj(self.multilevel_proj(visual_features))
        text = self.text_proj(text_features)
        batch_size = visual.shape[0]
        reg = self.reg_token.unsqueeze(0).expand(batch_size, -1, -1)
        hidden_states = torch.cat([reg, visual, text], dim=1)  # [REG], CLS, patches, text

        patch_padding = hivg_patch_padding_mask(pixel_mask, self.config.num_patches_per_side)
        never = torch.zeros(batch_size, 2, dtype=torch.bool, device=hidden_states.device)
        padding = torch.cat([never, patch_padding.to(hidden_states.device), text_padding], dim=1)
        additive = torch.zeros(padding.shape, dtype=hidden_states.dtype, device=hidden_states.device)
        additive = additive.masked_fill(padding, torch.finfo(hidden_states.dtype).min)[:, None, None, :]
        position_embeddings = self.fusion_position_embeddings.weight.unsqueeze(0)
        fused, fusion_states, fusion_attentions = self.fusion(
            hidden_states, position_embeddings, additive, output_hidden_states, output_attentions
        )
        boxes = self.box_head(fused[:, 0])

        logits_per_text = self._contrastive_logits(text_embeds, vision_states[-1][:, 0])
        visual_token_similarity, seg_mask_logits = self._alignment_heads(fused, ids)

        loss = loss_dict = None
        if labels is not None:
            labels = labels.to(boxes.device, torch.float32)
            if object_mask is None:
                object_mask = box_mask(labels, self.config.image_size)
            loss_dict = hivg_loss(
                boxes.float(),
                labels,
                logits_per_text.float(),
                visual_token_similarity.float(),
                seg_mask_logits.float(),
                object_mask,
                self.config.loss_weights,
            )
            loss = loss_dict.pop("loss")
        hidden = output_hidden_states
        output = HiVGGroundingOutput(
            loss=loss,
            loss_dict=loss_dict,
            pred_boxes=boxes.unsqueeze(1),
            logits_per_text=logits_per_text,
            logits_per_image=logits_per_text.t(),
            visual_token_similarity=visual_token_similarity,
            seg_mask_logits=seg_mask_logits,
            visual_features=visual_features if hidden else None,
            text_features=text_features if hidden else None,
            patch_attention_mask=(~patch_padding).to(torch.long) if hidden else None,
            hidden_states=fusion_states,
            attentions=fusion_attentions,
            vision_attentions=vision_attentions,
            text_attentions=text_attentions,
            text_hidden_states=text_hidden_states if hidden else None,
            text_embeds=text_embeds if hidden else None,
            vision_hidden_states=vision_states if hidden else None,
            bridge_text_states=tuple(bridge_texts) if hidden else None,
            bridge_deltas=tuple(deltas) if hidden else None,
            fusion_output=fused if hidden else None,
        )
        return output if return_dict else output.to_tuple()

    def _contrastive_logits(self, text_embeds: torch.Tensor, vision_cls: torch.Tensor) -> torch.Tensor:
        """CLIP logits (B_text, B_image) of the projected end tokens against the bridged tower's projected CLS."""
        image_embeds = self.clip.visual_projection(self.clip.vision_model.post_layernorm(vision_cls))
        image_embeds = image_embeds / image_embeds.norm(p=2, dim=-1, keepdim=True)
        text_embeds = text_embeds / text_embeds.norm(p=2, dim=-1, keepdim=True)
        return torch.matmul(text_embeds, image_embeds.t()) * self.clip.logit_scale.exp()

    def _alignment_heads(self, fused: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Text-to-patch similarity (B, num_patches) and segmentation logits (B, 1, 8g, 8g) from the fused tokens."""
        grid = self.config.num_patches_per_side
        n_patches = grid * grid
        patches = fused[:, 2 : 2 + n_patches]
        rows = torch.arange(fused.shape[0], device=fused.device)
        end = fused[:, 2 + n_patches :][rows, ids.argmax(-1)]
        end = end / end.norm(p=2, dim=-1, keepdim=True)
        similarity = (self.token_mlp(self.token_norm(patches)) * end.unsqueeze(1)).sum(-1)
        seg = self.seg_head(patches.transpose(1, 2).reshape(fused.shape[0], -1, grid, grid))
        seg_mask_logits = (seg.permute(0, 2, 3, 1) * end[:, None, None, :]).sum(-1).unsqueeze(1)
        return similarity, seg_mask_logits
