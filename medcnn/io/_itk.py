"""NRRD / MHA / MHD reading and writing with SimpleITK.

This module and :mod:`medcnn.io._dicom` are the only places that know ITK's LPS+ world
and its ``(z, y, x)`` numpy axis order.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from medcnn.errors import CorruptFileError, DimensionError, InvalidGeometryError, MedcnnError
from medcnn.io._common import atomic_path, check_size, storable_array, suffix_of
from medcnn.volume import Geometry, Volume

#: RAS+ = LPS_TO_RAS @ LPS+ (and vice versa): negate x and y.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
_META_KEY = "medcnn_geometry_ras"


def lps_to_ras_geometry(origin_lps, direction_lps, spacing, shape, *, source=None) -> Geometry:
    """Geometry from ITK/DICOM LPS+ origin and direction (columns = axis directions)."""
    origin = LPS_TO_RAS @ np.asarray(origin_lps, dtype=np.float64)
    direction = LPS_TO_RAS @ np.asarray(direction_lps, dtype=np.float64).reshape(3, 3)
    return Geometry(tuple(shape), tuple(spacing), tuple(origin), tuple(map(tuple, direction)), source=source)


def ras_to_lps(geometry: Geometry) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(origin, flat row-major direction) in LPS+ for SimpleITK."""
    origin = LPS_TO_RAS @ np.asarray(geometry.origin)
    direction = LPS_TO_RAS @ geometry.direction_matrix
    return tuple(origin.tolist()), tuple(direction.ravel().tolist())


def read_itk(path: Path, *, max_bytes: int | None = None) -> Volume:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise CorruptFileError.expected("a readable image header", _first_line(exc), path=path) from None
    size = tuple(int(s) for s in reader.GetSize())
    ncomp = int(reader.GetNumberOfComponents())
    dim = int(reader.GetDimension())
    if dim < 3:
        raise DimensionError.expected("a 3D (or 4D cine) image", f"a {dim}D image of size {size}", path=path,
                                      hint="medcnn segments volumes; stack 2D slices into a 3D file first")
    if dim > 4:
        raise DimensionError.expected("a 3D or 4D image", f"a {dim}D image of size {size}", path=path)
    if ncomp != 1:
        raise DimensionError.expected("one value per voxel", f"{ncomp} components per voxel", path=path,
                                      hint="split multi-component images into one file per channel")
    check_size(size, 8, path, max_bytes)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise CorruptFileError.expected(f"{int(np.prod(size))} voxels as the header declares", _first_line(exc),
                                        path=path, hint="The file is truncated or corrupt") from None

    spacing = tuple(image.GetSpacing())
    if any((not np.isfinite(s)) or s <= 0 for s in spacing[:3]):
        raise InvalidGeometryError.expected("finite spacing > 0 mm on every axis", f"spacing {spacing[:3]}", path=path)
    arr = sitk.GetArrayFromImage(image)  # (z, y, x) or (t, z, y, x)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)[:3, :3]
    geometry = lps_to_ras_geometry(image.GetOrigin()[:3], direction, spacing[:3], size[:3], source=str(path))
    geometry = _exact_geometry(reader, geometry)
    meta = {"format": suffix_of(path).lstrip(".")}
    if dim == 3:
        return Volume(np.ascontiguousarray(arr.transpose(2, 1, 0)), geometry, "intensity", None, None, meta)
    arr4 = np.ascontiguousarray(arr.transpose(0, 3, 2, 1))
    dt, t0 = float(spacing[3]), float(image.GetOrigin()[3])
    times = tuple(t0 + i * dt for i in range(arr4.shape[0])) if dt > 0 else None
    return Volume(arr4, geometry, "intensity", "time", times, meta)


def _exact_geometry(reader, geometry: Geometry) -> Geometry:
    """Use the float64 geometry medcnn stored in the header when it agrees with ITK's."""
    try:
        if not reader.HasMetaDataKey(_META_KEY):
            return geometry
        stored = Geometry.from_affine(np.asarray(json.loads(reader.GetMetaData(_META_KEY))), geometry.shape,
                                      source=geometry.source)
    except (RuntimeError, ValueError, TypeError, MedcnnError):
        return geometry
    return stored if stored.isclose(geometry, atol_mm=1e-3) else geometry


def write_itk(volume: Volume, path: Path) -> None:
    import SimpleITK as sitk

    arr = storable_array(volume.array)
    origin, direction = ras_to_lps(volume.geometry)

    def as_image(a3: np.ndarray):
        img = sitk.GetImageFromArray(np.ascontiguousarray(a3.transpose(2, 1, 0)))
        img.SetSpacing(volume.geometry.spacing)
        img.SetOrigin(origin)
        img.SetDirection(direction)
        return img

    if volume.leading_axis is None:
        image = as_image(arr)
    else:
        times = volume.frame_times_ms
        t0 = float(times[0]) if times else 0.0
        dt = float(np.median(np.diff(times))) if times and len(times) > 1 else 1.0
        image = sitk.JoinSeries([as_image(a) for a in arr], t0, dt)
        d4 = np.eye(4)
        d4[:3, :3] = np.asarray(direction).reshape(3, 3)
        image.SetDirection(tuple(d4.ravel()))
    image.SetMetaData(_META_KEY, json.dumps(volume.geometry.affine.tolist()))
    sfx = suffix_of(path)
    if sfx in (".mhd", ".nhdr"):
        _write_detached(image, path)
        return
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)


def _write_detached(image, path: Path) -> None:
    """Header + separate data file: write both in a temporary folder beside ``path``,
    then move the data file first and the header last (the header is what readers open)."""
    import SimpleITK as sitk

    path.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        sitk.WriteImage(image, str(tmpdir / path.name), useCompression=True)
        header = tmpdir / path.name
        for f in sorted(tmpdir.iterdir()):
            if f != header:
                f.replace(path.parent / f.name)
        header.replace(path)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _first_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    msg = lines[-1] if lines else type(exc).__name__
    return msg[:300]
