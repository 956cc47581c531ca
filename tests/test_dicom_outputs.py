"""``medcnn run --dicom`` / ``medcnn segment --dicom``: a DICOM SEG and an SR TID 1500 per DICOM
series, read back with highdicom (values equal to the CSV report), conformance (dciodvfy),
de-identification, cine / NIfTI inputs flagged, a bad case not stopping the batch."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from dicom_factory import documented_pseudonymous_uid as pseudo_uid
from dicom_factory import voxel_to_lps, write_rtstruct, write_series
from test_batch_support import make_bundle
from medcnn.cli import main
from medcnn.io import read_labels, read_volume, write_volume

hd = pytest.importorskip("highdicom")

SERIES = dict(n_slices=6, rows=20, cols=18, spacing=(1.4, 1.3), dz=6.0)
SECRETS = (b"Privacy^Patient", b"PID-12345", b"19700101", b"ACC-777", b"Ref^Doc")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("dcm") / "tiny-cardiac")


@pytest.fixture(scope="module")
def batch(bundle, tmp_path_factory):
    """One run over: a DICOM series, an ED/ES pair of DICOM series, a cine series, a NIfTI scan and
    a broken case."""
    root = tmp_path_factory.mktemp("batch")
    common = dict(SERIES, patient_name="Privacy^Patient", patient_id="PID-12345")
    write_series(root / "in" / "scan1", series_uid="1.2.3.4.1", shuffle_seed=1, **common)
    write_series(root / "in" / "h1_ED", series_uid="1.2.3.4.2", shuffle_seed=2, **common)
    write_series(root / "in" / "h1_ES", series_uid="1.2.3.4.3", shuffle_seed=3, **common)
    write_series(root / "in" / "cine1", series_uid="1.2.3.4.4", frames=3, **common)
    write_volume(read_volume(root / "in" / "scan1"), root / "in" / "nifti1.nii.gz")
    (root / "in" / "broken").mkdir()
    (root / "in" / "broken" / "x.dcm").write_bytes(b"not dicom")
    # a reference outline for scan1 as an RT Structure Set: 4 x 3 voxels on slice 2
    square = voxel_to_lps([[2.5, 3.5, 2], [6.5, 3.5, 2], [6.5, 6.5, 2], [2.5, 6.5, 2]], spacing=SERIES["spacing"],
                          dz=SERIES["dz"])
    write_rtstruct(root / "ref" / "scan1_RS.dcm", {"LV": [square]}, series_uid="1.2.3.4.1")
    manifest = root / "cases.csv"
    rows = ["case_id,image,ed,es,label", f"scan1,{root / 'in' / 'scan1'},,,{root / 'ref' / 'scan1_RS.dcm'}",
            f"h1,,{root / 'in' / 'h1_ED'},{root / 'in' / 'h1_ES'},", f"cine1,{root / 'in' / 'cine1'},,,",
            f"nifti1,{root / 'in' / 'nifti1.nii.gz'},,,", f"broken,{root / 'in' / 'broken'},,,"]
    manifest.write_text("\n".join(rows) + "\n")
    out = root / "out"
    rc = main(["run", str(manifest), "--model", str(bundle), "--out", str(out), "--dicom", "--no-progress",
               "--no-figures", "--mode", "cardiac"])
    return {"root": root, "out": out, "rc": rc}


def _records(out):
    import json

    return {p.parent.name: json.loads(p.read_text()) for p in (out / "cases").glob("*/result.json")}


def test_batch_keeps_going_and_flags_what_it_cannot_write(batch):
    assert batch["rc"] == 2  # the broken case failed
    recs = _records(batch["out"])
    assert recs["broken"]["status"] == "error"
    for ok in ("scan1", "h1", "cine1", "nifti1"):
        assert recs[ok]["status"] == "ok", recs[ok]["error"]
    assert recs["scan1"]["outputs"]["dicom"] == ["cases/scan1/scan1_seg.dcm", "cases/scan1/scan1_sr.dcm"]
    assert len(recs["h1"]["outputs"]["dicom"]) == 4
    for flagged in ("cine1", "nifti1"):
        assert not recs[flagged]["outputs"].get("dicom")
        assert any(f["code"] == "DICOM_NOT_WRITTEN" for f in recs[flagged]["qc_flags"])


def test_seg_matches_the_label_map_and_references_the_source(batch):
    out, root = batch["out"], batch["root"]
    labels = read_volume(out / "cases" / "scan1" / "scan1_labels.nii.gz", kind="label")
    back = read_labels(out / "cases" / "scan1" / "scan1_seg.dcm", reference=root / "in" / "scan1")
    np.testing.assert_array_equal(back.array, labels.array)
    seg = hd.seg.segread(str(out / "cases" / "scan1" / "scan1_seg.dcm"))
    # source UIDs replaced consistently (docs/dicom.md), so the SEG still names its series and study
    assert str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID) == pseudo_uid("1.2.3.4.1")
    assert seg.StudyInstanceUID == pseudo_uid("1.2.3.9") and seg.SeriesInstanceUID != pseudo_uid("1.2.3.4.1")
    desc = {int(s.SegmentNumber): s for s in seg.SegmentSequence}
    assert desc[1].SegmentLabel == "LV blood pool" and desc[1].SegmentedPropertyTypeCodeSequence[0].CodeValue == \
        "87878005"  # SNOMED CT left ventricle
    assert desc[2].SegmentedPropertyTypeCodeSequence[0].CodeValue == "49848007"  # LV myocardium
    algo = desc[1].SegmentationAlgorithmIdentificationSequence[0]
    assert desc[1].SegmentAlgorithmType == "AUTOMATIC" and algo.AlgorithmName == "tiny-cardiac"
    rec = _records(out)["scan1"]
    assert rec["model"]["sha256"] in algo.AlgorithmParameters
    assert algo.AlgorithmVersion == rec["model"]["spec_sha256"][:16]


def _groups(sr_path):
    sr = hd.sr.srread(str(sr_path))
    groups = sr.content.get_volumetric_roi_measurement_groups()
    out = {}
    for g in groups:
        (number,) = g.referenced_segment.referenced_segment_numbers
        assert g.referenced_segment.referenced_sop_class_uid == "1.2.840.10008.5.1.4.1.1.66.4"
        out[int(number)] = {m.name.meaning: m.value for m in g.get_measurements()}
    return sr, out


def test_sr_one_group_per_segment_with_csv_volumes(batch):
    out = batch["out"]
    vols = pd.read_csv(out / "volumes.csv")
    sr, groups = _groups(out / "cases" / "scan1" / "scan1_sr.dcm")
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    seg = hd.seg.segread(str(out / "cases" / "scan1" / "scan1_seg.dcm"))
    assert len(groups) == len(seg.SegmentSequence) == 2
    mine = vols[vols["case_id"] == "scan1"].set_index("label")
    for number in (1, 2):
        assert groups[number]["Volume"] == mine.loc[number, "volume_ml"]
    # the RTSTRUCT reference (manifest label column) was rasterised on the scan's grid
    assert mine.loc[1, "reference_volume_ml"] == pytest.approx(12 * 1.4 * 1.3 * 6.0 / 1000)
    ev = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    assert seg.SOPInstanceUID in {str(i.ReferencedSOPInstanceUID) for s in ev for i in s.ReferencedSOPSequence}


def test_sr_cardiac_pair_has_edv_esv_sv_ef(batch):
    out = batch["out"]
    cardiac = pd.read_csv(out / "cardiac.csv").set_index("case_id").loc["h1"]
    vols = pd.read_csv(out / "volumes.csv")
    for phase in ("ED", "ES"):
        _, groups = _groups(out / "cases" / "h1" / f"h1_{phase}_sr.dcm")
        lv = groups[1]
        assert lv["Volume"] == vols[(vols["case_id"] == "h1") & (vols["phase"] == phase) & (vols["label"] == 1)][
            "volume_ml"].item()
        assert lv["Left Ventricular End Diastolic Volume"] == cardiac["lv_edv_ml"]
        assert lv["Left Ventricular End Systolic Volume"] == cardiac["lv_esv_ml"]
        assert lv["Stroke Volume"] == cardiac["lv_sv_ml"]
        if np.isfinite(cardiac["lv_ef_percent"]):
            assert lv["Left ventricular ejection fraction by MR"] == cardiac["lv_ef_percent"]


def test_no_identifiers_in_dicom_outputs(batch):
    import pydicom

    for p in (batch["out"] / "cases").rglob("*.dcm"):
        data = p.read_bytes()
        assert not [s for s in SECRETS if s in data], p
        ds = pydicom.dcmread(str(p))
        assert ds.PatientIdentityRemoved == "YES" and ds.PatientName == ""
        assert ds.StudyInstanceUID == pseudo_uid("1.2.3.9") and b"1.2.3.9" not in data


@pytest.mark.skipif(shutil.which("dciodvfy") is None,
                    reason="dciodvfy not installed (Debian package dicom3tools: apt-get install dicom3tools)")
def test_dciodvfy_reports_no_errors(batch):
    for name in ("scan1/scan1_seg.dcm", "scan1/scan1_sr.dcm", "h1/h1_ED_sr.dcm"):
        res = subprocess.run(["dciodvfy", str(batch["out"] / "cases" / name)], capture_output=True,
                             text=True, timeout=120)
        report = res.stdout + res.stderr
        errors = [ln for ln in report.splitlines() if ln.startswith("Error")]
        assert not errors, report


def test_segment_dicom_with_identifiers(bundle, tmp_path, capsys):
    import pydicom

    write_series(tmp_path / "s1", patient_name="Privacy^Patient", **SERIES)
    write_volume(read_volume(tmp_path / "s1"), tmp_path / "n1.nii.gz")
    rc = main(["segment", str(tmp_path / "s1"), str(tmp_path / "n1.nii.gz"), "--model", str(bundle),
               "--out", str(tmp_path / "o"), "--dicom", "--include-identifiers"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "--dicom: the input is not a DICOM series: no SEG/SR" in out  # the NIfTI case: labels only
    assert sorted(p.name for p in (tmp_path / "o").glob("*.dcm")) == ["s1_seg.dcm", "s1_sr.dcm"]
    seg = pydicom.dcmread(str(tmp_path / "o" / "s1_seg.dcm"))
    assert str(seg.PatientName) == "Privacy^Patient" and seg.PatientID == "PID-12345"
    labels = read_volume(tmp_path / "o" / "s1_labels.nii.gz", kind="label")
    np.testing.assert_array_equal(read_labels(tmp_path / "o" / "s1_seg.dcm", reference=tmp_path / "s1").array,
                                  labels.array)
    _, groups = _groups(tmp_path / "o" / "s1_sr.dcm")
    vox_ml = 1.4 * 1.3 * 6.0 / 1000
    for number in groups:
        assert groups[number]["Volume"] == pytest.approx(int((labels.array == number).sum()) * vox_ml, rel=1e-12)


def test_segment_fractional_seg_of_the_probabilities(bundle, tmp_path, capsys):
    write_series(tmp_path / "s1", **SERIES)
    rc = main(["segment", str(tmp_path / "s1"), "--model", str(bundle), "--out", str(tmp_path / "o"), "--dicom",
               "--dicom-fractional", "--probabilities"])
    assert rc == 0, capsys.readouterr().err
    probs = read_volume(tmp_path / "o" / "s1_probabilities.nii.gz")  # (C, I, J, K), channel c = label c
    seg = hd.seg.segread(str(tmp_path / "o" / "s1_seg.dcm"))
    assert seg.SegmentationType == "FRACTIONAL" and len(seg.SegmentSequence) == probs.shape[0] - 1
    import pydicom

    dss = [pydicom.dcmread(str(f), stop_before_pixels=True) for f in (tmp_path / "s1").iterdir()]
    dss.sort(key=lambda d: float(d.ImagePositionPatient[2]))  # axial series: slice order = z
    px = seg.get_pixels_by_source_instance([pseudo_uid(str(d.SOPInstanceUID)) for d in dss], combine_segments=False,
                                           rescale_fractional=True)  # (K, rows, cols, segments)
    for c in range(1, probs.shape[0]):
        np.testing.assert_allclose(px[..., c - 1], probs.array[c].transpose(2, 1, 0), atol=0.5 / 255 + 1e-6)
    _, groups = _groups(tmp_path / "o" / "s1_sr.dcm")  # volumes still those of the label map
    labels = read_volume(tmp_path / "o" / "s1_labels.nii.gz", kind="label")
    assert groups[1]["Volume"] == pytest.approx(int((labels.array == 1).sum()) * 1.4 * 1.3 * 6.0 / 1000, rel=1e-12)
    if shutil.which("dciodvfy"):
        res = subprocess.run(["dciodvfy", str(tmp_path / "o" / "s1_seg.dcm")], capture_output=True, text=True,
                             timeout=120)
        assert not [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("Error")], res.stderr
    assert main(["segment", str(tmp_path / "s1"), "--model", str(bundle), "--out", str(tmp_path / "o2"),
                 "--dicom-fractional"]) == 2
