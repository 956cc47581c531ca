"""Whole-slice inference of 2D models through the CLI and batches: the option, the bundle's
measured default, provenance and the batch's resume hash."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medcnn._testing import require_shared_data
from medcnn.io import read_volume

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_whole_slice_is_part_of_the_batch_config_hash_only_when_on():
    from medcnn.batch.runner import BatchSettings

    base = dict(model="m", model_name="m", model_sha256="0" * 64, labels={0: "bg"}, out="o")
    plain, off, on = (BatchSettings(**base), BatchSettings(**base, whole_slice=False),
                      BatchSettings(**base, whole_slice=True))
    assert plain.config_hash == off.config_hash  # windowed results computed before the option stay valid
    assert on.config_hash != plain.config_hash and on.config()["whole_slice"] is True


def test_whole_slice_of_a_3d_model_stops_the_batch_before_any_case(tmp_path, capsys):
    from medcnn.cli import main

    scan = tmp_path / "scan.nii.gz"  # never read: the option is refused first
    scan.write_bytes(b"")
    rc = main(["run", str(scan), "--model", "hippocampus-mri", "--out", str(tmp_path / "out"), "--whole-slice",
               "--no-progress", "--no-figures"])
    err = capsys.readouterr().err
    assert rc != 0
    assert "--whole-slice only with a 2D model" in err and "3D network" in err
    assert not (tmp_path / "out" / "cases").exists()


@pytest.mark.realdata
def test_cli_whole_slice_on_acdc_agrees_with_windowed_and_is_recorded(tmp_path, capsys):
    """``segment`` and ``run`` with ``--whole-slice`` on a real ACDC frame: recorded in the
    provenance and the batch report, one window per slice, and the labels close to the
    windowed labels (the shipped model's default, whose bundle record keeps whole slices off)."""
    from medcnn.cli import main
    from medcnn.inference import Segmenter

    scan = require_shared_data("acdc", "patient001_ED.nii.gz")
    out = tmp_path / "seg"
    rc = main(["segment", str(scan), "--model", "cardiac-cine-mri", "--out", str(out), "--device", "cpu",
               "--precision", "fp32", "--threads", "1", "--whole-slice"])
    assert rc == 0, capsys.readouterr().err
    prov = json.loads((out / "segment_provenance.json").read_text())
    assert prov["settings"]["whole_slice"] is True
    whole = np.asarray(read_volume(out / "patient001_ED_labels.nii.gz", kind="label").array)
    image = read_volume(scan)
    windowed = Segmenter.from_bundle("cardiac-cine-mri", device="cpu", precision="fp32", threads=1)
    assert windowed.whole_slice is False  # the bundle's record is below the bar
    ref = windowed.predict(image)
    assert ref.info["whole_slice"] == {"used": False}
    ref = np.asarray(ref.labels.array)
    assert whole.shape == ref.shape and (ref > 0).any()
    assert float((whole == ref).mean()) >= 0.98  # close, not equal: why it is not the default

    run_out = tmp_path / "run"
    rc = main(["run", str(scan), "--model", "cardiac-cine-mri", "--out", str(run_out), "--mode", "volumes",
               "--device", "cpu", "--precision", "fp32", "--threads", "1", "--whole-slice", "--no-figures",
               "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    result = json.loads(next(run_out.glob("cases/*/result.json")).read_text())
    inference = result["provenance"]["inference"]
    assert inference["whole_slice"]["used"] is True
    assert inference["n_windows"] == image.shape[2]  # one window per slice
    assert json.loads((run_out / "report.json").read_text())["settings"]["whole_slice"] is True
