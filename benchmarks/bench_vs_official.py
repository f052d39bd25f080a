#!/usr/bin/env python
"""CLIP-VG against the official code itself: evaluation and training step side by side, in one process.

The official model (``ML_CLIP_VG`` with random ViT-B/16 CLIP weights) is imported at run time from a checkout of
the official repository that the user provides (``--official_repo``; nothing of it is part of this project). Its
weights are converted into :class:`clipvg_hf.CLIPVGForGrounding` with this project's converter, so both models hold
the same numbers. Both get the same inputs: letterboxed COCO-sized images (random pixels) and RefCOCO-like
expressions tokenised with the official tokenizer.

- **evaluation** (expressions/s): ``--images`` images with ``--per_image`` expressions each, one row per
  expression. Official: ``model(NestedTensor(images, pad mask), NestedTensor(77-token ids, mask))`` under
  ``torch.no_grad()``, as its ``eval.py`` does. Ours: what ``clipvg_hf.evaluation`` runs on a batch of its loader,
  ``model(**batch)`` under ``torch.no_grad()`` with each distinct image once plus ``image_index`` and the text
  padded to the longest expression.
- **training step** (samples/s, batch ``--train_batch``): official: the body of its ``engine.train_one_epoch``
  (forward, ``trans_vg_loss``, ``reduce_dict``, ``.item()``, ``zero_grad``, backward, AdamW with the parameter
  groups of ``train_clip_vg.py``). Ours: the body of ``clipvg_hf.training``'s loop (``model(**batch)`` with labels,
  backward, the optimizer ``clipvg_hf.training`` builds by default, ``zero_grad``, ``.item()``). Same math: the
  official recipe trains the visual position embedding, so both run the backward through the ViT.

The two sides run as interleaved pairs (official, ours / ours, official, alternating), ``--repeats`` pairs per
measurement; the table gives medians, the median and range of the per-pair ratios, the largest box difference,
the load average while the pairs ran, and utilisation: achieved FLOP/s (FLOPs of each side's own computation,
counted once with PyTorch's FLOP formulas, fused CPU attention included) over the FLOP/s of a 2048 x 2048 fp32
matrix product measured on the same threads before every pair, and the median minor page faults per call.
``--profile`` adds a ``torch.profiler`` table of
where our evaluation and training step spend their time. ``--dtype bf16`` runs our evaluation with the weights
converted once to bf16 (box head fp32, as ``clipvg-evaluate --dtype bf16``), its utilisation then against a bf16
matrix product; ``--dtype int8`` with its linear layers dynamically quantised to int8 (``clipvg-evaluate --dtype
int8``, CPU only); every run first prints the CPU line (model, dispatched ISA, bf16 units). Not a test.

    python -m benchmarks.bench_vs_official --official_repo /tmp/clipvg_orig            # ~6 min on 2 cores
    python -m benchmarks.bench_vs_official --official_repo /tmp/clipvg_orig --quick    # smoke run

The interpreter needs the official code's imports (torchvision, ftfy, regex, scipy) next to this package; see
``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import os
import platform
import random
import resource
import statistics
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

# Letterboxed-image sizes (height, width) of MS-COCO photos, as RefCOCO uses them.
COCO_SIZES = ((480, 640), (640, 427), (427, 640), (640, 480), (375, 500), (640, 640), (512, 640), (500, 333))
# RefCOCO-like referring expressions (RefCOCO averages 3.6 words, RefCOCOg 8.4).
EXPRESSIONS = (
    "man in the blue jacket on the left",
    "the little girl holding a kite",
    "brown horse closest to the fence",
    "pizza slice on the far right of the tray",
    "tall lamp behind the sofa",
    "woman with a white purse walking away from the camera",
    "the middle bowl of soup",
    "green train car at the back",
    "boy in a red cap swinging the bat",
    "cat sleeping on the laptop keyboard",
    "left monitor",
    "person partly cut off at the bottom right corner",
    "bottle of wine next to the glasses",
    "the bigger elephant in front",
)
IMAGE_SIZE = 224
CPU = torch.device("cpu")


# ----------------------------------------------------------------------------------------------------------------
# The official code, imported from the user's checkout
# ----------------------------------------------------------------------------------------------------------------
def import_torchvision() -> Any:
    """Import torchvision without its compiled ops, which a CUDA wheel cannot register on a CPU-only torch.

    Only its transforms are used (by the official code and by transformers, which imports torchvision when it is
    installed), so it must be imported this way before either.
    """
    import torch.library

    register_fake = torch.library.register_fake

    def skip_torchvision_fakes(name, *args, **kwargs):
        if isinstance(name, str) and name.startswith("torchvision::"):
            return lambda fn: fn
        return register_fake(name, *args, **kwargs)

    torch.library.register_fake = skip_torchvision_fakes
    try:
        import torchvision
    finally:
        torch.library.register_fake = register_fake
    return torchvision


def import_official(repo: Path) -> types.SimpleNamespace:
    """Import what the benchmark uses from the official repository on today's PyTorch and torchvision.

    Call it after [`import_torchvision`] and importing ``clipvg_hf``. The official code imports two things that no
    longer install and that the model does not use, ``pkg_resources`` (only for ``packaging``) and BERT's
    tokenizer, and ``utils/misc.py`` parses ``torchvision.__version__[:3]`` as a number, which fails for 0.1x.
    """
    if not (repo / "models" / "clip_vg.py").is_file():
        raise SystemExit(f"error: --official_repo {repo}: no models/clip_vg.py there (a CLIP-VG checkout is needed)")
    import packaging.version
    import torchvision

    sys.modules.setdefault("pkg_resources", types.SimpleNamespace(packaging=packaging))
    bert = types.ModuleType("pytorch_pretrained_bert")
    bert.tokenization = types.SimpleNamespace(BertTokenizer=object)
    sys.modules.setdefault("pytorch_pretrained_bert", bert)
    sys.modules.setdefault("pytorch_pretrained_bert.tokenization", bert.tokenization)
    version, torchvision.__version__ = torchvision.__version__, "0.10.0"
    sys.path.insert(0, str(repo))  # only while importing: its top-level ``datasets`` would shadow Hugging Face's
    try:
        import models.clip as official_clip

        sys.modules.setdefault("clip", official_clip)
        import models.clip.clip as clip_loader
        import models.clip_vg as clip_vg
        from models.clip.model import ModifiedCLIP, convert_weights
        from utils import loss_utils, misc
    finally:
        torchvision.__version__ = version
        sys.path.remove(str(repo))
    # the pad mask is resized to the patch grid without antialiasing, as torchvision 0.10 (the official pin) did
    clip_vg.Resize = lambda size: torchvision.transforms.Resize(size, antialias=False)
    return types.SimpleNamespace(
        clip=official_clip,
        clip_loader=clip_loader,
        clip_vg=clip_vg,
        ModifiedCLIP=ModifiedCLIP,
        convert_weights=convert_weights,
        loss_utils=loss_utils,
        misc=misc,
    )


def build_official(
    official: types.SimpleNamespace, seed: int, device: str = "cpu"
) -> tuple[torch.nn.Module, argparse.Namespace]:
    """``ML_CLIP_VG`` for ViT-B/16 at 224 px on random CLIP weights (``clip.load`` returns them, nothing is read).

    On CUDA the CLIP trunk is converted to fp16 first, as the official ``clip.load`` does on a GPU (and on the CPU
    keeps fp32); the model's text encoder records the trunk's dtype when it is built.
    """
    torch.manual_seed(seed)
    clip_model = (
        official.ModifiedCLIP(
            embed_dim=512,
            image_resolution=IMAGE_SIZE,
            vision_layers=12,
            vision_width=768,
            vision_patch_size=16,
            context_length=77,
            vocab_size=49408,
            transformer_width=512,
            transformer_heads=8,
            transformer_layers=12,
        )
        .float()
        .eval()
    )
    if device != "cpu":
        official.convert_weights(clip_model)
    official.clip_loader.load = lambda *args, **kwargs: (clip_model, None)
    args = argparse.Namespace(  # train_clip_vg.py's defaults for ViT-B/16
        model="ViT-B/16",
        imsize=IMAGE_SIZE,
        max_query_len=77,
        device=device,
        vl_hidden_dim=512,
        vl_nheads=8,
        vl_dim_feedforward=2048,
        vl_enc_layers=6,
        vl_dropout=0.1,
        vl_dec_layers=6,
        dropout=0.1,
        nheads=8,
        dim_feedforward=2048,
        pre_norm=False,
        lr=2.5e-4,
        lr_bert=1e-5,
        lr_visu_cnn=1e-5,
        lr_visu_tra=1e-5,
        weight_decay=1e-4,
    )
    with contextlib.redirect_stdout(io.StringIO()):  # the constructor prints
        model = official.clip_vg.ML_CLIP_VG(args)
    return model.to(device), args


def official_optimizer(model: torch.nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
    """AdamW over the four parameter groups of ``train_clip_vg.py`` (for ``ML_CLIP_VG`` three stay empty)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        [p for n, p in named if "visumodel" not in n and "textmodel" not in n],
        [p for n, p in named if "visumodel" in n and "backbone" in n],
        [p for n, p in named if "visumodel" in n and "backbone" not in n],
        [p for n, p in named if "textmodel" in n],
    ]
    rates = (args.lr, args.lr_visu_cnn, args.lr_visu_tra, args.lr_bert)
    return torch.optim.AdamW(
        [{"params": g, "lr": r} for g, r in zip(groups, rates)], lr=args.lr, weight_decay=args.weight_decay
    )


def convert_to_ours(model: torch.nn.Module, args: argparse.Namespace):
    """The official model's weights in a ``CLIPVGForGrounding``, through the project's checkpoint converter."""
    from clipvg_hf import CLIPVGForGrounding
    from clipvg_hf.conversion.clipvg import config_from_state_dict, convert_state_dict

    state_dict = model.state_dict()
    config = config_from_state_dict(state_dict, args)
    converted, _ = convert_state_dict(state_dict)
    ours = CLIPVGForGrounding(config)
    ours.load_state_dict(converted, strict=True)  # fp16 trunk weights (CUDA) are loaded as the fp32 numbers they hold
    return ours.to(next(model.parameters()).device)


# ----------------------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------------------
def letterboxed_images(count: int, seed: int, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` images (random pixels) of COCO sizes, long side resized to 224 and padded to a square.

    Returns pixels (N, 3, 224, 224) and the official pad mask (N, 224, 224), 1 = padding. Evaluation centres the
    image (the official letterbox); training places it at a random offset (``aug_translate``).
    """
    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.zeros(count, 3, IMAGE_SIZE, IMAGE_SIZE)
    pad = torch.ones(count, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.int32)
    for i in range(count):
        height, width = COCO_SIZES[(seed + i) % len(COCO_SIZES)]
        scale = IMAGE_SIZE / max(height, width)
        h, w = round(height * scale), round(width * scale)
        if train:
            top, left = rng.randint(0, IMAGE_SIZE - h), rng.randint(0, IMAGE_SIZE - w)
        else:
            top, left = round((IMAGE_SIZE - h) / 2.0 - 0.1), round((IMAGE_SIZE - w) / 2.0 - 0.1)
        pixels[i, :, top : top + h, left : left + w] = torch.randn(3, h, w, generator=generator)
        pad[i, top : top + h, left : left + w] = 0
    return pixels, pad


def tokenized(official: types.SimpleNamespace, count: int, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    """77-token ids (int32, zero padding) and their mask, as the official dataset builds them."""
    ids = torch.cat([official.clip.tokenize(EXPRESSIONS[(offset + i) % len(EXPRESSIONS)]) for i in range(count)])
    return ids.int(), (ids > 0).int()


def random_boxes(count: int, seed: int) -> torch.Tensor:
    """Normalised (cx, cy, w, h) training targets."""
    generator = torch.Generator().manual_seed(seed)
    centres = 0.3 + 0.4 * torch.rand(count, 2, generator=generator)
    sizes = 0.1 + 0.4 * torch.rand(count, 2, generator=generator)
    return torch.cat([centres, sizes], dim=1)


def ours_text(ids77: torch.Tensor, mask77: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same tokens cut to the longest expression, as the project's collator pads them."""
    length = int(mask77.sum(1).max())
    return ids77[:, :length].long(), mask77[:, :length].long()


# ----------------------------------------------------------------------------------------------------------------
# The two sides: each returns a zero-argument callable doing one unit of work
# ----------------------------------------------------------------------------------------------------------------
def autocast_context(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``dtype`` on ``device``'s type, or nothing."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def official_eval(official, model, pixels, pad, ids77, mask77) -> Callable[[], torch.Tensor]:
    """The official ``eval.py`` on one batch: the batch moved to the model's device, forward under no_grad."""
    nested, device = official.misc.NestedTensor, next(model.parameters()).device

    def run() -> torch.Tensor:
        model.eval()
        images, texts = nested(pixels, pad).to(device), nested(ids77, mask77).to(device)
        with torch.no_grad():
            return model(images, texts)

    return run


def ours_eval(
    model, images, image_pad, image_index, ids77, mask77, autocast: torch.dtype | None = None
) -> Callable[[], torch.Tensor]:
    """``clipvg_hf.evaluation``'s call on one batch: each distinct image once plus ``image_index``, moved to the model's
    device, under no_grad (and autocast to ``autocast`` when given, as ``--bf16`` does)."""
    batch = dict(pixel_values=images, pixel_mask=1 - image_pad.long(), image_index=image_index)
    batch["input_ids"], batch["attention_mask"] = ours_text(ids77, mask77)

    def run() -> torch.Tensor:
        model.eval()
        inputs = {key: value.to(model.device) for key, value in batch.items()}
        with torch.no_grad(), autocast_context(model.device, autocast):
            return model(**inputs).pred_boxes[:, 0].float()

    return run


def official_train_step(official, model, optimizer, pixels, pad, ids77, mask77, boxes) -> Callable[[], float]:
    """The body of the official ``engine.train_one_epoch`` for one batch (``max_norm`` 0: no clipping)."""
    nested, device = official.misc.NestedTensor, next(model.parameters()).device
    loss_utils, misc = official.loss_utils, official.misc

    def run() -> float:
        model.train()
        images, texts, target = nested(pixels, pad).to(device), nested(ids77, mask77).to(device), boxes.to(device)
        output = model(images, texts)
        loss_dict = loss_utils.trans_vg_loss(output, target)
        losses = sum(loss_dict[k] for k in loss_dict)
        loss_value = sum(misc.reduce_dict(loss_dict).values()).item()
        optimizer.zero_grad()
        losses.backward()
        optimizer.step()
        return loss_value

    return run


def ours_optimizer(model) -> torch.optim.Optimizer:
    """The optimizer ``clipvg_hf.training`` builds with its default arguments."""
    from clipvg_hf.training import TrainArguments, build_optimizer

    return build_optimizer([p for p in model.parameters() if p.requires_grad], TrainArguments(output_dir="unused"))


def ours_train_step(
    model, optimizer, pixels, pad, ids77, mask77, boxes, autocast: torch.dtype | None = None
) -> Callable[[], float]:
    """The body of ``clipvg_hf.training``'s loop for one batch on one process: the batch moved to the model's device,
    the forward under autocast to ``autocast`` when given (as accelerate's mixed precision does)."""
    from torch.autograd.profiler import record_function

    ids, mask = ours_text(ids77, mask77)
    batch = dict(pixel_values=pixels, pixel_mask=1 - pad.long(), input_ids=ids, attention_mask=mask, labels=boxes)

    def run() -> float:
        model.train()
        inputs = {key: value.to(model.device) for key, value in batch.items()}
        with autocast_context(model.device, autocast):
            out = model(**inputs)
        with record_function("## backward"):  # stage labels for --profile (no cost otherwise)
            out.loss.backward()
        with record_function("## optimizer step"):
            optimizer.step()
            optimizer.zero_grad()
        return out.loss.item()

    return run


# ----------------------------------------------------------------------------------------------------------------
# Measurement
# ----------------------------------------------------------------------------------------------------------------
CPU_ATTENTION = {
    "_scaled_dot_product_flash_attention_for_cpu": 4,
    "_scaled_dot_product_flash_attention_for_cpu_backward": 8,
}


class FlopCount(TorchDispatchMode):
    """FLOPs of the matrix products run while active: PyTorch's FLOP formulas, plus its fused CPU attention.

    Fused attention counts ``4·B·H·Lq·Lk·d`` forward and twice that backward (the two products of the forward, the
    four of the backward; PyTorch's formulas count CUDA attention the same way).
    """

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        formula = flop_registry.get(packet)
        if formula is not None:
            self.flops += formula(*args, **kwargs, out_val=out)
        elif packet.__name__ == "linear_dynamic":  # int8 dynamically quantised linear (--dtype int8)
            self.flops += 2 * args[0].numel() * out.shape[-1]
        elif packet.__name__ in CPU_ATTENTION:
            query, key = (args[1], args[2]) if packet.__name__.endswith("backward") else (args[0], args[1])
            batch, heads, length_q, dim = query.shape
            self.flops += CPU_ATTENTION[packet.__name__] * batch * heads * length_q * key.shape[-2] * dim
        return out


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call. PyTorch's fused multi-head attention kernel is switched off while counting (it is one
    opaque op); the unfused path it falls back to computes the same products."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with FlopCount() as counter:
            fn()
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return counter.flops


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU), so that a timing covers what a call launched."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gemm_flops_per_second(
    size: int = 2048, repeats: int = 3, device: torch.device = CPU, dtype: torch.dtype = torch.float32
) -> float:
    """FLOP/s of a ``size`` x ``size`` matrix product on ``device`` (on the CPU: the current threads), best of
    ``repeats``."""
    a, b = torch.randn(size, size, device=device, dtype=dtype), torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def minor_page_faults() -> int:
    """Minor page faults of this process so far: memory the allocator took fresh from the system and touched."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def interleaved_pairs(
    official: Callable[[], Any],
    ours: Callable[[], Any],
    repeats: int,
    gemm_size: int,
    device: torch.device = CPU,
    gemm_dtype: torch.dtype = torch.float32,
) -> dict:
    """Seconds and minor page faults per call of both sides in ``repeats`` pairs (alternating which goes first),
    after one warm-up each, with the GEMM FLOP/s measured before each pair and the 1-minute load average after it.

    The page faults show how much of a call went into touching freshly mapped memory: on the CPU every large
    temporary can land in pages the C allocator returned to the system, and faulting them back in costs time."""
    official()
    ours()
    times: dict[str, list[float]] = {"official": [], "ours": []}
    faults: dict[str, list[int]] = {"official": [], "ours": []}
    gemm, load = [], []
    for pair in range(repeats):
        gemm.append(gemm_flops_per_second(gemm_size, device=device, dtype=gemm_dtype))
        order = (("official", official), ("ours", ours)) if pair % 2 == 0 else (("ours", ours), ("official", official))
        for name, fn in order:
            faults_before = minor_page_faults()
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
            faults[name].append(minor_page_faults() - faults_before)
        load.append(os.getloadavg()[0])
    return {"times_s": times, "minor_faults": faults, "gemm_flops_per_s": gemm, "load_average": load}


def summarise(measured: dict, units: int, flops: dict[str, int]) -> dict[str, Any]:
    """Medians, per-pair ratios and utilisation (each pair's achieved FLOP/s over the GEMM FLOP/s before it)."""
    times, gemm = measured["times_s"], measured["gemm_flops_per_s"]
    ratios = sorted(a / b for a, b in zip(times["official"], times["ours"]))
    out: dict[str, Any] = {
        "units": units,
        "ratio_median": statistics.median(ratios),
        "ratio_min": ratios[0],
        "ratio_max": ratios[-1],
        "gemm_median_flops_per_s": statistics.median(gemm),
        "load_average_min": min(measured["load_average"]),
        "load_average_max": max(measured["load_average"]),
        **measured,
    }
    for side in ("official", "ours"):
        seconds = times[side]
        out[side] = {
            "per_s": units / statistics.median(seconds),
            "median_s": statistics.median(seconds),
            "flops_per_unit": flops[side] / units,
            "achieved_flops_per_s": flops[side] / statistics.median(seconds),
            "utilisation": statistics.median(flops[side] / s / g for s, g in zip(seconds, gemm)),
            "minor_faults_median": statistics.median(measured["minor_faults"][side]),
        }
    return out


# ----------------------------------------------------------------------------------------------------------------
# Profile
# ----------------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def stage_labels(model) -> Any:
    """Label the forward of the model's stages (vision tower, text tower, fusion, box head) in profiler traces."""
    from torch.autograd.profiler import record_function

    vision = model.clip.vision_model
    stages = [("vision tower", m) for m in (vision.embeddings, vision.pre_layrnorm, *vision.encoder.layers)]
    stages += [("text tower", model.clip.text_model), ("fusion", model.fusion), ("box head", model.box_head)]
    handles, open_labels = [], []

    def enter(label: str) -> Callable:
        def hook(_module, _args) -> None:
            open_labels.append(record_function(f"## {label}"))
            open_labels[-1].__enter__()

        return hook

    def leave(_module, _args, _output) -> None:
        open_labels.pop().__exit__(None, None, None)

    for label, module in stages:
        handles += [module.register_forward_pre_hook(enter(label)), module.register_forward_hook(leave)]
    packed = model.fusion.forward_packed  # the packed fusion is a method call, not a module call

    def labelled_packed(*args, **kwargs):
        with record_function("## fusion"):
            return packed(*args, **kwargs)

    model.fusion.forward_packed = labelled_packed
    try:
        yield
    finally:
        del model.fusion.forward_packed
        for handle in handles:
            handle.remove()


def profile(name: str, fn: Callable[[], Any], model, rows: int) -> str:
    """``torch.profiler`` table of two calls of ``fn``: the labelled stages (the towers, fusion and box head
    forward; backward and optimizer step; host time), then the self time of the costliest ops (on CUDA their device
    time)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    on_cuda = model.device.type == "cuda"
    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA] if on_cuda else [ProfilerActivity.CPU]
    fn()
    with stage_labels(model), torch_profile(activities=activities) as prof:
        for _ in range(2):
            fn()
        synchronize(model.device)
    averages = prof.key_averages()
    self_time = (lambda e: e.self_device_time_total) if on_cuda else (lambda e: e.self_cpu_time_total)
    total = sum(event.self_cpu_time_total for event in averages)
    lines = [f"\nProfile of our {name} (2 calls; self CPU time, {total / 2e3:.0f} ms per call)"]
    stages = [event for event in averages if event.key.startswith("## ")]
    for event in sorted(stages, key=lambda e: -e.cpu_time_total):
        lines.append(
            f"  stage {event.key[3:]:<28}{event.cpu_time_total / 2e3:>9.1f} ms  {event.cpu_time_total / total:>6.1%}"
        )
    ops = [event for event in averages if not event.key.startswith("## ")]
    op_total = sum(self_time(event) for event in ops) or 1
    lines.append(f"  ops by self {'device' if on_cuda else 'CPU'} time ({op_total / 2e3:.0f} ms per call):")
    for event in sorted(ops, key=lambda e: -self_time(e))[:rows]:
        lines.append(
            f"  {event.key:<60}{self_time(event) / 2e3:>9.1f} ms  {self_time(event) / op_total:>6.1%}  "
            f"x{event.count // 2}"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------
def print_table(title: str, unit: str, result: dict[str, Any]) -> None:
    print(f"\n{title}")
    header = (
        f"{'side':<10}{unit + '/s':>10}{'median s':>10}{'GFLOP/' + unit:>13}{'GFLOP/s':>9}{'util.':>7}"
        f"{'page faults':>13}"
    )
    print(header)
    print("-" * len(header))
    for side in ("official", "ours"):
        row = result[side]
        print(
            f"{side:<10}{row['per_s']:>10.3f}{row['median_s']:>10.3f}{row['flops_per_unit'] / 1e9:>13.2f}"
            f"{row['achieved_flops_per_s'] / 1e9:>9.1f}{row['utilisation']:>7.0%}{row['minor_faults_median']:>13,.0f}"
        )
    pairs = ", ".join(f"{a / b:.2f}" for a, b in zip(result["times_s"]["official"], result["times_s"]["ours"]))
    print(
        f"ours / official: {result['ratio_median']:.2f}x median of {len(result['times_s']['ours'])} interleaved "
        f"pairs (range {result['ratio_min']:.2f}-{result['ratio_max']:.2f}; pairs {pairs}); "
        f"GEMM {result['gemm_median_flops_per_s'] / 1e9:.0f} GFLOP/s median; load average "
        f"{result['load_average_min']:.2f}-{result['load_average_max']:.2f}"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--official_repo",
        type=Path,
        required=True,
        help="a checkout of the official CLIP-VG repository (github.com/linhuixiao/CLIP-VG)",
    )
    parser.add_argument("--images", type=int, default=4, help="images per evaluation batch")
    parser.add_argument("--per_image", type=int, default=7, help="expressions per image (RefCOCO: about 7)")
    parser.add_argument("--train_batch", type=int, default=8, help="samples per training step")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved pairs per measurement")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for both sides")
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="where both sides run; on cuda the official CLIP trunk is fp16, as its clip.load makes it on a GPU",
    )
    parser.add_argument(
        "--bf16",
        choices=("auto", "on", "off"),
        default="auto",
        help="bf16 autocast for our side: auto = on CUDA only (as accelerate's bf16 mixed precision and "
        "clipvg-evaluate --bf16); on = also on the CPU (not the same math); off = fp32",
    )
    parser.add_argument(
        "--dtype",
        choices=("fp32", "bf16", "int8"),
        default="fp32",
        help="our evaluation's weights: bf16 = converted once to bf16, box head fp32 (clipvg-evaluate --dtype bf16), "
        "utilisation against a bf16 GEMM; int8 = linear layers dynamically quantised to int8, box head fp32 "
        "(clipvg-evaluate --dtype int8; CPU only), utilisation against the fp32 GEMM; the official side and both "
        "training steps stay as they are",
    )
    parser.add_argument("--skip", choices=("eval", "train"), help="leave out one of the two measurements")
    parser.add_argument("--profile", action="store_true", help="also profile our evaluation and training step")
    parser.add_argument("--quick", action="store_true", help="1 pair, 2 images x 3 expressions, batch 2 (smoke)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    for name in ("images", "per_image", "train_batch", "repeats", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.quick:
        args.images, args.per_image, args.train_batch, args.repeats = 2, 3, 2, 1
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: this torch sees no CUDA device")
    if args.dtype != "fp32" and args.bf16 == "on":
        parser.error(f"--dtype {args.dtype} already sets our weights' format: leave out --bf16 on (autocast)")
    if args.dtype == "int8" and args.device != "cpu":
        parser.error("--dtype int8 runs on the CPU only (dynamically quantised linear layers)")
    device = torch.device(args.device)
    autocast = torch.bfloat16 if args.bf16 == "on" or (args.bf16 == "auto" and device.type == "cuda") else None
    eval_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.qint8}[args.dtype]
    eval_autocast = None if eval_dtype != torch.float32 else autocast  # bf16 weights: no autocast on top
    torch.set_num_threads(args.threads)
    import_torchvision()  # before anything imports transformers (clipvg_hf does)
    from clipvg_hf.hardware import cpu_summary
    from clipvg_hf.precision import cpu_summary_line

    print(cpu_summary_line(), flush=True)
    import clipvg_hf.inference  # noqa: F401  (before the official packages, whose names it must not see)
    import clipvg_hf.training  # noqa: F401

    official = import_official(args.official_repo.resolve())
    model_official, official_args = build_official(official, seed=0, device=args.device)
    model_ours = convert_to_ours(model_official, official_args).float()
    model_eval = model_ours  # our evaluation's weights, converted once when --dtype bf16
    if eval_dtype != torch.float32:
        model_eval = convert_to_ours(model_official, official_args).float().to_inference_dtype(eval_dtype)
    gemm_size = 512 if args.quick else (8192 if device.type == "cuda" else 2048)
    gemm_dtype = autocast or torch.float32
    measure = functools.partial(interleaved_pairs, device=device, gemm_dtype=gemm_dtype)
    # the peak of the dtype in use (int8: the fp32 peak, the linears' inputs and outputs are fp32)
    eval_gemm_dtype = eval_dtype if eval_dtype.is_floating_point and eval_dtype != torch.float32 else gemm_dtype
    measure_eval = functools.partial(interleaved_pairs, device=device, gemm_dtype=eval_gemm_dtype)
    load_start = os.getloadavg()
    result: dict[str, Any] = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "attn_implementation": model_ours.config._attn_implementation,
        "load_average_start": load_start,
        "gemm_size": gemm_size,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine(),
        "ours_autocast": str(autocast).replace("torch.", "") if autocast else None,
        "ours_eval_dtype": "int8" if args.dtype == "int8" else str(eval_dtype).replace("torch.", ""),
        "cpu": cpu_summary(),
    }
    profiles = []

    if args.skip != "eval":
        count = args.images * args.per_image
        images, image_pad = letterboxed_images(args.images, seed=7, train=False)
        image_index = torch.arange(args.images).repeat_interleave(args.per_image)
        pixels, pad = images[image_index].contiguous(), image_pad[image_index].contiguous()  # one row per expression
        ids77, mask77 = tokenized(official, count, offset=0)
        run_official = official_eval(official, model_official, pixels, pad, ids77, mask77)
        run_ours = ours_eval(model_eval, images, image_pad, image_index, ids77, mask77, eval_autocast)
        delta = (run_official().reshape(-1, 4) - run_ours().reshape(-1, 4)).abs().max().item()
        flops = {"official": count_flops(run_official), "ours": count_flops(run_ours)}
        result["eval"] = summarise(measure_eval(run_official, run_ours, args.repeats, gemm_size), count, flops)
        result["eval"].update(
            max_abs_box_diff=delta,
            text_length=int(mask77.sum(1).max()),
            padded_patch_share=patch_padding_share(model_ours, image_pad),
        )
        if args.profile:
            profiles.append(profile("evaluation", run_ours, model_eval, rows=18))

    if args.skip != "train":
        pixels, pad = letterboxed_images(args.train_batch, seed=101, train=True)
        ids77, mask77 = tokenized(official, args.train_batch, offset=3)
        boxes = random_boxes(args.train_batch, seed=101)
        run_official = official_train_step(
            official,
            model_official,
            official_optimizer(model_official, official_args),
            pixels,
            pad,
            ids77,
            mask77,
            boxes,
        )
        optimizer = ours_optimizer(model_ours)
        run_ours = ours_train_step(model_ours, optimizer, pixels, pad, ids77, mask77, boxes, autocast)
        run_official(), run_ours()  # the optimizer states exist before counting
        flops = {"official": count_flops(run_official), "ours": count_flops(run_ours)}
        result["train"] = summarise(measure(run_official, run_ours, args.repeats, gemm_size), args.train_batch, flops)
        result["train"]["optimizer"] = type(optimizer).__name__ + (
            " (fused)" if optimizer.defaults.get("fused") else ""
        )
        if args.profile:
            profiles.append(profile("training step", run_ours, model_ours, rows=18))
    result["load_average_end"] = os.getloadavg()

    print(
        f"CLIP-VG vs the official code ({args.official_repo}): ViT-B/16, 224 px, random weights converted with the "
        f"project's converter; {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, our attention: {result['attn_implementation']}; device "
        f"{result['device']}"
        + (f", ours under {result['ours_autocast']} autocast" if autocast else "")
        + (
            f"; our evaluation with {result['ours_eval_dtype']} weights (box head fp32)"
            if args.dtype != "fp32"
            else ""
        )
    )
    print(cpu_summary_line())
    print(
        f"load average (1, 5, 15 min) at start {', '.join(f'{x:.2f}' for x in load_start)}; at end "
        f"{', '.join(f'{x:.2f}' for x in result['load_average_end'])}; GEMM {gemm_size}^2 "
        f"{str(gemm_dtype).replace('torch.', '')}"
        + (f" (evaluation: {result['ours_eval_dtype']})" if args.dtype != "fp32" else "")
    )
    if "eval" in result:
        e = result["eval"]
        print_table(
            f"Evaluation: {args.images} images x {args.per_image} expressions, one row per expression "
            f"(longest text {e['text_length']} tokens, {e['padded_patch_share']:.0%} of the patches are "
            f"letterbox padding); max |Δbox| {e['max_abs_box_diff']:.1e}",
            "expr",
            e,
        )
    if "train" in result:
        print_table(
            f"Training step: batch {args.train_batch} (forward, loss, backward, optimizer; ours: "
            f"{result['train']['optimizer']})",
            "sample",
            result["train"],
        )
    for text in profiles:
        print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return result


def patch_padding_share(model, pad: torch.Tensor) -> float:
    """Share of the patches that the fusion treats as letterbox padding."""
    from clipvg_hf.modeling_clipvg import patch_padding_mask

    return patch_padding_mask(1 - pad.long(), model.config.num_patches_per_side).float().mean().item()


if __name__ == "__main__":
    main()
