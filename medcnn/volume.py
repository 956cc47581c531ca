"""`Geometry` and `Volume`: voxels never travel without their geometry.

World convention
----------------
medcnn uses one world convention everywhere: **RAS+ millimetres**, the same as NIfTI
and nibabel. ``+x`` points towards the patient's **R**ight, ``+y`` towards **A**nterior,
``+z`` towards **S**uperior. DICOM, ITK and SimpleITK use LPS+ (``+x`` to the patient's left, ``+y`` to the back);
the conversion (negate x and y) lives in :mod:`medcnn.io` only.

Array axes are ``(I, J, K)``: ``array[i, j, k]`` is the voxel whose centre is at
``affine @ [i, j, k, 1]``. For a DICOM series I runs along a row (column index), J down
the columns (row index) and K across slices. 4D arrays carry a leading axis that is
either time (cine: ``(T, I, J, K)``) or channel (probabilities: ``(C, I, J, K)``).

Geometry
--------
``affine = [[D @ diag(spacing), origin], [0, 0, 0, 1]]`` where the columns of the 3x3
``direction`` matrix ``D`` are unit vectors of the I, J and K axes in RAS+ world space,
``spacing`` is in mm and ``origin`` is the world position (mm) of voxel ``(0, 0, 0)``'s
centre.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from medcnn.errors import ConfigError, DimensionError, GeometryMismatchError, InvalidGeometryError

__all__ = [
    "Geometry",
    "Volume",
    "VolumeKind",
    "LeadingAxis",
    "DEFAULT_ATOL_MM",
    "NIFTI_HEADER_INCONSISTENT",
    "nonzero_extent",
]

VolumeKind = Literal["intensity", "label", "probability"]
LeadingAxis = Literal["time", "channel"]

#: Default tolerance (mm) when comparing origins and spacings, and (unitless) directions.
DEFAULT_ATOL_MM = 1e-4
_ORTHONORMAL_TOL = 1e-3
#: QC code of an input whose NIfTI header disagreed with itself (sform / qform / pixdim, or
#: neither form set) and was read by medcnn's documented rule (docs/io.md); see
#: :attr:`Volume.read_notes`.
NIFTI_HEADER_INCONSISTENT = "NIFTI_HEADER_INCONSISTENT"
_AXIS_LETTERS = (("L", "R"), ("P", "A"), ("I", "S"))


def _as_tuple(values: Any, n: int, name: str, *, source: str | None) -> tuple[float, ...]:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size != n:
        raise InvalidGeometryError.expected(f"{n} values for {name}", f"{arr.size}", path=source)
    return tuple(float(v) for v in arr)


@dataclass(frozen=True)
class Geometry:
    """Where a 3D voxel grid lies in RAS+ world space.

    Attributes:
        shape: ``(I, J, K)`` voxel counts.
        spacing: voxel size along I, J, K in mm (all finite and > 0).
        origin: RAS+ world position in mm of the centre of voxel ``(0, 0, 0)``.
        direction: 3x3 matrix, row-major tuple of rows; column ``c`` is the unit vector
            of array axis ``c`` in RAS+ world space. Must be orthonormal (within 1e-3).
        source: file the geometry came from, used only in error messages.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[tuple[float, float, float], ...] = (
        (1.0, 0.0, 0.0),
        (0.0, 1.0, 0.0),
        (0.0, 0.0, 1.0),
    )
    source: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        src = self.source
        shape = tuple(int(s) for s in np.asarray(self.shape).reshape(-1))
        if len(shape) != 3:
            raise DimensionError.expected("a 3D grid shape (I, J, K)", f"{len(shape)}D shape {shape}", path=src)
        if any(s < 1 for s in shape):
            raise InvalidGeometryError.expected("positive grid sizes", f"shape {shape}", path=src)
        spacing = _as_tuple(self.spacing, 3, "spacing", source=src)
        if not all(np.isfinite(spacing)) or any(s <= 0 for s in spacing):
            raise InvalidGeometryError.expected(
                "finite spacing > 0 mm on every axis",
                f"spacing {spacing}",
                path=src,
                hint="Fix the header (pixdim / PixelSpacing) or pass the correct spacing explicitly",
            )
        origin = _as_tuple(self.origin, 3, "origin", source=src)
        if not all(np.isfinite(origin)):
            raise InvalidGeometryError.expected("a finite origin", f"origin {origin}", path=src)
        d = np.asarray(self.direction, dtype=np.float64)
        if d.shape != (3, 3):
            raise InvalidGeometryError.expected("a 3x3 direction matrix", f"shape {d.shape}", path=src)
        if not np.all(np.isfinite(d)):
            raise InvalidGeometryError.expected("a finite direction matrix", "NaN or infinite entries", path=src)
        err = float(np.max(np.abs(d.T @ d - np.eye(3))))
        if err > _ORTHONORMAL_TOL:
            raise InvalidGeometryError.expected(
                "an orthonormal direction matrix (unit, perpendicular axes)",
                f"deviation {err:.3g} from orthonormal",
                path=src,
                hint="The affine may be sheared or hold a zero column; fix the header",
            )
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "direction", tuple(tuple(float(v) for v in row) for row in d))

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_affine(cls, affine: Any, shape: Sequence[int], *, source: str | None = None) -> "Geometry":
        """Build from a 4x4 RAS+ affine (voxel index → world mm) and a 3D shape."""
        a = np.asarray(affine, dtype=np.float64)
        if a.shape != (4, 4):
            raise InvalidGeometryError.expected("a 4x4 affine", f"shape {a.shape}", path=source)
        if not np.all(np.isfinite(a)):
            raise InvalidGeometryError.expected("a finite affine", "NaN or infinite entries", path=source)
        m = a[:3, :3]
        spacing = np.linalg.norm(m, axis=0)
        if np.any(spacing <= 0):
            raise InvalidGeometryError.expected(
                "finite spacing > 0 mm on every axis", f"spacing {tuple(spacing.tolist())}", path=source
            )
        direction = m / spacing
        return cls(tuple(shape), tuple(spacing), tuple(a[:3, 3]), tuple(map(tuple, direction)), source=source)

    # ------------------------------------------------------------------ derived values
    @property
    def direction_matrix(self) -> np.ndarray:
        """3x3 float64 array; column c = unit vector of array axis c (RAS+)."""
        return np.asarray(self.direction, dtype=np.float64)

    @property
    def affine(self) -> np.ndarray:
        """4x4 float64 RAS+ affine mapping ``(i, j, k, 1)`` to world mm."""
        a = np.eye(4)
        a[:3, :3] = self.direction_matrix * np.asarray(self.spacing)
        a[:3, 3] = self.origin
        return a

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in mL (= cm^3 = 1000 mm^3)."""
        sx, sy, sz = self.spacing
        return sx * sy * sz / 1000.0

    @property
    def orientation(self) -> str:
        """Three-letter orientation code of the array axes, e.g. ``"RAS"`` or ``"LPS"``.

        Letter ``c`` names the world direction that array axis ``c`` points *towards*
        (nibabel's ``aff2axcodes`` convention).
        """
        d = np.abs(self.direction_matrix)
        letters = [""] * 3
        rows, cols = [0, 1, 2], [0, 1, 2]
        # greedy assignment of array axes to distinct world axes, largest cosine first
        for _ in range(3):
            sub = d[np.ix_(rows, cols)]
            r, c = np.unravel_index(int(np.argmax(sub)), sub.shape)
            world, col = rows[r], cols[c]
            sign = self.direction_matrix[world, col]
            letters[col] = _AXIS_LETTERS[world][1 if sign > 0 else 0]
            rows.remove(world)
            cols.remove(col)
        return "".join(letters)

    @property
    def n_voxels(self) -> int:
        return int(np.prod(self.shape))

    def index_to_world(self, ijk: Any) -> np.ndarray:
        """Voxel indices ``(N, 3)`` (may be fractional) → RAS+ world mm ``(N, 3)``."""
        p = np.atleast_2d(np.asarray(ijk, dtype=np.float64))
        a = self.affine
        return p @ a[:3, :3].T + a[:3, 3]

    def world_to_index(self, xyz: Any) -> np.ndarray:
        """RAS+ world mm ``(N, 3)`` → fractional voxel indices ``(N, 3)``."""
        p = np.atleast_2d(np.asarray(xyz, dtype=np.float64))
        inv = np.linalg.inv(self.affine)
        return p @ inv[:3, :3].T + inv[:3, 3]

    def corners_world(self) -> np.ndarray:
        """World positions (8, 3) of the centres of the 8 corner voxels."""
        i, j, k = (np.array([0, s - 1]) for s in self.shape)
        grid = np.array(np.meshgrid(i, j, k, indexing="ij")).reshape(3, -1).T
        return self.index_to_world(grid)

    # ------------------------------------------------------------------ comparison
    def differences(self, other: "Geometry", *, atol_mm: float = DEFAULT_ATOL_MM) -> list[str]:
        """Human-readable list of what differs (empty when the grids match)."""
        out = []
        if self.shape != other.shape:
            out.append(f"shape {self.shape} vs {other.shape}")
        if not np.allclose(self.spacing, other.spacing, rtol=0, atol=atol_mm):
            out.append(f"spacing {_fmt(self.spacing)} vs {_fmt(other.spacing)} mm")
        if not np.allclose(self.origin, other.origin, rtol=0, atol=atol_mm):
            out.append(f"origin {_fmt(self.origin)} vs {_fmt(other.origin)} mm")
        # a direction error of e rad moves the far corner by e * extent mm
        extent = max(max(self.shape) * max(self.spacing), 1.0)
        if not np.allclose(self.direction_matrix, other.direction_matrix, rtol=0, atol=max(atol_mm / extent, 1e-7)):
            out.append(f"direction {self.orientation} {_fmt(np.ravel(self.direction))} vs "
                       f"{other.orientation} {_fmt(np.ravel(other.direction))}")
        return out

    def isclose(self, other: "Geometry", *, atol_mm: float = DEFAULT_ATOL_MM) -> bool:
        """True when shape matches exactly and spacing/origin/direction within ``atol_mm``."""
        return not self.differences(other, atol_mm=atol_mm)

    def check_matches(
        self,
        other: "Geometry",
        *,
        atol_mm: float = DEFAULT_ATOL_MM,
        what: str = "volumes",
        hint: str | None = None,
    ) -> None:
        """Raise :class:`GeometryMismatchError` naming both grids unless they match."""
        diffs = self.differences(other, atol_mm=atol_mm)
        if diffs:
            a = self.source or "first"
            b = other.source or "second"
            raise GeometryMismatchError(
                f"{what} must share one voxel grid (tolerance {atol_mm} mm): expected {b} to match {a}, "
                f"got {'; '.join(diffs)}. "
                + (hint or "Resample one onto the other (medcnn.preprocess.resample_to(volume, reference)) "
                   "or pass resample=True where offered"),
                path=other.source or self.source,
            )

    def crop(self, start: Sequence[int], stop: Sequence[int]) -> "Geometry":
        """The sub-grid of voxels ``start <= index < stop`` (same spacing and direction;
        the origin moves to voxel ``start``, so world positions are unchanged)."""
        lo = [int(v) for v in start]
        hi = [int(v) for v in stop]
        if len(lo) != 3 or len(hi) != 3 or any(not 0 <= a < b <= n for a, b, n in zip(lo, hi, self.shape)):
            raise DimensionError.expected(f"a non-empty box with 0 <= start < stop <= {self.shape}",
                                          f"start {tuple(start)}, stop {tuple(stop)}", path=self.source)
        origin = tuple(float(v) for v in self.index_to_world(lo)[0])
        return Geometry(tuple(b - a for a, b in zip(lo, hi)), self.spacing, origin, self.direction,
                        source=self.source)

    def with_source(self, source: str | None) -> "Geometry":
        return replace(self, source=source)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly description (units: mm)."""
        return {
            "shape": list(self.shape),
            "spacing_mm": list(self.spacing),
            "origin_mm": list(self.origin),
            "direction": [list(r) for r in self.direction],
            "orientation": self.orientation,
            "world_convention": "RAS+",
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Geometry":
        return cls(tuple(d["shape"]), tuple(d["spacing_mm"]), tuple(d["origin_mm"]),
                   tuple(map(tuple, d["direction"])))


def nonzero_extent(mask: np.ndarray) -> tuple[tuple[int, int], ...] | None:
    """``((start, stop), ...)`` per axis of the ``True`` voxels of a boolean mask (``stop``
    exclusive), or ``None`` when there are none."""
    if not mask.any():
        return None
    box = []
    for axis in range(mask.ndim):
        idx = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append((int(idx[0]), int(idx[-1]) + 1))
    return tuple(box)


def _fmt(values: Any) -> str:
    return "(" + ", ".join(f"{float(v):.6g}" for v in np.ravel(values)) + ")"


@dataclass(frozen=True, eq=False)
class Volume:
    """An array with its geometry.

    Attributes:
        array: ``(I, J, K)`` or, with ``leading_axis`` set, ``(T, I, J, K)`` (cine) or
            ``(C, I, J, K)`` (channels / class probabilities). Any numeric dtype.
        geometry: the 3D grid of the last three axes.
        kind: ``"intensity"`` (scan), ``"label"`` (integer label map) or ``"probability"``.
        leading_axis: ``None`` for 3D, ``"time"`` or ``"channel"`` for 4D.
        frame_times_ms: for cine data, trigger time of each frame in ms (ascending).
        meta: free, *non-identifying* metadata (modality, series description...).
    """

    array: np.ndarray
    geometry: Geometry
    kind: VolumeKind = "intensity"
    leading_axis: LeadingAxis | None = None
    frame_times_ms: tuple[float, ...] | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        arr = np.asarray(self.array)
        src = self.geometry.source
        expected_ndim = 3 if self.leading_axis is None else 4
        if arr.ndim != expected_ndim:
            what = "3D (I, J, K)" if expected_ndim == 3 else f"4D ({self.leading_axis}, I, J, K)"
            raise DimensionError.expected(f"a {what} array", f"{arr.ndim}D array of shape {arr.shape}", path=src)
        if tuple(arr.shape[-3:]) != self.geometry.shape:
            raise DimensionError.expected(
                f"array shape ending in {self.geometry.shape}", f"{arr.shape}", path=src)
        if self.kind not in ("intensity", "label", "probability"):
            raise ValueError(f"expected kind intensity/label/probability, got {self.kind!r}")
        if self.frame_times_ms is not None:
            if self.leading_axis != "time":
                raise ValueError("frame_times_ms needs leading_axis='time'")
            times = tuple(float(t) for t in self.frame_times_ms)
            if len(times) != arr.shape[0]:
                raise DimensionError.expected(f"{arr.shape[0]} frame times", f"{len(times)}", path=src)
            object.__setattr__(self, "frame_times_ms", times)
        object.__setattr__(self, "array", arr)
        object.__setattr__(self, "meta", dict(self.meta))

    # ------------------------------------------------------------------ shortcuts
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return self.geometry.spacing

    @property
    def affine(self) -> np.ndarray:
        return self.geometry.affine

    @property
    def voxel_volume_ml(self) -> float:
        return self.geometry.voxel_volume_ml

    @property
    def source(self) -> str | None:
        return self.geometry.source

    @property
    def read_notes(self) -> list[dict[str, Any]]:
        """What the reader found wrong in the file's header and how it resolved it (e.g. a
        NIfTI sform whose scales disagree with pixdim): dicts with ``code`` (e.g.
        ``NIFTI_HEADER_INCONSISTENT``), ``message`` (one line naming the file), ``rule`` (how
        the geometry was chosen) and ``header`` (the header fields found). Empty for clean
        files. Kept in ``meta["read_notes"]``, so volumes derived from this one keep it."""
        return [dict(n) for n in self.meta.get("read_notes") or []]

    @property
    def n_frames(self) -> int | None:
        """Number of frames for cine data, else ``None``."""
        return int(self.array.shape[0]) if self.leading_axis == "time" else None

    @property
    def n_channels(self) -> int | None:
        return int(self.array.shape[0]) if self.leading_axis == "channel" else None

    # ------------------------------------------------------------------ derivation
    def with_array(
        self,
        array: Any,
        *,
        kind: VolumeKind | None = None,
        leading_axis: LeadingAxis | None | str = "same",
        frame_times_ms: Sequence[float] | None | str = "same",
    ) -> "Volume":
        """Same geometry, new array (shape checked against the geometry)."""
        lead = self.leading_axis if leading_axis == "same" else leading_axis
        times = self.frame_times_ms if frame_times_ms == "same" else frame_times_ms
        if lead != "time":
            times = None
        return Volume(np.asarray(array), self.geometry, kind or self.kind, lead, times, self.meta)  # type: ignore[arg-type]

    def crop(self, start: Sequence[int], stop: Sequence[int]) -> "Volume":
        """The voxels ``start <= index < stop`` of the spatial axes (any leading axis kept),
        on the matching sub-grid (:meth:`Geometry.crop`): world positions are unchanged."""
        g = self.geometry.crop(start, stop)
        sl = (Ellipsis,) + tuple(slice(int(a), int(b)) for a, b in zip(start, stop))
        return Volume(np.ascontiguousarray(self.array[sl]), g, self.kind, self.leading_axis, self.frame_times_ms,
                      self.meta)

    def nonzero_box(self, margin_mm: float = 0.0) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        """``(start, stop)`` voxel indices of the box around the non-zero voxels (of any
        frame or channel), grown by ``margin_mm`` on every side (rounded up to whole voxels
        per axis, clipped to the grid); ``None`` when every voxel is zero. Use with
        :meth:`crop`, e.g. ``scan.crop(*labels.nonzero_box(margin_mm=20))``."""
        if not np.isfinite(margin_mm) or margin_mm < 0:
            raise ConfigError.expected("margin_mm >= 0 (mm)", repr(margin_mm), path=self.source)
        nz = np.asarray(self.array) != 0
        box = nonzero_extent(nz.any(axis=0) if nz.ndim == 4 else nz)
        if box is None:
            return None
        pad = [int(np.ceil(margin_mm / s - 1e-9)) for s in self.spacing]
        return (tuple(max(a - p, 0) for (a, _), p in zip(box, pad)),
                tuple(min(b + p, n) for (_, b), p, n in zip(box, pad, self.geometry.shape)))

    def frame(self, t: int) -> "Volume":
        """One 3D frame of a cine volume (or one channel of a channel volume)."""
        if self.leading_axis is None:
            raise DimensionError.expected("a 4D volume", "a 3D volume", path=self.source)
        meta = dict(self.meta)
        if self.frame_times_ms is not None:
            meta["frame_time_ms"] = self.frame_times_ms[t]
        meta["frame_index"] = int(t)
        return Volume(self.array[t], self.geometry, self.kind, None, None, meta)

    def frames(self) -> list["Volume"]:
        return [self.frame(t) for t in range(self.array.shape[0])]

    @staticmethod
    def stack(volumes: Sequence["Volume"], *, leading_axis: LeadingAxis = "channel",
              frame_times_ms: Sequence[float] | None = None, atol_mm: float = DEFAULT_ATOL_MM) -> "Volume":
        """Stack 3D volumes on one grid into a 4D volume (grids checked)."""
        if not volumes:
            raise ValueError("expected at least one volume to stack, got none")
        first = volumes[0]
        for v in volumes[1:]:
            first.geometry.check_matches(v.geometry, atol_mm=atol_mm, what="stacked volumes")
        arr = np.stack([v.array for v in volumes])
        return Volume(arr, first.geometry, first.kind, leading_axis,
                      tuple(frame_times_ms) if frame_times_ms is not None else None, first.meta)

    def __repr__(self) -> str:
        g = self.geometry
        return (f"Volume(kind={self.kind!r}, shape={self.shape}, dtype={self.array.dtype}, "
                f"spacing={_fmt(g.spacing)} mm, orientation={g.orientation!r}, origin={_fmt(g.origin)} mm"
                + (f", {self.leading_axis}={self.array.shape[0]}" if self.leading_axis else "")
                + (f", source={g.source!r}" if g.source else "") + ")")
