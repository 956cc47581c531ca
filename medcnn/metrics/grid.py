"""Putting a prediction and a reference on one voxel grid, and picking label masks.

Metrics compare voxels, so both label maps must share a grid. :func:`align_to_reference`
checks that (naming both geometries when they differ) or, when asked, resamples the
prediction onto the reference grid with nearest-neighbour interpolation through world
coordinates, which keeps label values intact.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence, Union

import numpy as np

from medcnn.errors import DimensionError, InvalidLabelError
from medcnn.volume import DEFAULT_ATOL_MM, Geometry, Volume

__all__ = [
    "LabelSpec",
    "align_to_reference",
    "resample_nearest",
    "label_mask",
    "normalize_labels",
    "present_labels",
]

#: A label selection: ``None`` (every non-zero voxel), one label value, several values
#: (their union), or ``{name: values}`` for named structures (e.g. BraTS whole tumour
#: ``{"WT": (1, 2, 3, 4)}``).
LabelSpec = Union[None, int, Sequence[int], Mapping[str, Union[int, Sequence[int]]]]


def _require_3d(volume: Volume, what: str) -> None:
    if volume.leading_axis is not None or volume.array.ndim != 3:
        raise DimensionError.expected(f"a 3D {what} label map (I, J, K)", f"array of shape {volume.array.shape}",
                                      path=volume.source, hint="select one frame first (volume.frame(t))")


def _label_array(volume: Volume) -> np.ndarray:
    """The array as bool or non-negative integers (float labels validated and converted)."""
    arr = volume.array
    if arr.dtype == bool or arr.dtype.kind in "iu":
        if arr.dtype.kind == "i" and arr.size and arr.min() < 0:
            raise InvalidLabelError.expected("non-negative labels", f"minimum label {arr.min()}", path=volume.source)
        return arr
    from medcnn.io import as_label_array

    return as_label_array(arr, volume.source)


def resample_nearest(volume: Volume, geometry: Geometry) -> Volume:
    """Nearest-neighbour resampling of a 3D label map onto another grid.

    Each target voxel centre is mapped to world coordinates (RAS+ mm) and from there to a
    fractional index of ``volume``; the value of the nearest source voxel is taken.
    Target voxels whose centre falls outside the source grid get label 0.

    Args:
        volume: 3D label map (any integer or bool dtype).
        geometry: the target grid.

    Returns:
        Volume on ``geometry`` with the same dtype and kind.
    """
    from scipy import ndimage

    _require_3d(volume, "source")
    arr = _label_array(volume)
    if volume.geometry.isclose(geometry):
        return Volume(arr, geometry, volume.kind, meta=volume.meta)
    # target index -> source index: inv(A_src) @ A_tgt
    m = np.linalg.inv(volume.geometry.affine) @ geometry.affine
    # grid-aligned transforms (flips, permutations, integer shifts) come out within rounding
    # of exact values: snap them so no voxel centre lands a hair beyond the source grid
    snapped = np.round(m)
    m = np.where(np.abs(m - snapped) < 1e-9, snapped, m)
    src = arr.astype(np.uint8) if arr.dtype == bool else arr
    # "grid-constant": a target centre within half a voxel of the source grid's outer
    # centres still takes the nearest voxel; farther out it gets 0
    out = ndimage.affine_transform(src, m[:3, :3], offset=m[:3, 3], output_shape=geometry.shape,
                                   order=0, mode="grid-constant", cval=0, prefilter=False)
    if arr.dtype == bool:
        out = out.astype(bool)
    meta = dict(volume.meta)
    meta["resampled_from"] = volume.geometry.to_dict()
    return Volume(out, geometry.with_source(volume.source), volume.kind, meta=meta)


def align_to_reference(pred: Volume, ref: Volume, *, resample: bool = False,
                       atol_mm: float = DEFAULT_ATOL_MM) -> tuple[Volume, bool]:
    """Return the prediction on the reference grid.

    Args:
        pred, ref: 3D label maps.
        resample: when the grids differ, resample ``pred`` (nearest neighbour) instead of
            raising.
        atol_mm: tolerance for comparing the grids.

    Returns:
        ``(pred_on_ref_grid, resampled)``.

    Raises:
        GeometryMismatchError: grids differ and ``resample`` is False (the message names
            both geometries and suggests ``resample=True`` / ``--resample``).
        DimensionError: either volume is not 3D.
    """
    _require_3d(pred, "prediction")
    _require_3d(ref, "reference")
    if ref.geometry.isclose(pred.geometry, atol_mm=atol_mm):
        return pred, False
    if not resample:
        ref.geometry.check_matches(
            pred.geometry, atol_mm=atol_mm, what="prediction and reference",
            hint="Resample the prediction onto the reference grid: pass resample=True "
                 "(CLI: --resample) for nearest-neighbour resampling through world coordinates")
    return resample_nearest(pred, ref.geometry), True


def normalize_labels(labels: LabelSpec, *, found: Iterable[int] = ()) -> dict[str, tuple[int, ...]]:
    """Turn a :data:`LabelSpec` into ``{name: label values}``.

    ``None`` means one structure per value in ``found`` (named by the value). An int or a
    sequence of ints gives one structure per value. A mapping keeps its names; a value may
    be an int or a sequence (union of labels).
    """
    if labels is None:
        return {str(v): (int(v),) for v in sorted(set(int(x) for x in found)) if v != 0}
    if isinstance(labels, Mapping):
        out = {}
        for name, values in labels.items():
            vals = (int(values),) if np.isscalar(values) else tuple(int(v) for v in values)  # type: ignore[arg-type]
            if not vals or any(v <= 0 for v in vals):
                raise InvalidLabelError.expected(f"positive label values for {name!r}", f"{vals}")
            out[str(name)] = vals
        return out
    if np.isscalar(labels):
        labels = [int(labels)]  # type: ignore[list-item,arg-type]
    vals = [int(v) for v in labels]  # type: ignore[union-attr]
    if any(v <= 0 for v in vals):
        raise InvalidLabelError.expected("positive label values (0 is background)", f"{vals}")
    return {str(v): (v,) for v in vals}


def present_labels(*volumes: Volume) -> list[int]:
    """Sorted non-zero label values present in any of the volumes."""
    found: set[int] = set()
    for v in volumes:
        arr = _label_array(v)
        if arr.dtype == bool:
            if arr.any():
                found.add(1)
        else:
            found.update(int(x) for x in np.unique(arr) if x != 0)
    return sorted(found)


def label_mask(volume: Volume, values: Sequence[int] | int | None = None) -> np.ndarray:
    """Boolean ``(I, J, K)`` mask of the voxels whose label is in ``values``.

    ``None`` selects every non-zero voxel (so a bool mask passes through unchanged).
    """
    _require_3d(volume, "label")
    arr = _label_array(volume)
    if values is None:
        return arr.astype(bool, copy=False) if arr.dtype == bool else arr != 0
    vals = (int(values),) if np.isscalar(values) else tuple(int(v) for v in values)  # type: ignore[arg-type]
    if arr.dtype == bool:
        return arr.copy() if 1 in vals else np.zeros(arr.shape, bool)
    if len(vals) == 1:
        return arr == vals[0]
    return np.isin(arr, vals)
