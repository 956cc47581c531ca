"""Anatomical plausibility of one cardiac short-axis label map: is the LV blood pool enclosed
by myocardium, and does the RV lie beside the LV?

These are the statistics behind the QC flags ``LV_NOT_ENCLOSED`` and ``RV_NOT_ADJACENT`` of
:mod:`medcnn.measure.cardiac` (which holds the tolerances and the flag wording); they are
public so that the tolerances can be calibrated on expert maps
(``scripts/calibrate_cardiac_anatomy.py``) with exactly the code that applies them.

Everything is measured **in plane**, slice by slice: the slice axis is the array axis with
the coarsest spacing (:func:`medcnn.measure.slice_axis`), distances are in mm between pixel
centres with the two in-plane spacings of the map (two pixels sharing an edge are one pixel
spacing apart). Voxels beyond the edge of the array count as background.

* **Open boundary fraction** of a slice: the pixels that share an edge with the LV blood
  pool but are not blood pool (its one-pixel outer ring); the fraction of them that are
  background (label 0) or beyond the array edge. Myocardium, RV or any other label closes
  the boundary. ``lv_open_fraction`` is the **median over the slices holding LV blood pool**:
  the basal slices, where the outflow tract legitimately opens the ring, do not move it.
* **Detached blood pool**: the LV blood pool's connected components (3D, 26-connected); a
  component is detached when none of its voxels lies within ``detached_mm`` (in plane, on the
  voxel's own slice) of myocardium. ``lv_detached_fraction`` is the share of the blood-pool
  volume in detached components (a blob labelled LV away from the heart, next to the true
  cavity or instead of it); ``lv_component_distance_mm`` the largest distance of a component.
* **RV to LV distance** of a slice holding both the RV blood pool and the LV (myocardium or
  blood pool): the smallest distance from an RV pixel to an LV pixel. ``rv_lv_distance_mm``
  is the **median over those slices**; ``rv_shared_slices`` how many there are (0 with RV and
  LV both present means they never share a slice).

Imports numpy and scipy only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["AnatomyStatistics", "anatomy_statistics", "DETACHED_DISTANCE_MM"]

#: A blood-pool component with no myocardium within this in-plane distance (mm) is detached.
#: A geometric definition, not a tolerance: on the ACDC and Sunnybrook experts' maps every
#: component touches the myocardium (one pixel spacing, <= 1.9 mm); 10 mm is several pixels
#: of any cardiac MRI and about the thickness of a normal LV wall.
DETACHED_DISTANCE_MM = 10.0


@dataclass(frozen=True)
class AnatomyStatistics:
    """Plausibility statistics of one 3D cardiac label map (see the module docstring).

    Attributes:
        slice_axis: array axis of the slices.
        lv_slices: number of slices holding LV blood pool.
        lv_open_fraction: median over the LV slices of the open boundary fraction (0..1);
            NaN without LV blood pool or when the map holds no myocardium label.
        lv_open_fraction_max: the largest per-slice open fraction (0..1; basal slices).
        lv_detached_fraction: share of the blood-pool volume in detached components (0..1);
            NaN as ``lv_open_fraction``.
        lv_component_distance_mm: largest in-plane distance (mm) from a blood-pool component to
            the nearest myocardium (inf: a component on slices without myocardium); NaN as above.
        rv_lv_distance_mm: median over the slices holding RV and LV of the smallest in-plane
            RV-LV distance (mm); NaN without RV or without LV; inf when they share no slice.
        rv_lv_distance_max_mm: the largest of those per-slice distances (mm).
        rv_shared_slices: number of slices holding both RV and LV.
        detached_mm: the distance (mm) beyond which a component counts as detached.
    """

    slice_axis: int
    lv_slices: int
    lv_open_fraction: float = math.nan
    lv_open_fraction_max: float = math.nan
    lv_detached_fraction: float = math.nan
    lv_component_distance_mm: float = math.nan
    rv_lv_distance_mm: float = math.nan
    rv_lv_distance_max_mm: float = math.nan
    rv_shared_slices: int = 0
    detached_mm: float = DETACHED_DISTANCE_MM

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)


def _crop(arr: np.ndarray) -> np.ndarray:
    """The bounding box of the non-zero labels in plane, padded by one background pixel
    (axis 0 = slices is kept whole)."""
    nz = np.any(arr != 0, axis=0)
    rows, cols = np.flatnonzero(nz.any(axis=1)), np.flatnonzero(nz.any(axis=0))
    if not len(rows):
        return arr[:, :0, :0]
    sub = arr[:, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    return np.pad(sub, ((0, 0), (1, 1), (1, 1)))


def _distance_to(mask2d: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """In-plane distance (mm) of every pixel to the nearest pixel of ``mask2d`` (inf if none)."""
    if not mask2d.any():
        return np.full(mask2d.shape, np.inf)
    return ndimage.distance_transform_edt(~mask2d, sampling=spacing)


def anatomy_statistics(arr: np.ndarray, spacing: tuple[float, float, float], *, lv_blood: int,
                       lv_myo: int | None, rv_blood: int | None,
                       detached_mm: float = DETACHED_DISTANCE_MM) -> AnatomyStatistics:
    """Plausibility statistics of one 3D label map.

    Args:
        arr: integer label array (I, J, K).
        spacing: voxel spacing in mm of the three array axes; the coarsest axis is the slice
            axis (the last of tied axes, as :func:`medcnn.measure.slice_axis`).
        lv_blood, lv_myo, rv_blood: label values (``None``: not labelled).
        detached_mm: in-plane distance (mm) beyond which a blood-pool component counts as
            detached from the myocardium.

    Returns:
        :class:`AnatomyStatistics` (fractions 0..1, distances in mm).
    """
    sp = np.asarray(spacing, dtype=np.float64)
    ax = int(np.flatnonzero(sp >= sp.max() * (1 - 1e-6))[-1])
    inplane = tuple(float(s) for i, s in enumerate(sp) if i != ax)
    a = _crop(np.moveaxis(np.asarray(arr), ax, 0))
    blood = a == lv_blood
    lv_on = blood.any(axis=(1, 2))
    stats: dict[str, Any] = {"slice_axis": ax, "lv_slices": int(lv_on.sum()), "detached_mm": float(detached_mm)}
    myo = a == lv_myo if lv_myo is not None else np.zeros_like(blood)
    if lv_on.any() and myo.any():
        # open boundary fraction per LV slice: the 4-neighbour ring outside the blood pool
        ring = ndimage.binary_dilation(blood, structure=_CROSS[None]) & ~blood
        # the crop's border row/column is background padding: the array edge counts as open
        open_px = np.sum(ring & (a == 0), axis=(1, 2))
        ring_px = np.sum(ring, axis=(1, 2))
        frac = open_px[lv_on] / np.maximum(ring_px[lv_on], 1)
        stats["lv_open_fraction"] = float(np.median(frac))
        stats["lv_open_fraction_max"] = float(frac.max())
        # detached components: in-plane distance to the myocardium on each voxel's slice
        dist = np.stack([_distance_to(m, inplane) if on else np.full(m.shape, np.inf)
                         for m, on in zip(myo, lv_on)])
        comp, n = ndimage.label(blood, structure=np.ones((3, 3, 3), dtype=bool))
        idx = np.arange(1, n + 1)
        nearest = np.asarray(ndimage.minimum(dist, comp, idx), dtype=np.float64)
        sizes = np.asarray(ndimage.sum_labels(blood, comp, idx), dtype=np.float64)
        stats["lv_detached_fraction"] = float(sizes[nearest > detached_mm].sum() / sizes.sum())
        stats["lv_component_distance_mm"] = float(nearest.max())
    if rv_blood is not None:
        rv = a == rv_blood
        lv = blood | myo
        shared = rv.any(axis=(1, 2)) & lv.any(axis=(1, 2))
        if rv.any() and lv.any():
            d = [float(_distance_to(lv[s], inplane)[rv[s]].min()) for s in np.flatnonzero(shared)]
            stats["rv_shared_slices"] = len(d)
            stats["rv_lv_distance_mm"] = float(np.median(d)) if d else math.inf
            stats["rv_lv_distance_max_mm"] = float(max(d)) if d else math.inf
    return AnatomyStatistics(**stats)
