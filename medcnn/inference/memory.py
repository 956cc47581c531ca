"""Memory planning for sliding-window inference.

:func:`plan_memory` estimates the peak memory of one prediction from the image shape,
channel and class counts, the window settings and the network width, and chooses the
cheapest strategy that fits, in this order:

1. ``stitch="device", slab=False``: the whole accumulator ``(K, X, Y, Z)`` float32 lives on
   the compute device (fastest).
2. ``stitch="host", slab=False``: the accumulator lives in host RAM; only the network and
   the window batch use device memory (GPU / MPS only).
3. ``slab=True``: the accumulator holds only one ROI's depth of planes along the slab axis
   and is reduced to labels plane by plane as windows finish (many classes, huge images);
   on the device if it fits there, else on the host. Streaming is also chosen first
   whenever the full accumulator would exceed ``prefer_slab_above_bytes`` (1 GiB): the
   labels are identical and, on the CPU, it was faster as well as smaller.
4. Otherwise :class:`~medcnn.errors.InsufficientMemoryError` with the estimate, the budget
   and what to change.

Estimates (bytes) are deliberately conservative; the network's activation memory per
window voxel is a heuristic from its first-level width, measured on MONAI UNets
(about 10 bytes per voxel per first-level channel in float32 on CPU; we use 24).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from dataclasses import replace
from typing import Any, Callable, Mapping, Sequence, TypeVar

import numpy as np

from medcnn.errors import ConfigError, InsufficientMemoryError

__all__ = [
    "MemoryPlan",
    "plan_memory",
    "activation_bytes_per_voxel",
    "available_memory_bytes",
    "format_bytes",
    "is_out_of_memory",
    "run_with_oom_fallback",
]

_GIB = 1024**3


def format_bytes(n: float) -> str:
    """``1536 → "1.5 KiB"``-style human-readable size."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def activation_bytes_per_voxel(network: Mapping[str, Any] | None, *, precision: str = "fp32") -> float:
    """Heuristic peak activation memory of a forward pass, per window voxel (bytes).

    ``4 * (6 * width + 2 * (in + out channels))`` for convolutional U-Nets, where ``width``
    is the first-level channel count; transformer U-Nets get twice the width factor.
    Mixed precision does not lower the estimate (some layers stay in float32).
    """
    spec = dict(network or {})
    name = str(spec.get("name", "unet")).lower()
    if name in ("unet", "attentionunet"):
        width = (spec.get("channels") or [32])[0]
        factor = 6
    elif name == "basicunet":
        width = (spec.get("features") or [32])[0]
        factor = 6
    elif name == "dynunet":
        width = (spec.get("filters") or [32])[0]
        factor = 6
    elif name == "segresnet":
        width = spec.get("init_filters", 8)
        factor = 6
    elif name == "unetr":
        width = spec.get("feature_size", 16)
        factor = 12
    elif name == "swinunetr":
        width = spec.get("feature_size", 24)
        factor = 12
    else:
        width, factor = 32, 6
    io = int(spec.get("in_channels", 1)) + int(spec.get("out_channels", 2))
    return 4.0 * (factor * float(width) + 2 * io)


def _host_available_bytes() -> int:
    """Available host RAM in bytes (psutil; else ``/proc/meminfo``; else ``sysconf``)."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        return int(psutil.virtual_memory().available)
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    import os

    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def available_memory_bytes(device: Any = "cpu") -> tuple[int, int]:
    """``(device_bytes, host_bytes)`` currently free; on the CPU both are host RAM.

    Host RAM comes from psutil, or ``/proc/meminfo`` (``MemAvailable``) where psutil is
    not installed (the lean GPU-check environment, docs/inference.md)."""
    host = _host_available_bytes()
    dev_type = getattr(device, "type", str(device).split(":")[0])
    if dev_type == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info(device)
        # the driver counts blocks PyTorch's caching allocator reserved but no tensor uses
        # as taken; they are free to this process (a second case would otherwise see less)
        cached = int(torch.cuda.memory_reserved(device)) - int(torch.cuda.memory_allocated(device))
        return int(free) + max(cached, 0), host
    return host, host


@dataclass(frozen=True)
class MemoryPlan:
    """The chosen strategy and its estimate.

    Attributes:
        stitch: ``"device"`` or ``"host"`` (where the accumulator lives).
        slab: stream the accumulator along ``slab_axis`` (ROI-deep buffer).
        slab_axis: spatial axis of the model grid used for streaming.
        sw_batch_size: windows per network call.
        device_peak_bytes, host_peak_bytes: estimated peaks for this plan.
        device_budget_bytes, host_budget_bytes: the budgets it was checked against.
        breakdown: named components of the estimate (bytes).
        same_memory: device and host are the same memory (CPU), so their sum counts.
    """

    stitch: str
    slab: bool
    slab_axis: int
    sw_batch_size: int
    device_peak_bytes: int
    host_peak_bytes: int
    device_budget_bytes: int
    host_budget_bytes: int
    breakdown: dict[str, int] = field(default_factory=dict)
    same_memory: bool = True

    @property
    def peak_bytes(self) -> int:
        return self.device_peak_bytes + self.host_peak_bytes if self.same_memory else \
            max(self.device_peak_bytes, self.host_peak_bytes)

    def describe(self) -> str:
        mode = f"stitching on the {self.stitch}" + (f", streamed in slabs along axis {self.slab_axis}"
                                                     if self.slab else "")
        if self.same_memory:
            return (f"{mode}; estimated peak {format_bytes(self.peak_bytes)} of "
                    f"{format_bytes(self.host_budget_bytes)} available")
        return (f"{mode}; estimated device peak {format_bytes(self.device_peak_bytes)} of "
                f"{format_bytes(self.device_budget_bytes)}, host {format_bytes(self.host_peak_bytes)} of "
                f"{format_bytes(self.host_budget_bytes)}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["peak_bytes"] = self.peak_bytes
        d["summary"] = self.describe()
        return d


def plan_memory(
    model_shape: Sequence[int],
    *,
    in_channels: int,
    out_channels: int,
    roi_size: Sequence[int],
    sw_batch_size: int = 1,
    device_type: str = "cpu",
    network: Mapping[str, Any] | None = None,
    n_parameters: int = 0,
    precision: str = "fp32",
    want_probabilities: bool = False,
    input_shape: Sequence[int] | None = None,
    resampled: bool = True,
    device_budget_bytes: int | None = None,
    host_budget_bytes: int | None = None,
    allow_slab: bool = True,
    prefer_slab_above_bytes: int | None = 2**30,
) -> MemoryPlan:
    """Choose where to stitch and whether to stream, given memory budgets.

    Args:
        model_shape: spatial shape of the preprocessed image (model grid), e.g. ``(X, Y, Z)``.
        in_channels, out_channels: network channels ``C`` and ``K``.
        roi_size: window size per spatial axis (for a 2D network run per slice, pass
            ``(1, ry, rz)`` with the slice axis first).
        sw_batch_size: windows per network call.
        device_type: ``"cpu"``, ``"cuda"`` or ``"mps"``; on the CPU device and host
            memory are one budget.
        network: network spec (for the activation heuristic).
        n_parameters: number of network parameters.
        precision: resolved precision (``"fp32"``, ``"bf16"``, ``"fp16"``).
        want_probabilities: probabilities ``(K, X, Y, Z)`` float32 are kept on the host
            (and resampled to the input grid).
        input_shape: spatial shape of the original input grid (outputs land there).
        resampled: the model grid is resampled from the input grid (adds interpolation
            temporaries when mapping outputs back).
        device_budget_bytes, host_budget_bytes: budgets (default: free memory now, 85%).
        prefer_slab_above_bytes: stream even when the full accumulator would fit once it
            exceeds this size (default 1 GiB; results are identical). Measured on a
            512 x 512 x 300 volume with 14 classes on a 2-core CPU: streaming 2.3 GiB peak
            RSS and 31 s (121 s under load), full stitching 5.4 GiB and 45 s (133 s)
            (benchmarks/bench_large_volume.py).

    Raises:
        InsufficientMemoryError: nothing fits; the message gives the smallest estimate,
            the budget and what to change.
    """
    from medcnn.inference.sliding_window import choose_slab_axis, plan_windows

    shape = tuple(int(s) for s in model_shape)
    roi = tuple(int(r) for r in roi_size)
    if len(shape) != len(roi):
        raise ConfigError.expected(f"roi_size with {len(shape)} entries", f"{roi}")
    if device_budget_bytes is None or host_budget_bytes is None:
        free_dev, free_host = available_memory_bytes(device_type)
        if device_budget_bytes is None:
            device_budget_bytes = int(0.85 * free_dev)
        if host_budget_bytes is None:
            host_budget_bytes = int(0.85 * free_host)
    same = device_type == "cpu"
    if same:
        device_budget_bytes = host_budget_bytes = min(device_budget_bytes, host_budget_bytes)

    grid = plan_windows(shape, roi, 0.0)
    padded = grid.shape
    n_model = int(np.prod(padded, dtype=np.float64))
    n_input = int(np.prod(input_shape, dtype=np.float64)) if input_shape is not None else n_model
    roi_vox = int(np.prod(roi, dtype=np.float64))
    K = int(out_channels)
    n_prob = 2 if K == 1 else K
    acc_channels = K + (1 if want_probabilities else 0)
    ax = choose_slab_axis(grid)
    slab_fraction = roi[ax] / padded[ax]

    b = {
        "parameters": int(n_parameters * (4 + (2 if precision != "fp32" else 0))),
        "image": int(in_channels * n_model * 4),
        "window_batch": int(sw_batch_size * roi_vox * (activation_bytes_per_voxel(network, precision=precision)
                                                      + 4 * (in_channels + 2 * K))),
        "accumulator_full": int(acc_channels * n_model * 4),
        "accumulator_slab": int(acc_channels * n_model * 4 * slab_fraction),
        # model-grid uint8 labels + input-grid labels (+ float64 interpolation temporaries when resampled)
        "labels_out": int(n_model + n_input * (9 if resampled else 1)),
        "probabilities_out": int(n_prob * (n_model + (2 if resampled else 1) * n_input) * 4)
        if want_probabilities else 0,
        "reduce_chunk": int(8 * n_model / max(padded[ax], 1) * 8 * (K + 1)),
    }
    host_fixed = b["labels_out"] + b["probabilities_out"] + b["image"]  # input copy stays on the host
    compute = b["parameters"] + b["window_batch"]

    candidates = []  # (stitch, slab, device_bytes, host_bytes)
    if same:
        for slab in ([False, True] if allow_slab else [False]):
            acc = b["accumulator_slab"] if slab else b["accumulator_full"]
            candidates.append(("device", slab, compute + acc + b["reduce_chunk"], host_fixed))
    else:
        candidates = [
            ("device", False, compute + b["image"] + b["accumulator_full"] + b["reduce_chunk"], host_fixed),
            ("host", False, compute, host_fixed + b["accumulator_full"] + b["reduce_chunk"]),
        ]
        if allow_slab:
            candidates += [
                ("device", True, compute + b["image"] + b["accumulator_slab"] + b["reduce_chunk"], host_fixed),
                ("host", True, compute, host_fixed + b["accumulator_slab"] + b["reduce_chunk"]),
            ]

    if allow_slab and prefer_slab_above_bytes is not None and b["accumulator_full"] > prefer_slab_above_bytes:
        candidates.sort(key=lambda c: not c[1])  # streamed candidates first, order otherwise kept

    def fits(dev: int, host: int) -> bool:
        if same:
            return dev + host <= host_budget_bytes
        return dev <= device_budget_bytes and host <= host_budget_bytes

    for stitch, slab, dev, host in candidates:
        if fits(dev, host):
            return MemoryPlan(stitch, slab, ax, int(sw_batch_size), int(dev), int(host), int(device_budget_bytes),
                              int(host_budget_bytes), b, same)
    stitch, slab, dev, host = candidates[-1]
    need = dev + host if same else max(dev, host)
    what = (f"{format_bytes(dev + host)} for image {shape} with {K} classes" if same else
            f"{format_bytes(dev)} device and {format_bytes(host)} host memory for image {shape} with {K} classes")
    budget = (format_bytes(host_budget_bytes) if same else
              f"{format_bytes(device_budget_bytes)} device / {format_bytes(host_budget_bytes)} host")
    tips = ["lower sw_batch_size" if sw_batch_size > 1 else None,
            "do not request probabilities" if want_probabilities else None,
            "use a smaller roi_size", "raise memory_limit_gb or free memory"]
    raise InsufficientMemoryError.expected(
        f"a prediction that fits in {budget}", f"an estimated minimum of {what}",
        hint="To fit: " + "; ".join(t for t in tips if t) + f" (largest part: "
             f"{max(b, key=lambda k: b[k])} {format_bytes(max(b.values()))}; need {format_bytes(need)})")


_T = TypeVar("_T")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for an out-of-memory error: ``torch.cuda.OutOfMemoryError`` (also
    ``torch.OutOfMemoryError``), or a ``RuntimeError`` whose message says "out of memory"
    (MPS, older torch builds) or "can't allocate memory" (torch's CPU allocator). Other
    errors are never taken for one."""
    import torch

    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),
                                  getattr(torch.cuda, "OutOfMemoryError", None)) if isinstance(t, type))
    if oom_types and isinstance(exc, oom_types):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _empty_cache(device: Any) -> None:
    import torch

    dev_type = getattr(device, "type", str(device).split(":")[0])
    if dev_type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif dev_type == "mps":
        mps = getattr(torch, "mps", None)
        if mps is not None and hasattr(mps, "empty_cache"):
            mps.empty_cache()


def run_with_oom_fallback(run: Callable[[MemoryPlan], _T], plan: MemoryPlan, *,
                          device: Any) -> tuple[_T, list[dict[str, Any]]]:
    """``run(plan)``, retried with smaller plans when the device runs out of memory.

    The planner's activation estimate is a heuristic, so a window batch can still exceed
    the device's memory. Like nnU-Net (which retries a case with its accumulator on the
    CPU), the case is not failed: on an out-of-memory error (:func:`is_out_of_memory`)
    the allocator cache is emptied and ``run`` is called again with half the windows per
    batch (down to 1), then, on a GPU / MPS, with the accumulator on the host
    (``stitch="host"``). Labels do not depend on the batch size or on where the
    accumulator lives.

    Args:
        run: computes the result for a plan.
        plan: the first plan to try.
        device: the compute device (``torch.device`` or its string).

    Returns:
        ``(result, fallbacks)``: ``fallbacks`` lists each retry as
        ``{"stitch", "sw_batch_size", "after"}`` (``after``: the error's first line),
        empty when the first plan worked.

    Raises:
        InsufficientMemoryError: still out of memory with one window per batch and host
            stitching (or on the CPU); other errors propagate unchanged.
    """
    dev_type = getattr(device, "type", str(device).split(":")[0])
    fallbacks: list[dict[str, Any]] = []
    current = plan
    while True:
        message = None
        try:
            return run(current), fallbacks
        except Exception as exc:  # noqa: BLE001 - anything but an OOM is re-raised
            if not is_out_of_memory(exc):
                raise
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        # outside the except block: the traceback's references to device tensors are gone
        _empty_cache(device)
        if current.sw_batch_size > 1:
            current = replace(current, sw_batch_size=max(current.sw_batch_size // 2, 1))
        elif current.stitch == "device" and dev_type != "cpu":
            current = replace(current, stitch="host")
        else:
            raise InsufficientMemoryError.expected(
                f"a prediction that fits in the {dev_type} memory", f"out of memory: {message}",
                hint="Tried " + ", ".join([f"{plan.sw_batch_size} window(s) per batch stitching on the {plan.stitch}"]
                                          + [f"{f['sw_batch_size']} stitching on the {f['stitch']}" for f in fallbacks])
                + "; use a smaller roi_size, free device memory or use --device cpu")
        fallbacks.append({"stitch": current.stitch, "sw_batch_size": current.sw_batch_size, "after": message})
