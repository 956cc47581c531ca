"""Resampling onto a new spacing or onto an arbitrary grid, through world coordinates.

Conventions
-----------
* Every output voxel centre is mapped to world space (RAS+ mm) and back into the input's
  fractional voxel indices; values are interpolated there with the B-spline rule of
  :func:`scipy.ndimage.affine_transform` (chosen order, ``mode="nearest"``). When the two
  grids share their axis directions (every :func:`resample`, every undo of one) the
  mapping is diagonal and runs separably: one banded float32 matrix per axis, built with
  scipy's own 1D rule and applied with BLAS to all channels at once
  (:mod:`medcnn.preprocess._separable`; equal to scipy to float32 rounding, 10-20x
  faster). Oblique target grids use ``affine_transform`` itself.
* :func:`resample` keeps the **field of view**: the new grid has exactly the requested
  spacing, ``round(n * old / new)`` voxels per axis, the same direction, and is **centred
  on the same world point** as the input (the centre of the box spanned by the outer
  voxel edges). Its origin is adjusted accordingly, like scipy's ``zoom(grid_mode=True)``
  but with the exact target spacing.
* Outside the input's field of view (beyond its outer voxel *edges*) :func:`resample_to`
  writes ``fill``; inside it, near the edge, values are extended from the edge voxels.
* ``kind="intensity"``: spline of ``order`` (default 3), float32 output (float64 kept).
  ``kind="probability"``: linear per channel, clipped to ``[0, 1]``.
  ``kind="label"``: ``order=0`` nearest neighbour, or ``order=1`` *per-label linear*
  (each label's one-hot mask is interpolated linearly, the voxel takes the label with
  the largest weight; ties go to the lower label, background first) — smooth, never
  invents a label value, as nnU-Net does for segmentations.
* Anisotropic data (nnU-Net rule): when ``max(spacing) / min(spacing) > threshold`` for
  the input (or else the target) spacing and exactly one axis is the coarse one,
  intensities are interpolated with ``order`` in the fine axes and with
  ``anisotropic_order`` (default 1, linear: no overshoot across thick slices) along the
  coarse axis (separable: each axis has its own order).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from medcnn.errors import InvalidGeometryError, InvalidLabelError
from medcnn.preprocess._separable import resample_separable
from medcnn.volume import Geometry, Volume

__all__ = [
    "resample",
    "resample_to",
    "resampled_geometry",
    "anisotropic_axis",
    "default_order",
]

_EDGE_TOL = 1e-6  # voxels


def _check_spacing(spacing: Any, *, source: str | None = None) -> tuple[float, float, float]:
    arr = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if arr.size != 3 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise InvalidGeometryError.expected("a target spacing of 3 finite values > 0 mm", f"{spacing!r}", path=source)
    return tuple(float(v) for v in arr)  # type: ignore[return-value]


def _check_order(order: int) -> int:
    if int(order) != order or not 0 <= order <= 5:
        raise ValueError(f"expected an interpolation order between 0 and 5, got {order!r}")
    return int(order)


def default_order(kind: str) -> int:
    """Default interpolation order: 3 for intensities, 1 for probabilities and labels."""
    return 3 if kind == "intensity" else 1


def resampled_geometry(geometry: Geometry, spacing: Sequence[float]) -> Geometry:
    """The grid :func:`resample` produces: exact ``spacing``, ``round(n * old / new)``
    voxels per axis (at least 1), same direction, centred on the same field of view."""
    new = np.asarray(_check_spacing(spacing, source=geometry.source))
    old = np.asarray(geometry.spacing)
    n = np.asarray(geometry.shape, dtype=np.float64)
    new_shape = np.maximum(1, np.floor(n * old / new + 0.5)).astype(int)
    centre_index = (n - 1) / 2.0
    centre = geometry.index_to_world(centre_index)[0]
    d = geometry.direction_matrix
    origin = centre - d @ ((new_shape - 1) / 2.0 * new)
    return Geometry(tuple(int(s) for s in new_shape), tuple(new), tuple(origin), geometry.direction,
                    source=geometry.source)


def anisotropic_axis(spacing_in: Sequence[float], spacing_out: Sequence[float], *,
                     threshold: float = 3.0) -> int | None:
    """The coarse axis to interpolate separately (nnU-Net rule), or ``None``.

    If ``max/min`` of the input spacing exceeds ``threshold`` the input's coarsest axis
    is used, else the same test on the target spacing. ``None`` when neither is
    anisotropic or when the coarsest spacing is shared by two axes.
    """
    for sp in (np.asarray(spacing_in, float), np.asarray(spacing_out, float)):
        if sp.max() / sp.min() > threshold:
            axes = np.flatnonzero(np.isclose(sp, sp.max(), rtol=1e-6, atol=0))
            return int(axes[0]) if axes.size == 1 else None
    return None


# ---------------------------------------------------------------------------- core
def _is_diagonal(m: np.ndarray) -> bool:
    off = m - np.diag(np.diag(m))
    return bool(np.max(np.abs(off)) <= 1e-9 * max(1.0, float(np.max(np.abs(m)))))


def _interp(arr: np.ndarray, m: np.ndarray, offset: np.ndarray, out_shape: tuple[int, ...], order: int,
            out_dtype: Any, *, orders: Sequence[int] | None = None) -> np.ndarray:
    """out[..., o] = arr(m @ o + offset) over the last three axes, edge values extended.

    Axis-aligned mappings (diagonal ``m``, every :func:`resample`) run separably with one
    banded matrix per axis (:mod:`medcnn.preprocess._separable`: scipy's rule, BLAS speed;
    leading axes all at once); ``orders`` then gives the spline order per axis. Other
    mappings go through :func:`scipy.ndimage.affine_transform` (3D ``arr`` only).
    """
    from scipy import ndimage

    if _is_diagonal(m):
        per_axis = [order] * 3 if orders is None else [int(o) for o in orders]
        src = arr
        if any(per_axis) and arr.dtype != out_dtype:
            src = arr.astype(out_dtype)
        res = resample_separable(src, np.diag(m), offset, out_shape, per_axis)
        return res.astype(out_dtype, copy=False)
    if order > 1 and arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    return ndimage.affine_transform(arr, m, offset=offset, output_shape=tuple(out_shape), order=order,
                                    mode="nearest", prefilter=order > 1, output=out_dtype)


def _outside_mask(m: np.ndarray, offset: np.ndarray, in_shape: tuple[int, ...],
                  out_shape: tuple[int, ...]) -> np.ndarray | None:
    """Boolean mask of output voxels whose centre lies beyond the input's voxel edges."""
    lo = -0.5 - _EDGE_TOL
    hi = np.asarray(in_shape, float) - 0.5 + _EDGE_TOL
    if _is_diagonal(m):
        bad = []
        for c in range(3):
            idx = m[c, c] * np.arange(out_shape[c]) + offset[c]
            bad.append((idx < lo) | (idx > hi[c]))
        if not any(b.any() for b in bad):
            return None
        return bad[0][:, None, None] | bad[1][None, :, None] | bad[2][None, None, :]
    # general (oblique) case: check the 8 output corners first, then slab by slab
    corners = np.array(np.meshgrid(*[[0, s - 1] for s in out_shape], indexing="ij")).reshape(3, -1).T
    ci = corners @ m.T + offset
    if np.all((ci >= lo) & (ci <= hi)):
        return None  # the input box is convex: all corners inside -> everything inside
    mask = np.zeros(out_shape, dtype=bool)
    j = np.arange(out_shape[1], dtype=float)[:, None]
    k = np.arange(out_shape[2], dtype=float)[None, :]
    for i in range(out_shape[0]):
        out_i = np.zeros(out_shape[1:], dtype=bool)
        for c in range(3):
            idx = m[c, 0] * i + m[c, 1] * j + m[c, 2] * k + offset[c]
            out_i |= (idx < lo) | (idx > hi[c])
        mask[i] = out_i
    return mask


def _labels_linear(arr: np.ndarray, m: np.ndarray, offset: np.ndarray, out_shape: tuple[int, ...]) -> np.ndarray:
    """Per-label linear resampling of an integer label map (see module docstring)."""
    from scipy import ndimage

    out = np.zeros(out_shape, dtype=arr.dtype)
    best = np.zeros(out_shape, dtype=np.float32)
    total = np.zeros(out_shape, dtype=np.float32)
    diag = _is_diagonal(m)
    values = np.unique(arr)
    values = values[values != 0]
    boxes = ndimage.find_objects(arr.astype(np.int64, copy=False)) if diag and values.size else None
    full = tuple(slice(0, s) for s in out_shape)
    for v in values:
        v = arr.dtype.type(v)
        if diag:
            box = boxes[int(v) - 1]  # type: ignore[index]
            in_sl, out_sl, sub_off = [], [], []
            for c in range(3):
                lo, hi, n = box[c].start, box[c].stop - 1, arr.shape[c]
                p0, p1 = max(0, lo - 2), min(n, hi + 3)
                mc, tc = m[c, c], offset[c]
                if lo == 0 or hi == n - 1:  # edge values are extended: may reach any output index
                    o0, o1 = 0, out_shape[c] - 1
                else:  # output points within one input voxel of the label's box
                    ends = sorted(((lo - 1 - tc) / mc, (hi + 1 - tc) / mc))
                    o0 = max(0, int(np.floor(ends[0])) - 1)
                    o1 = min(out_shape[c] - 1, int(np.ceil(ends[1])) + 1)
                if o1 < o0:
                    break
                in_sl.append(slice(p0, p1))
                out_sl.append(slice(o0, o1 + 1))
                sub_off.append(mc * o0 + tc - p0)
            else:
                sub = arr[tuple(in_sl)] == v
                region = tuple(out_sl)
                shape = tuple(s.stop - s.start for s in out_sl)
                p = _interp(sub.astype(np.float32), m, np.asarray(sub_off), shape, 1, np.float32)
                b = best[region]
                win = p > b
                out[region][win] = v
                np.maximum(b, p, out=b)
                total[region] += p
            continue
        p = _interp((arr == v).astype(np.float32), m, offset, out_shape, 1, np.float32)
        win = p > best
        out[full][win] = v
        np.maximum(best, p, out=best)
        total += p
    # background weight = 1 - sum of label weights (linear interpolation is a partition of unity)
    out[(1.0 - total) >= best] = 0
    return out


def _resample_array(arr: np.ndarray, m: np.ndarray, offset: np.ndarray, out_shape: tuple[int, ...], *,
                    kind: str, order: int, fills: Sequence[float | None], separate_axis: int | None = None,
                    anisotropic_order: int = 1) -> np.ndarray:
    """Resample ``arr`` ``(I, J, K)`` or ``(T|C, I, J, K)``; ``fills``: one per frame/channel
    (a single entry for 3D). Axis-aligned grids do all frames at once."""
    lead = arr.ndim - 3
    diag = _is_diagonal(m)
    if kind == "label":
        if order == 0:
            per_frame = lambda a: _interp(a, m, offset, out_shape, 0, a.dtype)  # noqa: E731
            whole = diag
        elif order == 1:
            per_frame = lambda a: _labels_linear(a, m, offset, out_shape)  # noqa: E731
            whole = False
        else:
            raise ValueError(f"expected order 0 (nearest) or 1 (per-label linear) for a label map, got {order}")
    else:
        out_dtype = np.float64 if arr.dtype == np.float64 else np.float32
        orders = None
        if separate_axis is not None and order > anisotropic_order and diag:
            # nnU-Net's rule: ``order`` in-plane, ``anisotropic_order`` along the coarse axis
            orders = [order] * 3
            orders[separate_axis] = anisotropic_order
        per_frame = lambda a: _interp(a, m, offset, out_shape, order, out_dtype, orders=orders)  # noqa: E731
        whole = diag
    if lead == 0 or whole:
        res = per_frame(arr)
    else:
        res = np.stack([per_frame(a) for a in arr])
    if kind == "probability" and order > 1:
        np.clip(res, 0.0, 1.0, out=res)
    if any(f is not None for f in fills):
        bad = _outside_mask(m, offset, arr.shape[lead:], out_shape)
        if bad is not None:
            if lead == 0:
                res[bad] = fills[0]
            else:
                for t, f in enumerate(fills):
                    if f is not None:
                        res[t][bad] = f
    return res


def _resample_volume(volume: Volume, target: Geometry, *, order: int | None, fill: Any,
                     separate_axis: int | None = None, anisotropic_order: int = 1) -> Volume:
    order = _check_order(default_order(volume.kind) if order is None else order)
    transform = np.linalg.inv(volume.affine) @ target.affine
    m, offset = transform[:3, :3], transform[:3, 3]
    if target.shape == volume.geometry.shape and np.allclose(m, np.eye(3), atol=1e-9) and \
            np.allclose(offset, 0.0, atol=1e-6):
        return Volume(volume.array, target, volume.kind, volume.leading_axis, volume.frame_times_ms, volume.meta)
    arr = volume.array
    if volume.kind == "label" and arr.dtype.kind not in "uib":
        raise InvalidLabelError.expected("an integer label array", f"dtype {arr.dtype}", path=volume.source,
                                         hint="read it with read_volume(path, kind='label')")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if volume.leading_axis is None:
        fills = [fill]
    else:
        fills = list(fill) if isinstance(fill, (list, tuple, np.ndarray)) else [fill] * arr.shape[0]
        if len(fills) != arr.shape[0]:
            raise ValueError(f"expected {arr.shape[0]} fill values (one per channel), got {len(fills)}")
    out = _resample_array(arr, m, offset, target.shape, kind=volume.kind, order=order, fills=fills,
                          separate_axis=separate_axis, anisotropic_order=anisotropic_order)
    return Volume(out, target, volume.kind, volume.leading_axis, volume.frame_times_ms, volume.meta)


# ---------------------------------------------------------------------------- public
def resample(volume: Volume, spacing: Sequence[float], *, order: int | None = None,
             anisotropy_threshold: float = 3.0, anisotropic_order: int = 1) -> Volume:
    """Resample to a new voxel spacing, keeping the field of view and the direction.

    Args:
        volume: 3D ``(I, J, K)`` or 4D ``(T|C, I, J, K)`` volume of any kind.
        spacing: target spacing in mm along the volume's own array axes I, J, K.
        order: spline order; default 3 for intensities, 1 for probabilities and labels
            (labels: 0 = nearest, 1 = per-label linear; higher is refused).
        anisotropy_threshold: nnU-Net's rule, see :func:`anisotropic_axis`; pass
            ``float("inf")`` to interpolate all axes jointly.
        anisotropic_order: order used along the coarse axis of anisotropic intensity data.

    Returns:
        Volume on :func:`resampled_geometry` (exact ``spacing``; grid centred on the same
        field of view). Intensities float32 (float64 kept), labels keep their dtype.
        Returns ``volume`` itself when the spacing already matches (within 1e-6 mm).
    """
    new = _check_spacing(spacing, source=volume.source)
    if np.allclose(new, volume.spacing, rtol=0, atol=1e-6):
        return volume
    target = resampled_geometry(volume.geometry, new)
    sep = anisotropic_axis(volume.spacing, new, threshold=anisotropy_threshold) if volume.kind == "intensity" else None
    return _resample_volume(volume, target, order=order, fill=None, separate_axis=sep,
                            anisotropic_order=_check_order(anisotropic_order))


def resample_to(volume: Volume, reference: Geometry | Volume, *, order: int | None = None,
                fill: float | Sequence[float] | None = 0) -> Volume:
    """Resample onto an arbitrary grid (any spacing, origin, direction) via world coordinates.

    Args:
        volume: 3D or 4D (leading axis kept) volume.
        reference: target grid (a Geometry, or a Volume whose geometry is used).
        order: as in :func:`resample`.
        fill: value for output voxels outside the input's field of view (beyond its outer
            voxel edges); one per channel for 4D volumes; ``None`` extends edge values.

    Returns:
        Volume with exactly ``reference``'s geometry (same kind, leading axis and dtype
        rules as :func:`resample`). When the grids already coincide the array is reused.
    """
    target = reference.geometry if isinstance(reference, Volume) else reference
    return _resample_volume(volume, target, order=order, fill=fill)
