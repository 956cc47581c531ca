"""``read_labels``: one entry point for label maps in any form medcnn reads.

NIfTI / NRRD / MHA / MHD label maps and DICOM label series go through ``read_volume``;
a DICOM file (or a folder holding exactly one annotation object) that is an RT Structure
Set or a DICOM Segmentation is rasterised / decoded here.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

from medcnn.errors import AnnotationError, UnsupportedFormatError
from medcnn.io._common import SUPPORTED_SUFFIXES, check_exists, suffix_of
from medcnn.volume import Volume

RTSTRUCT = "rtstruct"
SEG = "seg"


def _dcmread(path: Path, *, header_only: bool) -> Any | None:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(str(path), stop_before_pixels=header_only)
    except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, AttributeError, KeyError):
        return None


def annotation_kind(ds: Any) -> str | None:
    """``"rtstruct"``, ``"seg"`` or ``None`` for a pydicom dataset."""
    from medcnn.io._rtstruct import RTSTRUCT_SOP_CLASS
    from medcnn.io._seg import SEG_SOP_CLASSES

    sop = str(getattr(ds, "SOPClassUID", ""))
    modality = str(getattr(ds, "Modality", ""))
    if sop == RTSTRUCT_SOP_CLASS or modality == "RTSTRUCT":
        return RTSTRUCT
    if sop in SEG_SOP_CLASSES or modality == "SEG":
        return SEG
    return None


def find_annotation(path: Path) -> tuple[Path, str] | None:
    """``(file, kind)`` when ``path`` is an RTSTRUCT/SEG file, or a folder holding exactly one
    such file (alone, or beside its image series, as many exports are laid out); ``None``
    for anything else. Several annotations in one folder: AnnotationError."""
    if path.is_file():
        if suffix_of(path) in SUPPORTED_SUFFIXES:
            return None
        ds = _dcmread(path, header_only=True)
        kind = annotation_kind(ds) if ds is not None else None
        return (path, kind) if kind else None
    found = []
    for f in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        if suffix_of(f) in SUPPORTED_SUFFIXES:
            continue
        ds = _dcmread(f, header_only=True)
        kind = annotation_kind(ds) if ds is not None else None
        if kind:
            found.append((f, kind))
    if len(found) > 1:
        raise AnnotationError.expected("one RTSTRUCT or SEG file in the folder", f"{len(found)}: "
                                       + ", ".join(f.name for f, _ in found[:5]), path=path,
                                       hint="name the file itself")
    return found[0] if found else None


def _reference_volume(reference: Any, series_uid: str | None) -> Volume:
    from medcnn.io import list_dicom_series, read_volume

    if isinstance(reference, Volume):
        return reference
    ref = Path(reference)
    check_exists(ref)
    series = None
    if ref.is_dir() and series_uid and any(s["uid"] == series_uid for s in list_dicom_series(ref)):
        series = series_uid
    return read_volume(ref, series=series, require_3d=True)


def read_labels(path: Any, reference: Any = None, *, roi: Sequence[str] | None = None) -> Volume:
    """Read a label map from a label image, an RTSTRUCT or a DICOM SEG.

    Args:
        path: label map file (``.nii.gz`` ...), DICOM label series folder, RTSTRUCT or SEG
            file (any name; recognised by its SOP class), or a folder holding one of those
            (alone or beside its image series).
        reference: the image grid: a :class:`Volume`, an image file or a DICOM series folder.
            RTSTRUCT: the contours are rasterised on it; when omitted, the series the
            structure set refers to is looked up in its folder and the folders beside it.
            SEG: its frames must lie on this grid (else GeometryMismatchError); when
            omitted the grid comes from the SEG alone. Label images: geometry checked.
        roi: ROI / segment names to keep, labelled 1..n in this order (default: all).

    Returns:
        label Volume ``(I, J, K)``; ``meta["label_names"]`` = ``{"1": name, ...}`` for
        annotations. See docs/dicom.md for the rasterisation rule.

    Raises:
        InputFileNotFoundError, UnsupportedFormatError, AnnotationError, DicomSeriesError,
        GeometryMismatchError and the errors of :func:`read_volume`.
    """
    from medcnn.io import read_volume

    p = Path(path)
    check_exists(p)
    found = find_annotation(p)
    if found is None:
        if p.is_file() and suffix_of(p) not in SUPPORTED_SUFFIXES:
            raise UnsupportedFormatError.expected(
                f"a label map ({', '.join(SUPPORTED_SUFFIXES)}), a DICOM folder, an RTSTRUCT or a DICOM SEG",
                "a file that is neither" + (" (not DICOM)" if _dcmread(p, header_only=True) is None
                                           else f" (DICOM {getattr(_dcmread(p, header_only=True), 'Modality', '?')})"),
                path=p)
        if roi:
            raise AnnotationError.expected("an RTSTRUCT or SEG when ROI names are given", "a label image", path=p)
        vol = read_volume(p, kind="label", require_3d=True)
        if reference is not None:
            ref = _reference_volume(reference, None)
            ref.geometry.check_matches(vol.geometry, atol_mm=1e-3, what="label map and reference image")
        return vol
    file, kind = found
    if kind == RTSTRUCT:
        from medcnn.io._rtstruct import (find_referenced_series, missing_series_error, rasterise_rtstruct,
                                         referenced_frame_of_reference, referenced_series_uid)

        ds = _dcmread(file, header_only=False)
        uid = referenced_series_uid(ds)
        if reference is None:
            hit = find_referenced_series(file, uid, referenced_frame_of_reference(ds))
            if hit is None:
                raise missing_series_error(file, "structure set", uid)
            reference, uid = hit
        return rasterise_rtstruct(ds, _reference_volume(reference, uid), path=file, roi=roi)
    from medcnn.io._seg import read_seg

    ds = _dcmread(file, header_only=False)
    ref_vol = None if reference is None else _reference_volume(reference, _seg_series_uid(ds))
    return read_seg(ds, path=file, reference=ref_vol, roi=roi)


def _seg_series_uid(ds: Any) -> str | None:
    for item in getattr(ds, "ReferencedSeriesSequence", []) or []:
        uid = getattr(item, "SeriesInstanceUID", None)
        if uid:
            return str(uid)
    return None


def read_labels_on_grid(path: Any, grid: Volume) -> Volume:
    """The label map at ``path`` on ``grid`` wherever that is exact: an RTSTRUCT is rasterised on
    it, a SEG whose frames lie on it is decoded onto it (a sparse SEG then gets its empty
    slices back); a SEG on another grid and label images are returned as read, so the caller's
    usual geometry check (or resampling) applies."""
    from medcnn.errors import GeometryMismatchError

    p = Path(path)
    check_exists(p)
    found = find_annotation(p)
    kind = None if found is None else found[1]
    if kind == RTSTRUCT:
        return read_labels(p, grid)
    if kind == SEG:
        try:
            return read_labels(p, grid)
        except GeometryMismatchError:
            return read_labels(p)
    return read_labels(p)
