"""``medcnn measure LABELMAPS... --out report.{csv,json}``: label volumes, lesions and
cardiac function of many label maps, one failing case never stopping the others.

Outputs (written atomically: temporary files renamed into place only when all are
complete):

* CSV: ``report.csv`` holds one row per case and label (volumes in mL; with ``--cardiac`` /
  ``--cine`` and no ``--labels`` table, the cardiac labels are named ``lv_blood_pool``,
  ``lv_myocardium``, ``rv_blood_pool`` after ``--lv/--myo/--rv-label``);
  ``report.lesions.csv`` one row per lesion; with ``--cardiac`` or ``--cine``
  ``report.cardiac.csv`` one row per patient, and with ``--cine`` ``report.cine.csv`` the
  volume curves. The label maps of each ``--cardiac`` pair also get volume rows (column
  ``phase`` = ED / ES); lesions are computed for LABELMAPs only (not cine, not cardiac
  pairs). Every CSV starts with its header row (any CSV reader reads it with default
  options); beside each, ``<name>.csv-metadata.json`` (CSVW metadata, see
  :func:`medcnn.report.tables.write_csv`) states the medcnn version, the options, the
  method and unit of each column, and the SHA-256 of each input (of the file bytes; for a
  DICOM folder, of its files' relative names and bytes in sorted order).
* JSON: one object with ``provenance``, ``methods``, ``inputs`` and the tables
  ``volumes``, ``lesions``, ``cardiac``, ``cine_curves`` (NaN written as null).

``--height CM --weight KG`` (one patient: one ``--cardiac`` pair or one ``--cine`` series) add
``height_cm``, ``weight_kg``, the Mosteller ``bsa_m2`` = sqrt(height_cm x weight_kg / 3600)
and the BSA-indexed ``lv_edvi_ml_per_m2``, ``lv_esvi_ml_per_m2``, ``lv_svi_ml_per_m2``,
``rv_edvi_ml_per_m2``, ``rv_esvi_ml_per_m2``, ``lv_mass_index_g_per_m2`` to the cardiac table
(:mod:`medcnn.measure.body`); without them these columns are absent. A missing partner, a
non-number, NaN, a height outside 30-250 cm or a weight outside 1-400 kg is refused before
anything is read (one line, exit 2, no output).

An input whose NIfTI header's sform, qform and pixdim disagree is read as SimpleITK reads it
(docs/io.md): one warning line per file on stderr, ``NIFTI_HEADER_INCONSISTENT`` in a
``qc_codes`` column on every row of its case (CSV and JSON; appended to the cardiac table's own
``qc_codes``), the finding in its ``inputs`` entry (``qc_flags``) and the rule in the provenance
(``input_header_rules``). The column is there only when some input was flagged.

Input paths appear as file names only (columns ``path``, ``ed_path``, ``es_path``, the
inputs list and error messages) unless ``--include-paths`` is given.

A case that fails (unreadable file, wrong dimensions...) becomes a row whose ``error``
column holds the message, and the message is printed on stderr (one line per failure); the
exit code is then 2. Case id = file name without its
extension(s).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as _dt
import hashlib
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable

__all__ = ["register", "run", "case_id", "sha256_of", "read_table"]

#: Meaning of the ``qc_codes`` column of every table (present when some input was flagged).
INPUT_QC_CODES = ("QC flags of the case's input files, ';'-separated, on every row of the case: "
                  "NIFTI_HEADER_INCONSISTENT = the NIfTI header's sform, qform and pixdim disagree and it was read "
                  "by medcnn's rule (provenance input_header_rules; inputs[].qc_flags says what was found)")



def register(sub) -> None:
    p = sub.add_parser(
        "measure", help="label volumes (mL), lesions, cardiac function of label maps",
        description="Measure label maps: per-label volume in mL (voxel count x voxel volume), lesions "
                    "(connected components with volume, centroid and diameters), and with --cardiac/--cine "
                    "LV/RV volumes, EF, myocardial mass and cardiac output with QC flags. One failing case "
                    "becomes an error row; the exit code is then 2.")
    p.add_argument("labelmaps", nargs="*", metavar="LABELMAP",
                   help="label maps (NIfTI/NRRD/MHA/MHD, DICOM RTSTRUCT or SEG files; an RTSTRUCT is rasterised on "
                        "the image series found beside it); probability maps with --probabilities; "
                        "cine label series (T, I, J, K) with --cine")
    p.add_argument("--out", required=True, metavar="REPORT",
                   help="report.csv (side tables report.lesions.csv, report.cardiac.csv, report.cine.csv) "
                        "or report.json (one file)")
    p.add_argument("--include-paths", action="store_true",
                   help="keep full input paths in the report (default: case id and file name only; folder names "
                        "often hold patient names)")
    p.add_argument("--labels", metavar="TABLE", help="label names: .json ({value: name}, MSD dataset.json) or .csv; "
                   "a map holding a label the table does not list is an error row (see --allow-unlisted-labels)")
    p.add_argument("--model", metavar="BUNDLE",
                   help="take label names (unless --labels) and regions (unions of labels, e.g. whole tumour) from "
                        "the model bundle that made the label maps; --region adds to them")
    p.add_argument("--allow-unlisted-labels", action="store_true",
                   help="measure labels missing from --labels as 'label_<v>' instead of failing the case")
    p.add_argument("--probabilities", action="store_true",
                   help="inputs are probability maps (4D, one channel per label; 3D = foreground probability): "
                        "report soft volumes (sum of p x voxel volume) besides argmax volumes")
    p.add_argument("--threshold", type=float, default=None,
                   help="with --probabilities: count p >= THRESHOLD per channel instead of the argmax")
    p.add_argument("--connectivity", type=int, choices=(6, 18, 26), default=26,
                   help="lesion connectivity: 6 faces, 18 +edges, 26 +corners (default 26)")
    p.add_argument("--min-lesion-ml", type=float, default=0.0, metavar="ML",
                   help="ignore lesions smaller than this volume in mL (default 0)")
    p.add_argument("--lesion-labels", metavar="L1,L2", help="labels to split into lesions (default: all non-zero)")
    p.add_argument("--merge-lesion-labels", action="store_true",
                   help="find lesions in the union of the lesion labels instead of per label")
    p.add_argument("--no-lesions", action="store_true", help="skip the lesion table")
    p.add_argument("--image", action="append", default=[], metavar="IMAGE",
                   help="intensity image of a LABELMAP (repeat once per LABELMAP, in the same order; same grid): "
                        "adds the mean, SD, min, max, median and 5/25/75/95th percentiles of the image inside "
                        "each label to the volume rows (TotalSegmentator's --statistics)")
    p.add_argument("--modality", metavar="NAME",
                   help="modality of the --image scans; CT states the intensities in HU (default: from the "
                        "image's DICOM header, else 'image units')")
    p.add_argument("--intensity-unit", metavar="UNIT", help="unit to state for the --image intensities (e.g. SUV)")
    p.add_argument("--region", action="append", default=[], metavar="NAME=L1,L2",
                   help="also report the volume of a union of labels, e.g. 'whole tumour=1,2,4' (repeatable)")
    p.add_argument("--cardiac", nargs=2, action="append", metavar=("ED", "ES"), default=[],
                   help="end-diastolic and end-systolic label maps of one patient (repeatable)")
    p.add_argument("--cine", action="store_true",
                   help="LABELMAPs are cine label series: volume curve, ED = max LV, ES = min LV, function")
    p.add_argument("--lv-label", type=int, default=1, help="LV blood-pool label (default 1)")
    p.add_argument("--myo-label", type=int, default=2, help="LV myocardium label, 0 = none (default 2)")
    p.add_argument("--rv-label", type=int, default=3, help="RV blood-pool label, 0 = none (default 3)")
    hr = p.add_mutually_exclusive_group()
    hr.add_argument("--heart-rate", type=float, metavar="BPM", help="heart rate for cardiac output (beats/min)")
    hr.add_argument("--rr-ms", type=float, metavar="MS", help="RR interval for cardiac output (ms)")
    p.add_argument("--height", metavar="CM", help="patient height in cm (30-250; with --weight): adds the Mosteller "
                   "BSA = sqrt(height_cm x weight_kg / 3600) m^2 and BSA-indexed volumes (mL/m^2) and LV mass (g/m^2) "
                   "to the cardiac table; one patient only (one --cardiac pair or one --cine series)")
    p.add_argument("--weight", metavar="KG", help="patient weight in kg (1-400; with --height)")
    p.set_defaults(func=run)


# ---------------------------------------------------------------------- small helpers
def case_id(path: str | os.PathLike[str]) -> str:
    """File (or folder) name without its image extension (``.nii.gz`` counts as one)."""
    from medcnn.io import image_stem

    name = Path(path).name or str(path).rstrip("/\\")
    return image_stem(name) or (Path(name).stem if Path(name).suffix else name)


def sha256_of(path: str | os.PathLike[str]) -> str | None:
    """SHA-256 of a file's bytes; for a folder, of each file's relative name and bytes in
    sorted order. ``None`` if it cannot be read."""
    p = Path(path)
    h = hashlib.sha256()
    try:
        files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else []
        if not files:
            return None
        for f in files:
            if p.is_dir():
                h.update(str(f.relative_to(p)).encode() + b"\0")
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def _parse_int_list(text: str | None) -> list[int] | None:
    if not text:
        return None
    from medcnn.errors import ConfigError

    try:
        return [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise ConfigError.expected("comma-separated integer labels such as 1,2", f"{text!r}") from None


def parse_regions(items: list[str]) -> dict[str, list[int]]:
    """``["whole tumour=1,2,4"]`` → ``{"whole tumour": [1, 2, 4]}`` (ConfigError otherwise)."""
    from medcnn.errors import ConfigError

    out: dict[str, list[int]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        vals = _parse_int_list(values) if sep else None
        if not name.strip() or not vals or any(v <= 0 for v in vals):
            raise ConfigError.expected("--region NAME=L1,L2 with labels > 0, e.g. 'whole tumour=1,2,4'", repr(item))
        if name.strip() in out:
            raise ConfigError.expected("one --region per name", f"{name.strip()!r} twice")
        out[name.strip()] = vals
    return out


def _error_text(exc: BaseException) -> str:
    from medcnn.errors import MedcnnError

    msg = " ".join(str(exc).split())
    return msg if isinstance(exc, MedcnnError) else f"{type(exc).__name__}: {msg}"


def _clean(value: Any) -> Any:
    """JSON-safe scalar (NaN/inf -> None, numpy -> python)."""
    import numpy as np
    import pandas as pd

    if value is None or value is pd.NA:
        return None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def read_table(path: str | os.PathLike[str]):
    """Read one CSV table written by ``medcnn measure`` (a plain CSV: header row first)."""
    import pandas as pd

    return pd.read_csv(path)


# ---------------------------------------------------------------------- measurement
def _read(path: str, *, probabilities: bool, cine: bool):
    import numpy as np

    from medcnn.errors import DimensionError
    from medcnn.io import annotation_kind, read_labels, read_volume
    from medcnn.volume import Volume

    if probabilities:
        vol = read_volume(path)
        arr = vol.array
        if vol.leading_axis is None:  # one foreground probability -> channels (1 - p, p)
            arr = np.stack([1.0 - arr.astype(np.float32), arr.astype(np.float32)])
        return Volume(arr, vol.geometry, "probability", "channel", None, vol.meta)
    if not cine and annotation_kind(path):  # DICOM RTSTRUCT / SEG
        return read_labels(path)
    vol = read_volume(path, kind="label")
    if cine and vol.leading_axis != "time":
        raise DimensionError.expected("a cine label series (4D: time, I, J, K)", f"a 3D volume of shape {vol.shape}",
                                      path=path, hint="drop --cine, or use --cardiac ED ES for two 3D phases")
    if not cine and vol.leading_axis is not None:
        raise DimensionError.expected("a 3D label map", f"a 4D series of shape {vol.shape}", path=path,
                                      hint="pass --cine for cine label series")
    return vol


class _Report:
    def __init__(self, include_paths: bool = False) -> None:
        self.include_paths = include_paths
        self.volumes: list[dict] = []
        self.lesions: list[dict] = []
        self.cardiac: list[dict] = []
        self.cine: list[dict] = []
        self.inputs: list[dict] = []
        self.failed = 0
        self.raw_paths: dict[str, list[str]] = {}  # case -> its input paths as given (to redact messages)
        self.input_rules: dict[str, str] = {}  # QC code -> how inputs with that read note were read
        self._entries: dict[str, list[dict]] = {}  # input path as given -> its entries in self.inputs

    def show(self, path: Any) -> str | None:
        """An input path as the report shows it (file name only unless --include-paths)."""
        from medcnn.report.provenance import display_path

        return display_path(path, include_paths=self.include_paths)

    def add_input(self, case: str, path: str, role: str) -> None:
        self.inputs.append({"case": case, "role": role, "path": self.show(path), "sha256": sha256_of(path)})
        self._entries.setdefault(str(Path(path)), []).append(self.inputs[-1])

    def qc_columns(self, *vols) -> dict[str, str]:
        """``{"qc_codes": ...}`` for every row of a case whose inputs carry read notes (a NIfTI
        header read by the rule for inconsistent headers), else ``{}``; the notes also go to
        the inputs list and their rules to the provenance."""
        from medcnn.io import input_qc_flags, input_rules
        from medcnn.report.provenance import redact_paths

        flags = input_qc_flags(list(vols))
        if not flags:
            return {}
        self.input_rules.update(input_rules(list(vols)))
        for v in vols:
            mine = input_qc_flags(v)
            for entry in self._entries.get(str(Path(str(v.source))), []) if mine else []:
                entry["qc_flags"] = [{"code": f["code"], "message": redact_paths(
                    f["message"], [str(v.source)], include_paths=self.include_paths)} for f in mine]
        return {"qc_codes": ";".join(dict.fromkeys(f["code"] for f in flags))}

    def guard(self, table: list[dict], base: dict, fn: Callable[[], None]) -> bool:
        try:
            fn()
            return True
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - isolate one bad case from the batch
            from medcnn.report.provenance import redact_paths

            self.failed += 1
            paths = [v for k, v in base.items() if k.endswith("path")] + list(self.raw_paths.get(base["case"], ()))
            table.append({**base, "error": redact_paths(_error_text(exc), paths, include_paths=self.include_paths)})
            return False


def _with_codes(row: dict, qc: dict[str, str]) -> dict:
    """A cardiac row with the case's input QC codes appended to its own ``qc_codes``."""
    if qc:
        row["qc_codes"] = ";".join(c for c in (row.get("qc_codes"), qc["qc_codes"]) if c)
    return row


def _hard_labels(vol, threshold: float | None):
    """Label map of a probability Volume: argmax, or with ``threshold`` the first foreground
    channel at or above it (0 where none)."""
    import numpy as np

    if threshold is None:
        hard = np.argmax(vol.array, axis=0)
    else:
        fg = vol.array[1:] >= threshold
        hard = np.where(fg.any(axis=0), fg.argmax(axis=0) + 1, 0)
    return vol.with_array(hard.astype(np.uint16), kind="label", leading_axis=None)


def _measure_case(path: str, args, names, report: _Report, cardiac_labels) -> None:
    import numpy as np

    from medcnn.measure import cine_function, label_volumes, measure_lesions

    case = case_id(path)
    report.raw_paths.setdefault(case, []).append(str(path))
    base = {"case": case, "path": report.show(path)}
    report.add_input(case, path, "cine" if args.cine else ("probabilities" if args.probabilities else "labelmap"))
    state: dict[str, Any] = {}

    def volumes() -> None:
        vol = _read(path, probabilities=args.probabilities, cine=args.cine)
        if names and vol.kind != "probability" and not args.allow_unlisted_labels:
            from medcnn.measure._common import check_known_labels, count_values, label_array

            check_known_labels(*count_values(label_array(vol, allow_time=True)), names, path=path,
                               what=f"the label table {args.labels}")
        state["vol"] = vol
        state["qc"] = report.qc_columns(vol)
        own = names or vol.meta.get("label_names") or (_cardiac_names(vol, cardiac_labels) if args.cine else None)
        df = label_volumes(vol, label_names=own, threshold=args.threshold,
                           regions=None if vol.kind == "probability" else args.regions)
        rows = df.to_dict(orient="records")
        if vol.kind == "probability":  # volume intervals from the same probabilities and hard labels
            from medcnn.measure.intervals import volume_intervals

            iv = volume_intervals(vol, _hard_labels(vol, args.threshold), label_values=sorted(
                {int(r["label"]) for r in rows if 0 < int(r["label"]) < vol.shape[0]}))
            by = {int(r["label"]): r for r in iv.to_dict(orient="records")}
            for r in rows:
                extra = by.get(int(r["label"]), {})
                r.update({k: extra.get(k) for k in ("volume_low_ml", "volume_high_ml", "volume_prob_low_ml",
                                                    "volume_prob_high_ml", "interval_method") if k in extra})
        image = args.image_of.get(path)
        if image is not None:
            _add_intensities(rows, vol, image, args, report, case)
        report.volumes.extend({**base, **row, **state["qc"], "error": None} for row in rows)

    if not report.guard(report.volumes, base, volumes):
        return
    vol, qc = state["vol"], state["qc"]
    if args.cine:
        def cine() -> None:
            res = cine_function(vol, labels=cardiac_labels, heart_rate_bpm=args.heart_rate, rr_interval_ms=args.rr_ms,
                                **_body_kwargs(args))
            report.cardiac.append({**base, **_with_codes(res.function.to_row(), qc), "error": None})
            report.cine.extend({**base, **row, **qc} for row in res.curve.to_dict(orient="records"))

        report.guard(report.cardiac, base, cine)
        return
    if args.no_lesions:
        return

    def lesions() -> None:
        lab = _hard_labels(vol, args.threshold) if vol.kind == "probability" else vol
        df = measure_lesions(lab, labels=_parse_int_list(args.lesion_labels), per_label=not args.merge_lesion_labels,
                             connectivity=args.connectivity, min_volume_ml=args.min_lesion_ml,
                             label_names=names or vol.meta.get("label_names"))
        report.lesions.extend({**base, **row, **qc, "error": None} for row in df.to_dict(orient="records"))

    report.guard(report.lesions, base, lesions)


def _add_intensities(rows: list[dict], vol, image_path: str, args, report: "_Report", case: str) -> None:
    """Intensity statistics of ``image_path`` inside each label, merged into the volume rows
    (region rows and probability maps are left without them)."""
    from medcnn.errors import ConfigError
    from medcnn.io import read_volume
    from medcnn.measure.intensity import add_intensity_columns

    if vol.kind == "probability" or vol.leading_axis is not None:
        raise ConfigError.expected("--image with 3D label maps", "a probability map or a cine series",
                                   path=vol.source)
    report.add_input(case, image_path, "image")
    report.raw_paths.setdefault(case, []).append(str(image_path))
    add_intensity_columns(rows, read_volume(image_path), vol, modality=args.modality, unit=args.intensity_unit)


def _body_kwargs(args) -> dict[str, float]:
    """``height_cm`` / ``weight_kg`` for the cardiac functions (checked in :func:`run`), or none."""
    body = getattr(args, "body", None)
    return {"height_cm": body.height_cm, "weight_kg": body.weight_kg} if body is not None else {}


def _cardiac_names(vol, cardiac_labels) -> dict[int, str]:
    """Cardiac names of the labels present in ``vol`` (an absent structure gets no 0 mL row)."""
    import numpy as np

    present = {int(v) for v in np.unique(np.asarray(vol.array))}
    return {v: n for v, n in cardiac_labels.names().items() if v in present}


def _measure_cardiac(ed: str, es: str, args, names, report: _Report, cardiac_labels) -> None:
    from medcnn.measure import cardiac_function, label_volumes

    case = case_id(ed)
    report.raw_paths.setdefault(case, []).extend([str(ed), str(es)])
    base = {"case": case, "ed_path": report.show(ed), "es_path": report.show(es)}
    report.add_input(case, ed, "cardiac ED")
    report.add_input(case_id(es), es, "cardiac ES")

    def run_pair() -> None:
        vols = {}
        for phase, path in (("ED", ed), ("ES", es)):
            vols[phase] = _read(path, probabilities=False, cine=False)
        fn = cardiac_function(vols["ED"], vols["ES"], labels=cardiac_labels, heart_rate_bpm=args.heart_rate,
                              rr_interval_ms=args.rr_ms, **_body_kwargs(args))
        qc = report.qc_columns(vols["ED"], vols["ES"])
        report.cardiac.append({**base, **_with_codes(fn.to_row(), qc), "error": None})
        for phase, path in (("ED", ed), ("ES", es)):
            df = label_volumes(vols[phase], label_names=names or _cardiac_names(vols[phase], cardiac_labels))
            report.volumes.extend({"case": case_id(path), "path": report.show(path), "phase": phase, **row,
                                   **qc, "error": None}
                                  for row in df.to_dict(orient="records"))

    report.guard(report.cardiac, base, run_pair)


# ---------------------------------------------------------------------- writing
def _methods(args) -> dict[str, dict[str, str]]:
    from medcnn.measure.lesions import LESION_COLUMNS
    from medcnn.measure.volumes import VOLUME_COLUMNS

    common = {"case": "case id = input file name without extension",
              "path": "input file" + ("" if args.include_paths else " (name only; --include-paths keeps the path)"),
              "error": "empty when the case was measured; else why it failed"}
    from medcnn.measure.intervals import INTERVAL_COLUMNS

    vol_cols = {**common, "phase": "cardiac inputs only: ED or ES", **VOLUME_COLUMNS, "qc_codes": INPUT_QC_CODES}
    if args.image:
        from medcnn.measure.intensity import INTENSITY_COLUMNS

        vol_cols.update(INTENSITY_COLUMNS)
    if args.probabilities:
        vol_cols.update({k: v for k, v in INTERVAL_COLUMNS.items() if k.startswith(("volume_", "interval_"))
                         and "tta" not in k and k != "volume_soft_ml"})
    out = {"volumes": vol_cols}
    if not args.no_lesions and not args.cine:
        out["lesions"] = {**common, **LESION_COLUMNS, "qc_codes": INPUT_QC_CODES}
    if args.cardiac or args.cine:
        from medcnn.measure.cardiac import columns_with_bsa

        out["cardiac"] = {**common, "ed_path": "end-diastolic label map", "es_path": "end-systolic label map",
                          **columns_with_bsa(getattr(args, "body", None) is not None)}
        out["cardiac"]["qc_codes"] += "; also " + INPUT_QC_CODES
    if args.cine:
        out["cine_curves"] = {**common, "frame": "frame index (0-based)", "time_ms": "frame trigger time in ms",
                              "lv_volume_ml": "LV blood-pool volume in mL", "lv_myo_volume_ml": "LV myocardium in mL",
                              "rv_volume_ml": "RV blood-pool volume in mL", "qc_codes": INPUT_QC_CODES}
    return out


def _frame(rows: list[dict], methods: dict[str, str]):
    import numpy as np
    import pandas as pd

    order = list(methods)
    cols = [c for c in order if any(c in r for r in rows)] or [c for c in order if c in ("case", "path", "error")]
    extra = [c for r in rows for c in r if c not in cols]
    cols += list(dict.fromkeys(extra))
    if "error" in cols:  # keep the error column last
        cols = [c for c in cols if c != "error"] + ["error"]
    df = pd.DataFrame(rows, columns=cols)
    for c in df.columns:  # integer columns stay integers next to error rows (nullable Int64)
        vals = [r[c] for r in rows if r.get(c) is not None and r.get(c) is not pd.NA]
        if vals and all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in vals):
            df[c] = df[c].astype("Int64")
    return df


def _provenance(args) -> dict[str, Any]:
    from medcnn import __version__

    return {"tool": "medcnn measure", "medcnn_version": __version__,
            "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "options": {"connectivity": args.connectivity, "min_lesion_ml": args.min_lesion_ml,
                        "lesion_labels": args.lesion_labels, "merge_lesion_labels": args.merge_lesion_labels,
                        "regions": args.regions,
                        "probabilities": args.probabilities, "threshold": args.threshold,
                        "labels_table": _display(args.labels, args),
                        "intensity_images": len(args.image), "modality": args.modality,
                        "intensity_unit": args.intensity_unit,
                        **({"model": _display(args.model, args)} if getattr(args, "model", None) else {}),
                        "include_paths": args.include_paths, "lv_label": args.lv_label, "myo_label": args.myo_label,
                        "rv_label": args.rv_label, "heart_rate_bpm": args.heart_rate, "rr_interval_ms": args.rr_ms,
                        **_body_options(args)},
            "sha256": "SHA-256 of each input file's bytes (DICOM folder: relative names + bytes, sorted)",
            "world_convention": "RAS+ mm"}


def _body_options(args) -> dict[str, Any]:
    """Height, weight and the BSA formula for the provenance, when given."""
    from medcnn.measure.body import BSA_METHOD

    body = getattr(args, "body", None)
    return {} if body is None else {"height_cm": body.height_cm, "weight_kg": body.weight_kg,
                                    "bsa_m2": body.bsa_m2, "bsa_method": BSA_METHOD}


def _display(path: Any, args) -> Any:
    from medcnn.report.provenance import display_path

    return display_path(path, include_paths=args.include_paths) if path else path


def _csv_outputs(path: Path, title: str, df, methods: dict[str, str], prov: dict, inputs: list[dict]) -> dict[Path, str]:
    """A plain CSV (header row first) and its CSVW sidecar (``<name>.csv-metadata.json``)."""
    from medcnn.report.tables import csv_metadata, csv_text, metadata_path

    meta = csv_metadata(df, path.name, title=f"medcnn measure report: {title}", descriptions=methods,
                        extra={"provenance": prov, "inputs": inputs})
    return {path: csv_text(df, quoting=csv.QUOTE_NONNUMERIC),
            metadata_path(path): json.dumps(meta, indent=1, allow_nan=False) + "\n"}


def _write_all(outputs: dict[Path, str]) -> None:
    from medcnn.io._common import atomic_path

    umask = os.umask(0)
    os.umask(umask)
    with contextlib.ExitStack() as stack:
        for path, text in outputs.items():
            tmp = stack.enter_context(atomic_path(path))
            tmp.write_text(text, encoding="utf-8")
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; reports get the usual permissions


def _check_body(args):
    """The patient's :class:`medcnn.measure.body.BodySize` from ``--height`` / ``--weight``
    (``None`` without them), checked before anything is read or written."""
    from medcnn.errors import ConfigError
    from medcnn.measure.body import body_size

    body = body_size(getattr(args, "height", None), getattr(args, "weight", None), names=("--height", "--weight"))
    if body is None:
        return None
    patients = len(args.cardiac) + (len(args.labelmaps) if args.cine else 0)
    if patients != 1:
        raise ConfigError.expected(
            "--height/--weight with one patient's cardiac maps (one --cardiac ED ES pair or one --cine series)",
            f"{patients} cardiac patients" if patients else "no --cardiac or --cine input",
            hint="one patient's height and weight must not index another's volumes: measure each patient "
                 "with its own --height/--weight, or use a manifest with height_cm/weight_kg columns in medcnn run")
    return body


def run(args: argparse.Namespace) -> int:
    from medcnn.errors import ConfigError, UnsupportedFormatError
    from medcnn.measure import CardiacLabels, load_label_table

    out = Path(args.out)
    fmt = out.suffix.lower()
    if fmt not in (".csv", ".json"):
        raise UnsupportedFormatError.expected("--out ending in .csv or .json", f"{out.name!r}", path=out)
    if not args.labelmaps and not args.cardiac:
        raise ConfigError.expected("at least one LABELMAP or --cardiac ED ES", "no inputs")
    if args.cine and args.probabilities:
        raise ConfigError.expected("--cine or --probabilities", "both")
    if args.min_lesion_ml < 0 or not math.isfinite(args.min_lesion_ml):
        raise ConfigError.expected("--min-lesion-ml >= 0", f"{args.min_lesion_ml}")
    names = load_label_table(args.labels) if args.labels else None
    model_regions: dict[str, list[int]] = {}
    if getattr(args, "model", None):  # labels and regions as the model declares them (bundle.json, no weights)
        from medcnn.batch.bundles import bundle_info
        from medcnn.regions import check_regions

        info = bundle_info(args.model)
        names = names or {k: v for k, v in info.labels.items()}
        model_regions = check_regions((info.json.get("regions") or {}).get("regions") or {}, path=info.path)
    elif args.labels and str(args.labels).lower().endswith(".json"):  # an MSD dataset.json with "regions"
        from medcnn.regions import regions_of_file

        model_regions = regions_of_file(args.labels)
    _parse_int_list(args.lesion_labels)
    if (args.region or model_regions) and args.probabilities:
        raise ConfigError.expected("regions (--region, or a --model / --labels declaring them) with label maps",
                                   "--probabilities")
    # parsed once, used by every case and the provenance; --region adds to / replaces the model's
    args.regions = {**model_regions, **parse_regions(args.region)}
    if args.image and (len(args.image) != len(args.labelmaps) or args.cine or args.probabilities):
        raise ConfigError.expected("one --image per LABELMAP (3D label maps, not --cine/--probabilities)",
                                   f"{len(args.image)} --image for {len(args.labelmaps)} LABELMAP(s)")
    args.image_of = dict(zip(args.labelmaps, args.image))
    cardiac_labels = CardiacLabels(lv_blood=args.lv_label, lv_myo=args.myo_label or None,
                                   rv_blood=args.rv_label or None)
    args.body = _check_body(args)

    report = _Report(include_paths=args.include_paths)
    for path in args.labelmaps:
        _measure_case(path, args, names, report, cardiac_labels)
    for ed, es in args.cardiac:
        _measure_cardiac(ed, es, args, names, report, cardiac_labels)

    methods = _methods(args)
    prov = _provenance(args)
    if report.input_rules:
        prov["input_header_rules"] = dict(report.input_rules)
    tables = {"volumes": report.volumes, "lesions": report.lesions, "cardiac": report.cardiac,
              "cine_curves": report.cine}
    frames = {k: _frame(tables[k], methods[k]) for k in methods}
    if fmt == ".json":
        doc = {"provenance": prov, "methods": methods, "inputs": report.inputs, "n_failed": report.failed}
        for k, df in frames.items():
            doc[k] = [_clean(r) for r in df.astype(object).to_dict(orient="records")]
        outputs = {out: json.dumps(doc, indent=1, allow_nan=False) + "\n"}
    else:
        side = {"volumes": out, "lesions": out.with_name(out.stem + ".lesions.csv"),
                "cardiac": out.with_name(out.stem + ".cardiac.csv"), "cine_curves": out.with_name(out.stem + ".cine.csv")}
        titles = {"volumes": "label volumes (one row per case and label)", "lesions": "lesions (one row per lesion)",
                  "cardiac": "cardiac function (one row per patient)", "cine_curves": "cine volume curves"}
        outputs = {}
        for k, df in frames.items():
            outputs.update(_csv_outputs(side[k], titles[k], df, methods[k], prov, report.inputs))
    _write_all(outputs)
    n_cases = len(args.labelmaps) + len(args.cardiac)
    written = ", ".join(str(p) for p in outputs)
    if report.failed:
        for table in tables.values():
            for row in table:
                if row.get("error"):
                    print(f"medcnn measure: error: {row['case']}: {row['error']}", file=sys.stderr)
        print(f"medcnn measure: {report.failed} measurement(s) failed out of {n_cases} case(s) (reasons above and "
              f"in the 'error' column). Wrote {written}", file=sys.stderr)
        return 2
    print(f"medcnn measure: {n_cases} case(s) measured; wrote {written}")
    return 0
