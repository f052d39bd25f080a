"""What the CPU is and what it can do, for results files and benchmark headers: the model name that ``lscpu``
reports, the instruction set PyTorch dispatches to, the bf16 / AMX units and the thread count."""

import functools
import platform
from pathlib import Path

import torch

__all__ = ["cpu_summary", "cpu_model_name", "cpu_flags"]


@functools.cache
def _cpuinfo_field(key: str) -> str | None:
    """The first ``key`` line of /proc/cpuinfo (read once per key), or None where there is no such file or line."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    return None


def cpu_model_name() -> str:
    """The CPU's model name as ``lscpu`` prints it (from /proc/cpuinfo), or the platform's processor string."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo is not available)."""
    return set((_cpuinfo_field("flags") or "").split())


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
