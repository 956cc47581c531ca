"""Inference: sliding window vs MONAI, streaming, geometry on the input grid, 2D, cine, memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medcnn.errors import ConfigError, DimensionError, InsufficientMemoryError
from medcnn.inference import Segmenter, plan_memory, sliding_window_inference, window_starts
from medcnn.inference.device import select_device, select_precision
from medcnn.preprocess import PreprocessSpec
from medcnn.volume import Geometry, Volume


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny networks: fastest on one thread


# ---------------------------------------------------------------------------- deterministic "networks"
class Threshold(torch.nn.Module):
    """Logits (0, x - t): label 1 where the intensity exceeds t (pointwise)."""

    def __init__(self, t: float = 0.5, nd: int = 3) -> None:
        super().__init__()
        conv = torch.nn.Conv3d if nd == 3 else torch.nn.Conv2d
        self.conv = conv(1, 2, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            self.conv.weight[1].fill_(1.0)
            self.conv.bias[1] = -t

    def forward(self, x):
        return self.conv(x)


class GradientSign(torch.nn.Module):
    """Label 1 where the intensity increases along array axis ``axis`` of the window
    (central difference): an orientation-sensitive network."""

    def __init__(self, axis: int = 0, nd: int = 3) -> None:
        super().__init__()
        k = [1] * nd
        k[axis] = 3
        pad = [0] * nd
        pad[axis] = 1
        conv = torch.nn.Conv3d if nd == 3 else torch.nn.Conv2d
        self.conv = conv(1, 2, tuple(k), padding=tuple(pad), padding_mode="replicate")
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            w = self.conv.weight[1, 0].reshape(-1)
            w[0], w[-1] = -1.0, 1.0

    def forward(self, x):
        return self.conv(x)


def smooth_image(g: Geometry, x_scale_mm: float = 6.0) -> np.ndarray:
    """A smooth world-space function sampled on ``g`` (so resampling preserves it well)."""
    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in g.shape), indexing="ij"), -1).reshape(-1, 3)
    xyz = g.index_to_world(ijk)
    f = np.sin(xyz[:, 0] / x_scale_mm) + np.cos(xyz[:, 1] / 5.0) + 0.05 * xyz[:, 2]
    return f.reshape(g.shape).astype(np.float32)


# ---------------------------------------------------------------------------- sliding window core
@pytest.mark.parametrize("size, roi, overlap", [(192, 96, 0.25), (100, 32, 0.5), (32, 32, 0.5), (40, 16, 0.0),
                                                 (17, 5, 0.9)])
def test_window_starts_cover_and_overlap(size, roi, overlap):
    s = window_starts(size, roi, overlap)
    assert s[0] == 0 and s[-1] == size - roi and list(s) == sorted(set(s))
    covered = np.zeros(size, bool)
    for a in s:
        covered[a:a + roi] = True
    assert covered.all()
    for a, b in zip(s, s[1:]):
        assert b - a <= max(int(roi * (1 - overlap)), 1)


@pytest.mark.parametrize("mode", ["gaussian", "constant"])
def test_blended_logits_equal_monai(mode):
    from monai.inferers import sliding_window_inference as monai_swi

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(2, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(6, 3, 3, padding=1))
    img = torch.randn(2, 27, 21, 7)  # z smaller than the ROI: padded
    with torch.inference_mode():
        ours = sliding_window_inference(img, net, roi_size=(10, 10, 10), out_channels=3, overlap=0.5, mode=mode,
                                        sw_batch_size=3, outputs=("logits", "labels", "probabilities"))
        ref = monai_swi(img[None], (10, 10, 10), 3, net, overlap=0.5, mode=mode)[0]
    assert torch.allclose(ours.logits, ref, atol=1e-5)
    assert torch.equal(ours.labels.long(), ref.argmax(0))
    assert torch.allclose(ours.probabilities, ref.softmax(0), atol=1e-5)


def test_pointwise_network_is_reproduced_exactly_by_any_windowing():
    torch.manual_seed(1)
    net = torch.nn.Conv3d(1, 4, 1)
    img = torch.randn(1, 23, 31, 9)
    with torch.inference_mode():
        full = net(img[None])[0]
        for roi, ov in [((8, 8, 8), 0.5), ((23, 31, 9), 0.0), ((32, 8, 4), 0.3)]:
            r = sliding_window_inference(img, net, roi_size=roi, out_channels=4, overlap=ov, outputs=("logits",))
            assert torch.allclose(r.logits, full, atol=1e-5)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_streamed_slabs_equal_full_stitching(axis):
    torch.manual_seed(2)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 5, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv3d(5, 5, 3, padding=1))
    img = torch.randn(1, 26, 22, 20)
    kw = dict(roi_size=(8, 8, 8), out_channels=5, overlap=0.4, outputs=("labels", "logits"))
    with torch.inference_mode():
        full = sliding_window_inference(img, net, **kw)
        slab = sliding_window_inference(img, net, slab=True, slab_axis=axis, **kw)
    assert torch.equal(full.labels, slab.labels)
    assert torch.allclose(full.logits, slab.logits, atol=1e-6)


def test_sigmoid_outputs_follow_threshold_semantics():
    from medcnn.postprocess import threshold_labels

    torch.manual_seed(3)
    net = torch.nn.Conv3d(1, 3, 1)
    img = torch.randn(1, 10, 9, 8)
    with torch.inference_mode():
        r = sliding_window_inference(img, net, roi_size=(8, 8, 8), out_channels=3, activation="sigmoid",
                                     outputs=("labels", "probabilities"))
        one = sliding_window_inference(img, torch.nn.Conv3d(1, 1, 1), roi_size=(8, 8, 8), out_channels=1,
                                       outputs=("labels", "probabilities"))
    g = Geometry((10, 9, 8), (1, 1, 1))
    ref = threshold_labels(Volume(r.probabilities.numpy(), g, "probability", "channel"), 0.5)
    assert np.array_equal(r.labels.numpy(), ref.array)
    assert one.probabilities.shape[0] == 2  # background, foreground
    assert np.array_equal(one.labels.numpy(), (one.probabilities[1] > 0.5).numpy())


# ---------------------------------------------------------------------------- Segmenter: geometry
SPECS = {
    "none": None,
    "RAS": PreprocessSpec(orientation="RAS", modalities=("none",)),
    "RAS+resample": PreprocessSpec(orientation="RAS", target_spacing=(1.1, 0.9, 1.3), modalities=("none",)),
}


@pytest.mark.parametrize("spec_name", sorted(SPECS))
def test_labels_and_probabilities_on_exact_input_grid(awkward_geometry, spec_name):
    g = awkward_geometry.with_source("scan.nii.gz")
    img = smooth_image(g)
    t = float(np.median(img))
    seg = Segmenter(Threshold(t), roi_size=(8, 8, 8), preprocess=SPECS[spec_name], precision="fp32", device="cpu")
    pred = seg.predict(Volume(img, g), return_probabilities=True)
    for v in (pred.labels, pred.probabilities):
        assert v.geometry.shape == g.shape
        np.testing.assert_allclose(v.affine, g.affine, rtol=0, atol=1e-5)
        assert v.geometry.isclose(g, atol_mm=1e-5)
    assert pred.labels.kind == "label" and pred.labels.array.dtype == np.uint8
    assert pred.probabilities.shape == (2,) + g.shape
    np.testing.assert_allclose(pred.probabilities.array.sum(0), 1.0, atol=1e-5)
    truth = img > t
    agreement = np.mean(pred.labels.array.astype(bool) == truth)
    if spec_name == "RAS+resample":
        assert pred.info["labels_from"] == "probabilities"
        assert agreement > 0.9  # resampled twice on small grids; exactness is tested above
    else:
        assert agreement == 1.0
    assert pred.info["precision"] == "fp32" and pred.info["device"] == "cpu"
    assert set(pred.info["timings_s"]) >= {"preprocess", "network", "to_input_grid", "total"}


def _transform(vol: Volume, flips: tuple[int, ...], perm: tuple[int, ...]) -> Volume:
    """The same world-space image stored with flipped and permuted array axes."""
    arr = vol.array
    a = vol.affine.copy()
    for ax in flips:
        arr = np.flip(arr, ax)
        a[:3, 3] = a[:3, 3] + a[:3, ax] * (vol.shape[ax] - 1)
        a[:3, ax] = -a[:3, ax]
    arr = np.transpose(arr, perm)
    a[:3, :3] = a[:3, list(perm)]
    return Volume(np.ascontiguousarray(arr), Geometry.from_affine(a, arr.shape))


def _untransform(arr: np.ndarray, flips: tuple[int, ...], perm: tuple[int, ...]) -> np.ndarray:
    arr = np.transpose(arr, np.argsort(perm))
    for ax in reversed(flips):
        arr = np.flip(arr, ax)
    return arr


@pytest.mark.parametrize("target_spacing", [None, (1.5, 1.5, 1.5)])
def test_flipped_and_permuted_inputs_give_the_same_world_segmentation(target_spacing):
    g = Geometry((20, 16, 12), (1.0, 1.2, 1.5), (-10.0, 4.0, 30.0))
    base = Volume(smooth_image(g, x_scale_mm=2.5), g)
    spec = PreprocessSpec(orientation="RAS", target_spacing=target_spacing, modalities=("none",))
    seg = Segmenter(GradientSign(axis=0), roi_size=(8, 8, 8), preprocess=spec, precision="fp32", device="cpu")
    ref = seg.predict(base).labels.array
    assert 0.2 < ref.mean() < 0.8  # not degenerate
    for flips, perm in [((0,), (0, 1, 2)), ((0, 2), (2, 0, 1)), ((1,), (1, 2, 0)), ((), (2, 1, 0))]:
        moved = _transform(base, flips, perm)
        np.testing.assert_allclose(moved.geometry.index_to_world([[0, 0, 0]]),
                                   base.geometry.index_to_world([[s - 1 if a in flips else 0
                                                                   for a, s in enumerate(g.shape)]]), atol=1e-9)
        pred = seg.predict(moved).labels
        assert pred.geometry.isclose(moved.geometry, atol_mm=1e-5)
        assert np.array_equal(_untransform(pred.array, flips, perm), ref), (flips, perm)
    # without reorientation the same network sees mirrored gradients: the test can fail
    plain = Segmenter(GradientSign(axis=0), roi_size=(8, 8, 8), precision="fp32", device="cpu")
    flipped = plain.predict(_transform(base, (0,), (0, 1, 2))).labels.array
    assert not np.array_equal(_untransform(flipped, (0,), (0, 1, 2)), ref)


# ---------------------------------------------------------------------------- 2D, cine, channels
def test_2d_network_runs_per_slice_along_the_coarsest_axis():
    g = Geometry((14, 5, 12), (1.0, 4.0, 1.0))  # axis 1 is the coarsest
    img = smooth_image(g)
    seg = Segmenter(GradientSign(axis=1, nd=2), roi_size=(8, 8), precision="fp32", device="cpu")
    pred = seg.predict(Volume(img, g))
    assert pred.info["slice_axis"] == 1 and pred.labels.shape == g.shape
    # reference: per slice j, the 2D net on the (I, K) plane; its axis 1 is the volume's K
    net = GradientSign(axis=1, nd=2)
    with torch.no_grad():
        for j in range(g.shape[1]):
            ref = net(torch.from_numpy(img[:, j, :])[None, None])[0].argmax(0).numpy()
            assert np.array_equal(pred.labels.array[:, j, :], ref)


def test_cine_input_gives_4d_labels_with_frame_times():
    g = Geometry((10, 9, 6), (1.3, 1.3, 8.0), (1.0, 2.0, 3.0))
    frames = np.stack([smooth_image(g) + 0.2 * t for t in range(4)])
    cine = Volume(frames, g, leading_axis="time", frame_times_ms=(0.0, 40.0, 80.0, 120.0))
    seg = Segmenter(Threshold(0.5), roi_size=(8, 8, 8), precision="fp32", device="cpu")
    pred = seg.predict(cine)
    assert pred.labels.leading_axis == "time" and pred.labels.shape == (4,) + g.shape
    assert pred.labels.frame_times_ms == (0.0, 40.0, 80.0, 120.0)
    assert pred.labels.geometry.isclose(g)
    assert np.array_equal(pred.labels.array, (frames > 0.5).astype(np.uint8))
    assert pred.info["frames"] == 4
    with pytest.raises(ConfigError):
        seg.predict(cine, return_probabilities=True)


def _cine_2d(n_frames: int = 5, spacing=(1.4, 1.4, 9.0)):
    g = Geometry((40, 36, 7), spacing, (3.0, -2.0, 11.0))
    frames = np.stack([smooth_image(g, x_scale_mm=4.0 + t) * (1.0 + 0.3 * t) + 2.0 * t for t in range(n_frames)])
    return Volume(frames, g, leading_axis="time", frame_times_ms=tuple(40.0 * t for t in range(n_frames))), g


def test_cine_2d_frames_in_one_call_equal_each_slice_alone():
    """Every frame's slices go through one sliding-window call (frames joined along the
    slice axis); a 2D window never crosses a slice, so each slice's labels equal the
    network run on that slice alone (hand reference with torch), frame by frame, with
    per-frame normalisation (each frame's z-score, not the joined array's)."""
    cine, g = _cine_2d()
    spec = PreprocessSpec(orientation=None, modalities=("MR",))
    seg = Segmenter(GradientSign(axis=0, nd=2), roi_size=(16, 16), preprocess=spec, precision="fp32",
                    device="cpu", overlap=0.5)
    pred = seg.predict(cine)
    assert pred.info["frames_batched"] is True and pred.info["frames"] == 5
    assert pred.labels.shape == cine.array.shape and pred.labels.frame_times_ms == cine.frame_times_ms
    net = GradientSign(axis=0, nd=2)
    with torch.no_grad():
        for t in range(cine.array.shape[0]):
            frame = cine.array[t]
            z = (frame - frame.mean()) / frame.std()  # MR z-score of this frame alone
            for k in range(g.shape[2]):
                ref = net(torch.from_numpy(np.ascontiguousarray(z[:, :, k]))[None, None])[0].argmax(0).numpy()
                assert np.array_equal(pred.labels.array[t, :, :, k], ref), (t, k)
    # the whole-cine call ran the windows of every frame: as many as the frames one by one
    alone = [seg.predict(f) for f in cine.frames()]
    assert pred.info["n_windows"] == sum(p.info["n_windows"] for p in alone)
    for t, p in enumerate(alone):
        assert np.array_equal(p.labels.array, pred.labels.array[t])


@pytest.mark.parametrize("sw", [1, 3])
def test_cine_2d_batched_equals_frame_by_frame_with_resampling_postprocessing_and_intervals(sw):
    """A resampling 2D model (probabilities mapped back), keep-largest postprocessing per frame
    and volume intervals: the batched cine equals predicting each frame on its own."""
    torch.manual_seed(3)
    from monai.networks.nets import UNet

    net = UNet(spatial_dims=2, in_channels=1, out_channels=3, channels=(4, 8), strides=(2,), num_res_units=0)
    cine, g = _cine_2d(n_frames=3)
    spec = PreprocessSpec(orientation=None, target_spacing=(1.0, 1.0, 9.0), modalities=("MR",))
    seg = Segmenter(net, roi_size=(16, 16), preprocess=spec, precision="fp32", device="cpu", sw_batch_size=sw,
                    postprocess={"keep_largest": True})
    pred = seg.predict(cine, volume_intervals=True)
    assert pred.info["frames_batched"] is True
    assert pred.info["labels_from"] == "probabilities"
    per_frame = [seg.predict(f, volume_intervals=True) for f in cine.frames()]
    labels = np.stack([p.labels.array for p in per_frame])
    assert 0 < (labels > 0).mean() < 1  # not degenerate
    equal = float((labels == pred.labels.array).mean())
    assert equal == 1.0 if sw == 1 else equal >= 0.999
    rows = [{"frame": t, **r} for t, p in enumerate(per_frame) for r in p.volume_intervals]
    assert [(r["frame"], r["label"]) for r in rows] == [(r["frame"], r["label"]) for r in pred.volume_intervals]
    if sw == 1:
        for a, b in zip(rows, pred.volume_intervals):
            assert a == pytest.approx(b)


def test_cine_frames_that_fit_memory_only_one_by_one_are_predicted_one_by_one(monkeypatch):
    """When the joined frames' probabilities would not fit but one frame's do, the cine is
    predicted frame by frame (the same outputs as each frame alone), not via labels only."""
    cine, g = _cine_2d(n_frames=3)
    spec = PreprocessSpec(orientation=None, target_spacing=(1.0, 1.0, 9.0), modalities=("MR",))
    seg = Segmenter(GradientSign(axis=0, nd=2), roi_size=(16, 16), preprocess=spec, precision="fp32",
                    device="cpu")
    real_plan = Segmenter.plan

    def plan(self, model_shape, **kw):
        if kw.get("want_probabilities") and model_shape[2] > 7:  # the joined frames (3 x 7 slices): too big
            raise InsufficientMemoryError("test: no memory for the joined frames' probabilities")
        return real_plan(self, model_shape, **kw)

    monkeypatch.setattr(Segmenter, "plan", plan)
    pred = seg.predict(cine)
    assert pred.info["frames_batched"] is False and pred.info["labels_from"] == "probabilities"
    for t, f in enumerate(cine.frames()):
        assert np.array_equal(seg.predict(f).labels.array, pred.labels.array[t])


def test_cine_frames_on_different_model_grids_fall_back_to_one_by_one():
    """Frames whose model grids differ (a crop to each frame's foreground) cannot be joined:
    they are predicted one by one, with the same labels as predicting them alone."""
    cine, g = _cine_2d(n_frames=3)
    arr = cine.array.copy()
    arr[:, :5] = 0.0
    arr[1, :12] = 0.0  # frame 1's foreground crop is smaller
    cine = Volume(arr, g, leading_axis="time", frame_times_ms=cine.frame_times_ms)
    spec = PreprocessSpec(orientation=None, modalities=("none",), crop_foreground=True)
    seg = Segmenter(GradientSign(axis=1, nd=2), roi_size=(16, 16), preprocess=spec, precision="fp32",
                    device="cpu")
    pred = seg.predict(cine)
    assert pred.info["frames_batched"] is False
    for t, f in enumerate(cine.frames()):
        assert np.array_equal(seg.predict(f).labels.array, pred.labels.array[t])


def test_whole_slice_runs_the_network_once_per_zero_padded_slice():
    """whole_slice: one window per slice, the slice zero-padded symmetrically to a multiple of
    the network's total stride (here 2 x 2 = 4); reference: torch on each padded slice."""
    torch.manual_seed(5)
    from monai.networks.nets import UNet

    spec_net = {"name": "unet", "spatial_dims": 2, "in_channels": 1, "out_channels": 3, "channels": [4, 8, 8],
                "strides": [2, 2], "num_res_units": 0}
    net = UNet(spatial_dims=2, in_channels=1, out_channels=3, channels=(4, 8, 8), strides=(2, 2),
               num_res_units=0).eval()
    g = Geometry((30, 27, 5), (1.2, 1.2, 8.0))
    img = smooth_image(g, x_scale_mm=3.0)
    seg = Segmenter(net, roi_size=(16, 16), network=spec_net, precision="fp32", device="cpu", whole_slice=True)
    pred = seg.predict(Volume(img, g))
    assert pred.info["whole_slice"] == {"used": True, "window": [32, 28]}
    assert pred.info["n_windows"] == g.shape[2]  # one per slice
    with torch.no_grad():
        for k in range(g.shape[2]):
            x = torch.from_numpy(np.ascontiguousarray(img[:, :, k]))[None, None]
            x = torch.nn.functional.pad(x, (0, 1, 1, 1))  # 30 -> 32 (1 + 1), 27 -> 28 (0 + 1)
            ref = net(x)[0, :, 1:31, 0:27].argmax(0).numpy()
            assert np.array_equal(pred.labels.array[:, :, k], ref), k
    windowed = Segmenter(net, roi_size=(16, 16), network=spec_net, precision="fp32", device="cpu").predict(
        Volume(img, g))
    assert windowed.info["whole_slice"] == {"used": False} and windowed.info["n_windows"] > g.shape[2]
    with pytest.raises(ConfigError, match="3D network"):
        Segmenter(Threshold(0.5), roi_size=(8, 8, 8), whole_slice=True)


def test_whole_slice_default_follows_the_recorded_agreement_of_every_volume(tmp_path):
    import json
    import shutil
    from pathlib import Path

    import medcnn
    from medcnn.inference.segmenter import WHOLE_SLICE_MIN_AGREEMENT_PERCENT, _slice_divisor, whole_slice_default

    two_d = {"network": {"spatial_dims": 2}}
    assert WHOLE_SLICE_MIN_AGREEMENT_PERCENT == 99.5
    assert whole_slice_default({**two_d, "whole_slice": {"voxels_equal_percent_min": 99.6, "volumes": 8}})
    assert not whole_slice_default({**two_d, "whole_slice": {"voxels_equal_percent_min": 99.49, "volumes": 8}})
    assert not whole_slice_default({**two_d, "whole_slice": {"voxels_equal_percent_min": 99.9, "volumes": 0}})
    assert not whole_slice_default(two_d)
    assert not whole_slice_default({"network": {"spatial_dims": 3},
                                    "whole_slice": {"voxels_equal_percent_min": 100.0, "volumes": 2}})
    unet = {"name": "unet", "spatial_dims": 2, "in_channels": 1, "out_channels": 2, "channels": [4, 8, 8, 8, 8]}
    assert _slice_divisor({**unet, "strides": [2, 2, 2, 2]}) == (16, 16)
    assert _slice_divisor(None) == (16, 16)
    # a bundle copy with a passing record runs whole slices; its spec hash is unchanged
    src = Path(medcnn.__file__).parent / "bundles" / "cardiac-cine-mri"
    seg = Segmenter.from_bundle(src, device="cpu")
    meta = json.loads((src / "bundle.json").read_text())
    assert seg.whole_slice is whole_slice_default(meta)
    dst = tmp_path / "b"
    shutil.copytree(src, dst)
    meta["whole_slice"] = {"voxels_equal_percent_min": 99.7, "volumes": 3}
    (dst / "bundle.json").write_text(json.dumps(meta))
    passing = Segmenter.from_bundle(dst, device="cpu")
    assert passing.whole_slice is True
    assert passing.bundle_info["spec_sha256"] == seg.bundle_info["spec_sha256"]
    assert Segmenter.from_bundle(dst, device="cpu", whole_slice=False).whole_slice is False


class SumThreshold(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(2, 2, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            self.conv.weight[1, 0] = 1.0
            self.conv.weight[1, 1] = -1.0

    def forward(self, x):  # label 1 where channel 0 > channel 1
        return self.conv(x)


def test_multichannel_inputs_in_every_form():
    g = Geometry((9, 8, 7), (1.0, 1.0, 2.0))
    a = smooth_image(g)
    b = np.full(g.shape, float(np.median(a)), np.float32)
    va, vb = Volume(a, g), Volume(b, g)
    seg = Segmenter(SumThreshold(), roi_size=(8, 8, 8), channels=["T1", "T2"], precision="fp32", device="cpu")
    expected = (a > b).astype(np.uint8)
    for inp in ([va, vb], {"T2": vb, "T1": va}, Volume(np.stack([a, b]), g, leading_axis="channel")):
        assert np.array_equal(seg.predict(inp).labels.array, expected)
    with pytest.raises(DimensionError):
        seg.predict(va)
    with pytest.raises(DimensionError):
        seg.predict({"T1": va})


# ---------------------------------------------------------------------------- precision, TTA, options
def _small_unet_segmenter(**kw):
    from medcnn.models import build_network

    torch.manual_seed(0)
    spec = {"name": "unet", "in_channels": 1, "out_channels": 3, "channels": [4, 8], "strides": [2],
            "num_res_units": 1}
    return Segmenter(build_network(spec), network=spec, roi_size=(16, 16, 16), device="cpu", **kw)


def test_tta_counts_passes_and_keeps_symmetric_results():
    g = Geometry((20, 18, 16), (1, 1, 1))
    img = smooth_image(g)
    plain = Segmenter(Threshold(0.3), roi_size=(8, 8, 8), precision="fp32", device="cpu").predict(Volume(img, g))
    tta = Segmenter(Threshold(0.3), roi_size=(8, 8, 8), precision="fp32", device="cpu", tta_axes=(0, 2))
    pred = tta.predict(Volume(img, g))
    assert pred.info["n_forward_passes"] == 4 * pred.info["n_windows"]
    assert np.array_equal(pred.labels.array, plain.labels.array)  # a pointwise net is flip-invariant
    unet = _small_unet_segmenter(precision="fp32", tta_axes=(0, 1, 2)).predict(Volume(img, g))
    assert unet.info["n_forward_passes"] == 8 * unet.info["n_windows"]


def test_tta_trained_uses_the_models_mirror_axes_and_warns_otherwise():
    g = Geometry((20, 18, 16), (1, 1, 1))
    vol = Volume(smooth_image(g), g)
    seg = _small_unet_segmenter(precision="fp32", tta_axes="trained", mirror_axes=(0,))
    pred = seg.predict(vol)
    assert seg.tta_axes == (0,) and pred.info["tta_axes"] == [0] and pred.info["tta_request"] == "trained"
    assert pred.info["mirror_axes_trained"] == [0]
    assert pred.info["n_forward_passes"] == 2 * pred.info["n_windows"]
    # the same as asking for axis 0 explicitly
    explicit = _small_unet_segmenter(precision="fp32", tta_axes=(0,), mirror_axes=(0,)).predict(vol)
    assert np.array_equal(explicit.labels.array, pred.labels.array)
    with pytest.warns(UserWarning, match=r"axes \[1, 2\]"):
        _small_unet_segmenter(precision="fp32", tta_axes="all", mirror_axes=(0,))
    with pytest.warns(UserWarning, match="trained without mirroring"):
        none = _small_unet_segmenter(precision="fp32", tta_axes="trained", mirror_axes=())
    assert none.tta_axes == () and none.predict(vol).info["n_forward_passes"] == pred.info["n_windows"]
    with pytest.raises(ConfigError, match="tta_axes"):
        _small_unet_segmenter(tta_axes="sideways")
    with pytest.raises(ConfigError, match="mirror_axes"):
        _small_unet_segmenter(mirror_axes=(3,))


def test_tta_trained_on_a_2d_network_mirrors_window_axes_mapped_to_the_volume():
    """A 2D network's window axes are the two in-plane axes of each volume's model grid."""
    g = Geometry((12, 10, 4), (1.0, 1.0, 5.0))  # slice axis 2 (coarsest)
    vol = Volume(smooth_image(g), g)
    net = GradientSign(axis=1, nd=2)
    seg = Segmenter(net, roi_size=(8, 8), precision="fp32", device="cpu", tta_axes="trained", mirror_axes=(1,))
    pred = seg.predict(vol)
    assert pred.info["slice_axis"] == 2 and pred.info["tta_axes"] == [1]
    assert pred.info["n_forward_passes"] == 2 * pred.info["n_windows"]
    ref = Segmenter(net, roi_size=(8, 8), precision="fp32", device="cpu", tta_axes=(1,)).predict(vol)
    assert np.array_equal(ref.labels.array, pred.labels.array)
    g2 = Geometry((4, 12, 10), (5.0, 1.0, 1.0))  # slice axis 0: window axis 1 is model-grid axis 2
    pred2 = seg.predict(Volume(smooth_image(g2), g2))
    assert pred2.info["slice_axis"] == 0 and pred2.info["tta_axes"] == [2]
    with pytest.warns(UserWarning, match="never mirrored"):
        Segmenter(net, roi_size=(8, 8), device="cpu", tta_axes="all", mirror_axes=(1,))
    explicit = Segmenter(net, roi_size=(8, 8), device="cpu", tta_axes=(0,), mirror_axes=(1,))
    with pytest.warns(UserWarning, match=r"axes \[0\]"):  # grid axis 0 = window axis 0 when slicing along 2
        explicit.predict(vol)


def test_mirroring_averages_flipped_predictions():
    from medcnn.inference import make_predictor

    torch.manual_seed(4)
    net = torch.nn.Conv3d(1, 2, 3, padding=1).eval()
    x = torch.randn(2, 1, 6, 5, 4)
    with torch.no_grad():
        got = make_predictor(net, device="cpu", tta_axes=(0, 2))(x)
        ref = (net(x) + net(x.flip(2)).flip(2) + net(x.flip(4)).flip(4) + net(x.flip(2, 4)).flip(2, 4)) / 4
    assert torch.allclose(got, ref, atol=1e-6)


def test_bf16_agrees_with_fp32_on_a_smooth_volume():
    g = Geometry((40, 36, 24), (1, 1, 1))
    vol = Volume(smooth_image(g) * 2.0, g)
    ref = _small_unet_segmenter(precision="fp32").predict(vol)
    low = _small_unet_segmenter(precision="bf16").predict(vol)
    assert low.info["precision"] == "bf16"
    assert np.mean(ref.labels.array == low.labels.array) >= 0.99


def test_option_errors():
    with pytest.raises(ConfigError, match="fp16"):
        select_precision("fp16", "cpu")
    with pytest.raises(ConfigError):
        select_precision("fp64", "cpu")
    with pytest.raises(ConfigError):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            select_device("cuda")
    assert select_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ConfigError):
        Segmenter(Threshold(), roi_size=(8, 8), device="cpu")
    with pytest.raises(ConfigError):
        Segmenter(Threshold(), roi_size=(8, 8, 8), device="cpu", tta_axes=(3,))
    with pytest.raises(ConfigError):
        Segmenter(Threshold(), roi_size=(8, 8, 8), device="cpu", overlap=1.0)


# ---------------------------------------------------------------------------- memory planning
def test_planner_uses_host_stitching_when_the_gpu_budget_is_tiny():
    kw = dict(in_channels=1, out_channels=14, roi_size=(96, 96, 96), network={"name": "unet", "channels": [16]})
    roomy = plan_memory((512, 512, 300), device_type="cuda", device_budget_bytes=80 * 2**30,
                        host_budget_bytes=64 * 2**30, prefer_slab_above_bytes=None, **kw)
    assert roomy.stitch == "device" and not roomy.slab
    # by default a > 1 GiB accumulator is streamed even when it would fit
    assert plan_memory((512, 512, 300), device_type="cuda", device_budget_bytes=80 * 2**30,
                       host_budget_bytes=64 * 2**30, **kw).slab
    tight = plan_memory((512, 512, 300), device_type="cuda", device_budget_bytes=2 * 2**30,
                        host_budget_bytes=64 * 2**30, prefer_slab_above_bytes=None, **kw)
    assert tight.stitch == "host" and not tight.slab
    # the full 14-class accumulator alone is 14 * 512*512*300 * 4 bytes = 4.1 GiB
    assert tight.breakdown["accumulator_full"] == 14 * 512 * 512 * 300 * 4
    slab = plan_memory((512, 512, 300), device_type="cuda", device_budget_bytes=2 * 2**30,
                       host_budget_bytes=3 * 2**30, **kw)
    assert slab.slab and slab.breakdown["accumulator_slab"] < 2**30
    with pytest.raises(InsufficientMemoryError, match="expected a prediction that fits"):
        plan_memory((512, 512, 300), device_type="cuda", device_budget_bytes=2**20, host_budget_bytes=2**20, **kw)
    cpu = plan_memory((512, 512, 300), device_type="cpu", device_budget_bytes=3 * 2**30,
                      host_budget_bytes=3 * 2**30, **kw)
    assert cpu.stitch == "device" and cpu.slab


def test_tiny_memory_limit_streams_and_gives_identical_labels():
    g = Geometry((64, 40, 32), (1, 1, 1))
    vol = Volume(smooth_image(g), g)
    full = _small_unet_segmenter(precision="fp32")
    plan_full = full.plan(g.shape)
    assert not plan_full.slab
    need_full = plan_full.peak_bytes
    need_slab_acc = plan_full.breakdown["accumulator_slab"]
    limit_gb = (need_full - plan_full.breakdown["accumulator_full"] + need_slab_acc + 1) / 2**30
    small = _small_unet_segmenter(precision="fp32", memory_limit_gb=limit_gb)
    a = full.predict(vol)
    b = small.predict(vol)
    assert b.info["memory"]["slab"] and not a.info["memory"]["slab"]
    assert np.array_equal(a.labels.array, b.labels.array)
    with pytest.raises(InsufficientMemoryError):
        _small_unet_segmenter(precision="fp32", memory_limit_gb=1e-6).predict(vol)


def test_cpu_fp32_defaults_differ_for_2d_and_3d_networks():
    """The measured CPU fp32 defaults: 3D channels-last at 2 windows per call
    (bench_inference.py), 2D contiguous at 16 (bench_cine.py --sweep); bf16 one window."""
    three = Segmenter(Threshold(0.5), roi_size=(8, 8, 8), device="cpu", precision="fp32")
    two = Segmenter(Threshold(0.5, nd=2), roi_size=(8, 8), device="cpu", precision="fp32")
    assert (three.memory_format, three.sw_batch_size) == ("channels_last", 2)
    assert (two.memory_format, two.sw_batch_size) == ("contiguous", 16)
    assert Segmenter(Threshold(0.5, nd=2), roi_size=(8, 8), device="cpu", precision="fp32",
                     sw_batch_size=3).sw_batch_size == 3


def test_default_window_batch_drops_to_one_before_running_out_of_memory():
    g = Geometry((64, 40, 32), (1, 1, 1))
    seg = _small_unet_segmenter(precision="fp32", stream_above_gb=0.0)  # CPU fp32 default: 2 windows per call
    assert seg.sw_batch_size == 2
    # the smallest plans (streamed accumulator) for 2 and for 1 window per call
    two = seg.plan(g.shape)
    one = _small_unet_segmenter(precision="fp32", sw_batch_size=1, stream_above_gb=0.0).plan(g.shape)
    assert two.slab and one.slab and two.peak_bytes > one.peak_bytes
    limit_gb = (one.peak_bytes + two.peak_bytes) / 2 / 2**30  # fits one window per call, not two
    tight = _small_unet_segmenter(precision="fp32", memory_limit_gb=limit_gb)
    assert tight.plan(g.shape).sw_batch_size == 1
    chosen = _small_unet_segmenter(precision="fp32", memory_limit_gb=limit_gb, sw_batch_size=2)
    with pytest.raises(InsufficientMemoryError, match="lower sw_batch_size"):  # the user's choice is kept
        chosen.plan(g.shape)
