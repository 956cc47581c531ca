"""Device and precision selection.

``device="auto"`` picks CUDA, then Apple MPS, then the CPU. ``precision="auto"`` picks
bfloat16 autocast where the hardware computes it natively (CUDA GPUs with bf16 support;
CPUs with AVX512-BF16 or AMX through oneDNN), float16 autocast on older CUDA GPUs and
MPS, and float32 elsewhere. ``"fp32"`` always disables autocast.
"""

from __future__ import annotations

import contextlib
from typing import Any, ContextManager

from medcnn.errors import ConfigError

__all__ = [
    "PRECISIONS",
    "select_device",
    "select_precision",
    "autocast",
    "cpu_supports_bf16",
    "precision_dtype",
    "cuda_flags",
]

#: Accepted values of ``precision``.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def cpu_supports_bf16() -> bool:
    """True when oneDNN runs bfloat16 convolutions natively on this CPU (AVX512-BF16 or AMX)."""
    import torch

    try:
        native = bool(torch.cpu._is_avx512_bf16_supported()) or bool(torch.cpu._is_amx_tile_supported())
        return native and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # older torch builds
        return False


def select_device(device: Any = "auto"):
    """Resolve ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or a ``torch.device``.

    Raises:
        ConfigError: unknown device string, or the device is not available here.
    """
    import torch

    if isinstance(device, torch.device):
        dev = device
    else:
        name = str(device).strip().lower()
        if name == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda")
            mps = getattr(torch.backends, "mps", None)
            if mps is not None and mps.is_available():
                return torch.device("mps")
            return torch.device("cpu")
        try:
            dev = torch.device(name)
        except RuntimeError as exc:
            raise ConfigError.expected("device auto, cpu, cuda, cuda:N or mps", repr(device)) from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError.expected("an available CUDA GPU for device 'cuda'", "no CUDA device in this torch build "
                                       "or machine", hint="Use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError.expected(f"a CUDA device index < {torch.cuda.device_count()}", str(dev))
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError.expected("an available Apple MPS device", "none", hint="Use --device cpu or auto")
    elif dev.type != "cpu":
        raise ConfigError.expected("device auto, cpu, cuda, cuda:N or mps", repr(device))
    return dev


def select_precision(precision: str, device) -> str:
    """Resolve ``precision`` for ``device`` to one of ``"fp32"``, ``"bf16"``, ``"fp16"``.

    Raises:
        ConfigError: unknown precision, or fp16 requested on the CPU (no fast fp16 kernels).
    """
    import torch

    p = str(precision).strip().lower()
    if p not in PRECISIONS:
        raise ConfigError.expected(f"precision one of {', '.join(PRECISIONS)}", repr(precision))
    dev = device if isinstance(device, torch.device) else torch.device(device)
    if p == "auto":
        if dev.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if dev.type == "mps":
            return "fp16"
        return "bf16" if cpu_supports_bf16() else "fp32"
    if p == "fp16" and dev.type == "cpu":
        raise ConfigError.expected("precision fp32 or bf16 on the CPU", "fp16",
                                   hint="CPUs have no fast float16 convolutions; use bf16 or fp32")
    return p


def precision_dtype(precision: str):
    """``torch.float32`` / ``torch.bfloat16`` / ``torch.float16`` for a resolved precision."""
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(device, precision: str) -> ContextManager[Any]:
    """Autocast context for a resolved precision (a no-op context for fp32)."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dev = device if isinstance(device, torch.device) else torch.device(device)
    return torch.autocast(device_type=dev.type, dtype=precision_dtype(precision))


def cuda_flags(device: Any, *, precision: str, deterministic: bool = False) -> ContextManager[Any]:
    """cuDNN settings for one prediction on ``device`` (a no-op context elsewhere),
    restored afterwards (``torch.backends.cudnn.flags``), so nothing global changes.

    * ``benchmark``: autotuned convolution algorithms (nnU-Net's predictor sets
      ``cudnn.benchmark = True`` on CUDA; every window has the same shape, so the tuning
      is paid once per case), unless ``deterministic``.
    * ``deterministic``: cuDNN's deterministic algorithms, no autotuning: bit-identical
      labels run after run. Also taken when ``torch.use_deterministic_algorithms(True)``
      is in force.
    * ``allow_tf32``: off for ``precision="fp32"``, so "fp32" means float32 convolutions
      on Ampere and newer GPUs too (PyTorch's default lets cuDNN use TF32, 10-bit
      mantissas); with bf16/fp16 autocast it is left on.
    """
    import torch

    dev = device if isinstance(device, torch.device) else torch.device(device)
    if dev.type != "cuda":
        return contextlib.nullcontext()
    deterministic = bool(deterministic) or torch.are_deterministic_algorithms_enabled()
    return torch.backends.cudnn.flags(enabled=True, benchmark=not deterministic, deterministic=bool(deterministic),
                                      allow_tf32=precision != "fp32")
