"""The number format a command runs its model in: ``--dtype auto|fp32|bf16|int8``.

``fp32`` is the exact path (the parity tests' numbers). ``bf16`` holds the weights in bfloat16 once, at load time
(:func:`clipvg_hf.loading.load_grounding_model`), not autocast per call: the matrix products, SDPA and the packed
fusion then run in bf16, while the box head and the final box computation stay fp32. ``auto`` picks bf16 where the
hardware has bf16 units (a CUDA GPU that supports it; a CPU with AMX or AVX512-BF16, read by
:mod:`clipvg_hf.hardware`) and fp32 everywhere else. ``bf16`` on hardware without such units runs (PyTorch emulates
it) but slowly, which the command says in one line on stderr. ``int8`` (CPU only) replaces the linear layers
outside the box head by PyTorch's dynamically quantised int8 linears (``torch.ao.quantization.quantize_dynamic``: int8
weights, activations quantised per call; VNNI where the CPU has it); the rest stays fp32. ``auto`` never picks it;
on a GPU it is refused.

Whatever was picked is recorded (:func:`dtype_name`, :func:`hardware_record`): results files, reliability scores and model cards name
the dtype of their numbers.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from .errors import UsageError
from .hardware import cpu_summary

__all__ = [
    "DTYPE_CHOICES",
    "add_dtype_argument",
    "bf16_supported",
    "bf16_units",
    "cpu_summary_line",
    "dtype_choice",
    "dtype_name",
    "hardware_record",
    "resolve_dtype",
]

#: The values of ``--dtype``; ``auto`` resolves to one of the others.
DTYPE_CHOICES = ("auto", "fp32", "bf16", "int8")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.qint8}
_NAMES = {"float32": "fp32", "fp32": "fp32", "bfloat16": "bf16", "bf16": "bf16", "int8": "int8", "qint8": "int8"}


def bf16_units() -> list[str]:
    """The CPU's bf16 matrix units: ``["AMX", "AVX512-BF16"]``, one of them, or none."""
    return list(cpu_summary()["bf16_units"])


def bf16_supported(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` computes bf16 natively: a CPU with AMX or AVX512-BF16, a CUDA GPU that supports bf16."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(bf16_units())
    return False


def dtype_choice(text: str) -> str:
    """``argparse`` type of ``--dtype``: ``auto``, ``fp32``, ``bf16`` or ``int8`` (``float32`` / ``bfloat16`` /
    ``qint8`` also read)."""
    key = text.strip().lower()
    choice = "auto" if key == "auto" else _NAMES.get(key)
    if choice is None:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(DTYPE_CHOICES)}, got {text!r}")
    return choice


dtype_choice.__name__ = "dtype"  # argparse names the type in its messages


def add_dtype_argument(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    """``--dtype auto|fp32|bf16|int8`` with the project's help text."""
    parser.add_argument(
        "--dtype",
        type=dtype_choice,
        default=default,
        metavar="{auto,fp32,bf16,int8}",
        help=f"number format of the model (default: {default}): fp32 exact; bf16 weights held in bfloat16 (box head "
        "fp32); int8 (CPU only) dynamically quantised int8 linear layers (box head fp32); auto = bf16 on a CPU with "
        "AMX / AVX512-BF16 or a bf16 GPU, else fp32",
    )


def resolve_dtype(
    choice: str | torch.dtype | None,
    device: str | torch.device = "cpu",
    argument: str = "--dtype",
    note: bool = True,
) -> torch.dtype:
    """The ``torch.dtype`` that ``choice`` (``auto``, ``fp32``, ``bf16``, ``int8``, a ``torch.dtype``; None: fp32)
    means on ``device``; ``int8`` is ``torch.qint8`` (:meth:`~clipvg_hf.modeling_clipvg.CLIPVGPreTrainedModel.
    to_inference_dtype` quantises the linear layers). A bad value, or int8 on a device other than the CPU, is a
    :class:`~clipvg_hf.errors.UsageError` naming ``argument``.

    With ``note``, a choice that is not the exact path says so in one line on stderr: ``auto`` picking bf16, and
    ``bf16`` where :func:`bf16_supported` is False (allowed, but emulated and slower than fp32).
    """
    if choice is None:
        return torch.float32
    device = torch.device(device)
    if isinstance(choice, torch.dtype):
        dtype = choice
    else:
        try:
            choice = dtype_choice(str(choice))
        except argparse.ArgumentTypeError as error:
            raise UsageError(f"{argument} {error}") from None
        dtype = _DTYPES.get(choice) or (torch.bfloat16 if bf16_supported(device) else torch.float32)
    if dtype not in (torch.float32, torch.bfloat16, torch.qint8):
        raise UsageError(f"{argument} must be fp32, bf16 or int8, got {dtype}")
    if dtype == torch.qint8 and device.type != "cpu":
        raise UsageError(
            f"{argument} int8 runs on the CPU only (dynamically quantised linear layers), not on {device}; "
            "use bf16 or fp32 there"
        )
    if not note or dtype in (torch.float32, torch.qint8):
        return dtype
    if choice == "auto":
        units = "/".join(bf16_units()) if device.type == "cpu" else "bf16"
        print(
            f"note: {argument} auto: the model runs in bf16 on {device.type} ({units} found; box head fp32); "
            f"{argument} fp32 for the exact path",
            file=sys.stderr,
        )
    elif not bf16_supported(device):
        where = "this CPU has no AMX or AVX512-BF16" if device.type == "cpu" else f"{device} has no bf16 support"
        print(f"note: {argument} bf16: {where}, so bf16 runs emulated and slower than fp32", file=sys.stderr)
    return dtype


def dtype_name(dtype: torch.dtype | str) -> str:
    """``"float32"`` / ``"bfloat16"`` / ``"int8"`` (``torch.qint8``): the name results files record."""
    name = str(dtype).replace("torch.", "")
    return "int8" if name == "qint8" else name


def hardware_record(device: str | torch.device = "cpu") -> dict[str, Any]:
    """Where numbers were computed, for results and score files: the device type and, on a CPU,
    :func:`clipvg_hf.hardware.cpu_summary` (model, dispatched ISA, bf16 units, threads); on a GPU its name."""
    device = torch.device(device)
    record: dict[str, Any] = {"device": device.type}
    if device.type == "cpu":
        record["cpu"] = cpu_summary()
    elif device.type == "cuda" and torch.cuda.is_available():
        record["gpu"] = torch.cuda.get_device_name(device)
    return record


def cpu_summary_line() -> str:
    """The CPU summary in one line: ``CPU: <model>; ISA <isa>; bf16 units: AMX, AVX512-BF16; 2 threads``."""
    summary = cpu_summary()
    units = ", ".join(summary["bf16_units"]) or "none"
    return f"CPU: {summary['cpu']}; ISA {summary['isa']}; bf16 units: {units}; {summary['threads']} threads"
