"""`Segmenter`: a network + its preprocessing → label maps on the input's exact grid.

Typical use::

    from medcnn.inference import Segmenter
    seg = Segmenter.from_bundle("bundles/heart", device="auto", precision="auto")
    pred = seg.predict(read_volume("case.nii.gz"), return_probabilities=True)
    pred.labels          # Volume (I, J, K) uint8 on exactly the input geometry
    pred.probabilities   # Volume (C, I, J, K) float32, or None
    pred.info            # device, precision, TTA, windows, memory plan, timings

Pipeline: preprocess (reorient / crop / normalise / resample, recorded) → sliding-window
prediction on the model grid (:mod:`medcnn.inference.sliding_window`) with the memory
strategy of :func:`medcnn.inference.memory.plan_memory` → back to the input grid with
the preprocessing record (probabilities are resampled linearly and then reduced to
labels when the grid was resampled; otherwise labels are mapped back exactly) →
optional postprocessing (:mod:`medcnn.postprocess`).

2D networks (``spatial_dims=2``) run slice by slice along the coarsest axis of the model
grid (ties: the last such axis). 4D cine input (``leading_axis="time"``) is predicted
frame by frame (a 2D network: every frame's slices in one sliding-window call) and returns a
4D ``(T, I, J, K)`` label Volume with the frame times.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from medcnn.errors import ConfigError, DimensionError, InsufficientMemoryError
from medcnn.inference.device import cuda_flags, select_device, select_precision
from medcnn.inference.executors import BACKENDS, Executor, TorchExecutor
from medcnn.inference.memory import MemoryPlan, plan_memory, run_with_oom_fallback
from medcnn.inference.sliding_window import WindowResult, sliding_window_inference
from medcnn.inference.threads import ThreadChoice, ThreadPolicy, cpu_threads
from medcnn.models.bundle import WHOLE_SLICE_MIN_AGREEMENT_PERCENT, whole_slice_default
from medcnn.volume import Volume

__all__ = ["Segmenter", "Prediction", "make_predictor", "MEMORY_FORMATS", "WHOLE_SLICE_MIN_AGREEMENT_PERCENT",
           "whole_slice_default"]

#: Accepted values of ``memory_format``.
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")


@dataclass
class Prediction:
    """Result of :meth:`Segmenter.predict`.

    Attributes:
        labels: ``(I, J, K)`` integer label Volume on exactly the input's geometry
            (``(T, I, J, K)`` with frame times for cine input).
        probabilities: ``(C, I, J, K)`` float32 Volume on the input grid when asked for
            (for one sigmoid output: ``C = 2``, background and foreground), else ``None``.
        info: JSON-able facts: device, precision, tta_axes, windows, memory plan,
            timings in seconds, model grid, bundle hash.
        volume_intervals: with ``predict(..., volume_intervals=True)``, one dict per
            foreground label (``label``, ``volume_ml``, ``volume_low_ml``, ``volume_high_ml``,
            ``volume_soft_ml``, ... see :mod:`medcnn.measure.intervals`; cine: also
            ``frame``), else ``None``.
    """

    labels: Volume
    probabilities: Volume | None = None
    info: dict[str, Any] = field(default_factory=dict)
    volume_intervals: list[dict[str, Any]] | None = None


@dataclass
class _Case:
    """One case on its way through :class:`Segmenter`: the model-grid array, the
    preprocessing record that maps back, and the step timings."""

    x: Any
    record: Any
    first: Volume
    steps_s: dict
    t_start: float
    t_prepared: float
    t_network: float = 0.0


@dataclass
class _Run:
    """What the network stage produces for a case, and the memory plan it runs under."""

    plan: MemoryPlan
    outputs: tuple
    via_probs: bool
    volume_intervals: bool
    intervals_skipped: str | None = None


def make_predictor(
    model: Any,
    *,
    device: Any,
    precision: str = "fp32",
    tta_axes: Sequence[int] = (),
    memory_format: Any = None,
    squeeze_dim: int | None = None,
    per_view: bool = False,
) -> Callable[[Any], Any]:
    """Wrap a network as ``(B, C, *roi) → (B, K, *roi)`` float32 logits.

    Args:
        model: the network (already on ``device``, in eval mode), or an
            :class:`medcnn.inference.executors.Executor` (then ``precision`` and
            ``memory_format`` are the executor's business).
        precision: resolved precision; fp16/bf16 run under ``torch.autocast``.
        tta_axes: spatial axes (0-based, of the window) to mirror; every combination of
            flips is run and the logits are averaged (``2 ** len(tta_axes)`` passes).
        memory_format: e.g. ``torch.channels_last_3d`` for the network input.
        squeeze_dim: run a 2D network on 3D windows by removing this singleton dim.
        per_view: with TTA, return the mean logits followed by each view's own logits,
            concatenated along the channel axis (``(B, K x (1 + n_views), *roi)``; for
            per-view volume intervals). ``predict.n_groups`` says how many blocks.
    """
    import torch

    executor = model if isinstance(model, Executor) else TorchExecutor(
        model, device=device, precision=precision, memory_format=memory_format)
    dims_list = [()]
    axes = sorted(set(int(a) for a in tta_axes))
    for r in range(1, len(axes) + 1):
        dims_list += [tuple(2 + a for a in combo) for combo in itertools.combinations(axes, r)]

    def predict(x):
        x = x.to(device, non_blocking=True)
        out = None
        views: list | None = [] if per_view and len(dims_list) > 1 else None
        for dims in dims_list:
            xi = torch.flip(x, dims) if dims else x
            if squeeze_dim is not None:
                xi = xi.squeeze(squeeze_dim)
            yi = executor(xi)
            if squeeze_dim is not None:
                yi = yi.unsqueeze(squeeze_dim)
            if dims:
                yi = torch.flip(yi, dims)
            if views is not None:
                views.append(yi)
                yi = yi.clone()
            out = yi if out is None else out.add_(yi)
        if len(dims_list) > 1:
            out = out.div_(len(dims_list))
        if views:
            return torch.cat([out] + views, dim=1)
        return out

    predict.n_passes = len(dims_list)  # type: ignore[attr-defined]
    predict.n_groups = 1 + len(dims_list) if per_view and len(dims_list) > 1 else 1  # type: ignore[attr-defined]
    return predict


def _infer_channels(model: Any) -> tuple[int | None, int | None, int | None]:
    """(in_channels, out_channels, spatial_dims) from the first and last conv layers."""
    import torch

    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d,
                                                           torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d))]
    if not convs:
        return None, None, None
    nd = 3 if isinstance(convs[0], (torch.nn.Conv3d, torch.nn.ConvTranspose3d)) else 2
    return convs[0].in_channels, convs[-1].out_channels, nd


def _slice_divisor(network: Mapping[str, Any] | None) -> tuple[int, int]:
    """Per in-plane axis, what a whole slice is padded to a multiple of so that every level
    of a 2D network divides evenly (:func:`medcnn.models.registry.network_patch_divisor`;
    16 when the network spec is unknown)."""
    if not network:
        return (16, 16)
    from medcnn.models.registry import network_patch_divisor

    try:
        div = network_patch_divisor(network)
    except ConfigError:  # a spec the registry cannot read (an imported runtime's): the common UNet depth
        return (16, 16)
    return (int(div[0]), int(div[-1])) if len(div) >= 2 else (int(div[0]),) * 2


class Segmenter:
    """Runs a segmentation network on Volumes, returning labels on the input grid.

    Args:
        model: a ``torch.nn.Module`` mapping ``(B, C, *roi)`` to ``(B, K, *roi)`` logits.
        roi_size: sliding-window size in voxels of the model grid (2 entries for a 2D net).
        preprocess: :class:`medcnn.preprocess.PreprocessSpec` or its dict; default: no
            reorientation, resampling or normalisation (``modalities="none"``).
        network: the network spec, when known (channel counts, memory heuristic).
        in_channels, out_channels, spatial_dims: override what is read from ``network``
            or inferred from the first/last convolution of ``model``.
        labels: label value → name (stored in the output's ``meta["label_names"]``).
        channels: input channel names (order the network expects).
        overlap: window overlap fraction in [0, 1).
        postprocess: :class:`medcnn.postprocess.PostprocessSpec` or its dict, optional.
        activation: ``"softmax"`` (default for K >= 2) or ``"sigmoid"`` (default for K = 1;
            for K > 1 without ``regions`` channel ``c`` marks label ``c + 1``, later wins).
        regions: :class:`medcnn.regions.RegionSpec` (or its dict): for several sigmoid
            outputs, which region each channel predicts, the label it writes and the
            painting order; every prediction is checked against the declared nesting
            (:func:`medcnn.regions.check_nesting`). Reported regions (unions of labels) too.
        device: ``"auto"`` (CUDA, MPS, CPU), ``"cpu"``, ``"cuda[:N]"``, ``"mps"``.
        precision: ``"auto"``, ``"fp32"``, ``"bf16"``, ``"fp16"`` (see
            :func:`medcnn.inference.device.select_precision`).
        tta_axes: mirroring test-time augmentation: ``()``/``"none"`` (default, off);
            ``"trained"``: the axes the model was trained to be mirror-invariant to
            (``mirror_axes``, recorded in bundles by ``medcnn train``); ``"all"``: every
            axis; or model-grid axes such as ``(0, 2)``. Asking for axes the training never
            mirrored warns: the network then sees views it never saw and labels can change
            (measured: a hippocampus model trained without flips changed 5% of voxels).
        mirror_axes: window axes (``0..spatial_dims-1``) that training mirrored; ``None``:
            unknown (``"trained"`` then mirrors every axis, with a warning).
        sw_batch_size: windows per network call (default: 4 on GPUs; on the CPU in fp32 2 for
            3D networks, where a batch of 2 lets PyTorch use oneDNN for every convolution —
            1.4-1.6x faster per window for a MONAI UNet, benchmarks/bench_inference.py — and 16
            for 2D networks (1.5-1.8x the windows per second of 2 on cine, benchmarks/bench_cine.py
            --sweep); 1 in bf16, which gains nothing from batching).
        memory_limit_gb: memory budget (default: 85% of what is free at predict time).
        stream_above_gb: stream the accumulator in slabs whenever the full one would exceed
            this (identical labels, less memory; ``None``: only when memory requires it).
        memory_format: ``"auto"`` (channels-last for 3D networks on the CPU in fp32, where it
            measured faster; contiguous for 2D networks, where channels-last measured 1.2x
            slower), ``"channels_last"`` or ``"contiguous"``.
        compile: wrap the network with ``torch.compile`` (inductor, weights frozen; the first
            call compiles, ~15 s on a 2-core CPU with a warm cache). Measured ~10% faster
            than eager bf16 for a MONAI UNet on this CPU (benchmarks/bench_inference.py).
        blend_mode, sigma_scale: window blending (``"gaussian"``, 0.125 as MONAI;
            ``"nnunet"``: nnU-Net's importance map).
        window_placement: ``"monai"`` (default) or ``"nnunet"`` (nnU-Net's evenly spread
            windows, :func:`medcnn.inference.sliding_window.nnunet_window_starts`).
        slice_axis: model-grid axis a 2D network runs along (default: the coarsest axis).
        executor: run the network with this :class:`medcnn.inference.executors.Executor`
            instead of ``backend``'s choice, e.g. ``OnnxRuntimeExecutor("model_int8.onnx")`` for
            a quantised copy, or an importer's own runtime (windows, blending, TTA, memory
            plan and mapping back stay the Segmenter's). ``model`` still gives the channel
            counts, and is what ``executor`` is assumed to compute. Recorded in
            ``info["backend"]`` (``requested: "executor"``).
        whole_slice: a 2D network runs once per whole slice (zero-padded to a multiple of its
            divisor, the product of its strides) instead of overlapping ``roi_size`` windows: one window per slice,
            about 3x faster on 256x256 cine, but a patch-trained network's labels can differ
            from its windowed labels. Default False; :meth:`from_bundle` turns it on only for
            bundles whose recorded agreement reaches :data:`WHOLE_SLICE_MIN_AGREEMENT_PERCENT`
            in every measured volume (:func:`whole_slice_default`). Recorded in
            ``info["whole_slice"]``.
        threads: CPU threads of each prediction: ``"auto"`` (default: the usable cores
            less those other processes keep busy, decided per case), an integer, or a
            :class:`medcnn.inference.threads.ThreadPolicy` (e.g. with ``workers=`` for a
            batch); set for the prediction only and restored after, recorded in
            ``info["threads"]``. See :mod:`medcnn.inference.threads` for the wait policy.
        deterministic: on CUDA, cuDNN's deterministic algorithms without autotuning, so two
            runs give bit-identical labels (default: autotuned cuDNN, as nnU-Net). See
            :func:`medcnn.inference.device.cuda_flags`; no effect on the CPU.
        backend: the network executor (:mod:`medcnn.inference.executors`): ``"torch"``
            (default); ``"onnxruntime"`` (CPU, fp32: the network exported to ONNX once,
            verified against torch fp32 and cached in ``cache_dir``; its default window batch
            is 1 for 3D networks, 4 for 2D ones); ``"auto"`` (times torch and, in fp32 on the
            CPU, ONNX Runtime at window batches 1, 2 and 4, for 2D networks also 8 and 16, on the first
            prediction and keeps the fastest pair). Decided at the first prediction; when ONNX
            Runtime is missing or its export fails verification, torch runs and one line says
            so on stderr. Recorded in ``info["backend"]``.
        cache_dir: folder of the ONNX exports and ``auto`` choices (default:
            :func:`medcnn.inference.executors.default_cache_dir`, ``$MEDCNN_CACHE/onnx`` or
            ``~/.cache/medcnn/onnx``).

    Out of memory: when a window batch raises ``torch.cuda.OutOfMemoryError`` although the
    plan said it fits (the planner's estimate is a heuristic), the case is retried with half
    the batch, down to 1, then with the accumulator on the host, freeing the CUDA cache
    between tries (:func:`medcnn.inference.memory.run_with_oom_fallback`); the fallbacks
    taken are in ``info["oom_fallbacks"]``.
    """

    def __init__(
        self,
        model: Any,
        *,
        roi_size: Sequence[int],
        preprocess: Any = None,
        network: Mapping[str, Any] | None = None,
        in_channels: int | None = None,
        out_channels: int | None = None,
        spatial_dims: int | None = None,
        labels: Mapping[int, str] | None = None,
        channels: Sequence[str] | None = None,
        overlap: float = 0.5,
        postprocess: Any = None,
        activation: str | None = None,
        device: Any = "auto",
        precision: str = "auto",
        tta_axes: Sequence[int] | str = (),
        mirror_axes: Sequence[int] | None = None,
        sw_batch_size: int | None = None,
        memory_limit_gb: float | None = None,
        stream_above_gb: float | None = 1.0,
        memory_format: str = "auto",
        compile: bool = False,
        blend_mode: str = "gaussian",
        sigma_scale: float = 0.125,
        bundle_info: Mapping[str, Any] | None = None,
        window_placement: str = "monai",
        slice_axis: int | None = None,
        threads: Any = "auto",
        deterministic: bool = False,
        regions: Any = None,
        backend: str = "torch",
        cache_dir: Any = None,
        whole_slice: bool = False,
        executor: Executor | None = None,
    ) -> None:
        import torch

        from medcnn.preprocess import PreprocessSpec

        self.network = dict(network) if network is not None else None
        inf_in, inf_out, inf_nd = _infer_channels(model)
        spec_get = (lambda k: self.network.get(k)) if self.network else (lambda k: None)
        self.in_channels = int(in_channels or spec_get("in_channels") or inf_in or 0)
        self.out_channels = int(out_channels or spec_get("out_channels") or inf_out or 0)
        self.spatial_dims = int(spatial_dims or spec_get("spatial_dims") or inf_nd or 3)
        if self.in_channels < 1 or self.out_channels < 1:
            raise ConfigError.expected("in_channels and out_channels (pass them or a network spec)",
                                       "none found in the model")
        if self.spatial_dims not in (2, 3):
            raise ConfigError.expected("spatial_dims 2 or 3", repr(self.spatial_dims))
        self.roi_size = tuple(int(r) for r in roi_size)
        if len(self.roi_size) != self.spatial_dims or any(r < 1 for r in self.roi_size):
            raise ConfigError.expected(f"roi_size with {self.spatial_dims} positive entries", f"{tuple(roi_size)}")
        if preprocess is None:
            preprocess = PreprocessSpec(orientation=None, modalities=("none",) * self.in_channels)
        elif isinstance(preprocess, Mapping):
            preprocess = PreprocessSpec.from_dict(preprocess)
        if not isinstance(preprocess, PreprocessSpec):
            raise ConfigError.expected("a PreprocessSpec or its dict", type(preprocess).__name__)
        if preprocess.n_channels != self.in_channels:
            raise ConfigError.expected(f"{self.in_channels} preprocessing modalities (network in_channels)",
                                       f"{list(preprocess.modalities)}")
        self.preprocess_spec = preprocess
        if postprocess is not None and not hasattr(postprocess, "is_noop"):
            from medcnn.postprocess import PostprocessSpec

            postprocess = PostprocessSpec.from_dict(postprocess)
        self.postprocess_spec = postprocess
        if activation is None:
            activation = "sigmoid" if self.out_channels == 1 else "softmax"
        if activation not in ("softmax", "sigmoid"):
            raise ConfigError.expected("activation 'softmax' or 'sigmoid'", repr(activation))
        self.activation = activation
        self.labels = {int(k): str(v) for k, v in (labels or {}).items()}
        from medcnn.regions import RegionSpec

        self.regions = regions if regions is None or isinstance(regions, RegionSpec) else RegionSpec.from_dict(regions)
        if self.regions is not None and self.regions.has_channels and (
                activation != "sigmoid" or len(self.regions.channels or ()) != self.out_channels):
            raise ConfigError.expected(f"region channels for a sigmoid network with {self.out_channels} outputs",
                                       f"{len(self.regions.channels or ())} channels, activation {activation!r}")
        self.channels = tuple(channels) if channels is not None else tuple(f"channel{i}" for i in
                                                                           range(self.in_channels))
        if not 0.0 <= float(overlap) < 1.0:
            raise ConfigError.expected("overlap in [0, 1)", f"{overlap}")
        self.overlap = float(overlap)
        self.device = select_device(device)
        if backend not in BACKENDS:
            raise ConfigError.expected(f"backend one of {', '.join(BACKENDS)}", repr(backend))
        if backend == "onnxruntime":
            if self.device.type != "cpu":
                raise ConfigError.expected("device 'cpu' with backend 'onnxruntime'", repr(str(self.device)),
                                           hint="ONNX Runtime runs here on the CPU; use backend 'torch' on a GPU")
            if precision not in ("auto", "fp32"):
                raise ConfigError.expected("precision 'fp32' or 'auto' with backend 'onnxruntime'", repr(precision))
            if compile:
                raise ConfigError.expected("compile=False with backend 'onnxruntime'", "compile=True",
                                           hint="torch.compile is an option of the torch backend")
            precision = "fp32"
        self.backend_request = backend
        self.cache_dir = cache_dir
        self.precision = select_precision(precision, self.device)
        self._resolve_tta(tta_axes, mirror_axes)
        if sw_batch_size is not None and int(sw_batch_size) < 1:
            raise ConfigError.expected("sw_batch_size >= 1", f"{sw_batch_size}")
        self._sw_batch_size_chosen = bool(sw_batch_size)
        if sw_batch_size:
            self.sw_batch_size = int(sw_batch_size)
        elif self.device.type == "cpu":
            # fp32: 2 windows for 3D networks, 16 for 2D ones (benchmarks/bench_cine.py --sweep)
            self.sw_batch_size = (16 if self.spatial_dims == 2 else 2) if self.precision == "fp32" else 1
        else:
            self.sw_batch_size = 4
        if memory_limit_gb is not None and not float(memory_limit_gb) > 0:
            raise ConfigError.expected("memory_limit_gb > 0", f"{memory_limit_gb}")
        self.memory_limit_gb = memory_limit_gb
        self.stream_above_gb = stream_above_gb
        if memory_format not in MEMORY_FORMATS:
            raise ConfigError.expected(f"memory_format one of {', '.join(MEMORY_FORMATS)}", repr(memory_format))
        if memory_format == "auto":
            memory_format = "channels_last" if (self.device.type == "cpu" and self.precision == "fp32"
                                                and self.spatial_dims == 3) else "contiguous"
        self.memory_format = memory_format
        self.blend_mode = blend_mode
        from medcnn.inference.sliding_window import PLACEMENTS

        if window_placement not in PLACEMENTS:
            raise ConfigError.expected(f"window_placement one of {', '.join(PLACEMENTS)}", repr(window_placement))
        self.window_placement = window_placement
        if slice_axis is not None and slice_axis not in (0, 1, 2):
            raise ConfigError.expected("slice_axis 0, 1, 2 or None", repr(slice_axis))
        self.slice_axis = slice_axis
        if whole_slice and self.spatial_dims != 2:
            raise ConfigError.expected("whole_slice=False for a 3D network", "whole_slice=True",
                                       hint="whole-slice inference runs a 2D network once per slice")
        self.whole_slice = bool(whole_slice)
        self._slice_divisor = _slice_divisor(self.network)
        self.threads = threads if isinstance(threads, ThreadPolicy) else ThreadPolicy(threads)
        self._thread_local = threading.local()  # the decision of the prediction running in this thread
        self.deterministic = bool(deterministic)
        # nnU-Net's export: logits go back to the input grid, the activation follows
        self.resample_logits = preprocess.nnunet is not None
        self.sigma_scale = float(sigma_scale)
        self.bundle_info = dict(bundle_info or {})
        self.n_parameters = int(sum(p.numel() for p in model.parameters()))

        model = model.eval().to(self.device)
        self._export_model = model  # what an ONNX export is made from (before torch.compile)
        self._torch_memory_format = None
        if self.memory_format == "channels_last":
            self._torch_memory_format = torch.channels_last_3d if self.spatial_dims == 3 else torch.channels_last
            model = model.to(memory_format=self._torch_memory_format)
        self.compiled = bool(compile)
        if compile:
            # freezing lets inductor constant-fold and pre-pack the weights for oneDNN;
            # inference only (the Segmenter never trains). The FX graph cache makes
            # later processes compile faster.
            model = torch.compile(model, dynamic=False, options={"freezing": True})
        self.model = model
        if executor is not None:
            if not isinstance(executor, Executor):
                raise ConfigError.expected("executor: a medcnn.inference.executors.Executor",
                                           type(executor).__name__)
            if backend != "torch":
                raise ConfigError.expected("either executor or backend", f"both (backend {backend!r})")
        from medcnn.inference.backend_choice import BackendChoice

        self._backend = BackendChoice(
            backend, torch_executor=TorchExecutor(model, device=self.device, precision=self.precision,
                                                  memory_format=self._torch_memory_format),
            export_model=self._export_model, spatial_dims=self.spatial_dims, in_channels=self.in_channels,
            out_channels=self.out_channels, roi_size=self.roi_size,
            onnx_candidate=self.device.type == "cpu" and self.precision == "fp32" and not self.compiled,
            spec_sha256=self.bundle_info.get("spec_sha256"), cache_dir=cache_dir, memory_format=self.memory_format,
            needs_dynamic_spatial=self.whole_slice, given=executor)

    def _resolve_tta(self, tta_axes: Sequence[int] | str, mirror_axes: Sequence[int] | None) -> None:
        """Set ``tta_axes`` (model grid), ``tta_request``, ``mirror_axes`` and ``_tta_window``.

        ``_tta_window`` holds window axes for ``"trained"`` on a 2D network, whose model-grid
        axes depend on each volume's slice axis."""
        import warnings

        from medcnn.models.bundle import check_mirror_axes

        nd = self.spatial_dims
        if mirror_axes is not None:  # the same rule as bundle.json
            mirror_axes = tuple(check_mirror_axes([int(a) for a in mirror_axes], nd))
        self.mirror_axes = mirror_axes
        self._tta_window: tuple[int, ...] | None = None
        request = tta_axes.strip().lower() if isinstance(tta_axes, str) else None
        if request is not None and request not in ("", "none", "trained", "all"):
            raise ConfigError.expected("tta_axes 'none', 'trained', 'all' or model-grid axes like (0, 2)",
                                       repr(tta_axes))
        self.tta_request = "axes" if request is None else (request or "none")
        if request in ("", "none"):
            self.tta_axes: tuple[int, ...] = ()
            return
        if request == "trained" and mirror_axes is None:
            warnings.warn("tta_axes='trained': the model does not record which axes its training mirrored; "
                          "mirroring every axis", UserWarning, stacklevel=3)
            request = "all"
        if request == "trained":
            if not mirror_axes:
                warnings.warn("tta_axes='trained': this model was trained without mirroring, so test-time "
                              "augmentation has no views to average and is skipped", UserWarning, stacklevel=3)
            if nd == 3:
                self.tta_axes = tuple(mirror_axes)  # type: ignore[arg-type]
            else:
                self.tta_axes = ()
                self._tta_window = tuple(mirror_axes)  # type: ignore[arg-type]
            return
        axes = (0, 1, 2) if request == "all" else tuple(sorted(set(int(a) for a in tta_axes)))
        if any(a not in (0, 1, 2) for a in axes):
            raise ConfigError.expected("tta_axes among 0, 1, 2 (model-grid axes)", f"{tta_axes}")
        self.tta_axes = axes
        if nd == 3:
            self._warn_untrained_tta(axes)
        elif request == "all":
            self._warn_untrained_tta((0, 1))  # a 2D window's two in-plane axes
        # explicit axes of a 2D network map to window axes per volume: checked in predict_array

    def _warn_untrained_tta(self, window_axes: Sequence[int]) -> None:
        """Warn (once per Segmenter) when TTA mirrors window axes training never mirrored."""
        import warnings

        if self.mirror_axes is None or getattr(self, "_tta_warned", False):
            return
        untrained = sorted(set(int(a) for a in window_axes) - set(self.mirror_axes))
        if untrained:
            self._tta_warned = True
            warnings.warn(f"test-time augmentation mirrors axes {untrained} that this model's training never "
                          f"mirrored (trained: {list(self.mirror_axes)}); its labels may change where the "
                          "network is not mirror-symmetric. tta_axes='trained' uses only trained axes",
                          UserWarning, stacklevel=4)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_bundle(cls, bundle: Any, *, overlap: float | None = None, **options: Any) -> "Segmenter":
        """Build from a bundle folder / ``.medcnn`` archive path or a loaded :class:`Bundle`.

        ``options`` are the keyword arguments of :class:`Segmenter` (device, precision,
        tta_axes, sw_batch_size, memory_limit_gb, ...); ``overlap`` defaults to the bundle's.
        """
        from medcnn.models.bundle import load_bundle

        b = load_bundle(bundle)
        for k, v in (b.json.get("inference") or {}).items():  # run-time rules of imported models
            options.setdefault(k, v)
        if options.get("whole_slice") is None:  # the bundle's measured verdict (see whole_slice_default)
            options["whole_slice"] = whole_slice_default(b.json)
        return cls(
            b.build_model(),
            roi_size=b.roi_size,
            preprocess=b.preprocess,
            network=b.network,
            labels=b.labels,
            channels=b.channels,
            overlap=b.overlap if overlap is None else overlap,
            postprocess=options.pop("postprocess", b.postprocess),
            activation=options.pop("activation", b.activation),
            mirror_axes=options.pop("mirror_axes", b.mirror_axes),
            regions=options.pop("regions", b.regions),
            bundle_info={"path": str(b.path), "sha256": b.sha256, "spec_sha256": b.spec_sha256,
                         "medcnn_version": b.medcnn_version,
                         "network": b.network.get("name"),
                         **({"imported_from": b.provenance["imported_from"]} if b.provenance.get("imported_from")
                            else {})},
            **options,
        )

    def __repr__(self) -> str:
        return (f"Segmenter(network={(self.network or {}).get('name', type(self.model).__name__)!r}, "
                f"roi_size={self.roi_size}, in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"device={str(self.device)!r}, precision={self.precision!r}, tta_axes={self.tta_axes}"
                + (f", tta_window_axes={self._tta_window}" if self._tta_window is not None else "") + ")")

    # ------------------------------------------------------------------ model-grid prediction
    def _slice_axis(self, spacing: Sequence[float]) -> int:
        if self.slice_axis is not None:
            return self.slice_axis
        sp = np.asarray(spacing, dtype=float)
        return int(np.flatnonzero(np.isclose(sp, sp.max(), rtol=1e-6))[-1])

    def plan(self, model_shape: Sequence[int], *, spacing: Sequence[float] | None = None,
             want_probabilities: bool = False, input_shape: Sequence[int] | None = None,
             resampled: bool | None = None) -> MemoryPlan:
        """Memory plan for an image of ``model_shape`` (spatial, on the model grid).

        ``resampled`` defaults to whether the preprocessing has a target spacing."""
        if resampled is None:
            resampled = self.preprocess_spec.target_spacing is not None
        shape, roi = self._window_layout(model_shape, spacing)
        budget = None if self.memory_limit_gb is None else int(float(self.memory_limit_gb) * 1024**3)

        def make(sw: int) -> MemoryPlan:
            return plan_memory(shape, in_channels=self.in_channels, out_channels=self.out_channels, roi_size=roi,
                               sw_batch_size=sw, device_type=self.device.type, network=self.network,
                               n_parameters=self.n_parameters, precision=self.precision,
                               want_probabilities=want_probabilities, input_shape=input_shape,
                               resampled=resampled, device_budget_bytes=budget,
                               prefer_slab_above_bytes=None if self.stream_above_gb is None
                               else int(float(self.stream_above_gb) * 1024**3),
                               host_budget_bytes=budget if self.device.type == "cpu" else None)

        try:
            return make(self.sw_batch_size)
        except InsufficientMemoryError:
            if self._sw_batch_size_chosen or self.sw_batch_size == 1:
                raise
            return make(1)  # a default batch of windows is a speed choice: drop it before failing

    def _window_layout(self, model_shape: Sequence[int], spacing: Sequence[float] | None):
        shape = tuple(int(s) for s in model_shape)
        if self.spatial_dims == 3:
            return shape, self.roi_size
        ax = self._slice_axis(spacing if spacing is not None else (1.0, 1.0, 1.0))
        other = [a for a in range(3) if a != ax]
        plane = tuple(shape[a] for a in other)
        return (shape[ax],) + plane, (1,) + self._roi_2d(plane)

    def _roi_2d(self, plane: Sequence[int]) -> tuple[int, ...]:
        """The window of a 2D network on slices of in-plane shape ``plane``: ``roi_size``, or
        with ``whole_slice`` the whole slice rounded up to a multiple of the network's divisor."""
        if not self.whole_slice:
            return self.roi_size
        return tuple(int(-(-int(n) // m) * m) for n, m in zip(plane, self._slice_divisor))

    @contextlib.contextmanager
    def _thread_scope(self):
        """The thread policy around one prediction (re-entrant: cine frames and the
        network call inside :meth:`predict` share the decision of the outer call)."""
        current: ThreadChoice | None = getattr(self._thread_local, "choice", None)
        if current is not None:
            yield current
            return
        choice = self.threads.choose()
        self._thread_local.choice = choice
        try:
            with cpu_threads(choice.threads):
                yield choice
        finally:
            self._thread_local.choice = None

    # ------------------------------------------------------------------ network executor
    @property
    def backend(self) -> str:
        """The backend that runs the network (``"torch"`` until ``onnxruntime``/``auto`` is
        decided at the first prediction)."""
        return self._backend.used

    @property
    def _executor(self) -> Executor:
        return self._backend.executor

    @_executor.setter
    def _executor(self, executor: Executor) -> None:
        self._backend.executor = executor

    def backend_info(self) -> dict[str, Any]:
        """JSON-able facts of the network executor: ``requested``, ``used``, the executor's
        precision and threads (ONNX Runtime: intra-op = the prediction's threads, inter-op 1),
        the export (file name, key, verification), ``auto``'s timings and CPU flags, and a
        ``fallback`` reason where torch ran instead of what was asked
        (:class:`medcnn.inference.backend_choice.BackendChoice`)."""
        return self._backend.info()

    def _model_id(self) -> str:
        return self._backend.model_id()

    def _ensure_backend(self, choice: ThreadChoice) -> None:
        """Decide ``onnxruntime`` / ``auto`` once, at the first prediction (thread count known)."""
        batch = self._backend.resolve(choice.threads,
                                      window_batch=self.sw_batch_size if self._sw_batch_size_chosen else None)
        if batch:
            self.sw_batch_size = int(batch)

    def predict_array(
        self,
        array: Any,
        *,
        spacing: Sequence[float] | None = None,
        outputs: Sequence[str] = ("labels",),
        plan: MemoryPlan | None = None,
        per_view: bool = False,
        source: str | None = None,
    ) -> WindowResult:
        """Sliding-window prediction of an already preprocessed ``(C, X, Y, Z)`` array.

        Args:
            array: float32 numpy array or tensor on the model grid.
            spacing: model-grid spacing in mm (picks the slice axis of 2D networks).
            outputs: any of ``"labels"``, ``"probabilities"``, ``"logits"``,
                ``"probabilities_u8"`` (uint8, 1 byte per voxel and class).
            plan: memory plan (default :meth:`plan`).
            per_view: with TTA, ``probabilities_u8`` also holds each mirrored view's own
                probabilities (``(1 + n_views, K', X, Y, Z)``, the mean first).
            source: the input file, named when the output contradicts the model's
                declared region nesting (:class:`medcnn.errors.InvalidLabelError`).

        Returns:
            :class:`WindowResult` with CPU tensors on the model grid ``(X, Y, Z)``.
        """
        with self._thread_scope() as choice:
            self._ensure_backend(choice)
            res = self._predict_array(array, spacing=spacing, outputs=outputs, plan=plan, per_view=per_view,
                                      source=source)
        res.info["threads"] = choice.to_dict()
        res.info["backend"] = self.backend_info()
        return res

    def _predict_array(self, array: Any, *, spacing: Sequence[float] | None, outputs: Sequence[str],
                       plan: MemoryPlan | None, per_view: bool, source: str | None) -> WindowResult:
        import torch

        img = torch.as_tensor(np.ascontiguousarray(array) if isinstance(array, np.ndarray) else array)
        img = img.to(torch.float32)
        if img.ndim != 4 or img.shape[0] != self.in_channels:
            raise DimensionError.expected(f"a ({self.in_channels}, X, Y, Z) array", f"shape {tuple(img.shape)}")
        if plan is None:
            plan = self.plan(img.shape[1:], spacing=spacing, want_probabilities="probabilities" in outputs)
        perm = None
        tta = self.tta_axes
        roi = self.roi_size
        squeeze = None
        if self.spatial_dims == 2:
            ax = self._slice_axis(spacing if spacing is not None else (1.0, 1.0, 1.0))
            other = [a for a in range(3) if a != ax]
            perm = [ax] + other
            img = img.permute([0] + [1 + a for a in perm]).contiguous()
            if self._tta_window is not None:  # "trained": window axes of the 2D network
                tta = tuple(1 + a for a in self._tta_window)
            else:
                tta = tuple(1 + other.index(a) for a in self.tta_axes if a != ax)
                self._warn_untrained_tta([t - 1 for t in tta])
            roi = (1,) + self._roi_2d(img.shape[2:])
            squeeze = 2
        # torch: the current self.model (callers may wrap it after construction), as before executors
        net = self.model if type(self._executor) is TorchExecutor else self._executor
        predictor = make_predictor(net, device=self.device, precision=self.precision, tta_axes=tta,
                                   memory_format=self._torch_memory_format, squeeze_dim=squeeze,
                                   per_view=per_view and "probabilities_u8" in outputs)

        def run(p: MemoryPlan) -> WindowResult:
            x = img.to(self.device) if p.stitch == "device" else img
            with torch.inference_mode(), cuda_flags(self.device, precision=self.precision,
                                                    deterministic=self.deterministic):
                return sliding_window_inference(
                    x, predictor, roi_size=roi, out_channels=self.out_channels, overlap=self.overlap,
                    mode=self.blend_mode, sigma_scale=self.sigma_scale, sw_batch_size=p.sw_batch_size,
                    outputs=outputs, activation=self.activation, paint=self._paint(),
                    nesting_pairs=self.regions.nesting_pairs() if self._region_channels else None,
                    stitch_device=self.device if p.stitch == "device" else "cpu",
                    slab=p.slab, slab_axis=p.slab_axis, groups=predictor.n_groups,  # type: ignore[attr-defined]
                    placement=self.window_placement)

        res, fallbacks = run_with_oom_fallback(run, plan, device=self.device)
        res.info["plan_used"] = {"stitch": fallbacks[-1]["stitch"], "sw_batch_size": fallbacks[-1]["sw_batch_size"]} \
            if fallbacks else {"stitch": plan.stitch, "sw_batch_size": plan.sw_batch_size}
        res.info["oom_fallbacks"] = fallbacks
        res.info["n_forward_passes"] = res.n_windows * predictor.n_passes  # type: ignore[attr-defined]
        if res.info.get("region_nesting"):  # the declared region nesting, checked on this output
            from medcnn.regions import check_nesting

            names = self.regions.channels
            rows = [{"inner": names[r["inner_channel"]], "outer": names[r["outer_channel"]],
                     "inner_voxels": r["inner_voxels"], "outside_voxels": r["outside_voxels"]}
                    for r in res.info.pop("region_nesting")]
            res.info["region_nesting"] = rows
            check_nesting(rows, path=source)
        if perm is not None:
            inv = list(np.argsort(perm))
            if res.labels is not None:
                res.labels = res.labels.permute(inv).contiguous()
            for name in ("probabilities", "logits"):
                t = getattr(res, name)
                if t is not None:
                    setattr(res, name, t.permute([0] + [1 + a for a in inv]).contiguous())
            if res.probabilities_u8 is not None:
                res.probabilities_u8 = res.probabilities_u8.permute([0, 1] + [2 + a for a in inv]).contiguous()
            res.info["slice_axis"] = perm[0]
            res.info["window"] = list(roi[1:])
            res.info["tta_axes"] = sorted(perm[a] for a in tta)  # model-grid axes actually mirrored
        else:
            res.info["tta_axes"] = list(tta)
        return res

    # ------------------------------------------------------------------ Volume prediction
    def _channels(self, image: Any) -> list[Volume] | Volume:
        if isinstance(image, Volume):
            return image
        if isinstance(image, Mapping):
            missing = [c for c in self.channels if c not in image]
            if missing:
                raise DimensionError.expected(f"channels {list(self.channels)}", f"keys {list(image)}",
                                              hint=f"Missing {missing}")
            return [image[c] for c in self.channels]
        vols = list(image)
        if not all(isinstance(v, Volume) for v in vols):
            raise ConfigError.expected("a Volume, a list of Volumes or a {channel: Volume} dict",
                                       type(image).__name__)
        return vols

    def predict(self, image: Any, *, return_probabilities: bool = False,
                volume_intervals: bool = False) -> Prediction:
        """Segment one case.

        Args:
            image: a 3D intensity Volume (one channel); a 4D ``(C, I, J, K)`` channel Volume;
                a list of 3D Volumes in :attr:`channels` order or a ``{name: Volume}`` dict;
                or a 4D ``(T, I, J, K)`` cine Volume (predicted frame by frame).
            return_probabilities: also return ``(C, I, J, K)`` float32 probabilities on the
                input grid (not for cine input).
            volume_intervals: also compute each foreground label's volume interval
                (:mod:`medcnn.measure.intervals`; with TTA, the per-view spread) into
                :attr:`Prediction.volume_intervals`. Cheap: the probabilities are kept as
                uint8 (1 byte per voxel and class) on the model grid while they exist, then
                mapped to the input grid one label at a time; with TTA the stitching
                accumulator holds one block of channels per mirrored view.

        Returns:
            :class:`Prediction` whose label Volume has exactly the input's geometry.
        """
        with self._thread_scope() as choice:
            self._ensure_backend(choice)
            if isinstance(image, Volume) and image.leading_axis == "time":
                pred = self._predict_cine(image, return_probabilities=return_probabilities,
                                          volume_intervals=volume_intervals)
            else:
                pred = self._predict_one(image, return_probabilities=return_probabilities,
                                         volume_intervals=volume_intervals)
        pred.info["threads"] = choice.to_dict()
        pred.info["backend"] = self.backend_info()
        return pred

    def _predict_one(self, image: Any, *, return_probabilities: bool, volume_intervals: bool) -> Prediction:
        case = self._prepare(image)
        run = self._plan_run(case, return_probabilities=return_probabilities, volume_intervals=volume_intervals)
        res = self.predict_array(case.x, spacing=case.record.model_geometry.spacing, outputs=run.outputs,
                                 plan=run.plan, per_view=run.volume_intervals, source=case.first.source)
        case.x = None
        case.t_network = time.perf_counter() - case.t_prepared
        return self._finish(case, res, run, return_probabilities=return_probabilities)

    def _prepare(self, image: Any) -> "_Case":
        """Preprocess one case (a 3D Volume, channels, or one cine frame) onto the model grid."""
        from medcnn.preprocess import Preprocessor

        t0 = time.perf_counter()
        steps_s: dict[str, float] = {}
        chans = self._channels(image)
        first = chans if isinstance(chans, Volume) else chans[0]
        x, record = Preprocessor(self.preprocess_spec).forward(chans, timings=steps_s)
        return _Case(x=x, record=record, first=first, steps_s=steps_s, t_start=t0, t_prepared=time.perf_counter())

    def _plan_run(self, case: "_Case", *, return_probabilities: bool, volume_intervals: bool,
                  model_shape: Sequence[int] | None = None) -> "_Run":
        """Which outputs the network stage produces for ``case`` and the memory plan for them
        (``model_shape``: the array actually predicted, when several frames share one call)."""
        record = case.record
        resampled = record.step("resample") is not None
        via_probs = return_probabilities or resampled or self.resample_logits
        input_shape = record.input_geometry.shape
        shape = case.x.shape[1:] if model_shape is None else tuple(model_shape)
        intervals_skipped = None
        try:  # intervals need the weight channel too: planned like probabilities (conservative)
            plan = self.plan(shape, spacing=record.model_geometry.spacing,
                             want_probabilities=via_probs or volume_intervals, input_shape=input_shape,
                             resampled=resampled)
        except InsufficientMemoryError:
            if return_probabilities:
                raise
            if volume_intervals:
                volume_intervals = False
                intervals_skipped = "skipped: not enough memory for the probabilities"
            via_probs = False  # map labels back with nearest neighbour instead of resampling probabilities
            plan = self.plan(shape, spacing=record.model_geometry.spacing, want_probabilities=False,
                             input_shape=input_shape, resampled=resampled)
        outputs: tuple[str, ...] = ("probabilities",) if via_probs else ("labels",)
        if via_probs and self.resample_logits:
            outputs = ("logits",)
        if volume_intervals:
            outputs += ("probabilities_u8",)
        return _Run(plan=plan, outputs=outputs, via_probs=bool(via_probs), volume_intervals=bool(volume_intervals),
                    intervals_skipped=intervals_skipped)

    def _finish(self, case: "_Case", res: WindowResult, run: "_Run", *, return_probabilities: bool) -> Prediction:
        """Model-grid outputs of one case → labels (and probabilities) on its input grid,
        postprocessed, with the prediction's facts."""
        record, steps_s, via_probs, plan = case.record, case.steps_s, run.via_probs, run.plan
        probs_u8, res.probabilities_u8 = res.probabilities_u8, None
        t2 = time.perf_counter()
        probs_vol = None
        n_interpolated = 0
        if via_probs and self.resample_logits:  # nnU-Net's export order: logits resampled, then activated
            probs_vol = record.to_input_grid(res.logits.numpy(), kind="logits", activation=self.activation,
                                             timings=steps_s)
            res.logits = None
            t = time.perf_counter()
            labels_vol = self._labels_from_probabilities(probs_vol)
            steps_s["to_input_grid_labels"] = time.perf_counter() - t
            n_interpolated = int(np.prod(record.input_geometry.shape))
            if not return_probabilities:
                probs_vol = None
        elif via_probs:
            model_probs = res.probabilities.numpy()
            res.probabilities = None
            fill = self._probability_fill()
            if return_probabilities:
                probs_vol = record.to_input_grid(model_probs, kind="probability", fill=fill, timings=steps_s)
                t = time.perf_counter()
                labels_vol = self._labels_from_probabilities(probs_vol)
                steps_s["to_input_grid_labels"] = time.perf_counter() - t
                n_interpolated = int(np.prod(record.input_geometry.shape))
            else:  # labels decided on the model grid, probabilities interpolated only at boundaries
                labels_vol, n_interpolated = record.labels_to_input_grid(
                    model_probs, reduce=self._reduce_probabilities, fill=fill, timings=steps_s)
            del model_probs
        else:
            labels_vol = record.to_input_grid(res.labels.numpy(), kind="label", timings=steps_s)
        t3 = time.perf_counter()
        pp_applied = False
        if self.postprocess_spec is not None and not self.postprocess_spec.is_noop:
            from medcnn.postprocess import postprocess

            labels_vol = postprocess(labels_vol, self.postprocess_spec)
            pp_applied = True
        t4 = time.perf_counter()
        first = case.first
        meta = {"label_names": {str(k): v for k, v in self.labels.items()}, "source_image": first.source}
        labels_vol = Volume(labels_vol.array, record.input_geometry.with_source(None), "label", None, None, meta)
        if probs_vol is not None:
            probs_vol = Volume(probs_vol.array, record.input_geometry.with_source(None), "probability", "channel",
                               None, meta)
        intervals = None
        n_views = 0
        if probs_u8 is not None:
            n_views = int(probs_u8.shape[0]) - 1
            intervals = self._volume_intervals(probs_u8.numpy(), record, labels_vol)
            del probs_u8
        t_pre = case.t_prepared - case.t_start
        t_back = t3 - t2
        info = {
            "device": str(self.device),
            "precision": self.precision,
            "tta_axes": list(res.info.get("tta_axes", self.tta_axes)),
            "tta_request": self.tta_request,
            "mirror_axes_trained": None if self.mirror_axes is None else list(self.mirror_axes),
            "memory_format": self.memory_format,
            "compiled": self.compiled,
            "roi_size": list(self.roi_size),
            **({"whole_slice": {"used": self.whole_slice,
                                **({"window": list(res.info["window"])} if self.whole_slice else {})}}
               if self.spatial_dims == 2 else {}),
            "overlap": self.overlap,
            "sw_batch_size": res.info["plan_used"]["sw_batch_size"],
            "stitch": res.info["plan_used"]["stitch"],
            "oom_fallbacks": res.info["oom_fallbacks"],
            "deterministic": self.deterministic,
            "blend_mode": self.blend_mode,
            "window_placement": self.window_placement,
            "n_windows": res.n_windows,
            "n_forward_passes": res.info.get("n_forward_passes"),
            "spatial_dims": self.spatial_dims,
            "activation": self.activation,
            **({"region_nesting": res.info["region_nesting"]} if "region_nesting" in res.info else {}),
            "labels_from": "probabilities" if via_probs else "labels",
            "postprocessed": pp_applied,
            "memory": plan.to_dict(),
            "model_grid": record.model_geometry.to_dict(),
            "input_grid": record.input_geometry.to_dict(),
            "preprocess_steps": [s["step"] for s in record.steps],
            "timings_s": {"preprocess": t_pre, "network": case.t_network, "to_input_grid": t_back,
                          "postprocess": t4 - t3, "total": t_pre + case.t_network + t_back + (t4 - t3),
                          **steps_s},
            "to_input_grid": {"interpolated_voxels": n_interpolated,
                              "input_voxels": int(np.prod(record.input_geometry.shape))},
        }
        if "slice_axis" in res.info:
            info["slice_axis"] = res.info["slice_axis"]
        if self.bundle_info:
            info["bundle"] = dict(self.bundle_info)
        if intervals is not None:
            info["volume_intervals"] = {"tta_views": n_views, "probabilities": "uint8 (round(p x 255))"}
        elif run.intervals_skipped:
            info["volume_intervals"] = run.intervals_skipped
        return Prediction(labels_vol, probs_vol, info, intervals)

    @property
    def _region_channels(self) -> bool:
        return self.regions is not None and self.regions.has_channels

    def _paint(self) -> list[tuple[int, int]] | None:
        """Several sigmoid channels: ``[(channel, label)]`` in painting order (later wins)."""
        if not (self.activation == "sigmoid" and self.out_channels > 1):
            return None
        if self._region_channels:
            return self.regions.paint()
        return [(c, c + 1) for c in range(self.out_channels)]  # channel c marks label c + 1

    def _foreground_channels(self, n_prob: int) -> list[tuple[int, int]]:
        """``(probability channel, label value)`` of every foreground class."""
        paint = self._paint()
        if paint is not None:
            return sorted(paint)
        return [(c, c) for c in range(1, n_prob)]

    def _volume_intervals(self, probs_u8: np.ndarray, record: Any, labels: Volume) -> list[dict[str, Any]]:
        """Volume interval rows from uint8 probabilities ``(G, K', X, Y, Z)`` on the model grid
        (the prediction first, then each TTA view), mapped to the input grid one map at a time."""
        from medcnn.measure.intervals import volume_interval

        def to_input(arr: np.ndarray) -> np.ndarray:
            return record.to_input_grid(np.ascontiguousarray(arr), kind="label").array

        views = [to_input(self._labels_u8(probs_u8[g])) for g in range(1, probs_u8.shape[0])]
        rows = []
        for c, value in self._foreground_channels(probs_u8.shape[1]):
            rows.append({"label": value, "label_name": self.labels.get(value, f"label_{value}"),
                         **volume_interval(labels, value, to_input(probs_u8[0, c]), view_labels=views,
                                           scale=1.0 / 255)})
        return rows

    def _labels_u8(self, probs: np.ndarray) -> np.ndarray:
        """Labels ``(X, Y, Z)`` uint8 of quantised probabilities ``(K', X, Y, Z)``, by the rule
        that makes the prediction's labels (argmax; nested sigmoid: last channel >= 0.5)."""
        paint = self._paint()
        if paint is not None:
            lab = np.zeros(probs.shape[1:], np.uint8)
            for c, v in paint:
                lab[probs[c] >= 128] = v
            return lab
        return np.argmax(probs, axis=0).astype(np.uint8)

    def _labels_from_probabilities(self, probs: Volume) -> Volume:
        return Volume(self._reduce_probabilities(probs.array), probs.geometry, "label", None, None, probs.meta)

    def _reduce_probabilities(self, probs: np.ndarray) -> np.ndarray:
        """``(C, ...)`` probabilities -> labels: argmax (softmax, one sigmoid channel as
        background/foreground) or nested thresholds at 0.5 (several sigmoid channels)."""
        from medcnn.postprocess import argmax_array, threshold_array

        paint = self._paint()
        if paint is not None:  # channels in painting order, each writing its label
            return threshold_array(np.asarray(probs)[[c for c, _ in paint]], 0.5, label_values=[v for _, v in paint])
        return argmax_array(probs)

    def _probability_fill(self) -> float | None:
        """Probabilities of voxels outside a foreground crop: background (the default: 1 in
        channel 0) — for several sigmoid channels, which have no background channel, 0."""
        return 0.0 if self.activation == "sigmoid" and self.out_channels > 1 else None

    def _predict_cine(self, image: Volume, *, return_probabilities: bool, volume_intervals: bool = False) -> Prediction:
        if return_probabilities:
            raise ConfigError.expected("return_probabilities=False for 4D cine input",
                                       "return_probabilities=True", path=image.source,
                                       hint="Predict frames one by one (volume.frame(t)) to get probabilities")
        if self.in_channels != 1:
            raise DimensionError.expected(f"{self.in_channels} channels", "a single-channel cine volume",
                                          path=image.source)
        t0 = time.perf_counter()
        frames = list(image.frames())
        preds = None
        batched = False
        if self.spatial_dims == 2 and len(frames) > 1:
            preds = self._predict_frames_batched(frames, volume_intervals=volume_intervals)
            batched = preds is not None
        if preds is None:
            preds = [self.predict(f, volume_intervals=volume_intervals) for f in frames]
        labels = Volume.stack([p.labels for p in preds], leading_axis="time", frame_times_ms=image.frame_times_ms)
        labels = Volume(labels.array, labels.geometry, "label", "time", image.frame_times_ms, preds[0].labels.meta)
        info = dict(preds[0].info)
        info["frames"] = len(preds)
        info["frames_batched"] = batched
        steps = {k: 0.0 for p in preds for k in p.info["timings_s"] if k != "total"}
        for p in preds:
            for k, v in p.info["timings_s"].items():
                if k != "total":
                    steps[k] += v
        if batched:  # one network call for every frame: its time once, not per frame
            steps["network"] = preds[0].info["timings_s"]["network"]
        info["timings_s"] = {"total": time.perf_counter() - t0, **steps}  # summed over frames
        info["to_input_grid"] = {k: sum(p.info["to_input_grid"][k] for p in preds)
                                 for k in preds[0].info["to_input_grid"]}
        if batched:
            info["n_windows"] = sum(p.info["n_windows"] for p in preds)
            info["n_forward_passes"] = sum(p.info["n_forward_passes"] or 0 for p in preds)
        info["per_frame"] = [{"timings_s": {k: v for k, v in p.info["timings_s"].items()
                                            if not (batched and k == "network")},
                              "n_windows": p.info["n_windows"]} for p in preds]
        intervals = None
        if volume_intervals:
            intervals = [{"frame": t, **row} for t, p in enumerate(preds) for row in (p.volume_intervals or [])]
        return Prediction(labels, None, info, intervals)

    def _predict_frames_batched(self, frames: Sequence[Volume], *, volume_intervals: bool) -> list[Prediction] | None:
        """Cine frames through a 2D network in one sliding-window call: the frames' model-grid
        arrays are joined along the slice axis, so every window of every frame and slice
        goes through the executor in batches, then split and mapped back frame by frame.

        A 2D window covers one slice, so each frame's labels are those of predicting it
        alone (up to floating-point differences between window batches). ``None`` when the
        frames' model grids differ, or when memory allows the outputs a frame alone would get
        only frame by frame (then they are predicted one by one)."""
        cases = [self._prepare(f) for f in frames]
        shape = cases[0].x.shape
        spacing = cases[0].record.model_geometry.spacing
        if any(c.x.shape != shape or not np.allclose(c.record.model_geometry.spacing, spacing) for c in cases):
            return None
        ax = self._slice_axis(spacing)
        n = int(shape[1 + ax])
        joined_shape = list(shape[1:])
        joined_shape[ax] = n * len(cases)
        try:  # the joined call must produce what each frame alone would (else: one by one)
            run = self._plan_run(cases[0], return_probabilities=False, volume_intervals=volume_intervals,
                                 model_shape=joined_shape)
        except InsufficientMemoryError:
            return None
        alone = self._plan_run(cases[0], return_probabilities=False, volume_intervals=volume_intervals)
        if run.outputs != alone.outputs:
            return None
        x = np.concatenate([np.asarray(c.x) for c in cases], axis=1 + ax)
        for c in cases:
            c.x = None
        t = time.perf_counter()
        res = self.predict_array(x, spacing=spacing, outputs=run.outputs, plan=run.plan,
                                 per_view=run.volume_intervals, source=frames[0].source)
        del x
        network_s = time.perf_counter() - t
        preds = []
        for i, c in enumerate(cases):
            part = WindowResult(n_windows=res.n_windows // len(cases), slab_axis=res.slab_axis, slab=res.slab,
                                info=dict(res.info))
            part.info["n_forward_passes"] = (res.info.get("n_forward_passes") or 0) // len(cases)
            sl = slice(i * n, (i + 1) * n)
            if res.labels is not None:
                part.labels = res.labels.narrow(ax, sl.start, n).contiguous()
            for name, lead in (("probabilities", 1), ("logits", 1), ("probabilities_u8", 2)):
                tensor = getattr(res, name)
                if tensor is not None:
                    setattr(part, name, tensor.narrow(lead + ax, sl.start, n).contiguous())
            c.t_network = network_s
            preds.append(self._finish(c, part, run, return_probabilities=False))
        return preds

