"""Readers of the parity fixture (official outputs of CLIP-VG) shared by the processing, pipeline and CLI tests."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors.torch import load_file

from utils.paths import PARITY_DIR, REPO_ROOT

FIXTURE = PARITY_DIR
TINY = FIXTURE / "tiny"
BPE_PATH = FIXTURE / "bpe_simple_vocab_16e6.txt.gz"
CHECKPOINT = TINY / "checkpoint.pth"
EVAL_SPLITS = ("unc/val", "unc/testA", "referit/test", "flickr/test")

# Image folders and box layouts of the official data loader (spec §3.1).
_IMAGE_ROOTS = {
    "unc": "other/images/mscoco/images/train2014",
    "referit": "referit/images",
    "flickr": "Flickr30k/flickr30k-images",
}
_BOX_FORMATS = {"unc": "xywh", "referit": "xyxy", "flickr": "xyxy"}


class Sample(NamedTuple):
    image_path: Path
    box: list[float]
    box_format: str
    phrase: str


def fixture_pixel_tolerance() -> float:
    """Largest |Δ| expected between our pixels and the fixture's (which were made with Pillow 13).

    Pillow before 13 resizes extreme downscales (the 33x700 strip) up to one uint8 level differently: one level of
    the normalised pixels, 1 / (255 * 0.224), on top of the fp16 storage step.
    """
    import PIL

    one_level = 1 / (255 * 0.224) if int(PIL.__version__.split(".")[0]) < 13 else 0.0
    return one_level + 2e-3


@lru_cache
def expected_json() -> dict:
    return json.loads((TINY / "expected.json").read_text())


@lru_cache
def expected_tensors() -> dict[str, torch.Tensor]:
    return load_file(str(TINY / "expected.safetensors"))


def load_split(split: str) -> list[Sample]:
    """Entries of one split file in the official on-disk layout, e.g. ``"unc/val"``."""
    dataset, name = split.split("/")
    entries = torch.load(TINY / "splits" / dataset / f"{dataset}_{name}.pth", weights_only=True)
    root = TINY / "image_data" / _IMAGE_ROOTS[dataset]
    samples = []
    for entry in entries:
        image, box, phrase = (entry[0], entry[1], entry[2]) if dataset == "flickr" else (entry[0], entry[2], entry[3])
        samples.append(Sample(root / image, list(box), _BOX_FORMATS[dataset], phrase))
    return samples


REPO_ROOT = REPO_ROOT


def run_fresh_python(code: str, workdir: Path, with_package: bool) -> str:
    """Run ``code`` in a fresh interpreter, offline, from ``workdir``; return its stdout.

    ``with_package=False`` makes ``clipvg_hf`` unimportable (a stub that raises shadows any install, and the repository
    is not on ``sys.path``), so only Hub remote code can provide the classes.
    """
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_HOME", "HF_MODULES_CACHE")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(workdir / "hf_home"))
    env["HF_MODULES_CACHE"] = str(workdir / "hf_modules")
    if with_package:
        env["PYTHONPATH"] = str(REPO_ROOT)
    else:
        blocker = workdir / "blocked" / "clipvg_hf"
        blocker.mkdir(parents=True, exist_ok=True)
        (blocker / "__init__.py").write_text('raise ImportError("clipvg_hf is deliberately unavailable")\n')
        env["PYTHONPATH"] = str(blocker.parent)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=workdir, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"fresh interpreter failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def official_hits_iou(pred_boxes: torch.Tensor, target_boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Acc@0.5 hits and IoU as the official evaluation computes them (spec §5), on normalised canvas boxes."""

    def corners(b: torch.Tensor) -> torch.Tensor:
        return torch.cat([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], dim=1)

    pred, gt = corners(pred_boxes).clamp(0, 1), corners(target_boxes)
    top_left, bottom_right = torch.maximum(pred[:, :2], gt[:, :2]), torch.minimum(pred[:, 2:], gt[:, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=1)
    area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
    iou = inter / (area(pred) + area(gt) - inter + 1e-16)
    return iou >= 0.5, iou


def save_fixture_model(folder: Path) -> Path:
    """The converted fixture checkpoint plus a processor with the offline tokenizer, saved like a Hub repo."""
    from clipvg_hf import CLIPVGImageProcessor, CLIPVGProcessor
    from clipvg_hf.conversion.clipvg import convert_checkpoint
    from clipvg_hf.processing_clipvg import build_clip_tokenizer

    model = convert_checkpoint(CHECKPOINT)
    model.save_pretrained(folder)
    image_processor = CLIPVGImageProcessor(size={"longest_edge": model.config.image_size})
    CLIPVGProcessor(image_processor, build_clip_tokenizer(BPE_PATH)).save_pretrained(folder)
    return folder
