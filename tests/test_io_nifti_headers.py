"""NIfTI headers whose sform, qform and pixdim disagree, as they circulate (docs/io.md).

Every file is written with nibabel's own header fields (``set_sform`` / ``set_qform`` with
their codes, ``header["pixdim"]``, raw pixdim bytes where nibabel would repair them), and the
reference is what SimpleITK, which medcnn installs, reads from the same file: geometry and
label volume (voxel count x prod(GetSpacing()) / 1000) are compared with medcnn's.
"""

from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from medcnn.cli import main
from medcnn.errors import InvalidGeometryError, NiftiHeaderWarning
from medcnn.io import read_volume
from medcnn.volume import NIFTI_HEADER_INCONSISTENT

FLAG = NIFTI_HEADER_INCONSISTENT
PIXDIM = np.array([1.5625, 1.5625, 10.0])  # the released ACDC files' spacing
ORIGIN = np.array([-120.0, 85.5, 12.25])
SHAPE = (12, 10, 6)


def _rotation() -> np.ndarray:
    """An oblique short-axis-like direction (rotations about z then x)."""
    a, b = np.deg2rad(30.0), np.deg2rad(20.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


R = _rotation()
R_LEFT = R @ np.diag([-1.0, 1.0, 1.0])  # left-handed (qfac = -1), as dcm2niix writes LAS images
R_OTHER = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]) @ R


def _affine(direction, scales, origin) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = np.asarray(direction) * np.asarray(scales, dtype=float)
    a[:3, 3] = origin
    return a


def _labels() -> np.ndarray:
    arr = np.zeros(SHAPE, np.uint8)
    arr[2:9, 2:7, 1:5] = 1
    arr[4:6, 3:5, 2:4] = 2
    return arr


def write_header(path: Path, *, sform=None, sform_code=0, qform=None, qform_code=0, pixdim=None,
                 raw_pixdim=None, data=None) -> Path:
    """A NIfTI file with exactly these header fields. ``raw_pixdim`` patches pixdim[1:4] in
    the bytes (nibabel would repair zero or negative values when saving through its API)."""
    img = nib.Nifti1Image(_labels() if data is None else data, None)
    hdr = img.header
    if qform is not None:
        hdr.set_qform(qform, code=qform_code)  # also sets pixdim to the qform's axis lengths
    hdr["qform_code"] = qform_code
    if sform is not None:
        hdr.set_sform(sform, code=sform_code)
    hdr["sform_code"] = sform_code
    if pixdim is not None:
        p = hdr["pixdim"].copy()
        p[1:4] = pixdim
        hdr["pixdim"] = p
    if raw_pixdim is None:
        nib.save(img, str(path))
        return path
    raw = bytearray(img.to_bytes())  # uncompressed single-file NIfTI-1: pixdim at bytes 76-107
    p = np.frombuffer(bytes(raw[76:108]), dtype="<f4").copy()
    p[1:4] = raw_pixdim
    raw[76:108] = p.astype("<f4").tobytes()
    path.write_bytes(gzip.compress(bytes(raw)) if path.name.endswith(".gz") else bytes(raw))
    return path


#: header patterns medcnn reads (flagged or not): name -> (header fields, flagged?)
READ_PATTERNS = {
    # the released ACDC files: sform_code 2 holding the direction with unit axes, pixdim the spacing
    "acdc_released": (dict(sform=_affine(R, 1, ORIGIN), sform_code=2, pixdim=PIXDIM), True),
    "acdc_with_qform": (dict(sform=_affine(R, 1, ORIGIN), sform_code=2, qform=_affine(R, PIXDIM, ORIGIN),
                             qform_code=1), True),
    "scale_only_scanner": (dict(sform=_affine(R, 2 * PIXDIM, ORIGIN), sform_code=1,
                                qform=_affine(R, PIXDIM, ORIGIN), qform_code=1), True),
    "scale_only_aligned": (dict(sform=_affine(R, 2 * PIXDIM, ORIGIN), sform_code=2,
                                qform=_affine(R, PIXDIM, ORIGIN), qform_code=1), True),
    "sheared_sform_with_qform": (dict(sform=_affine(R, PIXDIM, ORIGIN) + np.pad([[0, 0.8, 0]], ((0, 3), (0, 1))),
                                      sform_code=2, qform=_affine(R, PIXDIM, ORIGIN), qform_code=1), True),
    "no_forms": (dict(pixdim=PIXDIM), True),
    "both_consistent": (dict(sform=_affine(R, PIXDIM, ORIGIN), sform_code=1, qform=_affine(R, PIXDIM, ORIGIN),
                             qform_code=1), False),
    "both_consistent_other_codes": (dict(sform=_affine(R, PIXDIM, ORIGIN), sform_code=2,
                                         qform=_affine(R, PIXDIM, ORIGIN), qform_code=1), False),
    "acdc_scanner_code": (dict(sform=_affine(R, 1, ORIGIN), sform_code=1, pixdim=PIXDIM), True),
    "left_handed_consistent": (dict(sform=_affine(R_LEFT, PIXDIM, ORIGIN), sform_code=1,
                                    qform=_affine(R_LEFT, PIXDIM, ORIGIN), qform_code=1), False),
    "left_handed_acdc_with_qform": (dict(sform=_affine(R_LEFT, 1, ORIGIN), sform_code=2,
                                         qform=_affine(R_LEFT, PIXDIM, ORIGIN), qform_code=1), True),
    "sform_only": (dict(sform=_affine(R, PIXDIM, ORIGIN), sform_code=2, pixdim=PIXDIM), False),
    "sform_only_mni_code": (dict(sform=_affine(R, PIXDIM, ORIGIN), sform_code=4, pixdim=PIXDIM), False),
    "qform_only": (dict(qform=_affine(R, PIXDIM, ORIGIN), qform_code=1), False),
    "qform_only_left_handed": (dict(qform=_affine(R_LEFT, PIXDIM, ORIGIN), qform_code=1), False),
}

#: header patterns refused: name -> (header fields, message fragment)
REFUSED_PATTERNS = {
    "forms_disagree_direction": (dict(sform=_affine(R_OTHER, PIXDIM, ORIGIN), sform_code=1,
                                      qform=_affine(R, PIXDIM, ORIGIN), qform_code=1),
                                 "expected an sform and a qform that place the grid alike"),
    "forms_disagree_origin": (dict(sform=_affine(R, PIXDIM, ORIGIN + [4, 0, 0]), sform_code=2,
                                   qform=_affine(R, PIXDIM, ORIGIN), qform_code=1),
                              "expected an sform and a qform that place the grid alike"),
    "zero_pixdim": (dict(sform=_affine(R, PIXDIM, ORIGIN), sform_code=2, raw_pixdim=[0, 1.5625, 10]),
                    "expected finite spacing > 0 mm on every axis (pixdim[1:4]), got pixdim (0.0, 1.5625, 10.0)"),
    "negative_pixdim": (dict(sform=_affine(R, PIXDIM, ORIGIN), sform_code=2, qform=_affine(R, PIXDIM, ORIGIN),
                             qform_code=1, raw_pixdim=[-1.5625, 1.5625, 10]),
                        "got pixdim (-1.5625, 1.5625, 10.0)"),
    "nan_pixdim": (dict(qform=_affine(R, PIXDIM, ORIGIN), qform_code=1, raw_pixdim=[np.nan, 1.5625, 10]),
                   "got pixdim (nan, 1.5625, 10.0)"),
    "sheared_sform_alone": (dict(sform=_affine(R, PIXDIM, ORIGIN) + np.pad([[0, 0.8, 0]], ((0, 3), (0, 1))),
                                 sform_code=2, pixdim=PIXDIM), "expected an sform with orthonormal axes, or a qform"),
}


def sitk_reading(path: Path) -> dict:
    """SimpleITK's geometry (converted here from LPS to RAS) and label volumes in mL."""
    img = sitk.ReadImage(str(path))
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    arr = sitk.GetArrayFromImage(img)
    spacing = np.array(img.GetSpacing())
    return {"spacing": spacing, "origin": lps_to_ras @ np.array(img.GetOrigin()),
            "direction": lps_to_ras @ np.array(img.GetDirection()).reshape(3, 3),
            "ml": {v: int((arr == v).sum()) * float(np.prod(spacing)) / 1000.0 for v in (1, 2)}}


def assert_same_as_sitk(vol, ref: dict) -> None:
    g = vol.geometry
    np.testing.assert_allclose(g.spacing, ref["spacing"], atol=1e-5)
    np.testing.assert_allclose(g.origin, ref["origin"], atol=1e-3)
    np.testing.assert_allclose(g.direction_matrix, ref["direction"], atol=1e-5)
    for v, ml in ref["ml"].items():
        assert int((vol.array == v).sum()) * vol.voxel_volume_ml == pytest.approx(ml, rel=1e-6)


@pytest.mark.parametrize("name", sorted(READ_PATTERNS))
def test_geometry_and_volume_equal_simpleitk(name, tmp_path):
    fields, flagged = READ_PATTERNS[name]
    p = write_header(tmp_path / f"{name}.nii.gz", **fields)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vol = read_volume(p, kind="label")
    assert_same_as_sitk(vol, sitk_reading(p))
    header_warnings = [w for w in caught if issubclass(w.category, NiftiHeaderWarning)]
    if flagged:
        (note,) = vol.read_notes
        assert note["code"] == FLAG and str(p) in note["message"] and "SimpleITK" in note["rule"]
        assert note["header"]["sform_code"] == fields.get("sform_code", 0)
        assert len(header_warnings) == 1 and str(header_warnings[0].message) == note["message"]
    else:
        assert vol.read_notes == [] and header_warnings == []


def test_acdc_pattern_differs_from_nibabel_25_fold(tmp_path):
    """Why the rule matters: nibabel reads the released ACDC sform as 1 mm voxels."""
    fields, _ = READ_PATTERNS["acdc_released"]
    p = write_header(tmp_path / "acdc.nii.gz", **fields)
    nib_voxel_mm3 = abs(np.linalg.det(nib.load(str(p)).affine[:3, :3]))
    with pytest.warns(NiftiHeaderWarning, match="axis lengths \\(1, 1, 1\\) mm differ from pixdim"):
        vol = read_volume(p)
    assert nib_voxel_mm3 == pytest.approx(1.0)
    assert vol.voxel_volume_ml * 1000 == pytest.approx(1.5625 * 1.5625 * 10) == pytest.approx(24.4140625)


@pytest.mark.parametrize("name", sorted(REFUSED_PATTERNS))
def test_unsafe_headers_are_refused(name, tmp_path):
    fields, fragment = REFUSED_PATTERNS[name]
    p = write_header(tmp_path / f"{name}.nii.gz", **fields)
    with pytest.raises(InvalidGeometryError) as info:
        read_volume(p)
    msg = str(info.value)
    assert msg.startswith(f"{p}: expected") and fragment in msg and "\n" not in msg


def test_refused_disagreement_is_real(tmp_path):
    """The refused qform/sform pair is read differently by SimpleITK (qform for sform_code 2)
    and nibabel (sform): no reading is safe."""
    fields, _ = REFUSED_PATTERNS["forms_disagree_origin"]
    p = write_header(tmp_path / "o.nii.gz", **fields)
    itk_origin = sitk_reading(p)["origin"]
    nib_origin = nib.load(str(p)).affine[:3, 3]
    assert np.linalg.norm(itk_origin - nib_origin) == pytest.approx(4.0, abs=1e-3)


# ----------------------------------------------------------------------------- CLI
def _err_lines(err: str, name: str) -> list[str]:
    return [ln for ln in err.splitlines() if "warning:" in ln and name in ln]


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_measure_flags_every_row_and_warns_once(fmt, tmp_path, capsys):
    acdc = write_header(tmp_path / "acdc_ed.nii.gz", **READ_PATTERNS["acdc_released"][0])
    acdc_es = write_header(tmp_path / "acdc_es.nii.gz", **READ_PATTERNS["acdc_released"][0],
                           data=(_labels() > 1).astype(np.uint8))
    clean = write_header(tmp_path / "clean.nii.gz", **READ_PATTERNS["both_consistent"][0])
    out = tmp_path / f"report.{fmt}"
    rc = main(["measure", str(acdc), str(clean), str(acdc), "--cardiac", str(acdc), str(acdc_es),
               "--rv-label", "0", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 0
    assert len(_err_lines(err, "acdc_ed.nii.gz")) == 1 and len(_err_lines(err, "acdc_es.nii.gz")) == 1
    assert _err_lines(err, "clean.nii.gz") == [] and "medcnn measure: warning: " in err
    if fmt == "csv":
        tables = {k: pd.read_csv(tmp_path / f"report{s}.csv", keep_default_na=False)
                  for k, s in (("volumes", ""), ("lesions", ".lesions"), ("cardiac", ".cardiac"))}
        meta = json.loads((tmp_path / "report.csv-metadata.json").read_text())
        prov, inputs = meta["medcnn"]["provenance"], meta["medcnn"]["inputs"]
    else:
        doc = json.loads(out.read_text())
        tables = {k: pd.DataFrame(doc[k]).fillna("") for k in ("volumes", "lesions", "cardiac")}
        prov, inputs = doc["provenance"], doc["inputs"]
    ref = sitk_reading(acdc)
    for name, df in tables.items():
        flagged = df[df["case"].astype(str).str.startswith("acdc")]
        assert len(flagged) and all(FLAG in str(c).split(";") for c in flagged["qc_codes"]), name
        assert all(FLAG not in str(c) for c in df[df["case"] == "clean"]["qc_codes"]), name
    vols = tables["volumes"]
    got = vols[(vols["case"] == "acdc_ed") & (vols["label"] == 1)]["volume_ml"].astype(float)
    assert len(got) == 3 and np.allclose(got, ref["ml"][1])  # twice as LABELMAP, once as ED
    assert "SimpleITK" in prov["input_header_rules"][FLAG]
    noted = [i for i in inputs if i.get("qc_flags")]
    assert {i["path"] for i in noted} == {"acdc_ed.nii.gz", "acdc_es.nii.gz"}
    assert all(f["message"].startswith(i["path"] + ": NIfTI header inconsistent") for i in noted
               for f in i["qc_flags"])


def test_measure_clean_files_have_no_flag_column(tmp_path, capsys):
    clean = write_header(tmp_path / "clean.nii.gz", **READ_PATTERNS["sform_only"][0])
    assert main(["measure", str(clean), "--out", str(tmp_path / "r.csv")]) == 0
    assert "warning" not in capsys.readouterr().err
    assert "qc_codes" not in pd.read_csv(tmp_path / "r.csv").columns


def test_measure_refuses_unsafe_header_in_one_line(tmp_path, capsys):
    bad = write_header(tmp_path / "bad.nii.gz", **REFUSED_PATTERNS["forms_disagree_direction"][0])
    rc = main(["measure", str(bad), "--out", str(tmp_path / "r.csv")])
    err = capsys.readouterr().err.strip().splitlines()
    # one line naming the file and why (issue 26: measure says why on the console), then the summary
    assert rc == 2 and len(err) == 2 and err[0].startswith("medcnn measure: error: bad: bad.nii.gz: expected an sform")
    assert "failed" in err[1]
    row = pd.read_csv(tmp_path / "r.csv").iloc[0]
    assert "expected an sform and a qform that place the grid alike" in row["error"]


def test_convert_refuses_unsafe_header_and_writes_nothing(tmp_path, capsys):
    bad = write_header(tmp_path / "bad.nii.gz", **REFUSED_PATTERNS["negative_pixdim"][0])
    out = tmp_path / "out.nrrd"
    rc = main(["convert", str(bad), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("medcnn convert: error: ") and "pixdim" in err[0]
    assert list(tmp_path.iterdir()) == [bad]


def test_convert_warns_once_and_writes_the_resolved_grid(tmp_path, capsys):
    src = write_header(tmp_path / "acdc.nii.gz", **READ_PATTERNS["acdc_released"][0])
    out = tmp_path / "out.nii.gz"
    assert main(["convert", str(src), "--out", str(out)]) == 0
    assert len(_err_lines(capsys.readouterr().err, "acdc.nii.gz")) == 1
    a, b = sitk_reading(src), sitk_reading(out)
    for k in ("spacing", "origin", "direction"):
        np.testing.assert_allclose(b[k], a[k], atol=1e-4)


# ----------------------------------------------------------------------------- segment / run
@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from test_batch_support import make_bundle

    return make_bundle(tmp_path_factory.mktemp("hdr") / "tiny-cardiac")


def _scan(path: Path, **fields) -> Path:
    from test_batch_support import blob_scan

    arr = blob_scan(shape=(24, 20, 8)).array.astype(np.int16)
    return write_header(path, data=arr, **fields)


def _acdc_scan_fields() -> dict:
    return dict(sform=_affine(R, 1, ORIGIN), sform_code=2, pixdim=(1.5, 1.5, 5.0))


def test_segment_writes_resolved_grid_and_records_flag(bundle, tmp_path, capsys):
    scan = _scan(tmp_path / "scan.nii.gz", **_acdc_scan_fields())
    out = tmp_path / "out"
    assert main(["segment", str(scan), "--model", str(bundle), "--out", str(out), "--precision", "fp32"]) == 0
    assert len(_err_lines(capsys.readouterr().err, "scan.nii.gz")) == 1
    a, b = sitk_reading(scan), sitk_reading(out / "scan_labels.nii.gz")
    for k in ("spacing", "origin", "direction"):
        np.testing.assert_allclose(b[k], a[k], atol=1e-4)
    (case,) = json.loads((out / "segment_provenance.json").read_text())["cases"]
    assert [f["code"] for f in case["qc_flags"]] == [FLAG]
    assert case["qc_flags"][0]["message"].startswith("scan.nii.gz: NIfTI header inconsistent")
    assert "resolved grid" in case["methods"][f"input_{FLAG.lower()}"]


def test_segment_refuses_unsafe_header(bundle, tmp_path, capsys):
    scan = _scan(tmp_path / "scan.nii.gz", sform=_affine(R, (1.5, 1.5, 5.0), ORIGIN), sform_code=1,
                 qform=_affine(R_OTHER, (1.5, 1.5, 5.0), ORIGIN), qform_code=1)
    out = tmp_path / "out"
    rc = main(["segment", str(scan), "--model", str(bundle), "--out", str(out)])
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert rc == 2 and len(err) == 1 and "place the grid alike" in err[0]
    assert not out.exists()  # nothing written, not even the output folder


def test_run_flags_every_row_and_writes_resolved_grid(bundle, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    flagged = _scan(tmp_path / "in" / "acdc.nii.gz", **_acdc_scan_fields())
    clean = _scan(tmp_path / "in" / "clean.nii.gz", sform=_affine(R, (1.5, 1.5, 5.0), ORIGIN), sform_code=1,
                  qform=_affine(R, (1.5, 1.5, 5.0), ORIGIN), qform_code=1)
    out = tmp_path / "out"
    rc = main(["run", str(flagged), str(clean), "--model", str(bundle), "--out", str(out), "--no-progress",
               "--no-figures", "--precision", "fp32", "--mode", "tumour"])
    err = capsys.readouterr().err
    assert rc == 0
    assert len(_err_lines(err, "acdc.nii.gz")) == 1 and _err_lines(err, "clean.nii.gz") == []
    cases = pd.read_csv(out / "cases.csv", keep_default_na=False).set_index("case_id")
    assert cases.loc["acdc", "qc_codes"].split(";") == [FLAG] and cases.loc["clean", "qc_codes"] == ""
    for table in ("volumes", "lesions"):
        df = pd.read_csv(out / f"{table}.csv", keep_default_na=False)
        assert len(df[df["case_id"] == "acdc"]), table
        assert all(c == FLAG for c in df[df["case_id"] == "acdc"]["qc_codes"]), table
        assert all(c == "" for c in df[df["case_id"] == "clean"]["qc_codes"]), table
    rec = json.loads((out / "cases" / "acdc" / "result.json").read_text())
    assert [f["code"] for f in rec["qc_flags"]] == [FLAG]
    assert "SimpleITK" in rec["provenance"]["methods"][f"input_{FLAG.lower()}"]
    html = (out / "report.html").read_text()
    assert FLAG in html and "SimpleITK" in html
    # the written label map reads back in SimpleITK on the grid SimpleITK reads the input on
    a = sitk_reading(flagged)
    b = sitk_reading(out / rec["outputs"]["labels"][0])
    for k in ("spacing", "origin", "direction"):
        np.testing.assert_allclose(b[k], a[k], atol=1e-4)
    # medcnn's volumes are SimpleITK's counts of the written labels
    vols = pd.read_csv(out / "volumes.csv")
    for v in (1, 2):
        got = vols[(vols["case_id"] == "acdc") & (vols["label"] == v)]["volume_ml"]
        assert float(got.iloc[0]) == pytest.approx(b["ml"][v], rel=1e-6)


# ----------------------------------------------------------------------------- real data
def test_released_acdc_pattern_on_a_real_file(shared_data, tmp_path, capsys):
    """A real ACDC ground truth rewritten as released (sform_code 2, unit axes, pixdim the
    spacing): the same mL as the clean shared copy, with the flag."""
    clean = shared_data / "acdc" / "patient001_ED_gt.nii.gz"
    img = nib.load(str(clean))
    spacing = np.linalg.norm(img.affine[:3, :3], axis=0)
    released = tmp_path / "patient001_ED_gt.nii.gz"
    write_header(released, sform=_affine(img.affine[:3, :3] / spacing, 1, img.affine[:3, 3]), sform_code=2,
                 pixdim=spacing, data=np.asanyarray(img.dataobj))
    assert np.allclose(nib.load(str(released)).header.get_zooms()[:3], spacing)
    assert np.allclose(np.linalg.norm(nib.load(str(released)).affine[:3, :3], axis=0), 1.0)  # what nibabel sees
    reports = {}
    for name, path in (("clean", clean), ("released", released)):
        assert main(["measure", str(path), "--no-lesions", "--out", str(tmp_path / f"{name}.csv")]) == 0
        reports[name] = pd.read_csv(tmp_path / f"{name}.csv", keep_default_na=False)
    err = capsys.readouterr().err
    assert len(_err_lines(err, "patient001_ED_gt.nii.gz")) == 1
    a, b = reports["clean"], reports["released"]
    assert list(a["label"]) == list(b["label"]) == [1, 2, 3]
    np.testing.assert_allclose(b["volume_ml"], a["volume_ml"], rtol=1e-6)
    assert a["volume_ml"].min() > 50  # real cardiac volumes in mL, not the 25x smaller 1 mm reading
    assert all(b["qc_codes"] == FLAG) and "qc_codes" not in a.columns
    ref = sitk_reading(released)
    np.testing.assert_allclose(b.set_index("label").loc[[1, 2], "volume_ml"], [ref["ml"][1], ref["ml"][2]], rtol=1e-6)


def test_validate_flags_rows_of_the_case(tmp_path, capsys):
    """A released-ACDC-style prediction against a clean reference on the same (resolved) grid."""
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    write_header(tmp_path / "pred" / "c1.nii.gz", **READ_PATTERNS["acdc_released"][0])
    write_header(tmp_path / "ref" / "c1.nii.gz", **READ_PATTERNS["both_consistent"][0])
    write_header(tmp_path / "pred" / "c2.nii.gz", **READ_PATTERNS["qform_only"][0])
    write_header(tmp_path / "ref" / "c2.nii.gz", **READ_PATTERNS["qform_only"][0])
    rc = main(["validate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"),
               "--out", str(tmp_path / "out"), "--bootstrap", "10"])
    err = capsys.readouterr().err
    assert rc == 0 and len(_err_lines(err, "c1.nii.gz")) == 1 and len(_err_lines(err, "warning")) == 1
    df = pd.read_csv(tmp_path / "out" / "metrics.csv", keep_default_na=False)
    assert set(df[df["case_id"] == "c1"]["qc_codes"]) == {FLAG}
    assert set(df[df["case_id"] == "c2"]["qc_codes"]) == {""}
    assert np.allclose(df[df["case_id"] == "c1"]["dice"].astype(float), 1.0)  # same grid once resolved
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert "SimpleITK" in summary["settings"]["input_header_rules"][FLAG]
    (c1,) = [c for c in summary["cases"] if c["case_id"] == "c1"]
    assert c1["qc_flags"][0]["message"].startswith("c1.nii.gz: NIfTI header inconsistent")
