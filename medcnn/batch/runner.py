"""Running one case, and a whole batch, with failure isolation and resume.

Per case (:func:`run_case`, runs in the main process, a worker process or a Dask worker):

1. read the input scan(s) (channels, cine series or ED/ES pair) and the optional reference;
2. hash them (:func:`medcnn.report.volume_hash`: pixels + geometry);
3. **resume**: if ``cases/<id>/result.json`` says ``ok`` for the same input hash, model
   SHA-256 and settings hash, and every output it lists exists, the case is *skipped (up
   to date)* and nothing is recomputed or rewritten;
4. otherwise segment (labels on the exact input grid), write the label map(s) in the
   input's format (DICOM -> ``.nii.gz``), measure (cardiac / tumour / volumes), draw the
   overlay (and cine volume curve) figures, and finally write ``result.json``.

Every file is written atomically (temporary file + ``os.replace``), and ``result.json``
last, so an interrupted case (Ctrl-C, a killed worker) leaves either nothing or complete
files without a result and is simply recomputed next time. Any exception in a case
becomes an error record (type + one-line message); the batch carries on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from medcnn.batch.cases import Case, CaseInput
from medcnn.batch.pipeline import (cardiac_labels_from_names, cardiac_row, input_flags, intervals_by_label,
                                   label_suffix, predict, read_channels, scan_rows, table_rows, volume_rows,
                                   write_case_dicom)
from medcnn.errors import MedcnnError

__all__ = [
    "BatchSettings",
    "run_case",
    "case_dir",
    "RESULT_FILE",
    "RESULT_SCHEMA",
    "MODES",
    "cardiac_labels_from_names",
]

RESULT_FILE = "result.json"
RESULT_SCHEMA = "medcnn-case-result/1"
#: Measurement modes; ``auto`` picks one from the bundle (see :func:`resolve_mode`).
MODES = ("auto", "cardiac", "tumour", "volumes")

#: Per-process cache of loaded segmenters (a worker loads the model once).
_SEGMENTERS: dict[tuple, Any] = {}
#: Device assigned to this worker process by the pool initializer (multi-GPU hosts).
_WORKER_DEVICE: str | None = None


@dataclass(frozen=True)
class BatchSettings:
    """Everything a case needs besides its inputs (picklable, sent to every worker).

    Attributes:
        model: bundle folder / archive path (resolved).
        model_name: name shown in reports.
        model_sha256: SHA-256 of the weights (from bundle.json; verified when loaded).
        model_spec_sha256: SHA-256 of everything that decides the predictions (weights hash,
            preprocessing, postprocessing, TTA axes...); a change re-runs every case.
        labels: label value -> name (from the bundle).
        out: output folder.
        mode: ``cardiac``, ``tumour`` or ``volumes`` (already resolved from ``auto``).
        device, precision: passed to the segmenter (``auto`` allowed).
        tta: mirroring test-time augmentation over the axes the model was trained to be
            mirror-invariant to (the bundle's ``mirror_axes``; every axis, with a warning,
            when the bundle does not record them); ``False``: none; ``None``: the bundle's
            default (``inference.tta_axes``: on for models imported from nnU-Net, else off).
        deterministic: deterministic torch algorithms (slower on GPU).
        include_identifiers: add DICOM patient name / ID / birth date to the records.
        include_paths: keep full input (and model) paths in the records; by default only
            file / folder names (:func:`medcnn.report.provenance.display_path`).
        resume: skip cases whose outputs are up to date.
        figures: draw the overlay / curve figures.
        dicom: for DICOM series inputs also write a DICOM SEG and an SR TID 1500 per scan.
        dicom_fractional: with ``dicom``, a FRACTIONAL SEG of the class probabilities (8-bit)
            instead of the binary label map (the SR still reports the label map's volumes).
        threads: CPU threads per case, ``"auto"`` or an integer
            (:class:`medcnn.inference.ThreadPolicy`; not part of ``config_hash``: it
            changes the speed, not the result).
        workers: parallel worker processes of the batch on this machine (``auto`` threads
            divide the usable cores by it).
        regions: the model's regions ``{name: [labels]}`` (bundle ``regions``), reported as
            unions after the labels in volumes, SEG and SR; its changes change the spec hash.
        backend: the network executor, ``"torch"``, ``"onnxruntime"`` or ``"auto"``
            (:mod:`medcnn.inference.executors`); part of ``config_hash`` when not ``"torch"``
            (ONNX Runtime's labels may differ from torch's in a few voxels).
        cache_dir: folder of the ONNX exports (``None``: the default cache folder).
        whole_slice: 2D models: whole-slice inference on or off (decided by
            :func:`medcnn.batch.execute.run_batch`); ``None`` for 3D models. Part of
            ``config_hash`` when on.
    """

    model: str
    model_name: str
    model_sha256: str
    labels: Mapping[int, str]
    out: str
    mode: str = "volumes"
    device: str = "auto"
    precision: str = "auto"
    tta: bool | None = None
    deterministic: bool = False
    include_identifiers: bool = False
    include_paths: bool = False
    resume: bool = True
    figures: bool = True
    model_spec_sha256: str = ""
    dicom: bool = False
    threads: int | str = "auto"
    workers: int = 1
    regions: Mapping[str, Sequence[int]] | None = None
    dicom_fractional: bool = False
    input_description: Mapping[str, Any] | None = None
    allow_input_mismatch: bool = False
    backend: str = "torch"
    cache_dir: str | None = None
    whole_slice: bool | None = None

    def config(self) -> dict[str, Any]:
        """The settings that change a case's result (hashed into ``config_hash``)."""
        # None (the bundle's default) hashes as False, which it equals for bundles without
        # a default; a bundle's default is part of its spec hash, also hashed here
        return {"schema": RESULT_SCHEMA, "mode": self.mode, "precision": self.precision, "tta": bool(self.tta),
                **({"no_tta": True} if self.tta is False else {}),
                "deterministic": self.deterministic, "include_identifiers": self.include_identifiers,
                "include_paths": self.include_paths,
                "figures": self.figures, "model_sha256": self.model_sha256,
                "model_spec_sha256": self.model_spec_sha256, **({"dicom": True} if self.dicom else {}),
                **({"dicom_fractional": True} if self.dicom_fractional else {}),
                **({"allow_input_mismatch": True} if self.allow_input_mismatch else {}),
                **({"backend": self.backend} if self.backend != "torch" else {}),
                **({"whole_slice": True} if self.whole_slice else {})}

    @property
    def config_hash(self) -> str:
        from medcnn.report.provenance import config_hash

        return config_hash(self.config())


def case_dir(out: str | Path, case_id: str) -> Path:
    """Folder of one case's outputs: ``<out>/cases/<case_id>``."""
    return Path(out) / "cases" / case_id


# ----------------------------------------------------------------------------- small helpers
def record_inputs(case: Case, settings: BatchSettings) -> list[dict[str, Any]]:
    """The ``inputs`` of a case record: phase, channel and path (file name only unless
    ``settings.include_paths``)."""
    from medcnn.report.provenance import display_path

    def show(p: str | None) -> str | None:
        return display_path(p, include_paths=settings.include_paths)

    return ([{"phase": ci.phase, "channel": ch, "path": show(p)} for ci in case.inputs for ch, p in ci.channels]
            + [{"phase": ci.phase, "channel": "reference", "path": show(ci.reference)}
               for ci in case.inputs if ci.reference])


def record_model(settings: BatchSettings) -> dict[str, Any]:
    """The ``model`` of a case record (bundle path reduced like input paths)."""
    from medcnn.report.provenance import display_path

    return {"name": settings.model_name, "sha256": settings.model_sha256, "spec_sha256": settings.model_spec_sha256,
            "path": display_path(settings.model, include_paths=settings.include_paths)}


def redact_record(rec: dict[str, Any], case: Case, settings: BatchSettings) -> dict[str, Any]:
    """Remove the case's input paths from the free-text fields of ``rec`` (error message,
    origin, QC messages) and the model's path from its inference provenance unless
    ``settings.include_paths``. Returns ``rec``."""
    from medcnn.report.provenance import display_path, redact_paths

    if settings.include_paths:
        return rec
    paths = [*case.paths, *(ci.reference for ci in case.inputs if ci.reference), case.origin]

    def red(text: Any) -> Any:
        return redact_paths(text, paths)

    rec["origin"] = red(rec.get("origin"))
    if rec.get("error"):
        rec["error"] = {k: red(v) for k, v in rec["error"].items()}
    for flag in rec.get("qc_flags") or []:
        flag["message"] = red(flag.get("message"))
    bundle = ((rec.get("provenance") or {}).get("inference") or {}).get("bundle")
    if isinstance(bundle, dict) and bundle.get("path"):
        bundle["path"] = display_path(bundle["path"])  # as the record's "model" path
    return rec


def _write_bytes(path: Path, data: bytes) -> None:
    from medcnn.io._common import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _clean_stale_temporaries(folder: Path) -> None:
    """Remove temporary files left by a killed process (names start with '.' and hold '.tmp')."""
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        if p.name.startswith(".") and ".tmp" in p.name and p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()


def _load_previous(folder: Path) -> dict[str, Any] | None:
    try:
        with open(folder / RESULT_FILE, encoding="utf-8") as fh:
            rec = json.load(fh)
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and rec.get("schema") == RESULT_SCHEMA else None


def _output_files(rec: Mapping[str, Any]) -> list[str]:
    outs = rec.get("outputs") or {}
    files = list(outs.get("labels") or []) + list(outs.get("dicom") or [])
    files += [outs[k] for k in ("overlay", "curve") if outs.get(k)]
    return files


def body_record(case: Case) -> dict[str, float] | None:
    """The case's height (cm) and weight (kg) as recorded in ``result.json`` (``body_size``), or None."""
    if case.height_cm is None:
        return None
    return {"height_cm": float(case.height_cm), "weight_kg": float(case.weight_kg)}


def _up_to_date(prev: Mapping[str, Any] | None, input_hash: str, settings: BatchSettings,
                body: Mapping[str, float] | None = None) -> bool:
    if not prev or prev.get("status") != "ok":
        return False
    if prev.get("input_hash") != input_hash or prev.get("config_hash") != settings.config_hash:
        return False
    if prev.get("body_size") != body:  # a new height or weight changes the indexed values
        return False
    if (prev.get("model") or {}).get("sha256") != settings.model_sha256:
        return False
    out = Path(settings.out)
    return all((out / f).is_file() for f in _output_files(prev))


def _remove_outputs(folder: Path, prev: Mapping[str, Any] | None, out: Path) -> None:
    """Delete a stale result and the outputs it listed (they no longer match the inputs)."""
    with contextlib.suppress(FileNotFoundError):
        (folder / RESULT_FILE).unlink()
    for f in _output_files(prev or {}):
        with contextlib.suppress(OSError):
            (out / f).unlink()


def _error_record(exc: BaseException) -> dict[str, str]:
    if isinstance(exc, MedcnnError):
        return {"type": type(exc).__name__, "message": str(exc)}
    msg = " ".join(str(exc).split()) or repr(exc)
    return {"type": type(exc).__name__, "message": f"{type(exc).__name__}: {msg}"}


def _geometry_summary(name: str, vol) -> dict[str, Any]:
    g = vol.geometry
    d = {"name": name, "shape": list(vol.shape), "spacing_mm": [round(s, 5) for s in g.spacing],
         "orientation": g.orientation, "origin_mm": [round(o, 4) for o in g.origin]}
    if vol.leading_axis == "time":
        d["frames"] = int(vol.shape[0])
    return d


# ----------------------------------------------------------------------------- model
def _device_for_worker(device: str) -> str:
    if _WORKER_DEVICE is not None and str(device) in ("auto", "cuda"):
        return _WORKER_DEVICE
    return str(device)


def _segmenter(settings: BatchSettings):
    device = _device_for_worker(settings.device)
    key = (settings.model, settings.model_sha256, device, settings.precision, settings.tta, settings.threads,
           settings.workers, settings.backend, settings.cache_dir, settings.whole_slice)
    seg = _SEGMENTERS.get(key)
    if seg is None:
        from medcnn.inference import Segmenter, ThreadPolicy

        if settings.deterministic:
            import torch

            torch.manual_seed(0)
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        kwargs: dict[str, Any] = {"device": device, "precision": settings.precision,
                                  "deterministic": settings.deterministic}
        if settings.tta is not None:  # None: the bundle's default (inference.tta_axes)
            kwargs["tta_axes"] = "trained" if settings.tta else ()
        kwargs["threads"] = ThreadPolicy(settings.threads, workers=settings.workers)
        kwargs["backend"] = settings.backend
        kwargs["cache_dir"] = settings.cache_dir
        if settings.whole_slice is not None:
            kwargs["whole_slice"] = settings.whole_slice
        seg = Segmenter.from_bundle(settings.model, **kwargs)
        _SEGMENTERS.clear()  # one model per process is enough
        _SEGMENTERS[key] = seg
    return seg


def _predict(settings: BatchSettings, channels: Sequence[Any]):
    return predict(_segmenter(settings), channels, fractional=settings.dicom_fractional)


# ----------------------------------------------------------------------------- measuring
def _flags(fn) -> list[dict[str, Any]]:
    return [f.to_dict() for f in fn.qc_flags]


# ----------------------------------------------------------------------------- one case
def _read_inputs(case: Case) -> tuple[list[tuple[CaseInput, list[Any], Any]], str, list[dict]]:
    """Read every scan of a case: [(input, channel volumes, reference or None)], input hash, grids."""
    from medcnn.errors import NiftiHeaderWarning
    from medcnn.io import annotation_kind, read_labels_on_grid, read_volume
    from medcnn.report.provenance import volume_hash

    read = []
    parts = []
    grids = []
    for ci in case.inputs:
        with warnings.catch_warnings():  # reported as QC flags, and by the batch per case
            warnings.simplefilter("ignore", NiftiHeaderWarning)
            vols = read_channels([path for _, path in ci.channels])
        for (ch, _), v in zip(ci.channels, vols):
            parts.append(f"{ci.phase or ''}/{ch}:{volume_hash(v)}")
            grids.append(_geometry_summary(f"{ci.phase + ' ' if ci.phase else ''}{ch}", v))
        ref = None
        if ci.reference:  # a label image, or an RTSTRUCT / SEG placed on the scan's grid where exact
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NiftiHeaderWarning)
                ref = read_labels_on_grid(ci.reference, vols[0]) if annotation_kind(ci.reference) else \
                    read_volume(ci.reference, kind="label")
            parts.append(f"{ci.phase or ''}/reference:{volume_hash(ref)}")
        read.append((ci, vols, ref))
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest() if len(parts) > 1 else parts[0].split(":")[-1]
    return read, digest, grids


def run_case(case: Case, settings: BatchSettings) -> dict[str, Any]:
    """Process one case and return its record (also written to ``cases/<id>/result.json``).

    Never raises for a bad case: the record then has ``status="error"`` and ``error``
    ``{"type", "message"}``. ``KeyboardInterrupt`` propagates (after atomic writes cleaned
    up their temporary files).
    """
    from medcnn.report.provenance import HASH_METHOD, environment_info

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    out = Path(settings.out)
    folder = case_dir(out, case.case_id)
    rec: dict[str, Any] = {
        "schema": RESULT_SCHEMA,
        "case_id": case.case_id,
        "status": "error",
        "mode": settings.mode,
        "input_kind": None,
        "origin": case.origin,
        "inputs": record_inputs(case, settings),
        "model": record_model(settings),
        "config_hash": settings.config_hash,
        "input_hash": None,
        "volumes": [], "lesions": [], "cardiac": None, "curve": None, "qc_flags": [],
        "outputs": {}, "error": None, "timings_s": timings,
    }
    if case.height_cm is not None:
        rec["body_size"] = body_record(case)
    prev = None
    try:
        if case.error:
            raise _ListedError(case.error, case.error_type or "MedcnnError")
        _clean_stale_temporaries(folder)
        t = time.perf_counter()
        read, input_hash, grids = _read_inputs(case)
        if settings.input_description is not None:  # issue 26 point 1: refuse / flag before inference
            from medcnn.models.compat import check_inputs

            for _, vols, _ in read:
                check_inputs(vols, settings.input_description, model=settings.model_name,
                             allow_mismatch=settings.allow_input_mismatch)
        timings["read_s"] = time.perf_counter() - t
        rec["input_hash"] = input_hash
        rec["input_geometry"] = grids
        prev = _load_previous(folder)
        if settings.resume and _up_to_date(prev, input_hash, settings, rec.get("body_size")):
            prev = dict(prev)  # type: ignore[arg-type]
            prev["status"] = "skipped"
            prev["skipped_reason"] = "up to date: same input hash, model sha256 and settings; outputs present"
            return prev
        _remove_outputs(folder, prev, out)
        folder.mkdir(parents=True, exist_ok=True)
        _compute(case, settings, read, rec, timings, folder, out)
        rec["status"] = "ok"
        rec["provenance"] = {
            "medcnn_version": environment_info()["medcnn_version"], "environment": environment_info(),
            "device": rec.pop("_device", settings.device), "precision": rec.pop("_precision", settings.precision),
            "tta": settings.tta, "tta_axes": rec.pop("_tta_axes", []), "deterministic": settings.deterministic,
            "computed_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "input_hash_method": HASH_METHOD, "methods": rec.pop("_methods", {}),
            "inference": rec.pop("_inference", {}),
        }
        timings["total_s"] = time.perf_counter() - t_start
        from medcnn.report.tables import write_json

        redact_record(rec, case, settings)
        write_json(rec, folder / RESULT_FILE)  # last: marks the case complete
        return rec
    except Exception as exc:  # noqa: BLE001 - one bad case must not stop the batch
        for k in [k for k in rec if k.startswith("_")]:
            rec.pop(k)
        rec["status"] = "error"
        rec["error"] = _error_record(exc) if not isinstance(exc, _ListedError) else exc.record
        rec["volumes"], rec["lesions"], rec["cardiac"], rec["curve"] = [], [], None, None
        timings["total_s"] = time.perf_counter() - t_start
        redact_record(rec, case, settings)
        with contextlib.suppress(Exception):
            # outputs of this attempt and of an earlier run no longer describe these inputs
            _remove_outputs(folder, rec, out)
            _remove_outputs(folder, prev if prev is not None else _load_previous(folder), out)
            rec["outputs"] = {}
            from medcnn.report.tables import write_json

            write_json(rec, folder / RESULT_FILE)
        return rec


class _ListedError(Exception):
    """A problem found while listing the case, re-raised inside :func:`run_case`."""

    def __init__(self, message: str, type_name: str) -> None:
        super().__init__(message)
        self.record = {"type": type_name, "message": message}


def _compute(case: Case, settings: BatchSettings, read, rec: dict[str, Any], timings: dict[str, float],
             folder: Path, out: Path) -> None:
    from medcnn.io import read_dicom_identifiers, write_volume
    from medcnn.measure.volumes import METHOD_VOXEL_COUNT

    mode = settings.mode
    predictions = []
    t = time.perf_counter()
    for ci, vols, ref in read:
        pred = _predict(settings, vols)  # labels checked to lie on the input grid
        labels = pred.labels
        info_i = dict(getattr(pred, "info", {}) or {})
        info_i["_intervals"] = getattr(pred, "volume_intervals", None)
        info_i["_probabilities"] = getattr(pred, "probabilities", None)  # --dicom-fractional only
        predictions.append((ci, vols, ref, labels, info_i))
    timings["predict_s"] = time.perf_counter() - t
    info = predictions[0][4]
    rec["_device"] = str(info.get("device", settings.device))
    rec["_precision"] = str(info.get("precision", settings.precision))
    rec["_tta_axes"] = [int(a) for a in info.get("tta_axes") or []]
    from medcnn.report.tables import jsonable

    internal = ("per_frame", "_intervals", "_probabilities")
    rec["_inference"] = jsonable({k: v for k, v in info.items() if k not in internal and isinstance(
        v, (str, int, float, bool, list, tuple, dict, type(None)))})

    # label maps, in the input's format
    t = time.perf_counter()
    label_files = []
    for ci, vols, _, labels, _ in predictions:
        sfx = label_suffix(ci.channels[0][1])
        name = f"{case.case_id}{'_' + ci.phase if ci.phase else ''}_labels{sfx}"
        write_volume(labels, folder / name)
        label_files.append(str((folder / name).relative_to(out)))
    rec["outputs"]["labels"] = label_files
    timings["write_s"] = time.perf_counter() - t

    # measurements
    t = time.perf_counter()
    from medcnn.measure.intervals import INTERVAL_METHOD

    methods = {"volume_ml": f"label volume in mL = {METHOD_VOXEL_COUNT}, counted on the predicted label map on "
                            "the input's own grid (no resampling of the result)",
               "volume_interval": INTERVAL_METHOD + " (probabilities stored as uint8 on the model grid and mapped to "
                                                    "the input grid by nearest neighbour)",
               "segmentation": f"model {settings.model_name} (sha256 {settings.model_sha256[:12]}...) run by "
                               "medcnn.inference; labels returned on the exact input grid"}
    qc: list[dict[str, Any]] = [f for ci, vols, ref in read for f in input_flags(
        list(vols) + ([ref] if ref is not None else []), phase=ci.phase, methods=methods)]
    is_cine = len(predictions) == 1 and predictions[0][3].leading_axis == "time"
    rec["input_kind"] = "ED/ES pair" if case.kind == "pair" else ("cine series" if is_cine else "single scan")
    overlay_rows = []
    curve_png = None
    if mode == "cardiac" and (is_cine or case.kind == "pair"):
        from medcnn.measure.cardiac import CARDIAC_COLUMNS, QC_FLAGS, cardiac_function, cine_function

        cl = cardiac_labels_from_names(settings.labels)
        rows_of = partial(volume_rows, label_names=settings.labels, regions=settings.regions, qc=qc, methods=methods)
        if is_cine:
            _, vols, ref, labels, info0 = predictions[0]
            cf = cine_function(labels, labels=cl, height_cm=case.height_cm, weight_kg=case.weight_kg)
            fn = cf.function
            ed, es = int(fn.ed_frame or 0), int(fn.es_frame or 0)
            ref_ed = ref.frame(ed) if ref is not None and ref.leading_axis == "time" else None
            ref_es = ref.frame(es) if ref is not None and ref.leading_axis == "time" else None
            iv_ed, iv_es = (intervals_by_label(info0["_intervals"], f) for f in (ed, es))
            rec["volumes"] = (rows_of(labels.frame(ed), phase="ED", frame=ed, reference=ref_ed, intervals=iv_ed)
                              + rows_of(labels.frame(es), phase="ES", frame=es, reference=ref_es, intervals=iv_es))
            rec["curve"] = table_rows(cf.curve)
            overlay_rows = [(f"ED (frame {ed})", vols[0].frame(ed), labels.frame(ed), ref_ed),
                            (f"ES (frame {es})", vols[0].frame(es), labels.frame(es), ref_es)]
            if settings.figures:
                from medcnn.report.figures import label_colour, volume_curve_png

                curve = cf.curve
                times = curve["time_ms"].to_numpy(dtype=float)
                xs = times if np.all(np.isfinite(times)) else curve["frame"].to_numpy(dtype=float)
                curves = {"LV blood pool": curve["lv_volume_ml"].tolist()}
                colours = {"LV blood pool": label_colour(cl.lv_blood)}
                for col, name, value in (("lv_myo_volume_ml", "LV myocardium", cl.lv_myo),
                                         ("rv_volume_ml", "RV blood pool", cl.rv_blood)):
                    vals = curve[col].to_numpy(dtype=float)
                    if np.all(np.isfinite(vals)) and vals.any():
                        curves[name] = vals.tolist()
                        colours[name] = label_colour(value)
                curve_png = volume_curve_png(xs, curves, ed_index=ed, es_index=es, colours=colours,
                                             title=f"{case.case_id}: volume over the cardiac cycle")
        else:
            (ci_ed, v_ed, r_ed, l_ed, i_ed), (ci_es, v_es, r_es, l_es, i_es) = predictions
            for lab, ci in ((l_ed, ci_ed), (l_es, ci_es)):
                if lab.leading_axis is not None:
                    from medcnn.errors import DimensionError

                    raise DimensionError.expected(f"a 3D {ci.phase} scan", f"a 4D series of shape {lab.shape}",
                                                  path=ci.channels[0][1])
            fn = cardiac_function(l_ed, l_es, labels=cl, height_cm=case.height_cm, weight_kg=case.weight_kg)
            iv_ed, iv_es = intervals_by_label(i_ed["_intervals"]), intervals_by_label(i_es["_intervals"])
            rec["volumes"] = (rows_of(l_ed, phase="ED", frame=None, reference=r_ed, intervals=iv_ed)
                              + rows_of(l_es, phase="ES", frame=None, reference=r_es, intervals=iv_es))
            overlay_rows = [("ED", v_ed[0], l_ed, r_ed), ("ES", v_es[0], l_es, r_es)]
        rec["cardiac"] = cardiac_row(fn, iv_ed, iv_es, cl)
        qc = _flags(fn) + qc
        methods["cardiac"] = ("EDV/ESV = blood-pool voxel count x voxel volume at ED/ES; SV = EDV - ESV; "
                              "EF = SV / EDV x 100, for the LV and (same definitions) the RV; LV mass = myocardium "
                              "volume at ED x 1.05 g/mL; cardiac output = SV x heart rate"
                              + ("; cine: ED = frame of largest LV volume, ES = frame of smallest non-zero LV volume"
                                 if is_cine else "; ED/ES frames as given in the manifest")
                              + f"; labels: LV blood pool {cl.lv_blood}, LV myocardium {cl.lv_myo}, "
                                f"RV blood pool {cl.rv_blood}"
                              + ("" if cl.rv_blood is not None else
                                 " (this model does not segment the RV: RV numbers are not reported)"))
        methods["cardiac_columns"] = "; ".join(f"{k}: {v}" for k, v in CARDIAC_COLUMNS.items()
                                               if k in ("lv_edv_ml", "lv_ef_percent", "lv_myocardial_mass_g",
                                                        "rv_edv_ml", "rv_ef_percent"))
        methods["cardiac_qc"] = "; ".join(f"{k}: {v}" for k, v in QC_FLAGS.items())
        if fn.body is not None:
            from medcnn.measure.body import BSA_METHOD

            methods["cardiac_bsa"] = (f"body surface area by {BSA_METHOD}, from the height and weight given for the "
                                      "case; indexed values = value / BSA: LV EDVi, ESVi, SVi and RV EDVi, ESVi in "
                                      "mL/m^2, LV mass index in g/m^2")
    else:
        if mode == "cardiac":
            qc.append({"code": "NO_CINE_OR_PAIR",
                       "message": "a single 3D scan: EF needs a cine series or an ED/ES pair (manifest columns "
                                  "ed, es); only label volumes are reported", "phase": None})
        for ci, vols, ref, labels, info_i in predictions:
            # label volumes (every frame of a cine series; intensity statistics of a 3D scan's first channel)
            rec["volumes"] += scan_rows(labels, vols[0], label_names=settings.labels, regions=settings.regions,
                                        phase=ci.phase, intervals=info_i["_intervals"], reference=ref, qc=qc,
                                        methods=methods)
            if labels.leading_axis == "time":
                overlay_rows.append((f"{ci.phase or 'frame'} 0", vols[0].frame(0), labels.frame(0)))
            else:
                overlay_rows.append((ci.phase or ("3D stack" if len(vols) == 1 else ci.channels[0][0]), vols[0], labels,
                                     ref))
                if mode == "tumour":
                    rec["lesions"] += _lesion_rows(labels, settings)
        if mode == "tumour":
            from medcnn.measure.lesions import METHOD_DIAMETER_3D, METHOD_DIAMETER_INPLANE, METHOD_MESH_VOLUME

            methods["lesions"] = ("lesion = 26-connected component of the union of all tumour labels (whole "
                                  "tumour); lesion volume_ml = voxel count x voxel volume / 1000; "
                                  f"mesh_volume_ml: {METHOD_MESH_VOLUME}; max_3d_diameter_mm: {METHOD_DIAMETER_3D}; "
                                  f"max_inplane_diameter_mm: {METHOD_DIAMETER_INPLANE}")
    timings["measure_s"] = time.perf_counter() - t
    rec["qc_flags"] = jsonable(qc)
    rec["n_labels_found"] = len({int(v) for _, _, _, lab, _ in predictions for v in np.unique(lab.array) if v != 0})
    rec["_methods"] = methods

    if settings.dicom:
        t = time.perf_counter()
        _write_dicom(case, settings, predictions, rec, qc, folder, out)
        rec["qc_flags"] = jsonable(qc)
        timings["dicom_s"] = time.perf_counter() - t

    if settings.include_identifiers:
        ids: dict[str, str] = {}
        for ci, _, _, _, _ in predictions:
            for _, p in ci.channels:
                if Path(p).is_dir():
                    ids.update(read_dicom_identifiers(p))
        if ids:
            rec["identifiers"] = ids

    # figures
    t = time.perf_counter()
    if settings.figures:
        from medcnn.report.figures import overlay_png

        png = overlay_png(overlay_rows, label_names={k: v for k, v in settings.labels.items() if k != 0},
                          stack_plane="short axis" if mode == "cardiac" else None)
        _write_bytes(folder / "overlay.png", png)
        rec["outputs"]["overlay"] = str((folder / "overlay.png").relative_to(out))
        if curve_png is not None:
            _write_bytes(folder / "curve.png", curve_png)
            rec["outputs"]["curve"] = str((folder / "curve.png").relative_to(out))
    timings["figures_s"] = time.perf_counter() - t


def _write_dicom(case: Case, settings: BatchSettings, predictions, rec: dict[str, Any], qc: list, folder: Path,
                 out: Path) -> None:
    """DICOM SEG + SR per 3D DICOM series input (``--dicom``, :func:`write_case_dicom`); other
    inputs get a ``DICOM_NOT_WRITTEN`` QC flag."""
    cl = cardiac_labels_from_names(settings.labels) if rec.get("cardiac") else None
    written = rec["outputs"].setdefault("dicom", [])
    for ci, vols, _, labels, info in predictions:
        stem = f"{case.case_id}{'_' + ci.phase if ci.phase else ''}"
        paths, why = write_case_dicom(
            labels, ci.channels[0][1], vols[0], seg_path=folder / f"{stem}_seg.dcm",
            sr_path=folder / f"{stem}_sr.dcm", rows=rec["volumes"], phase=ci.phase, label_names=settings.labels,
            regions=settings.regions, model_name=settings.model_name, weights_sha256=settings.model_sha256,
            spec_sha256=settings.model_spec_sha256, cardiac=rec.get("cardiac"), lv_label=cl.lv_blood if cl else None,
            include_identifiers=settings.include_identifiers, qc_flags=qc,
            fractional=(_segmenter(settings), info["_probabilities"]) if settings.dicom_fractional else None)
        if why:
            qc.append({"code": "DICOM_NOT_WRITTEN", "message": why, "phase": ci.phase})
        written += [str(p.relative_to(out)) for p in paths]


def _lesion_rows(labels, settings: BatchSettings) -> list[dict[str, Any]]:
    from medcnn.measure import measure_lesions

    tumour_labels = sorted(v for v in settings.labels if v != 0) or None
    df = measure_lesions(labels, labels=tumour_labels, per_label=False, label_names=settings.labels)
    rows = table_rows(df)
    if tumour_labels and len(tumour_labels) > 1:  # components of the union of several labels
        name = "whole tumour (labels " + ", ".join(str(v) for v in tumour_labels) + ")"
        for r in rows:
            r["label_name"] = name
    return rows
