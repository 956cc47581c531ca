"""Intensity statistics of an image inside each label (TotalSegmentator's ``--statistics``).

For every label of a label map on the image's grid: voxel count, mean, standard deviation
(ddof = 1, as ITK's ``LabelStatisticsImageFilter`` sigma), minimum, maximum, median and the
5th, 25th, 75th and 95th percentiles (linear interpolation between order statistics, numpy's
default) of the image values of the label's voxels. Values are in the image's own unit,
stated in the ``intensity_unit`` column: Hounsfield units for CT (``modality="CT"``, or a
volume whose ``meta["modality"]`` says CT), else ``"image units"`` (MRI intensities have no
absolute scale) unless ``unit`` names one.

Imports numpy and pandas only (no torch).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from medcnn.errors import DimensionError
from medcnn.volume import Volume

__all__ = ["intensity_statistics", "add_intensity_columns", "intensity_unit", "INTENSITY_COLUMNS",
           "INTENSITY_PERCENTILES"]

#: Percentiles reported besides the median.
INTENSITY_PERCENTILES: tuple[int, ...] = (5, 25, 75, 95)

#: Column meanings (the unit is in ``intensity_unit``).
INTENSITY_COLUMNS: dict[str, str] = {
    "intensity_mean": "mean of the image inside the label (intensity_unit)",
    "intensity_sd": "standard deviation (ddof = 1) of the image inside the label (intensity_unit)",
    "intensity_min": "smallest image value inside the label (intensity_unit)",
    "intensity_max": "largest image value inside the label (intensity_unit)",
    "intensity_median": "median of the image inside the label (intensity_unit)",
    **{f"intensity_p{q}": f"{q}th percentile of the image inside the label (linear interpolation; intensity_unit)"
       for q in INTENSITY_PERCENTILES},
    "intensity_unit": "unit of the intensity columns: HU for CT, else the stated unit or 'image units'",
}


def intensity_unit(image: Volume, *, modality: str | None = None, unit: str | None = None) -> str:
    """The unit of ``image``'s values: ``unit`` if given; ``"HU"`` for CT (``modality`` or
    ``image.meta["modality"]``); else ``"image units"``."""
    if unit:
        return unit
    meta = image.meta or {}
    mod = (modality or str(meta.get("modality") or meta.get("Modality") or "")).strip().upper()
    return "HU" if mod == "CT" else "image units"


def intensity_statistics(
    image: Volume,
    labels: Volume,
    *,
    label_values: Sequence[int] | None = None,
    label_names: Mapping[Any, Any] | None = None,
    modality: str | None = None,
    unit: str | None = None,
    atol_mm: float = 1e-3,
) -> pd.DataFrame:
    """Intensity statistics of ``image`` inside each label of ``labels``.

    Args:
        image: scalar image ``(I, J, K)`` (e.g. CT in HU).
        labels: label map ``(I, J, K)`` on the same grid (checked with ``atol_mm``; a
            mismatch raises :class:`~medcnn.errors.GeometryMismatchError` naming both).
        label_values: labels to report (default: every non-zero label present); a label
            without voxels gets count 0 and NaN statistics.
        label_names: ``{value: name}`` for the ``label_name`` column.
        modality: ``"CT"`` gives ``intensity_unit = "HU"``.
        unit: the unit to state instead (e.g. ``"SUV"``).

    Returns:
        DataFrame, one row per label: ``label``, ``label_name``, ``voxel_count`` and the
        :data:`INTENSITY_COLUMNS`; ``df.attrs["columns"]`` holds the definitions.
    """
    from medcnn.measure.labels import as_label_names, label_name

    for vol, what in ((image, "an image"), (labels, "a label map")):
        if not isinstance(vol, Volume) or vol.leading_axis is not None or np.asarray(vol.array).ndim != 3:
            raise DimensionError.expected(f"{what} as a 3D Volume (I, J, K)",
                                          f"{type(vol).__name__} of shape {getattr(vol, 'shape', None)}",
                                          path=getattr(vol, "source", None))
    image.geometry.check_matches(labels.geometry, atol_mm=atol_mm, what="image and label map")
    img = np.asarray(image.array, dtype=np.float64).ravel()
    lab = np.asarray(labels.array).ravel()
    values = (sorted(int(v) for v in np.unique(lab) if v != 0) if label_values is None
              else [int(v) for v in label_values])
    names = as_label_names(label_names)
    unit_text = intensity_unit(image, modality=modality, unit=unit)
    rows = []
    for v in values:
        x = img[lab == v]
        row: dict[str, Any] = {"label": v, "label_name": label_name(names, v), "voxel_count": int(x.size)}
        if x.size:
            qs = np.percentile(x, [50, *INTENSITY_PERCENTILES])
            row.update({"intensity_mean": float(x.mean()),
                        "intensity_sd": float(x.std(ddof=1)) if x.size > 1 else float("nan"),
                        "intensity_min": float(x.min()), "intensity_max": float(x.max()),
                        "intensity_median": float(qs[0]),
                        **{f"intensity_p{q}": float(val) for q, val in zip(INTENSITY_PERCENTILES, qs[1:])}})
        else:
            row.update({k: float("nan") for k in INTENSITY_COLUMNS if k != "intensity_unit"})
        row["intensity_unit"] = unit_text
        rows.append(row)
    df = pd.DataFrame(rows, columns=["label", "label_name", "voxel_count", *INTENSITY_COLUMNS])
    df.attrs["columns"] = dict(INTENSITY_COLUMNS)
    return df


def add_intensity_columns(rows: list[dict[str, Any]], image: Volume, labels: Volume, *,
                          modality: str | None = None, unit: str | None = None) -> list[dict[str, Any]]:
    """Add the :data:`INTENSITY_COLUMNS` of ``image`` inside each label to volume rows.

    Args:
        rows: volume rows with an integer ``label`` (e.g. from
            :func:`medcnn.measure.label_volumes`); rows whose label is not an integer
            (region rows such as ``"1+2+4"``) are left as they are.
        image, labels, modality, unit: as :func:`intensity_statistics`.

    Returns:
        ``rows``, updated in place.
    """
    def value(r: dict[str, Any]) -> int | None:
        text = str(r.get("label"))
        return int(text) if text.lstrip("-").isdigit() else None

    wanted = sorted({v for v in map(value, rows) if v is not None})
    stats = intensity_statistics(image, labels, label_values=wanted, modality=modality, unit=unit)
    by = {int(r["label"]): r for r in stats.to_dict(orient="records")}
    for r in rows:
        v = value(r)
        if v is not None:
            r.update({k: by[v][k] for k in INTENSITY_COLUMNS})
    return rows
