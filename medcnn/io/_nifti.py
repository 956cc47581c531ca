"""NIfTI-1/2 reading and writing with nibabel (RAS+, like medcnn)."""

from __future__ import annotations

import contextlib
import json
import warnings
import zlib
from pathlib import Path

import numpy as np

from medcnn.errors import CorruptFileError, DimensionError, MedcnnError
from medcnn.io._common import atomic_path, check_size, storable_array
from medcnn.volume import Geometry, Volume

# NIfTI stores the affine as float32; medcnn also stores the float64 affine in a header
# extension (ecode 6, "comment") so that medcnn round trips are exact. The extension is
# used only when it agrees with the float32 header affine.
_EXT_CODE = 6
_EXT_KEY = "medcnn_affine_ras"
_TIME_UNITS_TO_MS = {"sec": 1000.0, "msec": 1.0, "usec": 1e-3}


def _float64_affine(img, header_affine: np.ndarray) -> np.ndarray:
    for ext in getattr(img.header, "extensions", []):
        if ext.get_code() != _EXT_CODE:
            continue
        try:
            payload = json.loads(ext.get_content().decode("utf-8"))
            aff = np.asarray(payload[_EXT_KEY], dtype=np.float64)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            continue
        if aff.shape == (4, 4) and np.allclose(aff, header_affine, rtol=0, atol=1e-3):
            return aff
    return header_affine


def _raise_if_truncated_gzip(path: Path) -> None:
    if not str(path).lower().endswith(".gz"):
        return
    import gzip

    try:
        with gzip.open(path, "rb") as f:
            while f.read(1 << 22):
                pass
    except (EOFError, zlib.error, OSError) as exc:
        raise CorruptFileError.expected("a complete gzip-compressed NIfTI file",
                                        f"a truncated or damaged gzip stream ({type(exc).__name__}: {exc})", path=path,
                                        hint="The file is truncated or corrupt; copy it again from the source") from None


@contextlib.contextmanager
def _quiet_nibabel():
    """Silence nibabel's header-repair log lines (medcnn reports one clear error instead)."""
    import nibabel as nib

    logger = nib.imageglobals.logger
    was = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = was


def _raw_pixdim(path: Path, header_class) -> tuple[float, ...]:
    import nibabel as nib

    try:
        with nib.openers.ImageOpener(str(path)) as f:
            raw = header_class.from_fileobj(f, check=False)
        return tuple(float(z) for z in np.asarray(raw["pixdim"], dtype=np.float64)[1:4])
    except Exception:  # unreadable raw header: the normal path reports the problem
        return (1.0, 1.0, 1.0)


def read_nifti(path: Path, *, max_bytes: int | None = None) -> Volume:
    import nibabel as nib

    try:
        # nibabel logs header repairs (e.g. "pixdim[1,2,3] should be non-zero") to stderr;
        # medcnn validates the geometry itself and reports one clear error instead
        with _quiet_nibabel():
            img = nib.load(str(path))
            _ = img.affine, img.header.get_zooms()
    except MedcnnError:
        raise
    except Exception as exc:  # nibabel raises many types for bad headers
        _raise_if_truncated_gzip(path)
        raise CorruptFileError.expected("a readable NIfTI header", f"{type(exc).__name__}: {exc}", path=path) from None

    shape = tuple(int(s) for s in img.shape)
    check_size(shape, img.get_data_dtype().itemsize, path, max_bytes)
    # drop trailing singleton dimensions beyond the third (e.g. (I, J, K, 1))
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) < 3:
        raise DimensionError.expected("a 3D (or 4D cine) image", f"a {len(shape)}D image of shape {img.shape}", path=path,
                                      hint="medcnn segments volumes; stack 2D slices into a 3D file first")
    if len(shape) > 4:
        raise DimensionError.expected("a 3D or 4D image", f"a {len(shape)}D image of shape {img.shape}", path=path)

    hdr = img.header
    sform_code = int(hdr["sform_code"]) if "sform_code" in hdr else 1
    qform_code = int(hdr["qform_code"]) if "qform_code" in hdr else 1
    meta: dict = {"format": "nifti"}
    if sform_code == 0 and qform_code == 0:
        meta["affine_source"] = "pixdim only (no sform/qform)"
        warnings.warn(f"{path}: NIfTI header has neither sform nor qform; orientation unknown, "
                      "using spacing from pixdim with an identity direction", stacklevel=3)
    else:
        meta["affine_source"] = "sform" if sform_code > 0 else "qform"

    try:
        zooms = hdr.get_zooms()
    except Exception:
        zooms = ()
    if "pixdim" in hdr and sform_code == 0:
        # without an sform the spacing comes from pixdim; nibabel silently repairs negative
        # or zero values on load, which hides a broken header: check the raw values instead
        raw = _raw_pixdim(path, type(hdr))
        if any((not np.isfinite(z)) or z <= 0 for z in raw):
            from medcnn.errors import InvalidGeometryError

            raise InvalidGeometryError.expected("finite spacing > 0 mm on every axis (pixdim[1:4])",
                                                f"pixdim {raw}", path=path)
    if len(zooms) >= 3 and any((not np.isfinite(z)) or z <= 0 for z in zooms[:3]):
        from medcnn.errors import InvalidGeometryError

        raise InvalidGeometryError.expected("finite spacing > 0 mm on every axis (pixdim[1:4])",
                                            f"pixdim {tuple(float(z) for z in zooms[:3])}", path=path)
    affine = _float64_affine(img, np.asarray(img.affine, dtype=np.float64))
    geometry = Geometry.from_affine(affine, shape[:3], source=str(path))

    try:
        data = np.asanyarray(img.dataobj)
    except (EOFError, zlib.error, OSError, ValueError) as exc:
        _raise_if_truncated_gzip(path)
        raise CorruptFileError.expected(
            f"{np.prod(img.shape)} voxels of {img.get_data_dtype()} as the header declares",
            f"unreadable data ({type(exc).__name__}: {exc})", path=path,
            hint="The file is truncated or corrupt; copy it again from the source") from None
    data = data.reshape(shape)

    if len(shape) == 4:
        data = np.moveaxis(data, -1, 0)
        frame_times = None
        dt = float(zooms[3]) if len(zooms) > 3 else 0.0
        unit = hdr.get_xyzt_units()[1] if hasattr(hdr, "get_xyzt_units") else "unknown"
        if dt > 0 and unit in _TIME_UNITS_TO_MS:
            dt_ms = dt * _TIME_UNITS_TO_MS[unit]
            t0 = float(hdr["toffset"]) * _TIME_UNITS_TO_MS[unit] if "toffset" in hdr else 0.0
            frame_times = tuple(t0 + i * dt_ms for i in range(shape[3]))
        return Volume(np.ascontiguousarray(data), geometry, "intensity", "time", frame_times, meta)
    return Volume(np.asarray(data), geometry, "intensity", None, None, meta)


def write_nifti(volume: Volume, path: Path) -> None:
    import nibabel as nib

    arr = storable_array(volume.array)
    if volume.leading_axis is not None:
        arr = np.moveaxis(arr, 0, -1)
    affine = volume.geometry.affine
    img = nib.Nifti1Image(np.asarray(arr), affine)
    hdr = img.header
    hdr.set_data_dtype(arr.dtype)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    hdr.set_xyzt_units(xyz="mm", t="msec")
    if volume.leading_axis == "time" and volume.frame_times_ms and len(volume.frame_times_ms) > 1:
        zooms = list(hdr.get_zooms())
        zooms[3] = float(np.median(np.diff(volume.frame_times_ms)))
        hdr.set_zooms(zooms)
        hdr["toffset"] = float(volume.frame_times_ms[0])
    hdr["scl_slope"] = 1.0
    hdr["scl_inter"] = 0.0
    payload = json.dumps({_EXT_KEY: affine.tolist()}).encode("utf-8")
    hdr.extensions.append(nib.nifti1.Nifti1Extension(_EXT_CODE, payload))
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
