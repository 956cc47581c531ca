"""Network executors (issue 24): ONNX Runtime against torch fp32, the export cache, the
fallback without onnxruntime, and ``backend="auto"``.

References: the torch fp32 path (the executor interface leaves it untouched) for labels;
the export's own sha256 record and file names for the cache; executors that sleep a known
time per call for ``auto``.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pytest
import torch

from medcnn._testing import require_shared_data
from medcnn.errors import ConfigError
from medcnn.inference import Segmenter
from medcnn.inference import executors as ex
from medcnn.inference.executors import Executor, TorchExecutor, choose_fastest
from medcnn.io import read_volume
from medcnn.models import build_network
from medcnn.volume import Geometry, Volume

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ORT_REASON = "onnxruntime is not installed (pip install onnxruntime): the ONNX Runtime backend cannot run"

#: a small real case per shipped bundle: channel files, optional crop around the reference labels (mm margin)
BUNDLE_CASES = {
    "hippocampus-mri": (["hippocampus/imagesTr/hippocampus_017.nii.gz"], None),
    "cardiac-cine-mri": (["acdc/patient005_ED.nii.gz"], None),
    "cardiac-lv-cine-mri": (["sunnybrook/nifti/SCD0000301_ED.nii.gz"], None),
    "brain-tumour-mri": (["brats2015/brats_2013_pat0005_1/Flair_subtrMeanDivStd.nii.gz",
                          "brats2015/brats_2013_pat0005_1/T1c_subtrMeanDivStd.nii.gz"],
                         ("brats2015/brats_2013_pat0005_1/OTMultiClass.nii.gz", 12.0)),
}
MIN_AGREEMENT = 0.999


def _tiny_segmenter(**options) -> Segmenter:
    """A seeded random-weight 3D UNet (instance norm, as the shipped bundles) on 16^3 windows."""
    spec = {"name": "unet", "spatial_dims": 3, "in_channels": 1, "out_channels": 3, "channels": [4, 8],
            "strides": [2], "num_res_units": 1, "norm": "instance"}
    torch.manual_seed(0)
    net = build_network(spec)
    return Segmenter(net, network=spec, roi_size=(16, 16, 16), device="cpu", precision="fp32", threads=1, **options)


def _volume(seed: int = 0) -> Volume:
    rng = np.random.default_rng(seed)
    g = Geometry((24, 20, 18), (1.1, 0.9, 2.0), (5.0, -7.0, 11.0))
    return Volume(rng.normal(0, 1, g.shape).astype(np.float32), g)


def _onnx_files(folder) -> list:
    return sorted(p.name for p in folder.glob("*.onnx"))


# ---------------------------------------------------------------------------- real bundles
@pytest.mark.realdata
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "brain-tumour-mri" else n
                                  for n in sorted(BUNDLE_CASES)])  # brain: ~9 s on a busy 2-core CPU
def test_onnxruntime_labels_equal_torch_fp32_on_each_shipped_bundle(name, tmp_path):
    pytest.importorskip("onnxruntime", reason=ORT_REASON)
    files, crop = BUNDLE_CASES[name]
    vols = [read_volume(require_shared_data(*f.split("/")), require_3d=True) for f in files]
    if crop is not None:  # a box around the expert's labels keeps the 3D case to a few windows
        ref_labels = read_volume(require_shared_data(*crop[0].split("/")), kind="label")
        box = ref_labels.nonzero_box(margin_mm=crop[1])
        vols = [v.crop(*box) for v in vols]
    image = vols[0] if len(vols) == 1 else vols
    torch_seg = Segmenter.from_bundle(name, device="cpu", precision="fp32", threads=1)
    ort_seg = Segmenter.from_bundle(name, device="cpu", precision="fp32", threads=1, backend="onnxruntime",
                                    cache_dir=tmp_path)
    want = torch_seg.predict(image)
    got = ort_seg.predict(image)
    assert got.info["backend"]["used"] == "onnxruntime"
    assert got.info["backend"]["intra_op_threads"] == got.info["threads"]["threads"] == 1
    assert got.info["backend"]["inter_op_threads"] == 1
    assert want.info["backend"] == {"requested": "torch", "used": "torch", "precision": "fp32"}
    assert got.labels.geometry.isclose(vols[0].geometry, atol_mm=1e-5)
    a, b = np.asarray(want.labels.array), np.asarray(got.labels.array)
    assert (a > 0).mean() > 0.001, "the torch reference finds some structure"
    agree = float((a == b).mean())
    print(f"{name}: onnxruntime vs torch fp32 labels equal on {100 * agree:.4f}% of {a.size} voxels")
    assert agree >= MIN_AGREEMENT
    ver = got.info["backend"]["export"]["verification"]
    assert ver["max_abs_diff"] <= ver["tolerance"]


# ---------------------------------------------------------------------------- export cache
def test_export_is_built_once_then_reused_and_matches_torch(tmp_path):
    pytest.importorskip("onnxruntime", reason=ORT_REASON)
    vol = _volume()
    want = _tiny_segmenter().predict(vol, return_probabilities=True)
    first = _tiny_segmenter(backend="onnxruntime", cache_dir=tmp_path).predict(vol, return_probabilities=True)
    again = _tiny_segmenter(backend="onnxruntime", cache_dir=tmp_path).predict(vol, return_probabilities=True)
    assert first.info["backend"]["export"]["built"] is True
    assert again.info["backend"]["export"]["built"] is False
    assert len(_onnx_files(tmp_path)) == 1
    assert not list(tmp_path.glob("*.tmp")), "no temporary file left behind"
    record = json.loads(next(tmp_path.glob("*.json")).read_text())
    onnx_file = next(tmp_path.glob("*.onnx"))
    assert record["size_bytes"] == onnx_file.stat().st_size
    assert record["key"]["torch"] == torch.__version__
    assert onnx_file.name.startswith(first.info["backend"]["export"]["key"]["model_id"][:16])
    for pred in (first, again):
        np.testing.assert_array_equal(pred.labels.array, want.labels.array)
        np.testing.assert_allclose(pred.probabilities.array, want.probabilities.array, atol=1e-4)


def test_truncated_export_is_rebuilt(tmp_path, capsys):
    pytest.importorskip("onnxruntime", reason=ORT_REASON)
    vol = _volume(1)
    want = _tiny_segmenter().predict(vol).labels.array
    _tiny_segmenter(backend="onnxruntime", cache_dir=tmp_path).predict(vol)
    onnx_file = next(tmp_path.glob("*.onnx"))
    data = onnx_file.read_bytes()
    onnx_file.write_bytes(data[: len(data) // 2])  # a crash or full disk mid-copy
    capsys.readouterr()
    pred = _tiny_segmenter(backend="onnxruntime", cache_dir=tmp_path).predict(vol)
    export = pred.info["backend"]["export"]
    assert export["built"] is True and export["rebuilt_because"].startswith("corrupt")
    assert "rebuilding the ONNX export" in capsys.readouterr().err
    assert onnx_file.read_bytes() == data, "the same export again (deterministic)"
    np.testing.assert_array_equal(pred.labels.array, want)


def test_stale_export_is_not_used(tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxruntime", reason=ORT_REASON)
    vol = _volume(2)
    want = _tiny_segmenter().predict(vol).labels.array
    _tiny_segmenter(backend="onnxruntime", cache_dir=tmp_path).predict(vol)
    old = next(tmp_path.glob("*.onnx"))
    old_bytes, old_mtime = old.read_bytes(), old.stat().st_mtime_ns
    # another onnxruntime version: another file name; the old export is neither used nor touched
    monkeypatch.setattr(ex, "onnxruntime_version", lambda: "0.0.1")
    pred = _tiny_segmenter(backend="onnxruntime", cache_dir=tmp_path).predict(vol)
    export = pred.info["backend"]["export"]
    assert export["built"] is True and export["path"] != old.name and "ort0.0.1" in export["path"]
    assert old.read_bytes() == old_bytes and old.stat().st_mtime_ns == old_mtime
    monkeypatch.undo()
    # a file under the right name whose record names another key (copied from elsewhere): rebuilt
    record_file = old.with_suffix(".json")
    record = json.loads(record_file.read_text())
    record["key"]["model_id"] = "f" * 64
    record_file.write_text(json.dumps(record))
    capsys.readouterr()
    pred = _tiny_segmenter(backend="onnxruntime", cache_dir=tmp_path).predict(vol)
    export = pred.info["backend"]["export"]
    assert export["built"] is True and export["rebuilt_because"].startswith("stale")
    assert "rebuilding" in capsys.readouterr().err
    np.testing.assert_array_equal(pred.labels.array, want)


def test_export_that_disagrees_with_torch_is_refused_with_the_numbers(tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxruntime", reason=ORT_REASON)
    monkeypatch.setattr(ex, "VERIFY_ATOL", -1.0)  # no difference is small enough
    vol = _volume(3)
    want = _tiny_segmenter().predict(vol).labels.array
    pred = _tiny_segmenter(backend="onnxruntime", cache_dir=tmp_path).predict(vol)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "max abs difference" in err[0] and "running the torch backend" in err[0]
    assert pred.info["backend"]["used"] == "torch" and "rejected" in pred.info["backend"]["fallback"]
    assert not _onnx_files(tmp_path) and not list(tmp_path.glob("*.tmp")), "nothing kept in the cache"
    np.testing.assert_array_equal(pred.labels.array, want)


def test_missing_onnxruntime_falls_back_to_torch_with_one_notice(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    vol = _volume(4)
    want = _tiny_segmenter().predict(vol).labels.array
    for backend in ("onnxruntime", "auto"):
        seg = _tiny_segmenter(backend=backend, cache_dir=tmp_path)
        pred = seg.predict(vol)
        seg.predict(vol)  # decided once: no second notice
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and "onnxruntime is not installed" in err[0], err
        assert pred.info["backend"]["used"] == "torch" and seg.backend == "torch"
        np.testing.assert_array_equal(pred.labels.array, want)
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_torch_export_exporter_is_used_where_the_torchscript_one_is_gone(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime", reason=ORT_REASON)
    pytest.importorskip("onnxscript", reason="onnxscript is not installed: torch's dynamo ONNX exporter needs it")
    real = torch.onnx.export
    used = []

    def export(*args, dynamo=True, **kwargs):
        used.append(dynamo)
        if not dynamo:
            raise TypeError("the TorchScript exporter was removed")  # as a future torch might
        return real(*args, dynamo=True, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", export)
    vol = _volume(8)
    want = _tiny_segmenter().predict(vol).labels.array
    pred = _tiny_segmenter(backend="onnxruntime", cache_dir=tmp_path).predict(vol)
    assert used[:2] == [False, True] and pred.info["backend"]["used"] == "onnxruntime"
    export_facts = pred.info["backend"]["export"]
    assert export_facts["verification"]["max_abs_diff"] <= export_facts["verification"]["tolerance"]
    np.testing.assert_array_equal(pred.labels.array, want)


def test_missing_onnx_or_a_failing_exporter_falls_back_with_the_reason(tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxruntime", reason=ORT_REASON)
    vol = _volume(7)
    want = _tiny_segmenter().predict(vol).labels.array
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "onnx", None)
        pred = _tiny_segmenter(backend="onnxruntime", cache_dir=tmp_path).predict(vol)
    err = capsys.readouterr().err
    assert "onnx package is not installed (pip install onnx)" in err and pred.info["backend"]["used"] == "torch"

    def unsupported(*args, **kwargs):
        raise RuntimeError("Exporting the operator 'aten::fancy' to ONNX opset version 17 is not supported")

    monkeypatch.setattr(ex, "_export_file", unsupported)
    pred = _tiny_segmenter(backend="onnxruntime", cache_dir=tmp_path).predict(vol)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "ONNX export failed (RuntimeError: Exporting the operator 'aten::fancy'" in err[0]
    np.testing.assert_array_equal(pred.labels.array, want)
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob("*.tmp"))


def test_backend_options_are_checked():
    from medcnn.errors import ConfigError

    with pytest.raises(ConfigError, match="backend one of torch, onnxruntime, auto"):
        _tiny_segmenter(backend="tensorrt")
    spec = {"name": "unet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [4, 8],
            "strides": [2], "num_res_units": 0}
    with pytest.raises(ConfigError, match="precision 'fp32' or 'auto' with backend 'onnxruntime'"):
        Segmenter(build_network(spec), network=spec, roi_size=(16, 16, 16), device="cpu", precision="bf16",
                  backend="onnxruntime")


# ---------------------------------------------------------------------------- auto
class Sleeper(Executor):
    """A fake executor: ``per_call + per_window x N`` seconds (``per_window`` multiplied by
    ``N`` again when ``batch_penalty``), then zeros of the right shape."""

    def __init__(self, name, *, per_call=0.0, per_window=0.0, batch_penalty=False, out_channels=2):
        self.name, self.per_call, self.per_window = name, per_call, per_window
        self.batch_penalty, self.out_channels, self.calls = batch_penalty, out_channels, 0

    def __call__(self, x):
        n = x.shape[0]
        self.calls += 1
        time.sleep(self.per_call + self.per_window * n * (n if self.batch_penalty else 1))
        return torch.zeros((n, self.out_channels, *x.shape[2:]))


@pytest.mark.parametrize("slow_name", ["torch", "onnxruntime"])
def test_auto_picks_the_fast_executor_whatever_its_name(slow_name):
    fast_name = "onnxruntime" if slow_name == "torch" else "torch"
    cands = {slow_name: Sleeper(slow_name, per_window=0.03), fast_name: Sleeper(fast_name, per_window=0.003)}
    choice = choose_fastest(cands, (1, 8, 8, 8), batches=(1, 2), rounds=3)
    assert choice.backend == fast_name
    assert choice.seconds_per_window[slow_name][1] > 5 * choice.seconds_per_window[fast_name][1]
    assert all(c.calls == 2 * (1 + 3) for c in cands.values()), "one warm-up and three timed calls per batch"
    assert choice.cpu_flags and choice.rounds == 3


def test_auto_compares_each_candidate_at_its_own_best_batch():
    # "batched" pays a fixed 40 ms per call: slow at 1 window (41 ms), fastest at 4 (11 ms/window);
    # "single" gets slower per window as the batch grows: 20 ms at 1 window. Timing both at
    # one common batch of 1 (the bug of the earlier attempt) would pick "single".
    cands = {"single": Sleeper("single", per_window=0.02, batch_penalty=True),
             "batched": Sleeper("batched", per_call=0.04, per_window=0.001)}
    choice = choose_fastest(cands, (1, 8, 8, 8), batches=(1, 2, 4), rounds=3)
    per = choice.seconds_per_window
    assert min(per["single"], key=per["single"].get) == 1
    assert (choice.backend, choice.sw_batch_size) == ("batched", 4)
    assert per["batched"][1] > per["single"][1], "at a common batch of 1 the other would have won"


def test_segmenter_auto_runs_the_fast_candidate_and_records_why(tmp_path, monkeypatch):
    vol = _volume(5)
    want = _tiny_segmenter().predict(vol).labels.array

    class Delayed(Executor):
        def __init__(self, inner, name, delay):
            self.inner, self.name, self.delay, self.calls = inner, name, delay, 0

        def __call__(self, x):
            self.calls += 1
            time.sleep(self.delay * x.shape[0])
            return self.inner(x)

    seg = _tiny_segmenter(backend="auto", cache_dir=tmp_path)
    fast = Delayed(seg._executor, "onnxruntime", 0.0)  # the same torch network, under the other name
    seg._executor = Delayed(seg._executor, "torch", 0.02)
    from medcnn.inference.backend_choice import BackendChoice

    monkeypatch.setattr(BackendChoice, "onnx_executor", lambda self, notice: (fast, {"export": {"key": "fake"}}))
    pred = seg.predict(vol)
    auto = pred.info["backend"]["auto"]
    assert pred.info["backend"]["used"] == "onnxruntime" == auto["backend"] == seg.backend
    assert pred.info["sw_batch_size"] == auto["sw_batch_size"] in (1, 2, 4)
    assert auto["cpu_flags"] == ex.cpu_flags() and auto["threads"] == 1
    assert set(auto["seconds_per_window"]) == {"torch", "onnxruntime"}
    np.testing.assert_array_equal(pred.labels.array, want)
    # the choice is stored for this network, thread count and CPU: a new Segmenter reuses it
    stored = list(tmp_path.glob("auto_*.json"))
    assert len(stored) == 1 and json.loads(stored[0].read_text())["backend"] == "onnxruntime"
    seg2 = _tiny_segmenter(backend="auto", cache_dir=tmp_path)
    slow2 = seg2._executor = Delayed(seg2._executor, "torch", 0.02)
    fast_calls = fast.calls
    pred2 = seg2.predict(vol)
    assert pred2.info["backend"]["auto_from_cache"] == stored[0].name
    assert slow2.calls == 0, "no timing run the second time"
    assert fast.calls - fast_calls == -(-pred2.info["n_windows"] // pred2.info["sw_batch_size"])


def test_torch_executor_is_the_previous_network_call():
    spec = {"name": "unet", "spatial_dims": 2, "in_channels": 1, "out_channels": 3, "channels": [4, 8],
            "strides": [2], "num_res_units": 1, "norm": "instance"}
    torch.manual_seed(1)
    net = build_network(spec).eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.inference_mode():
        got = TorchExecutor(net, device=torch.device("cpu"), precision="fp32",
                            memory_format=torch.channels_last)(x)
        want = net(x.contiguous(memory_format=torch.channels_last)).float()
    assert torch.equal(got, want) and got.dtype == torch.float32


def test_torch_backend_calls_the_segmenters_current_model():
    # callers (the GPU out-of-memory test) wrap seg.model after construction: still honoured
    seg = _tiny_segmenter()
    calls = []

    class Counting(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            calls.append(x.shape[0])
            return self.inner(x)

    seg.model = Counting(seg.model)
    pred = seg.predict(_volume(6))
    assert sum(calls) == pred.info["n_windows"] and pred.info["backend"]["used"] == "torch"


def test_a_given_executor_runs_the_network_and_is_recorded(tmp_path):
    """``Segmenter(executor=...)``: the public way to run a network another way (a quantised
    ONNX file, an importer's runtime) with medcnn's windows, blending and mapping back."""
    reference = _tiny_segmenter()
    calls = []

    class Doubling(Executor):  # 2 x the logits: the same argmax, so the same labels
        name = "doubling"

        def __init__(self, model):
            self.model = model

        def __call__(self, x):
            calls.append(x.shape[0])
            return 2.0 * self.model(x)

    seg = _tiny_segmenter(executor=Doubling(reference.model))
    vol = _volume(8)
    pred = seg.predict(vol)
    assert sum(calls) == pred.info["n_windows"] > 0
    assert pred.info["backend"]["requested"] == "executor" and pred.info["backend"]["used"] == "doubling"
    assert np.array_equal(pred.labels.array, reference.predict(vol).labels.array)
    with pytest.raises(ConfigError, match="either executor or backend"):
        _tiny_segmenter(executor=Doubling(reference.model), backend="onnxruntime")
    with pytest.raises(ConfigError, match="Executor"):
        _tiny_segmenter(executor=lambda x: x)


@pytest.mark.skipif(ex.onnxruntime_version() is None, reason=ORT_REASON)
def test_an_onnx_file_runs_through_a_given_onnxruntime_executor(tmp_path):
    reference = _tiny_segmenter()
    export = ex.onnx_export(reference._export_model, model_id="given-file", spatial_dims=3, in_channels=1,
                            out_channels=3, roi_size=(16, 16, 16), cache_dir=tmp_path)
    seg = _tiny_segmenter(executor=ex.OnnxRuntimeExecutor(export.path), sw_batch_size=1)
    vol = _volume(9)
    pred = seg.predict(vol)
    assert pred.info["backend"]["used"] == "onnxruntime" and pred.info["backend"]["intra_op_threads"] == 1
    agree = float((pred.labels.array == reference.predict(vol).labels.array).mean())
    assert agree >= MIN_AGREEMENT


@pytest.mark.skipif(ex.onnxruntime_version() is None, reason=ORT_REASON)
def test_whole_slice_refuses_an_export_limited_to_roi_size_windows(tmp_path, monkeypatch, capsys):
    """An export whose spatial axes are fixed cannot run whole slices: torch runs, and why is said."""
    spec = {"name": "unet", "spatial_dims": 2, "in_channels": 1, "out_channels": 3, "channels": [4, 8],
            "strides": [2], "num_res_units": 1, "norm": "instance"}
    torch.manual_seed(2)
    net = build_network(spec)
    fixed = ex.OnnxExport(tmp_path / "x.onnx", {}, True, None, {}, False)
    monkeypatch.setattr(ex, "onnx_export", lambda *a, **k: fixed)
    seg = Segmenter(net, network=spec, roi_size=(16, 16), device="cpu", precision="fp32", threads=1,
                    backend="onnxruntime", cache_dir=tmp_path, whole_slice=True)
    g = Geometry((20, 18, 3), (1.0, 1.0, 5.0))
    pred = seg.predict(Volume(np.random.default_rng(0).normal(size=g.shape).astype(np.float32), g))
    info = pred.info["backend"]
    assert info["used"] == "torch" and "whole_slice needs any size" in info["fallback"]
    assert "backend onnxruntime not used" in capsys.readouterr().err


# ---------------------------------------------------------------------------- CLI
@pytest.mark.realdata
def test_cli_segment_backend_onnxruntime_end_to_end(tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxruntime", reason=ORT_REASON)
    from medcnn.cli import main

    monkeypatch.setenv("MEDCNN_CACHE", str(tmp_path / "cache"))
    scan = require_shared_data("hippocampus", "imagesTr", "hippocampus_053.nii.gz")
    out = tmp_path / "out"
    rc = main(["segment", str(scan), "--model", "hippocampus-mri", "--out", str(out), "--device", "cpu",
               "--precision", "fp32", "--threads", "1", "--backend", "onnxruntime"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "onnxruntime" in captured.out  # the per-case line names the backend
    labels = read_volume(out / "hippocampus_053_labels.nii.gz", kind="label")
    image = read_volume(scan)
    assert labels.geometry.isclose(image.geometry, atol_mm=1e-5)
    want = Segmenter.from_bundle("hippocampus-mri", device="cpu", precision="fp32", threads=1).predict(image)
    assert float((np.asarray(labels.array) == np.asarray(want.labels.array)).mean()) >= MIN_AGREEMENT
    prov = json.loads((out / "segment_provenance.json").read_text())
    assert prov["settings"]["backend"] == "onnxruntime"
    case = prov["cases"][0]
    assert case["backend"]["used"] == "onnxruntime" and case["backend"]["intra_op_threads"] == 1
    assert list((tmp_path / "cache" / "onnx").glob("*.onnx")), "the export lives in $MEDCNN_CACHE/onnx"
    assert str(tmp_path) not in json.dumps(case["backend"]), "no cache path (user name) in provenance"


def test_cli_rejects_an_unknown_backend(capsys):
    from medcnn.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["segment", "x.nii.gz", "--model", "hippocampus-mri", "--out", "o", "--backend", "tensorrt"])
    assert exc.value.code == 2
    assert "invalid choice: 'tensorrt'" in capsys.readouterr().err


@pytest.mark.realdata
def test_cli_run_backend_onnxruntime_records_it_in_the_case_provenance(tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxruntime", reason=ORT_REASON)
    from medcnn.cli import main

    monkeypatch.setenv("MEDCNN_CACHE", str(tmp_path / "cache"))
    scan = require_shared_data("hippocampus", "imagesTr", "hippocampus_056.nii.gz")
    out = tmp_path / "out"
    rc = main(["run", str(scan), "--model", "hippocampus-mri", "--out", str(out), "--device", "cpu",
               "--precision", "fp32", "--threads", "1", "--backend", "onnxruntime", "--no-figures",
               "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    result = json.loads(next(out.glob("cases/*/result.json")).read_text())
    backend = result["provenance"]["inference"]["backend"]
    assert backend["used"] == "onnxruntime" and backend["intra_op_threads"] == 1
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["backend"] == "onnxruntime"


def test_backend_is_part_of_the_batch_config_hash_only_when_not_torch():
    from medcnn.batch.runner import BatchSettings

    base = dict(model="m", model_name="m", model_sha256="0" * 64, labels={0: "bg"}, out="o")
    plain, torch_, ort = (BatchSettings(**base), BatchSettings(**base, backend="torch"),
                          BatchSettings(**base, backend="onnxruntime"))
    assert plain.config_hash == torch_.config_hash  # results computed before backends existed stay valid
    assert ort.config_hash != plain.config_hash and ort.config()["backend"] == "onnxruntime"
