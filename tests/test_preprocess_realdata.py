"""Preprocessing round trips on the real scans in ../shared/data (slow; skipped when absent)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from medcnn._testing import require_shared_data
from medcnn.io import read_volume
from medcnn.preprocess import Preprocessor, PreprocessSpec

pytestmark = [pytest.mark.slow, pytest.mark.realdata]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def check_round_trip(images, label, spec, *, min_dice=0.95, big_label_ml=5.0):
    x, rec = Preprocessor(spec).forward(images)
    assert x.dtype == np.float32 and np.all(np.isfinite(x))
    assert x.shape == (len(images),) + rec.model_geometry.shape
    assert rec.model_geometry.orientation == spec.orientation
    np.testing.assert_allclose(rec.model_geometry.spacing, spec.target_spacing, atol=1e-9)
    model_lab = rec.to_model_grid(label)  # per-label linear
    back = rec.to_input_grid(model_lab.array, kind="label")  # nearest
    onehot = np.stack([model_lab.array == v for v in range(int(label.array.max()) + 1)]).astype(np.float32)
    prob = rec.to_input_grid(onehot, kind="probability")  # linear, then argmax
    for out in (back, prob):
        assert out.geometry.shape == label.geometry.shape
        np.testing.assert_allclose(out.geometry.affine, label.geometry.affine, atol=1e-5)
    from_prob = np.argmax(prob.array, axis=0)
    assert (back.array == label.array).mean() > 0.99
    for v in np.unique(label.array[label.array > 0]):
        truth = label.array == v
        vol_in_ml = truth.sum() * label.voxel_volume_ml
        if vol_in_ml < big_label_ml:
            continue
        # the physical volume survives resampling onto the model grid (per-label linear)
        vol_model_ml = (model_lab.array == v).sum() * model_lab.voxel_volume_ml
        assert vol_model_ml == pytest.approx(vol_in_ml, rel=0.02), f"label {v}"
        assert dice(back.array == v, truth) > min_dice, f"label {v}"
        assert dice(from_prob == v, truth) > min_dice, f"label {v}"
    return x, rec, model_lab


def test_sunnybrook_oblique_thick_slices_round_trip():
    folder = require_shared_data("sunnybrook", "nifti")
    img = read_volume(folder / "SCD0000101_ED.nii.gz")
    lab = read_volume(folder / "SCD0000101_ED_gt.nii.gz", kind="label")
    assert img.geometry.orientation != "RAS"  # the interesting case: reorient + oblique
    spec = PreprocessSpec(orientation="RAS", target_spacing=(1.5, 1.5, 1.5), modalities=("MR",),
                          crop_foreground=True)
    _, rec, _ = check_round_trip([img], lab, spec)
    assert rec.step("crop") is not None and rec.step("reorient") is not None
    # 10 mm slices vs 1.37 mm in plane: the coarse axis was interpolated separately
    step = rec.step("resample")
    assert step["separate_axis"] is not None
    assert rec.step("reorient")["geometry_after"]["spacing_mm"][step["separate_axis"]] == pytest.approx(10.0, abs=0.01)


def test_brats_two_channels_round_trip():
    case = require_shared_data("brats2015", "brats_2013_pat0003_1")
    flair = read_volume(case / "Flair_subtrMeanDivStd.nii.gz")
    t1c = read_volume(case / "T1c_subtrMeanDivStd.nii.gz")
    lab = read_volume(case / "OTMultiClass.nii.gz", kind="label")
    # these channels are already z-scored by the data provider: no further normalisation
    spec = PreprocessSpec(orientation="RAS", target_spacing=(1.5, 1.5, 1.5), modalities=("none", "none"))
    # the enhancing rim (label 4) is only a few voxels thick: 1.5 mm costs it a few Dice points
    x, rec, model_lab = check_round_trip([flair, t1c], lab, spec, min_dice=0.9)
    # whole tumour (labels 1-4) survives the round trip well
    back = rec.to_input_grid(model_lab.array, kind="label").array
    assert dice(back > 0, lab.array > 0) > 0.95


def test_pyradiomics_nrrd_volume_against_reference():
    folder = require_shared_data("pyradiomics")
    img = read_volume(folder / "brain1_image.nrrd")
    lab = read_volume(folder / "brain1_label.nrrd", kind="label")
    with open(folder / "reference_shape.csv", newline="") as f:
        ref = {row["featureName"]: float(row["brain1"]) for row in csv.DictReader(f)}
    spec = PreprocessSpec(orientation="RAS", target_spacing=(1.0, 1.0, 1.0), modalities=("MR",))
    _, rec, model_lab = check_round_trip([img], lab, spec)
    assert rec.step("resample")["separate_axis"] is not None  # 0.78 x 0.78 x 6.5 mm
    # PyRadiomics' own VoxelVolume (mm^3) on the input grid; ours on the 1 mm model grid
    model_mm3 = (model_lab.array == 1).sum() * model_lab.voxel_volume_ml * 1000
    assert model_mm3 == pytest.approx(ref["original_shape_VoxelVolume"], rel=0.02)
