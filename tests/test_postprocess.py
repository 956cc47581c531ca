"""Postprocessing: argmax/threshold, connected components in mL, hole filling."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from medcnn.errors import ConfigError, DimensionError, InvalidLabelError
from medcnn.postprocess import (
    LabelRule,
    PostprocessSpec,
    argmax_labels,
    fill_holes,
    keep_largest_component,
    postprocess,
    remove_small_components,
    threshold_labels,
)
from medcnn.volume import Geometry, Volume

G = Geometry((12, 10, 8), (0.7, 0.9, 3.0), (5.0, -3.0, 2.0), source="pred.nii.gz")


def labels(arr) -> Volume:
    arr = np.asarray(arr, dtype=np.uint8)
    return Volume(arr, Geometry(arr.shape, G.spacing, G.origin, G.direction, source="pred.nii.gz"), "label")


# ----------------------------------------------------------------------------- argmax / threshold
def test_argmax_labels_values_dtype_and_ties():
    p = np.zeros((3,) + G.shape, np.float32)
    p[0] = 0.5
    p[1, :6] = 0.7
    p[2, :, :5] = 0.9
    p[1, 0, 0, 0] = 0.9  # tie between channels 1 and 2 -> lower channel
    out = argmax_labels(Volume(p, G, "probability", "channel"))
    assert out.kind == "label" and out.array.dtype == np.uint8 and out.geometry == G
    assert out.array[0, 0, 0] == 1
    assert np.all(out.array[6:, 5:] == 0) and np.all(out.array[:6, 5:] == 1) and np.all(out.array[:, :5][1:] == 2)
    big = argmax_labels(Volume(p, G, "probability", "channel"), label_values=[0, 7, 300])
    assert big.array.dtype == np.uint16 and set(np.unique(big.array)) == {0, 7, 300}
    with pytest.raises(DimensionError):
        argmax_labels(Volume(p[0], G, "probability"))
    with pytest.raises(DimensionError):
        argmax_labels(Volume(p, G, "probability", "channel"), label_values=[1, 2])


def test_threshold_labels_nested_regions():
    # BraTS-style nested sigmoid outputs: whole tumour > core > enhancing
    p = np.zeros((3,) + G.shape, np.float32)
    p[0, 2:10, 2:8, 1:7] = 0.8
    p[1, 4:8, 3:7, 2:6] = 0.6
    p[2, 5:7, 4:6, 3:5] = 0.51
    out = threshold_labels(Volume(p, G, "probability", "channel"), 0.5, label_values=[2, 1, 4]).array
    assert out[3, 2, 1] == 2 and out[4, 3, 2] == 1 and out[5, 4, 3] == 4 and out[0, 0, 0] == 0
    assert (out == 4).sum() == 2 * 2 * 2
    default = threshold_labels(Volume(p, G, "probability", "channel"), 0.7).array
    assert set(np.unique(default)) == {0, 1}  # only channel 0 exceeds 0.7 -> label 1


# ----------------------------------------------------------------------------- components
def test_keep_largest_per_label_and_connectivity():
    a = np.zeros(G.shape, np.uint8)
    a[0:2, 0:2, 0:2] = 1          # 8 voxels
    a[5:8, 5:8, 4:7] = 1          # 27 voxels (largest of label 1)
    a[9:11, 0:3, 0:1] = 2         # 6 voxels (largest of label 2)
    a[0, 8, 7] = 2                # 1 voxel
    out = postprocess(labels(a), PostprocessSpec(keep_largest=True)).array
    assert (out == 1).sum() == 27 and (out == 2).sum() == 6
    assert out[0, 0, 0] == 0 and out[0, 8, 7] == 0
    # diagonal neighbours: one component with 26-connectivity, two with 6
    b = np.zeros(G.shape, np.uint8)
    b[2, 2, 2] = b[3, 3, 3] = b[4, 4, 4] = 1
    b[8, 8, 6] = b[8, 8, 7] = 1
    assert (keep_largest_component(labels(b)).array == 1).sum() == 3
    assert (keep_largest_component(labels(b), connectivity=6).array == 1).sum() == 2


def test_min_component_ml_on_anisotropic_spacing_by_hand():
    # voxel = 0.7 x 0.9 x 3.0 mm = 1.89 mm^3 = 0.00189 mL
    assert G.voxel_volume_ml == pytest.approx(0.00189)
    a = np.zeros(G.shape, np.uint8)
    a[0:5, 0:5, 0:2] = 1      # 50 voxels = 0.0945 mL  -> removed by 0.1 mL
    a[6:12, 0:9, 5:6] = 1     # 54 voxels = 0.10206 mL -> kept
    a[0:3, 7:10, 4:6] = 3     # 18 voxels = 0.03402 mL -> removed
    out = remove_small_components(labels(a), 0.1).array
    assert (out == 1).sum() == 54 and out[0, 0, 0] == 0 and (out == 3).sum() == 0
    # a component of exactly the limit is kept: 50 voxels x 1.89 mm^3 = 94.5 mm^3
    kept = remove_small_components(labels(a), 50 * 0.7 * 0.9 * 3.0 / 1000).array
    assert (kept == 1).sum() == 104
    # same array on isotropic 1 mm: 50 voxels = 0.05 mL, so a 0.1 mL rule removes both label-1 parts
    iso = Volume(a, Geometry(G.shape, (1.0, 1.0, 1.0)), "label")
    assert (remove_small_components(iso, 0.1).array == 1).sum() == 0


def test_per_label_rules_override_defaults():
    a = np.zeros(G.shape, np.uint8)
    a[0:2, 0:2, 0:2] = 1
    a[5:8, 5:8, 4:7] = 1
    a[0:2, 6:8, 0:2] = 2
    a[6:9, 0:3, 0:3] = 2
    spec = PostprocessSpec(keep_largest=True, per_label={2: LabelRule(keep_largest=False)})
    out = postprocess(labels(a), spec).array
    assert (out == 1).sum() == 27 and (out == 2).sum() == 8 + 27
    assert spec.rule(2).keep_largest is False and spec.rule(1).keep_largest is True


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), conn=st.sampled_from([6, 26]))
def test_keep_largest_matches_scipy_label(seed, conn):
    """Independent reference: scipy.ndimage.label with the same structuring element."""
    rng = np.random.default_rng(seed)
    mask = rng.random((9, 8, 7)) > 0.6
    out = keep_largest_component(Volume(mask.astype(np.uint8), Geometry(mask.shape, (1, 1, 1)), "label"),
                                 connectivity=conn).array.astype(bool)
    structure = ndimage.generate_binary_structure(3, 1 if conn == 6 else 3)
    lab, n = ndimage.label(mask, structure)
    if n == 0:
        assert not out.any()
        return
    sizes = np.bincount(lab.ravel())[1:]
    assert out.sum() == sizes.max()
    assert len(np.unique(lab[out])) == 1 and sizes[lab[out][0] - 1] == sizes.max()


# ----------------------------------------------------------------------------- holes
def test_fill_holes_3d_only_claims_background():
    a = np.zeros(G.shape, np.uint8)
    a[2:9, 2:8, 1:7] = 2
    a[4:7, 4:6, 3:5] = 0      # enclosed background cavity: 12 voxels
    a[5, 4, 3] = 1            # another label inside the cavity must survive
    out = fill_holes(labels(a), labels_to_process=[2]).array
    assert out[5, 4, 3] == 1
    assert (out == 2).sum() == (a == 2).sum() + 11
    # a cavity opening to the outside is not a hole
    b = a.copy()
    b[4:7, 4:6, 3:8] = 0      # tunnel to the top face... but label spans z 1:7 so z=7 is outside -> open
    assert (fill_holes(labels(b)).array == 2).sum() == (b == 2).sum()


def test_fill_holes_per_slice_for_thick_slices():
    a = np.zeros(G.shape, np.uint8)
    a[2:9, 2:8, :] = 1
    a[4:7, 4:6, :] = 0        # a tube along the coarse axis K: open at both ends, no 3D hole
    assert (postprocess(labels(a), PostprocessSpec(fill_holes=True)).array == 1).sum() == (a == 1).sum()
    out = postprocess(labels(a), PostprocessSpec(fill_holes=True, fill_holes_per_slice=True)).array
    assert np.all(out[2:9, 2:8, :] == 1)   # slice axis defaults to the coarsest spacing (K, 3 mm)
    # along another axis the tube's cross-sections are not closed
    out_i = postprocess(labels(a), PostprocessSpec(fill_holes=True, fill_holes_per_slice=True, slice_axis=0)).array
    assert (out_i == 1).sum() == (a == 1).sum()


# ----------------------------------------------------------------------------- spec and input checks
def test_spec_round_trip_and_validation():
    spec = PostprocessSpec(keep_largest=True, min_component_ml=0.5,
                           per_label={3: LabelRule(fill_holes=True), 1: LabelRule(min_component_ml=0.0)})
    d = json.loads(json.dumps(spec.to_dict()))
    assert PostprocessSpec.from_dict(d) == spec
    for bad in ({"connectivity": 8}, {"min_component_ml": -1.0}, {"per_label": {0: LabelRule()}},
                {"slice_axis": 3}):
        with pytest.raises(ConfigError):
            PostprocessSpec(**bad)
    with pytest.raises(ConfigError, match="unknown"):
        PostprocessSpec.from_dict({"keep_biggest": True})


def test_noop_and_input_checks():
    a = np.zeros(G.shape, np.uint8)
    a[1:3, 1:3, 1:3] = 1
    a[6, 6, 6] = 1
    out = postprocess(labels(a), PostprocessSpec())
    assert np.array_equal(out.array, a) and out.array is not a and out.geometry == labels(a).geometry
    with pytest.raises(DimensionError, match="pred.nii.gz"):
        postprocess(Volume(np.zeros((2,) + G.shape, np.uint8), G, "label", "time"), PostprocessSpec())
    with pytest.raises(InvalidLabelError, match="pred.nii.gz"):
        postprocess(Volume(np.zeros(G.shape, np.float32), G, "label"), PostprocessSpec(keep_largest=True))
