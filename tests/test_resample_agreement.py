"""The separable resampler agrees with scipy.ndimage references on awkward geometries.

References are computed independently of medcnn's grid arithmetic: every output voxel
centre is mapped through world space (``Geometry.world_to_index``) and
``scipy.ndimage.map_coordinates`` interpolates there (orders 0, 1 and 3, edge values
extended). Nearest neighbour is compared away from exact rounding ties.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medcnn.preprocess import PreprocessSpec, Preprocessor, resample, resample_to, resampled_geometry
from medcnn.preprocess._separable import apply_axis, axis_matrix, axis_operator, resample_separable
from medcnn.volume import Geometry, Volume
from tests.conftest import AWKWARD_GEOMETRIES, rotation


def world_index(source: Geometry, target: Geometry) -> np.ndarray:
    """(3, N) fractional input indices of every target voxel centre (via world mm)."""
    idx = np.indices(target.shape).reshape(3, -1).T
    return source.world_to_index(target.index_to_world(idx)).T


def smooth_field(shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (ndimage.gaussian_filter(rng.random(shape), 1.2) * 50 - 20).astype(np.float32)


def scipy_reference(arr: np.ndarray, source: Geometry, target: Geometry, order: int) -> np.ndarray:
    coords = world_index(source, target)
    out = ndimage.map_coordinates(arr.astype(np.float64), coords, order=order, mode="nearest",
                                  prefilter=order > 1)
    return out.reshape(target.shape)


def not_tied(source: Geometry, target: Geometry) -> np.ndarray:
    """Target voxels whose nearest input voxel is unambiguous (no coordinate at .5)."""
    frac = np.abs(np.mod(world_index(source, target), 1.0) - 0.5)
    return np.all(frac > 1e-6, axis=0).reshape(target.shape)


SPACINGS = [(0.9, 1.1, 1.7), (2.0, 0.5, 3.1), (1.6, 1.6, 1.6)]


@pytest.mark.parametrize("order", [0, 1, 3])
@pytest.mark.parametrize("spacing", SPACINGS)
def test_resample_equals_scipy_reference(awkward_geometry, order, spacing):
    g = awkward_geometry
    arr = smooth_field(g.shape)
    out = resample(Volume(arr, g), spacing, order=order, anisotropy_threshold=np.inf)
    ref = scipy_reference(arr, g, out.geometry, order)
    assert out.array.dtype == np.float32 and out.geometry == resampled_geometry(g, spacing)
    if order == 0:
        keep = not_tied(g, out.geometry)
        assert keep.any() or spacing == (1.6, 1.6, 1.6)  # exact 2:1 ratios tie everywhere
        assert np.array_equal(out.array[keep], ref[keep].astype(np.float32))
    else:
        np.testing.assert_allclose(out.array, ref, atol=2e-5 * np.abs(arr).max(), rtol=0)


@pytest.mark.parametrize("order", [0, 1, 3])
def test_flipped_target_grid_equals_scipy_reference(awkward_geometry, order):
    """resample_to onto a grid whose axes are reversed (negative diagonal mapping) and
    shifted, partly outside the input's field of view (fill there)."""
    g = awkward_geometry
    arr = smooth_field(g.shape, seed=1)
    base = resampled_geometry(g, (1.3, 0.7, 1.9))
    d = base.direction_matrix @ np.diag([-1.0, 1.0, -1.0])
    # axes 0 and 2 reversed (start at the far corner), axis 1 shifted 2 voxels out of the FOV
    origin = base.index_to_world([[base.shape[0] - 1, -2, base.shape[2] - 1]])[0]
    ref_grid = Geometry(base.shape, base.spacing, tuple(origin), tuple(map(tuple, d)))
    out = resample_to(Volume(arr, g), ref_grid, order=order, fill=np.nan).array
    ref = scipy_reference(arr, g, ref_grid, order)
    idx = world_index(g, ref_grid).T.reshape(ref_grid.shape + (3,))
    outside = np.any((idx < -0.5 - 1e-6) | (idx > np.asarray(g.shape) - 0.5 + 1e-6), axis=-1)
    assert outside.any() and not outside.all()
    assert np.all(np.isnan(out[outside]))
    keep = ~outside & (not_tied(g, ref_grid) if order == 0 else True)
    np.testing.assert_allclose(out[keep], ref[keep], atol=2e-5 * np.abs(arr).max(), rtol=0)


@pytest.mark.parametrize("order", [1, 3])
def test_oblique_target_grid_still_equals_scipy_reference(order):
    """Non-axis-aligned mappings take scipy's general path: same reference, same answer."""
    g = AWKWARD_GEOMETRIES["oblique"]
    arr = smooth_field(g.shape, seed=2)
    d = rotation(0.2, 0.1, -0.25) @ g.direction_matrix
    ref_grid = Geometry((9, 8, 7), (0.9, 1.0, 2.2), tuple(np.asarray(g.origin) + 1.0), tuple(map(tuple, d)))
    out = resample_to(Volume(arr, g), ref_grid, order=order, fill=None).array
    np.testing.assert_allclose(out, scipy_reference(arr, g, ref_grid, order), atol=1e-4, rtol=0)


def test_nearest_labels_keep_dtype_and_equal_scipy(awkward_geometry):
    g = awkward_geometry
    lab = (np.abs(smooth_field(g.shape, seed=3)) * 37).astype(np.uint16) % 700
    out = resample(Volume(lab, g, "label"), (0.6, 1.4, 1.1), order=0)
    assert out.array.dtype == np.uint16
    ref = scipy_reference(lab, g, out.geometry, 0)
    keep = not_tied(g, out.geometry)
    assert np.array_equal(out.array[keep], ref[keep].astype(np.uint16))


def test_anisotropic_rule_equals_two_scipy_passes():
    """nnU-Net's rule (cubic in-plane, linear along the thick axis) as separable per-axis
    orders equals the two-pass scipy formulation: cubic with the coarse axis fixed, then
    linear along it."""
    g = Geometry((21, 18, 7), (0.8, 0.9, 5.0), (3.0, -1.0, 2.0))
    arr = smooth_field(g.shape, seed=4)
    out = resample(Volume(arr, g), (1.0, 1.0, 1.0))
    t = np.linalg.inv(g.affine) @ out.geometry.affine
    m, off = np.diag(t[:3, :3]), t[:3, 3]
    tmp = ndimage.affine_transform(arr.astype(np.float64), np.array([m[0], m[1], 1.0]),
                                   offset=np.array([off[0], off[1], 0.0]),
                                   output_shape=out.geometry.shape[:2] + (g.shape[2],), order=3, mode="nearest")
    ref = ndimage.affine_transform(tmp, np.array([1.0, 1.0, m[2]]), offset=np.array([0.0, 0.0, off[2]]),
                                   output_shape=out.geometry.shape, order=1, mode="nearest")
    np.testing.assert_allclose(out.array, ref, atol=2e-5 * np.abs(arr).max(), rtol=0)


@pytest.mark.parametrize("n_in,n_out,scale,shift,order", [
    (1, 4, 0.25, -0.375, 3), (5, 1, 5.0, 2.0, 3), (40, 17, 40 / 17, 0.7, 3), (9, 30, 0.3, -0.4, 1),
    (12, 12, -1.0, 11.0, 3), (7, 13, 0.5, -0.25, 0)])
def test_axis_operator_blocks_reproduce_the_dense_rule(n_in, n_out, scale, shift, order):
    dense = axis_matrix(n_in, n_out, scale, shift, order)
    np.testing.assert_allclose(dense.sum(axis=1), 1.0, atol=1e-9)  # partition of unity
    op = axis_operator(n_in, n_out, scale, shift, order)
    got = apply_axis(np.eye(n_in), op, 0)
    np.testing.assert_allclose(got, dense, atol=1e-12)
    # and the 1D rule is scipy's: a random line
    x = np.random.default_rng(0).random(n_in)
    ref = ndimage.affine_transform(x, np.array([scale]), offset=shift, output_shape=(n_out,), order=order,
                                   mode="nearest")
    np.testing.assert_allclose(dense @ x, ref, atol=1e-12)


def test_singleton_and_identity_axes():
    arr = smooth_field((1, 16, 9))
    out = resample_separable(arr, (1.0, 0.5, 1.0), (0.0, -0.25, 0.0), (1, 32, 9), (3, 3, 3))
    ref = ndimage.affine_transform(arr.astype(np.float64), np.array([1.0, 0.5, 1.0]),
                                   offset=np.array([0.0, -0.25, 0.0]), output_shape=(1, 32, 9), order=3,
                                   mode="nearest")
    np.testing.assert_allclose(out, ref, atol=1e-4)


def test_nearest_round_trip_by_integer_factor_is_exact(awkward_geometry):
    """Labels taken to a 2x finer grid and back with nearest neighbour are unchanged."""
    g = awkward_geometry
    lab = (np.abs(smooth_field(g.shape, seed=7)) * 9).astype(np.uint8) % 5
    fine = resample(Volume(lab, g, "label"), tuple(s / 2 for s in g.spacing), order=0)
    back = resample_to(fine, g, order=0)
    assert np.array_equal(back.array, lab)


def test_preprocessor_resamples_channels_like_single_channel_resample(awkward_geometry):
    g = awkward_geometry
    a, b = smooth_field(g.shape, seed=8), smooth_field(g.shape, seed=9)
    spec = PreprocessSpec(orientation=None, target_spacing=(1.1, 0.9, 1.3), modalities=("none", "none"))
    x, rec = Preprocessor(spec).forward([Volume(a, g), Volume(b, g)])
    for c, arr in enumerate((a, b)):
        one = resample(Volume(arr, g), (1.1, 0.9, 1.3)).array
        np.testing.assert_allclose(x[c], one, rtol=1e-6, atol=1e-6)  # axis order: float32 rounding


# ----------------------------------------------------------------------------- labels back on the input grid
def _record(g: Geometry, *, crop: bool, spacing=(1.7, 0.8, 2.3)):
    img = smooth_field(g.shape, seed=11)
    if crop:  # zero border -> the foreground crop removes it
        img[:2] = 0
        img[:, -1] = 0
    spec = PreprocessSpec(orientation="RAS", target_spacing=spacing, modalities=("none",), crop_foreground=crop)
    return Preprocessor(spec).forward(Volume(img, g))[1]


def _model_probabilities(shape, n: int, seed: int, *, quantise: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = np.stack([ndimage.gaussian_filter(rng.normal(size=shape), 1.0) * 6 for _ in range(n)])
    p = np.exp(z - z.max(0))
    p /= p.sum(0)
    if quantise:  # exact ties between channels, and plateaus: the tie rule must match too
        p = np.round(p * 4) / 4
    return p.astype(np.float32)


@pytest.mark.parametrize("crop", [False, True])
@pytest.mark.parametrize("quantise", [False, True])
def test_labels_back_equal_argmax_of_resampled_probabilities(awkward_geometry, crop, quantise):
    from medcnn.postprocess import argmax_array

    rec = _record(awkward_geometry.with_source("scan.nii.gz"), crop=crop)
    assert (rec.step("crop") is not None) == crop and rec.step("resample") is not None
    p = _model_probabilities(rec.model_geometry.shape, 4, seed=12, quantise=quantise)
    ref_probs = rec.to_input_grid(p, kind="probability").array
    ref = np.argmax(ref_probs, axis=0)
    timings: dict[str, float] = {}
    got, n_interp = rec.labels_to_input_grid(p, reduce=argmax_array, timings=timings)
    assert got.geometry == rec.input_geometry and got.array.dtype == np.uint8
    assert 0 < n_interp < got.array.size
    assert {"to_input_grid_labels", "to_input_grid_resample"} <= set(timings)
    # equal everywhere except where float32 rounding decides between (nearly) tied channels
    top = np.sort(ref_probs, axis=0)
    near_tie = (top[-1] - top[-2]) < 1e-6
    assert np.array_equal(got.array[~near_tie], ref[~near_tie])
    assert (got.array == ref).mean() >= 0.999


def test_labels_back_with_nested_thresholds_and_crop_fill():
    """Several sigmoid channels (no background channel): nested thresholds; voxels removed
    by the crop get reduce(fill), here all-zero probabilities -> label 0."""
    from medcnn.postprocess import threshold_array

    rec = _record(AWKWARD_GEOMETRIES["oblique"], crop=True)
    shape = rec.model_geometry.shape
    rng = np.random.default_rng(13)
    outer = ndimage.gaussian_filter(rng.random(shape), 1.0)
    p = np.stack([outer, outer * ndimage.gaussian_filter(rng.random(shape), 1.0) * 2]).astype(np.float32)
    p = np.clip((p - p.mean()) * 8 + 0.5, 0, 1).astype(np.float32)
    ref = threshold_array(rec.to_input_grid(p, kind="probability", fill=0.0).array)
    got, n_interp = rec.labels_to_input_grid(p, reduce=threshold_array, fill=0.0)
    assert set(np.unique(ref)) >= {0, 1} and n_interp > 0
    assert (got.array == ref).mean() >= 0.999
    # the default fill (1 in channel 0, meant for a background channel) would mark the
    # cropped-away voxels as label 1: exactly those differ
    crop = rec.step("crop")
    n_cropped = got.array.size - int(np.prod(np.subtract(crop["stop"], crop["start"])))
    default, _ = rec.labels_to_input_grid(p, reduce=threshold_array)
    assert n_cropped > 0 and int((default.array != got.array).sum()) == n_cropped


def test_segmenter_labels_only_equal_labels_with_probabilities(awkward_geometry):
    """predict() without probabilities (labels decided on the model grid, boundaries
    interpolated) gives the labels of predict(return_probabilities=True) (full path)."""
    import torch

    from medcnn.inference import Segmenter

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv3d(4, 3, 1))
    g = awkward_geometry
    spec = PreprocessSpec(orientation="RAS", target_spacing=(1.3, 0.7, 1.9), modalities=("MR",))
    seg = Segmenter(net, roi_size=(8, 8, 8), preprocess=spec, device="cpu", precision="fp32")
    img = Volume(smooth_field(g.shape, seed=15) + 30.0, g)
    fast = seg.predict(img)
    full = seg.predict(img, return_probabilities=True)
    assert fast.labels.geometry == full.labels.geometry == g.with_source(None)
    assert (fast.labels.array == full.labels.array).mean() >= 0.999
    info = fast.info
    assert 0 < info["to_input_grid"]["interpolated_voxels"] < info["to_input_grid"]["input_voxels"] == g.n_voxels
    steps = {"preprocess_normalise", "preprocess_resample", "to_input_grid_labels", "to_input_grid_resample"}
    assert steps <= set(info["timings_s"])


def test_segmenter_several_sigmoid_channels_with_crop_give_background_outside_the_crop():
    import torch

    from medcnn.inference import Segmenter

    g = Geometry((20, 18, 12), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
    img = np.zeros(g.shape, np.float32)
    img[4:16, 3:15, 2:10] = smooth_field((12, 12, 8), seed=16) + 40.0
    net = torch.nn.Conv3d(1, 2, 1)
    with torch.no_grad():
        net.weight.fill_(0.0)
        net.bias.copy_(torch.tensor([5.0, -5.0]))  # channel 0 (outer region) on, channel 1 off
    spec = PreprocessSpec(orientation=None, target_spacing=(1.5, 1.5, 1.5), modalities=("MR",),
                          crop_foreground=True)
    seg = Segmenter(net, roi_size=(8, 8, 8), preprocess=spec, activation="sigmoid", device="cpu",
                    precision="fp32")
    for pred in (seg.predict(Volume(img, g)), seg.predict(Volume(img, g), return_probabilities=True)):
        lab = pred.labels.array
        assert np.all(lab[4:16, 3:15, 2:10] == 1)
        inside = np.zeros(g.shape, bool)
        inside[4:16, 3:15, 2:10] = True
        assert np.all(lab[~inside] == 0)


def test_labels_back_without_resampling_and_on_oblique_steps_fall_back():
    from medcnn.postprocess import argmax_array

    g = AWKWARD_GEOMETRIES["permuted"]
    rec = Preprocessor(PreprocessSpec(orientation="RAS", modalities=("none",))).forward(
        Volume(smooth_field(g.shape), g))[1]
    p = _model_probabilities(rec.model_geometry.shape, 3, seed=14)
    got, n = rec.labels_to_input_grid(p, reduce=argmax_array)
    assert n == 0 and np.array_equal(got.array, np.argmax(rec.to_input_grid(p, kind="probability").array, 0))
