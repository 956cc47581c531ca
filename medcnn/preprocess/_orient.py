"""Lossless reorientation: axis permutations and flips only, never interpolation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from medcnn.errors import ConfigError
from medcnn.volume import Geometry, Volume

__all__ = ["Reorient", "axis_reorient", "reorient", "plan_reorient", "check_orientation_code"]

#: world axis (0 = x: L/R, 1 = y: P/A, 2 = z: I/S) of each orientation letter
_WORLD_AXIS = {"L": 0, "R": 0, "P": 1, "A": 1, "I": 2, "S": 2}
_POSITIVE = {"R", "A", "S"}


def check_orientation_code(code: str) -> str:
    """Validate a three-letter orientation code such as ``"RAS"`` or ``"LPS"``.

    Letter ``c`` names the world direction array axis ``c`` points towards (nibabel's
    ``aff2axcodes`` convention, the same as :attr:`Geometry.orientation`).
    """
    if not isinstance(code, str) or len(code) != 3 or any(ch.upper() not in _WORLD_AXIS for ch in code):
        raise ConfigError.expected("a 3-letter orientation code from L/R, P/A, I/S such as 'RAS'", repr(code))
    code = code.upper()
    if len({_WORLD_AXIS[ch] for ch in code}) != 3:
        raise ConfigError.expected("one letter for each of L/R, P/A and I/S", repr(code))
    return code


@dataclass(frozen=True)
class Reorient:
    """A lossless reorientation: transpose the last three axes, then flip some of them.

    Attributes:
        permutation: new array axis ``a`` is old axis ``permutation[a]``.
        flip: whether new axis ``a`` is reversed (applied after the transpose).
        input_geometry: grid before (any orientation).
        output_geometry: grid after; every voxel keeps its world position.
    """

    permutation: tuple[int, int, int]
    flip: tuple[bool, bool, bool]
    input_geometry: Geometry
    output_geometry: Geometry

    @property
    def is_identity(self) -> bool:
        return self.permutation == (0, 1, 2) and not any(self.flip)

    def apply(self, array: np.ndarray, *, contiguous: bool = True) -> np.ndarray:
        """Reorient the last three axes of ``array`` (``(..., I, J, K)`` on the input grid).

        ``contiguous=False`` returns a strided view (no copy) for a consumer that reads it once."""
        arr = np.asarray(array)
        if tuple(arr.shape[-3:]) != self.input_geometry.shape:
            raise ValueError(f"expected an array ending in {self.input_geometry.shape}, got {arr.shape}")
        if self.is_identity:
            return arr
        lead = arr.ndim - 3
        out = np.transpose(arr, tuple(range(lead)) + tuple(lead + p for p in self.permutation))
        axes = tuple(lead + a for a in range(3) if self.flip[a])
        if axes:
            out = np.flip(out, axis=axes)
        return np.ascontiguousarray(out) if contiguous else out

    def invert(self, array: np.ndarray) -> np.ndarray:
        """Undo :meth:`apply` on an array ``(..., X, Y, Z)`` on the output grid (exact)."""
        arr = np.asarray(array)
        if tuple(arr.shape[-3:]) != self.output_geometry.shape:
            raise ValueError(f"expected an array ending in {self.output_geometry.shape}, got {arr.shape}")
        if self.is_identity:
            return arr
        lead = arr.ndim - 3
        axes = tuple(lead + a for a in range(3) if self.flip[a])
        if axes:
            arr = np.flip(arr, axis=axes)
        inverse = np.argsort(self.permutation)
        out = np.transpose(arr, tuple(range(lead)) + tuple(lead + int(p) for p in inverse))
        return np.ascontiguousarray(out)

    def apply_volume(self, volume: Volume) -> Volume:
        """Reorient a volume on the input grid (3D or 4D with a leading axis)."""
        self.input_geometry.check_matches(volume.geometry, what="the volume and the reorientation's input grid")
        return Volume(self.apply(volume.array), self.output_geometry, volume.kind, volume.leading_axis,
                      volume.frame_times_ms, volume.meta)

    def invert_volume(self, volume: Volume) -> Volume:
        """Bring a volume on the output grid back to the input grid (exact)."""
        self.output_geometry.check_matches(volume.geometry, what="the volume and the reorientation's output grid")
        return Volume(self.invert(volume.array), self.input_geometry, volume.kind, volume.leading_axis,
                      volume.frame_times_ms, volume.meta)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record (the ``"reorient"`` step of a :class:`PreprocessRecord`)."""
        return {
            "step": "reorient",
            "from": self.input_geometry.orientation,
            "to": self.output_geometry.orientation,
            "permutation": list(self.permutation),
            "flip": [bool(f) for f in self.flip],
            "geometry_before": self.input_geometry.to_dict(),
            "geometry_after": self.output_geometry.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Reorient":
        return cls(tuple(int(p) for p in d["permutation"]), tuple(bool(f) for f in d["flip"]),  # type: ignore[arg-type]
                   Geometry.from_dict(d["geometry_before"]), Geometry.from_dict(d["geometry_after"]))


def plan_reorient(geometry: Geometry, orientation: str = "RAS") -> Reorient:
    """Work out the permutation/flips that bring ``geometry`` closest to ``orientation``.

    For an oblique grid each array axis is matched to the world axis it is closest to
    (:attr:`Geometry.orientation`); the result stays oblique but its axes point
    towards the requested letters. No voxel moves in world space.
    """
    target = check_orientation_code(orientation)
    current = geometry.orientation
    by_world = {_WORLD_AXIS[ch]: (axis, ch) for axis, ch in enumerate(current)}
    perm: list[int] = []
    flip: list[bool] = []
    for ch in target:
        axis, cur_ch = by_world[_WORLD_AXIS[ch]]
        perm.append(axis)
        flip.append((cur_ch in _POSITIVE) != (ch in _POSITIVE))
    return axis_reorient(geometry, perm, flip)


def axis_reorient(geometry: Geometry, permutation: Sequence[int], flip: Sequence[bool] = (False, False, False)) -> Reorient:
    """The :class:`Reorient` that transposes ``geometry``'s array axes by ``permutation``
    (new axis ``a`` is old axis ``permutation[a]``) and then flips the new axes marked in
    ``flip``; no voxel moves in world space."""
    perm = [int(p) for p in permutation]
    flip = [bool(f) for f in flip]
    if sorted(perm) != [0, 1, 2] or len(flip) != 3:
        raise ValueError(f"expected a permutation of (0, 1, 2) and 3 flips, got {permutation!r}, {flip!r}")
    d = geometry.direction_matrix
    new_dir = np.empty((3, 3))
    corner = [0, 0, 0]
    for a, (p, f) in enumerate(zip(perm, flip)):
        new_dir[:, a] = -d[:, p] if f else d[:, p]
        if f:
            corner[p] = geometry.shape[p] - 1
    origin = geometry.index_to_world(corner)[0]
    out = Geometry(
        tuple(geometry.shape[p] for p in perm),
        tuple(geometry.spacing[p] for p in perm),
        tuple(origin),
        tuple(map(tuple, new_dir)),
        source=geometry.source,
    )
    return Reorient(tuple(perm), tuple(flip), geometry, out)  # type: ignore[arg-type]


def reorient(volume: Volume, orientation: str = "RAS") -> tuple[Volume, Reorient]:
    """Permute/flip the array so its axes point towards ``orientation`` (lossless).

    Args:
        volume: 3D ``(I, J, K)`` or 4D ``(T|C, I, J, K)`` volume (the leading axis is kept).
        orientation: three letters, e.g. ``"RAS"``: array axis 0 points to the patient's
            Right, axis 1 Anterior, axis 2 Superior.

    Returns:
        ``(reoriented volume, Reorient)``; ``Reorient.invert_volume`` undoes it exactly.
        World positions of all voxels are unchanged (only array order and geometry change).
    """
    plan = plan_reorient(volume.geometry, orientation)
    return plan.apply_volume(volume), plan
