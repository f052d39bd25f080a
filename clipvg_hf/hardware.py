"""What the CPU is and what it can do, for results files and benchmark headers: the model name that ``lscpu``
reports, the instruction set PyTorch dispatches to, the bf16 / AMX units and the thread count."""

import platform
from pathlib import Path

import torch

__all__ = ["cpu_summary", "cpu_model_name", "cpu_flags"]


def cpu_model_name() -> str:
    """The CPU's model name as ``lscpu`` prints it (from /proc/cpuinfo), or the platform's processor string."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo is not available)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def cpu_summary() -> dict[str, object]:
    """Model name, PyTorch's dispatched ISA (``ATEN_CPU_CAPABILITY`` lowers it), bf16 units, threads."""
    flags = cpu_flags()
    units = [name for name, flag in (("AMX", "amx_bf16"), ("AVX512-BF16", "avx512_bf16")) if flag in flags]
    return {
        "cpu": cpu_model_name(),
        "isa": torch.backends.cpu.get_cpu_capability(),
        "bf16_units": units,
        "threads": torch.get_num_threads(),
    }
