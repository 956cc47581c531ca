"""Cross-validation summary of fold evaluations, checked against hand-computed means."""

from __future__ import annotations

import json

import pytest

from medcnn.train.crossval import crossval_markdown, summarise_folds


def _case(patient, phase, group, lv, rv):
    return {"case_id": f"{patient}_{phase}", "group": patient, "meta": {"phase": phase, "group": group},
            "dice": {"lv": lv, "rv": rv}}


def _ef(patient, ef, ref):
    return {"patient": patient, "ef_percent": ef, "ref_ef_percent": ref, "abs_error_points": abs(ef - ref)}


FOLD0 = {"n_cases": 4, "mean_dice": {"lv": 0.9, "rv": 0.8},
         "cases": [_case("a", "ED", "DCM", 0.95, 0.9), _case("a", "ES", "DCM", 0.85, 0.7),
                   _case("b", "ED", "NOR", 0.95, 0.85), _case("b", "ES", "NOR", 0.85, 0.75)],
         "ejection_fraction": [_ef("a", 30, 34), _ef("b", 60, 58)], "mean_abs_ef_error_points": 3.0,
         "rv_ejection_fraction": [_ef("a", 40, 50), _ef("b", 55, 51)], "mean_abs_rv_ef_error_points": 7.0,
         "external": {"cases": [{}, {}], "mean_dice": {"lv": 0.9}, "ejection_fraction": [_ef("s1", 20, 25)]}}
FOLD1 = {"n_cases": 2, "mean_dice": {"lv": 0.8, "rv": 0.6},
         "cases": [_case("c", "ED", "DCM", 0.9, 0.7), _case("c", "ES", "DCM", 0.7, 0.5)],
         "ejection_fraction": [_ef("c", 20, 21)], "mean_abs_ef_error_points": 1.0,
         "rv_ejection_fraction": [_ef("c", 30, 39)], "mean_abs_rv_ef_error_points": 9.0,
         "external": {"cases": [{}, {}], "mean_dice": {"lv": 0.7}, "ejection_fraction": [_ef("s1", 28, 25)]}}


def test_means_over_folds_phases_strata_and_the_external_test():
    s = summarise_folds([FOLD0, FOLD1])
    m = s["mean_over_folds"]
    assert m["dice.lv"] == pytest.approx(0.85) and m["dice.rv"] == pytest.approx(0.7)
    assert m["mean_abs_ef_error_points"] == pytest.approx(2.0) and m["mean_abs_rv_ef_error_points"] == pytest.approx(8.0)
    assert s["range_over_folds"]["dice.rv"] == pytest.approx([0.6, 0.8])
    # ED pooled over the 3 held-out ED cases: lv (0.95 + 0.95 + 0.9) / 3
    assert s["by_phase"]["ED"]["lv"] == pytest.approx(2.8 / 3) and s["by_phase"]["ES"]["rv"] == pytest.approx(0.65)
    dcm = s["by_stratum"]["strata"]["DCM"]
    assert dcm["dice"]["lv"] == pytest.approx((0.95 + 0.85 + 0.9 + 0.7) / 4)
    assert dcm["mean_abs_ef_error_points"] == pytest.approx((4 + 1) / 2)  # patients a and c
    assert dcm["mean_abs_rv_ef_error_points"] == pytest.approx((10 + 9) / 2)
    (s1,) = s["external"]["lv_ef_error_per_patient"]
    assert s1["ef_error_points_by_fold"] == {"0": -5.0, "1": 3.0} and s1["mean_ef_error_points"] == pytest.approx(-1.0)
    assert s["external"]["mean_dice_over_folds"]["lv"] == pytest.approx(0.8)
    json.dumps(s)
    md = crossval_markdown(s)
    assert "| **mean** |  | 0.850 | 0.700 | 2.0 | 8.0 |" in md
    assert "| s1 | 25.0 | -5.0 | +3.0 | -1.0 |" in md


def test_folds_without_rv_or_external_test():
    lv_only = {k: v for k, v in FOLD1.items() if not k.startswith(("rv_", "mean_abs_rv", "external"))}
    s = summarise_folds([lv_only])
    assert "mean_abs_rv_ef_error_points" not in s["mean_over_folds"] and "external" not in s
    assert "–" in crossval_markdown(s)  # missing values are shown as such, never as 0
