"""Measurements from label maps: volumes in mL, lesions, cardiac function, tumour response.

Every function takes :class:`medcnn.volume.Volume` objects (never bare arrays) and returns
tables or dataclasses whose numbers carry their unit in the name (``volume_ml``,
``max_3d_diameter_mm``, ``ef_percent``); each table states how it was computed
(``method`` column and ``df.attrs["columns"]``).

Imports numpy, scipy, pandas and cc3d only: no torch.

* :mod:`~medcnn.measure.volumes` -- :func:`label_volumes`, :func:`probability_volumes`
* :mod:`~medcnn.measure.lesions` -- :func:`measure_lesions`, :func:`lesion_components`
* :mod:`~medcnn.measure.intervals` -- :func:`volume_intervals`, :func:`volume_interval`,
  :func:`ef_interval_percent` (volume uncertainty intervals from probabilities)
* :mod:`~medcnn.measure.intensity` -- :func:`intensity_statistics` (mean, SD, median and
  percentiles of an image inside each label; HU for CT)
* :mod:`~medcnn.measure.cardiac` -- :func:`cardiac_function`, :func:`cine_function`
* :mod:`~medcnn.measure.response` -- :func:`tumour_response`, :func:`volume_change`,
  :func:`compare_volume_rows` (a follow-up's volume rows against the baseline's)
* :mod:`~medcnn.measure.anatomy` -- ``anatomy_statistics`` (the statistics behind the
  plausibility flags ``LV_NOT_ENCLOSED`` / ``RV_NOT_ADJACENT``)
* :mod:`~medcnn.measure.body` -- ``body_size``, ``mosteller_bsa_m2`` (BSA-indexed cardiac values)
* :mod:`~medcnn.measure.labels` -- :func:`load_label_table`
"""

from __future__ import annotations

from medcnn.measure._common import slice_axis
from medcnn.measure.cardiac import (
    CardiacFunction,
    CardiacLabels,
    CineFunction,
    QCFlag,
    cardiac_function,
    cine_function,
)
from medcnn.measure.intensity import intensity_statistics
from medcnn.measure.intervals import ef_interval_percent, volume_interval, volume_intervals
from medcnn.measure.labels import as_label_names, load_label_table
from medcnn.measure.lesions import lesion_components, max_diameter, measure_lesions
from medcnn.measure.response import (
    PD_VOLUME_CHANGE,
    PR_VOLUME_CHANGE,
    ResponseResult,
    compare_volume_rows,
    tumour_response,
    volume_change,
    volume_change_threshold,
    volume_doubling_time_days,
    volumetric_category,
)
from medcnn.measure.volumes import label_volumes, probability_volumes

__all__ = [
    "label_volumes",
    "probability_volumes",
    "intensity_statistics",
    "volume_interval",
    "volume_intervals",
    "ef_interval_percent",
    "measure_lesions",
    "lesion_components",
    "max_diameter",
    "CardiacLabels",
    "CardiacFunction",
    "CineFunction",
    "QCFlag",
    "cardiac_function",
    "cine_function",
    "tumour_response",
    "ResponseResult",
    "volume_change_threshold",
    "volume_doubling_time_days",
    "volumetric_category",
    "volume_change",
    "compare_volume_rows",
    "PR_VOLUME_CHANGE",
    "PD_VOLUME_CHANGE",
    "load_label_table",
    "as_label_names",
    "slice_axis",
]
