"""evaluate_case / aggregate: rows, label selection, sparse slices, lesions, settings columns."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medcnn.metrics import dice, surface_metrics
from medcnn.metrics.evaluate import aggregate, evaluate_case, metric_columns, sparse_slice_mask, volume_agreement
from medcnn.volume import Geometry, Volume

SPACING = (1.2, 1.2, 8.0)


def lab(arr, spacing=SPACING, source=None) -> Volume:
    arr = np.asarray(arr)
    return Volume(arr, Geometry(arr.shape, spacing, source=source), kind="label")


def cardiac_like(shift=0):
    ref = np.zeros((24, 24, 8), np.uint8)
    i, j = np.ogrid[:24, :24]
    r2 = (i - 12) ** 2 + (j - 12) ** 2
    for k in range(2, 6):  # annotated slices 2..5 only
        ref[..., k][r2 <= 36] = 2
        ref[..., k][r2 <= 16] = 1
    pred = np.roll(ref, shift, axis=0)
    return pred, ref


def test_rows_have_every_column_and_settings():
    pred, ref = cardiac_like(1)
    rows = evaluate_case(lab(pred), lab(ref, source="/x/case7.nii.gz"), tolerance_mm=1.5, empty_policy="best-nan")
    assert [r["label"] for r in rows] == ["1", "2"]
    for r in rows:
        assert list(r) == metric_columns()
        assert r["case_id"] == "case7" and r["empty_policy"] == "best-nan" and r["nsd_tolerance_mm"] == 1.5
        assert r["error"] == "" and r["resampled"] is False
    m = surface_metrics(lab(pred), lab(ref), label=1, tolerance_mm=1.5)
    assert rows[0]["hd95_mm"] == m["hd95_mm"] and rows[0]["nsd"] == m["nsd"]
    assert rows[0]["dice"] == dice(lab(pred), lab(ref), label=1)


def test_named_label_groups_and_percentile_column():
    pred, ref = cardiac_like(1)
    rows = evaluate_case(lab(pred), lab(ref), labels={"cavity": 1, "whole": (1, 2)}, percentile=99)
    assert [r["label"] for r in rows] == ["cavity", "whole"]
    assert rows[1]["label_values"] == "1,2" and "hd99_mm" in rows[1] and "hd95_mm" not in rows[1]
    whole = surface_metrics(lab(pred), lab(ref), label=(1, 2), percentile=99)
    assert rows[1]["hd99_mm"] == whole["hd99_mm"]


def test_sparse_slices_ignore_unannotated_slices():
    pred, ref = cardiac_like(0)
    pred[..., 7] = 1  # prediction on a slice the expert did not contour
    keep, axis, n = sparse_slice_mask(lab(ref))
    assert axis == 2 and n == 4 and keep.shape == (1, 1, 8)
    dense = evaluate_case(lab(pred), lab(ref), labels=[1])[0]
    sparse = evaluate_case(lab(pred), lab(ref), labels=[1], sparse_slices=True)[0]
    assert dense["dice"] < 1 and dense["pred_volume_ml"] > dense["ref_volume_ml"]
    assert sparse["dice"] == 1.0 and sparse["hd_mm"] == 0.0 and sparse["volume_diff_ml"] == 0.0
    assert sparse["sparse_slices"] == "axis 2: 4 of 8 slices"


def test_lesion_columns_only_for_lesion_labels():
    ref = np.zeros((20, 20, 6), np.uint8)
    ref[2:5, 2:5, 1:3] = 1
    ref[10:13, 10:13, 1:3] = 1
    ref[15:18, 2:5, 1:3] = 2
    pred = ref.copy()
    pred[10:13, 10:13, 1:3] = 0
    rows = evaluate_case(lab(pred, (1, 1, 1)), lab(ref, (1, 1, 1)), lesion_labels=["1"])
    by = {r["label"]: r for r in rows}
    assert (by["1"]["lesion_tp"], by["1"]["lesion_fn"], by["1"]["lesion_fp"]) == (1, 1, 0)
    assert math.isnan(by["2"]["lesion_tp"])
    with pytest.raises(ValueError, match="lesion labels"):
        evaluate_case(lab(pred, (1, 1, 1)), lab(ref, (1, 1, 1)), lesion_labels=["7"])


def test_resample_flag_recorded():
    pred, ref = cardiac_like(0)
    g = Geometry(pred.shape, SPACING, origin=(0.0, 0.0, 0.0))
    moved = Volume(np.flip(pred, 0).copy(), Geometry(pred.shape, SPACING, origin=(23 * 1.2, 0, 0),
                                                    direction=((-1, 0, 0), (0, 1, 0), (0, 0, 1))), "label")
    rows = evaluate_case(moved, Volume(ref, g, "label"), resample=True)
    assert all(r["resampled"] and r["dice"] == 1.0 for r in rows)


def test_aggregate_and_volume_agreement_skip_error_rows():
    rows = []
    for s in range(4):
        pred, ref = cardiac_like(s)
        rows += evaluate_case(lab(pred), lab(ref), case_id=f"c{s}")
    rows.append({"case_id": "bad", "label": "", "error": "boom"})
    agg = aggregate(rows, n_bootstrap=200)
    assert set(agg) == {"1", "2"}
    d = [r["dice"] for r in rows if r.get("label") == "1"]
    assert agg["1"]["dice"]["n"] == 4 and agg["1"]["dice"]["mean"] == pytest.approx(np.mean(d))
    va = volume_agreement(rows)
    assert va["1"]["n"] == 4 and va["1"]["bias"] == pytest.approx(0.0)  # a shift keeps the volume
