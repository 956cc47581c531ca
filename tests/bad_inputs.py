"""The bad-input corpus, generated on the fly (no committed binaries).

Each builder writes one damaged input under a folder and returns its path; ``IMAGE_CASES``
maps a case name to ``(builder, expected message fragment)``.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np

from dicom_factory import write_non_image, write_series


def _nifti(path: Path, data, affine=None) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def _hdr_only(path: Path, hdr) -> Path:
    path.write_bytes(hdr.binaryblock + b"\0" * 4 + b"\0" * 256)
    return path


def truncated_gzip(d: Path) -> Path:
    src = _nifti(d / "src.nii.gz", np.random.default_rng(0).integers(0, 999, (32, 32, 32)).astype(np.int16))
    out = d / "truncated.nii.gz"
    out.write_bytes(src.read_bytes()[: int(src.stat().st_size * 0.7)])
    src.unlink()
    return out


def lying_header(d: Path) -> Path:
    p = _nifti(d / "lying.nii", np.zeros((16, 16, 16), np.int16))
    p.write_bytes(p.read_bytes()[:600])
    return p


def spacing_header(d: Path, name: str, pixdim_y: float) -> Path:
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((8, 8, 8))
    hdr.set_data_dtype(np.int16)
    hdr["pixdim"] = [1, 1, pixdim_y, 1, 1, 1, 1, 1]
    hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = [1, 0, 0, 0], [0, pixdim_y, 0, 0], [0, 0, 1, 0]
    hdr["sform_code"], hdr["qform_code"] = 1, 0
    return _hdr_only(d / name, hdr)


def negative_pixdim(d: Path) -> Path:
    """qform-only header with a negative pixdim (nibabel would silently take abs())."""
    img = nib.Nifti1Image(np.zeros((8, 8, 8), np.int16), None)
    img.header.set_qform(np.eye(4), code=1)
    img.header["sform_code"] = 0
    p = d / "negpix.nii"
    nib.save(img, str(p))
    raw = bytearray(p.read_bytes())
    pixdim = np.frombuffer(bytes(raw[76:108]), dtype="<f4").copy()
    pixdim[2] = -1.0
    raw[76:108] = pixdim.astype("<f4").tobytes()
    p.write_bytes(bytes(raw))
    return p


def non_orthonormal(d: Path) -> Path:
    a = np.eye(4)
    a[0, 1] = 0.6  # sheared: axes not perpendicular
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((8, 8, 8))
    hdr.set_data_dtype(np.int16)
    hdr.set_sform(a, code=1)
    hdr["qform_code"] = 0
    return _hdr_only(d / "sheared.nii", hdr)


def two_d(d: Path) -> Path:
    return _nifti(d / "slice2d.nii.gz", np.zeros((16, 16), np.float32))


def five_d(d: Path) -> Path:
    return _nifti(d / "five.nii.gz", np.zeros((4, 4, 4, 2, 3), np.float32))


def huge_header(d: Path) -> Path:
    hdr = nib.Nifti2Header()
    hdr.set_data_dtype(np.float32)
    hdr.set_data_shape((100_000, 100_000, 100_000))
    p = d / "huge.nii"
    p.write_bytes(hdr.binaryblock + b"\0" * 4 + b"\0" * 256)
    return p


def all_nan(d: Path) -> Path:
    return _nifti(d / "allnan.nii.gz", np.full((16, 16, 8), np.nan, np.float32))


def constant(d: Path) -> Path:
    return _nifti(d / "constant.nii.gz", np.full((16, 16, 8), 7.0, np.float32))


def garbage(d: Path) -> Path:
    p = d / "garbage.nii.gz"
    p.write_bytes(gzip.compress(b"definitely not an image" * 4))
    return p


def dicom_missing_slice(d: Path) -> Path:
    f = d / "dcm_missing"
    write_series(f, n_slices=5, positions=[np.array([0.0, 0.0, 2.0 * k]) for k in (0, 1, 2, 4, 5)])
    return f


def dicom_duplicated(d: Path) -> Path:
    f = d / "dcm_dup"
    write_series(f, n_slices=4, positions=[np.array([0.0, 0.0, 2.0 * k]) for k in (0, 1, 1, 2)])
    return f


def dicom_mixed_orientation(d: Path) -> Path:
    f = d / "dcm_orient"
    write_series(f, n_slices=3)
    write_series(f, n_slices=1, row_dir=(0, 1, 0), col_dir=(0, 0, -1), start_index=50)
    return f


def dicom_mixed_series(d: Path) -> Path:
    f = d / "dcm_mixed"
    write_series(f, n_slices=3, series_uid="1.1")
    write_series(f, n_slices=3, series_uid="2.2", start_index=100)
    return f


def dicom_non_image_only(d: Path) -> Path:
    f = d / "dcm_sr"
    f.mkdir()
    write_non_image(f)
    return f


#: name -> (builder, fragment of the expected message)
IMAGE_CASES = {
    "truncated_gzip": (truncated_gzip, "truncated or damaged gzip"),
    "lying_header": (lying_header, "as the header declares"),
    "zero_spacing": (lambda d: spacing_header(d, "zero.nii", 0.0), "expected finite spacing > 0 mm"),
    "negative_spacing": (negative_pixdim, "expected finite spacing > 0 mm on every axis (pixdim[1:4]), got pixdim (1.0, -1.0, 1.0)"),
    "nan_spacing": (lambda d: spacing_header(d, "nan.nii", float("nan")), "expected finite"),
    "non_orthonormal": (non_orthonormal, "orthonormal"),
    "2d": (two_d, "got a 2D image"),
    "5d": (five_d, "got a 5D image"),
    "huge_header": (huge_header, "header claiming shape (100000, 100000, 100000)"),
    "garbage": (garbage, "expected a readable NIfTI header"),
    "dicom_missing_slice": (dicom_missing_slice, "got a gap of 4.000 mm"),
    "dicom_duplicated": (dicom_duplicated, "duplicated"),
    "dicom_mixed_orientation": (dicom_mixed_orientation, "expected one ImageOrientationPatient"),
    "dicom_mixed_series": (dicom_mixed_series, "expected one image series, got 2"),
    "dicom_non_image_only": (dicom_non_image_only, "expected DICOM image files in the folder"),
}

#: readable, but unusable for a model
INTENSITY_CASES = {
    "all_nan": (all_nan, "expected finite intensities"),
    "constant": (constant, "constant"),
}
