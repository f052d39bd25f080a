"""What both checkpoint converters share: reading an official checkpoint without unpickling code, the weight checks,
the output folder, the common command-line flags and the saved folder.

The official checkpoints (``checkpoint.pth`` / ``best_checkpoint.pth``) are read with ``torch.load(weights_only=True)``,
allowing only ``argparse.Namespace`` (the training arguments) besides tensors and plain Python values.
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path
from typing import Any

import torch

from ..checks import check_output_dir
from ..commands.arguments import positive_int
from ..configuration_clipvg import TRAINABLE_CLIP_POLICIES
from ..errors import UsageError, torch_load_reason
from ..loading import non_finite_tensors
from ..modeling_clipvg import CLIPVGPreTrainedModel
from ..processing_clipvg import CLIPVGProcessor

logger = logging.getLogger(__name__)

__all__ = [
    "CheckpointConversionError",
    "add_common_arguments",
    "check_finite",
    "check_new_output_dir",
    "count_blocks",
    "load_converted_weights",
    "load_original_checkpoint",
    "save_converted",
]


class CheckpointConversionError(UsageError):
    """The checkpoint cannot be converted (unreadable, not of the family, weights that do not fit); says why."""


def load_original_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read an official checkpoint without unpickling arbitrary objects; returns the whole checkpoint dict.

    A bare state dict becomes ``{"model": state_dict}``; a ``module.`` prefix (a checkpoint saved from a
    DistributedDataParallel wrapper) is removed, and the converter says so.
    """
    path = Path(path)
    if path.is_dir():
        hint = " (it holds config.json: already a converted model folder)" if (path / "config.json").is_file() else ""
        raise FileNotFoundError(f"{path} is a folder, not a checkpoint file{hint}")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointConversionError(f"{path}: cannot be read as a CLIP-VG checkpoint: the file is empty (0 bytes)")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError for refused classes, EOFError / RuntimeError for damaged files
        reason = torch_load_reason(error)
        raise CheckpointConversionError(f"{path}: cannot be read as a CLIP-VG checkpoint: {reason}") from error
    if (
        isinstance(checkpoint, dict)
        and "model" not in checkpoint
        and checkpoint
        and all(torch.is_tensor(v) for v in checkpoint.values())
    ):
        checkpoint = {"model": checkpoint}  # a bare state dict
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        raise CheckpointConversionError(f"{path}: expected a dict with a 'model' state dict")
    state_dict = checkpoint["model"]
    if state_dict and all(key.startswith("module.") for key in state_dict):
        logger.info("removed the 'module.' prefix of every key (a checkpoint saved from DistributedDataParallel)")
        checkpoint["model"] = {key[len("module.") :]: value for key, value in state_dict.items()}
    return checkpoint


def check_finite(state_dict: dict[str, torch.Tensor], path: str | Path | None = None) -> None:
    """Refuse NaN / infinite weights: a model converted from them would print NaN boxes."""
    bad = non_finite_tensors(state_dict)
    if bad:
        raise CheckpointConversionError(f"{path}: {len(bad)} tensors hold NaN or infinite values, e.g. {bad[:5]}")


def count_blocks(state_dict: dict[str, torch.Tensor], prefix: str) -> int:
    """How many numbered blocks ``<prefix><i>.`` the state dict holds; they must be numbered 0..N-1."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = {int(m.group(1)) for key in state_dict if (m := pattern.match(key))}
    if indices != set(range(len(indices))):
        raise CheckpointConversionError(f"blocks under {prefix!r} are not numbered 0..N-1: {sorted(indices)}")
    return len(indices)


def load_converted_weights(
    model: CLIPVGPreTrainedModel, converted: dict[str, torch.Tensor], path: str | Path | None
) -> None:
    """Load the converted tensors into ``model``: exactly its weights, each of its shape, or an error naming them."""
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(converted)), sorted(set(converted) - set(expected))
    if missing or unexpected:
        raise CheckpointConversionError(f"{path}: missing weights {missing}; unexpected weights {unexpected}")
    shapes = [
        (k, tuple(v.shape), tuple(expected[k].shape)) for k, v in converted.items() if v.shape != expected[k].shape
    ]
    if shapes:
        raise CheckpointConversionError(f"{path}: shape mismatches (key, checkpoint, model): {shapes}")
    model.load_state_dict(converted, strict=True)


def check_new_output_dir(path: str | Path, name: str = "--output_dir") -> Path:
    """The converters' output folder: new or empty, never a file (a converted folder is never mixed with others)."""
    output = check_output_dir(path, name)
    if output.is_dir() and any(output.iterdir()):
        raise UsageError(f"{name} {output} is not empty; choose a new folder")
    return output


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of every family: the checkpoint, the output folder, the stored policy, the fusion heads."""
    parser.add_argument("--checkpoint", required=True, help="official checkpoint.pth / best_checkpoint.pth")
    parser.add_argument(
        "--output_dir",
        required=True,
        help="new or empty folder to write (config, model.safetensors, processor and tokenizer files)",
    )
    parser.add_argument(
        "--trainable_clip",
        default="official",
        choices=TRAINABLE_CLIP_POLICIES,
        help="the trainable_clip policy stored in the config (for later fine-tuning)",
    )
    parser.add_argument(
        "--fusion_num_heads",
        type=positive_int,
        help="fusion attention heads, for a bare state dict without the training args (official: 8)",
    )


def save_converted(model: CLIPVGPreTrainedModel, output_dir: str | Path) -> None:
    """Save the converted model with its remote code and the official processor (the letterbox at the model's
    image size, OpenAI's BPE shipped with the package)."""
    model.save_pretrained(output_dir)
    CLIPVGProcessor.from_defaults(model.config.image_size).save_pretrained(output_dir)
