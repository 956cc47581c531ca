"""Network executors: one small interface between the sliding window and a network.

An executor takes one batch of windows, a float32 ``torch.Tensor`` of shape
``(N, C, *spatial)`` (``spatial``: 2 or 3 sizes), and returns float32 logits
``(N, K, *spatial)`` as a CPU or device tensor. Everything around it — window placement,
blending, mirroring TTA, memory plan, mapping back to the input grid — stays in
:class:`medcnn.inference.Segmenter` and :mod:`medcnn.inference.sliding_window`, so every
backend sees exactly the same windows.

Backends:

* :class:`TorchExecutor` (``backend="torch"``, the default): the PyTorch module, under
  ``torch.autocast`` for bf16/fp16 and in channels-last memory where asked. The numbers
  are those of medcnn before executors existed.
* :class:`OnnxRuntimeExecutor` (``backend="onnxruntime"``): the same network exported once
  to ONNX (:func:`onnx_export`) and run by ONNX Runtime's CPU execution provider, fp32,
  ``intra_op_num_threads`` = the thread count of the prediction
  (:mod:`medcnn.inference.threads`), ``inter_op_num_threads`` = 1.

The export is a cache of the bundle (never part of it): ``<cache_dir>/<key>.onnx`` plus a
``.json`` record, where the file name holds the bundle's spec sha256 and the onnxruntime and
torch versions (:func:`export_name`). It is written atomically (temporary file, then
``os.replace``), verified against torch fp32 logits on a random window when built
(:class:`ExportRejectedError` when the largest difference exceeds the tolerance), and
rebuilt when its record is missing, names another key (stale) or its sha256 no longer
matches the file (corrupt, e.g. truncated). :func:`choose_fastest` times candidate
executors for ``backend="auto"``.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import sys
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from medcnn.errors import ConfigError, MedcnnError
from medcnn.hardware import cpu_flags
from medcnn.hashing import file_sha256

__all__ = [
    "BACKENDS",
    "Executor",
    "TorchExecutor",
    "OnnxRuntimeExecutor",
    "OnnxExport",
    "ExportRejectedError",
    "AutoChoice",
    "onnx_export",
    "export_name",
    "default_cache_dir",
    "choose_fastest",
    "cpu_flags",
    "onnxruntime_version",
    "CACHE_ENV",
    "EXPORT_FORMAT",
]

#: Accepted values of ``Segmenter(backend=...)`` and ``--backend``.
BACKENDS = ("torch", "onnxruntime", "auto")
#: Environment variable naming medcnn's cache root (exports live in its ``onnx/`` folder).
CACHE_ENV = "MEDCNN_CACHE"
#: Version of the export recipe (opset, names, axes); part of every export's key.
EXPORT_FORMAT = 1
ONNX_OPSET = 17
#: Verification: the export is accepted when max |onnx - torch| <= ATOL + RTOL * max |torch|
#: over a random window (fp32 on both sides; measured on the shipped bundles: 1e-5 - 5e-5
#: on logits of magnitude 15-20).
VERIFY_ATOL = 1e-3
VERIFY_RTOL = 1e-4
class ExportRejectedError(MedcnnError, ValueError):
    """An ONNX export whose logits differ from torch fp32 by more than the tolerance."""


class Executor:
    """A network as ``(N, C, *spatial) float32 tensor -> (N, K, *spatial) float32 logits``.

    Subclasses set :attr:`name` and implement :meth:`__call__`.
    """

    name = "executor"

    def __call__(self, x: Any) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """JSON-able facts for provenance."""
        return {"backend": self.name}


class TorchExecutor(Executor):
    """The torch module itself.

    Args:
        model: network in eval mode on ``device``.
        device: ``torch.device`` the windows are sent to (by the caller).
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast for the last two).
        memory_format: e.g. ``torch.channels_last_3d`` for the network input, or None.
    """

    name = "torch"

    def __init__(self, model: Any, *, device: Any, precision: str = "fp32", memory_format: Any = None) -> None:
        self.model = model
        self.device = device
        self.precision = precision
        self.memory_format = memory_format

    def __call__(self, x: Any) -> Any:
        from medcnn.inference.device import autocast

        if self.memory_format is not None:
            x = x.contiguous(memory_format=self.memory_format)
        with autocast(self.device, self.precision):
            y = self.model(x)
        if isinstance(y, (list, tuple)):  # deep supervision heads: full resolution first
            y = y[0]
        return y.float()

    def describe(self) -> dict[str, Any]:
        return {"backend": "torch", "precision": self.precision}


def onnxruntime_version() -> str | None:
    """The installed onnxruntime's version, or None when it cannot be imported."""
    try:
        import onnxruntime
    except ImportError:
        return None
    return str(onnxruntime.__version__)


class OnnxRuntimeExecutor(Executor):
    """An ONNX file run by ONNX Runtime on the CPU, fp32.

    Args:
        path: the ``.onnx`` file (input ``image``, output ``logits``).
        threads: intra-op threads; ``None`` (default): ``torch.get_num_threads()`` at each
            call, which the Segmenter sets to its thread decision for the prediction. One
            session is kept per thread count.
        wait_policy: ``"PASSIVE"`` turns ONNX Runtime's spinning off
            (``session.intra_op.allow_spinning = 0``); default: the value of
            ``OMP_WAIT_POLICY`` when the executor is made, as for torch.
    """

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike[str], *, threads: int | None = None,
                 wait_policy: str | None = None) -> None:
        import onnxruntime  # noqa: F401 - fail here, not at the first window

        self.path = Path(path)
        self.threads = None if threads is None else int(threads)
        self.wait_policy = (wait_policy if wait_policy is not None else os.environ.get("OMP_WAIT_POLICY", "")).upper()
        self._sessions: dict[int, Any] = {}
        self._lock = threading.Lock()
        self.last_threads: int | None = None

    def session(self, threads: int) -> Any:
        """The inference session with ``threads`` intra-op threads (made once per count)."""
        import onnxruntime as ort

        with self._lock:
            sess = self._sessions.get(threads)
            if sess is None:
                so = ort.SessionOptions()
                so.intra_op_num_threads = int(threads)
                so.inter_op_num_threads = 1
                so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
                so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                so.log_severity_level = 3  # errors only
                if self.wait_policy == "PASSIVE":
                    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
                sess = ort.InferenceSession(str(self.path), so, providers=["CPUExecutionProvider"])
                self._sessions[threads] = sess
            return sess

    def __call__(self, x: Any) -> Any:
        import numpy as np
        import torch

        n = self.threads if self.threads is not None else max(1, int(torch.get_num_threads()))
        self.last_threads = n
        sess = self.session(n)
        arr = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        out = sess.run(["logits"], {"image": arr})[0]
        return torch.from_numpy(out)

    def describe(self) -> dict[str, Any]:
        return {"backend": "onnxruntime", "precision": "fp32", "onnxruntime": onnxruntime_version(),
                "intra_op_threads": self.last_threads if self.threads is None else self.threads,
                "inter_op_threads": 1, "allow_spinning": self.wait_policy != "PASSIVE"}


# ----------------------------------------------------------------------------- export cache
def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where exports live: ``$MEDCNN_CACHE/onnx`` when that variable is set, else
    ``~/.cache/medcnn/onnx`` (read when called, never at import)."""
    env = os.environ if environ is None else environ
    root = env.get(CACHE_ENV)
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "medcnn") / "onnx"


def _key_facts(model_id: str, *, spatial_dims: int, in_channels: int, out_channels: int) -> dict[str, Any]:
    import torch

    return {"model_id": str(model_id), "onnxruntime": onnxruntime_version(), "torch": str(torch.__version__),
            "export_format": EXPORT_FORMAT, "opset": ONNX_OPSET, "spatial_dims": int(spatial_dims),
            "in_channels": int(in_channels), "out_channels": int(out_channels)}


def export_name(model_id: str, *, spatial_dims: int, in_channels: int, out_channels: int) -> str:
    """File stem of an export: ``<spec sha256[:16]>_ort<ver>_torch<ver>_<facts hash[:8]>``
    (the last part hashes the export format, opset and channel counts)."""
    facts = _key_facts(model_id, spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels)
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:8]
    safe = lambda s: "".join(c if c.isalnum() or c in ".-" else "-" for c in str(s))  # noqa: E731
    return f"{safe(model_id)[:16]}_ort{safe(facts['onnxruntime'])}_torch{safe(facts['torch'])}_{digest}"


@dataclass
class OnnxExport:
    """One usable export.

    Attributes:
        path: the ``.onnx`` file.
        key: the facts it was built for (model id = spec sha256, versions, format).
        built: True when built by this call, False when taken from the cache.
        rebuilt_because: why an existing file was not used (``"stale: ..."``,
            ``"corrupt: ..."``), else None.
        verification: ``max_abs_diff``, ``max_abs_logit``, ``tolerance``, ``window`` of the
            check made when it was built.
        dynamic_spatial: whether the export accepts any window size (else only ``roi``).
    """

    path: Path
    key: dict[str, Any]
    built: bool
    rebuilt_because: str | None
    verification: dict[str, Any] = field(default_factory=dict)
    dynamic_spatial: bool = True

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = self.path.name  # the cache folder may hold a user name: file name only
        return d


def _first_output(model: Any) -> Any:
    """``model`` wrapped so that a list output (deep supervision heads) exports as its first."""
    import torch

    class FirstOutput(torch.nn.Module):
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.m = m

        def forward(self, x):
            y = self.m(x)
            return y[0] if isinstance(y, (list, tuple)) else y

    return FirstOutput(model).eval()


def _export_file(model: Any, example: Any, path: Path, *, spatial_dims: int) -> bool:
    """``torch.onnx.export`` of ``model`` to ``path``; True when the spatial axes are dynamic.

    The TorchScript exporter (``dynamo=False``: ~1 s for the shipped networks, dynamic batch
    and spatial axes) is used where torch still has it; otherwise the ``torch.export``
    based exporter (needs ``onnxscript``; ~10-20 s), with a dynamic batch and, where the
    network allows, dynamic spatial axes."""
    import torch

    axes = {0: "batch", **{2 + i: f"size{i}" for i in range(spatial_dims)}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation and instance-norm training-mode chatter
        try:
            torch.onnx.export(model, (example,), str(path), dynamo=False, input_names=["image"],
                              output_names=["logits"], dynamic_axes={"image": axes, "logits": axes},
                              opset_version=ONNX_OPSET, do_constant_folding=True)
            return True
        except (TypeError, RuntimeError, AttributeError, ImportError) as legacy_error:
            legacy = legacy_error
        Dim = torch.export.Dim
        for dynamic_spatial in (True, False):
            shapes = {0: Dim("batch", min=1, max=1024),
                      **({2 + i: Dim.AUTO for i in range(spatial_dims)} if dynamic_spatial else {})}
            try:
                torch.onnx.export(model, (example,), str(path), dynamo=True, input_names=["image"],
                                  output_names=["logits"], dynamic_shapes=(shapes,),
                                  opset_version=max(ONNX_OPSET, 18))
                return dynamic_spatial
            except Exception:  # noqa: BLE001 - try the next, stricter variant
                if not dynamic_spatial:
                    raise RuntimeError(f"ONNX export failed with both exporters (TorchScript: {legacy})")
    return False  # pragma: no cover


def onnx_export(
    model: Any,
    *,
    model_id: str,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    roi_size: Sequence[int],
    cache_dir: str | os.PathLike[str],
    notice: Callable[[str], None] | None = None,
) -> OnnxExport:
    """The verified ONNX export of ``model`` from the cache, built when needed.

    Args:
        model: the torch network (eval mode, CPU, fp32 weights).
        model_id: what identifies its weights and architecture: the bundle's spec sha256.
        spatial_dims, in_channels, out_channels: the network's.
        roi_size: window size; the verification window is ``(2, in_channels, *roi_size)``.
        cache_dir: folder of the exports (created).
        notice: called with one line when an existing export is rebuilt.

    Raises:
        ExportRejectedError: the fresh export's logits differ from torch fp32 by more than
            ``VERIFY_ATOL + VERIFY_RTOL * max|logits|`` (nothing is kept in the cache).
        ImportError: onnxruntime or onnx missing.
    """
    import numpy as np
    import onnxruntime as ort
    import torch

    try:
        import onnx  # noqa: F401 - what torch.onnx.export writes with
    except ImportError:
        raise ImportError("the onnx package is not installed (pip install onnx)") from None
    folder = Path(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    key = _key_facts(model_id, spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels)
    stem = export_name(model_id, spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels)
    path, record_path = folder / f"{stem}.onnx", folder / f"{stem}.json"
    reason = None
    if path.exists() or record_path.exists():
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = None
        if record is None:
            reason = f"corrupt: {record_path.name} missing or unreadable"
        elif record.get("key") != key:
            reason = f"stale: built for {record.get('key')}, need {key}"
        elif not path.exists():
            reason = f"corrupt: {path.name} missing"
        elif path.stat().st_size != record.get("size_bytes") or file_sha256(path) != record.get("sha256"):
            reason = f"corrupt: {path.name} does not match its recorded size/sha256"
        else:
            try:  # loads in onnxruntime: usable
                ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                return OnnxExport(path, key, False, None, record.get("verification", {}),
                                  bool(record.get("dynamic_spatial", True)))
            except Exception as exc:  # noqa: BLE001 - any load failure means rebuild
                reason = f"corrupt: onnxruntime cannot load it ({type(exc).__name__})"
        if notice is not None:
            notice(f"rebuilding the ONNX export {path.name} ({reason.split(':')[0]})")

    net = _first_output(model)
    gen = torch.Generator().manual_seed(0)
    window = (2, int(in_channels), *(int(r) for r in roi_size))
    example = torch.randn(*window, generator=gen)
    from medcnn.io._common import atomic_path

    # the export, then its record: each written beside its target and renamed onto it (a
    # crash leaves no half file under the final name); the record last marks it complete
    with atomic_path(path) as tmp, torch.inference_mode(False), torch.no_grad():
        dynamic = _export_file(net, example, tmp, spatial_dims=spatial_dims)
        ref = net(example).float().numpy()
        sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        got = sess.run(["logits"], {"image": example.numpy()})[0]
        if got.shape != ref.shape:
            raise ExportRejectedError.expected(f"ONNX logits of shape {ref.shape} (torch fp32)",
                                               f"{got.shape}", path=path.name)
        diff = float(np.abs(got - ref).max())
        scale = float(np.abs(ref).max())
        tol = VERIFY_ATOL + VERIFY_RTOL * scale
        verification = {"window": list(window), "max_abs_diff": diff, "max_abs_logit": scale, "tolerance": tol,
                         "reference": "torch fp32, same weights, random normal window (seed 0)"}
        if not diff <= tol:
            raise ExportRejectedError.expected(
                f"ONNX logits within {tol:.2e} of torch fp32 on a random {window} window",
                f"max abs difference {diff:.3e} (largest logit {scale:.3g})", path=path.name,
                hint="not used; the torch backend runs this network")
        record = {"key": key, "sha256": file_sha256(tmp), "size_bytes": tmp.stat().st_size,
                  "verification": verification, "dynamic_spatial": dynamic,
                  "built_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with atomic_path(record_path) as rec_tmp:
        rec_tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")
    return OnnxExport(path, key, True, reason, verification, dynamic)


# ----------------------------------------------------------------------------- auto
@dataclass
class AutoChoice:
    """What ``backend="auto"`` chose and the timings it chose on.

    Attributes:
        backend: the fastest candidate's name.
        sw_batch_size: its fastest windows per call.
        seconds_per_window: ``{candidate: {batch: median seconds per window}}``.
        threads: threads the timing ran with.
        cpu_flags: :func:`medcnn.hardware.cpu_flags` of the machine.
        rounds: timed calls per (candidate, batch) after one warm-up call each.
        window: the window shape ``(C, *spatial)``.
    """

    backend: str
    sw_batch_size: int
    seconds_per_window: dict[str, dict[int, float]]
    threads: int
    cpu_flags: list[str]
    rounds: int
    window: list[int]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["seconds_per_window"] = {k: {str(b): round(s, 6) for b, s in v.items()}
                                   for k, v in self.seconds_per_window.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "AutoChoice":
        return cls(str(d["backend"]), int(d["sw_batch_size"]),
                   {k: {int(b): float(s) for b, s in v.items()} for k, v in d["seconds_per_window"].items()},
                   int(d["threads"]), list(d["cpu_flags"]), int(d["rounds"]), list(d["window"]))


def choose_fastest(
    candidates: Mapping[str, Callable[[Any], Any]],
    window: Sequence[int],
    *,
    batches: Sequence[int] = (1, 2, 4),
    rounds: int = 3,
    threads: int | None = None,
) -> AutoChoice:
    """Time each candidate executor at each window batch and return the fastest pair.

    Every (candidate, batch) first runs once untimed (warm-up: library loading, memory
    pools, oneDNN primitive caches). Then ``rounds`` rounds each time one call of every
    (batch, candidate) pair, the candidates alternating within a batch, so a change of
    machine load during the timing hits all candidates alike. The score is the median
    call time divided by the batch: each candidate is judged at its own best batch.

    Args:
        candidates: name -> executor (``(N, *window)`` tensor -> logits).
        window: ``(C, *spatial)`` of one window.
        batches: window batches to try (default 1, 2, 4).
        rounds: timed calls per pair (>= 1).
        threads: recorded (the caller sets the thread count).
    """
    import torch

    if not candidates:
        raise ConfigError.expected("at least one backend candidate", "none")
    batches = sorted({int(b) for b in batches if int(b) >= 1}) or [1]
    gen = torch.Generator().manual_seed(0)
    inputs = {b: torch.randn(b, *[int(w) for w in window], generator=gen) for b in batches}
    with torch.inference_mode():
        for b in batches:
            for ex in candidates.values():
                ex(inputs[b])
        times: dict[str, dict[int, list[float]]] = {k: {b: [] for b in batches} for k in candidates}
        names = list(candidates)
        for r in range(max(1, int(rounds))):
            order = names if r % 2 == 0 else names[::-1]  # alternate who goes first
            for b in batches:
                for name in order:
                    t = time.perf_counter()
                    candidates[name](inputs[b])
                    times[name][b].append(time.perf_counter() - t)
    per_window = {k: {b: statistics.median(v) / b for b, v in d.items()} for k, d in times.items()}
    best = min(((s, k, b) for k, d in per_window.items() for b, s in d.items()), key=lambda t: (t[0], t[2]))
    return AutoChoice(best[1], best[2], per_window,
                      int(threads if threads is not None else torch.get_num_threads()), cpu_flags(),
                      max(1, int(rounds)), [int(w) for w in window])


def notice(line: str) -> None:
    """One line on stderr (the backend notices: fallback, rebuild)."""
    print(f"medcnn: {line}", file=sys.stderr, flush=True)
