"""Which executor runs a :class:`~medcnn.inference.Segmenter`'s network.

``backend="torch"`` runs the module itself; ``"onnxruntime"`` exports it once to ONNX
(verified against torch fp32, cached by the weights' hash, :func:`medcnn.inference.executors.onnx_export`)
and runs ONNX Runtime; ``"auto"`` times the candidates at their own best window batch and
keeps the fastest, storing the choice with the CPU flags it was made on. The decision is made
once, at the first prediction, when the thread count is known; a missing runtime or a
rejected export falls back to torch with one line on stderr and the reason in the facts.

The Segmenter keeps the windows, blending, TTA, memory plan and mapping back; this class only
answers "what runs a batch of windows" and "at how many windows per call".
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from medcnn.inference.executors import Executor

__all__ = ["BackendChoice"]


class BackendChoice:
    """The network executor of one Segmenter, decided at the first prediction.

    Args:
        request: ``"torch"``, ``"onnxruntime"`` or ``"auto"``.
        torch_executor: the torch module's executor (the default and the fallback).
        export_model: the module an ONNX export is made from (before ``torch.compile``).
        spatial_dims, in_channels, out_channels, roi_size: the network's window contract.
        onnx_candidate: whether ONNX Runtime can run this Segmenter's network at all (fp32 on
            the CPU, not compiled); when False, ``auto`` only has torch.
        spec_sha256: the bundle's spec hash, which names the export (else a hash of the
            weights is computed).
        cache_dir: folder of exports and ``auto`` choices (None: the default cache folder).
        memory_format: the torch executor's memory format (part of ``auto``'s cache key).
        needs_dynamic_spatial: windows other than ``roi_size`` will be run (whole slices), so
            an export limited to ``roi_size`` cannot be used.
        given: an executor chosen by the caller (``Segmenter(executor=...)``): no choice made.
    """

    def __init__(self, request: str, *, torch_executor: Executor, export_model: Any, spatial_dims: int,
                 in_channels: int, out_channels: int, roi_size: Sequence[int], onnx_candidate: bool,
                 spec_sha256: str | None = None, cache_dir: Any = None, memory_format: str = "auto",
                 needs_dynamic_spatial: bool = False, given: Executor | None = None) -> None:
        self.request = request
        self.executor: Executor = torch_executor if given is None else given
        self.export_model = export_model
        self.spatial_dims = int(spatial_dims)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.roi_size = tuple(int(r) for r in roi_size)
        self.onnx_candidate = bool(onnx_candidate)
        self.spec_sha256 = spec_sha256
        self.cache_dir = cache_dir
        self.memory_format = memory_format
        self.needs_dynamic_spatial = bool(needs_dynamic_spatial)
        if given is not None:
            self.facts: dict[str, Any] = {"requested": "executor", "used": str(given.name)}
        else:
            self.facts = {"requested": request, "used": "torch"}
        self.resolved = given is not None or request == "torch"
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ facts
    @property
    def used(self) -> str:
        return str(self.facts["used"])

    def info(self) -> dict[str, Any]:
        """JSON-able facts: ``requested``, ``used``, the executor's own description, the
        export, ``auto``'s timings and CPU flags, and a ``fallback`` reason."""
        desc = {k: v for k, v in self.executor.describe().items() if k != "backend"}
        return {**self.facts, **desc}

    def model_id(self) -> str:
        """What identifies the network's weights: the bundle's spec sha256, else a hash of
        the class name and every tensor of its state dict."""
        if self.spec_sha256:
            return str(self.spec_sha256)
        h = hashlib.sha256(type(self.export_model).__name__.encode())
        for name, t in self.export_model.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().to("cpu").contiguous().numpy().tobytes())
        return "weights-" + h.hexdigest()

    def _folder(self) -> Path:
        from medcnn.inference.executors import default_cache_dir

        return Path(self.cache_dir if self.cache_dir is not None else default_cache_dir())

    # ------------------------------------------------------------------ ONNX Runtime
    def onnx_executor(self, notice: Callable[[str], None]) -> tuple[Executor | None, dict[str, Any]]:
        """(ONNX Runtime executor, facts) or (None, facts with the fallback reason)."""
        from medcnn.inference.executors import (ExportRejectedError, OnnxRuntimeExecutor, onnx_export,
                                                onnxruntime_version)

        if onnxruntime_version() is None:
            return None, {"fallback": "onnxruntime is not installed (pip install onnxruntime)"}
        try:
            export = onnx_export(self.export_model, model_id=self.model_id(), spatial_dims=self.spatial_dims,
                                 in_channels=self.in_channels, out_channels=self.out_channels,
                                 roi_size=self.roi_size, cache_dir=self._folder(), notice=notice)
        except ImportError as exc:  # the exporter needs the onnx package
            return None, {"fallback": f"ONNX export unavailable: {exc}"}
        except ExportRejectedError as exc:
            return None, {"fallback": f"ONNX export rejected: {exc}"}
        except Exception as exc:  # noqa: BLE001 - an operator the exporter cannot translate, a full disk...
            return None, {"fallback": f"ONNX export failed ({type(exc).__name__}: {' '.join(str(exc).split())[:300]})"}
        if self.needs_dynamic_spatial and not export.dynamic_spatial:
            return None, {"fallback": "the ONNX export takes only roi_size windows, and whole_slice needs any size"}
        return OnnxRuntimeExecutor(export.path), {"export": export.to_dict()}

    # ------------------------------------------------------------------ the decision
    def resolve(self, threads: int, *, window_batch: int | None) -> int | None:
        """Decide once (thread-safe). ``window_batch``: the caller's chosen windows per call,
        or None. Returns the window batch the chosen executor runs best at when the caller
        chose none (None: keep the Segmenter's default)."""
        if self.resolved:
            return None
        with self._lock:
            if self.resolved:
                return None
            from medcnn.inference.executors import notice

            facts: dict[str, Any] = {"requested": self.request, "used": "torch"}
            batch = None
            if self.request == "onnxruntime":
                ex, more = self.onnx_executor(notice)
                facts.update(more)
                if ex is None:
                    notice(f"backend onnxruntime not used: {more['fallback']}; running the torch backend")
                else:
                    self.executor = ex
                    facts["used"] = "onnxruntime"
                    # 3D windows: batching gains nothing on the CPU; 2D: 4 windows per call ran
                    # the cine 1.3x faster than 1 (benchmarks/bench_cine.py)
                    batch = 4 if self.spatial_dims == 2 else 1
            else:
                batch = self._choose_auto(threads, window_batch, facts, notice)
            self.facts = facts
            self.resolved = True
            return None if window_batch else batch

    def _choose_auto(self, threads: int, window_batch: int | None, facts: dict[str, Any],
                     notice: Callable[[str], None]) -> int | None:
        """``auto``: time the candidates (:func:`medcnn.inference.executors.choose_fastest`)
        or reuse the choice stored in the cache folder for this network, thread count, CPU
        flags and versions."""
        import torch

        from medcnn.inference.executors import AutoChoice, choose_fastest, cpu_flags

        candidates: dict[str, Executor] = {"torch": self.executor}
        if self.onnx_candidate:
            ex, more = self.onnx_executor(notice)
            if ex is None:
                facts["onnxruntime_skipped"] = more["fallback"]
                notice(f"backend auto: onnxruntime not a candidate ({more['fallback']})")
            else:
                candidates["onnxruntime"] = ex
                facts.update(more)
        else:
            facts["onnxruntime_skipped"] = "onnxruntime runs fp32 on the CPU only"
        if len(candidates) == 1:
            facts["auto"] = {"reason": "only torch available"}
            return None
        # 2D windows are small: their best batch is larger (benchmarks/bench_cine.py --sweep)
        batches = (window_batch,) if window_batch else ((1, 2, 4, 8, 16) if self.spatial_dims == 2 else (1, 2, 4))
        window = [self.in_channels, *self.roi_size]
        key = json.dumps({"model": self.model_id(), "threads": threads, "cpu": cpu_flags(),
                          "torch": torch.__version__, "export": facts.get("export", {}).get("key"),
                          "batches": list(batches), "window": window, "memory_format": self.memory_format},
                         sort_keys=True)
        folder = self._folder()
        stored = folder / f"auto_{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"
        result = None
        try:
            result = AutoChoice.from_dict(json.loads(stored.read_text(encoding="utf-8")))
            facts["auto_from_cache"] = stored.name
        except (OSError, ValueError, KeyError, TypeError):
            result = None
        if result is None or result.backend not in candidates:
            with torch.inference_mode():
                result = choose_fastest(candidates, window, batches=batches, threads=threads)
            _write_json(stored, result.to_dict())
        self.executor = candidates[result.backend]
        facts["used"] = result.backend
        facts["auto"] = result.to_dict()
        return result.sw_batch_size


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Atomic write; a read-only cache only costs the timing next time."""
    from medcnn.io._common import atomic_path

    try:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(dict(data), indent=1), encoding="utf-8")
    except OSError:
        pass
