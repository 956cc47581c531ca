"""ACDC-style evaluation tables (Bernard et al., IEEE TMI 37(11):2514-2525, 2018).

From the per-case rows of :func:`medcnn.metrics.evaluate.evaluate_case` and, per case, the
``subject``, ``phase`` (``ED`` / ``ES``) and optional ``group`` (e.g. pathology):

* :func:`acdc_geometric_table` -- per group, structure (LV blood pool, RV blood pool,
  LV myocardium) and phase: mean and SD over cases of Dice, HD95 and HD (mm);
* :func:`acdc_subject_indices` -- per subject the clinical indices of prediction and
  reference: LV EDV, LV ESV, LV EF, RV EDV, RV ESV, RV EF and myocardial mass;
* :func:`acdc_clinical_table` -- per group and index: Pearson correlation, bias (mean of
  predicted - reference), SD of the differences and 95 % limits of agreement (bias ± 1.96
  SD), from :func:`medcnn.metrics.agreement.paired_agreement`.

Definitions (:data:`ACDC_DEFINITIONS`): volumes in mL are the voxel counts on the reference
grid (``pred_volume_ml`` / ``ref_volume_ml`` of the rows); EF = (EDV - ESV) / EDV x 100;
myocardial mass = myocardium volume at ED x 1.05 g/mL. SDs use ddof = 1. HD95 is medcnn's
robust Hausdorff distance (:data:`medcnn.metrics.evaluate.DEFINITIONS`: the larger of the
two directed 95th percentiles of surfel-to-surface distances, surfels weighted by area, as
DeepMind ``surface-distance``); HD is its maximum. The ACDC paper reports Dice and HD.

A structure that no map carries (e.g. no RV label) is left out of the geometric table and
its indices are NaN in the clinical table, with a line in the ``notes``; never zeros.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from medcnn.metrics.agreement import MIN_AGREEMENT_N, paired_agreement, summarize

__all__ = [
    "AcdcStructures",
    "acdc_geometric_table",
    "acdc_subject_indices",
    "acdc_clinical_table",
    "acdc_evaluation",
    "acdc_columns",
    "diff_unit",
    "ACDC_INDICES",
    "ACDC_DEFINITIONS",
    "ALL_GROUPS",
]

#: Group name of the rows pooled over every subject.
ALL_GROUPS = "all"

#: Clinical index -> (unit, structure it comes from, meaning).
ACDC_INDICES: dict[str, tuple[str, str, str]] = {
    "lv_edv_ml": ("mL", "lv", "LV end-diastolic volume (LV blood-pool voxel count x voxel volume at ED)"),
    "lv_esv_ml": ("mL", "lv", "LV end-systolic volume"),
    "lv_ef_percent": ("%", "lv", "LV ejection fraction = (EDV - ESV) / EDV x 100"),
    "rv_edv_ml": ("mL", "rv", "RV end-diastolic volume (RV blood-pool voxel count x voxel volume at ED)"),
    "rv_esv_ml": ("mL", "rv", "RV end-systolic volume"),
    "rv_ef_percent": ("%", "rv", "RV ejection fraction = (EDV - ESV) / EDV x 100"),
    "myo_mass_g": ("g", "myo", "LV myocardial mass = myocardium volume at ED (mL) x density (g/mL)"),
}

ACDC_DEFINITIONS: dict[str, str] = {
    "dice": "Dice 2|P∩R|/(|P|+|R|) per case; mean and SD (ddof=1) over the cases of a structure and phase",
    "hd95_mm": "robust Hausdorff distance at the chosen percentile (default 95): the larger of the two directed "
               "percentiles of surfel-to-surface distances, surfels weighted by area (DeepMind surface-distance "
               "compute_robust_hausdorff), in mm of the reference grid",
    "hd_mm": "Hausdorff distance (maximum surfel-to-surface distance, both directions), mm",
    "pearson_r": "Pearson correlation of predicted and reference index over subjects",
    "bias": "mean of (predicted - reference), in diff_unit: the index's unit, percentage points for EF",
    "withheld": "why r and the limits of agreement are empty: fewer than MIN_AGREEMENT_N (5) subjects",
    "sd_diff": "SD (ddof=1) of (predicted - reference), in the index's unit",
    "loa_lower / loa_upper": "95 % limits of agreement = bias -/+ 1.96 x sd_diff (Bland & Altman 1986)",
    "volumes": "voxel count x voxel volume of the reference grid (mL); only as right as the header spacing",
    "groups": f"'{ALL_GROUPS}' pools every subject; the other rows are one group each (pairs CSV group column)",
}

_STRUCTURES = (("lv", "LV"), ("rv", "RV"), ("myo", "Myo"))


@dataclass(frozen=True)
class AcdcStructures:
    """Which evaluated structure (``label`` of the rows) is the LV blood pool, the LV
    myocardium and the RV blood pool; ``None`` = not evaluated."""

    lv: str | None = "1"
    myo: str | None = "2"
    rv: str | None = "3"

    def items(self) -> list[tuple[str, str, str | None]]:
        """``[(key, display name, row label)]`` in ACDC order (LV, RV, Myo)."""
        return [(key, name, getattr(self, key)) for key, name in _STRUCTURES]


def acdc_columns(*, percentile: float = 95.0) -> dict[str, list[str]]:
    """Column order of the ``geometric``, ``clinical`` and ``subjects`` tables."""
    hd = f"hd{percentile:g}_mm"
    sides = [f"{side}_{index}" for index in ACDC_INDICES for side in ("ref", "pred")]
    return {
        "geometric": ["group", "structure", "label", "phase", "n", "dice_mean", "dice_sd", f"{hd}_mean", f"{hd}_sd",
                      "hd_mm_mean", "hd_mm_sd"],
        "clinical": ["group", "index", "unit", "diff_unit", "n", "ref_mean", "pred_mean", "pearson_r", "bias",
                     "sd_diff", "loa_lower", "loa_upper", "withheld"],
        "subjects": ["subject", "group", *sides],
    }


def diff_unit(unit: str) -> str:
    """Unit of a difference of values in ``unit``: a difference of two percentages (EF) is in
    percentage points, not in %."""
    return "percentage points" if unit == "%" else unit


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _annotated(row: Mapping[str, Any]) -> bool:
    return row.get("annotated", True) not in (False, "False")


def _case_info(cases: Sequence[Mapping[str, Any]]) -> dict[str, tuple[str, str, str]]:
    """case_id -> (subject, phase, group) for cases with a subject and an ED/ES phase."""
    out = {}
    for c in cases:
        subj, ph = str(c.get("subject") or ""), str(c.get("phase") or "").upper()
        if subj and ph in ("ED", "ES"):
            out[str(c["case_id"])] = (subj, ph, str(c.get("group") or ""))
    return out


def _subject_groups(info: Mapping[str, tuple[str, str, str]]) -> dict[str, str]:
    groups: dict[str, str] = {}
    for subj, _, grp in info.values():
        if grp and not groups.get(subj):
            groups[subj] = grp
        groups.setdefault(subj, "")
    return groups


def _groups(subject_groups: Mapping[str, str]) -> list[str]:
    named = sorted({g for g in subject_groups.values() if g})
    return [ALL_GROUPS] + named


def acdc_geometric_table(rows: Sequence[Mapping[str, Any]], cases: Sequence[Mapping[str, Any]], *,
                         structures: AcdcStructures = AcdcStructures(),
                         percentile: float = 95.0) -> list[dict[str, Any]]:
    """Dice, HD95 and HD mean and SD per group, structure and phase.

    Args:
        rows: evaluation rows (rows with an ``error`` are skipped).
        cases: dicts with ``case_id``, ``subject``, ``phase`` and optional ``group``.
        structures: row labels of LV, Myo and RV.
        percentile: the robust Hausdorff percentile of the rows (column ``hd95_mm`` at 95).

    Returns:
        One dict per (group, structure, phase) with ``group``, ``structure``, ``label``,
        ``phase``, ``n``, ``dice_mean``, ``dice_sd``, ``hd95_mm_mean``, ``hd95_mm_sd``,
        ``hd_mm_mean``, ``hd_mm_sd`` (the HD95 columns are named after ``percentile``).
    """
    info = _case_info(cases)
    groups_of = _subject_groups(info)
    hd_key = f"hd{percentile:g}_mm"
    good = [r for r in rows if not r.get("error") and str(r.get("case_id")) in info and _annotated(r)]
    out = []
    for group in _groups(groups_of):
        for _, name, label in structures.items():
            if label is None:
                continue
            for phase in ("ED", "ES"):
                sub = [r for r in good if str(r.get("label")) == label and info[str(r["case_id"])][1] == phase
                       and (group == ALL_GROUPS or groups_of[info[str(r["case_id"])][0]] == group)]
                if not sub:
                    continue
                row: dict[str, Any] = {"group": group, "structure": name, "label": label, "phase": phase,
                                       "n": len(sub)}
                for col, key in (("dice", "dice"), (hd_key, hd_key), ("hd_mm", "hd_mm")):
                    s = summarize([_num(r.get(key)) for r in sub], n_bootstrap=0)
                    row[f"{col}_mean"], row[f"{col}_sd"] = s["mean"], s["sd"]
                out.append(row)
    return out


def acdc_subject_indices(rows: Sequence[Mapping[str, Any]], cases: Sequence[Mapping[str, Any]], *,
                         structures: AcdcStructures = AcdcStructures(),
                         myocardial_density_g_per_ml: float) -> list[dict[str, Any]]:
    """Per subject: every :data:`ACDC_INDICES` entry for prediction and reference.

    Returns:
        One dict per subject with ``subject``, ``group`` and ``pred_<index>`` /
        ``ref_<index>`` (NaN where the structure or a phase is missing).
    """
    info = _case_info(cases)
    groups_of = _subject_groups(info)
    vols: dict[tuple[str, str, str], tuple[float, float]] = {}
    for r in rows:
        cid = str(r.get("case_id"))
        if r.get("error") or cid not in info or not _annotated(r):
            continue   # a structure the reference does not annotate: its indices stay NaN, never 0
        subj, ph, _ = info[cid]
        vols[(subj, ph, str(r["label"]))] = (_num(r.get("pred_volume_ml")), _num(r.get("ref_volume_ml")))
    nan2 = (math.nan, math.nan)
    out = []
    for subj in sorted(groups_of):
        row: dict[str, Any] = {"subject": subj, "group": groups_of[subj]}
        for j, side in ((1, "ref"), (0, "pred")):
            for key in ("lv", "rv"):
                label = getattr(structures, key)
                edv, esv = (vols.get((subj, ph, label), nan2)[j] if label is not None else math.nan
                            for ph in ("ED", "ES"))
                row[f"{side}_{key}_edv_ml"] = edv
                row[f"{side}_{key}_esv_ml"] = esv
                row[f"{side}_{key}_ef_percent"] = (edv - esv) / edv * 100.0 if edv > 0 else math.nan
            myo = vols.get((subj, "ED", structures.myo), nan2)[j] if structures.myo is not None else math.nan
            row[f"{side}_myo_mass_g"] = myo * myocardial_density_g_per_ml
        out.append(row)
    return out


def acdc_clinical_table(subjects: Sequence[Mapping[str, Any]], *,
                        min_n: int = MIN_AGREEMENT_N) -> list[dict[str, Any]]:
    """Agreement of each clinical index per group (from :func:`acdc_subject_indices`).

    Returns:
        One dict per (group, index) with ``group``, ``index``, ``unit``, ``n`` (subjects
        with both values), ``ref_mean``, ``pred_mean``, ``pearson_r``, ``bias``,
        ``sd_diff``, ``loa_lower``, ``loa_upper`` (in the index's unit; the index name
        ends with it: ``_ml``, ``_percent``, ``_g``).
    """
    groups = [ALL_GROUPS] + sorted({str(s.get("group")) for s in subjects if s.get("group")})
    out = []
    for group in groups:
        sub = [s for s in subjects if group == ALL_GROUPS or s.get("group") == group]
        for index, (unit, _, _) in ACDC_INDICES.items():
            pred = [_num(s.get(f"pred_{index}")) for s in sub]
            ref = [_num(s.get(f"ref_{index}")) for s in sub]
            a = paired_agreement(pred, ref, min_n=min_n)
            if a["n"] == 0:
                continue
            pairs = [(p, r) for p, r in zip(pred, ref) if not (math.isnan(p) or math.isnan(r))]
            out.append({"group": group, "index": index, "unit": unit, "diff_unit": diff_unit(unit), "n": a["n"],
                        "ref_mean": sum(r for _, r in pairs) / len(pairs),
                        "pred_mean": sum(p for p, _ in pairs) / len(pairs),
                        "pearson_r": a["pearson_r"], "bias": a["bias"], "sd_diff": a["sd_diff"],
                        "loa_lower": a["loa_lower"], "loa_upper": a["loa_upper"], "withheld": a["withheld"]})
    return out


def acdc_evaluation(rows: Sequence[Mapping[str, Any]], cases: Sequence[Mapping[str, Any]], *,
                    structures: AcdcStructures = AcdcStructures(), percentile: float = 95.0,
                    myocardial_density_g_per_ml: float, notes: Sequence[str] = (),
                    min_n: int = MIN_AGREEMENT_N) -> dict[str, Any]:
    """The three ACDC tables plus structures, definitions and notes (JSON-able dict).

    Notes are added for structures that are not evaluated or that no evaluated row carries,
    and for subjects without both phases.
    """
    notes = list(notes)
    info = _case_info(cases)
    present = {str(r.get("label")) for r in rows if not r.get("error") and str(r.get("case_id")) in info}
    unannotated: dict[str, set[str]] = {}
    for r in rows:
        if not r.get("error") and str(r.get("case_id")) in info and not _annotated(r):
            unannotated.setdefault(str(r.get("label")), set()).add(info[str(r["case_id"])][1])
    for key, name, label in structures.items():
        if label is not None and label in unannotated:
            notes.append(f"{name} (structure {label!r}) is not annotated in the reference at "
                         f"{'/'.join(sorted(unannotated[label]))} (declared by the reference dataset): left out of "
                         "the tables there, indices that need it NaN")
    for key, name, label in structures.items():
        if label is not None and label not in present:
            notes.append(f"{name} (structure {label!r}) occurs in no evaluated ED/ES map: its rows are absent and "
                         f"its indices NaN")
    phases: dict[str, set[str]] = {}
    for subj, ph, _ in info.values():
        phases.setdefault(subj, set()).add(ph)
    lonely = sorted(s for s, p in phases.items() if p != {"ED", "ES"})
    if lonely:
        notes.append(f"{len(lonely)} subject(s) without both ED and ES cases (no EF): {', '.join(lonely[:10])}"
                     + (", ..." if len(lonely) > 10 else ""))
    subjects = acdc_subject_indices(rows, cases, structures=structures,
                                    myocardial_density_g_per_ml=myocardial_density_g_per_ml)
    defs = dict(ACDC_DEFINITIONS)
    if percentile != 95:
        defs[f"hd{percentile:g}_mm"] = defs.pop("hd95_mm")
    defs["myo_mass_g"] = (f"myocardium volume at ED (mL) x {myocardial_density_g_per_ml:g} g/mL")
    return {
        "reference": "Bernard O et al. Deep Learning Techniques for Automatic MRI Cardiac Multi-Structures "
                     "Segmentation and Diagnosis: Is the Problem Solved? IEEE TMI 37(11):2514-2525, 2018",
        "structures": {name: label for _, name, label in structures.items()},
        "myocardial_density_g_per_ml": myocardial_density_g_per_ml,
        "geometric": acdc_geometric_table(rows, cases, structures=structures, percentile=percentile),
        "clinical": acdc_clinical_table(subjects, min_n=min_n),
        "min_agreement_n": min_n,
        "subjects": subjects,
        "indices": {k: f"{v[2]} ({v[0]})" for k, v in ACDC_INDICES.items()},
        "columns": acdc_columns(percentile=percentile),
        "definitions": defs,
        "notes": notes,
    }
