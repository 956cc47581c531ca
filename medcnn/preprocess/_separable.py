"""Separable resampling on axis-aligned grids: one banded matrix per axis, applied with BLAS.

When the output grid shares the input's axis directions (every :func:`resample`, every
undo of a resampling step), ``scipy.ndimage.affine_transform`` with a diagonal matrix
computes, along each axis ``a`` independently, the coordinate ``x = (o + shift / scale) *
scale`` of output index ``o`` in the input and interpolates there (B-spline of ``order``,
``mode="nearest"``; for ``order > 1`` after a spline prefilter of the edge-padded input).
Everything it does along one axis is linear in the data, so it is one matrix ``A_a``
``(n_out, n_in)`` per axis and the whole resampling is ``A_0 ⊗ A_1 ⊗ A_2``.

This module builds each ``A_a`` *with scipy's own routine* (``affine_transform`` of an
identity matrix, so coordinates, rounding of ties, edge handling and the prefilter are
scipy's exactly), keeps its band (entries above 1e-9; the cubic prefilter's influence
decays as 0.268 per voxel), and applies it along each axis as a few matrix products of
row blocks (float32 in, float32 out, multi-threaded BLAS), all leading channels at once.
Nearest neighbour (order 0) is an index gather, which keeps integer dtypes exactly.
Results equal scipy's to float32 rounding (tested for orders 0, 1 and 3).

numpy and scipy only (no torch).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np

__all__: list[str] = []  # private helpers of medcnn.preprocess

#: Weights below this (absolute; rows sum to 1) are dropped from the band.
_BAND_TOL = 1e-9
#: Output rows per matrix block: enough for efficient BLAS, few wasted columns per block.
_BLOCK_ROWS = 32


@dataclass(frozen=True)
class AxisOperator:
    """Interpolation along one axis: ``out[o] = sum_i A[o, i] * in[i]``.

    Attributes:
        n_in, n_out: input and output lengths.
        index: for a pure selection (nearest neighbour), ``out = in[index]``; else ``None``.
        blocks: ``(r0, r1, c0, c1, W)`` with ``W = A[r0:r1, c0:c1]`` (float64); every
            non-zero of ``A`` lies in one block.
    """

    n_in: int
    n_out: int
    index: np.ndarray | None
    blocks: tuple[tuple[int, int, int, int, np.ndarray], ...]

    @property
    def taps_per_output(self) -> float:
        """Multiply-adds per output value (matrix blocks), ~0 for a selection."""
        if self.index is not None:
            return 0.25
        return sum((r1 - r0) * (c1 - c0) for r0, r1, c0, c1, _ in self.blocks) / max(self.n_out, 1)

    @property
    def is_identity(self) -> bool:
        return self.index is not None and self.n_in == self.n_out and bool(
            np.array_equal(self.index, np.arange(self.n_in)))


def axis_matrix(n_in: int, n_out: int, scale: float, shift: float, order: int) -> np.ndarray:
    """Dense ``(n_out, n_in)`` float64 matrix of scipy's 1D rule (see module docstring).

    ``scale`` and ``shift`` are the diagonal entry and offset passed to
    ``scipy.ndimage.affine_transform``: output index ``o`` reads input coordinate
    ``scale * o + shift``.
    """
    from scipy import ndimage

    eye = np.eye(n_in, dtype=np.float64)
    # axis 1 maps onto itself at integer positions: an interpolating spline returns the
    # identity there (to ~1e-16), so the result is A along axis 0.
    a = ndimage.affine_transform(eye, np.array([scale, 1.0]), offset=np.array([shift, 0.0]),
                                 output_shape=(n_out, n_in), order=order, mode="nearest",
                                 prefilter=order > 1)
    a[np.abs(a) < _BAND_TOL] = 0.0
    return a


@lru_cache(maxsize=64)
def axis_operator(n_in: int, n_out: int, scale: float, shift: float, order: int) -> AxisOperator:
    """The banded :class:`AxisOperator` of :func:`axis_matrix` (cached per geometry)."""
    if n_in == n_out and scale == 1.0 and shift == 0.0:
        return AxisOperator(n_in, n_out, np.arange(n_in), ())
    a = axis_matrix(n_in, n_out, scale, shift, order)
    nz = a != 0
    if order == 0 or (np.all(nz.sum(axis=1) == 1) and np.allclose(a[nz], 1.0, rtol=0, atol=1e-12)):
        return AxisOperator(n_in, n_out, np.argmax(np.abs(a), axis=1).astype(np.intp), ())
    first = np.where(nz.any(axis=1), np.argmax(nz, axis=1), n_in)
    last = np.where(nz.any(axis=1), n_in - 1 - np.argmax(nz[:, ::-1], axis=1), -1)
    blocks = []
    for r0 in range(0, n_out, _BLOCK_ROWS):
        r1 = min(n_out, r0 + _BLOCK_ROWS)
        c0, c1 = int(first[r0:r1].min()), int(last[r0:r1].max()) + 1
        if c1 <= c0:  # all-zero rows (cannot happen with mode="nearest"; kept for safety)
            c0, c1 = 0, 1
        blocks.append((r0, r1, c0, c1, np.ascontiguousarray(a[r0:r1, c0:c1])))
    return AxisOperator(n_in, n_out, None, tuple(blocks))


def apply_axis(arr: np.ndarray, op: AxisOperator, axis: int) -> np.ndarray:
    """Apply ``op`` along ``axis`` of a C-contiguous array (float for matrices; any dtype
    for a selection). Returns a new C-contiguous array (or ``arr`` for the identity)."""
    if op.is_identity:
        return arr
    if arr.shape[axis] != op.n_in:
        raise ValueError(f"expected length {op.n_in} along axis {axis}, got shape {arr.shape}")
    if op.index is not None:
        return np.take(arr, op.index, axis=axis)
    arr = np.ascontiguousarray(arr)
    lead = int(np.prod(arr.shape[:axis], dtype=np.int64))
    tail = int(np.prod(arr.shape[axis + 1:], dtype=np.int64))
    out_shape = arr.shape[:axis] + (op.n_out,) + arr.shape[axis + 1:]
    out = np.empty(out_shape, dtype=arr.dtype)
    if tail == 1:  # last axis: (lead, n_in) @ W.T -> (lead, rows)
        a2, o2 = arr.reshape(lead, op.n_in), out.reshape(lead, op.n_out)
        for r0, r1, c0, c1, w in op.blocks:
            np.matmul(a2[:, c0:c1], w.T.astype(arr.dtype, copy=False), out=o2[:, r0:r1])
        return out
    a3, o3 = arr.reshape(lead, op.n_in, tail), out.reshape(lead, op.n_out, tail)
    for r0, r1, c0, c1, w in op.blocks:
        np.matmul(w.astype(arr.dtype, copy=False), a3[:, c0:c1], out=o3[:, r0:r1])
    return out


def memory_order(arr: np.ndarray) -> tuple[int, ...]:
    """The last three axes of ``arr`` from the slowest- to the fastest-varying in memory
    (by absolute stride; ``(0, 1, 2)`` for C order, ``(2, 1, 0)`` for Fortran order)."""
    lead = arr.ndim - 3
    strides = [abs(arr.strides[lead + a]) if arr.shape[lead + a] > 1 else 0 for a in range(3)]
    return tuple(sorted(range(3), key=lambda a: (-strides[a], a)))


def empty_spatial_like(leading: Sequence[int], like: np.ndarray, dtype=np.float32) -> np.ndarray:
    """Uninitialised ``(*leading, I, J, K)`` array (``like``: ``(I, J, K)``) whose spatial axes
    are laid out in ``like``'s memory order, so element-wise copies from ``like`` (also a
    flipped or transposed view) read memory in order."""
    order = memory_order(like)
    lead = len(leading)
    buf = np.empty(tuple(leading) + tuple(like.shape[a] for a in order), dtype=dtype)
    return buf.transpose(tuple(range(lead)) + tuple(lead + order.index(a) for a in range(3)))


#: Measured on a 2-core AVX2 CPU: along the fastest-varying memory axis a block product
#: (many rows x a few columns) runs at about 1/2.5 of the speed of the other axes.
_LAST_AXIS_PENALTY = 2.5


def _cheapest_order(ops: Sequence[AxisOperator], order: Sequence[int], shape: Sequence[int]) -> tuple[int, ...]:
    """Order of the spatial axes to apply (identities left out) with the fewest estimated
    multiply-adds: shrinking axes early, growing ones late, the fastest memory axis
    (``order[-1]``) preferably on the smallest array."""
    axes = [a for a in range(3) if not ops[a].is_identity]
    best, best_cost = tuple(axes), float("inf")
    for perm in itertools.permutations(axes):
        size = [float(n) for n in shape]
        cost = 0.0
        for a in perm:
            size[a] = ops[a].n_out
            cost += float(np.prod(size)) * ops[a].taps_per_output * (_LAST_AXIS_PENALTY if a == order[-1] else 1.0)
        if cost < best_cost:
            best, best_cost = perm, cost
    return best


def resample_separable(arr: np.ndarray, scales: Sequence[float], shifts: Sequence[float],
                       out_shape: Sequence[int], orders: Sequence[int]) -> np.ndarray:
    """Resample the last three axes of ``arr`` (``(..., I, J, K)``, leading axes kept).

    Along spatial axis ``a`` the output index ``o`` reads input coordinate
    ``scales[a] * o + shifts[a]`` with spline order ``orders[a]`` (scipy's rule, edge
    values extended). Float arrays keep their dtype; for order 0 any dtype is kept.
    Axes that shrink the most are done first (fewer voxels for the later ones). The work
    follows ``arr``'s memory order (C, Fortran or any axis order of a buffer from
    :func:`empty_spatial_like`); the result has that same spatial layout.
    """
    lead = arr.ndim - 3
    ops = [axis_operator(int(arr.shape[lead + a]), int(out_shape[a]), float(scales[a]), float(shifts[a]),
                         int(orders[a])) for a in range(3)]
    order = memory_order(arr)
    lead_axes = tuple(range(lead))
    work = np.ascontiguousarray(arr.transpose(lead_axes + tuple(lead + a for a in order)))
    for a in _cheapest_order(ops, order, arr.shape[lead:]):
        work = apply_axis(work, ops[a], lead + order.index(a))
    return work.transpose(lead_axes + tuple(lead + order.index(a) for a in range(3)))


# ---------------------------------------------------------------------------- labels of linear interpolation
@lru_cache(maxsize=64)
def linear_taps(n_in: int, n_out: int, scale: float, shift: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """scipy's linear rule along one axis as two taps: ``(lo, w_lo, w_hi)``, so that
    ``out[o] = w_lo[o] * in[lo[o]] + w_hi[o] * in[min(lo[o] + 1, n_in - 1)]``, weights >= 0."""
    a = axis_matrix(n_in, n_out, scale, shift, 1)
    nz = a != 0
    lo = np.argmax(nz, axis=1).astype(np.intp)
    w_lo = a[np.arange(n_out), lo]
    hi = np.minimum(lo + 1, n_in - 1)
    w_hi = np.where(hi > lo, a[np.arange(n_out), hi], 0.0)
    if not np.allclose(w_lo + w_hi, 1.0, atol=1e-12) or np.any(a < 0):  # pragma: no cover - scipy's rule
        raise RuntimeError("internal error: the linear rule is not two non-negative taps")
    return lo, w_lo, w_hi


def _forward_min_max(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Min and max of each voxel's forward 2x2x2 neighbourhood (itself and +1 along each
    axis, clipped at the far border)."""
    mn, mx = labels, labels
    for ax in range(3):
        n = labels.shape[ax]
        if n == 1:
            continue
        lo = (slice(None),) * ax + (slice(0, n - 1),)
        hi = (slice(None),) * ax + (slice(1, n),)
        new_mn, new_mx = mn.copy(), mx.copy()
        np.minimum(mn[lo], mn[hi], out=new_mn[lo])
        np.maximum(mx[lo], mx[hi], out=new_mx[lo])
        mn, mx = new_mn, new_mx
    return mn, mx


def labels_of_linear_resample(prob: np.ndarray, labels: np.ndarray, scales: Sequence[float],
                              shifts: Sequence[float], out_shape: Sequence[int],
                              reduce: Callable[[np.ndarray], np.ndarray], *,
                              slab: int = 16) -> tuple[np.ndarray, int]:
    """``reduce(linear resample of prob)`` without resampling ``prob`` where it cannot matter.

    Args:
        prob: ``(C, X, Y, Z)`` float32 probabilities on the input grid of the resampling.
        labels: ``reduce(prob)``, ``(X, Y, Z)`` integer.
        scales, shifts, out_shape: the axis-aligned mapping (as :func:`resample_separable`).
        reduce: ``(C, ...) -> (...)`` labels whose every label region is convex in
            probability space (argmax with ties to the lower channel; thresholds).
        slab: output planes (along axis 0) handled together.

    Linear interpolation is a convex combination of the 2x2x2 input voxels around an
    output voxel. Where those all have the same label, the interpolated probabilities lie
    in that label's convex region and the output takes that label: a gather. The other
    output voxels (next to a label boundary) are interpolated with the same banded
    matrices as :func:`resample_separable` — per slab of output planes, only over the
    box that holds them — and reduced.

    Returns:
        ``(labels on out_shape (dtype of labels), number of output voxels next to a boundary)``.
    """
    shape_in = labels.shape
    taps = [linear_taps(int(shape_in[a]), int(out_shape[a]), float(scales[a]), float(shifts[a])) for a in range(3)]
    mn, mx = _forward_min_max(labels)
    top = int(labels.max()) if labels.size else 0
    code_dtype = np.uint8 if top < 255 else (np.uint16 if top < 65535 else np.int64)
    sentinel = np.iinfo(code_dtype).max
    code = labels.astype(code_dtype)
    code[mn != mx] = sentinel
    del mn, mx
    for a in sorted(range(3), key=lambda a: out_shape[a] / shape_in[a]):  # shrink first, grow last
        code = np.take(code, taps[a][0], axis=a)
    boundary = code == sentinel
    n_boundary = int(np.count_nonzero(boundary))
    out = code if code.dtype == labels.dtype else code.astype(labels.dtype)
    if not n_boundary:
        return out, 0
    dense = [_dense_linear(int(shape_in[a]), int(out_shape[a]), float(scales[a]), float(shifts[a]))
             for a in range(3)]
    for o0 in range(0, out_shape[0], slab):
        o1 = min(out_shape[0], o0 + slab)
        mask = boundary[o0:o1]
        if not mask.any():
            continue
        rows = (o0, o1)
        box = [rows]
        for ax in (1, 2):
            hit = np.flatnonzero(mask.any(axis=tuple(a for a in (0, 1, 2) if a != ax)))
            box.append((int(hit[0]), int(hit[-1]) + 1))
        sub_ops, in_box = [], []
        for a, (b0, b1) in enumerate(box):
            lo = taps[a][0]
            i0, i1 = int(lo[b0]), min(int(lo[b1 - 1]) + 2, shape_in[a])
            w = dense[a][b0:b1, i0:i1]
            sub_ops.append(AxisOperator(i1 - i0, b1 - b0, None, ((0, b1 - b0, 0, i1 - i0, w),)))
            in_box.append(slice(i0, i1))
        work = np.ascontiguousarray(prob[(slice(None),) + tuple(in_box)])
        for a in _cheapest_order(sub_ops, (0, 1, 2), work.shape[1:]):
            work = apply_axis(work, sub_ops[a], 1 + a)
        region = tuple(slice(b0, b1) for b0, b1 in box)
        sub_mask = boundary[region]
        out[region][sub_mask] = np.asarray(reduce(work))[sub_mask]
    return out, n_boundary


@lru_cache(maxsize=8)
def _dense_linear(n_in: int, n_out: int, scale: float, shift: float) -> np.ndarray:
    return axis_matrix(n_in, n_out, scale, shift, 1)
