"""What the CPU is: its model name and the SIMD flags that decide convolution speed.

One reader of ``/proc/cpuinfo`` for everything that states the hardware beside a figure:
the ``auto`` backend choice (stored with the flags it was made on), training provenance
(``hardware``) and every benchmark's header line (the brief asks for ``lscpu`` flags with
every speed figure). Standard library only.
"""

from __future__ import annotations

import os
import platform

__all__ = ["SPEED_FLAGS", "cpu_model", "cpu_flags", "cpu_facts"]

#: The flags that decide CPU convolution speed and the precisions available natively
#: (``avx512_bf16`` / ``amx_bf16``: native bf16; ``*_vnni``: int8 dot products).
SPEED_FLAGS: tuple[str, ...] = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile",
                                "amx_bf16")


def _cpuinfo() -> list[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read().splitlines()
    except OSError:
        return []


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` says."""
    for line in _cpuinfo():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags() -> list[str]:
    """The :data:`SPEED_FLAGS` this CPU has, in that order (``/proc/cpuinfo``'s ``flags`` or
    ``Features`` line); where there is no such file, ``[platform.processor()]``."""
    for line in _cpuinfo():
        if line.startswith(("flags", "Features")):
            have = set(line.split(":", 1)[1].split())
            return [fl for fl in SPEED_FLAGS if fl in have]
    return [platform.processor() or platform.machine()]


def cpu_facts() -> str:
    """One line for a benchmark's header: model, logical CPUs and speed flags."""
    flags = cpu_flags()
    return f"{cpu_model()}, {os.cpu_count()} CPUs, flags: {' '.join(flags) or 'none of ' + '/'.join(SPEED_FLAGS)}"
