"""Issue 26 points 3 and 4: folders skip label maps (by name and by content) and list them;
cardiac mode pairs ED/ES scans by file name, the released ACDC ``frameNN`` + ``Info.cfg``
layout and a manifest ``phase`` column, and says loudly when a cardiac run has no function row."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from test_batch_support import blob_scan, make_bundle

from medcnn.batch import discover_cases
from medcnn.batch.cases import SkippedFile, label_map_reason, read_info_cfg
from medcnn.cli import main
from medcnn.io import write_volume


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("fp") / "tiny-cardiac")


# ----------------------------------------------------------------------------- point 3: folders
def test_sunnybrook_folder_skips_the_expert_label_maps_by_name(shared_data):
    folder = shared_data / "sunnybrook" / "nifti"
    skipped: list[SkippedFile] = []
    cases = discover_cases([folder], skipped=skipped)
    on_disk = sorted(p.name for p in folder.glob("*.nii.gz"))
    gts = [n for n in on_disk if n.endswith("_gt.nii.gz")]
    assert len(gts) == 8  # the data as documented in its README
    assert sorted(c.case_id for c in cases) == sorted(n[: -len(".nii.gz")] for n in on_disk if n not in gts)
    assert sorted(s.path.rsplit("/", 1)[-1] for s in skipped) == gts
    assert all("by name" in s.reason for s in skipped)


def test_label_maps_by_content_are_skipped_and_scans_are_not(shared_data, tmp_path):
    """A label map with a neutral name (nnU-Net ``labelsTr`` style, and BraTS 2015's float32
    ``OTMultiClass``) is skipped by content; real int16 (ACDC) and float (hippocampus) MRI are not."""
    acdc = shared_data / "acdc"
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "case_001.nii.gz").symlink_to(acdc / "patient001_ED_gt.nii.gz")  # uint8/int labels 0..3
    (folder / "case_002.nii.gz").symlink_to(shared_data / "brats2015" / "brats_2013_pat0003_1" / "OTMultiClass.nii.gz")
    (folder / "scan_a.nii.gz").symlink_to(acdc / "patient001_ED.nii.gz")
    hippo = sorted((shared_data / "hippocampus").rglob("hippocampus_*.nii.gz"))
    img = next(p for p in hippo if "label" not in str(p.parent).lower())
    (folder / "scan_b.nii.gz").symlink_to(img)
    skipped: list[SkippedFile] = []
    cases = discover_cases([folder], skipped=skipped)
    assert [c.case_id for c in cases] == ["scan_a", "scan_b"]
    assert sorted(s.path.rsplit("/", 1)[-1] for s in skipped) == ["case_001.nii.gz", "case_002.nii.gz"]
    for s in skipped:
        assert "by content" in s.reason
    # the reference: what nibabel sees in the files
    ref = np.asarray(nib.load(str(acdc / "patient001_ED_gt.nii.gz")).dataobj)
    assert f"{np.unique(ref).size} distinct values" in skipped[0].reason
    assert np.unique(np.asarray(nib.load(str(acdc / "patient001_ED.nii.gz")).dataobj)).size > 16


@pytest.mark.parametrize("name, expected", [
    ("SCD0000101_ED_gt.nii.gz", "gt"), ("Brats18_2013_3_1_seg.nii.gz", "seg"), ("case1_labels.nrrd", "labels"),
    ("brainmask.nii.gz", "brainmask"), ("liver-mask.mha", "mask"), ("p1_ED.nii.gz", None),
    ("segmental_scan.nii.gz", None), ("T1_MPRAGE.nii.gz", None)])
def test_label_map_names(name, expected, tmp_path):
    why = label_map_reason(tmp_path / name, read_content=False)
    assert (why is None) if expected is None else (repr(expected) in why)


def test_segment_folder_lists_and_skips_label_maps(bundle, tmp_path, capsys):
    """Before: ``segment FOLDER`` segmented ``*_gt`` files as scans."""
    folder = tmp_path / "scans"
    scan = blob_scan(seed=3)
    write_volume(scan, folder / "p1_ED.nii.gz")
    write_volume(scan.with_array((scan.array > 300).astype(np.uint8), kind="label"), folder / "p1_ED_gt.nii.gz")
    write_volume(scan.with_array((scan.array > 300).astype(np.uint8) * 2, kind="label"), folder / "p2.nii.gz")
    out = tmp_path / "out"
    rc = main(["segment", str(folder), "--model", str(bundle), "--out", str(out)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert sorted(p.name for p in out.glob("*_labels.nii.gz")) == ["p1_ED_labels.nii.gz"]
    assert "skipped p1_ED_gt.nii.gz: label map by name (token 'gt')" in cap.err
    assert "skipped p2.nii.gz: label map by content" in cap.err


# ----------------------------------------------------------------------------- point 4: pairing
def test_acdc_glob_pairs_by_ed_es_names(shared_data):
    cases = discover_cases([str(shared_data / "acdc" / "patient00[145]_E[DS].nii.gz")], pair_phases=True)
    assert [(c.case_id, [ci.phase for ci in c.inputs]) for c in cases] == [
        ("patient001", ["ED", "ES"]), ("patient004", ["ED", "ES"]), ("patient005", ["ED", "ES"])]
    assert cases[0].inputs[0].channels[0][1].endswith("patient001_ED.nii.gz")
    assert cases[0].inputs[1].channels[0][1].endswith("patient001_ES.nii.gz")
    # without pairing (not cardiac mode) each scan stays its own case
    assert len(discover_cases([str(shared_data / "acdc" / "patient00[145]_E[DS].nii.gz")])) == 6


def test_released_acdc_layout_frames_and_info_cfg(shared_data, tmp_path):
    """The ACDC release: ``patientNNN/patientNNN_frameNN.nii.gz`` (+ ``_gt``) and ``Info.cfg``
    (``ED: 1``, ``ES: 12`` ...); the frame numbers are those of the data's dataset.json."""
    acdc = shared_data / "acdc"
    entries = json.loads((acdc / "dataset.json").read_text())["training"]
    for pid in ("patient001", "patient004"):
        frames = {e["phase"]: e for e in entries if e["patient"] == pid}
        d = tmp_path / "training" / pid
        d.mkdir(parents=True)
        for ph in ("ED", "ES"):
            stem = f"{pid}_frame{frames[ph]['frame']:02d}"
            (d / f"{stem}.nii.gz").symlink_to(acdc / f"{pid}_{ph}.nii.gz")
            (d / f"{stem}_gt.nii.gz").symlink_to(acdc / f"{pid}_{ph}_gt.nii.gz")
        e = frames["ED"]
        (d / "Info.cfg").write_text(f"ED: {frames['ED']['frame']}\nES: {frames['ES']['frame']}\nGroup: {e['group']}\n"
                                    f"Height: {e['height_cm']}\nNbFrame: {e['n_frames']}\nWeight: {e['weight_kg']}\n")
        assert read_info_cfg(d / "Info.cfg") == {"ED": frames["ED"]["frame"], "ES": frames["ES"]["frame"]}
    skipped: list[SkippedFile] = []
    cases = discover_cases([tmp_path / "training"], pair_phases=True, skipped=skipped)
    assert [c.case_id for c in cases] == ["patient001", "patient004"]
    for c in cases:
        ed_frame = {e["phase"]: e["frame"] for e in entries if e["patient"] == c.case_id}["ED"]
        assert c.inputs[0].phase == "ED" and c.inputs[0].channels[0][1].endswith(f"_frame{ed_frame:02d}.nii.gz")
        assert c.inputs[1].phase == "ES"
    assert len(skipped) == 4 and all(s.path.endswith("_gt.nii.gz") for s in skipped)


def test_manifest_phase_column_pairs_rows(tmp_path):
    m = tmp_path / "m.csv"
    m.write_text("case_id,image,label,phase\nh1,h1a.nii.gz,h1a_gt.nii.gz,ES\nh1,h1b.nii.gz,,ED\nh2,h2.nii.gz,,\n"
                 "h3,h3.nii.gz,,ED\n")
    cases = discover_cases([m])
    assert [c.case_id for c in cases] == ["h1", "h2", "h3"]
    h1 = cases[0]
    assert [ci.phase for ci in h1.inputs] == ["ED", "ES"]
    assert h1.inputs[0].channels[0][1] == str(tmp_path / "h1b.nii.gz")
    assert h1.inputs[1].reference == str(tmp_path / "h1a_gt.nii.gz")
    assert cases[1].kind == "single" and cases[1].error is None
    assert cases[2].error and "one ED row and one ES row" in cases[2].error


def test_cardiac_run_pairs_by_name_and_says_loudly_when_unpaired(bundle, tmp_path, capsys):
    """Before: ``run x_ED x_ES --mode cardiac`` reported "2 ok", exit 0, and no cardiac row."""
    for ph, r in (("ED", 7.0), ("ES", 5.0)):
        write_volume(blob_scan(seed=2, radius=r), tmp_path / f"x_{ph}.nii.gz")
    write_volume(blob_scan(seed=4), tmp_path / "y.nii.gz")
    out = tmp_path / "o1"
    rc = main(["run", str(tmp_path / "x_ED.nii.gz"), str(tmp_path / "x_ES.nii.gz"), "--model", str(bundle),
               "--out", str(out), "--mode", "cardiac", "--no-progress", "--no-figures"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    card = pd.read_csv(out / "cardiac.csv")
    assert list(card["case_id"]) == ["x"]
    assert "warning" not in cap.err
    # an unpaired scan: a warning on stderr, and exit 2 under --strict
    out2 = tmp_path / "o2"
    rc = main(["run", str(tmp_path / "y.nii.gz"), "--model", str(bundle), "--out", str(out2), "--mode", "cardiac",
               "--no-progress", "--no-figures"])
    cap = capsys.readouterr()
    assert rc == 0
    assert "medcnn run: warning: y: no cardiac function row" in cap.err
    assert "produced no function row for any of 1 case(s)" in cap.err
    rc = main(["run", str(tmp_path / "y.nii.gz"), "--model", str(bundle), "--out", str(out2), "--mode", "cardiac",
               "--no-progress", "--no-figures", "--strict"])
    assert rc == 2
    assert "no function row" in capsys.readouterr().err


@pytest.mark.slow
def test_issue_command_acdc_glob_gives_three_function_rows(shared_data, tmp_path, capsys):
    """The issue's command: ``run patient00[145]_E[DS].nii.gz --mode cardiac`` (before: "6 ok",
    0 cardiac rows) with the shipped cardiac model: three pairs, three function rows."""
    from medcnn.batch import bundled_names

    if "cardiac-cine-mri" not in bundled_names():
        pytest.skip("default bundle 'cardiac-cine-mri' not installed")
    out = tmp_path / "o"
    rc = main(["run", str(shared_data / "acdc" / "patient00[145]_E[DS].nii.gz"), "--model", "cardiac-cine-mri",
               "--out", str(out), "--mode", "cardiac", "--no-progress", "--no-figures", "--strict"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "3 ok, 0 failed" in cap.out and "warning" not in cap.err
    card = pd.read_csv(out / "cardiac.csv")
    assert list(card["case_id"]) == ["patient001", "patient004", "patient005"]
    assert card["lv_edv_ml"].gt(card["lv_esv_ml"]).all()
