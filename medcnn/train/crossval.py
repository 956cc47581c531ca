"""Cross-validation summaries: the held-out evaluations of k fold models in one table.

Each fold's bundle records its held-out evaluation (``provenance.validation``, written by
:func:`medcnn.train.loop.train`; see :func:`medcnn.train.evaluate.evaluate_bundle`) and,
when the config has an external test set, ``validation["external"]``. This module pools
them the way papers report cross-validation:

* per fold: mean Dice per structure over the held-out cases (ED and ES pooled), mean
  absolute LV and RV EF error (points) over the held-out patients;
* the mean over folds of those numbers (the headline figure) and their range;
* per phase (ED / ES) and per stratum (e.g. ACDC pathology, the case field ``group``),
  pooled over every held-out case of every fold (each case is held out exactly once);
* the external test set: per patient, the EF error of every fold model and their mean.

Inputs are plain JSON-able dicts; nothing here imports torch.

The per-fold, per-case results are kept as a small CSV (:func:`write_fold_cases_csv`, one
row per fold and evaluated case: Dice and volumes per structure, phase, stratum) from which
:func:`read_fold_cases_csv` rebuilds the fold evaluations, so the published tables can be
re-derived without the fold models (``tests/test_crossval_tables.py``).

Region models (BraTS-style whole tumour / tumour core / enhancing tumour) keep one row per
fold, held-out case and region (:func:`write_region_cases_csv`: Dice, HD95, predicted and
reference volume, volume error) and :func:`summarise_region_folds` /
:func:`region_crossval_markdown` derive their tables from those rows.
"""

from __future__ import annotations

import csv
import json
import math
from os import PathLike
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["volume_errors", "summarise_folds", "crossval_markdown", "write_fold_cases_csv", "read_fold_cases_csv",
           "REGION_CASE_FIELDS", "write_region_cases_csv", "read_region_cases_csv", "summarise_region_folds",
           "region_crossval_markdown"]


def _mean(values: Sequence[float]) -> float | None:
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return float(np.mean(vals)) if vals else None


def _dice_by(cases: Sequence[Mapping[str, Any]], key) -> dict[str, dict[str, float | None]]:
    """Mean Dice per structure for each value of ``key(case)``."""
    out: dict[str, dict[str, list[float]]] = {}
    for c in cases:
        k = key(c)
        if k is None:
            continue
        for name, d in c.get("dice", {}).items():
            out.setdefault(str(k), {}).setdefault(name, []).append(d)
    return {k: {n: _mean(v) for n, v in d.items()} for k, d in sorted(out.items())}


def _ef_errors(validation: Mapping[str, Any], prefix: str) -> list[Mapping[str, Any]]:
    return list(validation.get(f"{prefix}ejection_fraction") or [])


#: Myocardial tissue density (g/mL) for the mass from the ED myocardium volume (ACDC's rule).
MYOCARDIUM_DENSITY_G_PER_ML = 1.05


def volume_errors(cases: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean absolute (and signed) volume errors of held-out cases in mL, per structure and
    phase (``"lv_blood_pool.ED"`` = LV EDV), plus the myocardial mass at ED in g
    (``"lv_myocardium_mass_g"``, volume x 1.05 g/mL). Volumes are voxel counts x voxel volume
    over the cases' evaluated slices; a structure not annotated in a case is skipped."""
    errs: dict[str, list[float]] = {}
    for c in cases:
        phase = str(c.get("meta", {}).get("phase", "")).upper()
        if phase not in ("ED", "ES"):
            continue
        for name, v in (c.get("volume_ml") or {}).items():
            ref = (c.get("ref_volume_ml") or {}).get(name)
            if ref is None or v is None:
                continue
            errs.setdefault(f"{name}.{phase}", []).append(float(v) - float(ref))
            if name == "lv_myocardium" and phase == "ED":
                errs.setdefault("lv_myocardium_mass_g", []).append(MYOCARDIUM_DENSITY_G_PER_ML * (float(v) - float(ref)))
    return {k: {"n": len(v), "mean_abs_error": float(np.mean(np.abs(v))), "mean_error": float(np.mean(v)),
                "unit": "g" if k.endswith("_g") else "mL"} for k, v in sorted(errs.items())}


def summarise_folds(validations: Sequence[Mapping[str, Any]], *, stratum_field: str | None = "group",
                    kind: str = "cross-validation") -> dict[str, Any]:
    """Pool the held-out evaluations of the fold models (fold ``i`` = ``validations[i]``).

    Returns a JSON-able dict with ``folds``, ``mean_over_folds``, ``range_over_folds``,
    ``by_phase``, ``by_stratum`` (when ``stratum_field`` is a case ``meta`` field) and
    ``external`` (when the folds carry ``validation["external"]``). Dice values are
    fractions, EF errors absolute percentage points.
    """
    folds, all_cases, ef_all = [], [], {"": [], "rv_": []}
    for i, v in enumerate(validations):
        row: dict[str, Any] = {"fold": i, "n_cases": int(v.get("n_cases", len(v.get("cases", [])))),
                               "dice": dict(v.get("mean_dice", {}))}
        for prefix in ("", "rv_"):
            key = f"mean_abs_{prefix}ef_error_points"
            row[key] = v.get(key)
            ef_all[prefix] += _ef_errors(v, prefix)
        folds.append(row)
        all_cases += list(v.get("cases", []))
    structures = sorted({n for f in folds for n in f["dice"]})
    metrics = [f"dice.{n}" for n in structures] + ["mean_abs_ef_error_points", "mean_abs_rv_ef_error_points"]

    def value(f: Mapping[str, Any], m: str):
        return f["dice"].get(m[5:]) if m.startswith("dice.") else f.get(m)

    mean_over, range_over = {}, {}
    for m in metrics:
        vals = [value(f, m) for f in folds if value(f, m) is not None]
        if vals:
            mean_over[m] = float(np.mean(vals))
            range_over[m] = [float(min(vals)), float(max(vals))]
    summary: dict[str, Any] = {
        "kind": kind, "n_folds": len(folds), "folds": folds, "mean_over_folds": mean_over, "range_over_folds": range_over,
        "by_phase": _dice_by(all_cases, lambda c: str(c.get("meta", {}).get("phase", "")).upper() or None),
        "volume_errors": volume_errors(all_cases),
        "rules": "Dice: mean over a fold's held-out cases (ED and ES pooled), then mean over folds; EF error: "
                 "|predicted - reference| in points per held-out patient (volumes from voxel counts), mean per "
                 "fold, then mean over folds; by_phase / by_stratum pool every held-out case once; volume "
                 "errors: predicted - reference mL per held-out case (ED = EDV, ES = ESV), myocardial mass = "
                 f"ED myocardium x {MYOCARDIUM_DENSITY_G_PER_ML} g/mL, pooled over every held-out case once."}
    if stratum_field:
        patient_stratum = {c.get("group"): c.get("meta", {}).get(stratum_field) for c in all_cases}
        if any(v is not None for v in patient_stratum.values()):
            by = _dice_by(all_cases, lambda c: c.get("meta", {}).get(stratum_field))
            strata = {k: {"dice": d} for k, d in by.items()}
            for prefix in ("", "rv_"):
                for s in strata:
                    errs = [e["abs_error_points"] for e in ef_all[prefix] if patient_stratum.get(e["patient"]) == s]
                    strata[s][f"mean_abs_{prefix}ef_error_points"] = _mean(errs)
            for s in strata:
                strata[s]["volume_errors"] = volume_errors([c for c in all_cases
                                                            if c.get("meta", {}).get(stratum_field) == s])
            summary["by_stratum"] = {"field": stratum_field, "strata": strata}
    externals = [v.get("external") for v in validations]
    if any(externals):
        per_patient: dict[str, dict[str, Any]] = {}
        for i, ext in enumerate(externals):
            for e in _ef_errors(ext or {}, ""):
                p = per_patient.setdefault(e["patient"], {"patient": e["patient"], "ref_ef_percent": e["ref_ef_percent"],
                                                          "ef_error_points_by_fold": {}})
                p["ef_error_points_by_fold"][str(i)] = float(e["ef_percent"] - e["ref_ef_percent"])
        for p in per_patient.values():
            p["mean_ef_error_points"] = _mean(list(p["ef_error_points_by_fold"].values()))
        summary["external"] = {
            "n_cases": int(np.mean([len((e or {}).get("cases", [])) for e in externals])),
            "mean_dice_over_folds": {n: _mean([(e or {}).get("mean_dice", {}).get(n) for e in externals])
                                     for n in sorted({n for e in externals for n in (e or {}).get("mean_dice", {})})},
            "lv_ef_error_per_patient": [per_patient[k] for k in sorted(per_patient)],
            "rules": "each fold model on every external case (none of them trained on these); EF error signed, "
                     "predicted - reference, points"}
        kinds = {e.get("kind", "external test") for e in externals if e}
        summary["external"]["kind"] = kinds.pop() if len(kinds) == 1 else "mixed: " + ", ".join(sorted(kinds))
    return summary


def _fmt(v: Any, points: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.1f}" if points else f"{v:.3f}"


def crossval_markdown(summary: Mapping[str, Any]) -> str:
    """Markdown tables of :func:`summarise_folds` (for docs/training.md and the notes)."""
    structures = sorted({m[5:] for m in summary["mean_over_folds"] if m.startswith("dice.")})
    head = "| fold | cases | " + " | ".join(f"{s} Dice" for s in structures) + " | LV EF abs err (points) | RV EF abs err (points) |"
    lines = [head, "|" + "---|" * (len(structures) + 4)]

    def row(label: str, n: Any, dice: Mapping[str, Any], lv: Any, rv: Any) -> str:
        return f"| {label} | {n} | " + " | ".join(_fmt(dice.get(s)) for s in structures) + \
            f" | {_fmt(lv, True)} | {_fmt(rv, True)} |"

    for f in summary["folds"]:
        lines.append(row(str(f["fold"]), f["n_cases"], f["dice"], f["mean_abs_ef_error_points"],
                         f["mean_abs_rv_ef_error_points"]))
    m = summary["mean_over_folds"]
    lines.append(row("**mean**", "", {s: m.get(f"dice.{s}") for s in structures}, m.get("mean_abs_ef_error_points"),
                     m.get("mean_abs_rv_ef_error_points")))
    lines += ["", "| phase | " + " | ".join(f"{s} Dice" for s in structures) + " |", "|" + "---|" * (len(structures) + 1)]
    for ph, d in summary["by_phase"].items():
        lines.append(f"| {ph} | " + " | ".join(_fmt(d.get(s)) for s in structures) + " |")
    if "by_stratum" in summary:
        st = summary["by_stratum"]
        lines += ["", f"| {st['field']} | " + " | ".join(f"{s} Dice" for s in structures)
                  + " | LV EF abs err | RV EF abs err |", "|" + "---|" * (len(structures) + 3)]
        for k, d in st["strata"].items():
            lines.append(f"| {k} | " + " | ".join(_fmt(d["dice"].get(s)) for s in structures)
                         + f" | {_fmt(d['mean_abs_ef_error_points'], True)} | {_fmt(d['mean_abs_rv_ef_error_points'], True)} |")
    if summary.get("volume_errors"):
        keys = [k for k in ("lv_blood_pool.ED", "lv_blood_pool.ES", "rv_blood_pool.ED", "rv_blood_pool.ES",
                            "lv_myocardium_mass_g") if k in summary["volume_errors"]]
        names = {"lv_blood_pool.ED": "LV EDV (mL)", "lv_blood_pool.ES": "LV ESV (mL)", "rv_blood_pool.ED": "RV EDV (mL)",
                 "rv_blood_pool.ES": "RV ESV (mL)", "lv_myocardium_mass_g": "LV mass (g)"}
        lines += ["", "Mean absolute volume error (mean signed error, predicted - reference, in brackets):", "",
                  "| cases | " + " | ".join(names[k] for k in keys) + " |", "|" + "---|" * (len(keys) + 1)]

        def vrow(label: str, ve: Mapping[str, Any]) -> str:
            return f"| {label} | " + " | ".join(
                f"{ve[k]['mean_abs_error']:.1f} ({ve[k]['mean_error']:+.1f})" if k in ve else "–" for k in keys) + " |"

        lines.append(vrow("all", summary["volume_errors"]))
        for k, d in summary.get("by_stratum", {}).get("strata", {}).items():
            lines.append(vrow(str(k), d.get("volume_errors", {})))
    if "external" in summary:
        ext = summary["external"]
        folds = sorted({k for p in ext["lv_ef_error_per_patient"] for k in p["ef_error_points_by_fold"]}, key=int)
        kind = ext.get("kind", "external test")
        title = "External test" if kind == "external test" else f"Second dataset ({kind} figure, not an external test)"
        lines += ["", f"{title}, mean Dice over the fold models: "
                  + ", ".join(f"{k} {_fmt(v)}" for k, v in ext["mean_dice_over_folds"].items()), "",
                  "| patient | reference LV EF (%) | " + " | ".join(f"fold {k}" for k in folds) + " | mean |",
                  "|" + "---|" * (len(folds) + 3)]
        for p in ext["lv_ef_error_per_patient"]:
            lines.append(f"| {p['patient']} | {p['ref_ef_percent']:.1f} | "
                         + " | ".join(f"{p['ef_error_points_by_fold'].get(k, float('nan')):+.1f}" for k in folds)
                         + f" | {p['mean_ef_error_points']:+.1f} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- per-case results
_CASE_FIELDS = ("fold", "evaluation", "kind", "case_id", "patient", "phase", "meta")
_PER_STRUCTURE = ("dice", "volume_ml", "ref_volume_ml")


def _cell(v: Any) -> str:
    return "" if v is None else repr(float(v))


def write_fold_cases_csv(path: str | PathLike[str], validations: Sequence[Mapping[str, Any]], *,
                         test_kind: str = "cross-validation") -> Path:
    """One row per fold and evaluated case of the fold models' evaluations (``validations[i]``
    = fold ``i``'s ``provenance.validation``): ``evaluation`` is ``test`` (the held-out fold)
    or ``external`` (``validation["external"]``), ``kind`` the figure kind (``cross-validation``
    for the held-out fold, the external evaluation's own kind otherwise); per structure ``dice_<s>``,
    ``volume_ml_<s>``, ``ref_volume_ml_<s>`` (empty: not annotated in that case); floats as
    Python ``repr`` so that reading back is exact. ``test_kind``: the kind of the held-out rows'
    figure (``selection`` for a fixed split whose held-out cases also chose the recipe)."""
    rows, structures = [], []
    for fold, v in enumerate(validations):
        for evaluation, ev in (("test", v), ("external", v.get("external") or {})):
            kind = test_kind if evaluation == "test" else ev.get("kind", "external test")
            for c in ev.get("cases") or []:
                for name in c.get("dice", {}):
                    if name not in structures:
                        structures.append(name)
                rows.append((fold, evaluation, kind, c))
    header = list(_CASE_FIELDS) + [f"{k}_{n}" for n in structures for k in _PER_STRUCTURE] + \
        ["foreground_dice", "foreground_volume_error_percent"]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        for fold, evaluation, kind, c in rows:
            meta = dict(c.get("meta") or {})
            cells = [fold, evaluation, kind, c["case_id"], c.get("group", ""), meta.get("phase", ""),
                     json.dumps(meta, sort_keys=True)]
            for n in structures:
                cells += [_cell(c.get(k, {}).get(n)) for k in _PER_STRUCTURE]
            cells += [_cell(c.get("foreground_dice")), _cell(c.get("foreground_volume_error_percent"))]
            w.writerow(cells)
    return out


def read_fold_cases_csv(path: str | PathLike[str]) -> list[dict[str, Any]]:
    """The fold evaluations back from :func:`write_fold_cases_csv` (fold ``i`` at index ``i``,
    its external evaluation under ``"external"``), summarised as
    :func:`medcnn.train.evaluate.summarise_cases` does: feed them to :func:`summarise_folds`.

    Raises:
        ConfigError: not such a CSV (missing columns, a fold without test cases).
    """
    from medcnn.errors import ConfigError
    from medcnn.train.evaluate import summarise_cases

    p = Path(path)
    with p.open(newline="") as fh:
        reader = csv.DictReader(fh)
        header = list(reader.fieldnames or [])
        rows = list(reader)
    if header[:len(_CASE_FIELDS)] != list(_CASE_FIELDS):
        raise ConfigError.expected(f"a per-case cross-validation CSV with columns {', '.join(_CASE_FIELDS)}, ...",
                                   ", ".join(header[:len(_CASE_FIELDS)]) or "no header", path=p)
    structures = [h[len("dice_"):] for h in header if h.startswith("dice_")]
    lv = "lv_blood_pool" if "lv_blood_pool" in structures else (structures[0] if structures else None)
    rv = "rv_blood_pool" if "rv_blood_pool" in structures else None
    by: dict[int, dict[str, list[dict[str, Any]]]] = {}
    kinds: dict[tuple[int, str], set[str]] = {}
    for r in rows:
        kinds.setdefault((int(r["fold"]), r["evaluation"]), set()).add(r["kind"])
        case: dict[str, Any] = {"case_id": r["case_id"], "group": r["patient"], "meta": json.loads(r["meta"] or "{}")}
        for k in _PER_STRUCTURE:
            case[k] = {n: float(r[f"{k}_{n}"]) for n in structures if r.get(f"{k}_{n}", "") != ""}
        for k in ("foreground_dice", "foreground_volume_error_percent"):
            case[k] = float(r[k]) if r.get(k, "") != "" else None
        by.setdefault(int(r["fold"]), {}).setdefault(r["evaluation"], []).append(case)
    out = []
    for fold in range(max(by) + 1 if by else 0):
        if not by.get(fold, {}).get("test"):
            raise ConfigError.expected(f"test cases for every fold 0..{max(by)}", f"none for fold {fold}", path=p)
        v = summarise_cases(by[fold]["test"], structures=structures, lv=lv, rv=rv)
        if by[fold].get("external"):
            v["external"] = summarise_cases(by[fold]["external"], structures=structures, lv=lv, rv=rv)
            (v["external"]["kind"],) = kinds[(fold, "external")] if len(kinds[(fold, "external")]) == 1 else \
                ("mixed: " + ", ".join(sorted(kinds[(fold, "external")])),)
        out.append(v)
    return out


# ---------------------------------------------------------------------------- region models (BraTS-style)
#: Columns of the per-case region CSV (one row per fold, held-out case and region).
REGION_CASE_FIELDS = ("fold", "kind", "case_id", "patient", "region", "dice", "hd95_mm", "pred_volume_ml",
                      "ref_volume_ml", "volume_error_percent")


def write_region_cases_csv(path: str | PathLike[str], rows: Sequence[Mapping[str, Any]]) -> Path:
    """One row per fold, held-out case and region (columns :data:`REGION_CASE_FIELDS`; the
    volume error is signed, ``100 (pred - ref) / ref``, empty when the reference region is
    empty). Floats as Python ``repr`` so that reading back is exact."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(REGION_CASE_FIELDS)
        for r in rows:
            w.writerow([int(r["fold"]), r["kind"], r["case_id"], r["patient"], r["region"]]
                       + [_cell(r.get(k)) for k in REGION_CASE_FIELDS[5:]])
    return out


def read_region_cases_csv(path: str | PathLike[str]) -> list[dict[str, Any]]:
    """The rows of :func:`write_region_cases_csv` back (numbers as floats, ``None`` for empty).

    Raises:
        ConfigError: not such a CSV.
    """
    from medcnn.errors import ConfigError

    p = Path(path)
    with p.open(newline="") as fh:
        reader = csv.DictReader(fh)
        header = tuple(reader.fieldnames or ())
        raw = list(reader)
    if header != REGION_CASE_FIELDS:
        raise ConfigError.expected(f"a per-case region CSV with columns {', '.join(REGION_CASE_FIELDS)}",
                                   ", ".join(header) or "no header", path=p)
    rows = []
    for r in raw:
        row: dict[str, Any] = {k: r[k] for k in REGION_CASE_FIELDS[1:5]}
        row["fold"] = int(r["fold"])
        row.update({k: (float(r[k]) if r[k] != "" else None) for k in REGION_CASE_FIELDS[5:]})
        rows.append(row)
    return rows


def summarise_region_folds(rows: Sequence[Mapping[str, Any]], *, kind: str = "cross-validation") -> dict[str, Any]:
    """Cross-validation figures of a region model from its per-case rows (each held-out case
    once): per fold and region the mean Dice, mean HD95 (mm) and mean absolute volume error
    (%) over the fold's held-out cases; the mean over folds and its range; and the pooled mean
    and median over every held-out case. A metric missing in a row (empty reference region:
    no volume error) is left out of its means. JSON-able dict."""
    regions: list[str] = []
    for r in rows:
        if r["region"] not in regions:
            regions.append(r["region"])
    metrics = {"dice": lambda r: r.get("dice"), "hd95_mm": lambda r: r.get("hd95_mm"),
               "abs_volume_error_percent": lambda r: None if r.get("volume_error_percent") is None
               else abs(float(r["volume_error_percent"]))}

    def stats(sel: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float | None]]:
        return {reg: {m: _mean([f(r) for r in sel if r["region"] == reg]) for m, f in metrics.items()}
                for reg in regions}

    folds = []
    for k in sorted({int(r["fold"]) for r in rows}):
        sel = [r for r in rows if int(r["fold"]) == k]
        folds.append({"fold": k, "n_cases": len({r["case_id"] for r in sel}),
                      "cases": sorted({r["case_id"] for r in sel}), **stats(sel)})
    mean_over, range_over = {}, {}
    for reg in regions:
        for m in metrics:
            vals = [f[reg][m] for f in folds if f[reg][m] is not None]
            if vals:
                mean_over[f"{reg}.{m}"] = float(np.mean(vals))
                range_over[f"{reg}.{m}"] = [float(min(vals)), float(max(vals))]
    pooled = stats(rows)
    for reg in regions:
        for m, f in metrics.items():
            vals = [f(r) for r in rows if r["region"] == reg and f(r) is not None and not math.isnan(f(r))]
            pooled[reg][f"median_{m}"] = float(np.median(vals)) if vals else None
    kinds = sorted({r["kind"] for r in rows})
    return {"kind": kind if kinds in ([], [kind]) else "mixed: " + ", ".join(kinds), "n_folds": len(folds),
            "n_cases": len({r["case_id"] for r in rows}), "regions": regions, "folds": folds,
            "mean_over_folds": mean_over, "range_over_folds": range_over, "pooled": pooled,
            "rules": "per region: Dice and HD95 (mm) as medcnn validate computes them (BraTS rule for an empty region), "
                     "volume error |pred - ref| / ref in % (cases with an empty reference region left out); mean "
                     "over a fold's held-out cases, then mean over folds (range = the folds' extremes); pooled = "
                     "every held-out case once"}


def region_crossval_markdown(summary: Mapping[str, Any]) -> str:
    """Markdown table of :func:`summarise_region_folds`: one row per fold, the mean over
    folds and the pooled median; Dice, HD95 (mm) and |volume error| (%) per region."""
    regions = list(summary["regions"])
    cols = [(reg, m) for reg in regions for m in ("dice", "hd95_mm", "abs_volume_error_percent")]
    label = {"dice": "Dice", "hd95_mm": "HD95 mm", "abs_volume_error_percent": "|vol err| %"}
    short = {"whole_tumour": "WT", "tumour_core": "TC", "enhancing_tumour": "ET"}
    lines = ["| fold | held-out cases | " + " | ".join(f"{short.get(reg, reg)} {label[m]}" for reg, m in cols) + " |",
             "|" + "---|" * (len(cols) + 2)]

    def cell(v: Any, m: str) -> str:
        return _fmt(v, points=m != "dice")

    for f in summary["folds"]:
        lines.append(f"| {f['fold']} | {', '.join(f['cases'])} | "
                     + " | ".join(cell(f[reg][m], m) for reg, m in cols) + " |")
    mo = summary["mean_over_folds"]
    lines.append("| **mean over folds** | | " + " | ".join(cell(mo.get(f"{reg}.{m}"), m) for reg, m in cols) + " |")
    po = summary["pooled"]
    lines.append("| median over cases | | " + " | ".join(cell(po[reg].get(f"median_{m}"), m) for reg, m in cols) + " |")
    return "\n".join(lines) + "\n"
