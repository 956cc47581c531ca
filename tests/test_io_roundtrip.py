"""Every writer round-trips geometry (1e-5 mm) and dtype, in every format, with awkward geometry."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import rotation
from medcnn.io import read_volume, write_volume
from medcnn.volume import Geometry, Volume

FORMATS = [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".nhdr"]


def _corner_error_mm(a: Geometry, b: Geometry) -> float:
    return float(np.max(np.abs(a.corners_world() - b.corners_world())))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_round_trip_geometry_and_dtype(tmp_path, awkward_geometry, fmt, dtype):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 5, awkward_geometry.shape).astype(dtype)
    vol = Volume(arr, awkward_geometry, "label" if dtype == np.uint8 else "intensity")
    path = write_volume(vol, tmp_path / f"x{fmt}")
    back = read_volume(path)
    assert back.array.dtype == dtype
    assert np.array_equal(back.array, arr)
    assert back.geometry.shape == vol.geometry.shape
    assert np.allclose(back.affine, vol.affine, rtol=0, atol=1e-5)
    assert _corner_error_mm(back.geometry, vol.geometry) < 1e-5
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp leftovers


@pytest.mark.parametrize("fmt", [".nii.gz", ".nrrd", ".mha"])
def test_round_trip_cine_4d(tmp_path, fmt):
    g = Geometry((5, 4, 3), (1.4, 1.4, 8.0), (1, 2, 3), tuple(map(tuple, rotation(0.2, 0.1, -0.4))))
    arr = np.arange(6 * 60, dtype=np.int16).reshape(6, 5, 4, 3)
    vol = Volume(arr, g, leading_axis="time", frame_times_ms=[19, 59, 99, 139, 179, 219])
    back = read_volume(write_volume(vol, tmp_path / f"c{fmt}"))
    assert back.leading_axis == "time" and np.array_equal(back.array, arr)
    assert np.allclose(back.affine, g.affine, atol=1e-5)
    assert back.frame_times_ms == pytest.approx(vol.frame_times_ms)


def test_label_read_validates_and_shrinks_dtype(tmp_path):
    g = Geometry((3, 3, 3), (1, 1, 1))
    p = write_volume(Volume(np.full((3, 3, 3), 4.0, np.float32), g), tmp_path / "l.nii.gz")
    lab = read_volume(p, kind="label")
    assert lab.kind == "label" and lab.array.dtype == np.uint8 and lab.array.max() == 4


@settings(max_examples=25, deadline=None)
@given(angles=st.tuples(*[st.floats(-3.1, 3.1)] * 3),
       spacing=st.tuples(*[st.floats(0.2, 9.0)] * 3),
       origin=st.tuples(*[st.floats(-400, 400)] * 3),
       fmt=st.sampled_from([".nii.gz", ".nrrd", ".mha"]))
def test_round_trip_property(tmp_path_factory, angles, spacing, origin, fmt):
    g = Geometry((4, 3, 5), spacing, origin, tuple(map(tuple, rotation(*angles))))
    d = tmp_path_factory.mktemp("rt")
    back = read_volume(write_volume(Volume(np.ones(g.shape, np.uint8), g), d / f"p{fmt}"))
    assert np.allclose(back.affine, g.affine, rtol=0, atol=1e-5)


def test_nifti_written_by_medcnn_reads_in_nibabel_and_simpleitk(tmp_path, awkward_geometry):
    import nibabel as nib
    import SimpleITK as sitk

    vol = Volume(np.zeros(awkward_geometry.shape, np.uint8), awkward_geometry)
    p = write_volume(vol, tmp_path / "x.nii.gz")
    assert np.allclose(nib.load(str(p)).affine, vol.affine, atol=1e-4)  # float32 header
    img = sitk.ReadImage(str(p))
    origin_ras = np.array(img.GetOrigin()) * [-1, -1, 1]
    assert np.allclose(origin_ras, vol.geometry.origin, atol=1e-4)
    assert img.GetSize() == vol.geometry.shape


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["brain1_image.nrrd", "brain1_label.nrrd", "breast1_image.nrrd",
                                  "breast1_label.nrrd", "prostate_phantom_subvolume.nrrd"])
def test_pyradiomics_nrrd_geometry_matches_simpleitk(shared_data, name):
    import SimpleITK as sitk

    path = shared_data / "pyradiomics" / name
    img = sitk.ReadImage(str(path))
    v = read_volume(path)
    assert v.geometry.shape == img.GetSize()
    assert np.allclose(v.spacing, img.GetSpacing(), atol=1e-9)
    assert np.allclose(v.geometry.origin, np.array(img.GetOrigin()) * [-1, -1, 1], atol=1e-9)
    d_lps = np.array(img.GetDirection()).reshape(3, 3)
    assert np.allclose(v.geometry.direction_matrix, np.diag([-1, -1, 1]) @ d_lps, atol=1e-9)
    # a point: voxel (2, 3, 4) in both libraries
    p_lps = np.array(img.TransformIndexToPhysicalPoint((2, 3, 4)))
    assert np.allclose(v.geometry.index_to_world([[2, 3, 4]])[0], p_lps * [-1, -1, 1], atol=1e-6)
    assert np.array_equal(v.array, sitk.GetArrayFromImage(img).transpose(2, 1, 0))


@pytest.mark.realdata
def test_real_nifti_round_trip_is_exact(tmp_path, shared_data):
    src = shared_data / "sunnybrook" / "nifti" / "SCD0000201_ED_gt.nii.gz"
    lab = read_volume(src, kind="label")
    for fmt in (".nii.gz", ".nrrd", ".mha"):
        back = read_volume(write_volume(lab, tmp_path / f"gt{fmt}"), kind="label")
        assert np.array_equal(back.array, lab.array) and back.array.dtype == lab.array.dtype
        assert np.allclose(back.affine, lab.affine, rtol=0, atol=1e-5)


def test_written_files_get_normal_permissions(tmp_path):
    import os
    import stat

    g = Geometry((2, 2, 2), (1, 1, 1))
    old = os.umask(0o022)
    try:
        p = write_volume(Volume(np.zeros((2, 2, 2), np.uint8), g), tmp_path / "perm.nii.gz")
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o644


def test_image_stem_treats_nii_gz_as_one_extension():
    from medcnn.io import image_stem

    assert image_stem("case01.nii.gz") == "case01" and image_stem("A.B.NRRD") == "A.B"
    assert image_stem("notes.txt") is None and image_stem(".nii.gz") is None
