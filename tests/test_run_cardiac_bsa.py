"""BSA-indexed values in `medcnn run`: --height/--weight for one case, manifest columns
height_cm/weight_kg per case, resume when they change, CSV/JSON/HTML, and bad values refused."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from test_batch_support import cine_scan, make_bundle

from medcnn.batch.cases import read_manifest
from medcnn.cli import main
from medcnn.io import write_volume
from medcnn.measure.body import BSA_COLUMNS
from medcnn.report.tables import build_tables

RV_LABELS = {0: "background", 1: "LV blood pool", 2: "LV myocardium", 3: "RV blood pool"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("bsarun")
    bundle = make_bundle(root / "tiny-rv", labels=RV_LABELS, seed=3)
    write_volume(cine_scan(n_frames=4), root / "p1.nii.gz")
    return root, bundle


@pytest.fixture(scope="module")
def indexed_run(setup):
    root, bundle = setup
    out = root / "out"
    assert main(["run", str(root / "p1.nii.gz"), "--model", str(bundle), "--out", str(out), "--mode", "cardiac",
                 "--no-progress", "--no-figures", "--height", "180", "--weight", "80"]) == 0
    return out


def test_cli_height_weight_index_every_cardiac_value(indexed_run):
    card = pd.read_csv(indexed_run / "cardiac.csv").iloc[0]
    assert card["height_cm"] == 180 and card["weight_kg"] == 80 and card["bsa_m2"] == pytest.approx(2.0)
    for idx, src in (("lv_edvi_ml_per_m2", "lv_edv_ml"), ("lv_esvi_ml_per_m2", "lv_esv_ml"),
                     ("lv_svi_ml_per_m2", "lv_sv_ml"), ("rv_edvi_ml_per_m2", "rv_edv_ml"),
                     ("rv_esvi_ml_per_m2", "rv_esv_ml"), ("lv_mass_index_g_per_m2", "lv_myocardial_mass_g")):
        assert card[src] > 0, f"the tiny model must predict {src} for this test to mean anything"
        assert card[idx] == pytest.approx(card[src] / 2.0, rel=1e-12), idx
    report = json.loads((indexed_run / "report.json").read_text())
    assert "sqrt(height_cm x weight_kg / 3600)" in report["columns"]["bsa_m2"]
    assert "mL/m^2" in report["columns"]["lv_edvi_ml_per_m2"]
    rec = report["cases"][0]
    assert rec["body_size"] == {"height_cm": 180.0, "weight_kg": 80.0}
    assert rec["cardiac"]["lv_edvi_ml_per_m2"] == pytest.approx(card["lv_edvi_ml_per_m2"])
    assert "Mosteller" in rec["provenance"]["methods"]["cardiac_bsa"]
    html = (indexed_run / "report.html").read_text(encoding="utf-8")
    for text in ("BSA (m²)", "LV EDVi (mL/m²)", "LV SVi (mL/m²)", "RV ESVi (mL/m²)", "LV mass index (g/m²)",
                 "lv edvi (mL/m²)", "bsa (m²)", "Mosteller"):
        assert text in html, text


def test_resume_recomputes_when_the_height_or_weight_changes(setup, indexed_run, capsys):
    root, bundle = setup
    base = ["run", str(root / "p1.nii.gz"), "--model", str(bundle), "--out", str(indexed_run), "--mode", "cardiac",
            "--no-progress", "--no-figures"]
    assert main([*base, "--height", "180", "--weight", "80"]) == 0
    assert pd.read_csv(indexed_run / "cases.csv").loc[0, "status"] == "skipped"
    assert main([*base, "--height", "170", "--weight", "90"]) == 0
    assert pd.read_csv(indexed_run / "cases.csv").loc[0, "status"] == "ok"
    card = pd.read_csv(indexed_run / "cardiac.csv").iloc[0]
    assert card["bsa_m2"] == pytest.approx(math.sqrt(170 * 90 / 3600))
    assert card["lv_edvi_ml_per_m2"] == pytest.approx(card["lv_edv_ml"] / math.sqrt(170 * 90 / 3600))
    capsys.readouterr()


def test_manifest_columns_per_case(setup, tmp_path, capsys):
    root, bundle = setup
    manifest = tmp_path / "cases.csv"
    manifest.write_text("case_id,image,height_cm,weight_kg\n"
                        f"a,{root / 'p1.nii.gz'},180,80\n"
                        f"b,{root / 'p1.nii.gz'},,\n"
                        f"c,{root / 'p1.nii.gz'},1.8,80\n")
    out = tmp_path / "out"
    assert main(["run", str(manifest), "--model", str(bundle), "--out", str(out), "--mode", "cardiac",
                 "--no-progress", "--no-figures"]) == 2
    err = capsys.readouterr().err
    assert "cases.csv line 4, height_cm: expected a height in cm between 30 and 250, got '1.8' (a height in " \
           "metres? give centimetres)" in err
    card = pd.read_csv(out / "cardiac.csv").set_index("case_id")
    assert list(card.index) == ["a", "b"]
    assert card.loc["a", "bsa_m2"] == pytest.approx(2.0)
    assert card.loc["a", "lv_edvi_ml_per_m2"] == pytest.approx(card.loc["a", "lv_edv_ml"] / 2)
    assert card[list(BSA_COLUMNS)].loc["b"].isna().all()          # no height/weight: empty, never guessed
    assert pd.read_csv(out / "errors.csv")["case_id"].tolist() == ["c"]


def test_without_height_and_weight_the_tables_have_no_bsa_columns():
    rec = {"case_id": "x", "status": "ok", "cardiac": {"lv_edv_ml": 100.0, "qc_codes": ""}, "volumes": []}
    assert not set(BSA_COLUMNS) & set(build_tables([rec])["cardiac"].columns)
    with_bsa = dict(rec, case_id="y", cardiac={"lv_edv_ml": 100.0, "bsa_m2": 2.0, "lv_edvi_ml_per_m2": 50.0})
    cols = list(build_tables([rec, with_bsa])["cardiac"].columns)
    assert set(BSA_COLUMNS) <= set(cols) and cols.index("lv_mass_index_g_per_m2") < cols.index("qc_codes")


@pytest.mark.parametrize("args,fragment", [
    (["--height", "1.8", "--weight", "80"], "--height: expected a height in cm between 30 and 250, got '1.8'"),
    (["--height", "180", "--weight", "0"], "--weight: expected a weight in kg between 1 and 400, got '0'"),
    (["--weight", "80"], "expected both --height and --weight"),
    (["TWO", "--height", "180", "--weight", "80"], "expected --height/--weight with one patient's case, got 2 cases"),
    (["--height", "180", "--weight", "80", "--mode", "volumes"], "expected --height/--weight with a cardiac model or "
                                                                 "--mode cardiac"),
])
def test_run_bad_height_weight_one_line_exit_2_no_output(setup, tmp_path, capsys, args, fragment):
    root, bundle = setup
    scans = [str(root / "p1.nii.gz")] + [str(root / "p1.nii.gz") for a in args if a == "TWO"]
    args = [a for a in args if a != "TWO"]
    mode = [] if "--mode" in args else ["--mode", "cardiac"]
    rc = main(["run", *scans, "--model", str(bundle), "--out", str(tmp_path / "out"), *mode, "--no-progress", *args])
    err = capsys.readouterr().err
    assert rc == 2 and fragment in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_run_refuses_height_both_in_the_manifest_and_on_the_command_line(setup, tmp_path, capsys):
    root, bundle = setup
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"case_id,image,height_cm,weight_kg\na,{root / 'p1.nii.gz'},180,80\n")
    rc = main(["run", str(manifest), "--model", str(bundle), "--out", str(tmp_path / "out"), "--mode", "cardiac",
               "--no-progress", "--height", "170", "--weight", "70"])
    err = capsys.readouterr().err
    assert rc == 2 and "either on the command line or in the manifest, got both (manifest: 180 cm, 80 kg)" in err
    assert not (tmp_path / "out").exists()


def test_manifest_phase_rows_and_pairs_carry_the_body_size(tmp_path):
    m = tmp_path / "m.csv"
    m.write_text("case_id,image,phase,height_cm,weight_kg\n"
                 "p,p_ED.nii.gz,ED,172,65\np,p_ES.nii.gz,ES,,\n"          # given on one row only
                 "q,q_ED.nii.gz,ED,172,65\nq,q_ES.nii.gz,ES,172,66\n"      # two different weights
                 "r,r_ED.nii.gz,ED,172,\nr,r_ES.nii.gz,ES,,\n")            # height without weight
    p, q, r, r_es = read_manifest(m, channels=("MRI",))      # r's ES row is left without its partner
    assert p.kind == "pair" and (p.height_cm, p.weight_kg) == (172.0, 65.0)
    assert q.error and "the same height_cm and weight_kg on the ED and ES rows" in q.error and "66 kg" in q.error
    assert r.error and "m.csv line 6: expected both height_cm and weight_kg" in r.error
    m2 = tmp_path / "pairs.csv"
    m2.write_text("case_id,ed,es,height_cm,weight_kg\nh,h_ED.nii.gz,h_ES.nii.gz,160.5,55\nk,k_ED.nii.gz,k_ES.nii.gz,,\n")
    h, k = read_manifest(m2, channels=("MRI",))
    assert (h.height_cm, h.weight_kg) == (160.5, 55.0) and (k.height_cm, k.weight_kg) == (None, None)
