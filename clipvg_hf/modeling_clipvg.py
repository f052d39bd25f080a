"""CLIP-VG: CLIP towers, a vision-language fusion encoder with a [REG] token, and a box regression head.

The computation follows the released CLIP-VG model (multi-level variant):

* vision: raw outputs of the CLIP vision blocks ``config.extract_layers`` (no post-layernorm, no projection),
  concatenated along channels and projected to the fusion width;
* text: the CLIP text tower with its causal mask only, final layer norm and text projection on every token, then a
  projection to the fusion width;
* fusion: ``[REG]``, text tokens, visual CLS, patches, with a learned position per sequence slot, through a
  post-norm DETR-style encoder whose padding (text padding, padded patches) is a key-padding mask;
* head: a 3-layer MLP on the ``[REG]`` output, sigmoid, giving (cx, cy, w, h) on the padded square canvas.
"""

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPConfig, CLIPModel, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput, can_return_tuple, logging

from .boxes_clipvg import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh, elementwise_giou, grounding_iou
from .configuration_clipvg import TRAINABLE_CLIP_POLICIES, CLIPVGConfig, default_extract_layers
from .lean_ops_clipvg import LeanQuickGELUActivation, lean_dropout, use_lean_activations
from .packing_clipvg import (
    PackedFusionEncoderMixin,
    PackedFusionLayerMixin,
    PackedSequences,
    expression_layout,
    packed_attention,
)

logger = logging.get_logger(__name__)

__all__ = [
    "CLIPVGForGrounding",
    "CLIPVGGroundingOutput",
    "CLIPVGPreTrainedModel",
    "grounding_loss",
    "patch_padding_mask",
    # defined in boxes_clipvg, lean_ops_clipvg and packing_clipvg; importable from here as before
    "LeanQuickGELUActivation",
    "PackedSequences",
    "box_cxcywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "grounding_iou",
    "lean_dropout",
    "packed_attention",
    "use_lean_activations",
]


# ----------------------------------------------------------------------------------------------------------------
# Loss and masks
# ----------------------------------------------------------------------------------------------------------------
def grounding_loss(pred_boxes: torch.Tensor, target_boxes: torch.Tensor) -> dict[str, torch.Tensor]:
    """The CLIP-VG loss on normalised (cx, cy, w, h) boxes of shape (B, 4).

    ``loss_bbox`` is the L1 distance summed over the four coordinates and divided by the batch size; ``loss_giou``
    is the batch mean of ``1 - GIoU``; ``loss`` is their unweighted sum.
    """
    if pred_boxes.shape != target_boxes.shape or pred_boxes.shape[-1] != 4:
        raise ValueError(
            f"expected two (B, 4) box tensors, got {tuple(pred_boxes.shape)} and {tuple(target_boxes.shape)}"
        )
    if (target_boxes[:, 2:] < 0).any():
        bad = (target_boxes[:, 2:] < 0).any(-1).nonzero().flatten().tolist()
        raise ValueError(f"labels must be (cx, cy, w, h) with w, h >= 0; rows {bad} have a negative size")
    batch_size = pred_boxes.shape[0]
    loss_bbox = F.l1_loss(pred_boxes, target_boxes, reduction="none").sum() / batch_size
    giou = elementwise_giou(box_cxcywh_to_xyxy(pred_boxes), box_cxcywh_to_xyxy(target_boxes))
    loss_giou = (1 - giou).sum() / batch_size
    return {"loss": loss_bbox + loss_giou, "loss_bbox": loss_bbox, "loss_giou": loss_giou}


def patch_padding_mask(pixel_mask: torch.Tensor, grid_size: int) -> torch.Tensor:
    """Which patches count as padding (True), from a pixel mask with 1 = real pixel.

    The padding mask is shrunk to the patch grid with bilinear interpolation without antialiasing and rounded (half
    to even), as the released checkpoints were trained: a patch is padding when at least three of its four central
    pixels are. Returns a bool tensor (B, grid_size**2).
    """
    padding = (1 - pixel_mask.to(torch.float32)).unsqueeze(1)
    small = F.interpolate(padding, size=(grid_size, grid_size), mode="bilinear", align_corners=False, antialias=False)
    return small.round().to(torch.bool).flatten(1)


# ----------------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class CLIPVGGroundingOutput(ModelOutput):
    r"""Output of [`CLIPVGForGrounding`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` are given):
            ``loss_bbox + loss_giou`` (see [`grounding_loss`]).
        loss_dict (`dict[str, torch.FloatTensor]`, *optional*, returned when `labels` are given):
            the two terms, ``loss_bbox`` and ``loss_giou``.
        logits (`None`):
            CLIP-VG predicts exactly one box per (image, expression) and has no confidence head; the field exists for
            the object-detection conventions and is always ``None``.
        pred_boxes (`torch.FloatTensor` of shape `(batch_size, 1, 4)`):
            the predicted box, normalised (center_x, center_y, width, height) on the padded square canvas. Use
            [`CLIPVGImageProcessor.post_process_object_detection`] to get boxes in original-image pixels.
        visual_features (`torch.FloatTensor` of shape `(batch_size, 1 + num_patches, len(extract_layers) * vision_width)`, *optional*):
            the multi-level visual feature (returned with `output_hidden_states=True`).
        text_features (`torch.FloatTensor` of shape `(batch_size, text_length, projection_dim)`, *optional*):
            the CLIP text features after the final layer norm and the text projection (with `output_hidden_states=True`).
        patch_attention_mask (`torch.LongTensor` of shape `(batch_size, num_patches)`, *optional*):
            1 for the patches the fusion attends to, 0 for letterbox-padding patches it masks out (with
            `output_hidden_states=True`).
        hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            the fusion encoder input and the output of each fusion layer, each `(batch_size, sequence_length,
            fusion_hidden_size)` with `sequence_length = 1 + text_length + 1 + num_patches` (with
            `output_hidden_states=True`).
        attentions (`tuple(torch.FloatTensor)`, *optional*):
            the attention weights of each fusion layer, each `(batch_size, fusion_num_heads, sequence_length,
            sequence_length)` (with `output_attentions=True` and `attn_implementation="eager"`).
        vision_attentions (`tuple(torch.FloatTensor)`, *optional*):
            the attention weights of each CLIP vision block (with `output_attentions=True`, eager attention).
        text_attentions (`tuple(torch.FloatTensor)`, *optional*):
            the attention weights of each CLIP text block (with `output_attentions=True`, eager attention).
    """

    loss: torch.FloatTensor | None = None
    loss_dict: dict | None = None
    logits: torch.FloatTensor | None = None
    pred_boxes: torch.FloatTensor | None = None
    visual_features: torch.FloatTensor | None = None
    text_features: torch.FloatTensor | None = None
    patch_attention_mask: torch.LongTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    vision_attentions: tuple[torch.FloatTensor, ...] | None = None
    text_attentions: tuple[torch.FloatTensor, ...] | None = None


# ----------------------------------------------------------------------------------------------------------------
# Fusion encoder
# ----------------------------------------------------------------------------------------------------------------
def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention on (B, heads, L, head_dim) inputs with an additive mask."""
    weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = F.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


class CLIPVGFusionAttention(nn.Module):
    """Multi-head self-attention whose queries and keys carry the position embedding and whose values do not."""

    def __init__(self, config: CLIPVGConfig):
        super().__init__()
        self.config = config
        self.embed_dim = config.fusion_hidden_size
        self.num_heads = config.fusion_num_heads
        self.head_dim = self.embed_dim // self.num_heads
        self.scaling = self.head_dim**-0.5
        self.dropout = config.fusion_dropout
        self.is_causal = False
        self.q_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.k_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.v_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.out_proj = nn.Linear(self.embed_dim, self.embed_dim)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: torch.Tensor,
        attention_mask: torch.Tensor | None,
        num_queries: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend from the first ``num_queries`` tokens (all when None) to every token."""
        shape = (*hidden_states.shape[:-1], self.num_heads, self.head_dim)
        query_rows = None if num_queries is None else slice(None, num_queries)
        query, key, value = self.project(hidden_states, position_embeddings, query_rows)
        query_shape = query.shape[:-1]
        query = query.view(*query_shape, self.num_heads, self.head_dim).transpose(1, 2)
        key = key.view(shape).transpose(1, 2)
        value = value.view(shape).transpose(1, 2)
        attention: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        output, weights = attention(
            self,
            query,
            key,
            value,
            attention_mask,
            scaling=self.scaling,
            dropout=self.dropout if self.training else 0.0,
        )
        output = output.reshape(*query_shape, self.embed_dim).contiguous()
        return self.out_proj(output), weights

    def project(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: torch.Tensor,
        query_rows: slice | torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Query, key and value projections (``(..., rows, D)``, heads not split): queries and keys see the position
        embedding, values do not; ``query_rows`` picks the token rows that ask (all when None)."""
        with_position = hidden_states + position_embeddings
        queries = with_position if query_rows is None else with_position[..., query_rows, :]
        return self.q_proj(queries), self.k_proj(with_position), self.v_proj(hidden_states)


class CLIPVGFusionLayer(PackedFusionLayerMixin, GradientCheckpointingLayer):
    """Post-norm transformer encoder layer (DETR style): attention, add & norm, feed-forward, add & norm.

    ``forward`` takes the padded layout with a key-padding mask; ``forward_packed`` (from
    [`PackedFusionLayerMixin`]) takes sequences of real tokens packed along the rows.
    """

    def __init__(self, config: CLIPVGConfig):
        super().__init__()
        self.self_attn = CLIPVGFusionAttention(config)
        self.self_attn_layer_norm = nn.LayerNorm(config.fusion_hidden_size)
        self.fc1 = nn.Linear(config.fusion_hidden_size, config.fusion_intermediate_size)
        self.fc2 = nn.Linear(config.fusion_intermediate_size, config.fusion_hidden_size)
        self.final_layer_norm = nn.LayerNorm(config.fusion_hidden_size)
        self.activation_fn = ACT2FN[config.fusion_activation]
        self.dropout = config.fusion_dropout

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: torch.Tensor,
        attention_mask: torch.Tensor | None,
        num_queries: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Update every token, or only the first ``num_queries`` (the others still serve as keys and values).

        Returns the new states and the attention weights (None unless the attention implementation gives them).
        """
        attended, weights = self.self_attn(hidden_states, position_embeddings, attention_mask, num_queries)
        if num_queries is not None:
            hidden_states = hidden_states[:, :num_queries]
        return self.add_norm_feed_forward(hidden_states, attended), weights

    def add_norm_feed_forward(self, hidden_states: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """The layer after its attention (whose output is ``attended``): add & norm, feed-forward, add & norm."""
        hidden_states = self.self_attn_layer_norm(
            hidden_states + lean_dropout(attended, p=self.dropout, training=self.training)
        )
        ffn = self.fc2(
            lean_dropout(self.activation_fn(self.fc1(hidden_states)), p=self.dropout, training=self.training)
        )
        return self.final_layer_norm(hidden_states + lean_dropout(ffn, p=self.dropout, training=self.training))


class CLIPVGFusionEncoder(PackedFusionEncoderMixin, nn.Module):
    """The stack of fusion layers: ``forward`` on the padded layout, ``forward_packed`` (from
    [`PackedFusionEncoderMixin`]) on packed sequences."""

    def __init__(self, config: CLIPVGConfig):
        super().__init__()
        self.layers = nn.ModuleList(CLIPVGFusionLayer(config) for _ in range(config.fusion_num_layers))
        self.gradient_checkpointing = False

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: torch.Tensor,
        attention_mask: torch.Tensor | None,
        output_hidden_states: bool = False,
        first_token_only: bool = False,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None, tuple[torch.Tensor | None, ...] | None]:
        """Run the layers; ``first_token_only`` makes the last layer update only token 0 (the [REG] token).

        The last layer's other outputs feed nothing downstream of the box head, so skipping their query projection,
        attention rows and feed-forward gives the same [REG] output at about 14% less fusion compute. The returned
        tensor is then (B, 1, D). Ignored with ``output_hidden_states`` or ``output_attentions``, which need every
        token. Returns the last states, every layer's states (or None) and every layer's attention weights (or None).
        """
        all_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        full = output_hidden_states or output_attentions
        for index, layer in enumerate(self.layers):
            last = index == len(self.layers) - 1
            num_queries = 1 if first_token_only and last and not full else None
            hidden_states, weights = layer(hidden_states, position_embeddings, attention_mask, num_queries)
            if output_hidden_states:
                all_states += (hidden_states,)
            if output_attentions:
                all_attentions += (weights,)
        return hidden_states, all_states, all_attentions


class CLIPVGBoxHead(nn.Module):
    """MLP with ReLU between layers, ending in a sigmoid: (cx, cy, w, h) in [0, 1]."""

    def __init__(self, hidden_size: int, num_layers: int = 3):
        super().__init__()
        sizes = [hidden_size] * num_layers + [4]
        # float32 whatever the default dtype: the boxes are computed in full precision (see _keep_in_fp32_modules_strict)
        self.layers = nn.ModuleList(nn.Linear(a, b, dtype=torch.float32) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # a low-precision model keeps its head in fp32 (``_keep_in_fp32_modules_strict``): the boxes come out in the
        # head's dtype (a no-op when both are fp32)
        hidden_states = hidden_states.to(self.layers[0].weight.dtype)
        for i, layer in enumerate(self.layers):
            hidden_states = layer(hidden_states)
            if i < len(self.layers) - 1:
                hidden_states = F.relu(hidden_states)
        return hidden_states.sigmoid()


# ----------------------------------------------------------------------------------------------------------------
# Pretrained model base
# ----------------------------------------------------------------------------------------------------------------
def _initialize_module_tree(module: nn.Module, initialize: Callable[[nn.Module, bool], None]) -> None:
    """Children first, then ``module``; a nested ``PreTrainedModel`` switches to its own initialiser."""
    for child in module.children():
        _initialize_module_tree(child, child._initialize_weights if isinstance(child, PreTrainedModel) else initialize)
    initialize(module, False)


def _torch_default_linear_init(module: nn.Linear) -> None:
    """PyTorch's own ``nn.Linear`` initialisation (Kaiming-uniform weight, uniform bias), which CLIP-VG keeps."""
    init.kaiming_uniform_(module.weight, a=math.sqrt(5))
    if module.bias is not None:
        bound = 1 / math.sqrt(module.weight.shape[1])
        init.uniform_(module.bias, -bound, bound)


def linear_input_dtype(linear: nn.Module) -> torch.dtype:
    """The dtype a linear layer takes its input in: its weight's, or fp32 for a dynamically quantised int8 layer
    (whose ``weight`` is a method returning the quantised tensor)."""
    weight = linear.weight
    return torch.float32 if callable(weight) else weight.dtype


class CLIPVGPreTrainedModel(PreTrainedModel):
    """Weight initialisation, loading and the trainable-parameter policy shared by CLIP-VG models."""

    config: CLIPVGConfig
    config_class = CLIPVGConfig
    base_model_prefix = "clip"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["CLIPVGFusionLayer", "CLIPEncoderLayer", "CLIPTextEmbeddings", "CLIPVisionEmbeddings"]
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_attention_backend = True
    # loaded in bf16 / fp16, the box head stays fp32: the final box computation is full precision
    _keep_in_fp32_modules_strict = ["box_head"]

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise the grounding modules as the official CLIP-VG code does, one module at a time.

        CLIP's own modules are initialised by ``CLIPModel`` (transformers dispatches sub-models to their own
        ``_init_weights``). Every call uses ``transformers.initialization``, which leaves loaded tensors alone, so a
        checkpoint that lacks some tensors gets exactly those initialised.
        """
        if isinstance(module, CLIPVGFusionAttention):
            # xavier-uniform over the packed (3·D, D) in-projection, zero biases, xavier-uniform out-projection
            bound = math.sqrt(6.0 / (4 * module.embed_dim))
            for proj in (module.q_proj, module.k_proj, module.v_proj):
                init.uniform_(proj.weight, -bound, bound)
                init.zeros_(proj.bias)
            init.xavier_uniform_(module.out_proj.weight)
            init.zeros_(module.out_proj.bias)
        elif isinstance(module, CLIPVGFusionLayer):
            for linear in (module.fc1, module.fc2):
                _torch_default_linear_init(linear)
                init.xavier_uniform_(linear.weight)
            for norm in (module.self_attn_layer_norm, module.final_layer_norm):
                init.ones_(norm.weight)
                init.zeros_(norm.bias)
        elif isinstance(module, CLIPVGBoxHead):
            for linear in module.layers:
                _torch_default_linear_init(linear)
        elif isinstance(module, CLIPVGForGrounding):
            _torch_default_linear_init(module.visual_proj)
            _torch_default_linear_init(module.text_proj)
            init.normal_(module.reg_token, std=1.0)
            init.normal_(module.fusion_position_embeddings.weight, std=1.0)
            # CLIPModel's `_init_weights` leaves `logit_scale` alone (as upstream transformers does); CLIP-VG never
            # uses it, but a missing one must not stay uninitialised memory
            init.constant_(module.clip.logit_scale, module.clip.config.logit_scale_init_value)

    @torch.no_grad()
    @init.guard_torch_init_functions()
    def initialize_weights(self) -> None:
        """Initialise every module not loaded from a checkpoint, each sub-model with its own ``_init_weights``.

        transformers' version skips parameter-less containers of custom-code models (such as ``CLIPAttention`` and
        ``CLIPMLP``, whose linear layers then get a generic std-0.02 normal instead of CLIP's initialisation). That
        shortcut protects initialisers that write tensors in place; CLIP's and this model's only use
        ``transformers.initialization``, so every module is visited as in a built-in transformers model.
        """
        _initialize_module_tree(self, self._initialize_weights)

    def _output_flags(
        self, output_hidden_states: bool | list[int] | None, output_attentions: bool | None, return_dict: bool | None
    ) -> tuple[bool | list[int], bool, bool]:
        """``forward``'s output switches with the config's values where not given; warns when attention weights are
        asked of an implementation that computes none."""
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if output_attentions is None:
            output_attentions = self.config.output_attentions
        if output_attentions and self.config._attn_implementation != "eager":
            logger.warning_once(
                f"output_attentions=True needs attn_implementation='eager'; {self.config._attn_implementation!r} "
                "computes no attention weights, so those entries are None."
            )
        return output_hidden_states, output_attentions, self.config.return_dict if return_dict is None else return_dict

    def apply_trainable_clip_policy(self) -> None:
        """Set ``requires_grad`` of the CLIP parameters from ``config.trainable_clip``.

        ``"official"`` trains only the visual position embedding (as the released recipe does), ``"frozen"`` none,
        ``"all"`` every CLIP parameter the grounding forward uses (not CLIP's visual projection, post-layernorm and
        logit scale, which it never touches). The grounding modules always train.
        """
        policy = self.config.trainable_clip
        clip = self.clip
        used = (
            {id(p) for p in clip.parameters()}
            - {id(p) for m in (clip.visual_projection, clip.vision_model.post_layernorm) for p in m.parameters()}
            - {id(clip.logit_scale)}
        )
        position = clip.vision_model.embeddings.position_embedding.weight
        if policy not in TRAINABLE_CLIP_POLICIES:
            raise ValueError(f"trainable_clip={policy!r} is not supported; choose one of {TRAINABLE_CLIP_POLICIES}.")
        for param in clip.parameters():
            if policy == "all":
                param.requires_grad_(id(param) in used)
            elif policy == "official":
                param.requires_grad_(param is position)
            else:  # "frozen"
                param.requires_grad_(False)
        for name, param in self.named_parameters():
            if not name.startswith("clip."):
                param.requires_grad_(True)

    @torch.no_grad()
    def to_inference_dtype(self, dtype: torch.dtype) -> "CLIPVGPreTrainedModel":
        """Cast the floating-point weights in place to ``dtype`` for inference, except the modules of
        ``_keep_in_fp32_modules_strict`` (the box head), which are left untouched, never rounded; returns the model.

        ``from_pretrained(..., dtype=torch.bfloat16)`` gives the same model directly. ``torch.qint8`` (CPU only)
        instead replaces every plain ``nn.Linear`` outside the kept modules (and outside LoRA adapters) by PyTorch's
        dynamically quantised int8 linear (int8 weights, activations quantised per call, fp32 in and out); the rest
        stays fp32.
        """
        keep = set(self._keep_in_fp32_modules_strict or ()) if dtype != torch.float32 else set()
        kept = [name for name, _ in self.named_modules() if name and name.rsplit(".", 1)[-1] in keep]
        if dtype == torch.qint8:
            return self._quantize_linears_int8(kept)
        for name, module in self.named_modules():
            if any(name == k or name.startswith(k + ".") for k in kept):
                continue
            for param in module.parameters(recurse=False):
                if param.is_floating_point() and param.dtype != dtype:
                    param.data = param.data.to(dtype)
            for key, buffer in module.named_buffers(recurse=False):
                if buffer.is_floating_point() and buffer.dtype != dtype:
                    module._buffers[key] = buffer.to(dtype)
        return self

    def _quantize_linears_int8(self, kept: list[str]) -> "CLIPVGPreTrainedModel":
        """[`to_inference_dtype`] to ``torch.qint8``: ``torch.ao.quantization.quantize_dynamic`` in place on the
        plain ``nn.Linear`` layers outside ``kept`` and outside LoRA adapters (whose wrappers read their weights)."""
        if any(param.device.type != "cpu" for param in self.parameters()):
            raise ValueError("int8 (dynamically quantised linear layers) runs on the CPU only; move the model there")
        names = {
            name
            for name, module in self.named_modules()
            if type(module) is nn.Linear
            and not any(name == k or name.startswith(k + ".") for k in kept)
            and "lora_" not in name
        }
        with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao; it still works
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor", category=UserWarning)
            from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

            quantize_dynamic(self, dict.fromkeys(names, default_dynamic_qconfig), dtype=torch.qint8, inplace=True)
        return self

    @staticmethod
    def _build_clip_towers(config: CLIPVGConfig) -> CLIPModel:
        """The CLIP towers of ``config`` (freshly initialised), with lean QuickGELU activations.

        The CLIP config shares the two tower configs; building it must keep their attention implementation (a plain
        ``CLIPConfig`` resets it to "unset", which ``CLIPModel`` then resolves to its own default).
        """
        clip_config = CLIPConfig(
            text_config=config.text_config,
            vision_config=config.vision_config,
            projection_dim=config.projection_dim,
            attn_implementation={
                "": config._attn_implementation,
                "text_config": config.text_config._attn_implementation,
                "vision_config": config.vision_config._attn_implementation,
            },
        )
        clip = CLIPModel(clip_config)
        use_lean_activations(clip)
        return clip

    @classmethod
    def from_clip_pretrained(cls, clip_name_or_path: str, **config_kwargs) -> "CLIPVGPreTrainedModel":
        """A fresh model on the weights of a transformers CLIP checkpoint (e.g. ``openai/clip-vit-base-patch16``).

        The CLIP towers come from the checkpoint and the grounding modules are newly initialised. Settings not given
        in ``config_kwargs`` default to the family's official choice for the checkpoint's sizes
        ([`_clip_config_defaults`]); ``config_kwargs`` go to the family's config class.
        """
        clip = CLIPModel.from_pretrained(clip_name_or_path)
        text, vision = clip.config.text_config, clip.config.vision_config
        cls._clip_config_defaults(clip.config, config_kwargs)
        config = cls.config_class(
            text_config=text.to_dict(),
            vision_config=vision.to_dict(),
            projection_dim=clip.config.projection_dim,
            image_size=vision.image_size,
            **config_kwargs,
        )
        model = cls(config)
        model._load_clip_weights(clip)
        model.apply_trainable_clip_policy()
        return model

    @classmethod
    def _clip_config_defaults(cls, clip_config: CLIPConfig, config_kwargs: dict) -> None:
        """CLIP-VG's defaults for [`from_clip_pretrained`], set in ``config_kwargs`` where not given: the fusion
        width is the CLIP text width, the extracted blocks the official choice for the tower's depth
        ([`default_extract_layers`])."""
        config_kwargs.setdefault("fusion_hidden_size", clip_config.text_config.hidden_size)
        config_kwargs.setdefault("extract_layers", default_extract_layers(clip_config.vision_config.num_hidden_layers))

    def _load_clip_weights(self, clip: CLIPModel) -> None:
        """Copy a pretrained CLIP's weights into ``self.clip`` (every tensor)."""
        self.clip.load_state_dict(clip.state_dict())

    def _check_inputs(self, pixel_values, input_ids, attention_mask, pixel_mask, labels, image_index=None) -> None:
        """Clear errors for shapes the model cannot take."""
        size = self.config.image_size
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != (3, size, size):
            raise ValueError(f"pixel_values must be (batch, 3, {size}, {size}), got {tuple(pixel_values.shape)}")
        batch = images = pixel_values.shape[0]
        if image_index is not None:
            if image_index.dim() != 1 or image_index.shape[0] != input_ids.shape[0]:
                raise ValueError(
                    f"image_index must be (batch={input_ids.shape[0]},), one image per expression, "
                    f"got {tuple(image_index.shape)}"
                )
            if len(image_index) and not 0 <= int(image_index.min()) <= int(image_index.max()) < images:
                raise ValueError(f"image_index values must lie in [0, {images}) (the rows of pixel_values)")
            batch = image_index.shape[0]
        if input_ids.dim() != 2 or input_ids.shape[0] != batch:
            raise ValueError(f"input_ids must be (batch={batch}, length), got {tuple(input_ids.shape)}")
        if input_ids.shape[1] > self.config.max_text_length:
            raise ValueError(
                f"input_ids has length {input_ids.shape[1]}, more than max_text_length={self.config.max_text_length}"
            )
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask {tuple(attention_mask.shape)} must match input_ids {tuple(input_ids.shape)}"
            )
        if pixel_mask is not None and tuple(pixel_mask.shape) != (images, size, size):
            raise ValueError(f"pixel_mask must be ({images}, {size}, {size}), got {tuple(pixel_mask.shape)}")
        if labels is not None and tuple(labels.shape) != (batch, 4):
            raise ValueError(f"labels must be (batch={batch}, 4) normalised (cx, cy, w, h), got {tuple(labels.shape)}")

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """Load as usual, then apply the ``trainable_clip`` policy (loading marks every parameter trainable)."""
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # a tuple with output_loading_info=True
        model.apply_trainable_clip_policy()
        return loaded

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save as usual; when registered for remote code, ``auto_map`` also names the zero-shot detection class."""
        if self._auto_class is not None:
            module = type(self).__module__.rsplit(".", 1)[-1]
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            auto_map.setdefault("AutoModelForZeroShotObjectDetection", f"{module}.{type(self).__name__}")
            self.config.auto_map = auto_map
        return super().save_pretrained(save_directory, *args, **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# Grounding model
# ----------------------------------------------------------------------------------------------------------------
class CLIPVGForGrounding(CLIPVGPreTrainedModel):
    """CLIP-VG: predicts the box a referring expression describes, one box per (image, expression) pair."""

    def __init__(self, config: CLIPVGConfig):
        # from_pretrained sets its config keyword arguments (trainable_clip="all") after the config's own checks
        config.validate()
        super().__init__(config)
        self.clip = self._build_clip_towers(config)
        hidden = config.fusion_hidden_size
        vision_width = config.vision_config.hidden_size
        self.visual_proj = nn.Linear(len(config.extract_layers) * vision_width, hidden)
        self.text_proj = nn.Linear(config.projection_dim, hidden)
        self.reg_token = nn.Parameter(torch.empty(1, hidden))
        self.fusion_position_embeddings = nn.Embedding(config.num_fusion_positions, hidden)
        self.fusion = CLIPVGFusionEncoder(config)
        self.box_head = CLIPVGBoxHead(hidden)
        self.post_init()
        self.apply_trainable_clip_policy()

    # -- transformers' feature API (as CLIPModel) ------------------------------------------------------------------
    def get_input_embeddings(self) -> nn.Module:
        """The CLIP text tower's token embedding."""
        return self.clip.text_model.embeddings.token_embedding

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.clip.text_model.embeddings.token_embedding = value

    @can_return_tuple
    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        """CLIP's text features, as [`CLIPModel.get_text_features`]: the text tower's output with the projected
        end-of-text embedding as ``pooler_output``. For the per-token features CLIP-VG grounds with, see
        [`get_text_token_features`].
        """
        return self.clip.get_text_features(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, return_dict=True, **kwargs
        )

    @can_return_tuple
    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        pixel_mask: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        """CLIP's image features, as [`CLIPModel.get_image_features`]: the vision tower's output with the projected
        CLS embedding as ``pooler_output``. ``pixel_mask`` is accepted so that image-processor outputs can be passed
        as they are; the CLIP vision tower attends to every patch (as in CLIP-VG), so it does not change the result.
        For the multi-level features CLIP-VG grounds with, see [`get_multilevel_visual_features`].
        """
        return self.clip.get_image_features(
            pixel_values=pixel_values.to(self.clip.dtype),
            interpolate_pos_encoding=interpolate_pos_encoding,
            return_dict=True,
            **kwargs,
        )

    # -- the three CLIP-VG stages, usable on their own (e.g. to encode an image once for several expressions) ------
    def get_multilevel_visual_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Multi-level visual feature (B, 1 + num_patches, len(extract_layers) * width): raw block outputs."""
        return self._encode_image(pixel_values)[0]

    def get_text_token_features(self, input_ids: torch.Tensor) -> torch.Tensor:
        """CLIP text features of every token (B, L, projection_dim), computed with the causal mask only.

        No padding mask enters the text tower (as in the official model); under the causal mask the real tokens
        never see the padding, so the pad id does not matter.
        """
        return self._encode_text(input_ids)[0]

    def _encode_image(
        self, pixel_values: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """The multi-level visual feature and, when asked, the vision tower's attention weights."""
        vision = self.clip.vision_model
        if output_attentions:  # the whole tower, through its own forward, which records the weights
            out = vision(pixel_values.to(self.clip.dtype), output_hidden_states=True, output_attentions=True)
            features = torch.cat([out.hidden_states[i + 1] for i in self.config.extract_layers], dim=-1)
            return features, out.attentions
        hidden_states = vision.pre_layrnorm(vision.embeddings(pixel_values.to(self.clip.dtype)))
        wanted = self.config.extract_layers
        collected = []
        for index, layer in enumerate(vision.encoder.layers[: max(wanted) + 1]):
            hidden_states = layer(hidden_states, None)
            if index in wanted:
                collected.append(hidden_states)
        return torch.cat(collected, dim=-1), None

    def _encode_text(
        self, input_ids: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """Per-token projected text features and, when asked, the text tower's attention weights."""
        text_model = self.clip.text_model
        needs_grad = torch.is_grad_enabled() and any(p.requires_grad for p in text_model.parameters())
        with torch.set_grad_enabled(needs_grad):
            out = text_model(input_ids=input_ids, output_attentions=output_attentions)
            return self.clip.text_projection(out.last_hidden_state), out.attentions if output_attentions else None

    def ground(
        self,
        visual_features: torch.Tensor,
        text_features: torch.Tensor,
        text_padding_mask: torch.Tensor,
        patch_padding: torch.Tensor,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None, tuple[torch.Tensor | None, ...] | None]:
        """Fuse the two modalities and regress the box; masks are True where a token is padding.

        Returns the boxes (B, 4), and the fusion's hidden states and attention weights when asked (else None).
        """
        visual = self.project_visual_features(visual_features)
        return self.ground_projected(
            visual, text_features, text_padding_mask, patch_padding, output_hidden_states, output_attentions
        )

    def project_visual_features(self, visual_features: torch.Tensor) -> torch.Tensor:
        """Multi-level visual feature -> fusion-width visual tokens (B, 1 + num_patches, fusion_hidden_size).

        Depends on the image only, so callers grounding several expressions per image can project once per image.
        """
        return self.visual_proj(visual_features.to(linear_input_dtype(self.visual_proj)))

    def ground_projected(
        self,
        visual_tokens: torch.Tensor,
        text_features: torch.Tensor,
        text_padding_mask: torch.Tensor,
        patch_padding: torch.Tensor,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None, tuple[torch.Tensor | None, ...] | None]:
        """[`ground`] after [`project_visual_features`]: fuse and regress the box."""
        batch_size, text_length = text_features.shape[:2]
        visual = visual_tokens
        text = self.text_proj(text_features.to(linear_input_dtype(self.text_proj)))
        reg = self.reg_token.unsqueeze(0).expand(batch_size, -1, -1)
        hidden_states = torch.cat([reg, text, visual], dim=1)

        device = hidden_states.device
        position_embeddings = self.fusion_positions(
            torch.arange(text_length, device=device), torch.arange(visual.shape[1], device=device)
        ).unsqueeze(0)

        never = torch.zeros(batch_size, 1, dtype=torch.bool, device=device)
        padding = torch.cat([never, text_padding_mask.to(torch.bool), never, patch_padding.to(torch.bool)], dim=1)
        attention_mask = torch.zeros(padding.shape, dtype=hidden_states.dtype, device=device)
        attention_mask = attention_mask.masked_fill(padding, torch.finfo(hidden_states.dtype).min)[:, None, None, :]

        hidden_states, all_states, all_attentions = self.fusion(
            hidden_states,
            position_embeddings,
            attention_mask,
            output_hidden_states,
            first_token_only=True,
            output_attentions=output_attentions,
        )
        return self.box_head(hidden_states[:, 0]), all_states, all_attentions

    def fusion_positions(self, text_columns: torch.Tensor, visual_columns: torch.Tensor) -> torch.Tensor:
        """Position embeddings of [REG], then text tokens, then visual tokens, each at its sequence slot: [REG] 0,
        text column ``c`` at ``1 + c``, visual column ``c`` at ``1 + max_text_length + c`` (after the full text
        context, whatever the text length)."""
        slots = torch.cat(
            [text_columns.new_zeros(1), text_columns + 1, visual_columns + 1 + self.config.max_text_length]
        )
        return self.fusion_position_embeddings(slots)

    def ground_packed(
        self,
        visual_tokens: torch.Tensor,
        text_features: torch.Tensor,
        text_padding_mask: torch.Tensor,
        patch_padding: torch.Tensor,
        image_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """[`ground_projected`]'s boxes (E, 4) without computing the tokens that every fusion layer masks.

        Padded text tokens and letterbox-padded patches are never attended to, so they are left out of the fusion
        instead of being masked: each expression's sequence holds [REG], its real text tokens and its image's visual
        CLS and real patches (same boxes, within float rounding). ``visual_tokens`` (I, 1 + P, D) and
        ``patch_padding`` (I, P) are per image and ``image_index`` (E,) gives each expression's image (default: one
        image per expression); the first fusion layer then projects each image's visual tokens once.
        """
        device = visual_tokens.device
        num_images = visual_tokens.shape[0]
        image_index = (
            torch.arange(num_images, device=device) if image_index is None else image_index.to(device, torch.long)
        )
        count = image_index.shape[0]
        if count == 0:
            return self.box_head(visual_tokens.new_zeros(0, visual_tokens.shape[-1]))
        keep_text = ~text_padding_mask.to(device, torch.bool)
        keep_visual = torch.cat(
            [torch.ones(num_images, 1, dtype=torch.bool, device=device), ~patch_padding.to(device, torch.bool)], dim=1
        )
        text = self.text_proj(text_features[keep_text].to(linear_input_dtype(self.text_proj)))
        unique_states = torch.cat([self.reg_token, text, visual_tokens[keep_visual]])
        unique_positions = self.fusion_positions(keep_text.nonzero()[:, 1], keep_visual.nonzero()[:, 1])
        layout, gather = expression_layout(keep_text.sum(1), keep_visual.sum(1), image_index)
        hidden_states = self.fusion.forward_packed(unique_states, unique_positions, gather, layout)
        return self.box_head(hidden_states)

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | list[int] | None = None,
        return_dict: bool | None = None,
        image_index: torch.Tensor | None = None,
    ) -> CLIPVGGroundingOutput | tuple:
        r"""Predict one box per (image, expression).

        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, image_size, image_size)`):
                letterboxed images from [`CLIPVGImageProcessor`].
            input_ids (`torch.LongTensor` of shape `(batch_size, text_length)`):
                CLIP token ids, ``text_length <= config.max_text_length``; any pad id.
            attention_mask (`torch.LongTensor` of shape `(batch_size, text_length)`, *optional*):
                1 for real tokens, 0 for padding; all ones when omitted.
            pixel_mask (`torch.LongTensor` of shape `(batch_size, image_size, image_size)`, *optional*):
                1 for real pixels, 0 for letterbox padding; all ones when omitted.
            labels (`torch.FloatTensor` of shape `(batch_size, 4)`, *optional*):
                target boxes, normalised (cx, cy, w, h) on the canvas; the loss is returned when given.
            output_attentions (`bool`, *optional*):
                return the attention weights of the fusion layers and of both CLIP towers; they exist with
                ``attn_implementation="eager"`` only (SDPA computes no weights and gives ``None`` entries).
            output_hidden_states (`bool` or `list[int]`, *optional*):
                return the fusion hidden states and CLIP-VG's intermediate features and patch mask; a list of
                indices (negative ones count from the end) keeps only those fusion states, the others are None.
            image_index (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
                when given, `pixel_values` and `pixel_mask` hold `num_images` distinct images and expression `i` is
                grounded in image `image_index[i]`: each image is encoded once for all its expressions (same boxes
                as repeating the image per expression). `batch_size` is then the number of expressions.
        """
        output_hidden_states, output_attentions, return_dict = self._output_flags(
            output_hidden_states, output_attentions, return_dict
        )
        self._check_inputs(pixel_values, input_ids, attention_mask, pixel_mask, labels, image_index)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if pixel_mask is None:
            pixel_mask = torch.ones(pixel_values.shape[0], *pixel_values.shape[2:], device=pixel_values.device)

        visual_features, vision_attentions = self._encode_image(pixel_values, output_attentions)
        text_features, text_attentions = self._encode_text(input_ids, output_attentions)
        patch_padding = patch_padding_mask(pixel_mask, self.config.num_patches_per_side)
        visual_tokens = self.project_visual_features(visual_features)
        # packed: nothing padded is computed; the sequence lengths depend on the masks' values, which graph
        # capture (torch.export, torch.compile of the whole model) cannot follow, so it gets the masked layout
        if not (output_hidden_states or output_attentions or torch.compiler.is_compiling()):
            boxes = self.ground_packed(visual_tokens, text_features, attention_mask == 0, patch_padding, image_index)
            fusion_states = fusion_attentions = None
        else:  # the padded layout that hidden states and attention maps are returned in
            if image_index is not None:  # one row per expression from here on
                rows = image_index.to(visual_tokens.device, torch.long)
                visual_features, visual_tokens = visual_features[rows], visual_tokens[rows]
                patch_padding = patch_padding[rows]
            boxes, fusion_states, fusion_attentions = self.ground_projected(
                visual_tokens,
                text_features,
                attention_mask == 0,
                patch_padding,
                bool(output_hidden_states),
                output_attentions,
            )
        if isinstance(output_hidden_states, (list, tuple)) and fusion_states is not None:
            kept = {index % len(fusion_states) for index in output_hidden_states}
            fusion_states = tuple(state if i in kept else None for i, state in enumerate(fusion_states))

        loss = loss_dict = None
        if labels is not None:
            terms = grounding_loss(boxes.float(), labels.to(boxes.device, torch.float32))
            loss = terms.pop("loss")
            loss_dict = terms
        output = CLIPVGGroundingOutput(
            loss=loss,
            loss_dict=loss_dict,
            pred_boxes=boxes.unsqueeze(1),
            visual_features=visual_features if output_hidden_states else None,
            text_features=text_features if output_hidden_states else None,
            patch_attention_mask=(~patch_padding).long() if output_hidden_states else None,
            hidden_states=fusion_states,
            attentions=fusion_attentions,
            vision_attentions=vision_attentions,
            text_attentions=text_attentions,
        )
        return output if return_dict else output.to_tuple()
