"""DICOM series and cine reading: geometry from positions, sorting, bad folders."""

from __future__ import annotations

import numpy as np
import pytest

from dicom_factory import write_non_image, write_series
from medcnn.errors import DicomSeriesError, MultipleSeriesError
from medcnn.io import list_dicom_series, read_dicom_identifiers, read_volume

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def test_series_geometry_from_positions_not_slice_thickness(tmp_path):
    px = write_series(tmp_path, n_slices=5, rows=6, cols=7, spacing=(0.8, 0.9), dz=2.5, origin=(10, -20, 30))
    v = read_volume(tmp_path)
    assert v.shape == (7, 6, 5)  # (I = columns, J = rows, K = slices)
    assert v.spacing == pytest.approx((0.9, 0.8, 2.5))  # SliceThickness=99 ignored
    assert v.geometry.origin == pytest.approx(tuple(LPS_TO_RAS @ [10, -20, 30]))
    assert v.geometry.orientation == "LPS"
    # voxel (i, j, k) = pixel at row j, column i of slice k
    assert np.array_equal(v.array[:, :, 2], px[0, 2].T)


def test_oblique_series_sorted_along_normal(tmp_path):
    a = np.deg2rad(30)
    row = (np.cos(a), np.sin(a), 0.0)
    col = (0.0, 0.0, -1.0)
    normal = np.cross(row, col)
    px = write_series(tmp_path, n_slices=4, row_dir=row, col_dir=col, dz=3.0, origin=(5.0, 6.0, 7.0))
    v = read_volume(tmp_path)
    d = v.geometry.direction_matrix
    assert np.allclose(d[:, 0], LPS_TO_RAS @ row) and np.allclose(d[:, 2], LPS_TO_RAS @ normal)
    world_last = v.geometry.index_to_world([[0, 0, 3]])[0]
    assert np.allclose(world_last, LPS_TO_RAS @ (np.array([5.0, 6.0, 7.0]) + 9.0 * normal), atol=1e-6)
    assert np.array_equal(v.array[:, :, 3], px[0, 3].T)


def test_cine_series_is_4d_ordered_by_trigger_time(tmp_path):
    times = [300.0, 20.0, 160.0]  # frame index t has trigger time times[t]
    px = write_series(tmp_path, n_slices=3, frames=3, trigger_times=times)
    v = read_volume(tmp_path)
    assert v.leading_axis == "time" and v.shape == (3, 7, 6, 3)
    assert v.frame_times_ms == pytest.approx((20.0, 160.0, 300.0))
    assert np.array_equal(v.array[0, :, :, 1], px[1, 1].T)  # earliest trigger = written frame 1
    with pytest.raises(Exception, match="expected a 3D volume"):
        read_volume(tmp_path, require_3d=True)


def test_empty_and_non_dicom_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DicomSeriesError, match="expected DICOM image files in the folder, got an empty folder"):
        read_volume(tmp_path / "empty")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("hello")
    with pytest.raises(DicomSeriesError, match="got 1 other files"):
        read_volume(other)


def test_mixed_series_are_listed_and_selectable(tmp_path):
    write_series(tmp_path, n_slices=4, series_uid="1.1", description="cine sax")
    write_series(tmp_path, n_slices=3, series_uid="2.2", description="localiser", start_index=100)
    with pytest.raises(MultipleSeriesError) as exc:
        read_volume(tmp_path)
    msg = str(exc.value)
    assert "expected one image series, got 2" in msg and "1.1" in msg and "localiser" in msg and "files=3" in msg
    assert [s["n_files"] for s in exc.value.series] == [4, 3]
    assert read_volume(tmp_path, series="2.2").shape[-1] == 3
    assert read_volume(tmp_path, series="localiser").shape[-1] == 3
    assert read_volume(tmp_path, series=0).shape[-1] == 4
    assert len(list_dicom_series(tmp_path)) == 2


def test_missing_slice_is_refused_with_measured_gap(tmp_path):
    pos = [np.array([0.0, 0.0, 2.0 * k]) for k in (0, 1, 2, 4, 5)]
    write_series(tmp_path, n_slices=5, positions=pos)
    with pytest.raises(DicomSeriesError, match=r"got a gap of 4\.000 mm between slices 2 and 3"):
        read_volume(tmp_path)


def test_duplicated_slices_are_refused(tmp_path):
    pos = [np.array([0.0, 0.0, 2.0 * k]) for k in (0, 1, 1, 2)]
    write_series(tmp_path, n_slices=4, positions=pos)
    with pytest.raises(DicomSeriesError, match="same number of images at every slice position|duplicated"):
        read_volume(tmp_path)


def test_mixed_orientations_are_refused(tmp_path):
    write_series(tmp_path, n_slices=3)
    write_series(tmp_path, n_slices=1, row_dir=(0, 1, 0), col_dir=(0, 0, -1), start_index=50)
    with pytest.raises(DicomSeriesError, match="expected one ImageOrientationPatient"):
        read_volume(tmp_path)


def test_non_image_objects_are_skipped_and_reported(tmp_path):
    write_series(tmp_path, n_slices=3)
    write_non_image(tmp_path)
    v = read_volume(tmp_path)
    assert v.shape[-1] == 3
    assert any("sr.dcm" in s for s in v.meta["skipped_files"])


def test_identifiers_never_in_meta_but_available_on_request(tmp_path):
    write_series(tmp_path, n_slices=2)
    v = read_volume(tmp_path)
    flat = repr(v.meta) + repr(v)
    assert "Doe" not in flat and "PID-12345" not in flat and "19700101" not in flat
    assert read_dicom_identifiers(tmp_path)["PatientID"] == "PID-12345"


@pytest.mark.realdata
def test_sunnybrook_cine_matches_nifti_conversions(shared_data):
    folder = shared_data / "sunnybrook" / "dicom" / "SCD0000101"
    cine = read_volume(folder)
    assert cine.leading_axis == "time"
    assert cine.n_frames == 20
    cols, rows, slices = cine.geometry.shape
    assert (slices, rows, cols) == (12, 256, 256)  # 20 frames x 12 slices x 256 x 256
    assert np.all(np.diff(cine.frame_times_ms) > 0)
    import json

    ref = {r["patient_id"]: r for r in json.loads((shared_data / "sunnybrook" / "reference.json").read_text())}
    ref = ref["SCD0000101"]
    for phase in ("ED", "ES"):
        nii = read_volume(shared_data / "sunnybrook" / "nifti" / f"SCD0000101_{phase}.nii.gz")
        assert cine.geometry.isclose(nii.geometry, atol_mm=1e-3), cine.geometry.differences(nii.geometry)
        t = ref[phase]["phase_0based"]
        assert np.array_equal(cine.array[t], nii.array)
