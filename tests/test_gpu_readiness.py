"""The CPU half of the GPU check: what can be proven without a GPU.

* the inference core imports and segments with the heavy packages blocked (the lean
  environment of a bare GPU machine), with the same labels as the full environment;
* the out-of-memory fallback (fake networks / runs raising ``torch.cuda.OutOfMemoryError``),
  device selection and the CUDA settings with CUDA mocked;
* on a CPU-only machine, the ``gpu`` tests are collected and skipped with a reason and
  ``scripts/gpu_check.sh`` prints one line and exits 3;
* the carry-over pack fits its budgets (slow: it builds the pack).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from medcnn.errors import ConfigError, InsufficientMemoryError  # noqa: E402
from medcnn.volume import Geometry, Volume  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
#: not importable on the bare GPU machine (compiled, large, or not needed by the core)
HEAVY = ("SimpleITK", "pandas", "matplotlib", "highdicom", "pydicom", "cc3d", "edt", "skimage", "scipy", "psutil",
         "rich", "tqdm", "nibabel", "einops", "sklearn", "dask")
BLOCK = "import sys\nfor _n in %r:\n    sys.modules[_n] = None\n" % (HEAVY,)


def _pythonpath() -> str:
    """This checkout first, then whatever PYTHONPATH already holds (the pack's site/)."""
    return os.pathsep.join([str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])


def _lps_case(shape=(40, 48, 32), spacing=(1.0, 1.0, 1.0), seed=0) -> Volume:
    """A bright blob in noise on an LPS grid with a non-zero origin (reoriented to RAS)."""
    rng = np.random.default_rng(seed)
    ii, jj, kk = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    blob = ((ii - 18) / 7.0) ** 2 + ((jj - 24) / 11.0) ** 2 + ((kk - 15) / 6.0) ** 2 <= 1
    arr = (rng.normal(0, 1, shape) + 3 * blob).astype(np.float32)
    return Volume(arr, Geometry(shape, spacing, (12.0, -7.5, 30.0), ((-1, 0, 0), (0, -1, 0), (0, 0, 1))))


LEAN_SCRIPT = BLOCK + textwrap.dedent("""
    import json
    import numpy as np
    import medcnn.inference
    from medcnn.inference import Segmenter
    from medcnn.volume import Geometry, Volume
    case = np.load(sys.argv[1])
    vol = Volume(case["image"], Geometry.from_dict(json.loads(str(case["geometry"]))))
    out = {}
    for bundle in ("hippocampus-mri", "cardiac-lv-cine-mri"):
        seg = Segmenter.from_bundle("medcnn/bundles/" + bundle, device="cpu", precision="fp32", tta_axes="trained",
                                    postprocess=None)
        out[bundle] = seg.predict(vol).labels.array
    np.savez(sys.argv[2], **out)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in %r and sys.modules[m] is not None)
    print(json.dumps({"heavy_loaded": loaded}))
""" % (HEAVY,))


def test_inference_core_segments_without_the_heavy_packages(tmp_path):
    """``import medcnn.inference`` and a CPU segmentation through the core path (bundle
    loading, reorientation, windows, TTA, back to the input grid) with SimpleITK, scipy,
    pandas, nibabel, psutil... blocked: the labels equal the full environment's."""
    from medcnn.inference import Segmenter

    vol = _lps_case()
    np.savez(tmp_path / "case.npz", image=vol.array, geometry=np.array(json.dumps(vol.geometry.to_dict())))
    proc = subprocess.run([sys.executable, "-c", LEAN_SCRIPT, str(tmp_path / "case.npz"), str(tmp_path / "out.npz")],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=_pythonpath(), OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"heavy_loaded": []}
    lean = np.load(tmp_path / "out.npz")
    for bundle in ("hippocampus-mri", "cardiac-lv-cine-mri"):
        full = Segmenter.from_bundle(REPO / "medcnn" / "bundles" / bundle, device="cpu", precision="fp32",
                                     tta_axes="trained", postprocess=None).predict(vol).labels.array
        assert full.shape == vol.array.shape
        np.testing.assert_array_equal(lean[bundle], full, err_msg=bundle)
    assert np.any(lean["hippocampus-mri"] > 0) or np.any(lean["cardiac-lv-cine-mri"] > 0)


# ---------------------------------------------------------------------------- OOM fallback
class _OOMNet(torch.nn.Module):
    """A 1x1x1 convolution that raises ``torch.cuda.OutOfMemoryError`` for batches larger
    than ``max_batch`` (a window batch that does not fit)."""

    def __init__(self, max_batch: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv3d(1, 3, 3, padding=1)
        self.max_batch = max_batch
        self.batches: list[int] = []

    def forward(self, x):
        self.batches.append(int(x.shape[0]))
        if x.shape[0] > self.max_batch:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (fake)")
        return self.conv(x)


def test_out_of_memory_in_a_window_halves_the_batch_instead_of_failing():
    from medcnn.inference import Segmenter

    vol = _lps_case()
    net = _OOMNet(max_batch=1)
    seg = Segmenter(net, roi_size=(24, 24, 24), device="cpu", precision="fp32", sw_batch_size=4)
    pred = seg.predict(vol)
    assert [(f["sw_batch_size"], f["stitch"]) for f in pred.info["oom_fallbacks"]] == [(2, "device"), (1, "device")]
    assert "out of memory" in pred.info["oom_fallbacks"][0]["after"]
    assert pred.info["sw_batch_size"] == 1
    assert net.batches[:2] == [4, 2] and set(net.batches[2:]) == {1}
    ref = Segmenter(_OOMNet(max_batch=99), roi_size=(24, 24, 24), device="cpu", precision="fp32",
                    sw_batch_size=1).predict(vol)
    assert ref.info["oom_fallbacks"] == []
    np.testing.assert_array_equal(pred.labels.array, ref.labels.array)
    assert pred.labels.geometry.isclose(vol.geometry)


def _plan(**kw):
    from medcnn.inference import plan_memory

    return plan_memory((128, 128, 96), in_channels=1, out_channels=14, roi_size=(64, 64, 64), sw_batch_size=4,
                       device_type="cuda", device_budget_bytes=40 * 2**30, host_budget_bytes=64 * 2**30,
                       prefer_slab_above_bytes=None, **kw)


def test_out_of_memory_on_a_gpu_plan_falls_back_to_host_stitching(monkeypatch):
    """CUDA mocked: the planned device stitching runs out of memory at every batch size;
    the case finishes with the accumulator on the host, the cache emptied between tries."""
    from medcnn.inference.memory import run_with_oom_fallback

    emptied = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
    plan = _plan()
    assert plan.stitch == "device"
    tried = []

    def run(p):
        tried.append((p.sw_batch_size, p.stitch))
        if p.stitch == "device":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")
        return "labels"

    result, fallbacks = run_with_oom_fallback(run, plan, device=torch.device("cuda"))
    assert result == "labels"
    assert tried == [(4, "device"), (2, "device"), (1, "device"), (1, "host")]
    assert [(f["sw_batch_size"], f["stitch"]) for f in fallbacks] == tried[1:]
    assert len(emptied) == 3


def test_out_of_memory_at_the_smallest_plan_is_one_typed_error_and_others_pass_through():
    from medcnn.inference.memory import is_out_of_memory, run_with_oom_fallback

    plan = replace(_plan(), stitch="host", sw_batch_size=2)

    def oom(p):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")

    with pytest.raises(InsufficientMemoryError) as err:
        run_with_oom_fallback(oom, plan, device="cuda:0")
    msg = str(err.value)
    assert "expected a prediction that fits in the cuda memory" in msg and "Tried to allocate 9.00 GiB" in msg
    assert "1 stitching on the host" in msg

    def other(p):
        raise RuntimeError("Given groups=1, weight of size [3, 1, 3, 3, 3], expected input to have 1 channels")

    with pytest.raises(RuntimeError, match="expected input to have 1 channels"):
        run_with_oom_fallback(other, plan, device="cuda")
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert not is_out_of_memory(ValueError("out of memory"))
    with pytest.raises(InsufficientMemoryError):  # CPU: nothing to move to the host
        run_with_oom_fallback(oom, replace(plan, stitch="device", sw_batch_size=1), device="cpu")


# ---------------------------------------------------------------------------- CUDA mocked
def test_device_and_precision_selection_with_cuda_mocked(monkeypatch):
    from medcnn.inference import select_device, select_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert select_device("auto") == torch.device("cuda")
    assert select_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match="expected a CUDA device index < 2, got cuda:2"):
        select_device("cuda:2")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert select_precision("auto", torch.device("cuda")) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert select_precision("auto", torch.device("cuda")) == "fp16"
    assert select_precision("fp16", torch.device("cuda")) == "fp16"


@pytest.mark.parametrize("precision,deterministic", [("fp32", True), ("fp32", False), ("bf16", False)])
def test_cuda_flags_set_cudnn_for_one_prediction_and_restore(precision, deterministic):
    from medcnn.inference.device import cuda_flags

    cudnn = torch.backends.cudnn
    before = (cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32)
    with cuda_flags(torch.device("cuda"), precision=precision, deterministic=deterministic):
        assert cudnn.deterministic is deterministic
        assert cudnn.benchmark is (not deterministic)
        assert cudnn.allow_tf32 is (precision != "fp32")  # "fp32" is float32, not TF32
    assert (cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32) == before
    with cuda_flags(torch.device("cpu"), precision="fp32", deterministic=True):
        assert (cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32) == before


def test_cuda_flags_follow_torch_deterministic_algorithms(monkeypatch):
    """A caller that switched on ``torch.use_deterministic_algorithms`` (medcnn run
    --deterministic does) gets no autotuning from a Segmenter left at its default."""
    from medcnn.inference.device import cuda_flags

    monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: True)
    with cuda_flags(torch.device("cuda"), precision="bf16"):
        assert torch.backends.cudnn.deterministic is True and torch.backends.cudnn.benchmark is False


def test_device_budget_counts_blocks_cached_by_torch(monkeypatch):
    """``mem_get_info`` reports memory PyTorch's allocator holds but no tensor uses as
    taken; the budget adds it back, so a second case sees the same budget as the first."""
    from medcnn.inference.memory import available_memory_bytes

    gib = 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1 * gib, 80 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 5 * gib)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 2 * gib)
    dev, host = available_memory_bytes(torch.device("cuda"))
    assert dev == 4 * gib
    assert host > 0


def test_host_memory_without_psutil_agrees_with_psutil(monkeypatch):
    psutil = pytest.importorskip("psutil")
    from medcnn.inference.memory import available_memory_bytes

    reference = psutil.virtual_memory().available  # (psutil itself looks up sys.modules["psutil"])
    monkeypatch.setitem(sys.modules, "psutil", None)
    _dev, host = available_memory_bytes("cpu")
    assert abs(host - reference) < max(0.05 * host, 256 * 2**20)


# ---------------------------------------------------------------------------- the check on a CPU machine
cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")


@pytest.mark.slow  # (the suite's own run of tests/test_gpu.py shows the same skips)
@cpu_only
def test_gpu_tests_are_collected_and_skipped_with_a_reason():
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/test_gpu.py"],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=_pythonpath()))
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "passed" not in proc.stdout.splitlines()[-1] and " skipped" in proc.stdout.splitlines()[-1]
    assert "no CUDA GPU visible to torch" in proc.stdout


@cpu_only
def test_gpu_check_says_in_one_line_that_no_gpu_is_present():
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "/nonexistent/results"],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHON=sys.executable))
    assert proc.returncode == 3
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu-check: no GPU present:"), proc.stdout
    assert proc.stderr == ""
    assert not Path("/nonexistent/results").exists()


def test_gpu_figures_make_one_table_with_the_card_name(tmp_path):
    fig = tmp_path / "figures.jsonl"
    fig.write_text(json.dumps({"check": "bundle vs CPU fp32", "bundle": "hippocampus-mri", "precision": "fp16",
                               "agreement": 0.99981, "seconds": 0.5}) + "\n"
                   + json.dumps({"check": "memory planner", "case": "512x512x300", "plan": "host",
                                 "peak_mib": 812.0, "estimate_mib": 1500.0}) + "\n")
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps([{"device": "cuda", "where": "GPU X", "volume": [192, 192, 96], "roi": [96, 96, 96],
                                  "overlap": 0.25, "repeats": 3, "rows": [
                                      {"configuration": "medcnn fp16 sw4", "median_s": 0.2, "mvox_per_s": 17.0,
                                       "x_monai_fp32": 3.1, "peak_mib": 900.0, "agreement_vs_monai_fp32": 0.9995,
                                       "x_monai_amp_same_batch": 1.4,
                                       "monai_amp_row": "monai sliding_window_inference fp16 autocast sw4"}]}]))
    log = tmp_path / "pytest.log"
    log.write_text("...\n21 passed, 1 skipped in 80.00s\n")
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_figures.py"), "--facts",
                          "GPU NVIDIA H100 80GB HBM3 (79 GiB, compute capability 9.0, bf16 yes); driver 550; CUDA 12.4",
                          "--figures", str(fig), "--bench", str(bench), "--pytest-log", str(log), "--pytest-rc", "0",
                          "--bench-rc", "0"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("### medcnn GPU check on NVIDIA H100 80GB HBM3\n")
    assert out.count("| check | configuration | figure |") == 1
    assert "99.981 %" in out and "peak 812 MiB (plan's estimate 1500 MiB)" in out
    assert "**1.40x MONAI AMP** (fp16 autocast sw4)" in out and "21 passed, 1 skipped" in out


@pytest.mark.slow
@pytest.mark.realdata
def test_gpu_pack_fits_its_budgets_and_runs_lean(tmp_path, shared_data):
    out = tmp_path / "pack"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_pack.py"), str(out)], capture_output=True,
                          text=True, timeout=600, env=dict(os.environ, PYTHONPATH=str(REPO),
                                                            MEDCNN_DATA=str(shared_data)))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "site total" in proc.stdout and "data total" in proc.stdout

    def size(p: Path) -> int:
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())

    assert size(out / "site") <= 40 * 2**20 and size(out / "data") <= 10 * 2**20
    assert not list((out / "site").rglob("*.so")) or all("abi3" in f.name for f in (out / "site").rglob("*.so"))
    # the pack's own medcnn and packages, with everything else blocked, load every case
    script = BLOCK + textwrap.dedent("""
        sys.path[:0] = [sys.argv[1] + "/src", sys.argv[1] + "/site", sys.argv[1] + "/src/tests"]
        import medcnn, monai, yaml
        assert medcnn.__file__.startswith(sys.argv[1]), medcnn.__file__
        from gpu_cases import load_case
        from pathlib import Path
        from medcnn.inference import Segmenter
        vol, _ = load_case(Path(sys.argv[1]) / "data" / "brain.npz")
        seg = Segmenter.from_bundle(Path(sys.argv[1]) / "src/medcnn/bundles/brain-tumour-mri", device="cpu",
                                    precision="fp32", postprocess=None)
        pred = seg.predict(vol)
        assert pred.labels.geometry.isclose(vol.geometry)
        from medcnn.volume import Volume
        vol4, _ = load_case(Path(sys.argv[1]) / "data" / "brain4.npz")  # the four-sequence region model
        seg4 = Segmenter.from_bundle(Path(sys.argv[1]) / "src/medcnn/bundles/brain-tumour-mri-4seq", device="cpu",
                                     precision="fp32", postprocess=None)
        pred4 = seg4.predict([Volume(vol4.array[c], vol4.geometry) for c in range(4)])
        assert pred4.labels.geometry.isclose(vol4.geometry) and (pred4.labels.array == 4).any()
        print("ok", yaml.__with_libyaml__)
    """)
    lean = subprocess.run([sys.executable, "-c", script, str(out)],
                          capture_output=True, text=True, timeout=300, env={"PATH": os.environ.get("PATH", ""),
                                                                            "OMP_NUM_THREADS": "1"})
    assert lean.returncode == 0, lean.stderr[-3000:]
    assert lean.stdout.split() == ["ok", "False"]


@pytest.mark.parametrize("roi", [(12, 16, 9), (1, 64, 48), (128, 128, 128), (5, 3, 2), (33, 17, 1)])
def test_nnunet_importance_map_without_scipy_equals_scipys(roi):
    """The numpy-only nnU-Net Gaussian (the bare GPU machine has no scipy) against the
    recipe it reproduces, run with scipy: an impulse through ``gaussian_filter``."""
    ndimage = pytest.importorskip("scipy.ndimage")
    from medcnn.inference.sliding_window import nnunet_gaussian

    tmp = np.zeros(roi)
    tmp[tuple(r // 2 for r in roi)] = 1.0
    ref = ndimage.gaussian_filter(tmp, [r * 0.125 for r in roi], 0, mode="constant", cval=0)
    ref /= ref.max()
    ref[ref == 0] = ref[ref != 0].min()
    np.testing.assert_allclose(nnunet_gaussian(roi), ref, rtol=1e-12, atol=0)
