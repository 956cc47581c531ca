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
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from medcnn.batch.cases import Case, CaseInput
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
        threads: CPU threads per case, ``"auto"`` or an integer
            (:class:`medcnn.inference.ThreadPolicy`; not part of ``config_hash``: it
            changes the speed, not the result).
        workers: parallel worker processes of the batch on this machine (``auto`` threads
            divide the usable cores by it).
        regions: the model's regions ``{name: [labels]}`` (bundle ``regions``), reported as
            unions after the labels in volumes, SEG and SR; its changes change the spec hash.
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
    input_description: Mapping[str, Any] | None = None
    allow_input_mismatch: bool = False

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
                **({"allow_input_mismatch": True} if self.allow_input_mismatch else {})}

    @property
    def config_hash(self) -> str:
        from medcnn.report.provenance import config_hash

        return config_hash(self.config())


def case_dir(out: str | Path, case_id: str) -> Path:
    """Folder of one case's outputs: ``<out>/cases/<case_id>``."""
    return Path(out) / "cases" / case_id


def cardiac_labels_from_names(names: Mapping[int, str]):
    """:class:`medcnn.measure.CardiacLabels` from a bundle's label names.

    ``myo`` in a name -> LV myocardium; ``RV`` / ``right`` -> RV blood pool; another name
    with ``LV``, ``left``, ``blood`` or ``cavity`` -> LV blood pool. Falls back to the
    default 1 = LV blood pool, 2 = LV myocardium when nothing matches.
    """
    from medcnn.measure import CardiacLabels

    lv = myo = rv = None
    for v, n in sorted(names.items()):
        if v == 0:
            continue
        low = n.lower().replace("_", " ")
        words = low.split()
        if "myo" in low and myo is None:
            myo = v
        elif ("rv" in words or "right" in low) and rv is None:
            rv = v
        elif ("lv" in words or "left" in low or "blood" in low or "cavity" in low) and lv is None:
            lv = v
    if lv is None:
        return CardiacLabels(lv_blood=1, lv_myo=2 if 2 in names else None, rv_blood=None)
    return CardiacLabels(lv_blood=lv, lv_myo=myo, rv_blood=rv)


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


def _label_suffix(path: str) -> str:
    from medcnn.io._common import ITK_SUFFIXES, suffix_of

    p = Path(path)
    if p.is_dir():
        return ".nii.gz"  # DICOM in, NIfTI out
    sfx = suffix_of(p)
    if sfx == ".nhdr":
        return ".nrrd"
    if sfx == ".mhd":
        return ".mha"
    return sfx if sfx in (".nii", ".nii.gz") + ITK_SUFFIXES else ".nii.gz"


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


def _up_to_date(prev: Mapping[str, Any] | None, input_hash: str, settings: BatchSettings) -> bool:
    if not prev or prev.get("status") != "ok":
        return False
    if prev.get("input_hash") != input_hash or prev.get("config_hash") != settings.config_hash:
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
           settings.workers)
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
        seg = Segmenter.from_bundle(settings.model, **kwargs)
        _SEGMENTERS.clear()  # one model per process is enough
        _SEGMENTERS[key] = seg
    return seg


def _predict(settings: BatchSettings, channels: Sequence[Any]):
    seg = _segmenter(settings)
    inp = channels[0] if len(channels) == 1 else list(channels)
    return seg.predict(inp, volume_intervals=True)  # cheap: uint8 probabilities on the model grid


#: Interval columns copied from the prediction into each volume row.
_INTERVAL_KEYS = ("volume_low_ml", "volume_high_ml", "volume_soft_ml", "volume_prob_low_ml", "volume_prob_high_ml",
                  "volume_tta_min_ml", "volume_tta_max_ml")


def _intervals_by_label(intervals, frame: int | None = None) -> dict[int, dict[str, Any]]:
    """``{label: interval row}`` of a prediction (one cine frame when ``frame`` is given)."""
    return {int(r["label"]): r for r in intervals or [] if frame is None or r.get("frame") == frame}


# ----------------------------------------------------------------------------- measuring
def _rows(df) -> list[dict[str, Any]]:
    from medcnn.report.tables import jsonable

    return [jsonable(r) for r in df.to_dict(orient="records")]


def _dice(pred: np.ndarray, ref: np.ndarray, label: int | Sequence[int]) -> float | None:
    """Dice of one label, or of the union of several (a region)."""
    if isinstance(label, (int, np.integer)):
        a, b = pred == label, ref == label
    else:
        a, b = np.isin(pred, list(label)), np.isin(ref, list(label))
    total = int(a.sum()) + int(b.sum())
    return None if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


#: How a reference with several labels is compared with a one-foreground-label model.
REFERENCE_BINARISED = ("the model has one foreground label and the reference map has other label values, so "
                       "the reference was binarised (every non-zero reference label counts as that label) before "
                       "reference volumes and Dice were computed")


def _volume_rows(labels, *, settings: BatchSettings, phase: str | None, frame: int | None,
                 reference=None, qc: list, methods: dict | None = None,
                 intervals: Mapping[int, Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Label volume rows (mL) of one 3D label map, with reference volume, difference and
    Dice per label when a reference map on the same grid is given, and the volume interval
    of each predicted label (``intervals``: ``{label: row}`` from the prediction)."""
    from medcnn.measure import label_volumes

    label_set = sorted(v for v in settings.labels if v != 0)
    present = sorted(int(v) for v in np.unique(labels.array) if v != 0)
    wanted = sorted(set(label_set) | set(present))
    regions = dict(settings.regions or {})
    df = label_volumes(labels, label_names=settings.labels, labels=wanted, regions=regions)
    rows = _rows(df)
    ref_by_label: dict[int, float] = {}
    ref_arr = None
    if reference is not None:
        try:
            labels.geometry.check_matches(reference.geometry, what="label map and reference", atol_mm=1e-3)
            ref_arr = np.asarray(reference.array)
        except MedcnnError as exc:
            qc.append({"code": "REFERENCE_GRID_DIFFERS", "message": str(exc), "phase": phase})
        if ref_arr is not None and len(label_set) == 1:
            ref_values = {int(v) for v in np.unique(ref_arr) if v != 0}
            if ref_values - set(label_set):
                ref_arr = (ref_arr > 0).astype(np.uint8) * np.uint8(label_set[0])
                reference = reference.with_array(ref_arr, kind="label")
                if methods is not None:
                    methods["reference"] = REFERENCE_BINARISED
        if ref_arr is not None:
            ref_rows = label_volumes(reference, label_names=settings.labels,
                                     labels=sorted(set(wanted) | {int(v) for v in np.unique(ref_arr) if v != 0}),
                                     regions=regions)
            ref_by_label = dict(zip(ref_rows["label"].tolist(), ref_rows["volume_ml"].tolist()))
            extras = sorted(k for k in ref_by_label if isinstance(k, (int, np.integer)) and k not in wanted)
            n_labels = len(rows) - len(regions)
            for extra in extras:  # before the region rows
                rows.insert(n_labels, {"label": extra, "label_name": settings.labels.get(extra, f"label_{extra}"),
                                       "voxel_count": 0, "voxel_volume_mm3": float(np.prod(labels.spacing)),
                                       "volume_ml": 0.0, "method": rows[0]["method"] if rows else ""})
                n_labels += 1
    out = []
    for r in rows:
        r = {"phase": phase, "frame": frame, **r}
        region = isinstance(r["label"], str)  # a region row: label "1+2+4", label_name its name
        iv = None if region else (intervals or {}).get(int(r["label"]))
        if iv is not None:
            r.update({k: iv.get(k) for k in _INTERVAL_KEYS})
            r["interval_method"] = "see methods: volume_interval"
        if ref_arr is not None:
            lab = regions[r["label_name"]] if region else int(r["label"])
            r["reference_volume_ml"] = float(ref_by_label.get(r["label"] if region else lab, 0.0))
            r["volume_difference_ml"] = float(r["volume_ml"]) - r["reference_volume_ml"]
            r["dice"] = _dice(np.asarray(labels.array), ref_arr, lab)
        out.append(r)
    return out


def _input_flags(read, methods: dict[str, str]) -> list[dict[str, Any]]:
    """QC flags of the case's input files (e.g. NIFTI_HEADER_INCONSISTENT) and, for each, the
    rule they were read by in ``methods``."""
    from medcnn.io import input_qc_flags, input_rules

    flags: list[dict[str, Any]] = []
    for ci, vols, ref in read:
        flags += input_qc_flags(list(vols) + ([ref] if ref is not None else []), phase=ci.phase)
        for code, rule in input_rules(list(vols) + ([ref] if ref is not None else [])).items():
            methods[f"input_{code.lower()}"] = (f"{rule}. Label maps are written on this resolved grid, with a "
                                                "consistent header (sform = qform, pixdim = their axis lengths)"
                                                if code.startswith("NIFTI") else rule)
    return flags


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
        vols = []
        for ch, path in ci.channels:
            with warnings.catch_warnings():  # reported as QC flags, and by the batch per case
                warnings.simplefilter("ignore", NiftiHeaderWarning)
                v = read_volume(path)
            if v.leading_axis == "channel":
                from medcnn.errors import DimensionError

                raise DimensionError.expected("a 3D scan or a cine series", f"a {v.shape[0]}-channel 4D image",
                                              path=path, hint="list each channel in its own manifest column")
            vols.append(v)
            parts.append(f"{ci.phase or ''}/{ch}:{volume_hash(v)}")
            grids.append(_geometry_summary(f"{ci.phase + ' ' if ci.phase else ''}{ch}", v))
        if len(vols) > 1:
            from medcnn.errors import DimensionError

            for v in vols:
                if v.leading_axis is not None:
                    raise DimensionError.expected("3D images for a multi-channel model", f"a 4D image of shape "
                                                  f"{v.shape}", path=v.source)
            for v in vols[1:]:
                vols[0].geometry.check_matches(v.geometry, what="input channels", atol_mm=1e-3)
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
        if settings.resume and _up_to_date(prev, input_hash, settings):
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
        pred = _predict(settings, vols)
        labels = pred.labels
        if labels.geometry.differences(vols[0].geometry, atol_mm=1e-3) or \
                labels.shape[-3:] != vols[0].shape[-3:]:
            from medcnn.errors import GeometryMismatchError

            raise GeometryMismatchError(f"segmenter returned labels on grid {labels.geometry} instead of the input "
                                        f"grid {vols[0].geometry}", path=vols[0].source)
        info_i = dict(getattr(pred, "info", {}) or {})
        info_i["_intervals"] = getattr(pred, "volume_intervals", None)
        predictions.append((ci, vols, ref, labels, info_i))
    timings["predict_s"] = time.perf_counter() - t
    info = predictions[0][4]
    rec["_device"] = str(info.get("device", settings.device))
    rec["_precision"] = str(info.get("precision", settings.precision))
    rec["_tta_axes"] = [int(a) for a in info.get("tta_axes") or []]
    from medcnn.report.tables import jsonable

    rec["_inference"] = jsonable({k: v for k, v in info.items() if k not in ("per_frame", "_intervals") and isinstance(
        v, (str, int, float, bool, list, tuple, dict, type(None)))})

    # label maps, in the input's format
    t = time.perf_counter()
    label_files = []
    for ci, vols, _, labels, _ in predictions:
        sfx = _label_suffix(ci.channels[0][1])
        name = f"{case.case_id}{'_' + ci.phase if ci.phase else ''}_labels{sfx}"
        write_volume(labels, folder / name)
        label_files.append(str((folder / name).relative_to(out)))
    rec["outputs"]["labels"] = label_files
    timings["write_s"] = time.perf_counter() - t

    # measurements
    t = time.perf_counter()
    from medcnn.measure.intervals import INTERVAL_METHOD, cardiac_intervals

    methods = {"volume_ml": f"label volume in mL = {METHOD_VOXEL_COUNT}, counted on the predicted label map on "
                            "the input's own grid (no resampling of the result)",
               "volume_interval": INTERVAL_METHOD + " (probabilities stored as uint8 on the model grid and mapped to "
                                                    "the input grid by nearest neighbour)",
               "segmentation": f"model {settings.model_name} (sha256 {settings.model_sha256[:12]}...) run by "
                               "medcnn.inference; labels returned on the exact input grid"}
    qc: list[dict[str, Any]] = _input_flags(read, methods)
    is_cine = len(predictions) == 1 and predictions[0][3].leading_axis == "time"
    rec["input_kind"] = "ED/ES pair" if case.kind == "pair" else ("cine series" if is_cine else "single scan")
    overlay_rows = []
    curve_png = None
    if mode == "cardiac" and (is_cine or case.kind == "pair"):
        from medcnn.measure.cardiac import CARDIAC_COLUMNS, QC_FLAGS, cardiac_function, cine_function

        cl = cardiac_labels_from_names(settings.labels)
        if is_cine:
            _, vols, ref, labels, info0 = predictions[0]
            cf = cine_function(labels, labels=cl)
            fn = cf.function
            ed, es = int(fn.ed_frame or 0), int(fn.es_frame or 0)
            ref_ed = ref.frame(ed) if ref is not None and ref.leading_axis == "time" else None
            ref_es = ref.frame(es) if ref is not None and ref.leading_axis == "time" else None
            iv_ed, iv_es = (_intervals_by_label(info0["_intervals"], f) for f in (ed, es))
            rec["volumes"] = (_volume_rows(labels.frame(ed), settings=settings, phase="ED", frame=ed,
                                           reference=ref_ed, qc=qc, methods=methods, intervals=iv_ed)
                              + _volume_rows(labels.frame(es), settings=settings, phase="ES", frame=es,
                                             reference=ref_es, qc=qc, methods=methods, intervals=iv_es))
            rec["curve"] = _rows(cf.curve)
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
            fn = cardiac_function(l_ed, l_es, labels=cl)
            iv_ed, iv_es = _intervals_by_label(i_ed["_intervals"]), _intervals_by_label(i_es["_intervals"])
            rec["volumes"] = (_volume_rows(l_ed, settings=settings, phase="ED", frame=None, reference=r_ed, qc=qc,
                                           methods=methods, intervals=iv_ed)
                              + _volume_rows(l_es, settings=settings, phase="ES", frame=None, reference=r_es, qc=qc,
                                             methods=methods, intervals=iv_es))
            overlay_rows = [("ED", v_ed[0], l_ed, r_ed), ("ES", v_es[0], l_es, r_es)]
        rec["cardiac"] = {k: v for k, v in jsonable(fn.to_row()).items()}
        rec["cardiac"].update(jsonable(cardiac_intervals(iv_ed, iv_es, lv_blood=cl.lv_blood, rv_blood=cl.rv_blood)))
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
    else:
        if mode == "cardiac":
            qc.append({"code": "NO_CINE_OR_PAIR",
                       "message": "a single 3D scan: EF needs a cine series or an ED/ES pair (manifest columns "
                                  "ed, es); only label volumes are reported", "phase": None})
        for ci, vols, ref, labels, info_i in predictions:
            if labels.leading_axis == "time":
                for t_idx in range(labels.shape[0]):
                    rec["volumes"] += _volume_rows(labels.frame(t_idx), settings=settings,
                                                   phase=f"frame {t_idx}", frame=t_idx, reference=None, qc=qc,
                                                   intervals=_intervals_by_label(info_i["_intervals"], t_idx))
                overlay_rows.append((f"{ci.phase or 'frame'} 0", vols[0].frame(0), labels.frame(0)))
            else:
                rec["volumes"] += _volume_rows(labels, settings=settings, phase=ci.phase, frame=None,
                                               reference=ref, qc=qc, methods=methods,
                                               intervals=_intervals_by_label(info_i["_intervals"]))
                from medcnn.measure.intensity import add_intensity_columns  # image statistics (first channel)
                add_intensity_columns([r for r in rec["volumes"] if r.get("phase") == ci.phase], vols[0], labels)
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
    """DICOM SEG + SR per 3D DICOM series input (``--dicom``); other inputs get a QC flag."""
    from medcnn.io.dicom_out import algorithm_from_model, is_dicom_series, write_dicom_results

    algorithm = algorithm_from_model(settings.model_name, weights_sha256=settings.model_sha256,
                                     spec_sha256=settings.model_spec_sha256)
    cl = cardiac_labels_from_names(settings.labels) if rec.get("cardiac") else None
    written = rec["outputs"].setdefault("dicom", [])
    for ci, vols, _, labels, _ in predictions:
        src = ci.channels[0][1]
        if labels.leading_axis is not None or not is_dicom_series(src, vols[0]):
            why = ("a cine (4D) series: DICOM SEG/SR are written for 3D series only" if labels.leading_axis
                   else "the input is not a DICOM series")
            qc.append({"code": "DICOM_NOT_WRITTEN", "message": f"--dicom: {why}", "phase": ci.phase})
            continue
        # label rows by value; region rows (their label a string such as "1+2+4", or "4") by name
        volumes: dict[Any, float] = {int(r["label"]): float(r["volume_ml"]) for r in rec["volumes"]
                                     if r.get("phase") == ci.phase and not isinstance(r.get("label"), str)
                                     and str(r.get("label", "")).isdigit()}
        volumes.update({r["label_name"]: float(r["volume_ml"]) for r in rec["volumes"]
                        if r.get("phase") == ci.phase and r.get("label_name") in (settings.regions or {})
                        and isinstance(r.get("label"), str)})
        stem = f"{case.case_id}{'_' + ci.phase if ci.phase else ''}"
        paths = write_dicom_results(labels, src, folder / f"{stem}_seg.dcm", folder / f"{stem}_sr.dcm",
                                    label_names=settings.labels, volumes_ml=volumes, algorithm=algorithm,
                                    cardiac=rec.get("cardiac"), lv_label=cl.lv_blood if cl else None,
                                    include_identifiers=settings.include_identifiers, regions=settings.regions,
                                    qc_flags=[f for f in qc if f.get("scope") == "input"])
        written += [str(p.relative_to(out)) for p in paths]


def _lesion_rows(labels, settings: BatchSettings) -> list[dict[str, Any]]:
    from medcnn.measure import measure_lesions

    tumour_labels = sorted(v for v in settings.labels if v != 0) or None
    df = measure_lesions(labels, labels=tumour_labels, per_label=False, label_names=settings.labels)
    rows = _rows(df)
    if tumour_labels and len(tumour_labels) > 1:  # components of the union of several labels
        name = "whole tumour (labels " + ", ".join(str(v) for v in tumour_labels) + ")"
        for r in rows:
            r["label_name"] = name
    return rows
