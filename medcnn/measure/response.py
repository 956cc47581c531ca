"""Tumour response between two time points of one patient: volume change, doubling time,
and a volumetric RECIST-like category.

Definitions
-----------
* **Per label**: volumes (mL) are computed on each scan's own grid, so the two time
  points may have different grids and nothing is resampled.
* **Per lesion**: lesions are the connected components of :func:`measure_lesions` at each
  time point. They are matched by the distance between their world-space (RAS+ mm)
  centroids, greedily: the closest pair (of the same label when ``per_label``) is matched
  first, then the next closest pair among unmatched lesions, and so on, as long as the
  distance is at most ``max_match_distance_mm``. An unmatched baseline lesion has
  ``status="disappeared"`` (follow-up volume 0); an unmatched follow-up lesion
  ``status="new"``. This assumes both scans are in the same world frame (same session
  coordinates or already registered); it does not register the scans.
* **change_percent** = (V_followup - V_baseline) / V_baseline x 100.
* **Volume doubling time** (days) = dt x ln 2 / ln(V_followup / V_baseline), dt the
  interval in days (from the two dates, or ``interval_days``). Negative = halving time;
  infinite when the volume is unchanged; NaN when either volume is 0 or no interval is
  known.
* **Volumetric category**: RECIST 1.1 diameter thresholds converted to volume for a
  sphere, V ~ d^3, so a diameter change ``d`` corresponds to a volume change
  ``(1 + d)^3 - 1`` (:func:`volume_change_threshold`):
  PR (partial response) at a diameter change <= -30 %, i.e. volume change <= -65.7 %;
  PD (progressive disease) at >= +20 % diameter, i.e. volume >= +72.8 %;
  CR (complete response) when all tumour volume has disappeared; otherwise SD (stable).
  A new lesion at follow-up makes the category PD (as in RECIST 1.1) unless
  ``new_lesion_is_pd=False``. NE (not evaluable) when the baseline has no tumour and the
  follow-up none either. Unlike RECIST, the comparison is with the baseline only (not
  the nadir) and there is no 5 mm absolute-increase rule.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from medcnn.errors import ConfigError
from medcnn.measure.labels import as_label_names, label_name
from medcnn.measure.lesions import measure_lesions
from medcnn.measure.volumes import label_volumes
from medcnn.volume import Volume

__all__ = [
    "tumour_response",
    "ResponseResult",
    "volume_change_threshold",
    "volume_doubling_time_days",
    "volumetric_category",
    "volume_change",
    "compare_volume_rows",
    "SERIES_COLUMNS",
    "CATEGORY_NAMES",
    "PR_DIAMETER_CHANGE",
    "PD_DIAMETER_CHANGE",
    "PR_VOLUME_CHANGE",
    "PD_VOLUME_CHANGE",
    "RESPONSE_COLUMNS",
]

#: RECIST 1.1: partial response at a >= 30 % decrease of the (sum of) diameters.
PR_DIAMETER_CHANGE = -0.30
#: RECIST 1.1: progressive disease at a >= 20 % increase of the (sum of) diameters.
PD_DIAMETER_CHANGE = +0.20
_EPS = 1e-12


def volume_change_threshold(diameter_change: float) -> float:
    """Relative volume change of a sphere whose diameter changes by ``diameter_change``:
    ``(1 + d)^3 - 1`` (e.g. -0.30 -> -0.657, +0.20 -> +0.728)."""
    return (1.0 + float(diameter_change)) ** 3 - 1.0


#: Volume change (fraction) for PR: (1 - 0.30)^3 - 1 = -0.657.
PR_VOLUME_CHANGE = volume_change_threshold(PR_DIAMETER_CHANGE)
#: Volume change (fraction) for PD: (1 + 0.20)^3 - 1 = +0.728.
PD_VOLUME_CHANGE = volume_change_threshold(PD_DIAMETER_CHANGE)

RESPONSE_COLUMNS: dict[str, str] = {
    "label": "label value",
    "label_name": "structure name",
    "status": "lesions: matched / new / disappeared",
    "baseline_lesion_id": "lesion_id at baseline (measure_lesions order), empty for new lesions",
    "followup_lesion_id": "lesion_id at follow-up, empty for disappeared lesions",
    "match_distance_mm": "distance between the matched centroids in mm (RAS+ world)",
    "baseline_volume_ml": "volume at baseline in mL (voxel count x voxel volume)",
    "followup_volume_ml": "volume at follow-up in mL",
    "change_ml": "follow-up - baseline volume in mL",
    "change_percent": "(follow-up - baseline) / baseline x 100, in %",
    "vdt_days": "volume doubling time in days = interval x ln2 / ln(V_followup / V_baseline)",
    "category": (f"volumetric RECIST-like category: PR <= {PR_VOLUME_CHANGE * 100:.1f} % volume "
                 f"((1{PR_DIAMETER_CHANGE:+.2f})^3 - 1), PD >= {PD_VOLUME_CHANGE * 100:+.1f} % "
                 f"((1{PD_DIAMETER_CHANGE:+.2f})^3 - 1) or new lesion, CR all gone, else SD"),
}


def volume_doubling_time_days(baseline_ml: float, followup_ml: float, interval_days: float | None) -> float:
    """``interval_days x ln 2 / ln(followup / baseline)``; NaN if a volume is <= 0 or no
    interval; +inf when unchanged; negative for shrinking lesions (halving time)."""
    if interval_days is None or not np.isfinite(interval_days) or baseline_ml <= 0 or followup_ml <= 0:
        return math.nan
    ratio = math.log(followup_ml / baseline_ml)
    if ratio == 0:
        return math.inf
    return float(interval_days) * math.log(2.0) / ratio


def volumetric_category(baseline_ml: float, followup_ml: float, *, new_lesions: bool = False,
                        new_lesion_is_pd: bool = True) -> str:
    """``"CR"``, ``"PR"``, ``"SD"``, ``"PD"`` or ``"NE"`` from two volumes (mL); see the
    module docstring for the thresholds."""
    pd_by_new = new_lesions and new_lesion_is_pd
    if baseline_ml <= 0:
        return "PD" if (followup_ml > 0 or pd_by_new) else "NE"
    if pd_by_new:
        return "PD"
    if followup_ml <= 0:
        return "CR"
    change = followup_ml / baseline_ml - 1.0
    if change >= PD_VOLUME_CHANGE - _EPS:
        return "PD"
    if change <= PR_VOLUME_CHANGE + _EPS:
        return "PR"
    return "SD"


#: What each volumetric category means (the words reports print beside the code).
CATEGORY_NAMES: dict[str, str] = {
    "CR": "complete response: no tumour volume left at follow-up",
    "PR": f"partial response: volume change <= {PR_VOLUME_CHANGE * 100:.1f} %",
    "SD": "stable disease: neither PR nor PD",
    "PD": f"progressive disease (progression): volume change >= {PD_VOLUME_CHANGE * 100:+.1f} %, or tumour where "
          "the baseline had none",
    "NE": "not evaluable: no tumour at baseline and none at follow-up",
}


def volume_change(baseline_ml: float, followup_ml: float, interval_days: float | None = None, *,
                  new_lesions: bool = False, new_lesion_is_pd: bool = True) -> dict[str, Any]:
    """Change between two volumes of one structure (the numbers of every response table).

    Args:
        baseline_ml, followup_ml: volumes in mL (>= 0).
        interval_days: days from baseline to follow-up (``None``: no doubling time).
        new_lesions, new_lesion_is_pd: see :func:`volumetric_category`.

    Returns:
        ``{"baseline_volume_ml", "followup_volume_ml", "change_ml", "change_percent",
        "vdt_days", "category"}`` (mL, %, days; ``change_percent`` NaN for a 0 mL baseline).
    """
    b, f = float(baseline_ml), float(followup_ml)
    return {"baseline_volume_ml": b, "followup_volume_ml": f, "change_ml": f - b, "change_percent": _pct(b, f),
            "vdt_days": volume_doubling_time_days(b, f, interval_days),
            "category": volumetric_category(b, f, new_lesions=new_lesions, new_lesion_is_pd=new_lesion_is_pd)}


#: Columns of :func:`compare_volume_rows` (meaning and unit).
SERIES_COLUMNS: dict[str, str] = {
    "structure": "label (one voxel class) or region (a named union of labels, e.g. whole tumour)",
    "label": "label value; for a region the labels it unites joined by '+', e.g. '1+2+4'",
    "label_name": "structure name (label table, model, or region name)",
    "baseline_voxel_count": "voxels of the structure at baseline (its own grid)",
    "followup_voxel_count": "voxels of the structure at follow-up (its own grid)",
    "baseline_voxel_volume_mm3": "volume of one baseline voxel in mm^3 (product of its spacings)",
    "followup_voxel_volume_mm3": "volume of one follow-up voxel in mm^3",
    "baseline_volume_ml": "volume at baseline in mL = voxel count x voxel volume (mm^3) / 1000, on the baseline grid",
    "followup_volume_ml": "volume at follow-up in mL, on the follow-up grid (nothing resampled)",
    "change_ml": RESPONSE_COLUMNS["change_ml"],
    "change_percent": RESPONSE_COLUMNS["change_percent"] + "; empty when the baseline volume is 0",
    "vdt_days": (RESPONSE_COLUMNS["vdt_days"] + "; negative = halving time, inf when unchanged, empty when a volume "
                 "is 0 or no interval is known"),
    "category": (f"volumetric RECIST-like category from the structure's total volume: PR <= "
                 f"{PR_VOLUME_CHANGE * 100:.1f} % ((1{PR_DIAMETER_CHANGE:+.2f})^3 - 1), PD >= "
                 f"{PD_VOLUME_CHANGE * 100:+.1f} % ((1{PD_DIAMETER_CHANGE:+.2f})^3 - 1) or tumour where the baseline "
                 "had none, CR all gone, NE none at either time point, else SD"),
    "baseline_volume_low_ml": ("lower end of the baseline volume's sensitivity band in mL (model-segmented time "
                               "points, label rows only; not a confidence interval: docs/volume_intervals.md)"),
    "baseline_volume_high_ml": "upper end of the baseline volume's sensitivity band in mL",
    "followup_volume_low_ml": "lower end of the follow-up volume's sensitivity band in mL",
    "followup_volume_high_ml": "upper end of the follow-up volume's sensitivity band in mL",
}


def _structure_key(row: Mapping[str, Any]) -> tuple[str, Any]:
    """``("region", name)`` for a region row (its label a string such as ``"1+2+4"``),
    ``("label", value)`` for a label row."""
    if isinstance(row.get("label"), str):
        return "region", str(row["label_name"])
    return "label", int(row["label"])


def _band(row: Mapping[str, Any] | None, key: str) -> float | None:
    v = None if row is None else row.get(key)
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else float(v)


def compare_volume_rows(baseline: Sequence[Mapping[str, Any]], followup: Sequence[Mapping[str, Any]], *,
                        interval_days: float | None = None) -> list[dict[str, Any]]:
    """Compare two time points' volume rows, structure by structure.

    Args:
        baseline, followup: volume rows of one 3D label map each, as
            :func:`medcnn.measure.label_volumes` (``regions=``) or
            :func:`medcnn.batch.pipeline.volume_rows` make them, each on its own grid: label
            rows (``label`` an int) are matched by label value, region rows (``label`` a
            string such as ``"1+2+4"``) by region name. Rows may carry the sensitivity band
            of a prediction (``volume_low_ml`` / ``volume_high_ml``, mL).
        interval_days: days from baseline to follow-up (for the doubling time).

    Returns:
        One dict per structure, in the baseline's row order, with the columns of
        :data:`SERIES_COLUMNS` (category without the new-lesion rule: from total volumes).

    Raises:
        ConfigError: the two lists do not hold the same structures.
    """
    b_rows = {_structure_key(r): r for r in baseline}
    f_rows = {_structure_key(r): r for r in followup}
    if list(b_rows) != list(f_rows):
        only_b = [k[1] for k in b_rows if k not in f_rows]
        only_f = [k[1] for k in f_rows if k not in b_rows]
        raise ConfigError.expected("the same labels and regions at both time points",
                                   f"only at baseline {only_b}, only at follow-up {only_f}")
    out = []
    for key, rb in b_rows.items():
        rf = f_rows[key]
        row: dict[str, Any] = {
            "structure": key[0], "label": rb["label"], "label_name": rb["label_name"],
            "baseline_voxel_count": int(rb["voxel_count"]), "followup_voxel_count": int(rf["voxel_count"]),
            "baseline_voxel_volume_mm3": float(rb["voxel_volume_mm3"]),
            "followup_voxel_volume_mm3": float(rf["voxel_volume_mm3"]),
        }
        row.update(volume_change(float(rb["volume_ml"]), float(rf["volume_ml"]), interval_days))
        for when, r in (("baseline", rb), ("followup", rf)):
            row[f"{when}_volume_low_ml"] = _band(r, "volume_low_ml")
            row[f"{when}_volume_high_ml"] = _band(r, "volume_high_ml")
        out.append({c: row[c] for c in SERIES_COLUMNS})
    return out


def _as_datetime(value: Any, what: str) -> _dt.datetime:
    if isinstance(value, _dt.datetime):
        return value
    if isinstance(value, _dt.date):
        return _dt.datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        try:
            return _dt.datetime.fromisoformat(value.strip())
        except ValueError:
            pass
        try:
            return _dt.datetime.strptime(value.strip(), "%Y%m%d")  # DICOM DA
        except ValueError:
            pass
    raise ConfigError.expected(f"{what} as a date (datetime.date or 'YYYY-MM-DD' / 'YYYYMMDD')", f"{value!r}")


def _interval_days(baseline_date: Any, followup_date: Any, interval_days: float | None) -> float | None:
    if interval_days is not None:
        if baseline_date is not None or followup_date is not None:
            raise ConfigError.expected("either dates or interval_days", "both")
        days = float(interval_days)
    elif baseline_date is None and followup_date is None:
        return None
    elif baseline_date is None or followup_date is None:
        raise ConfigError.expected("both baseline_date and followup_date", "only one of them")
    else:
        delta = _as_datetime(followup_date, "followup_date") - _as_datetime(baseline_date, "baseline_date")
        days = delta.total_seconds() / 86400.0
    if not np.isfinite(days) or days <= 0:
        raise ConfigError.expected("a follow-up after the baseline (interval > 0 days)", f"{days} days")
    return days


def _pct(b: float, f: float) -> float:
    return (f - b) / b * 100.0 if b > 0 else math.nan


@dataclass
class ResponseResult:
    """Tumour response tables.

    Attributes:
        labels: one row per label (volumes mL, change, VDT days, category).
        lesions: one row per matched / new / disappeared lesion.
        overall: totals over the analysed labels and the overall category.
    """

    labels: pd.DataFrame
    lesions: pd.DataFrame
    overall: dict[str, Any] = field(default_factory=dict)

    @property
    def category(self) -> str:
        return str(self.overall["category"])

    def to_frame(self) -> pd.DataFrame:
        """The per-label table."""
        return self.labels

    def to_dict(self) -> dict[str, Any]:
        return {"overall": self.overall, "labels": self.labels.to_dict(orient="records"),
                "lesions": self.lesions.to_dict(orient="records"), "methods": dict(RESPONSE_COLUMNS)}


def _match(base: pd.DataFrame, follow: pd.DataFrame, max_distance_mm: float, per_label: bool):
    """Greedy nearest-centroid matching; returns list of (i_base, j_follow, distance)."""
    if len(base) == 0 or len(follow) == 0:
        return []
    cols = ["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]
    a, b = base[cols].to_numpy(float), follow[cols].to_numpy(float)
    dist = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    if per_label:
        dist[base["label"].to_numpy()[:, None] != follow["label"].to_numpy()[None, :]] = np.inf
    order = np.argsort(dist, axis=None, kind="stable")
    used_a, used_b, pairs = set(), set(), []
    for flat in order.tolist():
        i, j = divmod(flat, dist.shape[1])
        d = dist[i, j]
        if not d <= max_distance_mm:
            break
        if i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        pairs.append((i, j, float(d)))
    return pairs


def tumour_response(
    baseline: Volume,
    followup: Volume,
    *,
    labels: Sequence[int] | int | None = None,
    label_names: Mapping[Any, Any] | None = None,
    baseline_date: Any = None,
    followup_date: Any = None,
    interval_days: float | None = None,
    connectivity: int = 26,
    per_label: bool = True,
    min_volume_ml: float = 0.0,
    max_match_distance_mm: float = 20.0,
    new_lesion_is_pd: bool = True,
) -> ResponseResult:
    """Compare a baseline and a follow-up label map of one patient.

    Args:
        baseline, followup: 3D label maps (I, J, K); grids may differ.
        labels: tumour label value(s) to analyse (default: every non-zero label in either).
        label_names: ``{value: name}`` table.
        baseline_date, followup_date: ``datetime.date``/``datetime`` or ISO / DICOM
            ``YYYYMMDD`` strings; or give ``interval_days`` instead. Needed for VDT only.
        connectivity, per_label, min_volume_ml: lesion definition (:func:`measure_lesions`).
        max_match_distance_mm: largest centroid distance (mm) for two lesions to match.
        new_lesion_is_pd: a new follow-up lesion makes the category PD (RECIST 1.1).

    Returns:
        :class:`ResponseResult`.
    """
    names = as_label_names(label_names)
    days = _interval_days(baseline_date, followup_date, interval_days)
    if not (max_match_distance_mm >= 0):
        raise ConfigError.expected("max_match_distance_mm >= 0", f"{max_match_distance_mm!r}")
    vb = label_volumes(baseline)
    vf = label_volumes(followup)
    if labels is None:
        chosen = sorted(set(vb["label"].tolist()) | set(vf["label"].tolist()))
    else:
        chosen = sorted({int(v) for v in np.atleast_1d(labels)})
    bvol = dict(zip(vb["label"].tolist(), vb["volume_ml"].tolist()))
    fvol = dict(zip(vf["label"].tolist(), vf["volume_ml"].tolist()))

    kw = dict(labels=chosen, per_label=per_label, connectivity=connectivity, min_volume_ml=min_volume_ml,
              label_names=names)
    lb = measure_lesions(baseline, **kw)
    lf = measure_lesions(followup, **kw)
    pairs = _match(lb, lf, float(max_match_distance_mm), per_label)
    rows = []
    matched_b = {i for i, _, _ in pairs}
    matched_f = {j for _, j, _ in pairs}

    def _row(status, i, j, d):
        rb = lb.iloc[i] if i is not None else None
        rf = lf.iloc[j] if j is not None else None
        b = float(rb["volume_ml"]) if rb is not None else 0.0
        f = float(rf["volume_ml"]) if rf is not None else 0.0
        lab = int((rb if rb is not None else rf)["label"])
        return {
            "label": lab, "label_name": label_name(names, lab), "status": status,
            "baseline_lesion_id": int(rb["lesion_id"]) if rb is not None else pd.NA,
            "followup_lesion_id": int(rf["lesion_id"]) if rf is not None else pd.NA,
            "match_distance_mm": d, "baseline_volume_ml": b, "followup_volume_ml": f, "change_ml": f - b,
            "change_percent": _pct(b, f), "vdt_days": volume_doubling_time_days(b, f, days),
            "category": volumetric_category(b, f, new_lesions=status == "new", new_lesion_is_pd=new_lesion_is_pd),
        }

    for i, j, d in pairs:
        rows.append(_row("matched", i, j, d))
    rows += [_row("disappeared", i, None, math.nan) for i in range(len(lb)) if i not in matched_b]
    rows += [_row("new", None, j, math.nan) for j in range(len(lf)) if j not in matched_f]
    lesion_cols = ["label", "label_name", "status", "baseline_lesion_id", "followup_lesion_id", "match_distance_mm",
                   "baseline_volume_ml", "followup_volume_ml", "change_ml", "change_percent", "vdt_days", "category"]
    lesions = pd.DataFrame(rows, columns=lesion_cols)
    lesions.attrs["columns"] = {c: RESPONSE_COLUMNS[c] for c in lesion_cols}

    new_by_label = {lab: bool(((lesions["label"] == lab) & (lesions["status"] == "new")).any()) for lab in chosen}
    label_rows = []
    for lab in chosen:
        label_rows.append({"label": lab, "label_name": label_name(names, lab), **volume_change(
            bvol.get(lab, 0.0), fvol.get(lab, 0.0), days, new_lesions=new_by_label[lab] if per_label else False,
            new_lesion_is_pd=new_lesion_is_pd)})
    label_cols = ["label", "label_name", "baseline_volume_ml", "followup_volume_ml", "change_ml", "change_percent",
                  "vdt_days", "category"]
    table = pd.DataFrame(label_rows, columns=label_cols)
    table.attrs["columns"] = {c: RESPONSE_COLUMNS[c] for c in label_cols}

    tb = float(sum(bvol.get(lab, 0.0) for lab in chosen))
    tf = float(sum(fvol.get(lab, 0.0) for lab in chosen))
    n_new = int((lesions["status"] == "new").sum())
    overall = {
        "labels": chosen,
        "baseline_volume_ml": tb, "followup_volume_ml": tf, "change_ml": tf - tb,
        "change_percent": _pct(tb, tf), "interval_days": days, "vdt_days": volume_doubling_time_days(tb, tf, days),
        "n_matched": len(pairs), "n_new": n_new, "n_disappeared": int((lesions["status"] == "disappeared").sum()),
        "category": volumetric_category(tb, tf, new_lesions=n_new > 0, new_lesion_is_pd=new_lesion_is_pd),
        "pr_volume_change_percent": PR_VOLUME_CHANGE * 100, "pd_volume_change_percent": PD_VOLUME_CHANGE * 100,
        "max_match_distance_mm": float(max_match_distance_mm), "connectivity": connectivity,
        "method": RESPONSE_COLUMNS["category"],
    }
    return ResponseResult(labels=table, lesions=lesions, overall=overall)
