"""``medcnn measure``: many files, error rows, exit codes, units, provenance, atomic output."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re

import numpy as np
import pandas as pd
import pytest

from medcnn.cli import main
from medcnn.cli.measure import case_id, read_table
from medcnn.io import write_volume
from medcnn.volume import Geometry, Volume
from tests.conftest import AWKWARD_GEOMETRIES

#: numeric columns that are counts, ids or codes and so carry no unit
UNITLESS = {"label", "voxel_count", "lesion_id", "n_voxels", "inplane_slice_index", "slice_axis", "connectivity",
            "frame", "ed_frame", "es_frame"}
UNIT_SUFFIXES = ("_ml", "_mm", "_mm3", "_percent", "_g", "_bpm", "_ms", "_l_per_min", "_days")


def _check_units(df: pd.DataFrame) -> None:
    for col in df.columns:
        if col == "error" or df[col].isna().all():   # text column read back empty
            continue
        if pd.api.types.is_numeric_dtype(df[col]) and not pd.api.types.is_bool_dtype(df[col]):
            assert col in UNITLESS or col.endswith(UNIT_SUFFIXES), f"numeric column {col!r} has no unit"


@pytest.fixture
def cases(tmp_path):
    g = AWKWARD_GEOMETRIES["oblique"]
    arr = np.zeros(g.shape, np.uint8)
    arr[2:6, 2:5, 1:3] = 1      # 24 voxels, one lesion
    arr[8:10, 7:9, 4] = 2       # 4 voxels
    good = tmp_path / "case_a.nii.gz"
    write_volume(Volume(arr, g, "label"), good)
    g2 = AWKWARD_GEOMETRIES["ras_aniso"]
    arr2 = np.zeros(g2.shape, np.uint8)
    arr2[0:3, 0:3, 0:2] = 1     # 18 voxels touching the border
    good2 = tmp_path / "case_b.nrrd"
    write_volume(Volume(arr2, g2, "label"), good2)
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(good.read_bytes()[:200])      # truncated gzip
    return {"a": (good, g, arr), "b": (good2, g2, arr2), "bad": bad}


def test_case_id():
    assert case_id("/x/y/SCD0000101_ED_gt.nii.gz") == "SCD0000101_ED_gt"
    assert case_id("brain1_label.nrrd") == "brain1_label"
    assert case_id("folder/dicom_series/") == "dicom_series"


def test_good_and_corrupt_files_csv(cases, tmp_path, capsys):
    good, g, arr = cases["a"]
    good2, g2, arr2 = cases["b"]
    out = tmp_path / "out" / "report.csv"
    labels = tmp_path / "labels.csv"
    labels.write_text("label,name\n1,tumour\n2,node\n")
    rc = main(["measure", str(good), str(cases["bad"]), str(good2), "--labels", str(labels), "--out", str(out)])
    assert rc == 2
    err_text = capsys.readouterr().err
    assert "1 measurement(s) failed" in err_text
    # the console says why (it only said "see the 'error' column"): the case and the reader's reason
    why = next(line for line in err_text.splitlines() if line.startswith("medcnn measure: error: broken: "))
    assert "broken.nii.gz" in why and "expected" in why
    df = read_table(out)
    _check_units(df)
    assert set(df["case"]) == {"case_a", "broken", "case_b"}
    err = df[df["case"] == "broken"]
    assert len(err) == 1 and "broken.nii.gz" in err["error"].item() and "expected" in err["error"].item()
    ok = df[df["case"] != "broken"]
    assert ok["error"].isna().all()
    a = ok[ok["case"] == "case_a"].set_index("label")
    assert a.loc[1, "label_name"] == "tumour" and a.loc[2, "label_name"] == "node"
    assert a.loc[1, "volume_ml"] == pytest.approx(24 * g.voxel_volume_ml, rel=1e-12)
    assert a.loc[2, "voxel_count"] == 4
    b = ok[ok["case"] == "case_b"].set_index("label")
    assert b.loc[1, "volume_ml"] == pytest.approx(18 * g2.voxel_volume_ml, rel=1e-12)
    assert b.loc[2, "volume_ml"] == 0.0            # named in the label table, absent: 0 mL
    # lesion side table
    les = read_table(out.with_name("report.lesions.csv"))
    _check_units(les)
    assert sorted(les["n_voxels"].tolist()) == [4, 18, 24]
    assert les.loc[les["case"] == "case_b", "touches_border"].item()
    # a plain CSV: header row first, read by the csv module and pandas with default options
    text = out.read_text()
    assert text.splitlines()[0].startswith('"case","path"') and "#" not in text.splitlines()[0]
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == list(df.columns) and len(rows) == len(df)
    assert len(pd.read_csv(out)) == len(df)
    # the sidecar: version, method and unit, sha256 of each input file's bytes (file names only)
    meta = json.loads(out.with_name("report.csv-metadata.json").read_text())
    from medcnn import __version__

    assert meta["@context"] == "http://www.w3.org/ns/csvw" and meta["url"] == "report.csv"
    assert meta["dc:creator"] == f"medcnn {__version__}"
    cols = {c["name"]: c for c in meta["tableSchema"]["columns"]}
    assert list(cols) == list(df.columns)
    assert "label volume in mL = voxel count x voxel volume (mm^3) / 1000" in cols["volume_ml"]["dc:description"]
    assert cols["volume_ml"]["datatype"] == "number"
    inputs = {i["path"]: i["sha256"] for i in meta["medcnn"]["inputs"]}
    for p in (good, good2, cases["bad"]):
        assert inputs[p.name] == hashlib.sha256(p.read_bytes()).hexdigest()
    assert str(tmp_path) not in text and str(tmp_path) not in json.dumps(meta)
    assert set(df["path"]) == {good.name, good2.name, cases["bad"].name}


def test_include_paths_keeps_full_paths(cases, tmp_path):
    good, _, _ = cases["a"]
    out = tmp_path / "full.csv"
    assert main(["measure", str(good), "--include-paths", "--out", str(out)]) == 0
    assert read_table(out)["path"].unique().tolist() == [str(good)]


def test_json_report(cases, tmp_path):
    good, g, _ = cases["a"]
    out = tmp_path / "report.json"
    rc = main(["measure", str(good), str(cases["bad"]), "--connectivity", "6", "--out", str(out)])
    assert rc == 2
    doc = json.loads(out.read_text())
    assert doc["provenance"]["medcnn_version"] and doc["n_failed"] == 1
    assert "mL" in doc["methods"]["volumes"]["volume_ml"]
    assert {i["case"] for i in doc["inputs"]} == {"case_a", "broken"}
    assert all(re.fullmatch(r"[0-9a-f]{64}", i["sha256"]) for i in doc["inputs"])
    rows = {(r["case"], r["label"]): r for r in doc["volumes"]}
    assert rows[("case_a", 1)]["volume_ml"] == pytest.approx(24 * g.voxel_volume_ml)
    assert rows[("broken", None)]["error"]
    assert {r["connectivity"] for r in doc["lesions"]} == {6}


def test_regions_report_unions_of_labels(cases, tmp_path, capsys):
    good, g, arr = cases["a"]
    out = tmp_path / "regions.json"
    rc = main(["measure", str(good), "--region", "all lesions=1,2", "--region", "small=2", "--out", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    rows = {r["label_name"]: r for r in doc["volumes"]}
    # independent count straight from the array written to disk
    assert rows["all lesions"]["voxel_count"] == int(np.isin(arr, [1, 2]).sum()) == 28
    assert rows["all lesions"]["label"] == "1+2" and "union of labels 1, 2" in rows["all lesions"]["method"]
    assert rows["small"]["volume_ml"] == pytest.approx(4 * g.voxel_volume_ml)
    assert doc["provenance"]["options"]["regions"] == {"all lesions": [1, 2], "small": [2]}
    for bad in (["--region", "x"], ["--region", "x=0"], ["--region", "=1"], ["--region", "a=1", "--region", "a=2"],
                ["--region", "a=1", "--probabilities"]):
        assert main(["measure", str(good), *bad, "--out", str(tmp_path / "bad.csv")]) == 2
        assert "--region" in capsys.readouterr().err
    assert not (tmp_path / "bad.csv").exists()


def test_all_good_exit_zero_and_min_lesion_filter(cases, tmp_path):
    good, g, _ = cases["a"]
    out = tmp_path / "r.csv"
    min_ml = 10 * g.voxel_volume_ml               # drops the 4-voxel lesion, keeps 24
    assert main(["measure", str(good), "--min-lesion-ml", str(min_ml), "--out", str(out)]) == 0
    les = read_table(tmp_path / "r.lesions.csv")
    assert les["n_voxels"].tolist() == [24]


def test_output_is_atomic(cases, tmp_path, monkeypatch):
    good, _, _ = cases["a"]
    out = tmp_path / "r.csv"
    out.write_text("previous report\n")
    import medcnn.cli.measure as m

    calls = {"n": 0}
    real = m._csv_outputs

    def flaky(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 2:          # fail while preparing the second table
            raise OSError("disk full")
        return real(*args, **kw)

    monkeypatch.setattr(m, "_csv_outputs", flaky)
    assert main(["measure", str(good), "--out", str(out)]) == 1
    assert out.read_text() == "previous report\n"             # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["r.csv", "case_a.nii.gz", "case_b.nrrd",
                                                                 "broken.nii.gz"])
    # bad --out suffix: input error, nothing written
    assert main(["measure", str(good), "--out", str(tmp_path / "r.txt")]) == 2
    assert not (tmp_path / "r.txt").exists()


def test_probability_maps(tmp_path):
    g = Geometry((6, 5, 4), (1.0, 2.0, 2.5), (3.0, 1.0, -2.0))
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3,) + g.shape)
    p = np.exp(logits) / np.exp(logits).sum(0)
    vol = Volume(p.astype(np.float32), g, "intensity", "time")     # 4D file: channel along the 4th axis
    path = tmp_path / "probs.nii.gz"
    write_volume(vol, path)
    out = tmp_path / "p.csv"
    assert main(["measure", str(path), "--probabilities", "--out", str(out)]) == 0
    df = read_table(out).set_index("label")
    _check_units(df.reset_index())
    stored = p.astype(np.float32)
    for c in (1, 2):
        assert df.loc[c, "soft_volume_ml"] == pytest.approx(stored[c].sum(dtype=np.float64) * g.voxel_volume_ml,
                                                           rel=1e-6)
        assert df.loc[c, "voxel_count"] == int((stored.argmax(0) == c).sum())
        # the volume interval of the same probabilities, around the argmax volume
        from medcnn.measure.intervals import volume_interval

        ref = volume_interval(Volume(stored.argmax(0).astype(np.uint8), g, "label"), c, stored[c])
        assert df.loc[c, "volume_low_ml"] == pytest.approx(ref["volume_low_ml"])
        assert df.loc[c, "volume_high_ml"] == pytest.approx(ref["volume_high_ml"])
        assert df.loc[c, "volume_low_ml"] <= df.loc[c, "volume_ml"] <= df.loc[c, "volume_high_ml"]


def test_cardiac_and_cine(tmp_path):
    g = Geometry((16, 16, 8), (1.5, 1.5, 8.0))
    vox = g.voxel_volume_ml
    ed, es = np.zeros(g.shape, np.uint8), np.zeros(g.shape, np.uint8)
    ed[4:11, 4:11, 2:6] = 1
    es[5:9, 5:9, 2:6] = 1
    write_volume(Volume(ed, g, "label"), tmp_path / "p1_ED.nii.gz")
    write_volume(Volume(es, g, "label"), tmp_path / "p1_ES.nii.gz")
    cine = np.stack([es, ed, es, es])
    write_volume(Volume(cine, g, "label", "time", (0.0, 100.0, 200.0, 300.0)), tmp_path / "cine.nii.gz")
    out = tmp_path / "c.csv"
    rc = main(["measure", "--cardiac", str(tmp_path / "p1_ED.nii.gz"), str(tmp_path / "p1_ES.nii.gz"),
               "--cardiac", str(tmp_path / "p1_ED.nii.gz"), str(tmp_path / "missing.nii.gz"),
               "--heart-rate", "60", "--out", str(out)])
    assert rc == 2
    card = read_table(tmp_path / "c.cardiac.csv")
    _check_units(card)
    good = card[card["error"].isna()].iloc[0]
    edv, esv = 196 * vox, 64 * vox
    assert good["lv_edv_ml"] == pytest.approx(edv) and good["lv_esv_ml"] == pytest.approx(esv)
    assert good["lv_ef_percent"] == pytest.approx((edv - esv) / edv * 100)
    assert good["lv_cardiac_output_l_per_min"] == pytest.approx((edv - esv) * 60 / 1000)
    assert "missing.nii.gz" in card[card["error"].notna()]["error"].item()
    vols = read_table(out)
    assert set(vols["phase"].dropna()) == {"ED", "ES"}
    # labels of a --cardiac pair carry their cardiac names (not label_1); an absent RV gets no 0 mL row
    assert set(vols["label_name"].dropna()) == {"lv_blood_pool"}
    ed_row = vols[(vols["phase"] == "ED") & (vols["label"] == 1)].iloc[0]
    assert ed_row["volume_ml"] == pytest.approx(edv)
    # cine: ED = frame 1 (not 0)
    out2 = tmp_path / "k.json"
    assert main(["measure", str(tmp_path / "cine.nii.gz"), "--cine", "--out", str(out2)]) == 0
    doc = json.loads(out2.read_text())
    row = doc["cardiac"][0]
    assert row["ed_frame"] == 1 and row["es_frame"] == 0
    assert row["lv_edv_ml"] == pytest.approx(edv)
    assert [r["lv_volume_ml"] for r in doc["cine_curves"]] == pytest.approx([esv, edv, esv, esv])
    assert {r["label_name"] for r in doc["volumes"]} == {"lv_blood_pool"}
    # a 4D file without --cine is an error row, not a crash
    assert main(["measure", str(tmp_path / "cine.nii.gz"), "--out", str(tmp_path / "x.csv")]) == 2
    assert "--cine" in read_table(tmp_path / "x.csv")["error"].item()


@pytest.mark.realdata
def test_sunnybrook_cli_matches_reference(tmp_path):
    from medcnn._testing import require_shared_data

    nifti = require_shared_data("sunnybrook", "nifti")
    ref = {d["patient_id"]: d for d in json.loads((nifti.parent / "reference.json").read_text())}
    out = tmp_path / "sb.csv"
    args = ["measure", "--out", str(out), "--rv-label", "0"]
    for pid in ref:
        args += ["--cardiac", str(nifti / f"{pid}_ED_gt.nii.gz"), str(nifti / f"{pid}_ES_gt.nii.gz")]
    assert main(args) == 0
    card = read_table(tmp_path / "sb.cardiac.csv")
    for _, row in card.iterrows():
        r = ref[row["case"].replace("_ED_gt", "")]
        assert row["lv_edv_ml"] == pytest.approx(r["ED"]["LV_bloodpool_mL"], abs=0.01)
        assert row["lv_esv_ml"] == pytest.approx(r["ES"]["LV_bloodpool_mL"], abs=0.01)
        assert row["lv_ef_percent"] == pytest.approx(r["EF_percent_from_contours"], abs=0.01)
