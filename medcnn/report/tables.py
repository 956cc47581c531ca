"""Batch report tables (pandas) and their CSV / JSON files, from per-case result records.

A *case record* is the JSON-able dict :mod:`medcnn.batch` writes per case (``result.json``)
with keys ``case_id``, ``status`` (``"ok"``, ``"skipped"`` = up to date from an earlier
run, ``"error"``), ``mode``, ``volumes`` (rows), ``lesions`` (rows), ``cardiac`` (one row
or ``None``), ``curve`` (rows or ``None``), ``qc_flags``, ``error``, ``provenance``,
``timings_s`` and ``outputs``.

Tables (one row per case x label, units in every numeric column name):

=================  ==========================================================
``cases.csv``      one row per case: status, message, QC codes, hashes, seconds
``volumes.csv``    per case, phase and label: ``volume_ml`` (+ reference)
``lesions.csv``    per lesion: ``volume_ml``, diameters ``*_mm``, centroid ``*_mm``
``cardiac.csv``    per case: ``lv_edv_ml``, ``lv_esv_ml``, ``lv_sv_ml``, ``lv_ef_percent``,
                   ``lv_myocardial_mass_g``, ... (``bsa_m2`` and indexed values such as
                   ``lv_edvi_ml_per_m2`` when a case has a height and weight) and QC flags
``curves.csv``     per cine frame: ``time_ms``, ``lv_volume_ml``, ...
``errors.csv``     per failed case: input, error type, message
=================  ==========================================================

Every CSV medcnn writes starts with its header row (no comment lines: Excel, R's
``read.csv``, Python's ``csv`` and ``pandas.read_csv`` read it with default options) and has
a **sidecar** ``<name>.csv-metadata.json`` beside it (:func:`write_csv`), in the W3C *CSV on
the Web* metadata vocabulary (CSVW): ``url`` (the CSV's file name), ``dc:title``,
``dc:creator`` (medcnn and its version), ``dc:created``, ``tableSchema.columns`` (``name``,
``datatype``, ``dc:description`` = meaning, method and unit of each column) and a
``medcnn`` object with the provenance (options, methods, inputs and their hashes).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "build_tables",
    "write_tables",
    "write_json",
    "write_text",
    "write_csv",
    "csv_text",
    "csv_metadata",
    "metadata_path",
    "jsonable",
    "TABLE_FILES",
    "COLUMN_DESCRIPTIONS",
]

#: Table name -> file name in the output folder.
TABLE_FILES: dict[str, str] = {
    "cases": "cases.csv",
    "volumes": "volumes.csv",
    "lesions": "lesions.csv",
    "cardiac": "cardiac.csv",
    "curves": "curves.csv",
    "errors": "errors.csv",
}

_CASE_COLUMNS = ["case_id", "status", "mode", "input_kind", "inputs", "message", "qc_codes", "n_labels_found",
                 "input_hash", "model_sha256", "config_hash", "device", "precision", "tta", "total_s"]
_VOLUME_COLUMNS = ["case_id", "phase", "frame", "label", "label_name", "voxel_count", "voxel_volume_mm3",
                   "volume_ml", "volume_low_ml", "volume_high_ml", "volume_soft_ml", "reference_volume_ml",
                   "volume_difference_ml", "dice", "method"]
_ERROR_COLUMNS = ["case_id", "inputs", "error_type", "message"]

#: Meaning and unit of the columns that are not documented by :mod:`medcnn.measure`.
COLUMN_DESCRIPTIONS: dict[str, str] = {
    "case_id": "case identifier (from the file/folder name or the manifest; never a patient identifier)",
    "status": "ok = computed now; skipped = up to date from an earlier run (same input, model and settings); "
              "error = failed (see message)",
    "mode": "measurement mode: cardiac, tumour or volumes",
    "input_kind": "single scan, cine series (4D) or ED/ES pair",
    "inputs": "input file(s) or DICOM folder(s)",
    "message": "error message (failed cases)",
    "qc_codes": "quality-control flag codes, ';'-separated (in the per-row tables: the flags about the case's "
                "input files, e.g. NIFTI_HEADER_INCONSISTENT = a NIfTI header whose sform, qform and pixdim disagree, "
                "read by the rule in the methods)",
    "n_labels_found": "number of distinct non-zero labels in the predicted map(s)",
    "input_hash": "SHA-256 of the input pixels + geometry (see provenance)",
    "model_sha256": "SHA-256 of the model weights",
    "config_hash": "SHA-256 of the settings that affect the result",
    "device": "device the model ran on",
    "precision": "numeric precision of inference",
    "tta": "test-time augmentation: 'off', or the model-grid axes mirrored (the model's trained mirror axes)",
    "total_s": "wall-clock seconds for the case (read, predict, measure, write)",
    "phase": "ED, ES, a cine frame name, or empty for a single scan",
    "frame": "cine frame index (0-based) or empty",
    "reference_volume_ml": "volume of the same label in the reference label map (mL), when given",
    "volume_difference_ml": "volume_ml - reference_volume_ml (mL)",
    "dice": "Dice overlap with the reference label (2|A∩B| / (|A|+|B|), unitless 0..1), when given",
    "error_type": "error class",
}


def tta_text(prov: Mapping[str, Any]) -> str:
    """``"off"`` or ``"mirror axes 0,2"`` for a record's provenance (the axes that ran: a
    bundle's default, e.g. an imported nnU-Net model's, mirrors without ``--tta``)."""
    axes = prov.get("tta_axes")
    if axes and prov.get("tta") is not False:
        return "mirror axes " + ",".join(str(a) for a in axes)
    if not prov.get("tta"):
        return "off"
    if axes is None:
        return "on"
    return "mirror axes " + ",".join(str(a) for a in axes) if axes else "none (the model was trained without mirroring)"


def jsonable(value: Any) -> Any:
    """Recursively convert numpy / pandas values to JSON types; NaN and inf become ``None``."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (np.floating, float)):
        f = float(value)
        return f if math.isfinite(f) else None
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def _frame(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> pd.DataFrame:
    rows = list(rows)
    extra = [c for r in rows for c in r if c not in columns]
    cols = list(columns) + list(dict.fromkeys(extra))
    return pd.DataFrame(rows, columns=cols)


def _inputs_text(record: Mapping[str, Any]) -> str:
    parts = []
    for item in record.get("inputs") or []:
        phase = f"{item['phase']}:" if item.get("phase") else ""
        chan = f"{item['channel']}=" if item.get("channel") not in (None, "image") else ""
        parts.append(f"{phase}{chan}{item.get('path')}")
    return "; ".join(parts)


def build_tables(records: Sequence[Mapping[str, Any]]) -> dict[str, pd.DataFrame]:
    """The report tables of a batch (see the module docstring), one DataFrame each."""
    cases, volumes, lesions, cardiac, curves, errors = [], [], [], [], [], []
    for r in records:
        cid = r["case_id"]
        prov = r.get("provenance") or {}
        err = r.get("error") or {}
        qc = r.get("qc_flags") or []
        cases.append({
            "case_id": cid, "status": r.get("status"), "mode": r.get("mode"), "input_kind": r.get("input_kind"),
            "inputs": _inputs_text(r), "message": err.get("message", ""),
            "qc_codes": ";".join(dict.fromkeys(f["code"] for f in qc)),
            "n_labels_found": r.get("n_labels_found"),
            "input_hash": r.get("input_hash"), "model_sha256": (r.get("model") or {}).get("sha256"),
            "config_hash": r.get("config_hash"), "device": prov.get("device"), "precision": prov.get("precision"),
            "tta": tta_text(prov), "total_s": (r.get("timings_s") or {}).get("total_s"),
            **{f"identifier_{k}": v for k, v in (r.get("identifiers") or {}).items()},
        })
        if r.get("status") == "error":
            errors.append({"case_id": cid, "inputs": _inputs_text(r), "error_type": err.get("type", ""),
                           "message": err.get("message", "")})
            continue
        # flags about the case's input files (scope "input") go on every row of the case
        inp = ";".join(dict.fromkeys(f["code"] for f in qc if f.get("scope") == "input"))
        extra = {"qc_codes": inp} if inp else {}
        for row in r.get("volumes") or []:
            volumes.append({"case_id": cid, **row, **extra})
        for row in r.get("lesions") or []:
            lesions.append({"case_id": cid, **row, **extra})
        if r.get("cardiac"):
            card = {"case_id": cid, **r["cardiac"]}
            if inp:
                card["qc_codes"] = ";".join(c for c in (card.get("qc_codes"), inp) if c)
            cardiac.append(card)
        for row in r.get("curve") or []:
            curves.append({"case_id": cid, **row, **extra})
    from medcnn.measure.cardiac import columns_with_bsa
    from medcnn.measure.lesions import LESION_COLUMNS

    # BSA and indexed columns only when some case has a height and weight (empty for the others)
    bsa = any(c.get("bsa_m2") is not None for c in cardiac)
    tables = {
        "cases": _frame(cases, _CASE_COLUMNS),
        "volumes": _frame(volumes, _VOLUME_COLUMNS),
        "lesions": _frame(lesions, ["case_id", *LESION_COLUMNS]),
        "cardiac": _frame(cardiac, ["case_id", *columns_with_bsa(bsa)]),
        "curves": _frame(curves, ["case_id", "frame", "time_ms", "lv_volume_ml", "lv_myo_volume_ml", "rv_volume_ml"]),
        "errors": _frame(errors, _ERROR_COLUMNS),
    }
    return tables


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically: temp file beside ``path``, then ``os.replace``."""
    from medcnn.io._common import atomic_path

    p = Path(path)
    with atomic_path(p) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return p


def metadata_path(csv_path: str | Path) -> Path:
    """The sidecar of a CSV file: ``<name>.csv-metadata.json`` beside it (CSVW convention)."""
    p = Path(csv_path)
    return p.with_name(p.name + "-metadata.json")


def _datatype(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return "boolean"
    if pd.api.types.is_integer_dtype(series):
        return "integer"
    if pd.api.types.is_numeric_dtype(series):
        return "number"
    return "string"


def csv_metadata(df: pd.DataFrame, csv_name: str, *, title: str, descriptions: Mapping[str, str] | None = None,
                 extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """CSVW metadata (JSON-able) describing ``df`` written as ``csv_name``.

    Args:
        df: the table.
        csv_name: the CSV's file name (the sidecar's ``url``, relative to it).
        title: what the table holds.
        descriptions: column -> meaning, method and unit.
        extra: provenance stored under ``"medcnn"`` (options, methods, inputs...).
    """
    from datetime import datetime, timezone

    from medcnn import __version__

    desc = dict(descriptions or {})
    cols = []
    for c in df.columns:
        col: dict[str, Any] = {"name": str(c), "titles": str(c), "datatype": _datatype(df[c])}
        if desc.get(c):
            col["dc:description"] = desc[c]
        cols.append(col)
    return {
        "@context": "http://www.w3.org/ns/csvw",
        "url": csv_name,
        "dc:title": title,
        "dc:creator": f"medcnn {__version__}",
        "dc:created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "dialect": {"header": True, "delimiter": ",", "encoding": "utf-8"},
        "tableSchema": {"columns": cols},
        "medcnn": jsonable(dict(extra or {})),
    }


def csv_text(df: pd.DataFrame, **to_csv: Any) -> str:
    """``df`` as CSV text: the header row first, no index, ``\\n`` line ends."""
    return df.to_csv(index=False, lineterminator="\n", **to_csv)


def write_csv(df: pd.DataFrame, path: str | Path, *, title: str, descriptions: Mapping[str, str] | None = None,
              extra: Mapping[str, Any] | None = None, **to_csv: Any) -> tuple[Path, Path]:
    """Write ``df`` as a plain CSV (header row first) and its CSVW sidecar
    ``<name>.csv-metadata.json`` (:func:`csv_metadata`), both atomically.

    Returns:
        ``(csv_path, sidecar_path)``.
    """
    p = Path(path)
    write_text(p, csv_text(df, **to_csv))
    side = write_json(csv_metadata(df, p.name, title=title, descriptions=descriptions, extra=extra), metadata_path(p))
    return p, side


#: Title of each batch table (the sidecars' ``dc:title``).
TABLE_TITLES: dict[str, str] = {
    "cases": "medcnn run: one row per case (status, QC codes, hashes, timings)",
    "volumes": "medcnn run: label volumes, one row per case, phase and label",
    "lesions": "medcnn run: lesions, one row per lesion",
    "cardiac": "medcnn run: cardiac function, one row per case",
    "curves": "medcnn run: cine volume curves, one row per frame",
    "errors": "medcnn run: failed cases",
}


def write_tables(tables: Mapping[str, pd.DataFrame], out_dir: str | Path, *,
                 descriptions: Mapping[str, str] | None = None,
                 extra: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Write every table as CSV (atomic; header-only when empty) with its CSVW sidecar
    (:func:`write_csv`). Returns name -> CSV path."""
    out = Path(out_dir)
    paths = {}
    for name, df in tables.items():
        paths[name], _ = write_csv(df, out / TABLE_FILES.get(name, f"{name}.csv"),
                                   title=TABLE_TITLES.get(name, name), descriptions=descriptions, extra=extra)
    return paths


def write_json(obj: Any, path: str | Path) -> Path:
    """Write ``obj`` as indented JSON atomically (NaN/inf as ``null``)."""
    return write_text(path, json.dumps(jsonable(obj), indent=1, allow_nan=False) + "\n")
