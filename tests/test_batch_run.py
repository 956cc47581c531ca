"""Batch runs with a tiny seeded bundle: isolation of bad cases, resume, cardiac / tumour
measurements checked against independent counts on the written label maps, privacy,
process-pool and Dask execution giving the same report as in-process."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from dicom_factory import write_series
from scipy import ndimage
from test_batch_support import TUMOUR_LABELS, blob_scan, cine_scan, make_bundle

from medcnn.batch import RESULT_FILE, run_batch
from medcnn.io import write_volume


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    bundle = make_bundle(root / "cardiac_bundle")
    scans = root / "scans"
    scans.mkdir()
    for i in range(3):
        write_volume(blob_scan(seed=i, radius=5.0 + i), scans / f"s{i}.nii.gz")
    return {"root": root, "bundle": bundle, "scans": scans}


def _nib_counts(path: Path):
    """Independent reference: voxel counts and voxel volume (mL) straight from nibabel."""
    img = nib.load(str(path))
    arr = np.asarray(img.dataobj)
    voxel_ml = float(np.prod(img.header.get_zooms()[:3])) / 1000.0
    return arr, voxel_ml


def _all_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in _all_files(folder)}


def test_bad_cases_are_isolated_and_leave_no_partial_files(work, tmp_path):
    good = work["scans"] / "s0.nii.gz"
    corrupt = tmp_path / "corrupt.nii.gz"
    data = good.read_bytes()
    corrupt.write_bytes(data[: len(data) // 2])  # truncated gzip
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((32, 32), np.float32), np.eye(4)), str(flat))
    out = tmp_path / "out"
    res = run_batch([corrupt, flat, good], model=work["bundle"], out=out, progress=False)
    assert res.exit_code == 2
    assert res.summary_line.startswith("1 ok, 2 failed")
    by = {r["case_id"]: r for r in res.records}
    assert [r["case_id"] for r in res.records] == ["corrupt", "flat", "s0"]
    assert by["s0"]["status"] == "ok" and by["corrupt"]["status"] == "error" and by["flat"]["status"] == "error"
    assert by["corrupt"]["error"]["type"] == "CorruptFileError"
    assert "corrupt.nii.gz" in by["corrupt"]["error"]["message"] and "truncated" in by["corrupt"]["error"]["message"]
    assert by["flat"]["error"]["type"] == "DimensionError"
    assert "expected a 3D" in by["flat"]["error"]["message"] and "2D" in by["flat"]["error"]["message"]
    # errors table
    errors = pd.read_csv(out / "errors.csv")
    assert errors["case_id"].tolist() == ["corrupt", "flat"]
    assert errors["message"].str.contains("expected").all()
    # no partial files: failed cases hold only their error record, no temporaries anywhere
    files = _all_files(out)
    assert not [p for p in files if ".tmp" in p.name]
    assert sorted(p.name for p in (out / "cases" / "corrupt").iterdir()) == [RESULT_FILE]
    assert sorted(p.name for p in (out / "cases" / "flat").iterdir()) == [RESULT_FILE]
    # the good case: labels on exactly the input grid, volumes = independent voxel count
    lab_path = out / by["s0"]["outputs"]["labels"][0]
    assert lab_path.name == "s0_labels.nii.gz"
    np.testing.assert_allclose(nib.load(str(lab_path)).affine, nib.load(str(good)).affine, atol=1e-5)
    arr, voxel_ml = _nib_counts(lab_path)
    vols = pd.read_csv(out / "volumes.csv")
    assert set(vols["case_id"]) == {"s0"}
    for _, row in vols.iterrows():
        assert row["volume_ml"] == pytest.approx(np.count_nonzero(arr == row["label"]) * voxel_ml, rel=1e-6)
    assert set(vols["label"]) == {1, 2}
    assert list(vols.columns[:0]) == [] and "volume_ml" in vols.columns


def test_resume_skips_up_to_date_cases_and_recomputes_changed_ones(work, tmp_path):
    out = tmp_path / "out"
    scans = work["scans"]
    first = run_batch([scans], model=work["bundle"], out=out, progress=False, figures=False)
    assert [r["status"] for r in first.records] == ["ok"] * 3
    before = _mtimes(out / "cases")
    second = run_batch([scans], model=work["bundle"], out=out, progress=False, figures=False)
    assert [r["status"] for r in second.records] == ["skipped"] * 3
    assert "skipped (up to date)" in second.summary_line and second.exit_code == 0
    assert _mtimes(out / "cases") == before  # nothing rewritten
    cases = pd.read_csv(out / "cases.csv")
    assert cases["status"].tolist() == ["skipped"] * 3
    assert pd.read_csv(out / "volumes.csv")["volume_ml"].tolist() == \
        pd.read_csv(out / "volumes.csv")["volume_ml"].tolist()  # report rebuilt from stored results
    # change one voxel of one scan: only that case is recomputed
    changed = tmp_path / "scans"
    changed.mkdir()
    for p in scans.iterdir():
        (changed / p.name).write_bytes(p.read_bytes())
    v = blob_scan(seed=1, radius=6.0)
    v.array[0, 0, 0] += 1.0
    write_volume(v, changed / "s1.nii.gz")
    third = run_batch([changed], model=work["bundle"], out=out, progress=False, figures=False)
    assert [r["status"] for r in third.records] == ["skipped", "ok", "skipped"]
    # a changed setting (TTA) invalidates every case; --no-resume recomputes everything
    fourth = run_batch([scans], model=work["bundle"], out=out, progress=False, figures=False, resume=False)
    assert [r["status"] for r in fourth.records] == ["ok"] * 3


def test_changed_postprocessing_with_the_same_weights_reruns_every_case(work, tmp_path):
    import shutil

    from medcnn.models import load_bundle, update_bundle

    bundle = tmp_path / "bundle"
    shutil.copytree(work["bundle"], bundle)
    out = tmp_path / "out"
    scans = [work["scans"] / "s0.nii.gz", work["scans"] / "s1.nii.gz"]
    first = run_batch(scans, model=bundle, out=out, progress=False, figures=False)
    spec = first.records[0]["model"]["spec_sha256"]
    assert spec == load_bundle(bundle).spec_sha256 and len(spec) == 64
    update_bundle(bundle, provenance={"note": "provenance only"})  # does not change predictions
    again = run_batch(scans, model=bundle, out=out, progress=False, figures=False)
    assert [r["status"] for r in again.records] == ["skipped"] * 2
    update_bundle(bundle, postprocess={"keep_largest": True})       # same weights, new labels possible
    assert load_bundle(bundle).sha256 == first.records[0]["model"]["sha256"]
    third = run_batch(scans, model=bundle, out=out, progress=False, figures=False)
    assert [r["status"] for r in third.records] == ["ok"] * 2
    assert third.records[0]["model"]["spec_sha256"] != spec
    assert json.loads((out / "report.json").read_text())["model"]["spec_sha256"] == load_bundle(bundle).spec_sha256


def test_tta_uses_the_bundles_trained_mirror_axes_and_says_so(work, tmp_path):
    mirrored = make_bundle(tmp_path / "mirrored", mirror_axes=[0])
    scan = work["scans"] / "s0.nii.gz"
    res = run_batch([scan], model=mirrored, out=tmp_path / "out", progress=False, figures=False, tta=True)
    prov = res.records[0]["provenance"]
    assert prov["tta"] is True and prov["tta_axes"] == [0]
    assert prov["inference"]["n_forward_passes"] == 2 * prov["inference"]["n_windows"]
    assert {"preprocess", "network", "to_input_grid", "total"} <= set(prov["inference"]["timings_s"])
    assert pd.read_csv(tmp_path / "out" / "cases.csv")["tta"].tolist() == ["mirror axes 0"]
    # a bundle that does not record its training mirror axes: every axis, with a warning
    with pytest.warns(UserWarning, match="does not record"):
        res = run_batch([scan], model=work["bundle"], out=tmp_path / "legacy", progress=False, figures=False,
                        tta=True)
    assert res.records[0]["provenance"]["tta_axes"] == [0, 1, 2]
    plain = run_batch([scan], model=mirrored, out=tmp_path / "plain", progress=False, figures=False)
    assert pd.read_csv(tmp_path / "plain" / "cases.csv")["tta"].tolist() == ["off"]


def test_interrupt_then_rerun_finishes_the_rest(work, tmp_path):
    out = tmp_path / "out"
    seen = []

    def stop_after_first(rec):
        seen.append(rec["case_id"])
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_batch([work["scans"]], model=work["bundle"], out=out, progress=False, on_case=stop_after_first)
    assert seen == ["s0"]
    assert (out / "cases" / "s0" / RESULT_FILE).is_file()
    assert not (out / "cases" / "s1").exists() and not (out / "report.html").exists()
    done_before = _mtimes(out / "cases" / "s0")
    res = run_batch([work["scans"]], model=work["bundle"], out=out, progress=False)
    assert [r["status"] for r in res.records] == ["skipped", "ok", "ok"]
    assert _mtimes(out / "cases" / "s0") == done_before


def test_interrupt_inside_a_case_leaves_only_complete_files(work, tmp_path, monkeypatch):
    import medcnn.report.figures as figures

    out = tmp_path / "out"

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(figures, "overlay_png", boom)
    with pytest.raises(KeyboardInterrupt):
        run_batch([work["scans"] / "s2.nii.gz"], model=work["bundle"], out=out, progress=False)
    files = _all_files(out)
    assert not [p for p in files if ".tmp" in p.name]
    assert not (out / "cases" / "s2" / RESULT_FILE).exists()  # not marked complete
    lab = out / "cases" / "s2" / "s2_labels.nii.gz"
    assert lab.is_file()
    nib.load(str(lab)).get_fdata()  # complete, readable
    monkeypatch.undo()
    res = run_batch([work["scans"] / "s2.nii.gz"], model=work["bundle"], out=out, progress=False)
    assert res.records[0]["status"] == "ok"


def test_cardiac_cine_and_pairs_match_hand_calculation(work, tmp_path):
    cine_path = tmp_path / "cine.nii.gz"
    write_volume(cine_scan(n_frames=4), cine_path)
    for ph, r in (("ED", 7.0), ("ES", 5.0)):
        write_volume(blob_scan(seed=3, radius=r), tmp_path / f"h1_{ph}.nrrd")
    manifest = tmp_path / "pairs.csv"
    manifest.write_text("case_id,ed,es\nh1,h1_ED.nrrd,h1_ES.nrrd\n")
    out = tmp_path / "out"
    res = run_batch([cine_path, manifest], model=work["bundle"], out=out, progress=False)
    assert res.exit_code == 0, res.records
    by = {r["case_id"]: r for r in res.records}
    assert by["cine"]["mode"] == "cardiac" and by["cine"]["input_kind"] == "cine series"
    # cine: ED = frame with the most LV voxels, ES = fewest non-zero, from the written 4D labels
    arr, voxel_ml = _nib_counts(out / by["cine"]["outputs"]["labels"][0])
    assert arr.shape == (24, 20, 8, 4)
    lv = np.array([np.count_nonzero(arr[..., t] == 1) for t in range(4)]) * voxel_ml
    edv, esv = lv.max(), lv[lv > 0].min()
    card = pd.read_csv(out / "cardiac.csv").set_index("case_id")
    assert card.loc["cine", "lv_edv_ml"] == pytest.approx(edv)
    assert card.loc["cine", "lv_esv_ml"] == pytest.approx(esv)
    assert card.loc["cine", "lv_ef_percent"] == pytest.approx((edv - esv) / edv * 100)
    assert card.loc["cine", "ed_frame"] == int(np.argmax(lv))
    myo_ed = np.count_nonzero(arr[..., int(np.argmax(lv))] == 2) * voxel_ml
    assert card.loc["cine", "lv_myocardial_mass_g"] == pytest.approx(myo_ed * 1.05)
    curves = pd.read_csv(out / "curves.csv")
    np.testing.assert_allclose(curves[curves.case_id == "cine"]["lv_volume_ml"], lv)
    np.testing.assert_allclose(curves[curves.case_id == "cine"]["time_ms"], [0, 40, 80, 120])
    assert (out / by["cine"]["outputs"]["curve"]).is_file()
    # pair: ED/ES label maps written as .nrrd (the input's format), EF from them
    assert [Path(p).name for p in by["h1"]["outputs"]["labels"]] == ["h1_ED_labels.nrrd", "h1_ES_labels.nrrd"]
    import SimpleITK as sitk

    counts = {}
    for ph in ("ED", "ES"):
        img = sitk.ReadImage(str(out / "cases" / "h1" / f"h1_{ph}_labels.nrrd"))
        counts[ph] = np.count_nonzero(sitk.GetArrayFromImage(img) == 1) * np.prod(img.GetSpacing()) / 1000
    assert card.loc["h1", "lv_edv_ml"] == pytest.approx(counts["ED"])
    assert card.loc["h1", "lv_ef_percent"] == pytest.approx((counts["ED"] - counts["ES"]) / counts["ED"] * 100)
    # QC flags are carried into the cardiac table and the case table
    cases = pd.read_csv(out / "cases.csv", keep_default_na=False).set_index("case_id")
    codes = {f["code"] for f in by["cine"]["qc_flags"]}
    assert set(filter(None, cases.loc["cine", "qc_codes"].split(";"))) == codes
    vols = pd.read_csv(out / "volumes.csv")
    assert set(vols[vols.case_id == "h1"]["phase"]) == {"ED", "ES"}
    # volume intervals by default: around every predicted volume, EF interval = exact extremes
    assert vols["volume_low_ml"].notna().all() and vols["volume_high_ml"].notna().all()
    assert (vols["volume_low_ml"] <= vols["volume_ml"] + 1e-12).all()
    assert (vols["volume_ml"] <= vols["volume_high_ml"] + 1e-12).all()
    for cid in ("h1", "cine"):
        lv_rows = vols[(vols.case_id == cid) & (vols.label == 1)].set_index("phase")
        edv_lo, edv_hi = lv_rows.loc["ED", ["volume_low_ml", "volume_high_ml"]]
        esv_lo, esv_hi = lv_rows.loc["ES", ["volume_low_ml", "volume_high_ml"]]
        assert card.loc[cid, "lv_edv_low_ml"] == pytest.approx(edv_lo)
        def clip(ef):  # EF interval ends are clipped to the physically possible 0-100 %
            return min(100.0, max(0.0, ef))

        assert card.loc[cid, "lv_ef_low_percent"] == pytest.approx(clip(100 * (1 - esv_hi / edv_lo)))
        assert card.loc[cid, "lv_ef_high_percent"] == pytest.approx(clip(100 * (1 - esv_lo / edv_hi)))
        assert (card.loc[cid, "lv_ef_low_percent"] <= clip(card.loc[cid, "lv_ef_percent"])
                <= card.loc[cid, "lv_ef_high_percent"])
    report = json.loads((out / "report.json").read_text())
    assert "not a confidence interval" in report["cases"][0]["provenance"]["methods"]["volume_interval"]
    assert "interval low (mL)" in (out / "report.html").read_text()


def test_tumour_mode_lesions_and_reference(tmp_path):
    bundle = make_bundle(tmp_path / "tumour_bundle", labels=TUMOUR_LABELS, channels=("FLAIR", "T1c"), seed=1)
    flair, t1c = blob_scan(seed=5, radius=7.0), blob_scan(seed=6, radius=5.0)
    write_volume(flair, tmp_path / "p_flair.nii.gz")
    write_volume(t1c, tmp_path / "p_t1c.nii.gz")
    ref = flair.with_array((flair.array > 300).astype(np.uint8) * 2, kind="label")
    write_volume(ref, tmp_path / "p_seg.nii.gz")
    write_volume(blob_scan(seed=6, spacing=(1.5, 1.5, 4.0)), tmp_path / "q_t1c.nii.gz")  # another grid
    (tmp_path / "m.csv").write_text("case_id,FLAIR,T1c,label\np,p_flair.nii.gz,p_t1c.nii.gz,p_seg.nii.gz\n"
                                    "q,p_flair.nii.gz,q_t1c.nii.gz,\n")
    out = tmp_path / "out"
    res = run_batch([tmp_path / "m.csv"], model=bundle, out=out, progress=False)
    assert res.exit_code == 2 and res.n_ok == 1
    assert res.records[1]["error"]["type"] == "GeometryMismatchError"
    assert "input channels must share one voxel grid" in res.records[1]["error"]["message"]
    rec = res.records[0]
    assert rec["mode"] == "tumour"
    arr, voxel_ml = _nib_counts(out / rec["outputs"]["labels"][0])
    ref_arr = np.asarray(nib.load(str(tmp_path / "p_seg.nii.gz")).dataobj)
    lesions = pd.read_csv(out / "lesions.csv")
    n_ref = ndimage.label(arr > 0, structure=np.ones((3, 3, 3)))[1]  # scipy, 26-connectivity
    assert len(lesions) == n_ref
    assert lesions["volume_ml"].sum() == pytest.approx(np.count_nonzero(arr) * voxel_ml)
    assert lesions["lesion_id"].tolist() == list(range(1, n_ref + 1))
    vols = pd.read_csv(out / "volumes.csv").set_index("label")
    a, b = arr == 2, ref_arr == 2
    assert vols.loc[2, "reference_volume_ml"] == pytest.approx(b.sum() * voxel_ml)
    assert vols.loc[2, "dice"] == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()))
    assert vols.loc[1, "reference_volume_ml"] == 0.0
    html = (out / "report.html").read_text()
    assert "tumour volume (mL)" in html and "lesions (n)" in html


def test_one_label_model_against_a_multi_label_reference(tmp_path):
    """A whole-tumour model compared with a BraTS-style 1-4 reference: the reference is
    binarised (documented in the provenance), never compared label value by label value."""
    bundle = make_bundle(tmp_path / "wt", labels={0: "background", 1: "whole tumour"}, channels=("FLAIR",))
    scan = blob_scan(seed=7, radius=6.0)
    write_volume(scan, tmp_path / "p.nii.gz")
    ref = np.zeros(scan.geometry.shape, np.uint8)
    ref[8:14, 6:12, 2:5] = 2
    ref[10:12, 8:10, 3] = 4
    write_volume(scan.with_array(ref, kind="label"), tmp_path / "p_seg.nii.gz")
    (tmp_path / "m.csv").write_text("case_id,image,label\np,p.nii.gz,p_seg.nii.gz\n")
    res = run_batch([tmp_path / "m.csv"], model=bundle, out=tmp_path / "out", progress=False, mode="tumour")
    rec = res.records[0]
    assert rec["status"] == "ok", rec["error"]
    assert [v["label"] for v in rec["volumes"]] == [1]
    arr, voxel_ml = _nib_counts(tmp_path / "out" / rec["outputs"]["labels"][0])
    row = rec["volumes"][0]
    assert row["reference_volume_ml"] == pytest.approx(np.count_nonzero(ref) * voxel_ml)
    a, b = arr == 1, ref > 0
    assert row["dice"] == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()))
    assert "binarised" in rec["provenance"]["methods"]["reference"]


def test_dicom_identifiers_only_with_opt_in(work, tmp_path):
    import re

    write_series(tmp_path / "in" / "anon_case", n_slices=8, rows=20, cols=18, spacing=(1.2, 1.1), dz=4.0,
                 patient_name="Privacy^Patient", patient_id="PID-12345")
    secrets = (b"Privacy", b"Patient^", b"PID-12345", b"19700101")

    out = tmp_path / "out"
    res = run_batch([tmp_path / "in"], model=work["bundle"], out=out, progress=False)
    assert res.exit_code == 0, res.records
    assert res.records[0]["case_id"] == "anon_case"
    assert Path(res.records[0]["outputs"]["labels"][0]).name == "anon_case_labels.nii.gz"  # DICOM -> NIfTI
    checked = 0
    for p in _all_files(out):
        if p.suffix == ".png":
            continue  # pixels only (matplotlib writes no patient text)
        data = p.read_bytes()
        if p.suffix == ".gz":
            data = gzip.decompress(data)
        data = re.sub(rb"data:image/png;base64,[A-Za-z0-9+/=]+", b"", data)  # inline figures
        assert not [s for s in secrets if s in data], p
        checked += 1
    assert checked >= 10  # csv tables, report.json/html, result.json, label map

    out2 = tmp_path / "out2"
    run_batch([tmp_path / "in"], model=work["bundle"], out=out2, progress=False, include_identifiers=True)
    report = json.loads((out2 / "report.json").read_text())
    assert report["cases"][0]["identifiers"]["PatientID"] == "PID-12345"
    cases = pd.read_csv(out2 / "cases.csv")
    assert cases.loc[0, "identifier_PatientID"] == "PID-12345"
    assert "PID-12345" in (out2 / "report.html").read_text()


def _comparable(out: Path) -> dict[str, pd.DataFrame]:
    tables = {}
    for name in ("cases", "volumes", "lesions", "cardiac", "curves", "errors"):
        df = pd.read_csv(out / f"{name}.csv")
        tables[name] = df.drop(columns=[c for c in ("total_s",) if c in df.columns])
    return tables


def _assert_same_report(a: Path, b: Path) -> None:
    ta, tb = _comparable(a), _comparable(b)
    for name in ta:
        pd.testing.assert_frame_equal(ta[name], tb[name], check_exact=False, rtol=1e-9, obj=name)


def test_process_pool_gives_the_same_report(work, tmp_path):
    inline = tmp_path / "inline"
    pool = tmp_path / "pool"
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti")
    scans = [work["scans"] / "s0.nii.gz", bad, work["scans"] / "s1.nii.gz"]
    run_batch(scans, model=work["bundle"], out=inline, progress=False, figures=False)
    res = run_batch(scans, model=work["bundle"], out=pool, progress=False, figures=False, workers=2)
    assert res.exit_code == 2 and res.n_ok == 2 and [r["case_id"] for r in res.records] == ["s0", "bad", "s1"]
    _assert_same_report(inline, pool)


def test_dask_local_cluster_gives_the_same_report(work, tmp_path):
    distributed = pytest.importorskip("distributed")
    inline = tmp_path / "inline"
    run_batch([work["scans"]], model=work["bundle"], out=inline, progress=False)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, host="127.0.0.1",
                                  protocol="tcp", dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        res = run_batch([work["scans"]], model=work["bundle"], out=tmp_path / "dask", progress=False,
                        scheduler=cluster.scheduler_address)
    assert res.exit_code == 0 and [r["status"] for r in res.records] == ["ok"] * 3
    _assert_same_report(inline, tmp_path / "dask")
    for r in res.records:
        assert (tmp_path / "dask" / r["outputs"]["overlay"]).is_file()
