"""``medcnn response BASELINE FOLLOWUP [FOLLOWUP...] --out DIR``: tumour response over time.

Each time point is a label map (the default; NIfTI/NRRD/MHA, DICOM RTSTRUCT or SEG as for
``medcnn measure``) or, with ``--model``, a scan that is segmented first by the case pipeline
of ``medcnn segment`` / ``run`` (:mod:`medcnn.batch.pipeline`), each on its own grid. A
multi-channel model takes one argument per time point: a folder holding one image per channel
(matched by channel name in the file name, as ``segment --channels FOLDER``) or a comma list
of files in the bundle's channel order (``flair.nii.gz,t1c.nii.gz``).

Every time point is measured on its own grid by :func:`medcnn.batch.pipeline.volume_rows`
(the volume rows of ``segment`` / ``run``: per label, then per region as the union of its
labels); nothing is resampled. Each follow-up is compared with the baseline structure by
structure (:func:`medcnn.measure.response.compare_volume_rows`): change in mL and %, volume
doubling time (``--dates`` or ``--interval-days``) and the volumetric RECIST-like category of
:mod:`medcnn.measure.response`, from the structure's total volume.

Outputs in ``DIR`` (written only when everything was computed; a failure leaves no file):

* ``response.csv`` (+ ``response.csv-metadata.json``, CSVW): one row per follow-up and
  structure (baseline / follow-up mL, change mL and %, doubling time in days, category, and
  for model-segmented label rows each time point's sensitivity band, mL);
* ``response.json``: method text, thresholds, options, medcnn version, per time point the
  input file names and SHA-256, date, grid and volume rows, and the response rows;
* ``response.html``: one self-contained page;
* with ``--model``: each time point's label map, ``t<i>_<name>_labels<ext>``.

Input paths appear as file names only. Bad input (a missing file, fewer than two time points,
dates out of order, label maps whose label sets disagree, a 4D series) is one line on stderr
and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from medcnn.cli._options import add_threads_option

__all__ = ["register", "run", "RESPONSE_FILES"]

#: The report files of one run (beside them, with --model, the label maps).
RESPONSE_FILES = ("response.csv", "response.csv-metadata.json", "response.json", "response.html")

#: Columns of response.csv before the structure columns of
#: :data:`medcnn.measure.response.SERIES_COLUMNS`.
_LEAD_COLUMNS: dict[str, str] = {
    "followup_index": "time point index of the follow-up (0 = baseline, 1 = first follow-up, ...)",
    "followup_inputs": "follow-up input file name(s) (';'-separated channels)",
    "baseline_date": "baseline date (ISO 8601), empty without --dates",
    "followup_date": "follow-up date (ISO 8601), empty without --dates",
    "interval_days": "days from baseline to follow-up (--dates or --interval-days), empty when not given",
}

#: Method sentences of response.json and the HTML page.
_METHODS: dict[str, str] = {
    "volumes": ("each time point on its own grid: volume_ml = voxel count x voxel volume (product of the spacings, "
                "mm^3) / 1000; a region's volume counts every voxel holding any of its labels once; no time point is "
                "resampled onto another (medcnn.batch.pipeline.volume_rows, as segment and run report volumes)"),
    "change": "change_ml = V_followup - V_baseline; change_percent = (V_followup - V_baseline) / V_baseline x 100",
    "doubling_time": ("vdt_days = interval_days x ln 2 / ln(V_followup / V_baseline); negative = halving time; "
                      "infinite when unchanged; not given when a volume is 0 or no interval is known"),
    "category": ("volumetric RECIST-like category of each structure from its total volume (RECIST 1.1 diameter "
                 "thresholds converted for a sphere, V ~ d^3); compared with the baseline only (not the nadir); "
                 "RECIST's new-lesion rule is not applied: connected components split and merge with grid and "
                 "segmentation noise (the same BraTS label map resampled to 1.2 mm gave four unmatched components); "
                 "lesion matching is in the API, medcnn.measure.tumour_response"),
    "sensitivity_band": ("model-segmented time points only, label rows: volume_low_ml..volume_high_ml from the "
                         "model's own probabilities (docs/volume_intervals.md). A sensitivity band, not a confidence "
                         "interval; label-map inputs and region rows have none"),
}


def register(sub) -> None:
    p = sub.add_parser(
        "response", help="tumour response: volume change, doubling time and category over time points",
        description="Compare each follow-up with the baseline: per-label and per-region volumes (mL) on each time "
                    "point's own grid, change in mL and %, volume doubling time (days) and the volumetric "
                    "RECIST-like category (PR <= -65.7 %, PD >= +72.8 % volume). Time points are label maps, or "
                    "scans segmented with --model.",
        epilog="Exit codes: 0 written, 2 bad input (nothing written), 1 internal error.")
    p.add_argument("timepoints", nargs="*", metavar="TIMEPOINT",
                   help="BASELINE FOLLOWUP [FOLLOWUP...] in time order: label maps (NIfTI/NRRD/MHA, DICOM RTSTRUCT "
                        "or SEG); with --model scans (file or DICOM folder; for a multi-channel model a folder with "
                        "one image per channel, or a comma list A,B in the bundle's channel order)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder: response.csv, response.json, response.html (with --model also each time "
                        "point's label map)")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--dates", metavar="D0,D1,...",
                      help="ISO dates (YYYY-MM-DD), one per time point, in increasing order")
    when.add_argument("--interval-days", metavar="DAYS1,...",
                      help="days from the baseline to each follow-up, increasing (instead of --dates)")
    p.add_argument("--labels", metavar="TABLE",
                   help="label names: .json ({value: name}, MSD dataset.json: its 'regions' are used too) or .csv; "
                        "a time point holding a label the table does not list is an error")
    p.add_argument("--regions", metavar="FILE",
                   help="regions (named unions of labels, e.g. whole tumour) declared by a bundle.json or a "
                        "dataset.json with a 'regions' key (medcnn.regions.regions_of_file)")
    p.add_argument("--region", action="append", default=[], metavar="NAME=L1,L2",
                   help="also report a union of labels, e.g. 'whole tumour=1,2,4' (repeatable; adds to the regions "
                        "of --model / --labels / --regions)")
    p.add_argument("--model", metavar="NAME_OR_BUNDLE",
                   help="time points are scans: segment each with this model (default model name, bundle folder or "
                        ".medcnn archive) through the case pipeline of medcnn segment; its labels and regions are "
                        "reported")
    p.add_argument("--device", default="auto", help="with --model: auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="with --model: auto (default), fp32, bf16, fp16")
    add_threads_option(p)
    p.set_defaults(func=run)


# ---------------------------------------------------------------------- arguments
def _split(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _parse_dates(text: str, n: int) -> list[_dt.date]:
    from medcnn.errors import ConfigError

    parts = _split(text)
    if len(parts) != n:
        raise ConfigError.expected(f"--dates with one ISO date per time point ({n})", f"{len(parts)} date(s)")
    dates = []
    for t in parts:
        try:
            dates.append(_dt.date.fromisoformat(t))
        except ValueError:
            raise ConfigError.expected("--dates as ISO dates YYYY-MM-DD", repr(t)) from None
    for i in range(1, n):
        if dates[i] <= dates[i - 1]:
            raise ConfigError.expected(
                "--dates in increasing order (baseline first, each follow-up after the one before)",
                f"time point {i} on {dates[i]} {'before' if dates[i] < dates[i - 1] else 'on the same day as'} "
                f"time point {i - 1} on {dates[i - 1]}",
                hint="List BASELINE FOLLOWUP... and their dates in time order")
    return dates


def _parse_intervals(text: str, n_followups: int) -> list[float]:
    from medcnn.errors import ConfigError

    parts = _split(text)
    if len(parts) != n_followups:
        raise ConfigError.expected(f"--interval-days with one value per follow-up ({n_followups})",
                                   f"{len(parts)} value(s)")
    try:
        days = [float(t) for t in parts]
    except ValueError:
        raise ConfigError.expected("--interval-days as numbers of days, e.g. 90,180", repr(text)) from None
    prev = 0.0
    for i, d in enumerate(days, start=1):
        if not math.isfinite(d) or d <= prev:
            raise ConfigError.expected(
                "--interval-days increasing and > 0 (days from the baseline to each follow-up, in time order)",
                f"follow-up {i} at {d:g} days after {'the baseline' if i == 1 else f'follow-up {i - 1} at {prev:g}'}")
        prev = d
    return days


@dataclass
class _TimePoint:
    """One time point: its argument, input files, and once measured its label map and rows."""

    index: int
    spec: str
    files: list[Path]
    channel_folder: bool = False
    date: _dt.date | None = None
    interval_days: float | None = None
    labels: Any = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    qc_flags: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


def _timepoints(args: argparse.Namespace, channels: Sequence[str] | None) -> list[_TimePoint]:
    """The time points named on the command line; every file must exist (checked before a
    model loads). ``channels``: the model's input channels (``None``: label maps)."""
    from medcnn.errors import ConfigError, DimensionError, InputFileNotFoundError

    specs = list(args.timepoints)
    if len(specs) < 2:
        raise ConfigError.expected("a BASELINE and at least one FOLLOWUP (two or more time points, in time order)",
                                   f"{len(specs)} time point(s)")
    out = []
    for i, spec in enumerate(specs):
        multi = channels is not None and len(channels) > 1
        files = [Path(p) for p in _split(spec)] if multi and "," in spec else [Path(spec)]
        for f in files:
            if not f.exists():
                what = "baseline" if i == 0 else f"follow-up {i}"
                raise InputFileNotFoundError.expected(f"an existing {what} file or folder", "nothing at that path",
                                                      path=f)
        if multi and not (len(files) == len(channels) or (len(files) == 1 and files[0].is_dir())):
            raise DimensionError.expected(
                f"for this {len(channels)}-channel model ({', '.join(channels)}) a folder holding one image per "
                "channel (matched by channel name) or a comma list A,B in that channel order",
                "a single image" if len(files) == 1 else f"{len(files)} files", path=spec)
        out.append(_TimePoint(i, spec, files, channel_folder=multi and len(files) == 1 and files[0].is_dir()))
    return out


def _regions(args: argparse.Namespace, model_regions: Mapping[str, Sequence[int]] | None) -> dict[str, list[int]]:
    """The regions reported: the model's (or a --labels dataset.json's), --regions FILE, then --region."""
    from medcnn.cli.measure import parse_regions
    from medcnn.regions import check_regions, regions_of_file

    regions: dict[str, list[int]] = {k: list(v) for k, v in (model_regions or {}).items()}
    if not model_regions and args.labels and str(args.labels).lower().endswith(".json"):
        regions.update(regions_of_file(args.labels))
    if args.regions:
        regions.update(regions_of_file(args.regions))
    regions.update(parse_regions(args.region))
    return check_regions(regions) if regions else {}


# ---------------------------------------------------------------------- measuring
def _read_label_maps(tps: Sequence[_TimePoint]) -> None:
    """Each time point's 3D label map (a DICOM RTSTRUCT / SEG rasterised as ``measure`` does)."""
    from medcnn.errors import DimensionError
    from medcnn.io import annotation_kind, read_labels, read_volume

    for tp in tps:
        path = tp.files[0]
        vol = read_labels(path) if annotation_kind(path) else read_volume(path, kind="label")
        if vol.leading_axis is not None:
            raise DimensionError.expected("a 3D label map per time point", f"a 4D series of shape {vol.shape}",
                                          path=path, hint="Give each time point as its own 3D label map")
        tp.labels = vol


def _present(volume: Any) -> set[int]:
    import numpy as np

    return {int(v) for v in np.unique(np.asarray(volume.array)) if v != 0}


def _check_label_sets(tps: Sequence[_TimePoint], table: Mapping[int, str] | None, table_name: str | None,
                      regions: Mapping[str, Sequence[int]]) -> dict[int, str]:
    """The label set every time point is measured with (``{value: name}``).

    With a label table every label present must be listed in it; without one a follow-up
    may hold only labels the baseline holds or a region names (a structure that disappears is
    0 mL; one that appears under an unknown value is more likely another label convention).

    Raises:
        InvalidLabelError: naming the time point's file, the labels expected and found.
    """
    from medcnn.errors import InvalidLabelError
    from medcnn.measure.labels import as_label_names, label_name

    if table:
        known = {int(v) for v in table if int(v) != 0}
        for tp in tps:
            extra = sorted(_present(tp.labels) - known)
            if extra:
                raise InvalidLabelError.expected(
                    f"only labels listed in {table_name} {sorted(known)}", f"label value(s) {extra}", path=tp.files[0],
                    hint="Check that every time point uses the same label convention, or list every value in the "
                         "label table")
        names = {int(k): str(v) for k, v in table.items() if int(k) != 0}
    else:
        base = _present(tps[0].labels)
        known = base | {v for members in regions.values() for v in members}
        for tp in tps[1:]:
            extra = sorted(_present(tp.labels) - known)
            if extra:
                raise InvalidLabelError.expected(
                    f"the baseline's label set {sorted(base)} at every time point", f"label value(s) {extra} the "
                    f"baseline ({tps[0].files[0].name}) does not hold", path=tp.files[0],
                    hint="The maps may use different label conventions (e.g. BraTS 1/2/4 and nnU-Net 1/2/3). If a "
                         "new structure really appeared, pass --labels TABLE listing every label value")
        values = sorted(known | {v for tp in tps for v in _present(tp.labels)})
        meta_names = as_label_names((tps[0].labels.meta or {}).get("label_names") or None)
        names = {v: label_name(meta_names, v) for v in values}
    return names


def _measure(tp: _TimePoint, names: Mapping[int, str], regions: Mapping[str, Sequence[int]],
             intervals: Any = None) -> None:
    """The time point's volume rows: :func:`medcnn.batch.pipeline.volume_rows` (labels, then
    regions as unions of labels), on its own grid."""
    from medcnn.batch.pipeline import intervals_by_label, volume_rows

    qc: list[dict[str, Any]] = []
    rows = volume_rows(tp.labels, label_names=dict(names), regions=dict(regions), phase=None, frame=None, qc=qc,
                       intervals=intervals_by_label(intervals) if intervals else None)
    tp.rows = [{k: v for k, v in r.items() if k not in ("phase", "frame")} for r in rows]


def _segment_all(tps: Sequence[_TimePoint], args: argparse.Namespace, seg: Any, model: Any) -> list[Any]:
    """Segment each time point by the case pipeline (``segment``'s reading, input check and
    prediction); returns the predictions."""
    from medcnn.batch.pipeline import input_flags, predict
    from medcnn.cli.segment import _read_case
    from medcnn.errors import DimensionError
    from medcnn.models.compat import check_inputs

    preds = []
    for tp in tps:
        spec: Any = tp.files if len(tp.files) > 1 else tp.files[0]
        vols, _ = _read_case(spec, seg.channels, None, channel_folder=tp.channel_folder)
        if vols[0].leading_axis is not None:
            raise DimensionError.expected("a 3D scan per time point", f"a series of shape {vols[0].shape}",
                                          path=tp.files[0])
        check_inputs(vols, model.input_description, model=model.name)
        methods: dict[str, str] = {}
        tp.qc_flags = input_flags(vols, methods=methods)
        pred = predict(seg, vols)
        tp.labels = pred.labels
        tp.info = {k: pred.info.get(k) for k in ("device", "precision", "tta_axes", "n_windows")}
        tp.files = [Path(str(v.source)) for v in vols] if tp.channel_folder else tp.files
        preds.append(pred)
    return preds


# ---------------------------------------------------------------------- outputs
def _grid(volume: Any) -> dict[str, Any]:
    g = volume.geometry
    return {"shape": list(g.shape), "spacing_mm": [float(s) for s in g.spacing],
            "origin_mm": [float(o) for o in g.origin], "orientation": g.orientation}


def _label_map_name(tp: _TimePoint, out_dir: Path) -> Path:
    from medcnn.cli.segment import _split_name, output_name

    first = tp.files[0] if not tp.channel_folder else Path(tp.spec)
    return output_name(first, out_dir, "labels", stem=f"t{tp.index}_{_split_name(first)[0]}")


def _document(tps: Sequence[_TimePoint], rows: list[dict[str, Any]], args: argparse.Namespace,
              regions: Mapping[str, Sequence[int]], model: Any, seg: Any, label_maps: Mapping[int, Path]
              ) -> dict[str, Any]:
    from medcnn import __version__
    from medcnn.cli.measure import sha256_of
    from medcnn.measure.response import (
        CATEGORY_NAMES,
        PD_DIAMETER_CHANGE,
        PD_VOLUME_CHANGE,
        PR_DIAMETER_CHANGE,
        PR_VOLUME_CHANGE,
        SERIES_COLUMNS,
    )
    from medcnn.measure.volumes import VOLUME_COLUMNS
    from medcnn.report.provenance import display_path

    timepoints = []
    for tp in tps:
        entry: dict[str, Any] = {
            "index": tp.index, "role": "baseline" if tp.index == 0 else "follow-up",
            "inputs": [{"file": display_path(f), "sha256": sha256_of(f)} for f in tp.files],
            "date": tp.date.isoformat() if tp.date else None, "interval_days": tp.interval_days,
            "grid": _grid(tp.labels), "volumes": tp.rows,
        }
        if tp.index in label_maps:
            entry["label_map"] = label_maps[tp.index].name
        if tp.qc_flags:
            entry["qc_flags"] = tp.qc_flags
        if tp.info:
            entry["prediction"] = tp.info
        timepoints.append(entry)
    doc: dict[str, Any] = {
        "tool": "medcnn response", "medcnn_version": __version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "methods": dict(_METHODS),
        "thresholds": {
            "pr_diameter_change_percent": PR_DIAMETER_CHANGE * 100,
            "pd_diameter_change_percent": PD_DIAMETER_CHANGE * 100,
            "pr_volume_change_percent": PR_VOLUME_CHANGE * 100, "pd_volume_change_percent": PD_VOLUME_CHANGE * 100,
            "rule": "PR at change_percent <= pr_volume_change_percent, PD at >= pd_volume_change_percent "
                    "(volume = (1 + diameter change)^3 - 1), CR all gone, NE none at baseline or follow-up, else SD"},
        "categories": dict(CATEGORY_NAMES),
        "options": {"labels_table": display_path(args.labels) if args.labels else None,
                    "regions": {k: list(v) for k, v in regions.items()},
                    "regions_file": display_path(args.regions) if args.regions else None,
                    "dates": [tp.date.isoformat() for tp in tps] if args.dates else None,
                    "interval_days": [tp.interval_days for tp in tps[1:]] if args.interval_days else None,
                    "inputs": "scans segmented with --model" if model else "label maps"},
        "paths": "input files are named by file (or folder) name only",
        "input_hash_method": "SHA-256 of each input file's bytes (a folder: its files' relative names and bytes, "
                             "sorted)",
        "model": None,
        "timepoints": timepoints,
        "response": rows,
        "columns": {**_LEAD_COLUMNS, **SERIES_COLUMNS},
        "volume_columns": {k: v for k, v in VOLUME_COLUMNS.items() if k not in ("frame", "time_ms", "soft_volume_ml")},
    }
    if model is not None:
        b = seg.bundle_info
        doc["model"] = {"name": model.name, "argument": display_path(args.model), "sha256": b.get("sha256"),
                        "spec_sha256": b.get("spec_sha256"), "device": str(seg.device), "precision": seg.precision}
    return doc


def _csv_frame(rows: list[dict[str, Any]]):
    import pandas as pd

    from medcnn.measure.response import SERIES_COLUMNS

    cols = list(_LEAD_COLUMNS) + list(SERIES_COLUMNS)
    df = pd.DataFrame(rows, columns=cols)
    for c in ("followup_index", "baseline_voxel_count", "followup_voxel_count"):
        df[c] = df[c].astype("Int64")
    return df


def _write(outputs: Mapping[Path, Any], out_dir: Path, created: bool) -> None:
    """Write every output (text, or a label Volume) atomically: all temporary files first,
    renamed into place only when all are complete; on failure nothing is left (and a folder
    this command created is removed)."""
    from medcnn.io import write_volume
    from medcnn.io._common import atomic_path

    try:
        with contextlib.ExitStack() as stack:
            for path, content in outputs.items():
                tmp = stack.enter_context(atomic_path(path))
                if isinstance(content, str):
                    tmp.write_text(content, encoding="utf-8")
                else:
                    write_volume(content, tmp)
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                out_dir.rmdir()
        raise


def run(args: argparse.Namespace) -> int:
    import csv
    import json

    from medcnn.errors import ConfigError
    from medcnn.measure import load_label_table
    from medcnn.measure.response import compare_volume_rows
    from medcnn.report.html import render_response_html
    from medcnn.report.tables import csv_metadata, csv_text, jsonable

    if args.model and args.labels:
        raise ConfigError.expected("--labels with label-map time points (a --model names its own labels)",
                                   "--labels together with --model")
    n = len(args.timepoints)
    dates = _parse_dates(args.dates, n) if args.dates and n >= 2 else None
    intervals = _parse_intervals(args.interval_days, n - 1) if args.interval_days and n >= 2 else None
    seg = model = None
    if args.model:
        from medcnn.batch.bundles import bundle_info

        model = bundle_info(args.model)  # bundle.json only: the channels, before the files are checked
        tps = _timepoints(args, model.channels)
    else:
        tps = _timepoints(args, None)
    for tp in tps:
        tp.date = dates[tp.index] if dates else None
        if tp.index > 0:
            tp.interval_days = (float((dates[tp.index] - dates[0]).days) if dates
                                else intervals[tp.index - 1] if intervals else None)
    table = load_label_table(args.labels) if args.labels else None
    regions = _regions(args, model.regions if model is not None else None)
    preds: list[Any] = []
    if model is not None:
        from medcnn.inference import Segmenter

        seg = Segmenter.from_bundle(args.model, device=args.device, precision=args.precision, threads=args.threads)
        preds = _segment_all(tps, args, seg, model)
        names = {int(k): str(v) for k, v in model.labels.items()}
    else:
        _read_label_maps(tps)
        names = _check_label_sets(tps, table, Path(args.labels).name if args.labels else None, regions)
    if table is not None or model is not None:
        from medcnn.regions import check_regions

        check_regions(regions, labels={k: v for k, v in names.items() if k != 0},
                      path=args.regions or args.labels or args.model)
    for i, tp in enumerate(tps):
        _measure(tp, names, regions, preds[i].volume_intervals if preds else None)

    rows: list[dict[str, Any]] = []
    base = tps[0]
    for tp in tps[1:]:
        lead = {"followup_index": tp.index, "followup_inputs": ";".join(f.name for f in tp.files),
                "baseline_date": base.date.isoformat() if base.date else None,
                "followup_date": tp.date.isoformat() if tp.date else None, "interval_days": tp.interval_days}
        rows += [{**lead, **r} for r in compare_volume_rows(base.rows, tp.rows, interval_days=tp.interval_days)]

    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError.expected("--out a folder", "an existing file", path=out_dir)
    label_maps = {tp.index: _label_map_name(tp, out_dir) for tp in tps} if model is not None else {}
    doc = jsonable(_document(tps, rows, args, regions, model, seg, label_maps))
    df = _csv_frame(rows)
    meta = csv_metadata(df, "response.csv", title="medcnn response: one row per follow-up and structure",
                        descriptions=doc["columns"],
                        extra={k: doc[k] for k in ("tool", "methods", "thresholds", "options", "model")}
                        | {"inputs": [dict(i, timepoint=t["index"]) for t in doc["timepoints"] for i in t["inputs"]]})
    outputs: dict[Path, Any] = {
        out_dir / "response.csv": csv_text(df, quoting=csv.QUOTE_NONNUMERIC),
        out_dir / "response.csv-metadata.json": json.dumps(meta, indent=1, allow_nan=False) + "\n",
        out_dir / "response.json": json.dumps(doc, indent=1, allow_nan=False) + "\n",
        out_dir / "response.html": render_response_html(doc),
    }
    for tp in tps:
        if tp.index in label_maps:
            outputs[label_maps[tp.index]] = tp.labels
    _write(outputs, out_dir, created=not out_dir.exists())
    cats = "; ".join(f"t{r['followup_index']} {r['label_name']}: {r['category']}" for r in rows)
    print(f"medcnn response: {n} time points, {len(rows)} comparison row(s) ({cats}); wrote "
          f"{', '.join(str(p) for p in outputs)}")
    return 0
