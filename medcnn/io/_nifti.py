"""NIfTI-1/2 reading and writing with nibabel (RAS+, like medcnn)."""

from __future__ import annotations

import contextlib
import json
import warnings
import zlib
from pathlib import Path

import numpy as np

from medcnn.errors import CorruptFileError, DimensionError, InvalidGeometryError, MedcnnError, NiftiHeaderWarning
from medcnn.io._common import atomic_path, check_size, storable_array
from medcnn.volume import Geometry, Volume

# NIfTI stores the affine as float32; medcnn also stores the float64 affine in a header
# extension (ecode 6, "comment") so that medcnn round trips are exact. The extension is
# used only when it agrees with the float32 header affine.
_EXT_CODE = 6
_EXT_KEY = "medcnn_affine_ras"
_TIME_UNITS_TO_MS = {"sec": 1000.0, "msec": 1.0, "usec": 1e-3}

#: sform axis lengths and pixdim agree within this (mm): ITK's tolerance for its
#: "unexpected scales in sform" warning.
SFORM_SCALE_TOL_MM = 1e-3
#: An sform is used only when its normalised axes are orthonormal within this (ITK's test:
#: R @ R.T is the identity within 1e-4, element by element); otherwise it counts as sheared.
SFORM_ORTHONORMAL_TOL = 1e-4
#: sform and qform (both set) agree when no voxel centre of the grid lies further apart
#: under the two than this fraction of the smallest voxel size.
FORMS_AGREE_VOXELS = 0.1

#: medcnn's one rule for NIfTI headers whose sform, qform and pixdim disagree; the reference
#: is what SimpleITK (ITK's NiftiImageIO) reads. Details and the header patterns: docs/io.md.
NIFTI_GEOMETRY_RULE = (
    "NIfTI geometry is read as SimpleITK reads it: spacing from pixdim[1:4]; direction (axes normalised) "
    "and origin from the sform when sform_code > 0 and its axes are orthonormal, else from the qform; with "
    "neither form set, ITK's default (identity direction in LPS, i.e. RAS diag(-1, -1, 1), origin 0). A header "
    "whose sform axis lengths differ from pixdim, whose sform is sheared (a qform being set), or that has "
    "neither form, is read this way and flagged NIFTI_HEADER_INCONSISTENT. Refused (no rule is safe): pixdim "
    f"zero, negative or NaN; sform and qform both set but placing voxel centres more than {FORMS_AGREE_VOXELS} "
    "voxel apart (direction or origin); a sheared sform without a qform")


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
    meta: dict = {"format": "nifti"}
    try:
        zooms = hdr.get_zooms()
    except Exception:
        zooms = ()
    if "pixdim" in hdr:
        # SimpleITK takes the spacing from pixdim whatever the forms say, and nibabel silently
        # repairs zero / negative values on load: check the raw values
        raw = _raw_pixdim(path, type(hdr))
        if any((not np.isfinite(z)) or z <= 0 for z in raw):
            raise InvalidGeometryError.expected(
                "finite spacing > 0 mm on every axis (pixdim[1:4])", f"pixdim {raw}", path=path,
                hint="No reading is safe: SimpleITK reads a zero or NaN pixdim as 1 mm and a negative one as a "
                     "reversed axis, nibabel takes the sform's scales or abs(pixdim); fix pixdim in the header")
        affine, note = resolve_nifti_geometry(hdr, raw, shape[:3], path)
    else:  # not a NIfTI header (nibabel read another format): its own affine
        affine, note = None, None
    if note is not None:
        used = note["header"]["used"]
        meta["affine_source"] = "pixdim only (no sform/qform)" if used == "none" else used
        meta["read_notes"] = [note]
        warnings.warn(NiftiHeaderWarning(note["message"]), stacklevel=3)
    else:
        meta["affine_source"] = "sform" if "sform_code" not in hdr or int(hdr["sform_code"]) > 0 else "qform"
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


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.6g}" for v in np.ravel(values)) + ")"


def _unit_axes(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column lengths and the columns normalised to unit length (zero columns kept)."""
    n = np.linalg.norm(m, axis=0)
    return n, m / np.where(n > 0, n, 1.0)


def _largest_gap_mm(d1: np.ndarray, o1: np.ndarray, d2: np.ndarray, o2: np.ndarray, spacing: np.ndarray,
                    shape: tuple[int, ...]) -> float:
    """Largest distance (mm) between the world positions two (direction, origin) pairs give
    the corner voxel centres of the grid (the worst case of an affine map), at ``spacing``."""
    corners = np.array(np.meshgrid(*[[0, max(int(n) - 1, 0)] for n in shape], indexing="ij")).reshape(3, -1).T
    p1 = corners * spacing @ d1.T + o1
    p2 = corners * spacing @ d2.T + o2
    return float(np.max(np.linalg.norm(p1 - p2, axis=1)))


def resolve_nifti_geometry(hdr, pixdim, shape: tuple[int, ...], path) -> tuple[np.ndarray | None, dict | None]:
    """Check a NIfTI header's sform, qform and pixdim against each other and resolve them by
    :data:`NIFTI_GEOMETRY_RULE` (the reading of SimpleITK).

    Args:
        hdr: nibabel NIfTI-1/2 header.
        pixdim: the raw ``pixdim[1:4]`` (mm), already checked finite and > 0.
        shape: ``(I, J, K)`` grid shape.
        path: the file, for messages.

    Returns:
        ``(None, None)`` for a consistent header (use nibabel's affine), else the resolved
        4x4 RAS+ affine and the read note (``code``, ``message``, ``rule``, ``header``).

    Raises:
        InvalidGeometryError: no rule is safe (sform and qform disagree in direction or
            origin; a sheared sform without a qform; a non-finite sform).
        CorruptFileError: an unreadable qform quaternion.
    """
    pix = np.asarray(pixdim, dtype=np.float64)
    s_code = int(hdr["sform_code"])
    q_code = int(hdr["qform_code"])
    header: dict = {"sform_code": s_code, "qform_code": q_code, "pixdim_mm": [float(v) for v in pix]}
    found: list[str] = []
    q_dir = q_org = None
    if q_code > 0:
        try:
            q_aff = np.asarray(hdr.get_qform(), dtype=np.float64)
        except Exception as exc:  # nibabel refuses quaternions with b^2 + c^2 + d^2 > 1
            raise CorruptFileError.expected("a valid qform quaternion (quatern_b/c/d)", f"{type(exc).__name__}: "
                                            f"{exc}", path=path) from None
        q_dir, q_org = _unit_axes(q_aff[:3, :3])[1], q_aff[:3, 3]
    if s_code > 0:
        s_aff = np.asarray(hdr.get_sform(), dtype=np.float64)
        if not np.all(np.isfinite(s_aff)):
            raise InvalidGeometryError.expected("a finite sform (srow_x, srow_y, srow_z)", "NaN or infinite entries",
                                                path=path)
        s_len, s_dir = _unit_axes(s_aff[:3, :3])
        header["sform_axis_lengths_mm"] = [float(v) for v in s_len]
        sheared = bool(np.any(s_len <= 0)) or float(np.max(np.abs(s_dir @ s_dir.T - np.eye(3)))) > SFORM_ORTHONORMAL_TOL
        if not sheared:
            if q_dir is not None:
                gap = _largest_gap_mm(s_dir, s_aff[:3, 3], q_dir, q_org, pix, shape)
                tol = FORMS_AGREE_VOXELS * float(pix.min())
                if gap > tol:
                    itk_uses = "sform" if s_code == 1 else "qform"
                    raise InvalidGeometryError.expected(
                        f"an sform and a qform that place the grid alike (voxel centres within {tol:.3g} mm), "
                        "or only one of them set",
                        f"sform_code {s_code} and qform_code {q_code} placing voxel centres up to {gap:.3g} mm apart "
                        f"(sform origin {_fmt(s_aff[:3, 3])} mm, axes {_fmt(s_dir.T)}; qform origin {_fmt(q_org)} "
                        f"mm, axes {_fmt(q_dir.T)})", path=path,
                        hint=f"No rule is safe: SimpleITK would use the {itk_uses} here and nibabel the sform. Find "
                             "out which is right and set the other's code to 0 (nibabel: img.set_qform(None) or "
                             "img.set_sform(None), then save)")
            direction, origin, used = s_dir, s_aff[:3, 3], "sform"
            if np.any(np.abs(s_len - pix) > SFORM_SCALE_TOL_MM):
                found.append(f"sform (sform_code {s_code}) axis lengths {_fmt(s_len)} mm differ from pixdim "
                             f"{_fmt(pix)} mm")
        elif q_dir is None:
            raise InvalidGeometryError.expected(
                "an sform with orthonormal axes, or a qform", f"a sheared sform (sform_code {s_code}, axis lengths "
                f"{_fmt(s_len)} mm, axes not perpendicular) and qform_code {q_code}", path=path,
                hint="SimpleITK refuses it too; resample the image onto an orthonormal grid")
        else:
            found.append(f"sheared sform (sform_code {s_code}, axes not perpendicular) ignored")
            direction, origin, used = q_dir, q_org, "qform"
    elif q_dir is not None:
        direction, origin, used = q_dir, q_org, "qform"
    else:
        found.append("neither sform nor qform set (sform_code 0, qform_code 0): orientation unknown")
        direction, origin, used = np.diag([-1.0, -1.0, 1.0]), np.zeros(3), "none"
    if not found:
        return None, None
    header["used"] = used
    affine = np.eye(4)
    affine[:3, :3] = direction * pix
    affine[:3, 3] = origin
    rule = {"sform": "direction and origin from the sform (axes normalised), spacing from pixdim",
            "qform": "direction and origin from the qform, spacing from pixdim",
            "none": "identity direction in ITK's LPS (RAS diag(-1, -1, 1)), origin 0, spacing from pixdim"}[used]
    message = f"{path}: NIfTI header inconsistent: {'; '.join(found)}; read as SimpleITK reads it: {rule} {_fmt(pix)} mm"
    from medcnn.volume import NIFTI_HEADER_INCONSISTENT

    return affine, {"code": NIFTI_HEADER_INCONSISTENT, "message": message, "rule": NIFTI_GEOMETRY_RULE,
                    "header": header}


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
