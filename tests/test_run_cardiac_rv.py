"""`medcnn run --mode cardiac` with a model that segments the RV: RV function in cardiac.csv,
the HTML summary and case table, the RV curve and the RV's own overlay colour; and without an
RV label, no RV numbers but a note."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from test_batch_support import cine_scan, make_bundle

from medcnn.cli import main
from medcnn.io import read_volume, write_volume
from medcnn.report.figures import label_colour

RV_LABELS = {0: "background", 1: "LV blood pool", 2: "LV myocardium", 3: "RV blood pool"}


@pytest.fixture(scope="module")
def rv_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("rvrun")
    bundle = make_bundle(root / "tiny-rv", labels=RV_LABELS, seed=3)
    write_volume(cine_scan(n_frames=4), root / "cine.nii.gz")
    out = root / "out"
    rc = main(["run", str(root / "cine.nii.gz"), "--model", str(bundle), "--out", str(out), "--mode", "cardiac",
               "--no-progress"])
    assert rc == 0
    return out


def test_rv_function_in_the_tables_equals_counts_of_the_written_labels(rv_run):
    card = pd.read_csv(rv_run / "cardiac.csv").iloc[0]
    labels = read_volume(rv_run / "cases" / "cine" / "cine_labels.nii.gz", kind="label")
    arr = np.asarray(labels.array)
    vox_ml = float(np.prod(labels.geometry.spacing)) / 1000
    ed, es = int(card["ed_frame"]), int(card["es_frame"])
    lv = [(arr[t] == 1).sum() * vox_ml for t in range(arr.shape[0])]
    assert ed == int(np.argmax(lv))                       # ED = largest LV volume
    rv_ed, rv_es = (arr[ed] == 3).sum() * vox_ml, (arr[es] == 3).sum() * vox_ml
    assert rv_ed > 0, "the tiny model must predict some RV for this test to mean anything"
    assert card["rv_edv_ml"] == pytest.approx(rv_ed) and card["rv_esv_ml"] == pytest.approx(rv_es)
    assert card["rv_sv_ml"] == pytest.approx(rv_ed - rv_es)
    assert card["rv_ef_percent"] == pytest.approx((rv_ed - rv_es) / rv_ed * 100)
    # heart rate from the 4 frame times 0, 40, 80, 120 ms -> RR 160 ms
    assert card["rv_cardiac_output_l_per_min"] == pytest.approx((rv_ed - rv_es) * 60000 / 160 / 1000)
    curves = pd.read_csv(rv_run / "curves.csv")
    assert curves["rv_volume_ml"].tolist() == pytest.approx([(arr[t] == 3).sum() * vox_ml for t in range(4)])


def test_rv_in_the_html_report_and_methods(rv_run):
    html = (rv_run / "report.html").read_text(encoding="utf-8")
    for text in ("RV EDV (mL)", "RV ESV (mL)", "RV SV (mL)", "RV EF (%)", "RV CO (L/min)", "rv cardiac output"):
        assert text in html, text
    report = json.loads((rv_run / "report.json").read_text())
    methods = report["cases"][0]["provenance"]["methods"]
    assert "the RV" in methods["cardiac"] and "RV blood pool 3" in methods["cardiac"]
    assert "LV_RV_SV_MISMATCH" in methods["cardiac_qc"] and "35%" in methods["cardiac_qc"]
    assert "MYO_ED_ES_MISMATCH" in methods["cardiac_qc"] and "25%" in methods["cardiac_qc"]


def _has_colour(png, colour: str, tol: float = 0.02) -> bool:
    img = mpimg.imread(png)[..., :3]
    rgb = np.array([int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    return bool(np.any(np.all(np.abs(img - rgb) < tol, axis=-1)))


def test_rv_has_its_own_colour_in_overlay_and_curve(rv_run):
    case = rv_run / "cases" / "cine"
    rv, lv = label_colour(3), label_colour(1)
    assert len({rv, lv, label_colour(2)}) == 3
    assert _has_colour(case / "overlay.png", rv) and _has_colour(case / "overlay.png", lv)
    assert _has_colour(case / "curve.png", rv)    # RV curve drawn in the RV's overlay colour


def test_without_an_rv_label_no_rv_numbers_and_a_note(tmp_path):
    bundle = make_bundle(tmp_path / "tiny-lv")      # labels 0, 1, 2 only
    write_volume(cine_scan(n_frames=3), tmp_path / "cine.nii.gz")
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "cine.nii.gz"), "--model", str(bundle), "--out", str(out), "--mode",
                 "cardiac", "--no-progress"]) == 0
    card = pd.read_csv(out / "cardiac.csv").iloc[0]
    assert all(np.isnan(card[k]) for k in ("rv_edv_ml", "rv_esv_ml", "rv_sv_ml", "rv_ef_percent",
                                           "rv_cardiac_output_l_per_min"))
    assert card["rv_note"] == "RV not measured: no RV label configured"
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "RV EDV (mL)" not in html and "RV not measured: no RV label configured" in html
    report = json.loads((out / "report.json").read_text())
    assert "does not segment the RV" in report["cases"][0]["provenance"]["methods"]["cardiac"]
    assert pd.read_csv(out / "curves.csv")["rv_volume_ml"].isna().all()
