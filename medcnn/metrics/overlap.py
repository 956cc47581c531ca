"""Overlap, volume and lesion-detection metrics of one structure.

* **Dice** ``2|P∩R| / (|P| + |R|)`` and **IoU** (Jaccard) ``|P∩R| / |P∪R|``, voxel counts.
* **Volumes** in mL from the reference grid's voxel volume: ``ref_volume_ml``,
  ``pred_volume_ml``, ``volume_diff_ml = pred - ref`` (signed), ``abs_volume_error_ml``
  and ``rel_volume_error_percent = 100 * (pred - ref) / ref`` (signed; NaN when the
  reference is empty).
* **Lesion-wise detection** (tumours, metastases): connected components (``cc3d``,
  26-connectivity by default) of reference and prediction. A reference lesion is detected
  (TP) when at least ``min_overlap_voxels`` of its voxels are predicted; FN = reference
  lesions not detected; FP = predicted components touching no reference lesion by at
  least ``min_overlap_voxels`` voxels. ``lesion_f1 = 2 TP / (2 TP + FP + FN)``.

Every function takes :class:`~medcnn.volume.Volume` label maps on one grid (or
``resample=True`` to put the prediction on the reference grid).
"""

from __future__ import annotations

import math

import numpy as np

from medcnn.metrics.grid import align_to_reference, label_mask
from medcnn.metrics.policy import DEFAULT_EMPTY_POLICY, EmptyPolicy, empty_value, image_diagonal_mm
from medcnn.volume import Volume

__all__ = ["dice", "iou", "volume_metrics", "lesion_detection"]


def _masks(pred: Volume, ref: Volume, label, resample: bool) -> tuple[np.ndarray, np.ndarray]:
    pred_on_ref, _ = align_to_reference(pred, ref, resample=resample)
    return label_mask(pred_on_ref, label), label_mask(ref, label)


def _overlap_from_masks(pm: np.ndarray, rm: np.ndarray, *, empty_policy: EmptyPolicy,
                        diagonal_mm: float) -> dict[str, float]:
    n_p, n_r = int(np.count_nonzero(pm)), int(np.count_nonzero(rm))
    if n_p == 0 or n_r == 0:
        v = empty_value("overlap", ref_empty=n_r == 0, pred_empty=n_p == 0, policy=empty_policy,
                        diagonal_mm=diagonal_mm)
        return {"dice": v, "iou": v}
    inter = int(np.count_nonzero(pm & rm))
    return {"dice": 2.0 * inter / (n_p + n_r), "iou": inter / (n_p + n_r - inter)}


def dice(pred: Volume, ref: Volume, *, label: int | tuple[int, ...] | None = None,
         empty_policy: EmptyPolicy = DEFAULT_EMPTY_POLICY, resample: bool = False) -> float:
    """Dice coefficient of one structure (``label`` value(s); ``None`` = non-zero), in [0, 1]."""
    pm, rm = _masks(pred, ref, label, resample)
    return _overlap_from_masks(pm, rm, empty_policy=empty_policy,
                               diagonal_mm=image_diagonal_mm(ref.geometry))["dice"]


def iou(pred: Volume, ref: Volume, *, label: int | tuple[int, ...] | None = None,
        empty_policy: EmptyPolicy = DEFAULT_EMPTY_POLICY, resample: bool = False) -> float:
    """Intersection over union (Jaccard index) of one structure, in [0, 1]."""
    pm, rm = _masks(pred, ref, label, resample)
    return _overlap_from_masks(pm, rm, empty_policy=empty_policy,
                               diagonal_mm=image_diagonal_mm(ref.geometry))["iou"]


def _volumes_from_masks(pm: np.ndarray, rm: np.ndarray, voxel_ml: float) -> dict[str, float]:
    v_p = int(np.count_nonzero(pm)) * voxel_ml
    v_r = int(np.count_nonzero(rm)) * voxel_ml
    return {
        "ref_volume_ml": v_r,
        "pred_volume_ml": v_p,
        "volume_diff_ml": v_p - v_r,
        "abs_volume_error_ml": abs(v_p - v_r),
        "rel_volume_error_percent": 100.0 * (v_p - v_r) / v_r if v_r > 0 else math.nan,
    }


def volume_metrics(pred: Volume, ref: Volume, *, label: int | tuple[int, ...] | None = None,
                   resample: bool = False) -> dict[str, float]:
    """Reference and predicted volume (mL) and their absolute and relative errors."""
    pm, rm = _masks(pred, ref, label, resample)
    return _volumes_from_masks(pm, rm, ref.geometry.voxel_volume_ml)


def _lesions_from_masks(pm: np.ndarray, rm: np.ndarray, *, connectivity: int = 26,
                        min_overlap_voxels: int = 1) -> dict[str, float]:
    import cc3d

    if connectivity not in (6, 18, 26):
        raise ValueError(f"expected connectivity 6, 18 or 26, got {connectivity}")
    if min_overlap_voxels < 1:
        raise ValueError(f"expected min_overlap_voxels >= 1, got {min_overlap_voxels}")
    ref_cc, n_ref = cc3d.connected_components(rm, connectivity=connectivity, return_N=True)
    pred_cc, n_pred = cc3d.connected_components(pm, connectivity=connectivity, return_N=True)
    both = pm & rm
    ref_hits = np.bincount(ref_cc[both].ravel(), minlength=n_ref + 1)[1:]
    pred_hits = np.bincount(pred_cc[both].ravel(), minlength=n_pred + 1)[1:]
    tp = int(np.count_nonzero(ref_hits >= min_overlap_voxels))
    fn = int(n_ref) - tp
    fp = int(np.count_nonzero(pred_hits < min_overlap_voxels))
    denom = 2 * tp + fp + fn
    return {
        "ref_lesions": int(n_ref),
        "pred_lesions": int(n_pred),
        "lesion_tp": tp,
        "lesion_fp": fp,
        "lesion_fn": fn,
        "lesion_f1": 2 * tp / denom if denom else math.nan,
    }


def lesion_detection(pred: Volume, ref: Volume, *, label: int | tuple[int, ...] | None = None,
                     connectivity: int = 26, min_overlap_voxels: int = 1,
                     resample: bool = False) -> dict[str, float]:
    """Lesion-wise detection counts from connected components (see module docstring).

    Returns:
        dict with ``ref_lesions``, ``pred_lesions``, ``lesion_tp``, ``lesion_fp``,
        ``lesion_fn`` and ``lesion_f1`` (NaN when there are no lesions at all).
    """
    pm, rm = _masks(pred, ref, label, resample)
    return _lesions_from_masks(pm, rm, connectivity=connectivity, min_overlap_voxels=min_overlap_voxels)
