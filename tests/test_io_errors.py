"""Bad input files: one clear typed message naming the file, nothing written."""

from __future__ import annotations

import gzip
import os

import nibabel as nib
import numpy as np
import pytest

from medcnn.cli import main
from medcnn.errors import (CorruptFileError, DimensionError, InputFileNotFoundError, InvalidGeometryError,
                           InvalidLabelError, MedcnnError, UnsupportedFormatError)
from medcnn.io import read_volume, write_volume
from medcnn.volume import Geometry, Volume


def _nifti(path, data, affine=None, **hdr):
    img = nib.Nifti1Image(data, np.eye(4) if affine is None else affine)
    for k, v in hdr.items():
        img.header[k] = v
    nib.save(img, str(path))
    return path


def _good(tmp_path, name="good.nii.gz"):
    return _nifti(tmp_path / name, np.zeros((8, 8, 8), np.int16))


def _truncated_gzip(tmp_path):
    p = _good(tmp_path, "src.nii.gz")
    data = p.read_bytes()
    out = tmp_path / "truncated.nii.gz"
    out.write_bytes(data[: len(data) // 2])
    return out


def _truncated_gzip_data(tmp_path):
    src = _nifti(tmp_path / "big.nii.gz", np.random.default_rng(0).integers(0, 999, (40, 40, 40)).astype(np.int16))
    data = src.read_bytes()
    out = tmp_path / "truncated_data.nii.gz"
    out.write_bytes(data[: int(len(data) * 0.8)])
    src.unlink()
    return out


def _lying_header(tmp_path):
    p = tmp_path / "lying.nii"
    _nifti(p, np.zeros((8, 8, 8), np.int16))
    raw = p.read_bytes()
    p.write_bytes(raw[: 352 + 100])  # header says 1024 bytes of data, 100 present
    return p


def _corrupt_header(tmp_path):
    p = tmp_path / "garbage.nii.gz"
    p.write_bytes(gzip.compress(b"this is not a nifti header" * 3))
    return p


def _zero_spacing(tmp_path):
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((4, 4, 4))
    hdr.set_data_dtype(np.int16)
    hdr["pixdim"] = [1, 1, 0, 1, 1, 1, 1, 1]
    hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]
    hdr["sform_code"], hdr["qform_code"] = 1, 0
    p = tmp_path / "zero.nii"
    p.write_bytes(hdr.binaryblock + b"\0" * 4 + b"\0" * 128)
    return p


def _nan_affine(tmp_path):
    a = np.eye(4)
    a[0, 3] = np.nan
    p = _nifti(tmp_path / "nan.nii.gz", np.zeros((4, 4, 4), np.int16), a)
    return p


def _two_d(tmp_path):
    return _nifti(tmp_path / "slice.nii.gz", np.zeros((8, 8), np.int16))


def _five_d(tmp_path):
    return _nifti(tmp_path / "five.nii.gz", np.zeros((4, 4, 4, 2, 3), np.int16))


def _huge_header(tmp_path):
    p = tmp_path / "huge.nii"
    _nifti(p, np.zeros((4, 4, 4), np.int16))
    img = nib.load(str(p))
    hdr = img.header.copy()
    hdr.set_data_shape((30_000, 30_000, 30_000))
    p.write_bytes(hdr.binaryblock + b"\0" * 4 + b"\0" * 128)
    return p


def _negative_spacing_nrrd(tmp_path):
    p = tmp_path / "neg.nrrd"
    p.write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 2 2 2\nspace: left-posterior-superior\n"
                  b"space directions: (0,0,0) (0,1,0) (0,0,1)\nencoding: raw\nendian: little\n"
                  b"space origin: (0,0,0)\n\n" + b"\0" * 16)
    return p


CASES = {
    "missing": (lambda t: t / "nope.nii.gz", InputFileNotFoundError, "expected an existing file or DICOM folder"),
    "extension": (lambda t: (t / "scan.png").write_bytes(b"x") and t / "scan.png", UnsupportedFormatError,
                  "expected one of .nii"),
    "truncated_gzip": (_truncated_gzip, CorruptFileError, "got a truncated or damaged gzip stream"),
    "truncated_gzip_data": (_truncated_gzip_data, CorruptFileError, "got a truncated or damaged gzip stream"),
    "lying_header": (_lying_header, CorruptFileError, "as the header declares"),
    "corrupt_header": (_corrupt_header, CorruptFileError, "expected a readable NIfTI header"),
    "zero_spacing": (_zero_spacing, InvalidGeometryError, "expected finite spacing > 0 mm"),
    "nan_affine": (_nan_affine, InvalidGeometryError, "expected a finite"),
    "2d": (_two_d, DimensionError, "expected a 3D (or 4D cine) image, got a 2D image"),
    "5d": (_five_d, DimensionError, "expected a 3D or 4D image, got a 5D image"),
    "huge_header": (_huge_header, MedcnnError, "header claiming shape (30000, 30000, 30000)"),
    "degenerate_nrrd": (_negative_spacing_nrrd, MedcnnError, "expected"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gives_typed_error_naming_file(tmp_path, case):
    make, exc_type, fragment = CASES[case]
    path = make(tmp_path)
    with pytest.raises(exc_type) as exc:
        read_volume(path)
    msg = str(exc.value)
    assert str(path) in msg and fragment in msg, msg
    assert "\n" not in msg


@pytest.mark.parametrize("case", sorted(CASES))
def test_cli_info_one_line_exit_2_no_traceback(tmp_path, capsys, case):
    make, _, fragment = CASES[case]
    path = make(tmp_path)
    before = set(os.listdir(tmp_path))
    rc = main(["info", str(path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and fragment in err and "Traceback" not in err
    assert set(os.listdir(tmp_path)) == before  # nothing written


def test_label_maps_with_bad_values(tmp_path):
    g = Geometry((2, 2, 2), (1, 1, 1))
    for name, arr, fragment in [("neg", np.full((2, 2, 2), -1, np.int16), "expected non-negative labels"),
                                ("frac", np.full((2, 2, 2), 0.5, np.float32), "expected integer-valued labels"),
                                ("nan", np.full((2, 2, 2), np.nan, np.float32), "expected finite integer labels")]:
        p = write_volume(Volume(arr, g), tmp_path / f"{name}.nii.gz")
        with pytest.raises(InvalidLabelError, match=fragment) as exc:
            read_volume(p, kind="label")
        assert str(p) in str(exc.value)


def test_failed_write_leaves_no_file(tmp_path):
    g = Geometry((2, 2, 2), (1, 1, 1))
    vol = Volume(np.empty((2, 2, 2), dtype=object), g)
    for fmt in (".nii.gz", ".nrrd", ".mhd"):
        with pytest.raises(Exception):
            write_volume(vol, tmp_path / f"out{fmt}")
    assert os.listdir(tmp_path) == []
    with pytest.raises(UnsupportedFormatError, match="expected one of"):
        write_volume(Volume(np.zeros((2, 2, 2)), g), tmp_path / "out.png")
