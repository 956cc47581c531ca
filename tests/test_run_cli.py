"""`medcnn run`, `medcnn models`, `medcnn demo`: exit codes, messages, Ctrl-C + resume in a
real subprocess, and (slow) the real-data end-to-end runs with the trained bundles."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from dicom_factory import write_series
from test_batch_support import blob_scan, make_bundle

from medcnn.batch import bundle_info
from medcnn.cli import main
from medcnn.io import write_volume

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("cli") / "tiny-cardiac")


def test_run_reports_failures_with_exit_code_2(bundle, tmp_path, capsys):
    good = tmp_path / "good.nii.gz"
    write_volume(blob_scan(), good)
    (tmp_path / "bad.nii.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 16), np.float32), np.eye(4)), str(flat))
    rc = main(["run", str(good), str(tmp_path / "bad.nii.gz"), str(flat), "--model", str(bundle),
               "--out", str(tmp_path / "out"), "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 2
    assert "1 ok, 2 failed" in cap.out
    assert f"report: {tmp_path / 'out' / 'report.html'}" in cap.out
    assert "bad: failed:" in cap.err and "flat: failed:" in cap.err
    assert (tmp_path / "out" / "report.html").is_file()


def test_run_bad_model_is_one_line_exit_2(tmp_path, capsys):
    write_volume(blob_scan(), tmp_path / "a.nii.gz")
    rc = main(["run", str(tmp_path / "a.nii.gz"), "--model", "no-such-model", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "expected a default model name or a bundle folder" in err and "no-such-model" in err
    assert not (tmp_path / "o").exists()


def _tmp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp" in p.name]


def test_ctrl_c_in_a_subprocess_then_rerun_resumes(bundle, tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    for i in range(6):
        write_volume(blob_scan(seed=i, radius=4.0 + i / 3), scans / f"c{i:02d}.nii.gz")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "medcnn", "run", str(scans), "--model", str(bundle), "--out", str(out),
           "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    first = out / "cases" / "c00" / "result.json"
    deadline = time.monotonic() + 120
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert first.exists(), proc.communicate()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, (stdout, stderr)
    assert "interrupted" in stderr and "rerun the same command to resume" in stderr
    assert _tmp_files(out) == []
    finished = sorted(p.parent.name for p in (out / "cases").glob("*/result.json"))
    assert "c00" in finished and len(finished) < 6
    for name in finished:  # every finished case is complete
        assert (out / "cases" / name / f"{name}_labels.nii.gz").is_file()
    mtimes = {p: p.stat().st_mtime_ns for n in finished for p in (out / "cases" / n).iterdir()}

    rerun = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"6 ok, 0 failed ({len(finished)} skipped (up to date)" in rerun.stdout
    cases = pd.read_csv(out / "cases.csv")
    assert cases.set_index("case_id").loc[finished, "status"].eq("skipped").all()
    assert (cases["status"] == "ok").sum() == 6 - len(finished)
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # finished cases untouched


@pytest.fixture
def installed_bundles(bundle, tmp_path, monkeypatch):
    """Pretend ``bundle`` is a default bundle named tiny-cardiac (packaged bundles untouched)."""
    import shutil

    from medcnn.models import defaults as bundles

    root = tmp_path / "bundles"
    shutil.copytree(bundle, root / "tiny-cardiac")
    monkeypatch.setattr(bundles, "default_bundles_dir", lambda: root)
    return root


def test_models_list_and_named_model(installed_bundles, tmp_path, capsys):
    assert main(["models", "list"]) == 0
    listed = capsys.readouterr().out
    assert [ln.split()[0] for ln in listed.splitlines() if not ln.startswith("(")] == ["tiny-cardiac"]  # one line
    assert "MRI -> LV blood pool" in listed and "weights ok" in listed
    assert main(["models", "show", "tiny-cardiac"]) == 0
    out = capsys.readouterr().out
    info = bundle_info(installed_bundles / "tiny-cardiac")
    assert "tiny-cardiac" in out and "1=LV blood pool" in out and "channels    MRI" in out
    assert info.sha256 in out and "(ok)" in out and "dice_mean=0.5" in out
    assert "tta axes    not recorded" in out and "postprocess none" in out  # the tiny bundle records neither
    assert main(["models", "list", "--json"]) == 0
    d = json.loads(capsys.readouterr().out.splitlines()[0])
    assert d["sha256"] == info.sha256 and d["sha256_check"] == "ok" and d["task"] == "cardiac"
    # the sha256 shown is the file's
    import hashlib

    assert hashlib.sha256((installed_bundles / "tiny-cardiac" / "model.safetensors").read_bytes()).hexdigest() \
        == info.sha256
    # tampered weights are flagged
    w = installed_bundles / "tiny-cardiac" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-1] + b"\0")
    main(["models", "show", "tiny-cardiac"])
    assert "MISMATCH" in capsys.readouterr().out
    # --model NAME resolves to the default bundle (and a tampered one is refused when run)
    write_volume(blob_scan(), tmp_path / "a.nii.gz")
    rc = main(["run", str(tmp_path / "a.nii.gz"), "--model", "tiny-cardiac", "--out", str(tmp_path / "o"),
               "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 2 and "sha256" in cap.err


def test_models_list_without_bundles(tmp_path, monkeypatch, capsys):
    from medcnn.models import defaults as bundles

    monkeypatch.setattr(bundles, "default_bundles_dir", lambda: None)
    assert main(["models", "list"]) == 0
    assert "no default model bundles installed" in capsys.readouterr().out


def test_demo_without_shared_data_exits_2(tmp_path, monkeypatch, capsys):
    import medcnn._testing

    monkeypatch.setattr(medcnn._testing, "shared_data_dir", lambda environ=None: None)
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err
    assert "shared sample data was not found" in err and "MEDCNN_DATA" in err


def test_demo_on_a_small_synthetic_data_tree(bundle, tmp_path, monkeypatch, capsys):
    data = tmp_path / "data" / "sunnybrook"
    write_series(data / "dicom" / "SCDX", n_slices=6, rows=20, cols=18, spacing=(1.4, 1.4), dz=8.0, frames=3)
    for ph, r in (("ED", 7.0), ("ES", 5.0)):
        scan = blob_scan(seed=2, radius=r)
        write_volume(scan, data / "nifti" / f"SCDY_{ph}.nii.gz")
        write_volume(scan.with_array((scan.array > 300).astype(np.uint8), kind="label"),
                     data / "nifti" / f"SCDY_{ph}_gt.nii.gz")
    monkeypatch.setenv("MEDCNN_DATA", str(tmp_path / "data"))
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--model", str(bundle), "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert f"report: {(out / 'report.html').resolve()}" in cap.out
    card = pd.read_csv(out / "cardiac.csv")
    assert sorted(card["case_id"]) == ["SCDX", "SCDY_pair"]
    vols = pd.read_csv(out / "volumes.csv")
    assert vols[vols.case_id == "SCDY_pair"]["reference_volume_ml"].notna().all()


# ------------------------------------------------------------------------- real data, trained bundles
def _require_bundle(name: str):
    from medcnn.batch import bundled_names

    if name not in bundled_names():
        pytest.skip(f"default bundle {name!r} not installed (train it: medcnn/bundles/{name} is absent)")
    return name


@pytest.mark.slow
def test_make_demo_prints_where_the_report_is(tmp_path):
    from medcnn._testing import require_shared_data

    require_shared_data("sunnybrook")
    _require_bundle("cardiac-lv-cine-mri")
    medcnn_exe = Path(sys.executable).with_name("medcnn")
    cmd = [str(medcnn_exe) if medcnn_exe.exists() else sys.executable] + ([] if medcnn_exe.exists() else
                                                                          ["-m", "medcnn"])
    res = subprocess.run(cmd + ["demo", "--out", str(tmp_path / "demo"), "--no-progress"], capture_output=True,
                         text=True, cwd=REPO, timeout=1800)
    assert res.returncode == 0, res.stderr
    assert f"report: {(tmp_path / 'demo' / 'report.html').resolve()}" in res.stdout
    card = pd.read_csv(tmp_path / "demo" / "cardiac.csv")
    assert len(card) == 5 and card["lv_ef_percent"].between(0, 100).all()


@pytest.mark.slow
def test_sunnybrook_end_to_end_ef_table(tmp_path):
    from medcnn._testing import require_shared_data

    sb = require_shared_data("sunnybrook")
    model = _require_bundle("cardiac-lv-cine-mri")
    lines = ["case_id,ed,es,ed_label,es_label"]
    for ed in sorted((sb / "nifti").glob("*_ED.nii.gz")):
        pid = ed.name[:-len("_ED.nii.gz")]
        lines.append(f"{pid},{ed},{ed.with_name(pid + '_ES.nii.gz')},{ed.with_name(pid + '_ED_gt.nii.gz')},"
                     f"{ed.with_name(pid + '_ES_gt.nii.gz')}")
    (tmp_path / "pairs.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    rc = main(["run", str(sb / "dicom" / "SCD0000101"), str(tmp_path / "pairs.csv"), "--model", model,
               "--out", str(out), "--mode", "cardiac", "--no-progress"])
    assert rc == 0
    card = pd.read_csv(out / "cardiac.csv").set_index("case_id")
    assert sorted(card.index) == ["SCD0000101", "SCD0000101-2", "SCD0000201", "SCD0000301", "SCD0000401"]
    assert len(card) == 5
    assert card["lv_ef_percent"].between(0, 100).all()
    assert (card["lv_edv_ml"] > card["lv_esv_ml"]).all()
    ref = {r["patient_id"]: r for r in json.loads((sb / "reference.json").read_text())}
    for pid, row in card.iterrows():
        r = ref[pid.split("-")[0]]
        print(f"{pid}: EF {row.lv_ef_percent:.1f}% (reference {r['EF_percent_from_contours']:.1f}%), "
              f"EDV {row.lv_edv_ml:.0f} mL (reference {r['ED']['LV_bloodpool_mL']:.0f} mL)")
    report = json.loads((out / "report.json").read_text())
    for rec in report["cases"]:
        assert (out / rec["outputs"]["overlay"]).is_file()
    assert (out / report["cases"][0]["outputs"]["curve"]).is_file()


@pytest.mark.slow
def test_brats_end_to_end_tumour_volume_table(tmp_path):
    from medcnn._testing import require_shared_data

    br = require_shared_data("brats2015")
    model = _require_bundle("brain-tumour-mri")
    channels = bundle_info(model).channels

    def column_file(ch: str) -> str:
        return "Flair_subtrMeanDivStd.nii.gz" if "flair" in ch.lower() else "T1c_subtrMeanDivStd.nii.gz"

    lines = ["case_id," + ",".join(channels) + ",label"]
    for case in sorted(p for p in br.iterdir() if p.is_dir()):
        lines.append(f"{case.name}," + ",".join(str(case / column_file(c)) for c in channels)
                     + f",{case / 'OTMultiClass.nii.gz'}")
    (tmp_path / "brats.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    rc = main(["run", str(tmp_path / "brats.csv"), "--model", model, "--out", str(out), "--mode", "tumour",
               "--no-progress"])
    assert rc == 0
    vols = pd.read_csv(out / "volumes.csv")
    assert sorted(vols["case_id"].unique()) == sorted(p.name for p in br.iterdir() if p.is_dir())
    assert vols["reference_volume_ml"].notna().all() and (vols["volume_ml"] >= 0).all()
    assert len(pd.read_csv(out / "lesions.csv")) >= 4
    for rec in json.loads((out / "report.json").read_text())["cases"]:
        assert (out / rec["outputs"]["overlay"]).is_file()


# ------------------------------------------------------------------------- the tumour demo
def test_tumour_demo_without_brats_data_exits_2(tmp_path, monkeypatch, capsys):
    (tmp_path / "data" / "sunnybrook").mkdir(parents=True)  # data without brats2018/
    monkeypatch.setenv("MEDCNN_DATA", str(tmp_path / "data"))
    assert main(["demo", "--tumour", "--out", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err
    assert "brats2018" in err and "MEDCNN_DATA" in err
    assert not (tmp_path / "demo").exists(), "no partial output"


def test_tumour_demo_line_gives_three_regions_beside_the_experts():
    from medcnn.cli.demo import tumour_line

    vols = [{"label": 1, "label_name": "necrosis_non_enhancing", "volume_ml": 4.0},
            {"label": "1+2+4", "label_name": "whole_tumour", "volume_ml": 39.836, "reference_volume_ml": 39.772,
             "dice": 0.9129},
            {"label": "1+4", "label_name": "tumour_core", "volume_ml": 10.592, "reference_volume_ml": 9.557,
             "dice": 0.8949},
            {"label": "4", "label_name": "enhancing_tumour", "volume_ml": 6.545, "reference_volume_ml": 6.159,
             "dice": 0.8075}]
    line = tumour_line({"case_id": "Brats18_X_1", "volumes": vols})
    assert "WT   39.8 mL (experts   39.8, Dice 0.91)" in line
    assert "TC   10.6 mL (experts    9.6, Dice 0.89)" in line
    assert "ET    6.5 mL (experts    6.2, Dice 0.81)" in line
    assert line.index("WT") < line.index("TC") < line.index("ET")


@pytest.mark.realdata
def test_tumour_demo_volumes_are_the_written_label_maps_and_the_experts(tmp_path, capsys):
    """`medcnn demo --tumour`: every printed region volume is a nibabel voxel count of the label
    map it wrote (model) and of the BraTS seg file (experts), and the note says the model
    trained on these cases."""
    import re

    from medcnn._testing import require_shared_data

    root = require_shared_data("brats2018")
    _require_bundle("brain-tumour-mri-4seq")
    out = tmp_path / "demo"
    rc = main(["demo", "--tumour", "--out", str(out), "--no-progress", "--threads", "2"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "training-set regression check" in printed  # the shipped weights trained on all 8 patients
    regions = {"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)}
    lines = [ln for ln in printed.splitlines() if ln.startswith("  Brats18_")]
    assert len(lines) == 2
    for ln in lines:
        cid = ln.split()[0]
        pred_img = nib.load(out / "cases" / cid / f"{cid}_labels.nii.gz")
        pred = np.asarray(pred_img.dataobj)
        ref = np.asarray(nib.load(root / cid / f"{cid}_seg.nii.gz").dataobj)
        vox = float(np.prod(pred_img.header.get_zooms()[:3])) / 1000
        for short, values in regions.items():
            m = re.search(rf"{short}\s+([\d.]+) mL \(experts\s+([\d.]+), Dice ([\d.]+)\)", ln)
            assert m, (short, ln)
            assert float(m.group(1)) == pytest.approx(np.isin(pred, values).sum() * vox, abs=0.051)
            assert float(m.group(2)) == pytest.approx(np.isin(ref, values).sum() * vox, abs=0.051)
            p, r = np.isin(pred, values), np.isin(ref, values)
            assert float(m.group(3)) == pytest.approx(2 * (p & r).sum() / (p.sum() + r.sum()), abs=0.006)
