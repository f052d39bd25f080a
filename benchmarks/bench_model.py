#!/usr/bin/env python
"""Model throughput of CLIP-VG: ``clipvg_hf``'s fast paths vs its own modules run with the official settings.

Full ViT-B/16 size with random weights (nothing is downloaded). Measures, on CPU (default) or CUDA:

- **evaluation** (expressions/s) on RefCOCO-like batches (``--images`` images, ``--per_image`` expressions each);
- **training step** (samples/s): forward, loss, backward, AdamW step over the trainable parameters;
- peak memory of one step, the FLOPs of each path (PyTorch's FLOP formulas, fused CPU attention included), the
  FLOP/s of a 2048 x 2048 fp32 matrix product measured on the same threads before every repetition, and the
  achieved FLOP/s over it (utilisation).

This is an ablation inside the package, not a comparison with the official code: for that, see
``bench_vs_official.py``, which runs the official implementation itself side by side.
*Official settings* (the package's modules computing what the released code computes): text padded to 77
tokens, one image encode per expression, eager attention everywhere, the full last fusion layer, the visual
projection per expression, ``trainable_clip="official"`` (backward through the ViT for the visual position
embedding) and a for-loop AdamW (PyTorch 1.9's). *Ours*: SDPA attention, text padded to the longest expression,
the [REG]-only last fusion layer, and for evaluation :func:`benchmarks.grouped_inference.predict_boxes_grouped` (each image
encoded once per batch, the fusion on real tokens only); a fused AdamW for training. ``ours, frozen`` (``trainable_clip="frozen"``, no
backward through the ViT) is a documented deviation from the recipe, shown for reference only.

Paths run interleaved (A, B, C, A, B, C, ...) ``--repeats`` times; the table reports medians and the median of the
per-repetition ratios, so load from other processes hits all paths alike. Not a test.

    python -m benchmarks.bench_model                 # full size, a few minutes on 2 CPU cores
    python -m benchmarks.bench_model --quick         # tiny model, seconds (CI smoke)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from benchmarks.bench_vs_official import autocast_context, count_flops, gemm_flops_per_second, synchronize
from benchmarks.grouped_inference import predict_boxes_grouped, trim_text_padding
from clipvg_hf import CLIPVGConfig, CLIPVGForGrounding
from clipvg_hf.hardware import cpu_summary
from clipvg_hf.modeling_clipvg import grounding_loss, patch_padding_mask
from clipvg_hf.precision import cpu_summary_line
from clipvg_hf.testing_utils import tiny_clipvg_config

# Token counts of RefCOCO-like expressions ([SOT] + BPE + [EOT]); mean ≈ 7.6.
EXPRESSION_LENGTHS = (4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 10, 11, 13, 17)


# ----------------------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------------------
def make_batch(config: CLIPVGConfig, images: int, per_image: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """RefCOCO-like data: letterboxed images of random aspect, ``per_image`` expressions each, 77-token text.

    Returns distinct ``pixel_values``/``pixel_mask`` (I, ...), ``image_index`` (E,), ``input_ids`` and
    ``attention_mask`` (E, max_text_length) padded with [EOT] as the CLIP tokenizer does, and ``labels`` (E, 4).
    """
    generator = torch.Generator().manual_seed(seed)
    size, context = config.image_size, config.max_text_length
    vocab = config.text_config.vocab_size
    pixel_values = torch.randn(images, 3, size, size, generator=generator)
    pixel_mask = torch.zeros(images, size, size, dtype=torch.long)
    for i in range(images):  # long side = size, short side 50-100 %, centred
        short = int(size * (0.5 + 0.5 * torch.rand(1, generator=generator).item()))
        start = (size - short) // 2
        if i % 2:
            pixel_mask[i, start : start + short, :] = 1
        else:
            pixel_mask[i, :, start : start + short] = 1
    pixel_values *= pixel_mask[:, None]
    count = images * per_image
    scale = context / 77
    lengths = [
        max(3, min(context, round(EXPRESSION_LENGTHS[i % len(EXPRESSION_LENGTHS)] * max(scale, 0.5))))
        for i in range(count)
    ]
    input_ids = torch.full((count, context), vocab - 1, dtype=torch.long)
    attention_mask = torch.zeros(count, context, dtype=torch.long)
    for row, length in enumerate(lengths):
        input_ids[row, 0] = vocab - 2
        input_ids[row, 1 : length - 1] = torch.randint(1, vocab - 2, (length - 2,), generator=generator)
        attention_mask[row, :length] = 1
    labels = torch.cat(
        [0.3 + 0.4 * torch.rand(count, 2, generator=generator), 0.1 + 0.3 * torch.rand(count, 2, generator=generator)],
        dim=1,
    )
    image_index = torch.arange(images).repeat_interleave(per_image)
    return dict(
        pixel_values=pixel_values,
        pixel_mask=pixel_mask,
        image_index=image_index,
        input_ids=input_ids,
        attention_mask=attention_mask,
        labels=labels,
    )


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


# ----------------------------------------------------------------------------------------------------------------
# The official settings (same math as the released code, on the package's modules)
# ----------------------------------------------------------------------------------------------------------------
def official_boxes(
    model: CLIPVGForGrounding,
    pixel_values: torch.Tensor,
    pixel_mask: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
) -> torch.Tensor:
    """Boxes as the official model computes them: one row per expression, full 77-token text, full fusion.

    Call with the model's attention set to eager. Inputs are per expression (images repeated).
    """
    visual = model.visual_proj(model.get_multilevel_visual_features(pixel_values))
    text = model.text_proj(model.get_text_token_features(input_ids))
    batch = text.shape[0]
    hidden = torch.cat([model.reg_token.unsqueeze(0).expand(batch, -1, -1), text, visual], dim=1)
    positions = model.fusion_position_embeddings.weight[: hidden.shape[1]].unsqueeze(0)
    never = torch.zeros(batch, 1, dtype=torch.bool, device=hidden.device)
    patches = patch_padding_mask(pixel_mask, model.config.num_patches_per_side)
    padding = torch.cat([never, attention_mask == 0, never, patches], dim=1)
    additive = torch.zeros(padding.shape, dtype=hidden.dtype, device=hidden.device)
    additive = additive.masked_fill(padding, torch.finfo(hidden.dtype).min)[:, None, None, :]
    hidden = model.fusion(hidden, positions, additive, first_token_only=False)[0]
    return model.box_head(hidden[:, 0])


# ----------------------------------------------------------------------------------------------------------------
# The paths: each returns a zero-argument callable doing one unit of work
# ----------------------------------------------------------------------------------------------------------------
def set_attention(model: CLIPVGForGrounding, implementation: str) -> None:
    """Switch every attention of the model (both CLIP towers and the fusion)."""
    if model.config._attn_implementation != implementation:
        model.set_attn_implementation(implementation)


def eval_official(model, batch, autocast: torch.dtype | None) -> Callable[[], torch.Tensor]:
    rows = batch["image_index"]
    inputs = (batch["pixel_values"][rows], batch["pixel_mask"][rows], batch["input_ids"], batch["attention_mask"])

    def run() -> torch.Tensor:
        set_attention(model, "eager")
        with torch.no_grad():
            return official_boxes(model, *inputs)

    return run


def eval_ours(model, batch, autocast: torch.dtype | None) -> Callable[[], torch.Tensor]:
    def run() -> torch.Tensor:
        set_attention(model, "sdpa")
        return predict_boxes_grouped(
            model,
            batch["pixel_values"],
            batch["pixel_mask"],
            batch["image_index"],
            batch["input_ids"],
            batch["attention_mask"],
            autocast_dtype=autocast,
        )

    return run


def eval_ours_ungrouped(model, batch, autocast: torch.dtype | None) -> Callable[[], torch.Tensor]:
    """Ablation: SDPA, dynamic text and [REG]-only last layer, but one image encode per expression."""
    rows = batch["image_index"]
    ids, mask = trim_text_padding(batch["input_ids"], batch["attention_mask"])
    per_row = arange_like(rows)

    def run() -> torch.Tensor:
        set_attention(model, "sdpa")
        return predict_boxes_grouped(
            model, batch["pixel_values"][rows], batch["pixel_mask"][rows], per_row, ids, mask, autocast_dtype=autocast
        )

    return run


def arange_like(index: torch.Tensor) -> torch.Tensor:
    return torch.arange(len(index), device=index.device)


class TrainStep:
    """One optimisation step: forward, loss, backward, AdamW; ``official`` selects the official-settings computation."""

    def __init__(
        self, model: CLIPVGForGrounding, batch: dict[str, torch.Tensor], official: bool, autocast: torch.dtype | None
    ):
        self.model, self.official, self.autocast = model, official, autocast
        rows = batch["image_index"]
        ids, mask = batch["input_ids"], batch["attention_mask"]
        if not official:
            ids, mask = trim_text_padding(ids, mask)
        self.inputs = dict(
            pixel_values=batch["pixel_values"][rows],
            pixel_mask=batch["pixel_mask"][rows],
            input_ids=ids,
            attention_mask=mask,
        )
        self.labels = batch["labels"]
        params = [p for p in model.parameters() if p.requires_grad]
        options = {"foreach": False} if official else {"fused": True}
        self.optimizer = torch.optim.AdamW(params, lr=1e-6, weight_decay=1e-4, **options)

    def __call__(self) -> torch.Tensor:
        model = self.model
        set_attention(model, "eager" if self.official else "sdpa")
        model.train()
        context = autocast_context(model.device, self.autocast)
        with context:
            if self.official:
                boxes = official_boxes(model, **self.inputs)
            else:
                boxes = model(**self.inputs).pred_boxes[:, 0]
            loss = grounding_loss(boxes.float(), self.labels)["loss"]
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()


# ----------------------------------------------------------------------------------------------------------------
# Measurement
# ----------------------------------------------------------------------------------------------------------------
def timed(fn: Callable[[], Any], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


class LiveTensorBytes(TorchDispatchMode):
    """Peak bytes of tensor storages created while active and still alive (CPU memory accounting).

    Storages of the ``existing`` tensors (parameters, buffers, optimizer state) are not counted when an op returns
    a view of them (e.g. a transposed weight).
    """

    def __init__(self, existing: list[torch.Tensor] = ()) -> None:
        super().__init__()
        self.live = self.peak = 0
        self.seen: weakref.WeakSet = weakref.WeakSet(t.untyped_storage() for t in existing)

    def _free(self, nbytes: int) -> None:
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                if storage not in self.seen:
                    self.seen.add(storage)
                    self.live += storage.nbytes()
                    weakref.finalize(storage, self._free, storage.nbytes())
                    self.peak = max(self.peak, self.live)
        return out


def persistent_tensors(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> list[torch.Tensor]:
    """Parameters, buffers and optimizer state: memory held before and after a step."""
    tensors = [*model.parameters(), *model.buffers()]
    if optimizer is not None:
        tensors += [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
    return tensors


def peak_memory(fn: Callable[[], Any], device: torch.device, existing: list[torch.Tensor] = ()) -> tuple[int, Any]:
    """Peak bytes allocated by one call beyond what was allocated before it, and the call's result."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        result = fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before, result
    with LiveTensorBytes(existing) as tracker:
        result = fn()
    return tracker.peak, result


def interleaved(
    paths: dict[str, Callable[[], Any]],
    repeats: int,
    device: torch.device,
    warm_up: Callable[[Callable[[], Any]], Any] | None = None,
    probe: Callable[[], float] | None = None,
) -> tuple[dict[str, list[float]], dict]:
    """Seconds per call of every path, alternating paths within each repetition, after one warm-up call each.

    Returns the times and what ``warm_up(fn)`` returned for each path (default: the path's own output).
    ``probe`` (e.g. a GEMM FLOP/s measurement) runs before every repetition; its values go to ``times["probe"]``.
    """
    warm_up = warm_up or (lambda fn: fn())
    warm = {name: warm_up(fn) for name, fn in paths.items()}
    times: dict[str, list[float]] = {name: [] for name in paths}
    probes = []
    for _ in range(repeats):
        if probe is not None:
            probes.append(probe())
        for name, fn in paths.items():
            times[name].append(timed(fn, device))
    if probe is not None:
        times["probe"] = probes
    return times, warm


def summarise(times: dict[str, list[float]], units: int, baseline: str) -> dict[str, dict[str, float]]:
    """Median seconds, units/s and the median of per-repetition speed-ups against ``baseline``."""
    out = {}
    for name, seconds in times.items():
        ratios = [b / s for b, s in zip(times[baseline], seconds, strict=True)]
        out[name] = {
            "median_s": statistics.median(seconds),
            "per_s": units / statistics.median(seconds),
            "speedup": statistics.median(ratios),
            "speedup_min": min(ratios),
            "speedup_max": max(ratios),
            "times_s": seconds,
        }
    return out


# ----------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------
def print_table(title: str, unit: str, rows: dict[str, dict[str, Any]], gemm: float) -> None:
    print(f"\n{title}")
    header = (
        f"{'path':<28}{unit + '/s':>12}{'speed-up':>10}{'(min-max)':>14}{'GFLOP/unit':>12}"
        f"{'GFLOP/s':>9}{'util.':>7}{'peak MB':>9}{'max|Δbox|':>11}"
    )
    print(header)
    print("-" * len(header))
    for name, row in rows.items():
        achieved = row["flops_per_unit"] * row["per_s"]
        spread = f"({row['speedup_min']:.2f}-{row['speedup_max']:.2f})"
        delta = "" if row.get("max_abs_box_diff") is None else f"{row['max_abs_box_diff']:.1e}"
        print(
            f"{name:<28}{row['per_s']:>12.3f}{row['speedup']:>9.2f}x{spread:>14}{row['flops_per_unit'] / 1e9:>12.1f}"
            f"{achieved / 1e9:>9.1f}{achieved / gemm:>7.0%}{row['peak_bytes'] / 2**20:>9.0f}{delta:>11}"
        )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, seconds: a smoke run")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=2, help="images per evaluation batch")
    parser.add_argument("--per_image", type=int, default=7, help="expressions per image (RefCOCO: about 7)")
    parser.add_argument("--train_batch", type=int, default=2, help="samples per training step")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions per path")
    parser.add_argument(
        "--bf16",
        choices=("auto", "on", "off"),
        default="auto",
        help="bf16 autocast for our paths: auto = on CUDA only; on = also on CPU (exercises the "
        "CUDA code path anywhere); off = fp32 everywhere",
    )
    parser.add_argument(
        "--dtype",
        choices=("fp32", "bf16"),
        default="fp32",
        help="weights of our evaluation paths: bf16 = a copy converted once to bf16, box head fp32 "
        "(clipvg-evaluate --dtype bf16); the official-settings path and training stay fp32",
    )
    parser.add_argument("--json", type=Path, default=Path("outputs/bench_model.json"))
    args = parser.parse_args(argv)
    if args.dtype == "bf16" and args.bf16 == "on":
        parser.error("--dtype bf16 already holds our weights in bf16: leave out --bf16 on (autocast)")
    print(cpu_summary_line())

    device = torch.device(args.device)
    torch.manual_seed(0)
    config = tiny_clipvg_config() if args.quick else CLIPVGConfig()
    if args.quick:
        args.images, args.per_image, args.train_batch, args.repeats = 2, 3, 3, 2
    model = CLIPVGForGrounding(config).to(device).eval()
    frozen = CLIPVGForGrounding(CLIPVGConfig(**{**config.to_dict(), "trainable_clip": "frozen"})).to(device)
    frozen.load_state_dict(model.state_dict())
    frozen.apply_trainable_clip_policy()
    use_bf16 = args.bf16 == "on" or (args.bf16 == "auto" and device.type == "cuda" and args.dtype == "fp32")
    autocast = torch.bfloat16 if use_bf16 else None
    weights_dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    ours_model = model  # our evaluation paths: the same weights, converted once when --dtype bf16
    if weights_dtype != torch.float32:
        ours_model = CLIPVGForGrounding(config).to(device).eval()
        ours_model.load_state_dict(model.state_dict())
        ours_model.to_inference_dtype(weights_dtype)
    load_before = os.getloadavg()
    gemm_size = 4096 if device.type == "cuda" else (256 if args.quick else 2048)
    probe = lambda: gemm_flops_per_second(gemm_size, device=device)  # noqa: E731

    # ---- evaluation --------------------------------------------------------------------------------------------
    eval_batch = to_device(make_batch(config, args.images, args.per_image, seed=1), device)
    expressions = len(eval_batch["image_index"])
    eval_paths = {
        "official settings": eval_official(model, eval_batch, None),
        "ours, image per expression": eval_ours_ungrouped(ours_model, eval_batch, autocast),
        "ours (grouped by image)": eval_ours(ours_model, eval_batch, autocast),
    }
    # the warm-up call of each path measures its memory and keeps its boxes
    times, warm = interleaved(
        eval_paths,
        args.repeats,
        device,
        probe=probe,
        warm_up=lambda fn: peak_memory(fn, device, persistent_tensors(model)),
    )
    gemm_probes = times.pop("probe")
    eval_rows = summarise(times, expressions, "official settings")
    reference = warm["official settings"][1].float()
    for name, fn in eval_paths.items():
        eval_rows[name]["peak_bytes"], boxes = warm[name]
        eval_rows[name]["max_abs_box_diff"] = float((boxes.float() - reference).abs().max())
        eval_rows[name]["flops_per_unit"] = count_flops(fn) / expressions

    # ---- training ----------------------------------------------------------------------------------------------
    train_batch = to_device(make_batch(config, args.train_batch, 1, seed=2), device)
    steps = {
        "official settings": TrainStep(model, train_batch, official=True, autocast=None),
        "ours": TrainStep(model, train_batch, official=False, autocast=autocast),
        "ours, frozen ViT (deviation)": TrainStep(frozen, train_batch, official=False, autocast=autocast),
    }
    times = interleaved(steps, args.repeats, device, probe=probe)[0]
    gemm_probes += times.pop("probe")
    train_rows = summarise(times, args.train_batch, "official settings")
    for name, step in steps.items():  # after the warm-up step, so the optimizer state already exists
        existing = persistent_tensors(step.model, step.optimizer)
        train_rows[name]["peak_bytes"] = peak_memory(step, device, existing)[0]
        train_rows[name]["flops_per_unit"] = count_flops(step) / args.train_batch
    load_after = os.getloadavg()
    gemm = statistics.median(gemm_probes)  # the machine's matrix-product speed while the paths ran
    low = autocast or weights_dtype != torch.float32
    gemm_bf16 = gemm_flops_per_second(gemm_size, device=device, dtype=torch.bfloat16) if low else None

    size = "tiny (--quick)" if args.quick else "ViT-B/16, 224 px, random weights"
    print(
        f"CLIP-VG model benchmark: {size}; device {device} ({platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads); {args.repeats} interleaved repetitions"
    )
    print(
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min); measured GEMM "
        f"{gemm / 1e9:.1f} GFLOP/s fp32 ({gemm_size}^2, median over repetitions)"
        + (f", {gemm_bf16 / 1e9:.1f} GFLOP/s bf16" if gemm_bf16 else "")
        + ("; ours under bf16 autocast" if autocast else "")
        + ("; our evaluation paths with bf16 weights (box head fp32)" if weights_dtype != torch.float32 else "")
    )
    print_table(
        f"Evaluation: {args.images} images x {args.per_image} expressions per batch (max|Δbox| vs the "
        "official settings)",
        "expr",
        eval_rows,
        gemm,
    )
    print_table(
        f"Training step: batch {args.train_batch} (forward, loss, backward, AdamW)", "sample", train_rows, gemm
    )
    result = {
        "config": "tiny" if args.quick else "ViT-B/16",
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "gemm_flops_per_s_fp32": gemm,
        "gemm_flops_per_s_bf16": gemm_bf16,
        "autocast": str(autocast),
        "ours_eval_dtype": str(weights_dtype).replace("torch.", ""),
        "cpu": cpu_summary(),
        "eval": {"images": args.images, "per_image": args.per_image, "paths": eval_rows},
        "train": {"batch": args.train_batch, "paths": train_rows},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.json}")
    return result


if __name__ == "__main__":
    main()
