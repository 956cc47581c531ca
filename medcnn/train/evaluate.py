"""Held-out evaluation of an exported bundle on the *original* image grids.

Each validation case goes through the full inference path (preprocess → sliding window →
back onto the input grid) and is compared with its reference label there:

* Dice per class, over annotated voxels only (slices the expert left uncontoured and
  classes a case does not annotate are skipped, as in training);
* volumes in mL of each class (predicted vs reference, same slices);
* cardiac: ejection fraction from the ED/ES pair of each patient (``phase`` field);
* the relative volume error of the union of foreground classes (e.g. whole tumour), over the
  classes annotated in each case;
* region models (``regions``: e.g. whole tumour = labels {1, 2, 4}): Dice and volumes of each
  region, the union of its label values in the painted label map (the model's output), in
  ``dice`` / ``mean_dice``; the voxel classes' Dice then moves to ``class_dice`` /
  ``mean_class_dice``.

Predictions come from ``medcnn.inference.Segmenter``, the shipped inference path.
"""

from __future__ import annotations

import math
from os import PathLike
from typing import Any, Mapping, Sequence

import numpy as np

from medcnn.train.datasets import Case, unlabelled_slice_mask

__all__ = ["predict_case_labels", "evaluate_bundle", "summarise_cases"]


def predict_case_labels(bundle_path: str | PathLike[str], channels: Sequence[Any], *, device: str = "cpu",
                        _cache: dict[str, Any] = {}) -> np.ndarray:
    """Label map ``(I, J, K)`` on the grid of ``channels[0]`` (Volumes, one per channel),
    predicted by ``Segmenter.from_bundle(bundle_path)`` (cached for repeated calls)."""
    from medcnn.inference import Segmenter

    from pathlib import Path

    p = Path(bundle_path)
    stamp = (p / "bundle.json").stat().st_mtime_ns if p.is_dir() else p.stat().st_mtime_ns
    key = f"{p}@{stamp}"  # a re-saved bundle (new postprocessing, new weights) is reloaded
    if key not in _cache:
        _cache.clear()
        _cache[key] = Segmenter.from_bundle(bundle_path, device=device, precision="fp32")
    pred = _cache[key].predict(list(channels))
    channels[0].geometry.check_matches(pred.labels.geometry, what="prediction vs input")
    return np.asarray(pred.labels.array)


def evaluate_bundle(bundle_path: str | PathLike[str], cases: Sequence[Case], *, labels: Mapping[str, int],
                    label_map: Mapping[int, int] | None = None, ignore_unlabelled_slices: bool = False,
                    absent_classes_unannotated: bool = False, device: str = "cpu",
                    regions: Mapping[str, Sequence[int]] | None = None) -> dict[str, Any]:
    """Metrics of the bundle on ``cases`` (on their original grids). JSON-able dict.

    ``regions`` (region models): ``{name: label values}``; Dice and volumes are then
    reported per region (see the module docstring), the label values being those of
    ``labels`` (e.g. BraTS 1, 2, 4), not consecutive class indices. A case whose outputs
    contradict the declared nesting (an inner region mostly outside its outer one: a
    half-trained network, e.g. after a few smoke-test steps) is not scored and is listed in
    ``failed_cases`` with the nesting error, instead of stopping the evaluation."""
    from medcnn.errors import InvalidLabelError
    from medcnn.io import read_labels_on_grid, read_volume

    names = {v: k for k, v in labels.items()}
    n_classes = max(labels.values()) + 1
    classes = sorted(v for v in names if v > 0) if regions else list(range(1, n_classes))
    per_case = []
    failed: list[dict[str, str]] = []
    for c in cases:
        chans = [read_volume(p, require_3d=True) for p in c.images]
        ref_vol = read_labels_on_grid(c.label, chans[0])
        ref = np.asarray(ref_vol.array).astype(np.int64)
        if label_map:
            mapped = np.zeros_like(ref)
            for raw, k in label_map.items():
                mapped[ref == int(raw)] = int(k)
            ref = mapped
        try:
            pred = predict_case_labels(bundle_path, chans, device=device).astype(np.int64)
        except InvalidLabelError as exc:
            if not regions:
                raise
            failed.append({"case_id": c.case_id, "error": str(exc)})
            continue
        ignore_slices, absent_unannotated = c.label_options(ignore_unlabelled_slices=ignore_unlabelled_slices,
                                                            absent_classes_unannotated=absent_classes_unannotated)
        valid = ~unlabelled_slice_mask(ref, ref_vol.spacing) if ignore_slices else np.ones(ref.shape, bool)
        vml = ref_vol.voxel_volume_ml
        row: dict[str, Any] = {"case_id": c.case_id, "group": c.group, "meta": dict(c.meta), "dice": {},
                               "volume_ml": {}, "ref_volume_ml": {}, "volume_ml_all_slices": {}}
        scored: list[int] = []  # classes annotated in this case: the foreground union uses only these
        for k in classes:
            annotated = (c.annotated_classes is None or k in c.annotated_classes)
            if absent_unannotated and not (ref[valid] == k).any():
                annotated = False
            p, t = (pred == k) & valid, (ref == k) & valid
            name = names.get(k, str(k))
            row["volume_ml_all_slices"][name] = float((pred == k).sum() * vml)
            if not annotated:
                continue
            scored.append(k)
            s = p.sum() + t.sum()
            row["dice"][name] = float(2 * (p & t).sum() / s) if s else float("nan")
            row["volume_ml"][name] = float(p.sum() * vml)
            row["ref_volume_ml"][name] = float(t.sum() * vml)
        # an unannotated class (e.g. myocardium on end-systolic Sunnybrook contours) must not
        # count on one side only
        fg_p, fg_t = np.isin(pred, scored) & valid, np.isin(ref, scored) & valid
        row["foreground_dice"] = float(2 * (fg_p & fg_t).sum() / max(1, fg_p.sum() + fg_t.sum()))
        row["foreground_volume_ml"] = float(fg_p.sum() * vml)
        row["foreground_ref_volume_ml"] = float(fg_t.sum() * vml)
        row["foreground_volume_error_percent"] = (100.0 * abs(row["foreground_volume_ml"] - row["foreground_ref_volume_ml"])
                                                  / row["foreground_ref_volume_ml"]) if fg_t.any() else None
        if regions:
            row["class_dice"] = row["dice"]
            row["dice"], row["volume_ml"], row["ref_volume_ml"] = {}, {}, {}
            for name, members in regions.items():
                if not all(int(v) in scored for v in members):
                    continue  # a region is scored where every one of its label values is annotated
                p, t = np.isin(pred, members) & valid, np.isin(ref, members) & valid
                s = p.sum() + t.sum()
                row["dice"][name] = float(2 * (p & t).sum() / s) if s else float("nan")
                row["volume_ml"][name] = float(p.sum() * vml)
                row["ref_volume_ml"][name] = float(t.sum() * vml)
        per_case.append(row)
    if regions:
        summary = summarise_cases(per_case, structures=list(regions), lv=None)
        summary["mean_class_dice"] = {}
        for k in classes:
            vals = [r["class_dice"][names[k]] for r in per_case
                    if names[k] in r["class_dice"] and not math.isnan(r["class_dice"][names[k]])]
            if vals:
                summary["mean_class_dice"][names[k]] = float(np.mean(vals))
        summary["regions"] = {name: [int(v) for v in members] for name, members in regions.items()}
        summary["failed_cases"] = failed
        return summary
    structures = [names.get(k, str(k)) for k in range(1, n_classes)]
    lv = "lv_blood_pool" if "lv_blood_pool" in labels else names.get(1)  # else the first class: LV-only models
    return summarise_cases(per_case, structures=structures, lv=lv,
                           rv="rv_blood_pool" if "rv_blood_pool" in labels else None)


def summarise_cases(per_case: Sequence[Mapping[str, Any]], *, structures: Sequence[str], lv: str | None,
                    rv: str | None = None) -> dict[str, Any]:
    """The evaluation summary of per-case rows (as :func:`evaluate_bundle` writes them, or as
    read back from a cross-validation CSV): mean Dice per structure (NaN skipped), mean
    foreground Dice and volume error (percent), and, for cardiac cases with ED/ES phases,
    the ejection fraction per patient from the ``lv`` (and ``rv``) blood-pool volumes in mL
    with the mean absolute EF error in points."""
    per_case = list(per_case)
    summary: dict[str, Any] = {"n_cases": len(per_case), "cases": per_case, "mean_dice": {}}
    for name in structures:
        vals = [r["dice"][name] for r in per_case if name in r["dice"] and not math.isnan(r["dice"][name])]
        if vals:
            summary["mean_dice"][name] = float(np.mean(vals))
    fg_errs = [r["foreground_volume_error_percent"] for r in per_case if r["foreground_volume_error_percent"] is not None]
    summary["mean_foreground_dice"] = float(np.mean([r["foreground_dice"] for r in per_case])) if per_case else None
    summary["mean_foreground_volume_error_percent"] = float(np.mean(fg_errs)) if fg_errs else None
    for prefix, name in (("", lv), ("rv_", rv)):
        ef = _ejection_fractions(per_case, name) if name else []
        if ef:
            summary[f"{prefix}ejection_fraction"] = ef
            summary[f"mean_abs_{prefix}ef_error_points"] = float(np.mean([e["abs_error_points"] for e in ef]))
    return summary


def _ejection_fractions(rows: Sequence[Mapping[str, Any]], name: str) -> list[dict[str, Any]]:
    """EF per patient from the blood pool class ``name`` of its ED and ES cases (patients
    whose ED or ES case does not annotate it are skipped)."""
    by: dict[str, dict[str, Mapping[str, Any]]] = {}
    for r in rows:
        phase = str(r["meta"].get("phase", "")).upper()
        if phase in ("ED", "ES"):
            by.setdefault(r["group"], {})[phase] = r
    out = []
    for g, d in sorted(by.items()):
        if "ED" not in d or "ES" not in d:
            continue
        if name not in d["ED"]["volume_ml"] or name not in d["ES"]["volume_ml"]:
            continue
        edv, esv = d["ED"]["volume_ml"][name], d["ES"]["volume_ml"][name]
        redv, resv = d["ED"]["ref_volume_ml"][name], d["ES"]["ref_volume_ml"][name]
        ef = 100 * (edv - esv) / edv if edv > 0 else float("nan")
        ref_ef = 100 * (redv - resv) / redv if redv > 0 else float("nan")
        out.append({"patient": g, "edv_ml": edv, "esv_ml": esv, "ef_percent": ef, "ref_edv_ml": redv,
                    "ref_esv_ml": resv, "ref_ef_percent": ref_ef, "abs_error_points": abs(ef - ref_ef),
                    "note": "volumes over the expert-contoured slices only"})
    return out
