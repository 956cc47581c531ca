"""CUDA checks (marker ``gpu``): skipped with a reason where torch sees no CUDA GPU.

Run on a GPU machine by ``make gpu-check`` / ``scripts/gpu_check.sh`` (see
docs/inference.md, "GPU check"). The cases are small real crops written by
``scripts/gpu_pack.py`` (``tests/gpu_cases.py`` finds them); tests that need them skip
with a reason when they are absent. Everything here needs only torch, numpy, monai,
safetensors and (for the nnU-Net fixture) dynamic-network-architectures; where scipy,
nibabel or PyYAML are needed the test says so and skips without them.

The references are independent of the code path under test: the CPU in float32 for
every CUDA label map; a second run for determinism; an uninterrupted run for resume;
``torch.cuda.max_memory_allocated`` against the planner's estimate.

With ``MEDCNN_GPU_FIGURES=<file>`` each test appends its measured figures (agreement,
peak memory, plan) as JSON lines; ``scripts/gpu_figures.py`` turns them into the check's
Markdown table.
"""

from __future__ import annotations

import json
import os
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gpu_cases import gpu_data_dir, load_case  # noqa: E402

from medcnn.volume import Volume  # noqa: E402

pytestmark = pytest.mark.gpu

BUNDLES = Path(__file__).resolve().parents[1] / "medcnn" / "bundles"
#: shipped bundle -> GPU-check case (the cardiac bundles run on the cine's first frame)
BUNDLE_CASES = {"hippocampus-mri": "hippocampus.npz", "brain-tumour-mri": "brain.npz",
                "brain-tumour-mri-4seq": "brain4.npz", "cardiac-cine-mri": "cardiac_cine.npz",
                "cardiac-lv-cine-mri": "cardiac_cine.npz"}
FP32_AGREEMENT = 0.999
AMP_AGREEMENT = 0.995


def record(check: str, **values) -> None:
    """Append one row of figures for the check's Markdown table (``MEDCNN_GPU_FIGURES``)."""
    path = os.environ.get("MEDCNN_GPU_FIGURES")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"check": check, **values}, default=float) + "\n")


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of voxels with equal labels (arrays of the same shape)."""
    assert a.shape == b.shape
    return float(np.mean(np.asarray(a) == np.asarray(b)))


def case_path(name: str) -> Path:
    root = gpu_data_dir()
    if root is None or not (root / name).is_file():
        pytest.skip(f"GPU-check case {name!r} not found: run `make gpu-pack` (scripts/gpu_pack.py) here, "
                    "or set MEDCNN_GPU_DATA to the pack's data folder")
    return root / name


def bundle_input(bundle: str) -> Volume | list[Volume]:
    vol, _ = load_case(case_path(BUNDLE_CASES[bundle]))
    if vol.leading_axis == "time":
        return vol.frame(0)
    if vol.leading_axis == "channel":
        return [Volume(vol.array[c], vol.geometry) for c in range(vol.array.shape[0])]
    return vol


def segmenter(bundle: str | Path, device: str, precision: str, **options):
    from medcnn.inference import Segmenter

    path = bundle if isinstance(bundle, Path) else BUNDLES / bundle
    options.setdefault("tta_axes", "trained")
    options.setdefault("postprocess", None)  # postprocessing is CPU code: the network and stitching are compared
    return Segmenter.from_bundle(path, device=device, precision=precision, **options)


@lru_cache(maxsize=None)
def cpu_reference(bundle: str) -> np.ndarray:
    """CPU float32 labels with TTA: the reference of every CUDA run."""
    return segmenter(bundle, "cpu", "fp32").predict(bundle_input(bundle)).labels.array


def cuda_precisions() -> list[str]:
    return ["fp32", "fp16"] + (["bf16"] if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else [])


PRECISIONS = ["fp32", "fp16", "bf16"]


def _need_precision(precision: str) -> None:
    if precision not in cuda_precisions():
        pytest.skip(f"{torch.cuda.get_device_name()} has no bfloat16 support")


# ---------------------------------------------------------------------------- bundles
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("bundle", sorted(BUNDLE_CASES))
def test_shipped_bundle_on_cuda_matches_cpu(bundle, precision):
    _need_precision(precision)
    image = bundle_input(bundle)
    ref = cpu_reference(bundle)
    assert np.any(ref > 0), "the CPU reference found no foreground: the case is not a useful check"
    seg = segmenter(bundle, "cuda", precision)
    t = time.perf_counter()
    pred = seg.predict(image)
    seconds = time.perf_counter() - t
    first = image[0] if isinstance(image, list) else image
    assert pred.labels.geometry.isclose(first.geometry), "labels not on the input grid"
    assert pred.info["device"].startswith("cuda") and pred.info["precision"] == precision
    assert pred.info["tta_axes"], "TTA did not run"
    agree = agreement(pred.labels.array, ref)
    record("bundle vs CPU fp32", bundle=bundle, precision=precision, agreement=agree, seconds=seconds,
           tta_axes=pred.info["tta_axes"])
    assert agree >= (FP32_AGREEMENT if precision == "fp32" else AMP_AGREEMENT)


def _nnunet_fixture():
    root = gpu_data_dir()
    if root is None or not (root / "imported-nnunet" / "bundle.json").is_file():
        pytest.skip("imported nnU-Net fixture not found: run `make gpu-pack` here or set MEDCNN_GPU_DATA")
    vol, extra = load_case(root / "nnunet_case.npz")
    return root / "imported-nnunet", vol, extra


def _scipy_available() -> bool:
    try:
        import scipy.ndimage  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("precision", PRECISIONS)
def test_imported_nnunet_on_cuda_matches_cpu(precision):
    """The imported nnU-Net network with nnU-Net's windows, Gaussian and mirroring. On the
    input grid where scipy is installed (nnU-Net's preprocessing resamples with it);
    otherwise on the model grid the pack preprocessed (the CUDA path is the same)."""
    _need_precision(precision)
    path, vol, extra = _nnunet_fixture()
    on_input_grid = _scipy_available()

    def run(device: str, prec: str) -> np.ndarray:
        seg = segmenter(path, device, prec)
        if on_input_grid:
            pred = seg.predict(vol)
            assert pred.labels.geometry.isclose(vol.geometry)
            return pred.labels.array
        return seg.predict_array(extra["model_grid"], spacing=tuple(extra["model_spacing"])).labels.numpy()

    ref = run("cpu", "fp32")
    assert np.any(ref > 0)
    agree = agreement(run("cuda", precision), ref)
    record("imported nnU-Net vs CPU fp32", precision=precision, agreement=agree,
           grid="input" if on_input_grid else "model (no scipy)")
    assert agree >= (FP32_AGREEMENT if precision == "fp32" else AMP_AGREEMENT)


# ---------------------------------------------------------------------------- cine
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cine_on_cuda_matches_cpu(precision):
    vol, _ = load_case(case_path("cardiac_cine.npz"))
    assert vol.leading_axis == "time"
    ref = segmenter("cardiac-cine-mri", "cpu", "fp32").predict(vol).labels
    pred = segmenter("cardiac-cine-mri", "cuda", precision).predict(vol).labels
    assert pred.array.shape == vol.array.shape and pred.frame_times_ms == vol.frame_times_ms
    assert pred.geometry.isclose(vol.geometry)
    agree = agreement(pred.array, ref.array)
    record("cine vs CPU fp32", bundle="cardiac-cine-mri", precision=precision, frames=vol.array.shape[0],
           agreement=agree)
    assert agree >= (FP32_AGREEMENT if precision == "fp32" else AMP_AGREEMENT)


# ---------------------------------------------------------------------------- determinism
def test_deterministic_mode_is_bit_identical():
    image = bundle_input("hippocampus-mri")
    seg = segmenter("hippocampus-mri", "cuda", "fp32", deterministic=True)
    from medcnn.preprocess import Preprocessor

    x, _ = Preprocessor(seg.preprocess_spec).forward(image)
    a = seg.predict_array(x, outputs=("logits",)).logits
    b = seg.predict_array(x, outputs=("logits",)).logits
    assert torch.equal(a, b), "deterministic mode: two runs differ"
    assert np.array_equal(seg.predict(image).labels.array, seg.predict(image).labels.array)
    record("deterministic mode", bundle="hippocampus-mri", bit_identical=True)


# ---------------------------------------------------------------------------- memory
def _many_class_segmenter(*, memory_limit_gb=None, stream_above_gb=None, sw_batch_size=2):
    from monai.networks.nets import UNet

    from medcnn.inference import Segmenter

    torch.manual_seed(0)
    spec = {"name": "unet", "spatial_dims": 3, "in_channels": 1, "out_channels": 14,
            "channels": [16, 32, 64, 128], "strides": [2, 2, 2], "num_res_units": 1}
    net = UNet(spatial_dims=3, in_channels=1, out_channels=14, channels=(16, 32, 64, 128), strides=(2, 2, 2),
               num_res_units=1)
    return Segmenter(net, roi_size=(128, 128, 128), network=spec, overlap=0.25, device="cuda", precision="fp16",
                     sw_batch_size=sw_batch_size, memory_limit_gb=memory_limit_gb, stream_above_gb=stream_above_gb)


def _ct_volume() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(size=(1, 512, 512, 300)).astype(np.float32)


def _measured_peak(seg, x, plan):
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    res = seg.predict_array(x, plan=plan)
    torch.cuda.synchronize()
    return res, torch.cuda.max_memory_allocated() - before


def test_planner_on_the_device_budget_ct_sized_many_classes():
    """512 x 512 x 300, 14 classes: stitched on the device with the real budget, on the
    host when the budget is cut below the accumulator; the measured peak stays within
    the plan's device estimate and the labels are the same either way."""
    x = _ct_volume()
    seg = _many_class_segmenter()
    plan_dev = seg.plan(x.shape[1:])
    assert plan_dev.stitch == "device" and not plan_dev.slab, plan_dev.describe()
    res_dev, peak_dev = _measured_peak(seg, x, plan_dev)
    acc_gb = plan_dev.breakdown["accumulator_full"] / 2**30
    seg_host = _many_class_segmenter(memory_limit_gb=0.8 * acc_gb)
    plan_host = seg_host.plan(x.shape[1:])
    assert plan_host.stitch == "host", plan_host.describe()
    res_host, peak_host = _measured_peak(seg_host, x, plan_host)
    record("memory planner", case="512x512x300, 14 classes, roi 128, fp16", plan="device",
           peak_mib=peak_dev / 2**20, estimate_mib=plan_dev.device_peak_bytes / 2**20)
    record("memory planner", case="512x512x300, 14 classes, roi 128, fp16", plan="host (budget cut)",
           peak_mib=peak_host / 2**20, estimate_mib=plan_host.device_peak_bytes / 2**20)
    assert res_dev.info["oom_fallbacks"] == [] and res_host.info["oom_fallbacks"] == []
    assert peak_dev <= plan_dev.device_peak_bytes, (peak_dev, plan_dev.describe())
    assert peak_host <= plan_host.device_peak_bytes, (peak_host, plan_host.describe())
    assert peak_host < peak_dev
    # the same windows and weights; the host adds them up with the CPU's float32 rounding
    assert agreement(res_dev.labels.numpy(), res_host.labels.numpy()) >= 0.9999


class _OutOfMemoryAtFirst(torch.nn.Module):
    """Runs ``net``, but its first ``n`` calls allocate far more than any GPU holds, so
    the CUDA caching allocator itself raises ``torch.cuda.OutOfMemoryError``."""

    def __init__(self, net, n: int) -> None:
        super().__init__()
        self.net, self.left = net, n

    def forward(self, x):
        if self.left > 0:
            self.left -= 1
            torch.empty(1 << 46, dtype=torch.uint8, device=x.device)  # 64 TiB
        return self.net(x)


def test_out_of_memory_in_a_window_falls_back_instead_of_failing():
    image = bundle_input("hippocampus-mri")
    ref = segmenter("hippocampus-mri", "cuda", "fp32", sw_batch_size=4).predict(image).labels.array
    seg = segmenter("hippocampus-mri", "cuda", "fp32", sw_batch_size=4)
    seg.model = _OutOfMemoryAtFirst(seg.model, 3)  # batch 4, 2, 1 on the device fail; host stitching runs
    pred = seg.predict(image)
    steps = [(f["sw_batch_size"], f["stitch"]) for f in pred.info["oom_fallbacks"]]
    record("OOM fallback", bundle="hippocampus-mri", fallbacks=" -> ".join(f"sw{b} {s}" for b, s in steps))
    assert steps == [(2, "device"), (1, "device"), (1, "host")]
    assert pred.info["stitch"] == "host"
    assert agreement(pred.labels.array, ref) >= 0.9999  # host stitching: the CPU's float32 rounding


# ---------------------------------------------------------------------------- training
def test_training_on_cuda_with_amp_resumes_bit_exactly(tmp_path):
    """A few steps of medcnn's training loop on CUDA with AMP (bf16 or fp16 + GradScaler),
    deterministic: finite loss, and a run stopped at step 3 and resumed ends with the
    same losses and bit-identical weights as the uninterrupted run."""
    pytest.importorskip("nibabel", reason="the training check writes its NIfTI dataset with nibabel")
    pytest.importorskip("scipy", reason="medcnn's training preparation resamples with scipy")
    from medcnn.io import write_volume
    from medcnn.train._compat import build_network
    from medcnn.train.loop import DataConfig, PreprocessConfig, TrainConfig, load_checkpoint, train
    from medcnn.volume import Geometry

    rng = np.random.default_rng(0)
    geom = Geometry((40, 36, 20), (1.0, 1.2, 2.5), (10.0, -5.0, 3.0), ((-1, 0, 0), (0, -1, 0), (0, 0, 1)))
    ii, jj, kk = np.meshgrid(*[np.arange(s) for s in geom.shape], indexing="ij")
    entries = []
    (tmp_path / "img").mkdir()
    for c in range(4):
        ci, cj, ck = rng.uniform(12, 26), rng.uniform(12, 24), rng.uniform(6, 13)
        lab = (((ii - ci) / 9) ** 2 + ((jj - cj) / 8) ** 2 + ((kk - ck) / 4) ** 2 <= 1).astype(np.uint8)
        img = 100 + 80 * lab + rng.normal(0, 15, geom.shape)
        write_volume(Volume(img.astype(np.float32), geom), tmp_path / "img" / f"c{c}.nii.gz")
        write_volume(Volume(lab, geom, kind="label"), tmp_path / "img" / f"c{c}_seg.nii.gz")
        entries.append({"image": f"img/c{c}.nii.gz", "label": f"img/c{c}_seg.nii.gz", "patient": f"p{c // 2}"})
    (tmp_path / "dataset.json").write_text(json.dumps({"training": entries}))
    cfg = TrainConfig(
        name="gpu", data=DataConfig(dataset=str(tmp_path / "dataset.json"), channels=["MR"],
                                    labels={"background": 0, "blob": 1}, n_folds=2, fold=0),
        network={"name": "unet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [8, 16, 32],
                 "strides": [2, 2], "num_res_units": 1},
        patch_size=(32, 32, 16), preprocess=PreprocessConfig(orientation="RAS", target_spacing=None,
                                                             modalities=["MR"]),
        batch_size=2, max_steps=6, steps_per_epoch=3, val_every_epochs=100, checkpoint_every=3, seed=3,
        amp="auto", deterministic=True, device="cuda", progress=False, export_dtype="float32")
    full = train(cfg, out_dir=tmp_path / "full", config_dir=tmp_path, max_steps=6, log=lambda s: None)
    part = train(cfg, out_dir=tmp_path / "part", config_dir=tmp_path, max_steps=6, stop_after=3, log=lambda s: None)
    assert part.step == 3
    resumed = train(cfg, out_dir=tmp_path / "part", config_dir=tmp_path, max_steps=6, resume=True,
                    log=lambda s: None)
    assert full.step == resumed.step == 6

    def losses(out: Path) -> list[float]:
        import csv

        with (out / "log.csv").open() as fh:
            return [float(r["loss"]) for r in csv.DictReader(fh)]

    a, b = losses(tmp_path / "full"), losses(tmp_path / "part")
    assert len(a) == 6 and all(np.isfinite(a))
    assert a == b, (a, b)
    net_a, net_b = build_network(cfg.network), build_network(cfg.network)
    load_checkpoint(tmp_path / "full" / "checkpoint", net_a, None)
    load_checkpoint(tmp_path / "part" / "checkpoint", net_b, None)
    for (k, v1), v2 in zip(net_a.state_dict().items(), net_b.state_dict().values()):
        assert torch.equal(v1, v2), k
    record("training with AMP", steps=6, amp="bf16" if torch.cuda.is_bf16_supported() else "fp16",
           final_loss=a[-1], resume="bit-exact")
