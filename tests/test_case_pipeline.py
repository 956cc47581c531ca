"""``medcnn segment`` and ``medcnn run`` write a case through one pipeline: for the same scans
and flags their label maps (voxels and geometry, read back with nibabel), volume rows, DICOM
SEG (read back with highdicom: segments, their codes and masks; every other attribute but
generated UIDs and timestamps) and SR (measurement groups) are identical, file by file."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from dicom_factory import write_series
from test_batch_support import make_bundle
from medcnn.cli import main
from medcnn.io import read_volume, write_volume

hd = pytest.importorskip("highdicom")
nib = pytest.importorskip("nibabel")

SERIES = dict(n_slices=6, rows=20, cols=18, spacing=(1.4, 1.3), dz=6.0, patient_name="Privacy^Patient")
OBLIQUE = dict(row_dir=(0.8, 0.6, 0.0), col_dir=(0.0, 0.0, -1.0), origin=(-31.5, 12.25, 80.0))


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """Two 3D DICOM series (one oblique), a cine DICOM series and a NIfTI scan."""
    root = tmp_path_factory.mktemp("pipeline")
    write_series(root / "in" / "axial", series_uid="1.2.3.4.11", shuffle_seed=1, **SERIES)
    write_series(root / "in" / "oblique", series_uid="1.2.3.4.12", shuffle_seed=2, **SERIES, **OBLIQUE)
    write_series(root / "in" / "cine", series_uid="1.2.3.4.13", frames=3, shuffle_seed=3, **SERIES)
    write_volume(read_volume(root / "in" / "oblique"), root / "in" / "nifti.nii.gz")
    return root


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("b") / "tiny-cardiac")


def _both(scans, bundle, tmp_path, *flags, mode="cardiac"):
    """Outputs of ``segment`` (flat folder) and ``run`` (``cases/<id>/``) over the same scans."""
    names = ("axial", "oblique", "cine", "nifti.nii.gz")
    inputs = [str(scans / "in" / n) for n in names]
    seg_out, run_out = tmp_path / "segment", tmp_path / "run"
    assert main(["segment", *inputs, "--model", str(bundle), "--out", str(seg_out), *flags]) == 0
    assert main(["run", *inputs, "--model", str(bundle), "--out", str(run_out), "--no-figures", "--no-progress",
                 "--mode", mode, *flags]) == 0
    prov = json.loads((seg_out / "segment_provenance.json").read_text())
    seg_rows = {rec["case"].split(".")[0]: rec["volumes"] for rec in prov["cases"]}
    run_recs = {p.parent.name: json.loads(p.read_text()) for p in (run_out / "cases").glob("*/result.json")}
    return seg_out, run_out, seg_rows, run_recs


def _same_nifti(a, b):
    ia, ib = nib.load(str(a)), nib.load(str(b))
    np.testing.assert_array_equal(np.asarray(ia.dataobj), np.asarray(ib.dataobj))
    assert ia.get_data_dtype() == ib.get_data_dtype()
    np.testing.assert_array_equal(ia.affine, ib.affine)
    np.testing.assert_array_equal(ia.header.get_zooms(), ib.header.get_zooms())


def _same_rows(a, b):
    assert len(a) == len(b) and len(a) > 0
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for k in ra:
            va, vb = ra[k], rb[k]
            if isinstance(va, float) and isinstance(vb, float) and math.isnan(va) and math.isnan(vb):
                continue
            assert va == vb, (k, va, vb)


#: Elements that differ between two writes of the same result: creation dates and times.
_TIMES = {"ContentDate", "ContentTime", "InstanceCreationDate", "InstanceCreationTime", "SeriesDate", "SeriesTime",
          "DateTime"}


def _same_dataset(a, b, uids: dict, where="") -> None:
    """Every data element equal, nested sequences included, except creation times; a UID
    generated for one file may differ from the other's if it does so consistently (``uids``:
    the renaming seen so far, shared by a case's SEG and SR, one to one)."""
    keys = {e.keyword for e in a if e.keyword} | {e.keyword for e in b if e.keyword}
    for kw in sorted(keys - _TIMES):
        assert kw in a and kw in b, f"{where}{kw} only in one file"
        va, vb = a.data_element(kw), b.data_element(kw)
        if va.VR == "SQ":
            assert len(va.value) == len(vb.value), f"{where}{kw}"
            for i, (x, y) in enumerate(zip(va.value, vb.value)):
                _same_dataset(x, y, uids, f"{where}{kw}[{i}].")
        elif va.VR == "UI" and va.value != vb.value:
            assert uids.setdefault(str(va.value), str(vb.value)) == str(vb.value), f"{where}{kw}"
            assert list(uids.values()).count(str(vb.value)) == 1, f"{where}{kw}: not one to one"
        else:
            assert va.value == vb.value, f"{where}{kw}: {va.value!r} != {vb.value!r}"


def _groups(path):
    sr = hd.sr.srread(str(path))
    out = {}
    for g in sr.content.get_volumetric_roi_measurement_groups():
        (number,) = g.referenced_segment.referenced_segment_numbers
        out[int(number)] = (g.finding_type.meaning, {m.name.meaning: (m.value, m.unit.value)
                                                     for m in g.get_measurements()})
    return out


@pytest.mark.parametrize("flags", [("--dicom",), ("--dicom", "--dicom-fractional")], ids=["binary", "fractional"])
def test_segment_and_run_write_the_same_case_files(scans, bundle, tmp_path, flags):
    import pydicom

    seg_out, run_out, seg_rows, run_recs = _both(scans, bundle, tmp_path, *flags)
    for case in ("axial", "oblique", "cine", "nifti"):
        assert run_recs[case]["status"] == "ok", run_recs[case]["error"]
        _same_nifti(seg_out / f"{case}_labels.nii.gz", run_out / "cases" / case / f"{case}_labels.nii.gz")
    for case in ("axial", "oblique", "nifti"):  # 3D scans: the same rows (run's cine rows are ED/ES here)
        _same_rows(seg_rows[case], run_recs[case]["volumes"])
    assert sorted(p.name for p in seg_out.glob("*.dcm")) == sorted(
        p.name for p in (run_out / "cases").glob("*/*.dcm")) == [
        "axial_seg.dcm", "axial_sr.dcm", "oblique_seg.dcm", "oblique_sr.dcm"]
    for case in ("axial", "oblique"):
        a, b = seg_out / f"{case}_seg.dcm", run_out / "cases" / case / f"{case}_seg.dcm"
        sa, sb = hd.seg.segread(str(a)), hd.seg.segread(str(b))
        assert sa.SegmentationType == sb.SegmentationType == ("FRACTIONAL" if len(flags) == 2 else "BINARY")
        assert [s.SegmentLabel for s in sa.SegmentSequence] == [s.SegmentLabel for s in sb.SegmentSequence] == [
            "LV blood pool", "LV myocardium"]
        np.testing.assert_array_equal(sa.pixel_array, sb.pixel_array)  # every segment's frames
        assert sa.SOPInstanceUID != sb.SOPInstanceUID  # generated: two distinct objects
        assert sa.StudyInstanceUID == sb.StudyInstanceUID  # de-identified from the source, deterministically
        uids: dict[str, str] = {}
        _same_dataset(pydicom.dcmread(str(a)), pydicom.dcmread(str(b)), uids)
        assert str(sa.SOPInstanceUID) in uids  # the one renaming the SR follows below
        ga = _groups(seg_out / f"{case}_sr.dcm")
        gb = _groups(run_out / "cases" / case / f"{case}_sr.dcm")
        assert ga == gb and sorted(ga) == [1, 2]
        rows = {r["label"]: r["volume_ml"] for r in run_recs[case]["volumes"]}
        assert {n: m["Volume"][0] for n, (_, m) in ga.items()} == {1: rows[1], 2: rows[2]}  # the CSV's volumes
        _same_dataset(pydicom.dcmread(str(seg_out / f"{case}_sr.dcm")),
                      pydicom.dcmread(str(run_out / "cases" / case / f"{case}_sr.dcm")), uids)
        source = {str(d.SOPInstanceUID) for d in (pydicom.dcmread(str(f)) for f in (scans / "in" / case).iterdir())}
        assert not source & set(uids), "a UID taken from the source series differs between the commands"


def test_cine_rows_are_the_same_in_volumes_mode(scans, bundle, tmp_path):
    """A cine series in ``--mode volumes``: the rows of every frame, alike from both commands."""
    seg_out, run_out, seg_rows, run_recs = _both(scans, bundle, tmp_path, mode="volumes")
    _same_nifti(seg_out / "cine_labels.nii.gz", run_out / "cases" / "cine" / "cine_labels.nii.gz")
    _same_rows(seg_rows["cine"], run_recs["cine"]["volumes"])
    assert [r["phase"] for r in seg_rows["cine"]][::2] == ["frame 0", "frame 1", "frame 2"]
    for case in ("axial", "oblique", "nifti"):
        _same_rows(seg_rows[case], run_recs[case]["volumes"])
    assert not list(seg_out.glob("*.dcm")) and not list(run_out.glob("cases/*/*.dcm"))


def test_cardiac_pair_sr_and_rows_are_the_same(scans, bundle, tmp_path):
    """A manifest's ED/ES pair: both commands write the same label maps, ED/ES volume rows,
    cardiac row and SRs whose LV group carries EDV/ESV/SV/EF (the drift this pipeline removed:
    only ``run`` put cardiac values into the SR)."""
    import pydicom

    write_series(scans / "in" / "h1_ED", series_uid="1.2.3.4.21", shuffle_seed=4, **SERIES)
    write_series(scans / "in" / "h1_ES", series_uid="1.2.3.4.22", shuffle_seed=5, **SERIES)
    manifest = tmp_path / "cases.csv"
    manifest.write_text(f"case_id,image,ed,es\nh1,,{scans / 'in' / 'h1_ED'},{scans / 'in' / 'h1_ES'}\n")
    seg_out, run_out = tmp_path / "segment", tmp_path / "run"
    assert main(["segment", str(manifest), "--model", str(bundle), "--out", str(seg_out), "--dicom"]) == 0
    assert main(["run", str(manifest), "--model", str(bundle), "--out", str(run_out), "--no-figures",
                 "--no-progress", "--dicom"]) == 0
    prov = {r["case"].split("(")[-1].rstrip(")"): r for r in
            json.loads((seg_out / "segment_provenance.json").read_text())["cases"]}
    rec = json.loads((run_out / "cases" / "h1" / "result.json").read_text())
    assert rec["cardiac"] is not None and rec["cardiac"]["lv_edv_ml"] > 0
    for phase in ("ED", "ES"):
        stem = f"h1_{phase}"
        _same_nifti(seg_out / f"{stem}_labels.nii.gz", run_out / "cases" / "h1" / f"{stem}_labels.nii.gz")
        _same_rows(prov[stem]["volumes"], [r for r in rec["volumes"] if r["phase"] == phase])
        _same_rows([prov[stem]["cardiac"]], [rec["cardiac"]])
        ga, gb = _groups(seg_out / f"{stem}_sr.dcm"), _groups(run_out / "cases" / "h1" / f"{stem}_sr.dcm")
        assert ga == gb
        lv = ga[1][1]
        assert lv["Left Ventricular End Diastolic Volume"][0] == rec["cardiac"]["lv_edv_ml"]
        assert lv["Stroke Volume"][0] == rec["cardiac"]["lv_sv_ml"]
        uids: dict[str, str] = {}
        for kind in ("seg", "sr"):
            _same_dataset(pydicom.dcmread(str(seg_out / f"{stem}_{kind}.dcm")),
                          pydicom.dcmread(str(run_out / "cases" / "h1" / f"{stem}_{kind}.dcm")), uids)


@pytest.mark.slow
def test_region_model_seg_and_sr_are_the_same(tmp_path):
    """An nnU-Net region model (BraTS-style whole tumour ⊇ core ⊇ enhancing): label and region
    segments, and the region measurement groups, alike from both commands."""
    import pydicom
    from nnunet_factory import blob_image, make_nnunet_folder
    from test_regions_models import NNUNET_BRATS

    from medcnn.models.importers import import_model

    folder = make_nnunet_folder(tmp_path, dim=3, patch=(24, 24, 24), n_classes=4, region_labels=NNUNET_BRATS,
                                regions_class_order=[1, 2, 3], seed=3, steps=60)
    bundle = import_model(folder, tmp_path / "brats-regions")
    img, _ = blob_image((28, 26, 30), seed=7, n_classes=4)
    write_series(tmp_path / "in" / "scan1", n_slices=28, rows=26, cols=30, spacing=(1.0, 1.0), dz=1.0,
                 series_uid="1.2.3.4.31", pixels=np.clip(img * 200, 0, 4000)[None])
    seg_out, run_out = tmp_path / "segment", tmp_path / "run"
    common = ["--model", str(bundle), "--dicom", "--device", "cpu"]
    assert main(["segment", str(tmp_path / "in" / "scan1"), "--out", str(seg_out), *common]) == 0
    assert main(["run", str(tmp_path / "in" / "scan1"), "--out", str(run_out), "--no-figures", "--no-progress",
                 *common]) == 0
    prov = json.loads((seg_out / "segment_provenance.json").read_text())["cases"][0]
    rec = json.loads((run_out / "cases" / "scan1" / "result.json").read_text())
    _same_rows(prov["volumes"], rec["volumes"])
    assert [r["label"] for r in rec["volumes"]] == [1, 2, 3, "1+2+3", "2+3", "3"]
    _same_nifti(seg_out / "scan1_labels.nii.gz", run_out / "cases" / "scan1" / "scan1_labels.nii.gz")
    sa = hd.seg.segread(str(seg_out / "scan1_seg.dcm"))
    sb = hd.seg.segread(str(run_out / "cases" / "scan1" / "scan1_seg.dcm"))
    assert [s.SegmentLabel for s in sa.SegmentSequence] == [s.SegmentLabel for s in sb.SegmentSequence]
    assert len(sa.SegmentSequence) == 6
    np.testing.assert_array_equal(sa.pixel_array, sb.pixel_array)
    ga, gb = _groups(seg_out / "scan1_sr.dcm"), _groups(run_out / "cases" / "scan1" / "scan1_sr.dcm")
    assert ga == gb and sorted(ga) == [1, 2, 3, 4, 5, 6]
    uids: dict[str, str] = {}
    for kind in ("seg", "sr"):
        _same_dataset(pydicom.dcmread(str(seg_out / f"scan1_{kind}.dcm")),
                      pydicom.dcmread(str(run_out / "cases" / "scan1" / f"scan1_{kind}.dcm")), uids)


@pytest.mark.slow
def test_real_scans_with_the_shipped_models_alike(shared_data, tmp_path):
    """Real scans and shipped models: a hippocampus MRI crop (hippocampus-mri) and a Sunnybrook
    ED/ES pair as a manifest row (cardiac-cine-mri): same label maps, volume rows and cardiac
    row from both commands."""
    from medcnn.batch import bundled_names

    for name in ("hippocampus-mri", "cardiac-cine-mri"):
        if name not in bundled_names():
            pytest.skip(f"default bundle {name!r} not installed")
    hippo = shared_data / "hippocampus" / "imagesTr" / "hippocampus_001.nii.gz"
    nifti = shared_data / "sunnybrook" / "nifti"
    manifest = tmp_path / "pair.csv"
    manifest.write_text(f"case_id,ed,es\nSCD0000101,{nifti / 'SCD0000101_ED.nii.gz'},"
                        f"{nifti / 'SCD0000101_ES.nii.gz'}\n")
    for model, inputs, stems in (("hippocampus-mri", [str(hippo)], {"hippocampus_001": None}),
                                 ("cardiac-cine-mri", [str(manifest)],
                                  {"SCD0000101_ED": "ED", "SCD0000101_ES": "ES"})):
        seg_out, run_out = tmp_path / model / "segment", tmp_path / model / "run"
        assert main(["segment", *inputs, "--model", model, "--out", str(seg_out), "--device", "cpu"]) == 0
        assert main(["run", *inputs, "--model", model, "--out", str(run_out), "--no-figures", "--no-progress",
                     "--device", "cpu"]) == 0
        recs = json.loads((seg_out / "segment_provenance.json").read_text())["cases"]
        (result,) = [json.loads(p.read_text()) for p in (run_out / "cases").glob("*/result.json")]
        case_id = result["case_id"]
        for rec, (stem, phase) in zip(recs, stems.items()):
            _same_nifti(seg_out / f"{stem}_labels.nii.gz", run_out / "cases" / case_id / f"{stem}_labels.nii.gz")
            _same_rows(rec["volumes"], [r for r in result["volumes"] if r["phase"] == phase])
            assert any(r["volume_ml"] > 0.1 for r in rec["volumes"])  # the model found the structure
            if phase:
                _same_rows([rec["cardiac"]], [result["cardiac"]])
                assert 0 < result["cardiac"]["lv_ef_percent"] < 100
