"""Agreement statistics against hand calculations and the Shrout & Fleiss (1979) example."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medcnn.metrics.agreement import (
    agreement_table,
    bland_altman,
    icc,
    icc_anova,
    lin_ccc,
    paired_agreement,
    pearson_r,
    summarize,
)

# A 5 x 2 table (pred, ref) worked by hand:
#   diffs d = pred - ref = [1, -1, 1, 1, -1]; bias = 1/5 = 0.2
#   sum (d - 0.2)^2 = 3*0.64 + 2*1.44 = 4.8 -> SD = sqrt(4.8 / 4) = sqrt(1.2)
#   grand mean 12.3; subject means [9.5, 12.5, 14.5, 10.5, 14.5]; rater means 12.4, 12.2
#   SS_rows = 2 * (2.8^2 + 0.2^2 + 2.2^2 + 1.8^2 + 2.2^2) = 2 * 20.8 = 41.6  -> BMS = 10.4
#   SS_cols = 5 * (0.1^2 + 0.1^2) = 0.1                                    -> JMS = 0.1
#   SS_total = 17.25 + 26.85 = 44.1; SS_err = 44.1 - 41.6 - 0.1 = 2.4        -> EMS = 0.6
#   WMS = (0.1 + 2.4) / 5 = 0.5
#   ICC(2,1) = (10.4 - 0.6) / (10.4 + 0.6 + 2 (0.1 - 0.6) / 5) = 9.8 / 10.8
#   ICC(3,1) = 9.8 / 11.0;  ICC(1,1) = (10.4 - 0.5) / (10.4 + 0.5) = 9.9 / 10.9
#   1/n moments: var_pred = 17.2/5, var_ref = 26.8/5, cov = 19.6/5
#   CCC = 2 * 3.92 / (3.44 + 5.36 + 0.2^2) = 7.84 / 8.84;  r = 19.6 / sqrt(17.2 * 26.8)
PRED = [10, 12, 15, 11, 14]
REF = [9, 13, 14, 10, 15]


def test_bland_altman_by_hand():
    ba = bland_altman(PRED, REF)
    sd = math.sqrt(1.2)
    assert ba["n"] == 5
    assert ba["bias"] == pytest.approx(0.2)
    assert ba["sd_diff"] == pytest.approx(sd)
    assert ba["loa_lower"] == pytest.approx(0.2 - 1.96 * sd)
    assert ba["loa_upper"] == pytest.approx(0.2 + 1.96 * sd)


def test_icc_by_hand():
    table = np.column_stack([REF, PRED])
    a = icc_anova(table)
    assert (a["bms"], a["jms"], a["ems"], a["wms"]) == pytest.approx((10.4, 0.1, 0.6, 0.5))
    assert icc(table, form="ICC(2,1)") == pytest.approx(9.8 / 10.8)
    assert icc(table, form="ICC(3,1)") == pytest.approx(9.8 / 11.0)
    assert icc(table, form="ICC(1,1)") == pytest.approx(9.9 / 10.9)


def test_ccc_and_pearson_by_hand():
    assert lin_ccc(PRED, REF) == pytest.approx(7.84 / 8.84)
    assert pearson_r(PRED, REF) == pytest.approx(19.6 / math.sqrt(17.2 * 26.8))


def test_shrout_fleiss_1979_example():
    # Shrout & Fleiss, Psychol Bull 86:420-428 (1979), Table 2 (6 targets x 4 judges):
    # BMS 11.24, WMS 6.26, JMS 32.49, EMS 1.02; ICC(1,1) .17, ICC(2,1) .29, ICC(3,1) .71
    table = [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]]
    a = icc_anova(table)
    assert (a["bms"], a["wms"], a["jms"], a["ems"]) == pytest.approx((11.24, 6.26, 32.49, 1.02), abs=0.005)
    assert round(a["ICC(1,1)"], 2) == 0.17
    assert round(a["ICC(2,1)"], 2) == 0.29
    assert round(a["ICC(3,1)"], 2) == 0.71


def test_icc_absolute_agreement_penalises_offset_consistency_does_not():
    ref = np.array([10.0, 20.0, 30.0, 40.0, 50.0])
    pred = ref + 5.0
    table = np.column_stack([ref, pred])
    # EMS = 0; BMS = 2 * (20^2 + 10^2 + 0 + 10^2 + 20^2) / 4 = 500; JMS = 5 * 2 * 2.5^2 = 62.5
    assert icc(table, form="ICC(3,1)") == pytest.approx(1.0)
    assert icc(table, form="ICC(2,1)") == pytest.approx(500 / (500 + 2 * 62.5 / 5))
    assert lin_ccc(pred, ref) < 1.0 and pearson_r(pred, ref) == pytest.approx(1.0)


def test_paired_agreement_drops_nan_pairs_and_names_forms():
    a = paired_agreement(PRED + [float("nan")], REF + [3.0])
    assert a["n"] == 5 and a["bias"] == pytest.approx(0.2)
    assert a["icc_a1"] == pytest.approx(9.8 / 10.8) and a["icc_c1"] == pytest.approx(9.8 / 11.0)
    assert "absolute agreement" in a["icc_forms"]["icc_a1"] and "consistency" in a["icc_forms"]["icc_c1"]


def test_agreement_table_acdc_columns():
    rows = agreement_table({"EDV_ml": (PRED, REF), "EF_percent": ([50, 60, 55], [52, 58, 57])})
    assert [r["measurement"] for r in rows] == ["EDV_ml", "EF_percent"]
    assert rows[0]["corr"] == pytest.approx(pearson_r(PRED, REF))
    assert rows[0]["bias"] == pytest.approx(0.2) and rows[0]["sd"] == pytest.approx(math.sqrt(1.2))
    # EF diffs [-2, 2, -2]: bias -2/3, SD sqrt(((4/3)^2*2 + (8/3)^2) / 2)
    assert rows[1]["bias"] == pytest.approx(-2 / 3)
    assert rows[1]["sd"] == pytest.approx(math.sqrt(((4 / 3) ** 2 * 2 + (8 / 3) ** 2) / 2))


def test_summarize_by_hand_and_seeded_bootstrap():
    x = [1.0, 2.0, 3.0, 4.0, 10.0, float("nan")]
    s = summarize(x, n_bootstrap=500, seed=7)
    assert s["n"] == 5 and s["n_missing"] == 1
    assert s["mean"] == pytest.approx(4.0)
    assert s["sd"] == pytest.approx(math.sqrt((9 + 4 + 1 + 0 + 36) / 4))
    assert s["median"] == 3.0 and s["q1"] == 2.0 and s["q3"] == 4.0 and s["iqr"] == 2.0
    assert s["ci_low"] < s["mean"] < s["ci_high"]
    assert min(x[:5]) <= s["ci_low"] and s["ci_high"] <= max(x[:5])
    assert summarize(x, n_bootstrap=500, seed=7) == s
    assert summarize(x, n_bootstrap=500, seed=8)["ci_low"] != s["ci_low"]


def test_bootstrap_interval_covers_true_mean_at_nominal_rate():
    # normal data: a 95% percentile-bootstrap interval of the mean should cover the true mean
    # in roughly 95% of samples (n=40, 200 repetitions -> expect >= 85% allowing for
    # the known undercoverage of the percentile method and sampling noise)
    rng = np.random.default_rng(0)
    hits = 0
    for i in range(200):
        s = summarize(rng.normal(5.0, 2.0, 40), n_bootstrap=400, seed=i)
        hits += s["ci_low"] <= 5.0 <= s["ci_high"]
    assert hits >= 170


def test_degenerate_inputs_give_nan_not_errors():
    assert math.isnan(summarize([])["mean"])
    assert math.isnan(summarize([3.0])["sd"])
    assert math.isnan(pearson_r([1, 1, 1], [1, 2, 3]))
    assert math.isnan(bland_altman([1.0], [2.0])["sd_diff"])
    with pytest.raises(ValueError, match="equal length"):
        bland_altman([1, 2], [1])
    with pytest.raises(ValueError, match="ICC form"):
        icc([[1, 2], [3, 4]], form="ICC(9,9)")
