"""Convert an official HiVG checkpoint (``best_checkpoint.pth``) into a [`HiVGForGrounding`].

    clipvg-convert-checkpoint --checkpoint best_checkpoint.pth --output_dir hivg-b-refcoco --clip_config config.json

The checkpoint is read by :func:`~clipvg_hf.conversion.common.load_original_checkpoint`. The official model re-wraps CLIP in peft once per HiLoRA stage, so its keys carry ``base_model.model.`` once per
stage; the depth is read from the keys (never from a flag). Every size, the bridged blocks and the text layers the
bridges read are inferred from the state dict, the bridge text source (adaptive vs mixup) from the stored training
arguments. ``position_ids`` buffers and the modules the official forward never uses are dropped, and the converter
says so; any other key that no rule maps is an error naming it. LoRA is kept as peft adapters, or merged into the
weights with ``--merge_lora`` (a plain model that loads without peft).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path
from typing import Any

import torch
from huggingface_hub.errors import StrictDataclassError
from transformers import CLIPTextConfig, CLIPVisionConfig
from transformers.activations import ACT2FN

from ..configuration_hivg import BRIDGE_TEXT_SOURCES, HiVGConfig, default_bridge_text_layers
from ..modeling_hivg import HiVGForGrounding
from .clipvg import _RENAMES as _CLIPVG_RENAMES
from .common import (
    CheckpointConversionError,
    check_finite,
    count_blocks,
    load_converted_weights,
    load_original_checkpoint,
)

logger = logging.getLogger(__name__)

__all__ = [
    "OPTIONS",
    "add_hivg_arguments",
    "config_from_state_dict",
    "convert_checkpoint",
    "convert_official",
    "convert_state_dict",
    "is_hivg_state_dict",
    "peft_nesting_depth",
    "read_clip_config",
    "strip_peft_prefix",
    "summary",
]

#: The converter options only HiVG takes (name -> the value that means "not given").
OPTIONS = {"merge_lora": False, "clip_config": None, "bridge_text_source": None, "bridge_batch_mixing": False}

_PEFT_PREFIX = re.compile(r"^clip\.((?:base_model\.model\.)*)")
#: Vision blocks whose outputs the official model concatenates, by ``--model`` (0-based block indices).
_EXTRACT_LAYERS = {
    "ViT-B/16": [0, 3, 7, 11],
    "ViT-B/32": [0, 3, 7, 11],
    "ViT-L/14": [5, 11, 17, 23],
    "ViT-L/14-336": [11, 15, 19, 23],
}
#: Defined by the official model but never used by its forward.
_UNUSED = (
    "ml_text_feat_perceiver.weight",
    "ml_text_feat_perceiver.bias",
    "reg_pos_embed.weight",
    "condition_text_pos_embed.weight",
)
_LORA_LINEAR = re.compile(r"((?:clip|bridges)\..*\.(?:self_attn|cross_attn)\.(?:q|k|v|out)_proj)\.(weight|bias)$")
_BRIDGE = re.compile(r"clip\.vision_model\.encoder\.layers\.(\d+)\.cross_(norm|attn|mlp|gate|adaptive_weights)\.(.+)$")
# CLIP-VG and HiVG share the fusion encoder layers and the box head (and their names)
_CLIPVG_FUSION_RULES = [rule for rule in _CLIPVG_RENAMES if rule[0].startswith((r"vl_transformer", r"bbox_embed"))]
_RENAMES = [
    (r"visu_proj\.", "visual_proj."),
    (r"ml_visual_projection\.", "multilevel_proj."),
    (r"text_proj\.", "text_proj."),
    (r"condition_text_proj\.", "condition_text_proj."),
    (r"vl_pos_embed\.weight", "fusion_position_embeddings.weight"),
    *_CLIPVG_FUSION_RULES,
    (r"vl_transformer\.encoder\.norm\.", "fusion.layer_norm."),
    (r"visu_token_norm\.", "token_norm."),
    (r"visu_token_mlp\.", "token_mlp."),
    (r"seg_conv1\.weight", "seg_head.0.weight"),
    (r"seg_conv2\.weight", "seg_head.1.weight"),
    (r"seg_conv3\.weight", "seg_head.2.weight"),
    (r"clip\.(logit_scale|text_model\.|vision_model\.|visual_projection\.|text_projection\.)", r"clip.\1"),
]
_BRIDGE_PARTS = {"norm": "norm", "attn": "cross_attn", "mlp": "mlp", "gate": "gate"}
_PACKED = re.compile(r"vl_transformer\.encoder\.layers\.(\d+)\.self_attn\.in_proj_(weight|bias)$")


def is_hivg_state_dict(state_dict: dict[str, torch.Tensor]) -> bool:
    """Whether an official state dict is HiVG's (Hugging Face CLIP names, bridges) rather than CLIP-VG's."""
    return any(_PEFT_PREFIX.match(key) and ".cross_norm." in key for key in state_dict)


def peft_nesting_depth(state_dict: dict[str, torch.Tensor]) -> int:
    """How many times ``base_model.model.`` follows ``clip.`` (HiLoRA stage + 1); the same for every CLIP key."""
    depths = {len(m.group(1)) // len("base_model.model.") for key in state_dict if (m := _PEFT_PREFIX.match(key))}
    if len(depths) != 1:
        raise CheckpointConversionError(
            f"CLIP keys are nested at different peft depths {sorted(depths)} (expected one 'base_model.model.' per "
            f"HiLoRA stage plus one, the same for every key)"
        )
    return depths.pop()


def strip_peft_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict with ``clip.(base_model.model.)*`` shortened to ``clip.``."""
    peft_nesting_depth(state_dict)
    return {_PEFT_PREFIX.sub("clip.", key, count=1): value for key, value in state_dict.items()}


def _bridge_layers(state_dict: dict[str, torch.Tensor]) -> list[int]:
    return sorted({int(m.group(1)) for key in state_dict if (m := _BRIDGE.match(key)) and m.group(2) == "norm"})


def _n_adaptive_weights(state_dict: dict[str, torch.Tensor], layer: int) -> int:
    prefix = f"clip.vision_model.encoder.layers.{layer}.cross_adaptive_weights."
    return count_blocks(state_dict, prefix)


_TOWER_CONFIGS = {"text": CLIPTextConfig, "vision": CLIPVisionConfig}


def read_clip_config(path: str | Path) -> dict[str, Any]:
    """Read a Hugging Face CLIP ``config.json`` (``--clip_config``), whose head counts HiVG conversion takes.

    Raises :class:`CheckpointConversionError` naming the flag and the file when it cannot be read, is not JSON, is
    not a CLIP config (``text_config`` and ``vision_config`` objects) or holds a value the towers cannot take.
    """
    where = f"--clip_config {path}"
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointConversionError(f"{where}: no such file") from None
    except OSError as error:
        raise CheckpointConversionError(f"{where}: cannot be read: {error.strerror or error}") from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        raise CheckpointConversionError(f"{where}: not a JSON file: {error}") from None
    towers = ("text_config", "vision_config")
    if not isinstance(config, dict) or not all(isinstance(config.get(tower), dict) for tower in towers):
        raise CheckpointConversionError(
            f"{where}: not a Hugging Face CLIP config.json (expected text_config and vision_config objects)"
        )
    try:
        for tower in _TOWER_CONFIGS:
            _tower_settings(config, tower)
    except CheckpointConversionError as error:
        raise CheckpointConversionError(f"{where}: {error}") from None
    return config


def _tower_settings(clip_config: dict | None, tower: str) -> dict[str, Any]:
    """Head count, activation and layer-norm eps of one CLIP tower, read from ``clip_config`` as transformers reads
    a ``config.json`` (a key it omits has the default of ``CLIPTextConfig`` / ``CLIPVisionConfig``), never guessed
    from the widths. Without ``clip_config`` the head counts are unknown: an error."""
    if clip_config is None:
        raise CheckpointConversionError(
            "the checkpoint does not hold CLIP's attention head counts: pass --clip_config, the config.json of "
            "the Hugging Face CLIP the model was built on (e.g. openai/clip-vit-base-patch16)"
        )
    given = clip_config.get(f"{tower}_config") or {}
    defaults = _TOWER_CONFIGS[tower]()
    heads = given.get("num_attention_heads", defaults.num_attention_heads)
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
        raise CheckpointConversionError(f"{tower}_config.num_attention_heads is {heads!r}, not a positive integer")
    settings = {"num_attention_heads": heads}
    if "hidden_act" in given:
        if not isinstance(given["hidden_act"], str) or given["hidden_act"] not in ACT2FN:
            raise CheckpointConversionError(
                f"{tower}_config.hidden_act is {given['hidden_act']!r}, not an activation transformers knows"
            )
        settings["hidden_act"] = given["hidden_act"]
    if "layer_norm_eps" in given:
        eps = given["layer_norm_eps"]
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
            raise CheckpointConversionError(f"{tower}_config.layer_norm_eps is {eps!r}, not a number in (0, 1)")
        settings["layer_norm_eps"] = float(eps)
    return settings


def config_from_state_dict(
    state_dict: dict[str, torch.Tensor],
    args: Any = None,
    clip_config: dict | None = None,
    bridge_text_source: str | None = None,
    fusion_num_heads: int | None = None,
) -> HiVGConfig:
    """Infer the HiVG configuration from a state dict with the peft prefix stripped (see [`strip_peft_prefix`]).

    ``clip_config`` is the ``config.json`` of the Hugging Face CLIP the model was built on; only its attention head
    counts, activation and layer-norm eps matter (shapes cannot tell them, so it is required; a key it omits has
    transformers' CLIP default, as when the file is loaded). ``bridge_text_source`` overrides what the training ``args`` say (``mixup_pretrain``);
    ``fusion_num_heads`` is needed when no ``args`` are stored (the weights cannot tell it).
    """
    required = [
        "clip.vision_model.embeddings.patch_embedding.weight",
        "clip.text_model.embeddings.token_embedding.weight",
        "clip.text_projection.weight",
        "multilevel_proj.weight",
        "text_proj.weight",
        "fusion_position_embeddings.weight",
        "fusion.layers.0.fc1.weight",
    ]
    missing = [key for key in required if key not in state_dict]
    if missing:
        raise CheckpointConversionError(f"not a HiVG state dict: missing {missing}")
    vision_width, _, patch, _ = state_dict["clip.vision_model.embeddings.patch_embedding.weight"].shape
    n_positions = state_dict["clip.vision_model.embeddings.position_embedding.weight"].shape[0]
    grid = round((n_positions - 1) ** 0.5)
    vision_layers = count_blocks(state_dict, "clip.vision_model.encoder.layers.")
    vocab, text_width = state_dict["clip.text_model.embeddings.token_embedding.weight"].shape
    context = state_dict["clip.text_model.embeddings.position_embedding.weight"].shape[0]
    text_layers = count_blocks(state_dict, "clip.text_model.encoder.layers.")
    projection = state_dict["clip.text_projection.weight"].shape[0]

    bridges = _bridge_layers(state_dict)
    counts = {_n_adaptive_weights(state_dict, layer) for layer in bridges}
    if len(counts) > 1:
        raise CheckpointConversionError(f"the bridges hold different numbers of cross_adaptive_weights: {counts}")
    n_text = counts.pop() if counts else 1
    by_count = {text_layers: list(range(1, text_layers + 1)), 2: [text_layers // 2, text_layers], 1: [text_layers]}
    if n_text not in by_count:
        raise CheckpointConversionError(
            f"{n_text} cross_adaptive_weights per bridge match no official text-layer list"
        )
    text_layer_list = by_count[n_text]
    for layer in bridges:
        gate = state_dict.get(f"clip.vision_model.encoder.layers.{layer}.cross_gate.weight")
        if gate is not None and gate.shape[1] != n_text * text_width:
            raise CheckpointConversionError(
                f"cross_gate of block {layer} reads {gate.shape[1]} features, expected "
                f"{n_text} text layers x {text_width}"
            )
    mixup = bool(getattr(args, "mixup_pretrain", False))
    if bridge_text_source is None:
        bridge_text_source = "mixup" if mixup else "adaptive"
        if args is None:
            logger.warning(
                "the checkpoint stores no training args; assuming the adaptive bridge text (pass "
                "--bridge_text_source mixup for a mixup pre-trained model)"
            )
    elif bridge_text_source not in BRIDGE_TEXT_SOURCES:
        raise CheckpointConversionError(
            f"bridge_text_source={bridge_text_source!r}; choose one of {BRIDGE_TEXT_SOURCES}"
        )
    dataset = getattr(args, "dataset", None)
    if dataset is not None and not mixup and default_bridge_text_layers(dataset, text_layers) != text_layer_list:
        raise CheckpointConversionError(
            f"the bridges read {n_text} text layers, but a --dataset {dataset} model reads "
            f"{default_bridge_text_layers(dataset, text_layers)}"
        )

    variant = getattr(args, "model", None)
    if variant not in _EXTRACT_LAYERS:
        variant = "ViT-B/16" if vision_layers == 12 else ("ViT-L/14-336" if grid * patch == 336 else "ViT-L/14")
    extract = _EXTRACT_LAYERS[variant]
    if state_dict["multilevel_proj.weight"].shape[1] != len(extract) * vision_width or max(extract) >= vision_layers:
        raise CheckpointConversionError(
            f"cannot tell which vision blocks feed ml_visual_projection "
            f"({tuple(state_dict['multilevel_proj.weight'].shape)}) for a {vision_layers}-layer tower"
        )
    stored_heads = getattr(args, "vl_nheads", None)
    if stored_heads is not None and fusion_num_heads is not None and int(stored_heads) != fusion_num_heads:
        raise CheckpointConversionError(
            f"fusion_num_heads={fusion_num_heads} disagrees with args.vl_nheads={stored_heads}"
        )
    fusion_heads = stored_heads if stored_heads is not None else fusion_num_heads
    if fusion_heads is None:
        raise CheckpointConversionError(
            "the checkpoint stores no args.vl_nheads: pass --fusion_num_heads (8 for the released models)"
        )

    def tower(name: str, width: int, layers: int, mlp_key: str, **sizes) -> dict:
        return {
            "hidden_size": width,
            "num_hidden_layers": layers,
            "intermediate_size": state_dict[mlp_key].shape[0],
            "projection_dim": projection,
            **_tower_settings(clip_config, name),
            **sizes,
        }

    text_config = tower(
        "text",
        text_width,
        text_layers,
        "clip.text_model.encoder.layers.0.mlp.fc1.weight",
        vocab_size=vocab,
        max_position_embeddings=context,
    )
    vision_config = tower(
        "vision",
        vision_width,
        vision_layers,
        "clip.vision_model.encoder.layers.0.mlp.fc1.weight",
        patch_size=patch,
        image_size=patch * grid,
    )
    depth_stage = getattr(args, "hi_lora_stage", None)
    config = HiVGConfig(
        text_config=text_config,
        vision_config=vision_config,
        projection_dim=projection,
        extract_layers=extract,
        bridge_layers=bridges,
        bridge_text_layers=text_layer_list,
        bridge_text_source=bridge_text_source,
        fusion_hidden_size=state_dict["text_proj.weight"].shape[0],
        fusion_num_layers=count_blocks(state_dict, "fusion.layers."),
        fusion_num_heads=int(fusion_heads),
        fusion_intermediate_size=state_dict["fusion.layers.0.fc1.weight"].shape[0],
        fusion_dropout=float(getattr(args, "vl_dropout", 0.1)),
        max_text_length=int(getattr(args, "max_query_len", None) or context),
        image_size=patch * grid,
        token_mlp_size=state_dict["token_mlp.fc1.weight"].shape[0],
        lora_adapters=any(".lora_A." in key for key in state_dict),
        hilora_stage=int(depth_stage) if depth_stage in (0, 1, 2, 3) else 3,
    )
    if state_dict["fusion_position_embeddings.weight"].shape[0] != config.num_fusion_positions:
        raise CheckpointConversionError(
            f"vl_pos_embed has {state_dict['fusion_position_embeddings.weight'].shape[0]} rows, expected "
            f"{config.num_fusion_positions} ([REG], CLS, {grid}**2 patches, {config.max_text_length} text tokens)"
        )
    return config


def _rename(key: str) -> str | None:
    for pattern, replacement in _RENAMES:
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key, count=1)
    return None


def convert_state_dict(
    state_dict: dict[str, torch.Tensor], bridge_text_source: str = "adaptive"
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map a HiVG state dict (peft prefix stripped) to this package's names. Returns (new state dict, dropped keys).

    LoRA-wrapped linears get peft's current names (``<linear>.base_layer.weight``, ``<linear>.lora_A.default.weight``)
    when the state dict holds LoRA. Raises [`CheckpointConversionError`] naming every key no rule maps.
    """
    has_lora = any(".lora_A." in key for key in state_dict)
    converted: dict[str, torch.Tensor] = {}
    adaptive: dict[int, dict[int, torch.Tensor]] = {}
    dropped: list[str] = []
    unmapped: list[str] = []
    mixup = bridge_text_source == "mixup"
    for key, tensor in state_dict.items():
        if key in _UNUSED or key.endswith(".position_ids") or (key.startswith("condition_text_proj.") and not mixup):
            dropped.append(key)
            continue
        if (packed := _PACKED.match(key)) is not None:
            for name, chunk in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0)):
                converted[f"fusion.layers.{packed.group(1)}.self_attn.{name}.{packed.group(2)}"] = chunk
            continue
        if key == "reg_token.weight":
            converted["reg_token"] = tensor
            continue
        new = None
        if (bridge := _BRIDGE.match(key)) is not None:
            layer, part, rest = int(bridge.group(1)), bridge.group(2), bridge.group(3)
            if part in ("gate", "adaptive_weights") and mixup:
                dropped.append(key)
                continue
            if part == "adaptive_weights":
                index, _, leaf = rest.partition(".")
                if leaf != "weight" or not index.isdigit():
                    unmapped.append(key)
                    continue
                adaptive.setdefault(layer, {})[int(index)] = tensor
                continue
            new = f"bridges.{layer}.{_BRIDGE_PARTS[part]}.{rest}"
        else:
            new = _rename(key)
        if new is None:
            unmapped.append(key)
            continue
        if has_lora and (linear := _LORA_LINEAR.match(new)) is not None:
            new = f"{linear.group(1)}.base_layer.{linear.group(2)}"
        converted[new] = tensor
    for layer, tables in adaptive.items():
        converted[f"bridges.{layer}.adaptive_weights"] = torch.stack([tables[j] for j in sorted(tables)])
    if unmapped:
        raise CheckpointConversionError(f"{len(unmapped)} checkpoint keys cannot be mapped: {unmapped}")
    return converted, dropped


def _plain_names(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Names for config inference: the renamed non-CLIP keys alongside the untouched CLIP keys."""
    renamed = {}
    for key, value in state_dict.items():
        new = key if key.startswith("clip.") else _rename(key)
        if (packed := _PACKED.match(key)) is not None:
            new = f"fusion.layers.{packed.group(1)}.fc_packed"
        renamed[new or key] = value
    return renamed


def convert_checkpoint(
    path: str | Path | None = None,
    *,
    checkpoint: dict[str, Any] | None = None,
    merge_lora: bool = False,
    clip_config: dict | None = None,
    bridge_text_source: str | None = None,
    bridge_batch_mixing: bool = False,
    trainable_clip: str = "official",
    fusion_num_heads: int | None = None,
) -> HiVGForGrounding:
    """Build a [`HiVGForGrounding`] holding exactly the weights of an official checkpoint (a path or a loaded dict).

    ``clip_config`` is the parsed ``config.json`` of the CLIP the model was built on (:func:`read_clip_config`).
    """
    if checkpoint is None:
        checkpoint = load_original_checkpoint(path)
    check_finite(checkpoint["model"], path)
    depth = peft_nesting_depth(checkpoint["model"])
    state_dict = strip_peft_prefix(checkpoint["model"])
    args = checkpoint.get("args")
    config = config_from_state_dict(_plain_names(state_dict), args, clip_config, bridge_text_source, fusion_num_heads)
    config.trainable_clip = trainable_clip
    config.bridge_batch_mixing = bridge_batch_mixing
    converted, dropped = convert_state_dict(state_dict, config.bridge_text_source)
    model = HiVGForGrounding(config)
    load_converted_weights(model, converted, path)
    stage = getattr(args, "hi_lora_stage", None)
    logger.info(
        "peft nesting depth %d (HiLoRA stage %d)%s; dropped %d position_ids buffers and %s",
        depth,
        depth - 1,
        "" if stage in (None, depth - 1) else f", but args.hi_lora_stage={stage}",
        sum(k.endswith(".position_ids") for k in dropped),
        [k for k in dropped if not k.endswith(".position_ids")],
    )
    if merge_lora:
        model.merge_lora()
    model.eval()
    return model


def convert_official(
    path: str | Path,
    *,
    checkpoint: dict[str, Any] | None = None,
    clip_config: str | Path | None = None,
    **options: Any,
) -> HiVGForGrounding:
    """[`convert_checkpoint`] as the command and the release pipeline call it: ``clip_config`` is the path given as
    ``--clip_config``; a value the HiVG config refuses (heads that do not divide a width) and a model with LoRA
    adapters without peft are :class:`CheckpointConversionError`\\ s naming the cause."""
    heads = read_clip_config(clip_config) if clip_config is not None else None
    try:
        return convert_checkpoint(path, checkpoint=checkpoint, clip_config=heads, **options)
    except StrictDataclassError as error:
        reason = " ".join(str(error.__cause__ or error).split())
        hint = f" (--clip_config {clip_config})" if clip_config is not None else ""
        raise CheckpointConversionError(f"{reason}{hint}") from error
    except ImportError as error:
        raise CheckpointConversionError(str(error)) from error


def add_hivg_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The flags only the HiVG converter takes."""
    parser.add_argument(
        "--merge_lora",
        action="store_true",
        help="fold the LoRA adapters into the weights (faster inference, loads without peft)",
    )
    parser.add_argument(
        "--clip_config",
        default=None,
        metavar="FILE",
        help="config.json of the Hugging Face CLIP the model was built on: its attention head counts, which the "
        "weights cannot tell (required)",
    )
    parser.add_argument(
        "--bridge_text_source",
        default=None,
        choices=BRIDGE_TEXT_SOURCES,
        help="override the bridge text source the training args imply (mixup_pretrain)",
    )
    parser.add_argument(
        "--bridge_batch_mixing",
        action="store_true",
        help="store the official batched bridge (outputs depend on the batch) as the default",
    )


def summary(model: HiVGForGrounding) -> str:
    """What the command prints about a converted model."""
    n_params = sum(p.numel() for p in model.parameters())
    config = model.config
    return (
        f"HiVG, {n_params:,} parameters, bridges in blocks {config.bridge_layers} reading text layers "
        f"{config.bridge_text_layers} ({config.bridge_text_source}), "
        f"LoRA {'adapters' if config.lora_adapters else 'merged'}"
    )
