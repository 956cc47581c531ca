"""The benchmark scripts run and print their tables (small sizes, one round).

The numbers themselves are not asserted (timings belong in the benchmark output, never in
tests); what is checked is that each script completes and prints the comparison against
its named baseline. ``bench_large_volume.py`` (a 512 x 512 x 300 volume, minutes) is not
run here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(script: str, *args: str, ok=(0,)) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, env=env,
                          timeout=900)
    assert proc.returncode in ok, f"{script} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def test_bench_inference_prints_the_table_against_monai(tmp_path):
    out = _run("bench_inference.py", "--quick", "--small", "--repeats", "1", "--no-memory", "--threads", "1",
               "--train-steps", "3", "--cache-dir", str(tmp_path), "--device", "cpu", ok=(0, 1))
    assert "monai sliding_window_inference fp32 (baseline)" in out
    for row in ("medcnn fp32 contiguous sw1", "medcnn bf16 contiguous sw1", "medcnn auto (defaults)"):
        assert row in out
    # exit 1 only when no configuration reached 99.5% agreement (possible for 3 training steps)
    assert "best medcnn configuration" in out or "no medcnn configuration reached" in out
    assert any(tmp_path.iterdir()), "trained weights cached"


def test_bench_metrics_measure_and_batch_run_small():
    out = _run("bench_metrics.py", "--shape", "48", "48", "24", "--repeats", "1")
    assert "MONAI" in out
    out = _run("bench_measure.py", "--shape", "64", "64", "32", "--lesions", "5", "--repeats", "1")
    assert "baseline" in out.lower()
    out = _run("bench_batch.py", "--cases", "2", "--shape", "32", "32", "16", "--repeats", "1")
    assert "baseline" in out.lower() or "bare" in out.lower()


def test_bench_training_prints_step_time_against_the_network_alone():
    out = _run("bench_training.py", "--steps", "1")
    assert "network alone (baseline)" in out and "whole training step" in out and "CPU hours" in out


@pytest.mark.realdata
def test_calibrate_volume_intervals_prints_the_coverage_table():
    from medcnn._testing import require_shared_data

    require_shared_data("hippocampus")
    out = _run("calibrate_volume_intervals.py", "--bundles", "hippocampus-mri", "--max-cases", "2", "--no-tta",
               "--markdown")
    assert "| bundle | structure | TTA | n | coverage |" in out
    assert "| hippocampus-mri | anterior | off | 2 |" in out


def test_bench_import_nnunet_prints_the_ratio_to_nnunet():
    pytest.importorskip("nnunetv2", reason="nnunetv2 is not installed (scripts/setup_env.sh installs it)")
    out = _run("bench_import_nnunet.py", "--quick", "--repeats", "1")
    assert "nnUNetPredictor (baseline)" in out and "the imported bundle's defaults" in out
    assert "flags:" in out
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return
    assert "medcnn onnxruntime (fp32, 1 window per call)" in out


def test_bench_case_prints_the_breakdown_and_the_monai_comparison():
    out = _run("bench_case.py", "--quick", "--repeats", "1", "--cases", "ct,hippocampus", "--no-memory",
               "--monai-modes", "bilinear")
    assert "case ct-synthetic" in out and "preprocess_resample" in out and "to_input_grid_resample" in out
    assert "share of predict outside net" in out and "voxels interpolated back" in out
    assert "MONAI transform pipeline (Spacingd mode=bilinear)" in out


def test_bench_case_prints_one_column_and_ratio_per_backend(tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: no ONNX Runtime column to print")
    out = _run("bench_case.py", "--quick", "--repeats", "1", "--cases", "ct", "--no-memory", "--monai-modes",
               "bilinear", "--backend", "torch,onnxruntime")
    assert "flags:" in out and "medcnn torch" in out and "medcnn onnxruntime" in out
    assert "x torch case" in out and "x MONAI bilinear" in out
    assert "onnxruntime x1 windows/call" in out


def test_bench_threads_prints_idle_and_busy_against_one_thread_and_torch_defaults():
    from medcnn._testing import shared_data_path

    case = shared_data_path("hippocampus", "imagesTr", "hippocampus_001.nii.gz")
    if case is None or not case.exists():
        pytest.skip("real data not found: set MEDCNN_DATA or place the shared data at ../shared/data")
    out = _run("bench_threads.py", "--model", "hippocampus-mri", "--case", str(case), "--repeats", "1",
               "--rounds", "1")
    assert "flags:" in out and "| medcnn default |" in out and "| --threads 1 |" in out
    assert "default busy / idle:" in out and "labels identical in every configuration: True" in out


def test_bench_int8_prints_agreement_dice_and_speed_against_fp32():
    from medcnn._testing import shared_data_path

    if shared_data_path("hippocampus", "dataset.json") is None:
        pytest.skip("real data not found: set MEDCNN_DATA or place the shared data at ../shared/data")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    out = _run("bench_int8.py", "--models", "hippocampus-mri", "--eval-cases", "1", "--calib-cases", "1",
               "--windows", "2", "--repeats", "1", "--threads", "1")
    assert "flags:" in out and "| `hippocampus-mri` | 1 cases: its selection cases (never trained on) |" in out
    assert "int8 speed-up" in out and "bar met" in out


def test_bench_cine_prints_each_path_against_the_monai_loop():
    from medcnn._testing import shared_data_path

    if shared_data_path("sunnybrook", "dicom", "SCD0000101") is None:
        pytest.skip("real data not found: set MEDCNN_DATA or place the shared data at ../shared/data")
    out = _run("bench_cine.py", "--frames", "1", "--repeats", "1", "--threads", "1", "--no-run",
               "--paths", "default,whole-slice")
    assert "flags:" in out and "vs monai-loop" in out
    for path in ("monai-loop ", "monai-loop-b2", "default ", "whole-slice "):
        assert path in out


def test_bench_whole_slice_records_its_verdict_in_a_bundle_copy(tmp_path):
    import json
    import shutil

    import medcnn
    from medcnn._testing import shared_data_path
    from medcnn.models.bundle import bundle_spec_sha256, whole_slice_default

    if shared_data_path("sunnybrook", "dataset.json") is None:
        pytest.skip("real data not found: set MEDCNN_DATA or place the shared data at ../shared/data")
    bundle = tmp_path / "cardiac-cine-mri"
    shutil.copytree(Path(medcnn.__file__).parent / "bundles" / "cardiac-cine-mri", bundle)
    before = json.loads((bundle / "bundle.json").read_text())
    out = _run("bench_whole_slice.py", "--model", str(bundle), "--limit", "1", "--threads", "1", "--record")
    assert "voxels with equal labels" in out and "recorded in" in out
    after = json.loads((bundle / "bundle.json").read_text())
    rec = after["whole_slice"]
    assert rec["volumes"] == 1 and 90.0 < rec["voxels_equal_percent_min"] <= 100.0
    assert rec["default"] is whole_slice_default(after) is (rec["voxels_equal_percent_min"] >= 99.5)
    assert bundle_spec_sha256(after) == bundle_spec_sha256(before)  # the record does not change the spec
