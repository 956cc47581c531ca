"""RT Structure Sets -> label maps: exact voxels under the documented rule (centre inside,
even-odd over all contours of a slice), oblique / reversed series, refusals, real data."""

from __future__ import annotations

import numpy as np
import pytest

from dicom_factory import voxel_to_lps, write_rtstruct, write_series
from medcnn.errors import AnnotationError, DicomSeriesError, MedcnnError, UnsupportedFormatError
from medcnn.io import read_labels, read_volume

GEOMS = {
    "axial": {},
    "oblique": {"row_dir": (np.cos(0.3), np.sin(0.3), 0.0),
                "col_dir": (-np.sin(0.3) * np.cos(0.5), np.cos(0.3) * np.cos(0.5), np.sin(0.5)),
                "origin": (-5.0, 12.0, -40.0)},
    "reversed": {"dz": -2.5, "origin": (3.0, 4.0, 50.0)},
}
SHAPE = dict(n_slices=5, rows=12, cols=14)  # I = 14 columns, J = 12 rows, K = 5 slices


def _series(tmp_path, geom):
    kw = {**SHAPE, **GEOMS[geom]}
    write_series(tmp_path / "image", **kw)
    return {k: kw[k] for k in ("dz", "origin", "row_dir", "col_dir") if k in kw}


def _square(i0, i1, j0, j1, k, g):
    return voxel_to_lps([[i0, j0, k], [i1, j0, k], [i1, j1, k], [i0, j1, k]], **g)


def _medcnn_k(k, geom):
    """medcnn sorts slices along the normal: with a negative dz file slice k is K = n-1-k."""
    return SHAPE["n_slices"] - 1 - k if geom == "reversed" else k


@pytest.mark.parametrize("geom", list(GEOMS))
def test_square_ring_and_island_exact_voxels(tmp_path, geom):
    g = _series(tmp_path, geom)
    rois = {
        # voxels i = 2..4, j = 1..3 on slice 1 (edges between centres)
        "square": [_square(1.5, 4.5, 0.5, 3.5, 1, g)],
        # ring: outer i 6..12 j 2..9 minus hole i 8..10 j 4..7, plus an island i 9 j 5..6 in the hole (slice 3)
        "ring": [_square(5.5, 12.5, 1.5, 9.5, 3, g), _square(7.5, 10.5, 3.5, 7.5, 3, g),
                 _square(8.5, 9.5, 4.5, 6.5, 3, g)],
    }
    write_rtstruct(tmp_path / "mask" / "RS.dcm", rois)
    lab = read_labels(tmp_path / "mask" / "RS.dcm")  # series found in the folder beside it
    img = read_volume(tmp_path / "image")
    assert lab.geometry.isclose(img.geometry)
    assert lab.meta["label_names"] == {"1": "square", "2": "ring"}
    expected = np.zeros(lab.shape, np.uint8)
    expected[2:5, 1:4, _medcnn_k(1, geom)] = 1
    ring = np.zeros(lab.shape[:2], bool)
    ring[6:13, 2:10] = True
    ring[8:11, 4:8] = False
    ring[9, 5:7] = True
    expected[:, :, _medcnn_k(3, geom)][ring] = 2
    np.testing.assert_array_equal(lab.array, expected)


def test_circle_matches_distance_rule(tmp_path):
    g = _series(tmp_path, "axial")
    spacing = (0.9, 0.8)  # mm along I, J (PixelSpacing is row, column)
    centre, radius = np.array([6.13, 4.97]), 3.61  # mm, in the slice plane from voxel (0, 0)
    t = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    pts_mm = centre + radius * np.column_stack([np.cos(t), np.sin(t)])
    ijk = np.column_stack([pts_mm[:, 0] / spacing[0], pts_mm[:, 1] / spacing[1], np.full(len(t), 2)])
    write_rtstruct(tmp_path / "mask" / "RS.dcm", {"circle": [voxel_to_lps(ijk, **g)]})
    lab = read_labels(tmp_path / "mask" / "RS.dcm")
    ii, jj = np.meshgrid(np.arange(14) * spacing[0], np.arange(12) * spacing[1], indexing="ij")
    d = np.hypot(ii - centre[0], jj - centre[1])
    assert np.abs(d - radius).min() > 1e-3  # chord error of 720 vertices: 3e-5 mm
    np.testing.assert_array_equal(lab.array[:, :, 2] == 1, d < radius)
    assert not lab.array[:, :, [0, 1, 3, 4]].any()


def test_shared_edge_claimed_by_one_roi_only(tmp_path):
    g = _series(tmp_path, "axial")
    # edges through voxel centres: i 2..5 / 5..8, j 1..4; the documented half-open rule
    write_rtstruct(tmp_path / "mask" / "RS.dcm", {"left": [_square(2, 5, 1, 4, 0, g)],
                                                  "right": [_square(5, 8, 1, 4, 0, g)]})
    lab = read_labels(tmp_path / "mask" / "RS.dcm")
    expected = np.zeros(lab.shape[:2], np.uint8)
    expected[2:5, 1:4] = 1
    expected[5:8, 1:4] = 2
    np.testing.assert_array_equal(lab.array[:, :, 0], expected)
    assert lab.meta["overlap_voxels"] == 0


def test_roi_selection_and_overlap_goes_to_smaller(tmp_path):
    g = _series(tmp_path, "axial")
    write_rtstruct(tmp_path / "mask" / "RS.dcm", {"body": [_square(0.5, 12.5, 0.5, 10.5, 2, g)],
                                                  "gtv": [_square(3.5, 5.5, 3.5, 5.5, 2, g)]})
    both = read_labels(tmp_path / "mask" / "RS.dcm")
    assert (both.array == 2).sum() == 4 and (both.array == 1).sum() == 12 * 10 - 4
    assert both.meta["overlap_voxels"] == 4
    only = read_labels(tmp_path / "mask" / "RS.dcm", roi=["gtv"])
    assert only.meta["label_names"] == {"1": "gtv"} and (only.array == 1).sum() == 4
    with pytest.raises(AnnotationError, match="ROI names among"):
        read_labels(tmp_path / "mask" / "RS.dcm", roi=["liver"])


def test_explicit_reference_and_volume_reference(tmp_path):
    g = _series(tmp_path, "axial")
    write_rtstruct(tmp_path / "elsewhere" / "deep" / "RS.dcm", {"sq": [_square(1.5, 4.5, 0.5, 3.5, 1, g)]})
    with pytest.raises(DicomSeriesError, match="RS.dcm: expected the image series"):
        read_labels(tmp_path / "elsewhere" / "deep" / "RS.dcm")
    a = read_labels(tmp_path / "elsewhere" / "deep" / "RS.dcm", reference=tmp_path / "image")
    b = read_labels(tmp_path / "elsewhere" / "deep" / "RS.dcm", reference=read_volume(tmp_path / "image"))
    np.testing.assert_array_equal(a.array, b.array)
    assert a.array.sum() == 9


@pytest.mark.parametrize("case,match", [
    ("off_plane", "off the nearest slice plane"),
    ("tilted", "off the nearest slice plane"),
    ("missing_slice", "which the series does not have"),
    ("empty_roi", "an empty ROI"),
    ("tiny_roi", "an empty ROI"),
    ("points_only", "only POINT contours"),
])
def test_refusals(tmp_path, case, match):
    g = _series(tmp_path, "axial")
    contours = {
        "off_plane": [_square(1.5, 4.5, 0.5, 3.5, 1.5, g)],
        "tilted": [voxel_to_lps([[1, 1, 1], [4, 1, 1], [4, 4, 1.4]], **g)],
        "missing_slice": [_square(1.5, 4.5, 0.5, 3.5, 7, g)],
        "empty_roi": [],
        "tiny_roi": [_square(1.2, 1.4, 1.2, 1.4, 1, g)],
        "points_only": [voxel_to_lps([[1, 1, 1], [2, 2, 1], [3, 3, 1]], **g)],
    }[case]
    write_rtstruct(tmp_path / "mask" / "RS.dcm", {"roi": contours},
                   geometric_type="POINT" if case == "points_only" else "CLOSED_PLANAR")
    with pytest.raises(AnnotationError, match=match) as err:
        read_labels(tmp_path / "mask" / "RS.dcm")
    assert str(err.value).startswith(str(tmp_path / "mask" / "RS.dcm"))
    assert "\n" not in str(err.value)


def test_non_dicom_file_refused(tmp_path):
    bad = tmp_path / "notes.dcm"
    bad.write_text("not dicom at all")
    with pytest.raises(UnsupportedFormatError, match="not DICOM"):
        read_labels(bad)
    assert issubclass(AnnotationError, MedcnnError)


def test_read_volume_reads_an_annotation_file(tmp_path):
    g = _series(tmp_path, "axial")
    write_rtstruct(tmp_path / "mask" / "RS.dcm", {"sq": [_square(1.5, 4.5, 0.5, 3.5, 1, g)]})
    v = read_volume(tmp_path / "mask" / "RS.dcm", kind="label")
    assert v.kind == "label" and v.array.sum() == 9
    folder = read_labels(tmp_path / "mask")  # a folder holding just the structure set
    np.testing.assert_array_equal(folder.array, v.array)


@pytest.mark.realdata
def test_sarcoma_rtstruct_matches_independent_voxelisation(shared_data):
    case = shared_data / "sarcoma" / "STS_001" / "CT"
    lab = read_labels(case / "dicom" / "mask" / "RS.dcm")
    ref = read_volume(case / "nifti" / "mask" / "mask.nii.gz", kind="label")
    assert lab.geometry.isclose(ref.geometry, atol_mm=1e-3)
    assert lab.meta["label_names"] == {"1": "GTV_Mass_CT"}
    a, b = lab.array > 0, ref.array > 0
    dice = 2 * (a & b).sum() / (a.sum() + b.sum())
    assert dice >= 0.97
    assert abs(int(a.sum()) - int(b.sum())) / b.sum() <= 0.03


def test_training_label_entry_may_be_an_rtstruct(tmp_path):
    import json

    from medcnn.train._compat import make_preprocess
    from medcnn.train.datasets import load_dataset_json

    g = _series(tmp_path, "oblique")
    write_rtstruct(tmp_path / "mask" / "RS.dcm", {"sq": [_square(1.5, 4.5, 0.5, 3.5, 1, g)],
                                                  "ring": [_square(5.5, 12.5, 1.5, 9.5, 3, g)]})
    (tmp_path / "dataset.json").write_text(json.dumps({"training": [{"image": "image", "label": "mask/RS.dcm"}]}))
    (case,) = load_dataset_json(tmp_path / "dataset.json")
    image, label, _ = make_preprocess({"orientation": None, "target_spacing": None})(case)
    assert image.shape[1:] == label.shape == (14, 12, 5)
    assert (label == 1).sum() == 9 and (label == 2).sum() == 7 * 8


def test_series_with_a_missing_middle_slice_is_refused(tmp_path):
    positions = [np.array([10.0, -20.0, 30.0 + 2.5 * k]) for k in (0, 1, 2, 4, 5)]  # slice 3 missing
    write_series(tmp_path / "image", **SHAPE, positions=positions)
    write_rtstruct(tmp_path / "mask" / "RS.dcm", {"sq": [_square(1.5, 4.5, 0.5, 3.5, 1, {})]})
    with pytest.raises(DicomSeriesError, match="a slice is probably missing"):
        read_labels(tmp_path / "mask" / "RS.dcm")


def test_folder_with_series_and_structure_set_side_by_side(tmp_path):
    g = _series(tmp_path, "axial")
    write_rtstruct(tmp_path / "image" / "RS.dcm", {"sq": [_square(1.5, 4.5, 0.5, 3.5, 1, g)]})
    lab = read_labels(tmp_path / "image")  # the one annotation in the folder, on the series beside it
    assert lab.array.sum() == 9 and lab.meta["label_names"] == {"1": "sq"}
    assert read_volume(tmp_path / "image").kind == "intensity"  # the series itself is unaffected
    write_rtstruct(tmp_path / "image" / "RS2.dcm", {"other": [_square(1.5, 4.5, 0.5, 3.5, 1, g)]})
    with pytest.raises(AnnotationError, match="one RTSTRUCT or SEG file in the folder"):
        read_labels(tmp_path / "image")
