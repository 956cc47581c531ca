"""Lesions (tumours): connected components with volume, centroid and diameters.

Definitions
-----------
* **Lesion**: a connected component (cc3d) of the selected labels, 26-connectivity by
  default (voxels sharing a face, edge or corner), 6 (faces) or 18 (faces + edges) on
  request. With ``per_label=True`` (default) each label value forms its own components;
  with ``per_label=False`` the selected labels are merged first (e.g. "whole tumour").
* **volume_ml** = voxel count x voxel volume (mm^3) / 1000.
* **centroid_{x,y,z}_mm**: mean of the voxel-centre positions, RAS+ world mm
  (``Geometry.index_to_world`` of the mean voxel index).
* **max_3d_diameter_mm**: the largest distance between the *centres* of two surface
  voxels (a surface voxel has at least one of its 6 face neighbours outside the lesion or
  outside the image). Computed exactly and without a loop over voxel pairs: the two
  farthest points of a set are vertices of its convex hull (``scipy.spatial.ConvexHull``
  of the surface-voxel centres in mm), so the maximum is taken over hull vertices only.
  A one-voxel lesion has diameter 0.

  *Difference from PyRadiomics* ``Maximum3DDiameter``: PyRadiomics measures between
  vertices of a marching-cubes mesh, which lie half way between an inside and an outside
  voxel centre, i.e. about half a voxel outside the outermost voxel centres at each end.
  Its values are therefore larger by up to about one voxel spacing along the diameter
  (for a ball of radius r mm: ours ~ 2r - spacing, PyRadiomics ~ 2r).
* **max_inplane_diameter_mm**: RECIST-like long axis. The acquisition plane is the plane
  of the two finest-spaced array axes; the slice axis is the coarsest one (see
  :func:`medcnn.measure.slice_axis`). In every slice of the lesion, the largest distance
  between centres of the slice's in-plane boundary pixels (4-neighbourhood in the
  plane); the maximum over slices is reported, with that slice's index in
  ``inplane_slice_index``.
* **perpendicular_diameter_mm**: in the slice of the long axis, the extent of the lesion
  (pixel centres) measured along the in-plane direction perpendicular to the long axis
  (max - min of the projections onto that direction): the RECIST short-axis surrogate.
* **touches_border**: the lesion contains a voxel on a face of the image grid, so it may
  be cut off and its size underestimated.

All distances are in mm. They are computed in the array frame scaled by the spacing,
which equals world distance because the direction matrix is orthonormal.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

from medcnn.errors import ConfigError
from medcnn.measure._common import label_array, slice_axis
from medcnn.measure.labels import as_label_names, label_name
from medcnn.volume import Volume

__all__ = [
    "measure_lesions",
    "lesion_components",
    "max_diameter",
    "LESION_COLUMNS",
    "METHOD_DIAMETER_3D",
    "METHOD_DIAMETER_INPLANE",
]

METHOD_DIAMETER_3D = ("max distance between surface-voxel centres (convex hull vertices of the "
                      "surface-voxel centres in mm)")
METHOD_DIAMETER_INPLANE = ("per slice along the coarsest axis: max distance between in-plane boundary pixel "
                           "centres; perpendicular = extent of pixel centres perpendicular to it in that slice")

LESION_COLUMNS: dict[str, str] = {
    "lesion_id": "1-based lesion number (per case), ordered by label then decreasing volume",
    "label": "label value of the lesion (merged labels: the smallest selected label, or without a selection the "
             "smallest label in the lesion)",
    "label_name": "structure name from the label table",
    "n_voxels": "number of voxels in the connected component",
    "volume_ml": "lesion volume in mL = voxel count x voxel volume (mm^3) / 1000",
    "centroid_x_mm": "centroid (mean voxel centre), RAS+ world x in mm (R positive)",
    "centroid_y_mm": "centroid, RAS+ world y in mm (A positive)",
    "centroid_z_mm": "centroid, RAS+ world z in mm (S positive)",
    "max_3d_diameter_mm": f"longest 3D diameter in mm: {METHOD_DIAMETER_3D}",
    "max_inplane_diameter_mm": f"longest in-plane (acquisition plane) diameter in mm: {METHOD_DIAMETER_INPLANE}",
    "perpendicular_diameter_mm": "longest extent perpendicular to the in-plane long axis, same slice, in mm",
    "inplane_slice_index": "index along the slice axis of the slice holding the in-plane long axis",
    "slice_axis": "array axis (0=I, 1=J, 2=K) taken as slice axis: the coarsest spacing",
    "touches_border": "True when the lesion has a voxel on a face of the image grid (may be cut off)",
    "connectivity": "voxel connectivity used for the connected components (6, 18 or 26; 0 = whole label)",
}

_CONNECTIVITIES = (6, 18, 26)


# ---------------------------------------------------------------------- geometry kernels
def _max_pairwise(points: np.ndarray, block: int = 2048) -> tuple[float, int, int]:
    """Largest Euclidean distance among ``points`` (N, d) and the indices of its pair
    (``scipy.spatial.distance.cdist`` over blocks of the upper triangle: memory ~ block x N)."""
    from scipy.spatial.distance import cdist

    n = len(points)
    if n < 2:
        return 0.0, 0, 0
    best, bi, bj = -1.0, 0, 0
    for start in range(0, n, block):
        d2 = cdist(points[start:start + block], points[start:], "sqeuclidean")
        k = int(np.argmax(d2))
        r, c = divmod(k, d2.shape[1])
        if d2[r, c] > best:
            best, bi, bj = float(d2[r, c]), start + r, start + c
    return float(np.sqrt(best)), bi, bj


def _hull_candidates(points: np.ndarray) -> np.ndarray:
    """Indices of the points that can be ends of the diameter (convex hull vertices).

    Handles degenerate sets: all points on a line or in a plane are projected onto their
    principal axes first (Qhull needs full-dimensional input).
    """
    from scipy.spatial import ConvexHull, QhullError

    n, d = points.shape
    if n <= d + 1:
        return np.arange(n)
    centred = points - points.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    scale = max(float(s[0]), 1e-12)
    rank = int(np.sum(s > scale * 1e-9))
    if rank <= 1:
        proj = centred @ vt[0]
        return np.unique([int(np.argmin(proj)), int(np.argmax(proj))])
    coords = centred @ vt[:rank].T
    try:
        return ConvexHull(coords).vertices
    except QhullError:
        return ConvexHull(coords, qhull_options="QJ").vertices


def max_diameter(points_mm: np.ndarray) -> tuple[float, np.ndarray]:
    """Largest distance (mm) between two of ``points_mm`` (N, d), and the pair (2, d).

    Exact: evaluated over the convex-hull vertices, which always contain the farthest pair.
    """
    pts = np.asarray(points_mm, dtype=np.float64)
    if len(pts) == 0:
        return 0.0, np.zeros((2, pts.shape[1] if pts.ndim == 2 else 3))
    cand = pts[_hull_candidates(pts)]
    dist, i, j = _max_pairwise(cand)
    return dist, cand[[i, j]]


_FACE3 = ndimage.generate_binary_structure(3, 1)


def _surface(mask: np.ndarray, structure: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a neighbour (per ``structure``) outside it or outside the array."""
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _component_shape(mask: np.ndarray, spacing: np.ndarray, ax: int) -> dict[str, Any]:
    """Diameters of one component given its bounding-box crop ``mask`` (bool, I, J, K)."""
    surf = _surface(mask, _FACE3)
    d3, _ = max_diameter(np.argwhere(surf) * spacing)

    plane = [a for a in range(3) if a != ax]
    inplane = _FACE3.copy()
    idx = [1, 1, 1]
    for off in (0, 2):
        idx[ax] = off
        inplane[tuple(idx)] = False
    surf2 = _surface(mask, inplane)
    pts_all = np.argwhere(surf2)
    sp2 = spacing[plane]
    best = (-1.0, 0, 0.0)  # (long, slice, perpendicular)
    if len(pts_all):
        order = np.argsort(pts_all[:, ax], kind="stable")
        pts_all = pts_all[order]
        slices, starts = np.unique(pts_all[:, ax], return_index=True)
        bounds = list(starts[1:]) + [len(pts_all)]
        for s, a, b in zip(slices.tolist(), starts.tolist(), bounds):
            pts = pts_all[a:b][:, plane] * sp2
            long_mm, ends = max_diameter(pts)
            if long_mm > best[0]:
                if long_mm > 0:
                    u = (ends[1] - ends[0]) / long_mm
                    normal = np.array([-u[1], u[0]])
                    proj = pts @ normal
                    perp = float(proj.max() - proj.min())
                else:
                    perp = 0.0
                best = (long_mm, s, perp)
    return {"max_3d_diameter_mm": d3, "max_inplane_diameter_mm": max(best[0], 0.0),
            "perpendicular_diameter_mm": best[2], "inplane_slice_local": best[1]}


# ---------------------------------------------------------------------- components
def _check_connectivity(connectivity: int | None) -> int | None:
    if connectivity is None:
        return None
    if connectivity not in _CONNECTIVITIES:
        raise ConfigError.expected("connectivity 6, 18, 26 or None (whole labels)", f"{connectivity!r}")
    return int(connectivity)


def _components(volume: Volume, labels: Sequence[int] | int | None, per_label: bool, connectivity: int | None):
    import cc3d

    arr = label_array(volume)
    if labels is not None:
        sel = np.atleast_1d(np.asarray(labels, dtype=np.int64))
        mask = (arr == sel[0]) if len(sel) == 1 else np.isin(arr, sel)
        # one label: its binary mask already separates components "per label"
        work = np.where(mask, arr, 0).astype(arr.dtype, copy=False) if per_label and len(sel) > 1 else mask
    else:
        work = arr if per_label else arr > 0
    if connectivity is None:  # whole labels, no split into components
        values = np.flatnonzero(np.bincount(np.asarray(work, dtype=np.uint32).ravel()))
        values = values[values > 0]
        lut = np.zeros(int(values.max()) + 1 if len(values) else 1, dtype=np.uint32)
        lut[values] = np.arange(1, len(values) + 1)
        return arr, lut[np.asarray(work, dtype=np.uint32)], int(len(values))
    work = np.ascontiguousarray(work)
    if work.dtype == np.bool_:  # zero-copy; cc3d then estimates fewer labels and returns uint16 more often
        work = work.view(np.uint8)
    comp, n = cc3d.connected_components(work, connectivity=connectivity, return_N=True)
    return arr, comp, int(n)


def _constant_label(labels: Sequence[int] | int | None, per_label: bool) -> int | None:
    """The label every component has when it is known without looking (else None)."""
    if labels is not None:
        sel = np.atleast_1d(np.asarray(labels, dtype=np.int64))
        if len(sel) and (not per_label or len(sel) == 1):
            return int(sel.min())
    return None


def _label_of(arr: np.ndarray, box: tuple[slice, ...], mask: np.ndarray, per_label: bool) -> int:
    """Label value of a component (``mask`` = component in ``box``): the value of its first
    voxel, or for merged labels the smallest label value in it."""
    if not per_label:
        return int(arr[box][mask].min())
    first = np.unravel_index(int(np.argmax(mask)), mask.shape)
    return int(arr[box][first])


def _kept(volume: Volume, comp: np.ndarray, n: int, min_volume_ml: float):
    """cc3d statistics and the component ids passing the size filter."""
    import cc3d

    if n == 0:
        return None, np.zeros(0, np.int64), np.zeros(1, np.int64)
    stats = cc3d.statistics(comp)
    counts = np.asarray(stats["voxel_counts"], dtype=np.int64)
    ids = np.arange(1, n + 1)
    keep = ids[counts[1:] * volume.voxel_volume_ml >= float(min_volume_ml) - 1e-12]
    return stats, keep, counts


def _order(records: list[tuple[int, int, int]]) -> list[int]:
    """Component ids sorted by (label, decreasing voxel count, id); records = (label, count, id)."""
    return [cid for _, _, cid in sorted(records, key=lambda r: (r[0], -r[1], r[2]))]


def lesion_components(
    volume: Volume,
    *,
    labels: Sequence[int] | int | None = None,
    per_label: bool = True,
    connectivity: int | None = 26,
    min_volume_ml: float = 0.0,
) -> Volume:
    """Connected-component map on the input grid: voxel value = ``lesion_id`` of
    :func:`measure_lesions` with the same arguments (0 = background or filtered out).

    Returns:
        Volume ``kind="label"``, array (I, J, K) uint16/uint32.
    """
    connectivity = _check_connectivity(connectivity)
    arr, comp, n = _components(volume, labels, per_label, connectivity)
    stats, keep, counts = _kept(volume, comp, n, min_volume_ml)
    const = _constant_label(labels, per_label)
    records = []
    for cid in keep.tolist():
        box = stats["bounding_boxes"][cid]
        lab = const if const is not None else _label_of(arr, box, comp[box] == cid, per_label)
        records.append((lab, int(counts[cid]), cid))
    order = _order(records)
    lut = np.zeros(n + 1, dtype=np.uint32 if len(order) >= 65535 else np.uint16)
    lut[np.asarray(order, dtype=np.int64)] = np.arange(1, len(order) + 1)
    return volume.with_array(lut[comp], kind="label", leading_axis=None)


def measure_lesions(
    volume: Volume,
    *,
    labels: Sequence[int] | int | None = None,
    per_label: bool = True,
    connectivity: int | None = 26,
    min_volume_ml: float = 0.0,
    label_names: Mapping[Any, Any] | None = None,
) -> pd.DataFrame:
    """Connected components of a label map with volume, centroid and diameters.

    See the module docstring for every definition.

    Args:
        volume: 3D label map ``(I, J, K)``.
        labels: label value(s) to analyse; default every non-zero label.
        per_label: components per label value (True) or of the union of ``labels`` (False).
        connectivity: 6, 18 or 26 (default); ``None`` measures each selected label (or,
            with ``per_label=False``, their union) as one object without splitting it into
            components, as PyRadiomics' shape features do.
        min_volume_ml: drop components smaller than this (mL).
        label_names: ``{value: name}`` table for the ``label_name`` column.

    Returns:
        DataFrame, one row per lesion, columns as in :data:`LESION_COLUMNS` (units in the
        names). ``df.attrs["columns"]`` holds the definitions.
    """
    connectivity = _check_connectivity(connectivity)
    if min_volume_ml < 0 or not np.isfinite(min_volume_ml):
        raise ConfigError.expected("min_volume_ml >= 0", f"{min_volume_ml!r}")
    names = as_label_names(label_names)
    arr, comp, n = _components(volume, labels, per_label, connectivity)
    stats, keep, counts = _kept(volume, comp, n, min_volume_ml)
    const = _constant_label(labels, per_label)
    g = volume.geometry
    ax = slice_axis(g)
    spacing = np.asarray(g.spacing, dtype=np.float64)
    shape = np.asarray(g.shape)
    measured: dict[int, dict[str, Any]] = {}
    records = []
    for cid in keep.tolist():  # one pass per component (never per voxel), on its bounding box only
        box = stats["bounding_boxes"][cid]
        mask = comp[box] == cid
        lab = const if const is not None else _label_of(arr, box, mask, per_label)
        info = _component_shape(mask, spacing, ax)
        lo = np.array([s.start for s in box])
        hi = np.array([s.stop for s in box])
        info.update(label=lab, inplane_slice_index=int(lo[ax] + info.pop("inplane_slice_local")),
                    touches_border=bool(np.any(lo == 0) or np.any(hi == shape)))
        measured[cid] = info
        records.append((lab, int(counts[cid]), cid))
    order = _order(records)
    rows = []
    if order:
        centroids_world = g.index_to_world(np.asarray(stats["centroids"], dtype=np.float64)[order])
    for lesion_id, cid in enumerate(order, start=1):
        info = measured[cid]
        lab = info["label"]
        rows.append({
            "lesion_id": lesion_id,
            "label": lab,
            "label_name": label_name(names, lab),
            "n_voxels": int(counts[cid]),
            "volume_ml": int(counts[cid]) * g.voxel_volume_ml,
            "centroid_x_mm": float(centroids_world[lesion_id - 1, 0]),
            "centroid_y_mm": float(centroids_world[lesion_id - 1, 1]),
            "centroid_z_mm": float(centroids_world[lesion_id - 1, 2]),
            "max_3d_diameter_mm": info["max_3d_diameter_mm"],
            "max_inplane_diameter_mm": info["max_inplane_diameter_mm"],
            "perpendicular_diameter_mm": info["perpendicular_diameter_mm"],
            "inplane_slice_index": info["inplane_slice_index"],
            "slice_axis": ax,
            "touches_border": info["touches_border"],
            "connectivity": connectivity or 0,
        })
    cols = list(LESION_COLUMNS)
    df = pd.DataFrame(rows, columns=cols)
    df = df.astype({"touches_border": bool}) if len(df) else df
    df.attrs["columns"] = dict(LESION_COLUMNS)
    df.attrs["source"] = volume.source
    return df
