"""Helpers shared by the measurement modules (not public API)."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from medcnn.errors import DimensionError, InvalidLabelError
from medcnn.io import as_label_array  # public label validation (light import: no readers loaded)
from medcnn.volume import Geometry, Volume

__all__ = ["slice_axis", "label_array", "count_values", "iter_slabs", "check_known_labels", "CHUNK_VOXELS"]

#: Voxels processed per chunk by the counting loops: bounds temporary memory to a few
#: tens of MB whatever the volume size.
CHUNK_VOXELS = 1 << 23


def slice_axis(geometry: Geometry) -> int:
    """Index (0, 1 or 2) of the slice axis: the array axis with the coarsest spacing.

    The acquisition plane is spanned by the two other (finer) axes. On ties (isotropic
    or two equal coarse axes) the *last* of the tied axes is chosen, which is K for an
    isotropic volume (the usual axial stacking axis).
    """
    sp = np.asarray(geometry.spacing, dtype=np.float64)
    tied = np.flatnonzero(sp >= sp.max() * (1 - 1e-6))
    return int(tied[-1])


def label_array(volume: Volume, *, allow_time: bool = False) -> np.ndarray:
    """The validated integer array of a label Volume ``(I, J, K)`` (or ``(T, I, J, K)``).

    Accepts ``kind="label"`` and integer-valued ``kind="intensity"`` volumes (as read by
    ``read_volume`` without ``kind``); refuses probability maps.
    """
    if not isinstance(volume, Volume):
        raise TypeError(f"expected a medcnn.volume.Volume, got {type(volume).__name__}")
    if volume.kind == "probability":
        raise InvalidLabelError.expected(
            "a label map", "a probability map", path=volume.source,
            hint="use label_volumes(), which also gives soft volumes of probability maps, or threshold/argmax first")
    if volume.leading_axis == "channel" or (volume.leading_axis == "time" and not allow_time):
        raise DimensionError.expected("a 3D label map (I, J, K)",
                                      f"a 4D volume with leading axis {volume.leading_axis!r} of shape {volume.shape}",
                                      path=volume.source,
                                      hint="measure one frame (volume.frame(t)) or use the cine functions")
    return as_label_array(volume.array, volume.source)


def iter_slabs(n_first: int, voxels_per_index: int) -> Iterator[slice]:
    """Slices along the first axis holding about ``CHUNK_VOXELS`` voxels each."""
    step = max(1, CHUNK_VOXELS // max(1, voxels_per_index))
    for start in range(0, n_first, step):
        yield slice(start, min(n_first, start + step))


def count_values(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct non-negative integer values of ``arr`` and their counts (int64), chunked.

    Uses ``np.bincount`` per slab (memory ~ 8 bytes x chunk), falling back to
    ``np.unique`` when the largest value is too big for a dense histogram.
    """
    if arr.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    hi = int(arr.max())
    if arr.ndim == 0:
        arr = arr.reshape(1)
    per_index = int(np.prod(arr.shape[1:])) if arr.ndim > 1 else 1
    if hi < (1 << 24):
        total = np.zeros(hi + 1, dtype=np.int64)
        for sl in iter_slabs(arr.shape[0], per_index):
            total += np.bincount(arr[sl].ravel(), minlength=hi + 1)
        values = np.flatnonzero(total)
        return values.astype(np.int64), total[values]
    acc: dict[int, int] = {}
    for sl in iter_slabs(arr.shape[0], per_index):
        v, c = np.unique(arr[sl], return_counts=True)
        for vi, ci in zip(v.tolist(), c.tolist()):
            acc[vi] = acc.get(vi, 0) + ci
    values = np.array(sorted(acc), dtype=np.int64)
    return values, np.array([acc[v] for v in values.tolist()], dtype=np.int64)


def check_known_labels(values: np.ndarray, counts: np.ndarray, allowed, *, path: str | None, what: str) -> None:
    """Refuse labels outside ``allowed`` (0 is always allowed).

    Args:
        values, counts: distinct label values and their voxel counts (:func:`count_values`).
        allowed: the label values the caller knows the meaning of.
        what: where ``allowed`` comes from, for the message (e.g. "the cardiac label config").
    """
    known = {0} | {int(v) for v in allowed}
    bad = [(int(v), int(n)) for v, n in zip(values.tolist(), counts.tolist()) if int(v) not in known and n > 0]
    if bad:
        listing = ", ".join(f"{v} ({n} voxels)" for v, n in bad[:8])
        raise InvalidLabelError.expected(
            f"only labels {sorted(known)} ({what})", f"unexpected label(s) {listing}", path=path,
            hint="map the labels to the expected values, or pass the matching label configuration")
