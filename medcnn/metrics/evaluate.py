"""Evaluate predicted label maps against annotated references: one row per case and label.

:func:`evaluate_case` computes, for each structure, Dice, IoU, HD, HD95, ASSD (and both
directed average distances), surface Dice at a tolerance, volumes and volume errors and,
for lesion structures, lesion-wise detection counts. Structures are labels (one value or a
union) and, with ``regions=``, named regions (:mod:`medcnn.regions`: BraTS whole tumour,
tumour core, enhancing tumour), which may use other label values in the prediction than in
the reference (``pred_regions=``: a model's own label convention). Every row carries the settings that
define its numbers (``empty_policy``, ``nsd_tolerance_mm``, ``hd_percentile``...), so a
CSV row can be read on its own. :func:`aggregate` summarises rows per label and
:data:`DEFINITIONS` says in words what each column means (written into ``summary.json``).
"""

from __future__ import annotations

import math
from typing import Any, Collection, Iterable, Mapping, Sequence

import numpy as np

from medcnn.metrics.agreement import MIN_AGREEMENT_N, paired_agreement, summarize
from medcnn.metrics.grid import LabelSpec, align_to_reference, label_mask, normalize_labels, present_labels
from medcnn.metrics.overlap import _lesions_from_masks, _overlap_from_masks, _volumes_from_masks
from medcnn.metrics.policy import (
    DEFAULT_EMPTY_POLICY,
    POLICY_DESCRIPTIONS,
    EmptyPolicy,
    check_policy,
    image_diagonal_mm,
)
from medcnn.metrics.surface import _from_masks, _metrics_from
from medcnn.volume import Volume

__all__ = [
    "evaluate_case",
    "aggregate",
    "volume_agreement",
    "sparse_slice_mask",
    "metric_columns",
    "definitions",
    "DEFINITIONS",
    "SUMMARY_METRICS",
]

#: What each output column means (units in the names).
DEFINITIONS: dict[str, str] = {
    "dice": "Dice coefficient 2|P∩R|/(|P|+|R|) on voxels",
    "iou": "intersection over union |P∩R|/|P∪R| on voxels",
    "hd_mm": "Hausdorff distance: max over both directions of the largest surfel-to-surface distance (mm)",
    "hd95_mm": "95th-percentile Hausdorff distance: max of the two directed 95th percentiles of surfel "
               "distances, each percentile weighted by surfel area (DeepMind surface-distance "
               "compute_robust_hausdorff; not MONAI's voxel-count percentile) (mm)",
    "assd_mm": "average symmetric surface distance: area-weighted mean of all surfel distances of both "
               "surfaces (mm)",
    "asd_ref_to_pred_mm": "area-weighted mean distance from the reference surface to the predicted surface (mm)",
    "asd_pred_to_ref_mm": "area-weighted mean distance from the predicted surface to the reference surface (mm)",
    "nsd": "surface Dice / normalised surface distance at nsd_tolerance_mm: share of both surfaces' area "
           "within the tolerance of the other surface",
    "ref_volume_ml": "reference volume (voxel count x voxel volume of the reference grid, mL)",
    "pred_volume_ml": "predicted volume on the reference grid (mL)",
    "volume_diff_ml": "pred_volume_ml - ref_volume_ml (signed, mL)",
    "abs_volume_error_ml": "|pred_volume_ml - ref_volume_ml| (mL)",
    "rel_volume_error_percent": "100 (pred - ref) / ref (signed, %; NaN if the reference is empty)",
    "structure_kind": "label (a label value, or a union given as --labels NAME=V1,V2) or region (a named "
                      "union of labels from --regions or recorded by the model that wrote the prediction, e.g. "
                      "BraTS WT/TC/ET)",
    "pred_label_values": "the label values whose union is the structure in the prediction (label_values: in "
                         "the reference); they differ when a region model writes its own label convention",
    "annotated": "False when the reference dataset declares that it does not annotate this structure (in this "
                 "phase): every metric of the row is then empty and the row is left out of every summary",
    "not_annotated_reason": "where that declaration comes from (empty when the structure is annotated)",
    "ref_lesions": "connected components of the reference structure",
    "pred_lesions": "connected components of the predicted structure",
    "lesion_tp": "reference lesions overlapped by the prediction (>= min overlap voxels)",
    "lesion_fn": "reference lesions not overlapped by the prediction",
    "lesion_fp": "predicted components overlapping no reference lesion",
    "lesion_f1": "2 TP / (2 TP + FP + FN)",
    "surfaces": "surfels on the voxel-corner lattice, areas from marching-cubes triangles "
                "(DeepMind surface-distance definition); distances in mm with the voxel spacing",
}

#: Columns aggregated per label in summaries.
SUMMARY_METRICS: tuple[str, ...] = (
    "dice", "iou", "hd_mm", "hd95_mm", "assd_mm", "nsd", "ref_volume_ml", "pred_volume_ml",
    "volume_diff_ml", "abs_volume_error_ml", "rel_volume_error_percent", "lesion_f1",
)

_LESION_KEYS = ("ref_lesions", "pred_lesions", "lesion_tp", "lesion_fp", "lesion_fn", "lesion_f1")
_VOLUME_KEYS = ("ref_volume_ml", "pred_volume_ml", "volume_diff_ml", "abs_volume_error_ml",
                "rel_volume_error_percent")


def metric_columns(*, percentile: float = 95.0) -> list[str]:
    """Column order of :func:`evaluate_case` rows."""
    hd_key = f"hd{percentile:g}_mm"
    surface = ["hd_mm", hd_key, "assd_mm", "asd_ref_to_pred_mm", "asd_pred_to_ref_mm", "nsd"]
    return (["case_id", "label", "structure_kind", "label_values", "pred_label_values", "dice", "iou"] + surface
            + list(_VOLUME_KEYS)
            + list(_LESION_KEYS) + ["ref_empty", "pred_empty", "annotated", "not_annotated_reason", "empty_policy",
                                    "nsd_tolerance_mm", "hd_percentile", "sparse_slices", "resampled", "error"])


def sparse_slice_mask(ref: Volume, *, axis: int | None = None) -> tuple[np.ndarray, int, int]:
    """Slices of the reference that carry any annotation.

    Args:
        ref: 3D reference label map.
        axis: slice axis; default the coarsest axis (largest spacing; the last one on ties).

    Returns:
        ``(keep, axis, n_slices)``: a bool array broadcastable to the volume that is True on
        annotated slices, the axis used and the number of annotated slices.
    """
    spacing = np.asarray(ref.geometry.spacing)
    if axis is None:
        axis = int(np.flatnonzero(np.isclose(spacing, spacing.max(), rtol=1e-6))[-1])
    mask = label_mask(ref, None)
    other = tuple(a for a in range(3) if a != axis)
    annotated = np.any(mask, axis=other)
    shape = [1, 1, 1]
    shape[axis] = mask.shape[axis]
    return annotated.reshape(shape), axis, int(annotated.sum())


def evaluate_case(
    pred: Volume,
    ref: Volume,
    *,
    labels: LabelSpec = None,
    tolerance_mm: float = 2.0,
    percentile: float = 95.0,
    empty_policy: EmptyPolicy = DEFAULT_EMPTY_POLICY,
    sparse_slices: bool = False,
    resample: bool = False,
    lesion_labels: Collection[str] | bool = (),
    connectivity: int = 26,
    min_overlap_voxels: int = 1,
    threads: int = 1,
    case_id: str | None = None,
    not_annotated: Mapping[int, str] | None = None,
    regions: Mapping[str, Sequence[int]] | None = None,
    pred_regions: Mapping[str, Sequence[int]] | None = None,
) -> list[dict[str, Any]]:
    """All metrics of one predicted label map against its reference, one row per structure.

    Args:
        pred: predicted 3D label map.
        ref: reference 3D label map; defines the grid, voxel volume and spacing.
        labels: structures to evaluate (see :data:`~medcnn.metrics.grid.LabelSpec`);
            ``None`` = every non-zero label present in either map, named by its value.
        tolerance_mm: surface Dice tolerance (mm).
        percentile: percentile of the robust Hausdorff distance (95 → ``hd95_mm``).
        empty_policy: values when a structure is empty (:mod:`medcnn.metrics.policy`).
        sparse_slices: evaluate only slices (along the coarsest axis) where the reference
            has any label > 0, for partially annotated stacks; the prediction is cleared
            elsewhere.
        resample: nearest-neighbour resample the prediction onto the reference grid when
            the grids differ (otherwise :class:`GeometryMismatchError`).
        lesion_labels: structure names that get lesion-wise detection counts (``True``:
            all structures).
        connectivity: 6, 18 or 26 for lesion components.
        min_overlap_voxels: overlap needed for a lesion to count as detected.
        threads: threads for distance transforms.
        case_id: written into every row (default: the reference file name).
        not_annotated: ``{label value: reason}`` for label values the reference does not
            annotate (a partial reference, e.g. Sunnybrook: no RV, no ES myocardium). A
            structure all of whose values are listed gets a row with ``annotated`` False,
            the reason, and empty metrics (never Dice 0); a structure with at least one
            annotated value is evaluated as usual (BraTS 2018 draws no label 3, yet a whole
            tumour of labels 1-4 is annotated). Regions follow the same rule.
        regions: ``{region name: label values}`` in the reference (nested or disjoint,
            :func:`medcnn.regions.check_regions`; e.g. :data:`medcnn.regions.BRATS_REGIONS`):
            one more row per region after the label rows (``structure_kind`` ``"region"``),
            the union of its labels in each map. Pass ``labels={}`` for region rows only.
        pred_regions: ``{region name: label values}`` in the prediction for regions whose
            labels differ there (a region model's own convention, e.g. nnU-Net's BraTS
            1/2/3 against BraTS's 1/2/4); names not given use ``regions``' values.

    Returns:
        list of dicts with the columns of :func:`metric_columns`.

    Raises:
        GeometryMismatchError, DimensionError, InvalidLabelError, ConfigError (regions that
        are not nested or disjoint, a ``pred_regions`` name that is not a region, a region
        named like a label structure).
    """
    from medcnn.errors import ConfigError
    from medcnn.regions import check_regions

    check_policy(empty_policy)
    if not (tolerance_mm >= 0 and math.isfinite(tolerance_mm)):
        raise ValueError(f"expected a finite tolerance_mm >= 0, got {tolerance_mm}")
    pred_on_ref, resampled = align_to_reference(pred, ref, resample=resample)
    structures = normalize_labels(labels, found=present_labels(pred_on_ref, ref) if labels is None else ())
    keep = None
    sparse_note = ""
    if sparse_slices:
        keep, axis, n = sparse_slice_mask(ref)
        sparse_note = f"axis {axis}: {n} of {ref.geometry.shape[axis]} slices"
    spacing = ref.geometry.spacing
    diag = image_diagonal_mm(ref.geometry)
    voxel_ml = ref.geometry.voxel_volume_ml
    cid = case_id if case_id is not None else _default_case_id(ref)
    region_sets = {k: tuple(v) for k, v in check_regions(regions or {}).items()}
    pred_sets = {k: tuple(v) for k, v in check_regions(pred_regions or {}).items()}
    if set(pred_sets) - set(region_sets):
        raise ConfigError.expected(f"pred_regions named among the regions {sorted(region_sets)}",
                                   f"{sorted(set(pred_sets) - set(region_sets))}")
    clash = set(region_sets) & set(structures)
    if clash:
        raise ConfigError.expected("region names distinct from the label structures' names", f"{sorted(clash)} in both",
                                   hint="rename the region or the --labels structure")
    names = [*structures, *region_sets]
    lesion_set = set(names) if lesion_labels is True else set(lesion_labels or ())
    unknown = lesion_set - set(names)
    if unknown:
        raise ValueError(f"expected lesion labels among {sorted(names)}, got {sorted(unknown)}")
    skip = {int(k): str(v) for k, v in (not_annotated or {}).items()}
    todo = [(name, "label", values, values) for name, values in structures.items()]
    todo += [(name, "region", values, pred_sets.get(name, values)) for name, values in region_sets.items()]
    rows = []
    for name, kind, values, pvalues in todo:
        head: dict[str, Any] = {"case_id": cid, "label": name, "structure_kind": kind,
                                "label_values": ",".join(map(str, values)),
                                "pred_label_values": ",".join(map(str, pvalues))}
        missing = [v for v in values if int(v) in skip]
        if missing and len(missing) == len(values):
            row = dict(head)
            row.update({k: math.nan for k in metric_columns(percentile=percentile) if k not in head and k != "error"})
            row.update({"ref_empty": None, "pred_empty": not label_mask(pred_on_ref, pvalues).any(),
                        "annotated": False, "not_annotated_reason": skip[int(missing[0])],
                        "empty_policy": empty_policy, "nsd_tolerance_mm": float(tolerance_mm),
                        "hd_percentile": float(percentile), "sparse_slices": sparse_note, "resampled": resampled,
                        "error": ""})
            rows.append(row)
            continue
        pm = label_mask(pred_on_ref, pvalues)
        rm = label_mask(ref, values)
        if keep is not None:
            pm &= keep
            rm &= keep
        ref_empty, pred_empty = not rm.any(), not pm.any()
        row = dict(head)
        row.update(_overlap_from_masks(pm, rm, empty_policy=empty_policy, diagonal_mm=diag))
        sd = _from_masks(pm, rm, spacing, threads=threads)
        row.update(_metrics_from(sd, ref_empty=ref_empty, pred_empty=pred_empty, tolerance_mm=tolerance_mm,
                                 percentile=percentile, empty_policy=empty_policy, diagonal_mm=diag))
        row.update(_volumes_from_masks(pm, rm, voxel_ml))
        if name in lesion_set:
            row.update(_lesions_from_masks(pm, rm, connectivity=connectivity,
                                           min_overlap_voxels=min_overlap_voxels))
        else:
            row.update({k: math.nan for k in _LESION_KEYS})
        row.update({
            "ref_empty": ref_empty, "pred_empty": pred_empty, "annotated": True, "not_annotated_reason": "",
            "empty_policy": empty_policy,
            "nsd_tolerance_mm": float(tolerance_mm), "hd_percentile": float(percentile),
            "sparse_slices": sparse_note, "resampled": resampled, "error": "",
        })
        rows.append(row)
    return rows


def _default_case_id(ref: Volume) -> str:
    from pathlib import Path

    if not ref.source:
        return ""
    from medcnn.io import image_stem

    name = Path(ref.source).name
    return image_stem(name) or name


def _ok_rows(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Rows with numbers: no error, and a structure the reference annotates."""
    return [r for r in rows if not r.get("error") and r.get("annotated", True) not in (False, "False")]


def aggregate(rows: Iterable[Mapping[str, Any]], *, metrics: Sequence[str] = SUMMARY_METRICS,
              n_bootstrap: int = 2000, seed: int = 0, confidence: float = 0.95) -> dict[str, dict[str, Any]]:
    """Per-label summaries (:func:`~medcnn.metrics.agreement.summarize`) of evaluation rows.

    Rows with an ``error`` are skipped. Metrics absent from the rows (e.g. ``hd99_mm``
    when another percentile was used) are looked up under their actual column name.

    Returns:
        ``{label: {metric: summary dict}}``.
    """
    good = _ok_rows(rows)
    out: dict[str, dict[str, Any]] = {}
    for label in dict.fromkeys(r["label"] for r in good):
        sub = [r for r in good if r["label"] == label]
        cols = list(metrics)
        extra = [k for k in sub[0] if k.startswith("hd") and k.endswith("_mm") and k not in cols]
        out[label] = {m: summarize([_num(r.get(m)) for r in sub], n_bootstrap=n_bootstrap, seed=seed,
                                   confidence=confidence)
                      for m in cols + extra if any(m in r for r in sub)}
    return out


def volume_agreement(rows: Iterable[Mapping[str, Any]], *,
                     min_n: int = MIN_AGREEMENT_N) -> dict[str, dict[str, Any]]:
    """Per label: Bland-Altman, Pearson r, ICC(2,1)/ICC(3,1) and Lin's CCC of predicted vs
    reference volume (mL) over the cases without errors (r, limits of agreement, ICC and CCC
    withheld below ``min_n`` cases, see :func:`~medcnn.metrics.agreement.paired_agreement`)."""
    good = _ok_rows(rows)
    out = {}
    for label in dict.fromkeys(r["label"] for r in good):
        sub = [r for r in good if r["label"] == label]
        out[label] = paired_agreement([_num(r["pred_volume_ml"]) for r in sub],
                                      [_num(r["ref_volume_ml"]) for r in sub], min_n=min_n)
    return out


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def definitions(*, tolerance_mm: float, percentile: float, empty_policy: str) -> dict[str, str]:
    """Definitions with the settings filled in, for ``summary.json``."""
    d = dict(DEFINITIONS)
    if percentile != 95:
        d[f"hd{percentile:g}_mm"] = d.pop("hd95_mm").replace("95th", f"{percentile:g}th")
    d["nsd_tolerance_mm"] = f"{tolerance_mm:g} mm"
    d["empty_policy"] = f"{empty_policy}: {POLICY_DESCRIPTIONS[empty_policy]}"
    return d
