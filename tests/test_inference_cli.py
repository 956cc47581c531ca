"""`medcnn segment`: outputs in the input's format and geometry, channels, per-case errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medcnn.cli import main
from medcnn.io import read_volume, write_volume
from medcnn.models import build_network, save_bundle
from medcnn.preprocess import PreprocessSpec
from medcnn.volume import Geometry, Volume


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny networks: fastest on one thread


def _tiny_unet(in_channels: int) -> tuple[torch.nn.Module, dict]:
    """A tiny seeded registry UNet (random weights, deterministic, fast)."""
    spec = {"name": "unet", "in_channels": in_channels, "out_channels": 2, "channels": [2, 2], "strides": [1],
            "kernel_size": 1, "up_kernel_size": 1, "num_res_units": 0, "act": "relu", "norm": "batch"}
    torch.manual_seed(0)
    return build_network(spec), spec


@pytest.fixture
def bundle(tmp_path):
    net, spec = _tiny_unet(1)
    pre = PreprocessSpec(orientation="RAS", target_spacing=(1.5, 1.5, 2.0), modalities=("MR",))
    return save_bundle(net, tmp_path / "bundle", network=spec, preprocess=pre, roi_size=(16, 16, 16),
                       labels={0: "background", 1: "thing"}, channels=["MR"])


def _scan(path, geometry: Geometry, seed: int = 0):
    rng = np.random.default_rng(seed)
    arr = rng.normal(100, 20, geometry.shape).astype(np.float32)
    return write_volume(Volume(arr, geometry), path)


GEOMS = [
    Geometry((20, 18, 9), (0.9, 0.9, 3.0), (10.0, -20.0, 5.0), tuple(map(tuple, np.diag([-1.0, -1.0, 1.0])))),
    Geometry((16, 22, 12), (1.2, 1.0, 1.5), (0.0, 0.0, 0.0)),
]


def test_segment_writes_labels_on_each_input_grid_in_its_format(tmp_path, bundle, capsys):
    a = _scan(tmp_path / "in" / "a.nii.gz", GEOMS[0])
    b = _scan(tmp_path / "in" / "b.nrrd", GEOMS[1], seed=1)
    out = tmp_path / "out"
    rc = main(["segment", str(a), str(b), "--model", str(bundle), "--out", str(out), "--device", "cpu",
               "--precision", "fp32", "--probabilities", "--tta-axes", "0"])
    assert rc == 0, capsys.readouterr().err
    la = read_volume(out / "a_labels.nii.gz", kind="label")
    lb = read_volume(out / "b_labels.nrrd", kind="label")
    for lab, src in ((la, a), (lb, b)):
        scan = read_volume(src)
        assert lab.geometry.isclose(scan.geometry, atol_mm=1e-5)
        np.testing.assert_allclose(lab.affine, scan.affine, atol=1e-5)
    prob = read_volume(out / "a_probabilities.nii.gz", kind="probability")
    assert prob.shape == (2,) + GEOMS[0].shape
    assert sorted(p.name for p in out.iterdir()) == ["a_labels.nii.gz", "a_probabilities.nii.gz",
                                                      "b_labels.nrrd", "b_probabilities.nrrd",
                                                      "segment_provenance.json"]
    import json

    from medcnn.models import load_bundle
    from medcnn.report.provenance import volume_hash

    prov = json.loads((out / "segment_provenance.json").read_text())
    b = load_bundle(bundle)
    assert prov["model"]["sha256"] == b.sha256 and prov["model"]["spec_sha256"] == b.spec_sha256
    assert prov["medcnn_version"] and prov["settings"]["tta_request"] == "axes"
    assert [c["status"] for c in prov["cases"]] == ["ok", "ok"]
    assert prov["cases"][0]["input_hashes"] == [volume_hash(read_volume(a))]  # independent recomputation
    assert prov["cases"][1]["outputs"][0].endswith("b_labels.nrrd")
    steps = prov["cases"][0]["timings_s"]  # where the time went, per step
    assert {"preprocess", "network", "to_input_grid", "total"} <= set(steps) and steps["total"] > 0


def test_tta_flag_alone_mirrors_the_bundles_trained_axes(tmp_path, capsys):
    from medcnn.cli.segment import parse_tta_axes
    from medcnn.errors import ConfigError

    assert parse_tta_axes("") == () and parse_tta_axes("none") == () and parse_tta_axes("2, 0") == (0, 2)
    assert parse_tta_axes("Trained") == "trained" and parse_tta_axes("all") == "all"
    for bad in ("3", "x", "0,sideways"):
        with pytest.raises(ConfigError):
            parse_tta_axes(bad)
    net, spec = _tiny_unet(1)
    pre = PreprocessSpec(orientation="RAS", modalities=("MR",))
    path = save_bundle(net, tmp_path / "mirrored", network=spec, preprocess=pre, roi_size=(16, 16, 16),
                       labels={0: "background", 1: "thing"}, channels=["MR"], mirror_axes=[1])
    scan = _scan(tmp_path / "a.nii.gz", GEOMS[1])
    rc = main(["segment", str(scan), "--model", str(path), "--out", str(tmp_path / "out"), "--device", "cpu",
               "--tta"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "tta_axes=(1,)" in cap.err and "TTA mirror axes [1]" in cap.out


def test_csv_manifest_rows_are_multi_channel_cases_named_by_case_id(tmp_path, capsys):
    net, spec = _tiny_unet(2)
    pre = PreprocessSpec(orientation="RAS", modalities=("MR", "MR"))
    path = save_bundle(net, tmp_path / "two", network=spec, preprocess=pre, roi_size=(16, 16, 16),
                       labels={0: "background", 1: "thing"}, channels=["FLAIR", "T1c"])
    scans = tmp_path / "scans"
    _scan(scans / "p1_flair.nii.gz", GEOMS[0])
    _scan(scans / "p1_t1c.nii.gz", GEOMS[0], seed=1)
    _scan(scans / "p2_flair.nrrd", GEOMS[1])
    _scan(scans / "p2_t1c.nrrd", GEOMS[1], seed=1)
    _scan(scans / "p3_t1c.nii.gz", GEOMS[1])              # a different grid from p3's FLAIR
    _scan(scans / "p3_flair.nii.gz", GEOMS[0])
    manifest = tmp_path / "cases.csv"
    manifest.write_text("case_id,t1c,flair\n"               # column order and case do not matter
                        "pat-1,scans/p1_t1c.nii.gz,scans/p1_flair.nii.gz\n"
                        "pat-2,scans/p2_t1c.nrrd,scans/p2_flair.nrrd\n"
                        "pat-3,scans/p3_t1c.nii.gz,scans/p3_flair.nii.gz\n"
                        "pat-4,,scans/p1_flair.nii.gz\n")
    out = tmp_path / "out"
    rc = main(["segment", str(manifest), "--model", str(path), "--out", str(out), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "segmented 2 of 4 case(s); 2 failed" in err
    assert sorted(p.name for p in out.iterdir()) == ["pat-1_labels.nii.gz", "pat-2_labels.nrrd",
                                                      "segment_provenance.json"]
    import json

    cases = json.loads((out / "segment_provenance.json").read_text())["cases"]
    assert [c["status"] for c in cases] == ["ok", "ok", "error", "error"]
    assert len(cases[0]["input_hashes"]) == 2 and "empty cell" in cases[3]["error"]
    for cid, flair in (("pat-1", "p1_flair.nii.gz"), ("pat-2", "p2_flair.nrrd")):
        lab = read_volume(next(out.glob(f"{cid}_labels.*")), kind="label")
        assert lab.geometry.isclose(read_volume(scans / flair).geometry, atol_mm=1e-5)
    assert "pat-3" in err and "grid" in err           # mismatched channels named
    assert "pat-4" in err and "empty cell" in err       # a missing channel path named


def test_a_bad_case_prints_one_line_and_the_others_continue(tmp_path, bundle, capsys):
    good = _scan(tmp_path / "good.nii.gz", GEOMS[1])
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"\x1f\x8b\x08\x00 truncated")
    missing = tmp_path / "missing.nii.gz"
    out = tmp_path / "out"
    rc = main(["segment", str(corrupt), str(good), str(missing), "--model", str(bundle), "--out", str(out),
               "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 2 and "corrupt.nii.gz" in errors[0] and "missing.nii.gz" in errors[1]
    assert "Traceback" not in err
    # nothing partial for the bad ones; the provenance log names them
    assert sorted(p.name for p in out.iterdir()) == ["good_labels.nii.gz", "segment_provenance.json"]
    import json

    log = json.loads((out / "segment_provenance.json").read_text())["cases"]
    assert [c["status"] for c in log] == ["error", "ok", "error"]
    assert log[0]["error_type"] == "CorruptFileError" and "outputs" not in log[0]


def test_bad_bundle_is_one_error_line(tmp_path, capsys):
    good = _scan(tmp_path / "good.nii.gz", GEOMS[1])
    rc = main(["segment", str(good), "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "nope" in err


def test_multichannel_cases_from_folders_and_channel_lists(tmp_path, capsys):
    net, spec = _tiny_unet(2)
    pre = PreprocessSpec(orientation=None, modalities=("none", "none"))
    bdir = save_bundle(net, tmp_path / "b2", network=spec, preprocess=pre, roi_size=(8, 8, 8),
                       labels={0: "bg", 1: "fg"}, channels=["FLAIR", "T1c"])
    g = GEOMS[1]
    case = tmp_path / "case1"
    f = _scan(case / "case1_flair.nii.gz", g, seed=2)
    t = _scan(case / "case1_t1c.nii.gz", g, seed=3)
    other = tmp_path / "x"
    f2 = _scan(other / "x_flair.mha", g, seed=4)
    t2 = _scan(other / "x_t1c.mha", g, seed=5)
    out = tmp_path / "out"
    rc = main(["segment", "--channels", str(case), "--channels", f"{f2},{t2}", "--model", str(bdir), "--out",
               str(out), "--device", "cpu", "--precision", "fp32"])
    assert rc == 0, capsys.readouterr().err
    assert (out / "case1_labels.nii.gz").exists() and (out / "x_flair_labels.mha").exists()
    # the folder case equals the explicit channel list of the same files
    rc = main(["segment", "--channels", f"{f},{t}", "--model", str(bdir), "--out", str(tmp_path / "out2"),
               "--device", "cpu", "--precision", "fp32"])
    assert rc == 0
    a = read_volume(out / "case1_labels.nii.gz", kind="label").array
    b = read_volume(tmp_path / "out2" / "case1_flair_labels.nii.gz", kind="label").array
    assert np.array_equal(a, b)
    # wrong number of channels, and a single image for a 2-channel model: error lines, exit 2
    rc = main(["segment", "--channels", str(f), str(f), "--model", str(bdir), "--out", str(tmp_path / "o3"),
               "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "expected 2 channel files" in err and "--channels FOLDER with one image per channel" in err
    # the channel folder given as SCANS reads two ways: refused, naming both readings and how to choose
    rc = main(["segment", str(case), "--model", str(bdir), "--out", str(tmp_path / "o4"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and len([ln for ln in err.splitlines() if "error:" in ln]) == 1
    assert "a folder of scans (each image file one case" in err and "one 2-channel case" in err
    assert "FLAIR=case1_flair.nii.gz" in err and f"--channels {case}" in err and "case_id,FLAIR,T1c" in err
    assert not (tmp_path / "o4" / "case1_labels.nii.gz").exists()
    # a folder of several cases' files: each file is a case, which a 2-channel model cannot run alone
    mixed = tmp_path / "mixed"
    for i in range(2):
        _scan(mixed / f"p{i}_flair.nii.gz", g, seed=i)
    rc = main(["segment", str(mixed), "--model", str(bdir), "--out", str(tmp_path / "o5"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("p0_flair.nii.gz") >= 1 and "p1_flair.nii.gz" in err
    assert "one column per input channel" in err


def test_a_folder_of_image_files_segments_each_file_as_run_does(tmp_path, bundle, capsys):
    folder = tmp_path / "scans"
    a = _scan(folder / "a.nii.gz", GEOMS[0])
    b = _scan(folder / "b.nrrd", GEOMS[1], seed=1)
    (folder / "notes.txt").write_text("not an image: ignored, as by medcnn run")
    c = _scan(folder / "sub" / "c.mha", GEOMS[1], seed=2)
    out = tmp_path / "out"
    rc = main(["segment", str(folder), "--model", str(bundle), "--out", str(out), "--device", "cpu",
               "--precision", "fp32"])
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["a_labels.nii.gz", "b_labels.nrrd", "segment_provenance.json"]
    # the same labels as segmenting the files one by one (sub-folders are not searched when files are present,
    # as in medcnn run)
    single = tmp_path / "single"
    assert main(["segment", str(a), str(b), "--model", str(bundle), "--out", str(single), "--device", "cpu",
                 "--precision", "fp32"]) == 0
    for name in ("a_labels.nii.gz", "b_labels.nrrd"):
        assert np.array_equal(read_volume(out / name, kind="label").array,
                              read_volume(single / name, kind="label").array)
    from medcnn.batch.cases import discover_cases

    assert [cs.inputs[0].channels[0][1] for cs in discover_cases([folder])] == [str(a), str(b)]
    # a folder holding only sub-folders: each sub-folder by the same rules
    top = tmp_path / "top"
    _scan(top / "x" / "x1.nii.gz", GEOMS[1], seed=3)
    _scan(top / "y" / "y1.nii.gz", GEOMS[1], seed=4)
    assert main(["segment", str(top), "--model", str(bundle), "--out", str(tmp_path / "o6"), "--device", "cpu"]) == 0
    assert (tmp_path / "o6" / "x1_labels.nii.gz").exists() and (tmp_path / "o6" / "y1_labels.nii.gz").exists()
    assert c.exists()


@pytest.mark.slow
@pytest.mark.realdata
def test_dicom_cine_folder_becomes_4d_nifti(tmp_path, capsys):
    from medcnn._testing import require_shared_data

    dicom = require_shared_data("sunnybrook", "dicom", "SCD0000101")
    net, spec = _tiny_unet(1)
    # keep the stack's own axis order: reorienting this IRP stack puts the 12-slice axis
    # first, and a (256, 256, 16) window would then pad it to 256 (minutes of CPU per frame)
    pre = PreprocessSpec(orientation=None, modalities=("MR",))
    bdir = save_bundle(net, tmp_path / "b", network=spec, preprocess=pre, roi_size=(256, 256, 16),
                       labels={0: "bg", 1: "fg"}, channels=["MR"])
    out = tmp_path / "out"
    rc = main(["segment", str(dicom), "--model", str(bdir), "--out", str(out), "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    lab = read_volume(out / "SCD0000101_labels.nii.gz", kind="label")
    scan = read_volume(dicom)
    assert lab.shape == scan.shape and lab.leading_axis == "time"
    assert lab.geometry.isclose(scan.geometry, atol_mm=1e-4)


def test_a_missing_input_is_reported_before_the_model_loads_and_leaves_no_folder(tmp_path, capsys, monkeypatch):
    """Issue 26 (10): the input path is checked before the model loads (seconds), and a failed
    segment leaves no empty output folder behind."""
    import medcnn.inference

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(medcnn.inference.Segmenter, "from_bundle", classmethod(no_model))
    out = tmp_path / "out"
    rc = main(["segment", str(tmp_path / "typo.nii.gz"), "--model", "cardiac-cine-mri", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "typo.nii.gz" in err[0] and "expected an existing scan" in err[0]
    assert not out.exists()


def test_a_run_that_writes_nothing_removes_the_folder_it_created(tmp_path, bundle, capsys):
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"\x1f\x8b\x08\x00 truncated")
    out = tmp_path / "new" / "out"
    rc = main(["segment", str(corrupt), "--model", str(bundle), "--out", str(out), "--device", "cpu"])
    assert rc == 2 and not out.exists()
    kept = tmp_path / "existing"
    kept.mkdir()
    rc = main(["segment", str(corrupt), "--model", str(bundle), "--out", str(kept), "--device", "cpu"])
    assert rc == 2 and kept.is_dir() and not any(kept.iterdir())  # a folder the user made is left alone
