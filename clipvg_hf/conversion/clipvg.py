"""Convert an official CLIP-VG checkpoint (``checkpoint.pth`` / ``best_checkpoint.pth``) into a [`CLIPVGForGrounding`].

    clipvg-convert-checkpoint --checkpoint best_checkpoint.pth --output_dir clip-vg-refcoco

The checkpoint is read by :func:`~clipvg_hf.conversion.common.load_original_checkpoint`. The CLIP variant and every
size are inferred from the state dict;
each key is mapped (OpenAI CLIP layout -> transformers CLIP, packed attention projections split into q/k/v) and a key
that cannot be mapped is an error. The CLIP aliases the official model registers a second time and its unused
``visu_proj`` layer are dropped, and the converter says so.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch

from ..configuration_clipvg import CLIPVGConfig
from ..modeling_clipvg import CLIPVGForGrounding
from .common import (
    CheckpointConversionError,
    check_finite,
    count_blocks,
    load_converted_weights,
    load_original_checkpoint,
)

logger = logging.getLogger(__name__)

__all__ = ["config_from_state_dict", "convert_checkpoint", "convert_state_dict", "is_clipvg_state_dict", "summary"]

# Blocks whose outputs the official model concatenates, by CLIP variant (``--model`` of the official scripts).
_EXTRACT_LAYERS = {"ViT-L/14": [0, 7, 15, 23], "ViT-B/32": [0, 3, 7, 11], "ViT-B/16": [0, 3, 7, 11]}
_ALIAS_PREFIXES = ("image_encoder_clip_vg.", "text_encoder_clip_vg.")
_DROPPED = ("visu_proj.weight", "visu_proj.bias")


_REQUIRED = (
    "clip.visual.conv1.weight",
    "clip.visual.positional_embedding",
    "clip.token_embedding.weight",
    "clip.positional_embedding",
    "clip.text_projection",
    "clip.ln_final.weight",
    "text_proj.weight",
    "ml_visu_proj.weight",
    "vl_pos_embed.weight",
    "vl_transformer.encoder.layers.0.linear1.weight",
)


def is_clipvg_state_dict(state_dict: dict[str, torch.Tensor]) -> bool:
    """Whether an official state dict has the keys every CLIP-VG one has (OpenAI CLIP names, the fusion encoder)."""
    return all(key in state_dict for key in _REQUIRED)


def _check_required(state_dict: dict[str, torch.Tensor]) -> None:
    """The keys every CLIP-VG state dict has (a foreign checkpoint is named as such, not by its first odd key)."""
    missing = [key for key in _REQUIRED if key not in state_dict]
    if missing:
        raise CheckpointConversionError(f"not a CLIP-VG state dict: missing {missing}")


def config_from_state_dict(
    state_dict: dict[str, torch.Tensor], args: Any = None, fusion_num_heads: int | None = None
) -> CLIPVGConfig:
    """Infer every size of the model from the official state dict (and the training ``args`` where stored).

    The one size the weights cannot tell is the fusion transformer's head count (``args.vl_nheads``): a checkpoint
    without ``args`` needs ``fusion_num_heads``; a value that disagrees with the stored one is an error.
    """
    _check_required(state_dict)
    vision_width, _, patch, _ = state_dict["clip.visual.conv1.weight"].shape
    grid = round((state_dict["clip.visual.positional_embedding"].shape[0] - 1) ** 0.5)
    if grid * grid + 1 != state_dict["clip.visual.positional_embedding"].shape[0]:
        raise CheckpointConversionError("the visual position table is not 1 + grid**2 long")
    vision_layers = count_blocks(state_dict, "clip.visual.transformer.resblocks.")
    text_layers = count_blocks(state_dict, "clip.transformer.resblocks.")
    vocab, text_width = state_dict["clip.token_embedding.weight"].shape
    context = state_dict["clip.positional_embedding"].shape[0]
    projection = state_dict["clip.text_projection"].shape[1]
    fusion_hidden = state_dict["text_proj.weight"].shape[0]
    fusion_ffn = state_dict["vl_transformer.encoder.layers.0.linear1.weight"].shape[0]
    fusion_layers = count_blocks(state_dict, "vl_transformer.encoder.layers.")
    variant = getattr(args, "model", None) or ("ViT-L/14" if vision_layers == 24 else f"ViT-B/{patch}")
    extract = _EXTRACT_LAYERS.get(variant, [0, 3, 7, 11] if vision_layers == 12 else None)
    if extract is None or state_dict["ml_visu_proj.weight"].shape[1] != len(extract) * vision_width:
        raise CheckpointConversionError(
            f"cannot tell which vision blocks feed ml_visu_proj ({tuple(state_dict['ml_visu_proj.weight'].shape)}) "
            f"for a {vision_layers}-layer, width-{vision_width} vision tower"
        )
    fusion_heads = _fusion_heads(getattr(args, "vl_nheads", None), fusion_num_heads, fusion_hidden)
    positions = state_dict["vl_pos_embed.weight"].shape[0]
    max_text_length = int(getattr(args, "max_query_len", None) or positions - 2 - grid * grid)
    config = CLIPVGConfig(
        text_config={
            "vocab_size": vocab,
            "hidden_size": text_width,
            "intermediate_size": state_dict["clip.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
            "num_hidden_layers": text_layers,
            "num_attention_heads": max(1, text_width // 64),
            "max_position_embeddings": context,
            "projection_dim": projection,
        },
        vision_config={
            "hidden_size": vision_width,
            "num_hidden_layers": vision_layers,
            "intermediate_size": state_dict["clip.visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
            "num_attention_heads": max(1, vision_width // 64),
            "patch_size": patch,
            "image_size": patch * grid,
            "projection_dim": projection,
        },
        projection_dim=projection,
        extract_layers=extract,
        fusion_hidden_size=fusion_hidden,
        fusion_num_layers=fusion_layers,
        fusion_num_heads=int(fusion_heads),
        fusion_intermediate_size=fusion_ffn,
        fusion_dropout=float(getattr(args, "vl_dropout", 0.1)),
        max_text_length=max_text_length,
        image_size=patch * grid,
    )
    if state_dict["vl_pos_embed.weight"].shape[0] != config.num_fusion_positions:
        raise CheckpointConversionError(
            f"vl_pos_embed has {state_dict['vl_pos_embed.weight'].shape[0]} rows, expected "
            f"1 + {max_text_length} + 1 + {grid}**2 = {config.num_fusion_positions}"
        )
    return config


def _fusion_heads(stored: Any, given: int | None, hidden: int) -> int:
    """The fusion head count: stored in the checkpoint's args or given; never guessed."""
    if stored is None and given is None:
        raise CheckpointConversionError(
            "the checkpoint stores no training args (args.vl_nheads), and the number of fusion attention heads "
            "cannot be read from the weights; pass --fusion_num_heads N (the official default is 8)"
        )
    if stored is not None and given is not None and int(stored) != given:
        raise CheckpointConversionError(
            f"--fusion_num_heads {given} disagrees with the checkpoint's args.vl_nheads {int(stored)}"
        )
    heads = int(stored if stored is not None else given)
    if heads < 1 or hidden % heads:
        raise CheckpointConversionError(f"{heads} fusion heads do not divide the fusion width {hidden}")
    return heads


def _clip_block_rules(source: str, target: str) -> list[tuple[str, str]]:
    return [
        (rf"{source}(\d+)\.ln_1\.", rf"{target}\1.layer_norm1."),
        (rf"{source}(\d+)\.ln_2\.", rf"{target}\1.layer_norm2."),
        (rf"{source}(\d+)\.attn\.out_proj\.", rf"{target}\1.self_attn.out_proj."),
        (rf"{source}(\d+)\.mlp\.c_fc\.", rf"{target}\1.mlp.fc1."),
        (rf"{source}(\d+)\.mlp\.c_proj\.", rf"{target}\1.mlp.fc2."),
    ]


# Renames (regular expression on the official key -> transformers key); packed attention and transposed
# projections are handled separately.
_RENAMES = [
    (r"clip\.visual\.conv1\.weight", "clip.vision_model.embeddings.patch_embedding.weight"),
    (r"clip\.visual\.class_embedding", "clip.vision_model.embeddings.class_embedding"),
    (r"clip\.visual\.positional_embedding", "clip.vision_model.embeddings.position_embedding.weight"),
    (r"clip\.visual\.ln_pre\.", "clip.vision_model.pre_layrnorm."),
    (r"clip\.visual\.ln_post\.", "clip.vision_model.post_layernorm."),
    (r"clip\.token_embedding\.weight", "clip.text_model.embeddings.token_embedding.weight"),
    (r"clip\.positional_embedding", "clip.text_model.embeddings.position_embedding.weight"),
    (r"clip\.ln_final\.", "clip.text_model.final_layer_norm."),
    (r"clip\.logit_scale", "clip.logit_scale"),
    *_clip_block_rules(r"clip\.visual\.transformer\.resblocks\.", "clip.vision_model.encoder.layers."),
    *_clip_block_rules(r"clip\.transformer\.resblocks\.", "clip.text_model.encoder.layers."),
    (r"ml_visu_proj\.", "visual_proj."),
    (r"text_proj\.", "text_proj."),
    (r"vl_pos_embed\.weight", "fusion_position_embeddings.weight"),
    (r"vl_transformer\.encoder\.layers\.(\d+)\.self_attn\.out_proj\.", r"fusion.layers.\1.self_attn.out_proj."),
    (r"vl_transformer\.encoder\.layers\.(\d+)\.linear1\.", r"fusion.layers.\1.fc1."),
    (r"vl_transformer\.encoder\.layers\.(\d+)\.linear2\.", r"fusion.layers.\1.fc2."),
    (r"vl_transformer\.encoder\.layers\.(\d+)\.norm1\.", r"fusion.layers.\1.self_attn_layer_norm."),
    (r"vl_transformer\.encoder\.layers\.(\d+)\.norm2\.", r"fusion.layers.\1.final_layer_norm."),
    (r"bbox_embed\.layers\.", "box_head.layers."),
]
# Packed attention in-projections (q, k, v stacked along dim 0) -> the prefix of separate q/k/v projections.
_PACKED = [
    (
        r"clip\.visual\.transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)",
        r"clip.vision_model.encoder.layers.\1.self_attn.",
    ),
    (
        r"clip\.transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)",
        r"clip.text_model.encoder.layers.\1.self_attn.",
    ),
    (r"vl_transformer\.encoder\.layers\.(\d+)\.self_attn\.in_proj_(weight|bias)", r"fusion.layers.\1.self_attn."),
]
_TRANSPOSED = {
    "clip.text_projection": "clip.text_projection.weight",
    "clip.visual.proj": "clip.visual_projection.weight",
}


def convert_state_dict(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map an official state dict to this package's names. Returns (new state dict, dropped keys).

    Raises [`CheckpointConversionError`] naming every key that no rule maps.
    """
    converted: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    unmapped: list[str] = []
    for key, tensor in state_dict.items():
        if key.startswith(_ALIAS_PREFIXES) or key in _DROPPED:
            dropped.append(key)
            continue
        if key == "reg_token.weight":
            converted["reg_token"] = tensor
            continue
        if key in _TRANSPOSED:
            converted[_TRANSPOSED[key]] = tensor.t().contiguous()
            continue
        packed = next(((m, t) for p, t in _PACKED if (m := re.fullmatch(p, key))), None)
        if packed is not None:
            match, target = packed
            prefix, kind = match.expand(target), match.group(2)
            for name, chunk in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0)):
                converted[f"{prefix}{name}.{kind}"] = chunk
            continue
        for pattern, replacement in _RENAMES:
            if re.match(pattern, key):
                converted[re.sub(pattern, replacement, key, count=1)] = tensor
                break
        else:
            unmapped.append(key)
    if unmapped:
        raise CheckpointConversionError(f"{len(unmapped)} checkpoint keys cannot be mapped: {unmapped}")
    return converted, dropped


def convert_checkpoint(
    path: str | Path | None = None,
    trainable_clip: str = "official",
    fusion_num_heads: int | None = None,
    *,
    checkpoint: dict[str, Any] | None = None,
) -> CLIPVGForGrounding:
    """Build a [`CLIPVGForGrounding`] holding exactly the weights of an official checkpoint (a path or a dict that
    [`load_original_checkpoint`] returned; ``path`` then only names it in errors).

    ``fusion_num_heads`` is needed only for a checkpoint without its training ``args`` (see
    :func:`config_from_state_dict`).
    """
    if checkpoint is None:
        checkpoint = load_original_checkpoint(path)
    state_dict = checkpoint["model"]
    check_finite(state_dict, path)
    _check_required(state_dict)
    converted, dropped = convert_state_dict(state_dict)  # unmappable keys before sizes: they say what the file is
    config = config_from_state_dict(state_dict, checkpoint.get("args"), fusion_num_heads)
    config.trainable_clip = trainable_clip
    model = CLIPVGForGrounding(config)
    load_converted_weights(model, converted, path)
    n_alias = sum(key.startswith(_ALIAS_PREFIXES) for key in dropped)
    logger.info(
        "dropped %d alias keys (the same CLIP tensors registered twice) and %s (unused by the model)",
        n_alias,
        [k for k in dropped if k in _DROPPED],
    )
    model.eval()
    return model


def summary(model: CLIPVGForGrounding) -> str:
    """What the command prints about a converted model."""
    n_params = sum(p.numel() for p in model.parameters())
    return f"{n_params:,} parameters, config {model.config.vision_config.patch_size=}, {model.config.extract_layers=}"
