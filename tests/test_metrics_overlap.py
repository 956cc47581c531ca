"""Overlap, volume and lesion metrics; grid alignment and nearest-neighbour resampling."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from medcnn.errors import DimensionError, GeometryMismatchError, InvalidLabelError
from medcnn.metrics import dice, iou, lesion_detection, resample_nearest, volume_metrics
from medcnn.metrics.grid import align_to_reference, label_mask, normalize_labels
from medcnn.volume import Geometry, Volume

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def lab(arr, spacing=(1.0, 1.0, 1.0), **kw) -> Volume:
    arr = np.asarray(arr)
    return Volume(arr, Geometry(arr.shape, spacing, **kw), kind="label")


def test_dice_iou_by_hand():
    ref = np.zeros((6, 6, 4), np.uint8)
    pred = np.zeros_like(ref)
    ref[1:4, 1:4, 1:3] = 2  # 18 voxels
    pred[2:5, 1:4, 1:3] = 2  # 18 voxels, overlap 2*3*2 = 12
    assert dice(lab(pred), lab(ref), label=2) == pytest.approx(2 * 12 / 36)
    assert iou(lab(pred), lab(ref), label=2) == pytest.approx(12 / 24)
    assert dice(lab(pred), lab(ref), label=1) == 1.0  # both empty under best-worst
    assert math.isnan(dice(lab(pred), lab(ref), label=1, empty_policy="nan"))


def test_union_of_labels_and_nonzero_default():
    ref = np.array([[[0, 1, 2, 3]]], np.uint8)
    pred = np.array([[[1, 1, 0, 3]]], np.uint8)
    assert dice(lab(pred), lab(ref), label=(1, 2)) == pytest.approx(2 * 1 / (2 + 2))
    assert dice(lab(pred), lab(ref)) == pytest.approx(2 * 2 / (3 + 3))
    assert dice(lab(pred.astype(bool)), lab(ref.astype(bool))) == pytest.approx(2 * 2 / 6)


def test_dice_matches_monai_dicemetric():
    torch = pytest.importorskip("torch")
    from monai.metrics import DiceMetric

    rng = np.random.default_rng(0)
    ref = rng.random((20, 18, 9)) < 0.3
    pred = rng.random((20, 18, 9)) < 0.4
    metric = DiceMetric(include_background=True, reduction="none")
    theirs = float(metric(torch.from_numpy(pred)[None, None].float(), torch.from_numpy(ref)[None, None].float())[0, 0])
    assert dice(lab(pred), lab(ref)) == pytest.approx(theirs, abs=1e-6)


def test_volumes_in_ml_from_reference_spacing():
    spacing = (0.5, 0.8, 2.5)  # 1 mm^3 per voxel = 0.001 mL
    ref = np.zeros((10, 10, 4), np.uint8)
    pred = np.zeros_like(ref)
    ref[:5, :4, :2] = 1  # 40 voxels
    pred[:5, :5, :2] = 1  # 50 voxels
    v = volume_metrics(lab(pred, spacing), lab(ref, spacing), label=1)
    assert v["ref_volume_ml"] == pytest.approx(0.040)
    assert v["pred_volume_ml"] == pytest.approx(0.050)
    assert v["volume_diff_ml"] == pytest.approx(0.010)
    assert v["abs_volume_error_ml"] == pytest.approx(0.010)
    assert v["rel_volume_error_percent"] == pytest.approx(25.0)
    assert math.isnan(volume_metrics(lab(pred, spacing), lab(ref, spacing), label=3)["rel_volume_error_percent"])


def test_lesion_detection_counts():
    ref = np.zeros((30, 30, 10), bool)
    pred = np.zeros_like(ref)
    ref[2:5, 2:5, 2:5] = True      # lesion A: detected
    ref[10:13, 10:13, 2:5] = True  # lesion B: missed
    ref[20:23, 2:5, 2:5] = True    # lesion C: detected by a one-voxel touch
    pred[3:6, 3:6, 3:6] = True     # hits A
    pred[22:26, 4:8, 4:8] = True   # touches C at one voxel (22, 4, 4)
    pred[25:28, 20:23, 5:8] = True  # false positive
    d = lesion_detection(lab(pred), lab(ref))
    assert (d["ref_lesions"], d["pred_lesions"]) == (3, 3)
    assert (d["lesion_tp"], d["lesion_fn"], d["lesion_fp"]) == (2, 1, 1)
    assert d["lesion_f1"] == pytest.approx(4 / (4 + 1 + 1))
    strict = lesion_detection(lab(pred), lab(ref), min_overlap_voxels=2)
    assert (strict["lesion_tp"], strict["lesion_fn"], strict["lesion_fp"]) == (1, 2, 2)


def test_lesion_connectivity_matters_for_diagonal_voxels():
    ref = np.zeros((5, 5, 5), bool)
    ref[1, 1, 1] = ref[2, 2, 2] = True  # corner neighbours
    assert lesion_detection(lab(ref), lab(ref), connectivity=26)["ref_lesions"] == 1
    assert lesion_detection(lab(ref), lab(ref), connectivity=6)["ref_lesions"] == 2


# ------------------------------------------------------------------ grids
def test_mismatched_grids_raise_naming_both_and_suggest_resample():
    arr = np.zeros((8, 8, 4), np.uint8)
    ref = Volume(arr, Geometry(arr.shape, (1, 1, 3), (0, 0, 0), source="gt.nii.gz"), "label")
    pred = Volume(arr, Geometry(arr.shape, (1, 1, 3), (0, 0, 1.5), source="seg.nii.gz"), "label")
    with pytest.raises(GeometryMismatchError, match=r"gt\.nii\.gz.*seg\.nii\.gz|seg\.nii\.gz.*gt\.nii\.gz") as e:
        dice(pred, ref)
    assert "origin" in str(e.value) and "resample=True" in str(e.value)


def _flip_axis(volume: Volume, axis: int) -> Volume:
    """Same world content, array flipped along ``axis`` with the geometry adjusted."""
    g = volume.geometry
    d = g.direction_matrix.copy()
    origin = g.index_to_world([[g.shape[i] - 1 if i == axis else 0 for i in range(3)]])[0]
    d[:, axis] *= -1
    return Volume(np.flip(volume.array, axis=axis).copy(),
                  Geometry(g.shape, g.spacing, tuple(origin), tuple(map(tuple, d))), volume.kind)


def _permute(volume: Volume, perm) -> Volume:
    g = volume.geometry
    d = g.direction_matrix[:, perm]
    return Volume(np.transpose(volume.array, perm).copy(),
                  Geometry(tuple(g.shape[p] for p in perm), tuple(g.spacing[p] for p in perm), g.origin,
                           tuple(map(tuple, d))), volume.kind)


def test_resample_recovers_flipped_and_permuted_grids(awkward_geometry):
    rng = np.random.default_rng(1)
    ref = Volume(rng.integers(0, 4, awkward_geometry.shape).astype(np.uint8), awkward_geometry, "label")
    for moved in (_flip_axis(ref, 0), _flip_axis(ref, 2), _permute(ref, (2, 0, 1))):
        back = resample_nearest(moved, ref.geometry)
        np.testing.assert_array_equal(back.array, ref.array)
        assert dice(moved, ref, label=2, resample=True) == 1.0
        with pytest.raises(GeometryMismatchError):
            dice(moved, ref, label=2)


def test_resample_nearest_between_resolutions_by_hand():
    # reference grid 2 mm, prediction on a 1 mm grid covering the same world box
    fine = np.zeros((8, 8, 8), np.uint8)
    fine[2:6, 2:6, 2:6] = 1
    pred = Volume(fine, Geometry(fine.shape, (1.0, 1.0, 1.0), (-0.5, -0.5, -0.5)), "label")
    ref_geom = Geometry((4, 4, 4), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    out = resample_nearest(pred, ref_geom)
    # coarse voxel c is centred at 2c mm = fine index 2c + 0.5: the nearest neighbour is fine
    # voxel 2c (0.5 rounds down) or 2c + 1 (rounds up); either lies in [2, 6) exactly for c in {1, 2}
    expected = np.zeros((4, 4, 4), np.uint8)
    expected[1:3, 1:3, 1:3] = 1
    np.testing.assert_array_equal(out.array, expected)
    assert out.geometry.isclose(ref_geom)
    assert out.array.dtype == np.uint8


def test_align_outside_source_is_background():
    small = Volume(np.ones((2, 2, 2), np.uint8), Geometry((2, 2, 2), (1, 1, 1)), "label")
    big = Geometry((6, 6, 6), (1, 1, 1), (-2, -2, -2))
    out, resampled = align_to_reference(small, Volume(np.zeros((6, 6, 6), np.uint8), big, "label"), resample=True)
    assert resampled and out.array.sum() == 8 and out.array[2:4, 2:4, 2:4].all()


def test_4d_and_bad_labels_are_rejected():
    g = Geometry((3, 3, 3), (1, 1, 1))
    cine = Volume(np.zeros((2, 3, 3, 3), np.uint8), g, "label", leading_axis="time")
    with pytest.raises(DimensionError, match="3D"):
        dice(cine, Volume(np.zeros((3, 3, 3), np.uint8), g, "label"))
    floats = Volume(np.full((3, 3, 3), 0.5, np.float32), g, "label")
    with pytest.raises(InvalidLabelError, match="integer"):
        label_mask(floats, 1)
    with pytest.raises(InvalidLabelError):
        normalize_labels({"bg": 0})


def test_float_integer_labels_are_accepted():
    g = Geometry((3, 3, 3), (1, 1, 1))
    arr = np.zeros((3, 3, 3), np.float32)
    arr[1, 1, 1] = 4.0  # BraTS stores integer labels as float32
    assert label_mask(Volume(arr, g, "label"), 4).sum() == 1


def test_metrics_and_report_import_without_torch():
    code = ("import sys, medcnn.metrics, medcnn.metrics.evaluate, medcnn.report.validation; "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)")
    subprocess.run([sys.executable, "-c", code], check=True)
