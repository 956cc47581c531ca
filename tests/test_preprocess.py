"""Invertible preprocessing: reorientation, resampling, normalisation, the record."""

from __future__ import annotations

import itertools
import json
import sys
import subprocess

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medcnn.errors import (
    ConfigError,
    DimensionError,
    GeometryMismatchError,
    InvalidIntensityError,
    InvalidLabelError,
)
from medcnn.preprocess import (
    PreprocessRecord,
    Preprocessor,
    PreprocessSpec,
    anisotropic_axis,
    check_same_grid,
    ct_statistics,
    normalise,
    plan_reorient,
    reorient,
    resample,
    resample_to,
    resampled_geometry,
)
from medcnn.volume import Geometry, Volume
from tests.conftest import AWKWARD_GEOMETRIES, rotation

# ----------------------------------------------------------------------------- helpers

SIGNED_PERMUTATIONS = [
    (perm, signs)
    for perm in itertools.permutations(range(3))
    for signs in itertools.product((1.0, -1.0), repeat=3)
]  # 6 x 8 = 48


def signed_perm_matrix(perm, signs) -> np.ndarray:
    d = np.zeros((3, 3))
    for axis, (world, s) in enumerate(zip(perm, signs)):
        d[world, axis] = s  # column `axis` points along world axis `world`
    return d


def world_grid(geometry: Geometry) -> np.ndarray:
    """World coordinates (I, J, K, 3) of every voxel centre."""
    idx = np.indices(geometry.shape).reshape(3, -1).T
    return geometry.index_to_world(idx).reshape(geometry.shape + (3,))


def blob_labels(geometry: Geometry, centre, radii) -> np.ndarray:
    """Two nested ellipsoids defined in world mm (label 1 outside, 2 inside): (I, J, K) uint8."""
    w = world_grid(geometry)
    r = np.sqrt((((w - np.asarray(centre)) / np.asarray(radii)) ** 2).sum(-1))
    out = np.zeros(geometry.shape, np.uint8)
    out[r < 1.0] = 1
    out[r < 0.5] = 2
    return out


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def linear_field(points: np.ndarray) -> np.ndarray:
    """An intensity that is linear in world mm: reproduced exactly by order-1 and order-3 splines."""
    return 100.0 + points @ np.array([0.7, -1.3, 2.1])


def to_sitk(volume: Volume) -> sitk.Image:
    """Independent RAS(I,J,K) -> SimpleITK LPS(z,y,x) conversion for reference checks."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(volume.array.transpose(2, 1, 0)).astype(np.float64))
    flip = np.diag([-1.0, -1.0, 1.0])
    img.SetSpacing(volume.spacing)
    img.SetOrigin(tuple(flip @ np.asarray(volume.geometry.origin)))
    img.SetDirection(tuple((flip @ volume.geometry.direction_matrix).ravel()))
    return img


def sitk_resample_linear(volume: Volume, reference: Geometry) -> np.ndarray:
    flip = np.diag([-1.0, -1.0, 1.0])
    f = sitk.ResampleImageFilter()
    f.SetSize(tuple(int(s) for s in reference.shape))
    f.SetOutputSpacing(reference.spacing)
    f.SetOutputOrigin(tuple(flip @ np.asarray(reference.origin)))
    f.SetOutputDirection(tuple((flip @ reference.direction_matrix).ravel()))
    f.SetInterpolator(sitk.sitkLinear)
    f.SetDefaultPixelValue(np.nan)
    return sitk.GetArrayFromImage(f.Execute(to_sitk(volume))).transpose(2, 1, 0)


@st.composite
def geometries(draw, max_size: int = 12):
    shape = tuple(draw(st.integers(3, max_size)) for _ in range(3))
    spacing = tuple(draw(st.floats(0.3, 6.0)) for _ in range(3))
    origin = tuple(draw(st.floats(-200, 200)) for _ in range(3))
    perm, signs = draw(st.sampled_from(SIGNED_PERMUTATIONS))
    angles = [draw(st.floats(-0.4, 0.4)) for _ in range(3)]
    d = rotation(*angles) @ signed_perm_matrix(perm, signs)
    return Geometry(shape, spacing, origin, tuple(map(tuple, d)))


FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------------- import hygiene
def test_preprocess_and_postprocess_import_without_torch():
    code = "import sys, medcnn.preprocess, medcnn.postprocess; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- reorient
@pytest.mark.parametrize("oblique", [False, True])
def test_reorient_all_48_signed_permutations_exact(oblique):
    rng = np.random.default_rng(1)
    shape, spacing = (4, 5, 6), (0.8, 1.7, 3.1)
    for perm, signs in SIGNED_PERMUTATIONS:
        d = signed_perm_matrix(perm, signs)
        if oblique:
            d = rotation(0.2, -0.15, 0.3) @ d
        g = Geometry(shape, spacing, tuple(rng.uniform(-50, 50, 3)), tuple(map(tuple, d)))
        vol = Volume(np.arange(np.prod(shape)).reshape(shape), g)
        for target in ("RAS", "LPS", "PIR"):
            out, plan = reorient(vol, target)
            assert out.geometry.orientation == target
            # every voxel keeps its world position: look the old index up from the value
            old_idx = np.stack(np.unravel_index(out.array.ravel(), shape), axis=1)
            new_idx = np.indices(out.geometry.shape).reshape(3, -1).T
            np.testing.assert_allclose(out.geometry.index_to_world(new_idx), g.index_to_world(old_idx),
                                       atol=1e-9)
            # voxel size and grid are preserved; the inverse is exact
            assert sorted(out.geometry.spacing) == sorted(spacing)
            assert out.geometry.voxel_volume_ml == pytest.approx(g.voxel_volume_ml)
            back = plan.invert_volume(out)
            assert np.array_equal(back.array, vol.array) and back.geometry == g


def test_reorient_keeps_leading_axis_and_serialises(awkward_geometry):
    arr = np.random.default_rng(0).random((2,) + awkward_geometry.shape)
    vol = Volume(arr, awkward_geometry, "probability", "channel")
    out, plan = reorient(vol, "RAS")
    assert out.shape[0] == 2 and out.leading_axis == "channel"
    restored = type(plan).from_dict(json.loads(json.dumps(plan.to_dict())))
    assert np.array_equal(restored.invert(out.array), arr)


@pytest.mark.parametrize("bad", ["RAX", "RRS", "RA", 3])
def test_reorient_rejects_bad_codes(bad):
    g = AWKWARD_GEOMETRIES["ras_aniso"]
    with pytest.raises(ConfigError):
        plan_reorient(g, bad)


# ----------------------------------------------------------------------------- resample
def test_resampled_geometry_keeps_centre_and_exact_spacing(awkward_geometry):
    g = awkward_geometry
    new = resampled_geometry(g, (1.0, 1.25, 2.0))
    assert new.spacing == (1.0, 1.25, 2.0)
    assert new.direction == g.direction
    expected = [max(1, int(np.floor(n * s / t + 0.5))) for n, s, t in zip(g.shape, g.spacing, (1.0, 1.25, 2.0))]
    assert list(new.shape) == expected
    centre_old = g.index_to_world((np.asarray(g.shape) - 1) / 2)
    centre_new = new.index_to_world((np.asarray(new.shape) - 1) / 2)
    np.testing.assert_allclose(centre_new, centre_old, atol=1e-9)


@pytest.mark.parametrize("order", [1, 3])
def test_resample_reproduces_linear_world_field(awkward_geometry, order):
    """A field linear in world mm must come out as the same field at the new voxel centres
    (independent of any axis order/flip convention)."""
    g = awkward_geometry
    vol = Volume(linear_field(world_grid(g)), g)
    out = resample(vol, (0.9, 1.1, 1.7), order=order, anisotropy_threshold=np.inf)
    expected = linear_field(world_grid(out.geometry))
    # interior only: near the FOV edge values are extended, not extrapolated; the cubic
    # spline's edge condition (constant extension) fades by ~0.27 per voxel inwards
    margin, atol = (0, 1e-3) if order == 1 else (2, 0.1)
    idx = g.world_to_index(world_grid(out.geometry).reshape(-1, 3)).reshape(out.geometry.shape + (3,))
    inside = np.all((idx >= margin) & (idx <= np.asarray(g.shape) - 1 - margin), axis=-1)
    assert inside.sum() >= 20
    np.testing.assert_allclose(out.array[inside], expected[inside], atol=atol)


def test_resample_to_matches_simpleitk_on_oblique_grid(awkward_geometry):
    """Second-library reference: SimpleITK linear resampling onto a rotated, shifted grid."""
    rng = np.random.default_rng(3)
    g = awkward_geometry
    vol = Volume(rng.random(g.shape) * 100, g)
    d = rotation(0.25, 0.1, -0.3) @ g.direction_matrix
    ref = Geometry((9, 8, 7), (1.3, 0.9, 1.6), tuple(np.asarray(g.origin) + 1.5), tuple(map(tuple, d)))
    ours = resample_to(vol, ref, order=1, fill=np.nan).array
    theirs = sitk_resample_linear(vol, ref)
    # compare where both are strictly inside the input's voxel-centre box
    idx = g.world_to_index(world_grid(ref).reshape(-1, 3)).reshape(ref.shape + (3,))
    inside = np.all((idx >= 0.01) & (idx <= np.asarray(g.shape) - 1.01), axis=-1)
    assert inside.sum() >= 5
    np.testing.assert_allclose(ours[inside], theirs[inside], atol=1e-4)
    # outside the input's field of view (beyond the voxel edges) we write the fill value
    outside = np.any((idx < -0.51) | (idx > np.asarray(g.shape) - 0.49), axis=-1)
    assert np.all(np.isnan(ours[outside]))
    assert not np.any(np.isnan(ours[~outside & inside]))


def test_resample_to_identical_grid_is_exact(awkward_geometry):
    arr = np.random.default_rng(0).random(awkward_geometry.shape).astype(np.float32)
    vol = Volume(arr, awkward_geometry)
    out = resample_to(vol, awkward_geometry)
    assert np.array_equal(out.array, arr) and out.geometry == awkward_geometry


def test_anisotropic_rule_separate_coarse_axis_no_overshoot():
    g = Geometry((12, 12, 10), (1.0, 1.0, 8.0), (3.0, -2.0, 5.0))
    arr = np.zeros(g.shape, np.float32)
    arr[:, :, 5:] = 100.0  # step edge along the coarse axis
    vol = Volume(arr, g)
    assert anisotropic_axis(g.spacing, (1.0, 1.0, 1.0)) == 2
    assert anisotropic_axis((1.0, 1.0, 2.0), (1.0, 1.0, 1.0)) is None
    assert anisotropic_axis((4.0, 4.0, 1.0), (1.0, 1.0, 1.0)) is None  # two coarse axes: joint
    # the record says the coarse axis was handled separately with low order ...
    x, rec = Preprocessor(PreprocessSpec(orientation=None, target_spacing=(1.0, 1.0, 1.0),
                                         modalities=("none",))).forward(vol)
    step = rec.step("resample")
    assert step["separate_axis"] == 2 and step["anisotropic_order"] == 1 and step["order"] == 3
    # ... and a cubic spline did not ring across the thick slices
    assert x.min() >= -1e-4 and x.max() <= 100 + 1e-4
    out = resample(vol, (1.0, 1.0, 1.0))
    assert out.array.min() >= -1e-4 and out.array.max() <= 100 + 1e-4
    # the check can fail: joint cubic interpolation overshoots on the same edge
    joint = resample(vol, (1.0, 1.0, 1.0), anisotropy_threshold=np.inf)
    assert joint.array.min() < -1.0 and joint.array.max() > 101.0
    # in-plane the spline order is still 3: a smooth in-plane profile is interpolated smoothly
    np.testing.assert_allclose(out.array[:, :, 40], joint.array[:, :, 40], atol=20)


def test_label_resampling_never_invents_labels(awkward_geometry):
    g = awkward_geometry
    lab = Volume(blob_labels(g, g.index_to_world((np.asarray(g.shape) - 1) / 2)[0], (6, 5, 9)), g, "label")
    for order in (0, 1):
        out = resample(lab, (0.6, 0.6, 0.6), order=order)
        assert out.array.dtype == lab.array.dtype
        assert set(np.unique(out.array)) <= set(np.unique(lab.array))
    with pytest.raises(ValueError, match="order 0"):
        resample(lab, (0.6, 0.6, 0.6), order=3)
    with pytest.raises(InvalidLabelError):
        resample(Volume(lab.array.astype(np.float32), g, "label"), (0.6, 0.6, 0.6))


def test_resample_4d_probabilities_and_per_channel_fill(awkward_geometry):
    g = awkward_geometry
    rng = np.random.default_rng(0)
    p = rng.random((3,) + g.shape).astype(np.float32)
    p /= p.sum(0)
    vol = Volume(p, g, "probability", "channel")
    out = resample(vol, (0.8, 0.8, 0.8))
    assert out.leading_axis == "channel" and out.shape[0] == 3 and out.array.dtype == np.float32
    for c in range(3):  # all channels at once = one by one (BLAS blocking may round differently)
        alone = resample(Volume(p[c], g, "probability"), (0.8, 0.8, 0.8)).array
        np.testing.assert_allclose(out.array[c], alone, rtol=0, atol=1e-6)
    np.testing.assert_allclose(out.array.sum(0), 1.0, atol=1e-5)  # linear keeps the partition of unity
    assert out.array.min() >= 0 and out.array.max() <= 1
    # a reference grid shifted half outside the field of view gets the per-channel fill there
    shift = g.direction_matrix @ (np.asarray(g.shape) * np.asarray(g.spacing) / 2)
    ref = Geometry(g.shape, g.spacing, tuple(np.asarray(g.origin) + shift), g.direction)
    moved = resample_to(vol, ref, fill=[1.0, 0.0, 0.0]).array
    far = tuple(slice(s - s // 4, s) for s in g.shape)
    assert np.all(moved[(0,) + far] == 1.0) and np.all(moved[(slice(1, 3),) + far] == 0.0)
    cine = Volume(rng.random((2,) + g.shape), g, leading_axis="time", frame_times_ms=(0.0, 40.0))
    out = resample(cine, (1.0, 1.0, 1.0))
    assert out.leading_axis == "time" and out.frame_times_ms == (0.0, 40.0)


def test_per_label_linear_equals_onehot_argmax_reference():
    """Independent formulation: interpolate every one-hot channel (scipy map_coordinates), argmax."""
    from scipy import ndimage

    rng = np.random.default_rng(5)
    g = Geometry((14, 12, 9), (1.2, 0.8, 2.5), (1.0, 2.0, 3.0))
    arr = (ndimage.gaussian_filter(rng.random(g.shape), 1.5) * 60).astype(np.uint8) % 4
    out = resample(Volume(arr, g, "label"), (0.7, 1.1, 1.0), order=1)
    idx = g.world_to_index(world_grid(out.geometry).reshape(-1, 3)).T
    chans = [ndimage.map_coordinates((arr == v).astype(float), idx, order=1, mode="nearest")
             for v in range(4)]
    chans = np.stack(chans).reshape((4,) + out.geometry.shape)
    ref = np.argmax(chans, axis=0)
    # exact ties (e.g. 0.375/0.375) resolve by float rounding: compare where there is a winner
    top2 = np.sort(chans, axis=0)[-2:]
    clear = (top2[1] - top2[0]) > 1e-5
    assert clear.mean() > 0.9
    assert np.array_equal(ref[clear], out.array[clear])
    # at ties the chosen label is one of the tied ones
    tied = ~clear
    chosen = np.take_along_axis(chans, out.array[None].astype(int), axis=0)[0]
    np.testing.assert_allclose(chosen[tied], top2[1][tied], atol=1e-5)


# ----------------------------------------------------------------------------- record round trip
@pytest.mark.parametrize("crop", [False, True])
def test_forward_then_back_gives_exact_input_geometry(awkward_geometry, crop):
    g = awkward_geometry.with_source("case.nii.gz")
    rng = np.random.default_rng(0)
    arr = rng.random(g.shape).astype(np.float32) + 1.0
    if crop:
        arr[:2] = 0
        arr[:, -1] = 0
    spec = PreprocessSpec(target_spacing=(1.0, 1.0, 1.0), crop_foreground=crop, modalities=("MR",))
    x, rec = Preprocessor(spec).forward(Volume(arr, g))
    assert x.dtype == np.float32 and x.shape == (1,) + rec.model_geometry.shape
    assert rec.model_geometry.orientation == "RAS" and rec.model_geometry.spacing == (1.0, 1.0, 1.0)
    assert (rec.step("crop") is not None) == crop
    lab = rec.to_input_grid((x[0] > 0).astype(np.uint8), kind="label")
    prob = rec.to_input_grid(np.stack([1 - x[0] * 0, x[0] * 0]), kind="probability")
    for out in (lab, prob):
        assert out.geometry.shape == g.shape
        np.testing.assert_allclose(out.geometry.affine, g.affine, atol=1e-5)
        assert out.geometry == g and out.source == "case.nii.gz"
    assert lab.array.dtype == np.uint8 and prob.array.shape == (2,) + g.shape
    if crop:  # cropped-away voxels come back as background
        assert np.all(lab.array[:2] == 0)
        assert np.all(prob.array[0, :2] == 1) and np.all(prob.array[1, :2] == 0)


@FAST
@given(g=geometries(), target=st.tuples(*[st.floats(0.5, 4.0)] * 3), crop=st.booleans())
def test_round_trip_geometry_random(g, target, crop):
    arr = np.random.default_rng(0).random(g.shape).astype(np.float32) + 0.5
    arr[0] = 0
    spec = PreprocessSpec(target_spacing=target, crop_foreground=crop, modalities=("CT",), image_order=1)
    x, rec = Preprocessor(spec).forward(Volume(arr, g))
    rec = PreprocessRecord.from_dict(json.loads(json.dumps(rec.to_dict())))
    lab = rec.to_input_grid(np.ones(rec.model_geometry.shape, np.uint8), kind="label")
    assert lab.geometry.shape == g.shape
    np.testing.assert_allclose(lab.geometry.affine, g.affine, atol=1e-5)
    if crop:
        assert np.all(lab.array[0] == 0) and np.all(lab.array[1:] == 1)
    else:
        assert np.all(lab.array == 1)


def test_no_resampling_round_trip_is_bit_exact(awkward_geometry):
    g = awkward_geometry
    lab = blob_labels(g, g.index_to_world((np.asarray(g.shape) - 1) / 2)[0], (5, 4, 12))
    spec = PreprocessSpec(orientation="LIP", crop_foreground=True, modalities=("none",))
    _, rec = Preprocessor(spec).forward(Volume(lab.astype(np.float32), g))
    model_lab = rec.to_model_grid(Volume(lab, g, "label"))
    assert model_lab.geometry.orientation == "LIP"
    back = rec.to_input_grid(model_lab.array, kind="label")
    assert np.array_equal(back.array, lab)


def test_blob_label_survives_forward_and_back(awkward_geometry):
    g = awkward_geometry
    centre = g.index_to_world((np.asarray(g.shape) - 1) / 2)[0]
    radii = np.asarray(g.shape) * np.asarray(g.spacing) * 0.35
    lab = blob_labels(g, centre, radii)
    spec = PreprocessSpec(target_spacing=(0.8, 0.8, 0.8), modalities=("none",))
    _, rec = Preprocessor(spec).forward(Volume(lab.astype(np.float32), g))
    for order in (0, 1):
        model = rec.to_model_grid(Volume(lab, g, "label"), order=order)
        back = rec.to_input_grid(model.array, kind="label")
        assert (back.array == lab).mean() > 0.95
        assert dice(back.array > 0, lab > 0) > 0.95


def test_flipped_and_permuted_input_gives_same_world_result():
    """The same scan stored with axes permuted and flipped must preprocess to the same
    model array (orientation='RAS'), and outputs map back to the same world positions."""
    g = AWKWARD_GEOMETRIES["oblique"]
    rng = np.random.default_rng(2)
    arr = rng.random(g.shape).astype(np.float32) + 1
    # hand-built relabelling: new axes = (K reversed, I, J reversed)
    arr2 = np.flip(np.transpose(arr, (2, 0, 1)), axis=(0, 2)).copy()
    d = g.direction_matrix
    d2 = np.stack([-d[:, 2], d[:, 0], -d[:, 1]], axis=1)
    origin2 = g.index_to_world([0, g.shape[1] - 1, g.shape[2] - 1])[0]
    g2 = Geometry((g.shape[2], g.shape[0], g.shape[1]), (g.spacing[2], g.spacing[0], g.spacing[1]),
                  tuple(origin2), tuple(map(tuple, d2)))
    # sanity: the two volumes agree in world space voxel by voxel
    i, j, k = 3, 4, 2
    np.testing.assert_allclose(g.index_to_world([i, j, k]),
                               g2.index_to_world([g.shape[2] - 1 - k, i, g.shape[1] - 1 - j]), atol=1e-9)
    spec = PreprocessSpec(target_spacing=(1.5, 1.5, 1.5), modalities=("MR",))
    x1, r1 = Preprocessor(spec).forward(Volume(arr, g))
    x2, r2 = Preprocessor(spec).forward(Volume(arr2, g2))
    assert r1.model_geometry.isclose(r2.model_geometry, atol_mm=1e-6)
    np.testing.assert_allclose(x1, x2, atol=1e-5)
    # a model-grid prediction goes back to the same world voxels in both layouts
    pred = (x1[0] > 0).astype(np.uint8)
    b1 = r1.to_input_grid(pred, kind="label").array
    b2 = r2.to_input_grid(pred, kind="label").array
    assert np.array_equal(b1, np.transpose(np.flip(b2, axis=(0, 2)), (1, 2, 0)))
    # without reorientation the two model grids differ, yet a prediction defined in world
    # space comes back to the same world voxels (a linear field survives linear resampling)
    spec_keep = PreprocessSpec(orientation=None, target_spacing=(1.5, 1.5, 1.5), modalities=("MR",))
    _, q1 = Preprocessor(spec_keep).forward(Volume(arr, g))
    _, q2 = Preprocessor(spec_keep).forward(Volume(arr2, g2))
    assert not q1.model_geometry.isclose(q2.model_geometry)

    def field(geom):
        return (0.5 + 0.002 * linear_field(world_grid(geom))).astype(np.float32)[None]

    c1 = q1.to_input_grid(field(q1.model_geometry), kind="probability").array[0]
    c2 = q2.to_input_grid(field(q2.model_geometry), kind="probability").array[0]
    c2 = np.transpose(np.flip(c2, axis=(0, 2)), (1, 2, 0))
    truth = field(g)[0]
    inner = (slice(1, -1),) * 3
    np.testing.assert_allclose(c1[inner], truth[inner], atol=1e-4)
    np.testing.assert_allclose(c2[inner], c1[inner], atol=1e-4)


# ----------------------------------------------------------------------------- normalisation
def test_ct_window_and_zscore_by_hand():
    g = Geometry((4, 4, 4), (1.0, 1.0, 1.0), source="ct.nii.gz")
    arr = np.linspace(-2000, 3000, 64).reshape(g.shape)
    out = normalise(Volume(arr, g), "CT", window=(-1000, 1000), mean=40.0, std=250.0)
    expected = (np.clip(arr, -1000, 1000) - 40.0) / 250.0
    np.testing.assert_allclose(out.array, expected, rtol=1e-6)
    assert out.array.dtype == np.float32 and out.meta["normalisation"]["stats_from"] == "dataset"
    own = normalise(Volume(arr, g), "ct", window=(-1000, 1000))
    clipped = np.clip(arr, -1000, 1000)
    np.testing.assert_allclose(own.array, (clipped - clipped.mean()) / clipped.std(), rtol=1e-5, atol=1e-6)


def test_mr_zscore_inside_foreground():
    rng = np.random.default_rng(0)
    g = Geometry((10, 10, 10), (1.0, 1.0, 2.0))
    arr = np.zeros(g.shape)
    arr[2:8, 2:8, 2:8] = rng.normal(500, 80, (6, 6, 6))
    out = normalise(Volume(arr, g), "MR").array
    fg = arr != 0
    assert abs(out[fg].mean()) < 1e-5 and abs(out[fg].std() - 1) < 1e-5
    assert np.all(out[~fg] == 0)
    mask = np.zeros(g.shape, bool)
    mask[3:7, 3:7, 3:7] = True
    out_m = normalise(Volume(arr, g), "MR", mask=Volume(mask.astype(np.uint8), g, "label")).array
    assert abs(out_m[mask].mean()) < 1e-5 and abs(out_m[mask].std() - 1) < 1e-5
    assert np.all(out_m[~mask] == 0)


@pytest.mark.parametrize("layout", ["C", "F", "flipped view"])
@pytest.mark.parametrize("offset", [0.0, 1e5])
def test_normalisation_equals_float64_reference_on_any_layout(layout, offset):
    """One-pass float64 statistics (two-pass fallback where a large mean would cancel) and
    float32 arithmetic agree with the textbook float64 formulas; strided inputs included."""
    rng = np.random.default_rng(1)
    base = np.zeros((23, 17, 11), np.float32)
    base[3:20, 2:15, 1:10] = rng.normal(300, 40, (17, 13, 9)) + offset
    arr = {"C": base, "F": np.asfortranarray(base), "flipped view": base[::-1, :, ::-1]}[layout]
    g = Geometry(arr.shape, (1.0, 1.0, 1.0))
    ref64 = arr.astype(np.float64)
    fg = ref64 != 0
    m, s = ref64[fg].mean(), ref64[fg].std()
    expected = np.where(fg, (ref64 - m) / s, 0.0)
    out = normalise(Volume(arr, g), "MR")
    np.testing.assert_allclose(out.array, expected, rtol=0, atol=2e-6 * max(1.0, offset / s))
    assert out.meta["normalisation"]["mean"] == pytest.approx(m, rel=1e-12)
    assert out.meta["normalisation"]["std"] == pytest.approx(s, rel=1e-9)
    ct = normalise(Volume(arr.astype(np.int32) - 1000, g), "CT", window=(-900.0, 1e6))
    clipped = np.clip(arr.astype(np.int32).astype(np.float64) - 1000, -900, 1e6)
    np.testing.assert_allclose(ct.array, (clipped - clipped.mean()) / clipped.std(), rtol=0,
                               atol=2e-6 * max(1.0, offset / clipped.std()))


def test_nonfinite_and_constant_intensities_raise_naming_file():
    g = Geometry((4, 4, 4), (1.0, 1.0, 1.0), source="bad_scan.nii.gz")
    arr = np.ones(g.shape, np.float32)
    arr[0, 0, :3] = np.nan
    with pytest.raises(InvalidIntensityError, match=r"bad_scan.nii.gz: expected finite intensities, got 3 NaN"):
        normalise(Volume(arr, g), "MR")
    with pytest.raises(InvalidIntensityError, match="bad_scan.nii.gz"):
        Preprocessor(PreprocessSpec()).forward(Volume(arr, g))
    for modality in ("MR", "CT"):
        with pytest.raises(InvalidIntensityError, match=r"bad_scan.nii.gz: expected varying intensities.*constant"):
            normalise(Volume(np.full(g.shape, 7.0), g), modality)
    with pytest.raises(InvalidIntensityError, match="bad_scan.nii.gz"):
        normalise(Volume(np.zeros(g.shape), g), "MR")
    with pytest.raises(ConfigError):
        normalise(Volume(np.ones(g.shape), g), "PET")


def test_ct_statistics_percentiles_and_moments():
    rng = np.random.default_rng(0)
    g = Geometry((20, 20, 10), (1.0, 1.0, 1.0))
    imgs = [Volume(rng.normal(50, 30, g.shape), g) for _ in range(2)]
    labs = [Volume((rng.random(g.shape) > 0.5).astype(np.uint8), g, "label") for _ in range(2)]
    stats = ct_statistics(imgs, labs, percentiles=(1, 99))
    allv = np.concatenate([i.array[l.array > 0] for i, l in zip(imgs, labs)])
    lo, hi = np.percentile(allv, [1, 99])
    assert stats["ct_window"] == pytest.approx((lo, hi))
    assert stats["ct_mean"] == pytest.approx(np.clip(allv, lo, hi).mean())
    assert stats["ct_std"] == pytest.approx(np.clip(allv, lo, hi).std())
    PreprocessSpec(modalities=("CT",), **stats)  # usable as spec fields


# ----------------------------------------------------------------------------- channels and spec
def test_multichannel_grid_mismatch_names_both_files():
    g1 = Geometry((6, 6, 6), (1.0, 1.0, 1.0), source="flair.nii.gz")
    g2 = Geometry((6, 6, 6), (1.0, 1.0, 1.2), source="t1c.nii.gz")
    a = np.random.default_rng(0).random(g1.shape) + 1
    with pytest.raises(GeometryMismatchError, match=r"flair.nii.gz.*t1c.nii.gz|t1c.nii.gz.*flair.nii.gz") as e:
        Preprocessor(PreprocessSpec(modalities=("MR", "MR"))).forward([Volume(a, g1), Volume(a, g2)])
    assert "flair.nii.gz" in str(e.value) and "t1c.nii.gz" in str(e.value)
    assert check_same_grid([Volume(a, g1), Volume(a, g1.with_source("x.nii"))]) == g1


def test_multichannel_forward_and_channel_checks():
    g = AWKWARD_GEOMETRIES["lps_flip"]
    rng = np.random.default_rng(0)
    ct = Volume(rng.normal(0, 300, g.shape), g)
    mr = Volume(rng.random(g.shape) + 1, g)
    spec = PreprocessSpec(modalities=("CT", "MR"), ct_window=(-200, 200), ct_mean=0.0, ct_std=100.0)
    x, rec = Preprocessor(spec).forward([ct, mr])
    assert x.shape == (2,) + rec.model_geometry.shape
    assert x[0].max() <= 2.0 + 1e-6 and x[0].min() >= -2.0 - 1e-6  # clipped to +-200 HU, /100
    assert [s["channel"] for s in rec.steps if s["step"] == "normalise"] == [0, 1]
    with pytest.raises(DimensionError, match="2 input channel"):
        Preprocessor(spec).forward(ct)
    cine = Volume(rng.random((3,) + g.shape), g, leading_axis="time")
    with pytest.raises(DimensionError, match="3D volume per channel"):
        Preprocessor(PreprocessSpec()).forward(cine)


def test_spec_json_round_trip_and_validation():
    spec = PreprocessSpec(orientation="lps", target_spacing=(1, 1, 2.5), modalities=("ct", "MRI"),
                          ct_window=(-100, 300), ct_mean=50, ct_std=80, crop_foreground=True)
    d = json.loads(json.dumps(spec.to_dict()))
    assert PreprocessSpec.from_dict(d) == spec
    assert spec.orientation == "LPS" and spec.modalities == ("CT", "MR")
    with pytest.raises(ConfigError, match="unknown"):
        PreprocessSpec.from_dict({**d, "spacing": [1, 1, 1]})
    for bad in ({"ct_window": (5, 1)}, {"ct_mean": 1.0}, {"image_order": 7}, {"modalities": ()},
                {"orientation": "XYZ"}):
        with pytest.raises((ConfigError, Exception)):
            PreprocessSpec(**bad)


def test_record_accepts_model_grid_volume_and_checks_shapes():
    g = AWKWARD_GEOMETRIES["ras_aniso"]
    x, rec = Preprocessor(PreprocessSpec(target_spacing=(1.0, 1.0, 1.0))).forward(
        Volume(np.random.default_rng(0).random(g.shape) + 1, g))
    vol = Volume(np.zeros(rec.model_geometry.shape, np.uint8), rec.model_geometry, "label")
    assert rec.to_input_grid(vol, kind="label").geometry == g
    with pytest.raises(DimensionError):
        rec.to_input_grid(np.zeros((3, 3, 3), np.uint8), kind="label")
    with pytest.raises(DimensionError):
        rec.to_input_grid(np.zeros(rec.model_geometry.shape, np.float32), kind="probability")
    with pytest.raises(GeometryMismatchError):
        rec.to_input_grid(Volume(vol.array, g.with_source("other.nii")  # wrong grid
                                 if g.shape == vol.geometry.shape else
                                 Geometry(vol.geometry.shape, (2.0, 2.0, 2.0)), "label"), kind="label")
