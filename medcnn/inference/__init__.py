"""Sliding-window inference: `Segmenter`, memory planning, device, precision and backend choice.

Imports torch. See :class:`Segmenter` for the end-to-end API and
:func:`sliding_window_inference` for the model-grid core.
"""

from __future__ import annotations

from medcnn.inference.device import autocast, cpu_supports_bf16, cuda_flags, select_device, select_precision
from medcnn.inference.memory import (
    MemoryPlan,
    activation_bytes_per_voxel,
    available_memory_bytes,
    plan_memory,
    run_with_oom_fallback,
)
from medcnn.inference.executors import BACKENDS, Executor, OnnxRuntimeExecutor, TorchExecutor, choose_fastest
from medcnn.inference.segmenter import Prediction, Segmenter, make_predictor
from medcnn.inference.threads import ThreadChoice, ThreadPolicy
from medcnn.inference.sliding_window import (
    WindowGrid,
    WindowResult,
    gaussian_1d,
    plan_windows,
    sliding_window_inference,
    window_starts,
)

__all__ = [
    "Segmenter",
    "Prediction",
    "make_predictor",
    "sliding_window_inference",
    "plan_windows",
    "window_starts",
    "gaussian_1d",
    "WindowGrid",
    "WindowResult",
    "MemoryPlan",
    "plan_memory",
    "activation_bytes_per_voxel",
    "available_memory_bytes",
    "run_with_oom_fallback",
    "select_device",
    "select_precision",
    "cpu_supports_bf16",
    "autocast",
    "ThreadPolicy",
    "ThreadChoice",
    "cuda_flags",
    "BACKENDS",
    "Executor",
    "TorchExecutor",
    "OnnxRuntimeExecutor",
    "choose_fastest",
]
