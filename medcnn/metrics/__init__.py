"""Validation metrics in mm and agreement statistics (no torch needed).

Everything takes :class:`~medcnn.volume.Volume` label maps, so distances always use the
real voxel spacing; prediction and reference must share a grid unless ``resample=True``.

* :mod:`~medcnn.metrics.overlap`: Dice, IoU, volumes (mL) and volume errors, lesion-wise
  detection counts.
* :mod:`~medcnn.metrics.surface`: Hausdorff (max), HD95, ASSD and surface Dice with
  DeepMind ``surface-distance`` definitions (area-weighted surfels), computed exactly.
* :mod:`~medcnn.metrics.agreement`: summaries with bootstrap CIs, Bland-Altman, Pearson r,
  ICC(2,1)/ICC(3,1), Lin's CCC, ACDC-style tables.
* :mod:`~medcnn.metrics.evaluate`: every metric of a case, one row per structure.
* :mod:`~medcnn.metrics.acdc`: the ACDC challenge tables (Dice/HD95/HD per structure and
  phase; LV/RV EDV, ESV, EF and myocardial mass agreement), pooled and per group.
* :mod:`~medcnn.metrics.policy`: the explicit empty-mask policy.
* :mod:`~medcnn.metrics.grid`: grid checks, nearest-neighbour resampling, label masks.

See ``docs/metrics.md`` for definitions and how they differ from MONAI's.
"""

from __future__ import annotations

from medcnn.metrics.acdc import AcdcStructures, acdc_evaluation
from medcnn.metrics.agreement import (
    agreement_table,
    bland_altman,
    icc,
    icc_anova,
    lin_ccc,
    paired_agreement,
    pearson_r,
    summarize,
)
from medcnn.metrics.evaluate import aggregate, evaluate_case, volume_agreement
from medcnn.metrics.grid import align_to_reference, label_mask, resample_nearest
from medcnn.metrics.overlap import dice, iou, lesion_detection, volume_metrics
from medcnn.metrics.policy import DEFAULT_EMPTY_POLICY, EMPTY_POLICIES
from medcnn.metrics.surface import (
    SurfaceDistances,
    average_symmetric_surface_distance_mm,
    hausdorff_distance_mm,
    surface_dice,
    surface_distances,
    surface_metrics,
)

__all__ = [
    "dice", "iou", "volume_metrics", "lesion_detection",
    "SurfaceDistances", "surface_distances", "surface_metrics", "hausdorff_distance_mm",
    "average_symmetric_surface_distance_mm", "surface_dice",
    "summarize", "bland_altman", "pearson_r", "icc", "icc_anova", "lin_ccc", "paired_agreement",
    "agreement_table",
    "evaluate_case", "aggregate", "volume_agreement",
    "AcdcStructures", "acdc_evaluation",
    "align_to_reference", "resample_nearest", "label_mask",
    "EMPTY_POLICIES", "DEFAULT_EMPTY_POLICY",
]
