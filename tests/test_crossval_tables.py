"""Validation claims a reviewer can re-derive.

* The per-fold, per-case cross-validation CSV gives back the tables (checked against a hand
  calculation), and the published tables (docs/training.md, README, bundle.json) are what the
  kept record gives.
* Every shipped bundle says, per case id, which cases trained, selected and tested it, and
  every recorded figure says what kind it is, consistently with those roles.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from medcnn.report.data_use import FIGURE_KINDS, check_data_use, figure_case_ids, figures
from medcnn.train.crossval import crossval_markdown, read_fold_cases_csv, summarise_folds, write_fold_cases_csv

REPO = Path(__file__).resolve().parents[1]
BUNDLES = sorted(p for p in (REPO / "medcnn" / "bundles").iterdir() if (p / "bundle.json").is_file())
HEADER = ["fold", "evaluation", "kind", "case_id", "patient", "phase", "meta",
          "dice_lv_blood_pool", "volume_ml_lv_blood_pool", "ref_volume_ml_lv_blood_pool",
          "dice_rv_blood_pool", "volume_ml_rv_blood_pool", "ref_volume_ml_rv_blood_pool",
          "foreground_dice", "foreground_volume_error_percent"]


def _row(fold, evaluation, patient, phase, group, lv, rv):
    """lv/rv: (dice, predicted mL, reference mL) or None (structure not annotated)."""
    meta = {"phase": phase, **({"group": group} if group else {})}
    kind = "cross-validation" if evaluation == "test" else "selection"
    cells = [fold, evaluation, kind, f"{patient}_{phase}", patient, phase, json.dumps(meta)]
    for s in (lv, rv):
        cells += ["", "", ""] if s is None else list(s)
    return cells + [0.9, 5.0]


def _hand_csv(path: Path) -> Path:
    rows = [  # fold 0: patients a (DCM), b (NOR); fold 1: c (DCM); Sunnybrook-like s1 (LV only) in both
        _row(0, "test", "a", "ED", "DCM", (0.9, 100, 100), (0.8, 100, 100)),
        _row(0, "test", "a", "ES", "DCM", (0.8, 40, 50), (0.6, 50, 50)),
        _row(0, "test", "b", "ED", "NOR", (0.95, 100, 100), (0.85, 100, 100)),
        _row(0, "test", "b", "ES", "NOR", (0.85, 45, 40), (0.75, 60, 50)),
        _row(0, "external", "s1", "ED", None, (0.9, 100, 100), None),
        _row(0, "external", "s1", "ES", None, (0.9, 60, 75), None),
        _row(1, "test", "c", "ED", "DCM", (0.7, 100, 100), (0.5, 100, 100)),
        _row(1, "test", "c", "ES", "DCM", (0.9, 50, 48), (0.7, 70, 50)),
        _row(1, "external", "s1", "ED", None, (0.7, 100, 100), None),
        _row(1, "external", "s1", "ES", None, (0.7, 80, 75), None),
    ]
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        w.writerows(rows)
    return path


def test_tables_from_the_per_case_csv_equal_a_hand_calculation(tmp_path):
    s = summarise_folds(read_fold_cases_csv(_hand_csv(tmp_path / "cases.csv")))
    m = s["mean_over_folds"]
    # Dice: fold 0 lv (0.9 + 0.8 + 0.95 + 0.85) / 4 = 0.875, fold 1 (0.7 + 0.9) / 2 = 0.8
    assert m["dice.lv_blood_pool"] == pytest.approx((0.875 + 0.8) / 2)
    assert m["dice.rv_blood_pool"] == pytest.approx((0.75 + 0.6) / 2)
    # LV EF from the volumes: a 60 vs 50 (10), b 55 vs 60 (5) -> fold 0 7.5; c 50 vs 52 (2)
    assert [f["mean_abs_ef_error_points"] for f in s["folds"]] == pytest.approx([7.5, 2.0])
    assert m["mean_abs_ef_error_points"] == pytest.approx(4.75)
    # RV EF: a 50 vs 50 (0), b 40 vs 50 (10) -> 5; c 30 vs 50 (20)
    assert m["mean_abs_rv_ef_error_points"] == pytest.approx(12.5)
    assert s["by_phase"]["ED"]["lv_blood_pool"] == pytest.approx((0.9 + 0.95 + 0.7) / 3)
    dcm = s["by_stratum"]["strata"]["DCM"]
    assert dcm["dice"]["lv_blood_pool"] == pytest.approx((0.9 + 0.8 + 0.7 + 0.9) / 4)
    assert dcm["mean_abs_ef_error_points"] == pytest.approx((10 + 2) / 2)
    # second dataset: s1 EF 40 vs 25 (+15) by fold 0, 20 vs 25 (-5) by fold 1; no RV there
    (s1,) = s["external"]["lv_ef_error_per_patient"]
    assert s1["ef_error_points_by_fold"] == pytest.approx({"0": 15.0, "1": -5.0})
    assert s["external"]["mean_dice_over_folds"] == pytest.approx({"lv_blood_pool": 0.8})
    assert s["kind"] == "cross-validation" and s["external"]["kind"] == "selection"
    md = crossval_markdown(s)
    assert "| **mean** |  | 0.838 | 0.675 | 4.8 | 12.5 |" in md
    assert "| s1 | 25.0 | +15.0 | -5.0 | +5.0 |" in md
    assert "Second dataset (selection figure, not an external test), mean Dice" in md


def test_per_case_csv_round_trip_is_exact(tmp_path):
    """Fold evaluations -> CSV -> fold evaluations: the same tables, to the last bit."""
    folds = read_fold_cases_csv(_hand_csv(tmp_path / "a.csv"))
    again = read_fold_cases_csv(write_fold_cases_csv(tmp_path / "b.csv", folds))
    assert summarise_folds(again) == summarise_folds(folds)
    assert summarise_folds(again)["external"]["kind"] == "selection"
    assert (tmp_path / "b.csv").read_text().splitlines()[0].split(",") == HEADER


def test_a_csv_that_is_not_a_per_case_table_is_refused(tmp_path):
    from medcnn.errors import ConfigError

    p = tmp_path / "x.csv"
    p.write_text("case,dice\na,0.5\n")
    with pytest.raises(ConfigError, match=r"x\.csv.*expected a per-case cross-validation CSV"):
        read_fold_cases_csv(p)


def _assert_close(a, b, where: str) -> None:
    """Nested dicts/lists equal, floats to 1e-9 relative."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), where
        for k in a:
            _assert_close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_close(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert b == pytest.approx(a, rel=1e-9), where
    else:
        assert a == b, where


def _cv_bundles():
    out = []
    for b in BUNDLES:
        prov = json.loads((b / "bundle.json").read_text())["provenance"]
        if prov.get("cross_validation"):
            out.append(pytest.param(b.name, prov["cross_validation"], id=b.name))
    return out


@pytest.mark.parametrize("name,cv", _cv_bundles())
def test_published_cross_validation_tables_are_the_kept_record(name, cv):
    """docs/training.md and README print what the kept record gives; the per-case CSV, where
    one is kept, gives the bundle's numbers; where none is, the bundle says so."""
    kept = cv.get("per_case_results", "")
    if cv.get("regions"):  # a region model (BraTS-style): Dice, HD95 and volume error per region
        from medcnn.train.crossval import read_region_cases_csv, region_crossval_markdown, summarise_region_folds

        summary = summarise_region_folds(read_region_cases_csv(REPO / kept))
        for key in ("folds", "mean_over_folds", "range_over_folds", "pooled", "regions"):
            _assert_close(summary.get(key), cv.get(key), key)
        assert {str(f["fold"]): f["cases"] for f in summary["folds"]} == cv["fold_test_cases"]
        doc = (REPO / "docs" / "training.md").read_text()
        for line in region_crossval_markdown(summary).splitlines():
            assert line in doc, f"docs/training.md lacks the table line {line!r} of {name}"
        m = cv["mean_over_folds"]
        row = next(ln for ln in (REPO / "README.md").read_text().splitlines() if ln.startswith(f"| `{name}`"))
        assert (f"Dice WT {m['whole_tumour.dice']:.3f}, TC {m['tumour_core.dice']:.3f}, "
                f"ET {m['enhancing_tumour.dice']:.3f}; abs WT volume error "
                f"{m['whole_tumour.abs_volume_error_percent']:.1f} %") in row
        return
    if kept.startswith("not re-derivable"):
        # what is kept: the per-fold means; the headline means are their means
        for metric, value in cv["mean_over_folds"].items():
            key = metric[5:] if metric.startswith("dice.") else metric
            per_fold = [(f["dice"] if metric.startswith("dice.") else f).get(key) for f in cv["folds"]]
            assert value == pytest.approx(sum(per_fold) / len(per_fold))
        summary = cv
    else:
        summary = summarise_folds(read_fold_cases_csv(REPO / kept))
        for key in ("folds", "mean_over_folds", "range_over_folds", "by_phase", "by_stratum"):
            _assert_close(summary.get(key), cv.get(key), key)
        if "external" in summary:
            _assert_close(summary["external"]["lv_ef_error_per_patient"], cv["external"]["lv_ef_error_per_patient"],
                          "external")
            summary["external"]["kind"] = cv["external"]["kind"]
    doc = (REPO / "docs" / "training.md").read_text()
    for line in crossval_markdown(summary).splitlines():
        assert line in doc, f"docs/training.md lacks the table line {line!r} of {name}"
    m = cv["mean_over_folds"]
    readme = (REPO / "README.md").read_text()
    row = next(ln for ln in readme.splitlines() if ln.startswith(f"| `{name}`"))
    expected = (f"Dice LV {m['dice.lv_blood_pool']:.3f}, myocardium {m['dice.lv_myocardium']:.3f}, "
                f"RV {m['dice.rv_blood_pool']:.3f}; abs EF error LV {m['mean_abs_ef_error_points']:.1f}, "
                f"RV {m['mean_abs_rv_ef_error_points']:.1f} points")
    assert expected in row


@pytest.mark.parametrize("bundle", BUNDLES, ids=[b.name for b in BUNDLES])
def test_shipped_bundles_declare_training_selection_test_for_every_figure(bundle):
    prov = json.loads((bundle / "bundle.json").read_text())["provenance"]
    use = prov["data_use"]
    for role in ("training", "selection", "test"):
        assert isinstance(use[role], list), role
    assert use["training"] and use["checkpoint"]
    check_data_use(use)
    recipe = set(use.get("recipe_selection") or ())
    patients = lambda ids: {i.split("_")[0] for i in ids}  # noqa: E731 - SCD0000101_ED_gt -> SCD0000101
    figs = list(figures(prov))
    assert figs, "a shipped bundle without any recorded figure"
    for key, fig in figs:
        kind = fig.get("kind")
        assert kind in FIGURE_KINDS, f"{bundle.name}: {key} has kind {kind!r}"
        ids = figure_case_ids(fig)
        if kind == "test":
            assert ids and ids <= set(use["test"])
        if kind in ("test", "external test"):  # never a case that trained, selected or shaped the recipe
            for role in (use["training"], use["selection"], recipe):
                assert not patients(ids) & patients(role), (key, kind)
        if kind == "training-set regression check":
            assert ids and ids <= set(use["training"])
        if kind == "selection":
            assert not ids & set(use["test"])
        if kind == "cross-validation":
            folds = fig["fold_test_cases"]
            assert [len(folds[str(f["fold"])]) for f in fig["folds"]] == [f["n_cases"] for f in fig["folds"]]
            flat = [c for k in folds for c in folds[k]]
            assert len(flat) == len(set(flat)), "a case held out by two folds"
    # data used to choose the recipe is never called external
    for key, fig in figs:
        if patients(figure_case_ids(fig)) & patients(recipe):
            assert fig["kind"] != "external test", key


def test_readme_states_each_shipped_models_figure_kinds():
    readme = (REPO / "README.md").read_text()
    assert "patients the model never saw" not in readme.split("## Default models", 1)[1].split("\n## ", 1)[0]
    for bundle in BUNDLES:
        prov = json.loads((bundle / "bundle.json").read_text())["provenance"]
        row = next(ln for ln in readme.splitlines() if ln.startswith(f"| `{bundle.name}`"))
        for _, fig in figures(prov):
            assert re.search(rf"\*{re.escape(fig['kind'])}\*", row), (bundle.name, fig["kind"])


@pytest.mark.parametrize("bundle", BUNDLES, ids=[b.name for b in BUNDLES])
def test_models_show_states_training_selection_test_and_each_figures_kind(bundle, capsys):
    from medcnn.cli import main

    assert main(["models", "show", bundle.name, "--no-verify"]) == 0
    out = capsys.readouterr().out
    prov = json.loads((bundle / "bundle.json").read_text())["provenance"]
    use = prov["data_use"]
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith("  ") and ln.split()}
    for role in ("training", "selection", "test"):
        ids = use[role]
        assert role in lines, role
        text = lines[role]
        assert (("none" in text) if not ids else (ids[0] in text and (len(ids) == 1 or f"{len(ids)}:" in text)))
    assert use["checkpoint"] in lines["checkpoint"]
    shown = [ln for ln in out.splitlines() if ln.startswith("  figure ")]
    assert len(shown) == len(list(figures(prov)))
    for (key, fig), ln in zip(figures(prov), shown):
        assert f"{key}: {fig['kind']} (" in ln


def test_volume_errors_by_hand():
    """EDV/ESV errors per structure and the myocardial mass error (x 1.05 g/mL), pooled and per stratum."""
    from medcnn.train.crossval import volume_errors

    def case(patient, phase, group, lv, ref_lv, myo=None, ref_myo=None):
        vol, ref = {"lv_blood_pool": lv}, {"lv_blood_pool": ref_lv}
        if myo is not None:
            vol["lv_myocardium"], ref["lv_myocardium"] = myo, ref_myo
        return {"case_id": f"{patient}_{phase}", "group": patient, "meta": {"phase": phase, "group": group},
                "dice": {"lv_blood_pool": 0.9}, "volume_ml": vol, "ref_volume_ml": ref,
                "foreground_dice": 0.9, "foreground_volume_error_percent": 1.0}

    cases = [case("p1", "ED", "DCM", 110.0, 100.0, 150.0, 140.0), case("p1", "ES", "DCM", 60.0, 64.0),
             case("p2", "ED", "NOR", 90.0, 96.0, 100.0, 110.0), case("p2", "ES", "NOR", 40.0, 40.0)]
    ve = volume_errors(cases)
    assert ve["lv_blood_pool.ED"]["mean_abs_error"] == pytest.approx((10 + 6) / 2)
    assert ve["lv_blood_pool.ED"]["mean_error"] == pytest.approx((10 - 6) / 2)
    assert ve["lv_blood_pool.ES"]["mean_abs_error"] == pytest.approx((4 + 0) / 2)
    assert ve["lv_myocardium_mass_g"]["mean_abs_error"] == pytest.approx(1.05 * 10)
    assert ve["lv_myocardium_mass_g"]["mean_error"] == pytest.approx(0.0)
    assert ve["lv_myocardium_mass_g"]["unit"] == "g" and ve["lv_blood_pool.ED"]["unit"] == "mL"
    assert "lv_myocardium.ES" not in ve  # no myocardium at ES here
    summary = summarise_folds([{"n_cases": 4, "cases": cases, "mean_dice": {"lv_blood_pool": 0.9}}], kind="fixed split")
    assert summary["kind"] == "fixed split"
    assert summary["by_stratum"]["strata"]["DCM"]["volume_errors"]["lv_blood_pool.ED"]["mean_error"] == pytest.approx(10)
    md = crossval_markdown(summary)
    assert "LV EDV (mL)" in md and "| DCM | 10.0 (+10.0)" in md


def _region_rows():
    """Two folds, two held-out cases each, three regions; hand-made numbers."""
    out = []

    def add(fold, case, wt, tc, et):
        for region, (d, h, pv, rv) in (("whole_tumour", wt), ("tumour_core", tc), ("enhancing_tumour", et)):
            out.append({"fold": fold, "kind": "cross-validation", "case_id": case, "patient": case[:-2],
                        "region": region, "dice": d, "hd95_mm": h, "pred_volume_ml": pv, "ref_volume_ml": rv,
                        "volume_error_percent": None if rv == 0 else 100.0 * (pv - rv) / rv})
    add(0, "a_1", (0.9, 4.0, 110.0, 100.0), (0.8, 6.0, 45.0, 50.0), (0.7, 3.0, 20.0, 20.0))
    add(0, "b_1", (0.7, 10.0, 60.0, 80.0), (0.6, 12.0, 30.0, 20.0), (1.0, 0.0, 0.0, 0.0))  # no ET in the reference
    add(1, "c_1", (0.8, 5.0, 90.0, 100.0), (0.5, 20.0, 10.0, 40.0), (0.4, 9.0, 5.0, 10.0))
    add(1, "d_1", (0.6, 7.0, 150.0, 100.0), (0.7, 8.0, 30.0, 30.0), (0.0, 373.12866, 4.0, 0.0))
    return out


def test_region_crossval_summary_equals_a_hand_calculation(tmp_path):
    from medcnn.train.crossval import (read_region_cases_csv, region_crossval_markdown, summarise_region_folds,
                                       write_region_cases_csv)

    p = write_region_cases_csv(tmp_path / "r.csv", _region_rows())
    rows = read_region_cases_csv(p)
    assert rows == _region_rows()  # exact round trip, None kept for an empty reference
    s = summarise_region_folds(rows)
    assert s["kind"] == "cross-validation" and s["n_folds"] == 2 and s["n_cases"] == 4
    f0, f1 = s["folds"]
    assert f0["cases"] == ["a_1", "b_1"] and f0["n_cases"] == 2
    assert f0["whole_tumour"]["dice"] == pytest.approx(0.8)
    assert f0["whole_tumour"]["abs_volume_error_percent"] == pytest.approx((10 + 25) / 2)
    assert f0["enhancing_tumour"]["abs_volume_error_percent"] == pytest.approx(0.0)  # b_1 left out
    assert f1["tumour_core"]["abs_volume_error_percent"] == pytest.approx((75 + 0) / 2)
    assert f1["enhancing_tumour"]["abs_volume_error_percent"] == pytest.approx(50.0)  # d_1 left out
    m = s["mean_over_folds"]
    assert m["whole_tumour.dice"] == pytest.approx((0.8 + 0.7) / 2)
    assert m["whole_tumour.abs_volume_error_percent"] == pytest.approx((17.5 + 30.0) / 2)
    assert m["enhancing_tumour.hd95_mm"] == pytest.approx((1.5 + (9 + 373.12866) / 2) / 2)
    assert s["range_over_folds"]["tumour_core.dice"] == [pytest.approx(0.6), pytest.approx(0.7)]
    assert s["pooled"]["whole_tumour"]["median_dice"] == pytest.approx(0.75)
    assert s["pooled"]["whole_tumour"]["median_abs_volume_error_percent"] == pytest.approx(17.5)
    md = region_crossval_markdown(s)
    assert "| 0 | a_1, b_1 | 0.800 | 7.0 | 17.5 |" in md
    assert md.splitlines()[-2].startswith("| **mean over folds** | | 0.750 | 6.5 | 23.8 |")


def test_a_csv_that_is_not_a_region_table_is_refused(tmp_path):
    from medcnn.errors import ConfigError
    from medcnn.train.crossval import read_region_cases_csv

    p = tmp_path / "x.csv"
    p.write_text("fold,case_id,dice\n0,a,0.9\n")
    with pytest.raises(ConfigError, match=r"x\.csv.*per-case region CSV"):
        read_region_cases_csv(p)
