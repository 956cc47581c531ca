"""DICOM folders: one series (3D) or a cine series (4D), read with pydicom.

Slices are sorted by their position along the slice normal (the cross product of the
two ImageOrientationPatient vectors); the slice spacing comes from those positions, never
from SliceThickness. Several images at one position make a cine series: frames are ordered
by TriggerTime (InstanceNumber when absent).

Patient identifiers (name, ID, birth date) are never copied into ``Volume.meta``; use
:func:`read_dicom_identifiers` when a user explicitly asks for them.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from medcnn.errors import CorruptFileError, DicomSeriesError, MultipleSeriesError
from medcnn.io._itk import lps_to_ras_geometry
from medcnn.volume import Volume

_POSITION_TOL_MM = 0.01
#: Relative deviation of one slice gap from the median gap that counts as a missing slice.
_GAP_RTOL = 0.05
_SAFE_META = ("Modality", "SeriesDescription", "Manufacturer", "MagneticFieldStrength", "ProtocolName",
              "BodyPartExamined", "SliceThickness")
IDENTIFIER_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "AccessionNumber")


def _read_headers(folder: Path) -> tuple[list[tuple[Path, Any]], list[str]]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    headers, skipped = [], []
    for f in files:
        if f.name.upper() == "DICOMDIR":
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, AttributeError, KeyError):
            skipped.append(f"{f.name} (not DICOM or unreadable)")
            continue
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds or "Rows" not in ds:
            skipped.append(f"{f.name} (no image geometry: {getattr(ds, 'Modality', '?')} "
                           f"{getattr(ds, 'SOPClassUID', '')!s} object)")
            continue
        headers.append((f, ds))
    return headers, skipped


def list_dicom_series(folder: str | Path) -> list[dict[str, Any]]:
    """Image series in a DICOM folder: ``uid``, ``description``, ``modality``, ``n_files``."""
    folder = Path(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        headers, _ = _read_headers(folder)
    groups: dict[str, list] = defaultdict(list)
    for f, ds in headers:
        groups[str(getattr(ds, "SeriesInstanceUID", "unknown"))].append(ds)
    out = []
    for uid, dss in groups.items():
        out.append({"uid": uid, "description": str(getattr(dss[0], "SeriesDescription", "") or ""),
                    "modality": str(getattr(dss[0], "Modality", "") or ""), "n_files": len(dss)})
    return sorted(out, key=lambda s: (-s["n_files"], s["uid"]))


def read_dicom_identifiers(folder: str | Path) -> dict[str, str]:
    """Patient identifiers of the first image (only for ``--include-identifiers``)."""
    headers, _ = _read_headers(Path(folder))
    if not headers:
        return {}
    ds = headers[0][1]
    return {k: str(getattr(ds, k, "")) for k in IDENTIFIER_KEYWORDS if k in ds}


def read_dicom_folder(folder: Path, *, series: str | int | None = None) -> Volume:
    with warnings.catch_warnings():
        # pydicom warns about non-conformant UIDs etc.; geometry checks below are what matter
        warnings.simplefilter("ignore", UserWarning)
        return _read_dicom_folder(folder, series=series)


def _read_dicom_folder(folder: Path, *, series: str | int | None = None) -> Volume:
    headers, skipped = _read_headers(folder)
    if not headers:
        detail = f"{len(skipped)} other files" if skipped else "an empty folder"
        raise DicomSeriesError.expected("DICOM image files in the folder", detail, path=folder)

    groups: dict[str, list] = defaultdict(list)
    for f, ds in headers:
        groups[str(getattr(ds, "SeriesInstanceUID", "unknown"))].append((f, ds))
    uids = sorted(groups, key=lambda u: (-len(groups[u]), u))
    if series is None:
        if len(uids) > 1:
            listing = list_dicom_series(folder)
            lines = "; ".join(f"[{i}] uid={s['uid']} description={s['description']!r} files={s['n_files']}"
                              for i, s in enumerate(listing))
            raise MultipleSeriesError(
                f"{folder}: expected one image series, got {len(uids)}: {lines}. "
                "Choose one with series=<uid, index or description> (CLI: --series)",
                path=folder, series=listing)
        chosen = uids[0]
    elif isinstance(series, int) or (isinstance(series, str) and series.isdigit() and series not in groups):
        idx = int(series)
        if not 0 <= idx < len(uids):
            raise DicomSeriesError.expected(f"a series index 0..{len(uids) - 1}", f"{idx}", path=folder)
        chosen = uids[idx]
    elif series in groups:
        chosen = str(series)
    else:
        by_desc = [u for u in uids if str(getattr(groups[u][0][1], "SeriesDescription", "")) == series]
        if len(by_desc) != 1:
            raise DicomSeriesError.expected("a series UID, index or unique description in the folder",
                                            f"{series!r}", path=folder)
        chosen = by_desc[0]
    items = groups[chosen]
    return _assemble(folder, items, skipped)


def _assemble(folder: Path, items: list, skipped: list[str]) -> Volume:
    ref = items[0][1]
    iop = np.asarray([float(v) for v in ref.ImageOrientationPatient], dtype=np.float64)
    for f, ds in items:
        other = np.asarray([float(v) for v in ds.ImageOrientationPatient])
        if not np.allclose(other, iop, atol=1e-4):
            raise DicomSeriesError.expected(
                "one ImageOrientationPatient for the whole series",
                f"{f.name} oriented {np.round(other, 4).tolist()} vs {np.round(iop, 4).tolist()}", path=folder,
                hint="mixed orientations (e.g. a localiser) must be separated into their own folders")
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    rows, cols = int(ref.Rows), int(ref.Columns)
    for f, ds in items:
        if (int(ds.Rows), int(ds.Columns)) != (rows, cols):
            raise DicomSeriesError.expected(f"{rows}x{cols} images throughout", f"{f.name} is {ds.Rows}x{ds.Columns}",
                                            path=folder)

    positions = np.array([float(np.dot(normal, [float(v) for v in ds.ImagePositionPatient])) for _, ds in items])
    order = np.argsort(positions, kind="stable")
    # cluster positions into slices
    slices: list[list[int]] = []
    slice_pos: list[float] = []
    for idx in order:
        if slices and abs(positions[idx] - slice_pos[-1]) <= _POSITION_TOL_MM:
            slices[-1].append(int(idx))
        else:
            slices.append([int(idx)])
            slice_pos.append(float(positions[idx]))
    counts = {len(s) for s in slices}
    if len(counts) != 1:
        lo = min(counts)
        odd = [(p, s) for p, s in zip(slice_pos, slices) if len(s) != lo][:4]
        detail = "; ".join(f"position {p:.2f} mm has {len(s)} images ({', '.join(items[i][0].name for i in s[:4])})"
                           for p, s in odd)
        raise DicomSeriesError.expected(
            f"the same number of images at every slice position ({lo} elsewhere)",
            f"duplicated or extra images: {detail}", path=folder,
            hint="remove duplicated slices, or separate the acquisitions into their own folders")
    n_frames = counts.pop()

    def trigger(i: int) -> float:
        ds = items[i][1]
        tt = getattr(ds, "TriggerTime", None)
        return float(tt) if tt not in (None, "") else float("nan")

    def instance(i: int) -> int:
        return int(getattr(items[i][1], "InstanceNumber", 0) or 0)

    frame_times = None
    if n_frames > 1:
        ordered = []
        for s in slices:
            times = [trigger(i) for i in s]
            if all(np.isfinite(times)):
                if len(set(np.round(times, 3))) != len(times):
                    raise DicomSeriesError.expected(
                        "one image per slice position and trigger time",
                        f"duplicated images at slice position {slice_pos[len(ordered)]:.2f} mm "
                        f"({', '.join(items[i][0].name for i in s)})", path=folder)
                ordered.append(sorted(s, key=lambda i: (trigger(i), instance(i))))
            else:
                insts = [instance(i) for i in s]
                if len(set(insts)) != len(insts):
                    raise DicomSeriesError.expected(
                        "one image per slice position (or a cine series with TriggerTime)",
                        f"duplicated slices at position {slice_pos[len(ordered)]:.2f} mm "
                        f"({', '.join(items[i][0].name for i in s)})", path=folder)
                ordered.append(sorted(s, key=instance))
        slices = ordered
        tt = np.array([[trigger(i) for i in s] for s in slices])  # (slices, frames)
        if np.all(np.isfinite(tt)):
            frame_times = tuple(float(t) for t in tt.mean(axis=0))

    if len(slices) > 1:
        gaps = np.diff(slice_pos)
        median = float(np.median(gaps))
        bad = np.abs(gaps - median) > _GAP_RTOL * median
        if np.any(bad):
            k = int(np.argmax(np.abs(gaps - median)))
            raise DicomSeriesError.expected(
                f"evenly spaced slices ({median:.3f} mm apart)",
                f"a gap of {gaps[k]:.3f} mm between slices {k} and {k + 1} "
                f"(positions {slice_pos[k]:.3f} and {slice_pos[k + 1]:.3f} mm along the normal)",
                path=folder, hint="a slice is probably missing; the volume would be distorted")
        dz = median
    else:
        dz = float(getattr(ref, "SpacingBetweenSlices", 0) or getattr(ref, "SliceThickness", 0) or 1.0)

    pixel_spacing = [float(v) for v in getattr(ref, "PixelSpacing", [1.0, 1.0])]
    spacing = (pixel_spacing[1], pixel_spacing[0], dz)  # (I = along a row, J = down a column, K)
    first = items[slices[0][0]][1]
    origin_lps = [float(v) for v in first.ImagePositionPatient]
    direction_lps = np.column_stack([row_dir, col_dir, normal])
    geometry = lps_to_ras_geometry(origin_lps, direction_lps, spacing, (cols, rows, len(slices)), source=str(folder))

    array = _read_pixels(folder, items, slices, n_frames, rows, cols)
    meta: dict[str, Any] = {"format": "dicom", "n_files": len(items)}
    for k in _SAFE_META:
        v = getattr(ref, k, None)
        if v not in (None, ""):
            meta[k] = str(v)
    if skipped:
        meta["skipped_files"] = skipped
    if n_frames > 1:
        if frame_times is not None and np.any(np.diff(frame_times) < 0):
            raise DicomSeriesError.expected("ascending trigger times", f"{frame_times}", path=folder)
        return Volume(array, geometry, "intensity", "time", frame_times, meta)
    return Volume(array[0], geometry, "intensity", None, None, meta)


def _read_pixels(folder: Path, items, slices, n_frames: int, rows: int, cols: int) -> np.ndarray:
    import pydicom

    out = None
    for k, s in enumerate(slices):
        for t, i in enumerate(s):
            f = items[i][0]
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ds = pydicom.dcmread(str(f))
                    px = ds.pixel_array
            except Exception as exc:  # pydicom raises many types for broken pixel data
                raise CorruptFileError.expected("decodable pixel data", f"{type(exc).__name__}: {exc}",
                                                path=f) from None
            if px.shape != (rows, cols):
                raise CorruptFileError.expected(f"a {rows}x{cols} image", f"pixel data of shape {px.shape}", path=f)
            slope = float(getattr(ds, "RescaleSlope", 1) or 1)
            inter = float(getattr(ds, "RescaleIntercept", 0) or 0)
            if out is None:
                scaled = slope != 1 or inter != 0
                dtype = np.float32 if scaled and not (slope.is_integer() and inter.is_integer()) else (
                    np.int32 if scaled else px.dtype)
                out = np.zeros((n_frames, cols, rows, len(slices)), dtype=dtype)
            out[t, :, :, k] = (px.astype(np.float64) * slope + inter).T if (slope != 1 or inter != 0) else px.T
    assert out is not None
    return out
