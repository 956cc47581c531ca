"""Reading and writing volumes: NIfTI, NRRD, MHA/MHD and DICOM series / cine folders;
label maps also from DICOM annotations (RT Structure Sets and DICOM SEG, see
:func:`read_labels`), and results as DICOM SEG + SR (:mod:`medcnn.io.dicom_out`), de-identified by
the DICOM PS3.15 Annex E profile (:mod:`medcnn.io.deid`).

This package is the only place that knows file conventions: SimpleITK's LPS+ world and
``(z, y, x)`` array order, DICOM's ImagePositionPatient / ImageOrientationPatient, and
nibabel's RAS+ affine. Everything it returns is a :class:`medcnn.volume.Volume` in RAS+
with ``(I, J, K)`` arrays (4D: ``(T, I, J, K)``).

Writes are atomic: data goes to a temporary file beside the target, which is renamed into
place only when complete, so an interrupted or failed write leaves no partial file.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

from medcnn.errors import DimensionError, UnsupportedFormatError
from medcnn.io._common import (ITK_SUFFIXES, NIFTI_SUFFIXES, SUPPORTED_SUFFIXES, as_label_array, check_exists,
                               check_suffix, image_stem, match_channel_files, missing_channels, suffix_of)
from medcnn.volume import Volume, VolumeKind

__all__ = [
    "read_volume",
    "read_labels",
    "annotation_kind",
    "read_labels_on_grid",
    "write_volume",
    "list_dicom_series",
    "read_dicom_identifiers",
    "as_label_array",
    "image_stem",
    "match_channel_files",
    "missing_channels",
    "input_qc_flags",
    "input_rules",
    "SUPPORTED_SUFFIXES",
]


def read_volume(
    path: str | PathLike[str],
    *,
    kind: VolumeKind = "intensity",
    series: str | int | None = None,
    require_3d: bool = False,
    max_bytes: int | None = None,
) -> Volume:
    """Read a scan, label map or probability map.

    Args:
        path: ``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd`` file, a
            folder of DICOM files (one series, or a cine series read as 4D), or a DICOM
            RTSTRUCT / SEG file (read as a label map by :func:`read_labels`).
        kind: ``"label"`` validates integer, non-negative, finite values and stores the
            smallest unsigned dtype; ``"intensity"`` and ``"probability"`` keep the dtype.
        series: for a DICOM folder holding several series: UID, index (see
            :func:`list_dicom_series`) or unique SeriesDescription.
        require_3d: refuse 4D (cine) data with a :class:`DimensionError`.
        max_bytes: refuse headers claiming more voxel data than this (default 32 GiB).

    Returns:
        Volume with ``array`` of shape ``(I, J, K)`` or ``(T, I, J, K)``.

    Raises:
        InputFileNotFoundError, UnsupportedFormatError, CorruptFileError,
        InvalidGeometryError, DimensionError, DicomSeriesError, InvalidLabelError.
    """
    p = Path(path)
    check_exists(p)
    if p.is_file() and suffix_of(p) not in SUPPORTED_SUFFIXES:
        from medcnn.io._labels import find_annotation

        if find_annotation(p) is not None:  # an RTSTRUCT / SEG file: unambiguous as a label map
            return read_labels(p)
    if p.is_dir():
        from medcnn.io._dicom import read_dicom_folder

        vol = read_dicom_folder(p, series=series)
    else:
        sfx = check_suffix(p)
        if sfx in NIFTI_SUFFIXES:
            from medcnn.io._nifti import read_nifti

            vol = read_nifti(p, max_bytes=max_bytes)
        else:
            from medcnn.io._itk import read_itk

            vol = read_itk(p, max_bytes=max_bytes)
    if require_3d and vol.leading_axis is not None:
        raise DimensionError.expected("a 3D volume", f"a 4D volume with {vol.array.shape[0]} frames", path=p,
                                      hint="select one frame (volume.frame(t)) or use the cine commands")
    if kind == "label":
        vol = vol.with_array(as_label_array(vol.array, str(p)), kind="label")
    elif kind != "intensity":
        vol = vol.with_array(vol.array, kind=kind)
    return vol


def read_labels(path: str | PathLike[str], reference: "Volume | str | PathLike[str] | None" = None, *,
                roi: "list[str] | tuple[str, ...] | None" = None) -> Volume:
    """Read a label map: a label image, a DICOM label series, an RT Structure Set or a DICOM SEG.

    Args:
        path: label map file, DICOM folder, RTSTRUCT / SEG file (recognised by its SOP
            class, any file name) or a folder holding one RTSTRUCT / SEG (alone or beside
            its image series).
        reference: image grid (Volume, image file or DICOM series folder). RTSTRUCT: the
            grid the contours are rasterised on (default: the series it refers to, looked
            up in its folder and the folders beside it). SEG: frames must lie on it (default:
            the SEG's own grid). Label images: its geometry must match.
        roi: ROI / segment names to keep, labelled 1..n in that order (default: all).

    Returns:
        label Volume ``(I, J, K)`` uint8/uint16; annotations carry
        ``meta["label_names"] = {"1": "GTV", ...}``. Rasterisation rule: docs/dicom.md.

    Raises:
        AnnotationError (empty / unknown ROI, contours off the slice planes or on missing
        slices), DicomSeriesError (referenced series not found), GeometryMismatchError
        (SEG on another grid), UnsupportedFormatError (not DICOM), and read_volume's errors.
    """
    from medcnn.io._labels import read_labels as _read_labels

    return _read_labels(path, reference, roi=roi)


def read_labels_on_grid(path: str | PathLike[str], grid: Volume) -> Volume:
    """Read a label map onto ``grid`` where that is exact (RTSTRUCT: rasterised on it; SEG:
    decoded onto it when its frames lie on it, restoring the slices a sparse SEG leaves
    out); a SEG on another grid and label images come back as read, for the caller's own
    geometry check or resampling."""
    from medcnn.io._labels import read_labels_on_grid as _on_grid

    return _on_grid(path, grid)


def annotation_kind(path: str | PathLike[str]) -> str | None:
    """``"rtstruct"`` or ``"seg"`` when ``path`` is a DICOM RT Structure Set or Segmentation
    file, or a folder holding one (alone or beside its image series); ``None`` for anything
    else (label images, image series without annotation)."""
    from medcnn.io._labels import find_annotation

    p = Path(path)
    check_exists(p)
    found = find_annotation(p)
    return None if found is None else found[1]


def write_volume(volume: Volume, path: str | PathLike[str]) -> Path:
    """Write ``volume`` with its exact geometry; the format follows the file extension.

    Label maps keep their integer dtype. The float64 affine is also stored in the header
    (NIfTI extension / ITK metadata) so medcnn round trips are exact even where the format
    itself stores float32.

    Returns:
        The path written.
    """
    p = Path(path)
    if p.is_dir() or str(path).endswith(("/", "\\")):
        raise UnsupportedFormatError.expected("a file name with an image extension", "a folder", path=p,
                                              hint="writing DICOM is not supported; use .nii.gz, .nrrd or .mha")
    sfx = check_suffix(p, for_writing=True)
    if sfx in NIFTI_SUFFIXES:
        from medcnn.io._nifti import write_nifti

        write_nifti(volume, p)
    else:
        from medcnn.io._itk import write_itk

        write_itk(volume, p)
    return p


def input_qc_flags(volumes: "Volume | list[Volume] | tuple[Volume, ...]", *, phase: str | None = None) -> list[dict]:
    """QC flags for the read notes of ``volumes`` (:attr:`Volume.read_notes`, e.g. a NIfTI
    header read by the rule for inconsistent headers): ``{"code", "message", "phase",
    "scope": "input"}`` per note, one per distinct message. ``scope`` marks a flag about an
    input file, which reports repeat on every row of its case."""
    vols = [volumes] if isinstance(volumes, Volume) else list(volumes)
    out: dict[str, dict] = {}
    for v in vols:
        for note in v.read_notes:
            out.setdefault(note["message"], {"code": note["code"], "message": note["message"], "phase": phase,
                                             "scope": "input"})
    return list(out.values())


def input_rules(volumes: "Volume | list[Volume] | tuple[Volume, ...]") -> dict[str, str]:
    """``{code: rule}`` of the read notes of ``volumes``: how each flagged input was read, for
    a report's methods / provenance."""
    vols = [volumes] if isinstance(volumes, Volume) else list(volumes)
    return {n["code"]: n["rule"] for v in vols for n in v.read_notes}


def list_dicom_series(folder: str | PathLike[str]) -> list[dict]:
    """Image series in a DICOM folder (``uid``, ``description``, ``modality``, ``n_files``)."""
    from medcnn.io._dicom import list_dicom_series as _list

    p = Path(folder)
    check_exists(p)
    return _list(p)


def read_dicom_identifiers(folder: str | PathLike[str]) -> dict[str, str]:
    """Patient name / ID / birth date of a DICOM folder; for explicit opt-in reports only."""
    from medcnn.io._dicom import read_dicom_identifiers as _ids

    return _ids(Path(folder))
