"""The HiVG parity fixture (outputs of the official HiVG code on random weights) and its converted models."""

import argparse
import copy
import functools
import json
from pathlib import Path

import torch

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "hivg_tiny"
CHECKPOINTS = {"unc": FIXTURE / "checkpoint.pth", "gref_umd": FIXTURE / "checkpoint_gref_umd.pth"}


@functools.cache
def expected_tensors() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(FIXTURE / "expected.safetensors")


@functools.cache
def expected_json() -> dict:
    return json.loads((FIXTURE / "expected.json").read_text())


def clip_config() -> dict:
    """What the official model's Hugging Face CLIP config.json says beyond the shapes: the head counts."""
    sizes = expected_json()["config"]
    return {
        "text_config": {"num_attention_heads": sizes["theads"]},
        "vision_config": {"num_attention_heads": sizes["vheads"]},
    }


def rect_masks(rects: torch.Tensor, size: int = 224) -> torch.Tensor:
    """N x 4 [top, left, h, w] -> N x size x size, 1 inside."""
    masks = torch.zeros(len(rects), size, size, dtype=torch.long)
    for i, (top, left, h, w) in enumerate(rects.tolist()):
        masks[i, top : top + h, left : left + w] = 1
    return masks


@functools.cache
def _images() -> tuple[torch.Tensor, torch.Tensor]:
    """Every distinct image as the official eval transform gives it: pixels (M, 3, 224, 224), pixel mask."""
    tensors, meta = expected_tensors(), expected_json()
    mean = torch.tensor(meta["encoding"]["mean"]).view(3, 1, 1)
    std = torch.tensor(meta["encoding"]["std"]).view(3, 1, 1)
    rgb, offsets, rects = tensors["image/resized_rgb_u8"], tensors["image/offsets"], tensors["image/letterbox_rect"]
    pixels = torch.zeros(len(rects), 3, 224, 224)
    for i, (top, left, h, w) in enumerate(rects.tolist()):
        pixels[i, :, top : top + h, left : left + w] = (
            rgb[offsets[i] : offsets[i + 1]].view(3, h, w).float() / 255 - mean
        ) / std
    return pixels, rect_masks(rects)


def split_inputs(split: str) -> dict[str, torch.Tensor]:
    """Model inputs of a fixture split (``mixup_model/...`` splits read another split's inputs)."""
    tensors = expected_tensors()
    source = expected_json()["splits"][split].get("inputs_from", split)
    pixels, pixel_mask = _images()
    index = tensors[f"{source}/image_index"].long()
    return {
        "pixel_values": pixels[index],
        "pixel_mask": pixel_mask[index],
        "input_ids": tensors[f"{source}/input_ids"].long(),
    }


def split_targets(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Target boxes (cx, cy, w, h) and ground-truth object masks of a split."""
    tensors = expected_tensors()
    source = expected_json()["splits"][split].get("inputs_from", split)
    return tensors[f"{source}/target_boxes"], rect_masks(tensors[f"{source}/obj_mask_rect"])


def load_checkpoint(model: str) -> dict:
    """The official checkpoint of a fixture model; ``"mixup"`` is ``unc``'s with the mixup training arguments."""
    from clipvg_hf.conversion.common import load_original_checkpoint

    checkpoint = load_original_checkpoint(CHECKPOINTS["unc" if model == "mixup" else model])
    if model == "mixup":
        checkpoint = dict(checkpoint, args=argparse.Namespace(**vars(copy.deepcopy(checkpoint["args"]))))
        checkpoint["args"].mixup_pretrain, checkpoint["args"].enable_adaptive_weights = True, False
    return checkpoint


@functools.cache
def converted(model: str, merge_lora: bool = False):
    """The converted fixture model (``"unc"``, ``"gref_umd"``, ``"mixup"``) in eval mode, built once per session."""
    from clipvg_hf.conversion.hivg import convert_checkpoint

    return convert_checkpoint(checkpoint=load_checkpoint(model), clip_config=clip_config(), merge_lora=merge_lora)


def one_thread():
    """Run a test on one CPU thread (the tiny fixture's ops are faster so on a shared machine), then restore."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
