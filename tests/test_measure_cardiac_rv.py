"""Right-ventricular function and the physiological QC flags on synthetic label stacks whose
voxel counts are chosen by hand (every expected number is computed here, not by medcnn)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from medcnn.cli import main
from medcnn.cli.measure import read_table
from medcnn.io import write_volume
from medcnn.measure import CardiacLabels, cardiac_function, cine_function
from medcnn.measure.cardiac import (
    MYO_ED_ES_FRACTION,
    MYO_FRAME_FRACTION,
    QC_FLAGS,
    SV_MISMATCH_FRACTION,
    slice_qc,
)
from medcnn.volume import Geometry, Volume

# oblique-free but awkward: anisotropic, slices along J (the coarsest axis), non-zero origin
G = Geometry((20, 10, 30), (1.25, 9.0, 1.5), (-33.0, 12.5, 70.0))
VOXEL_ML = 1.25 * 9.0 * 1.5 / 1000
SLICES = range(2, 8)          # 6 slices, never touching the ends (0 and 9)


def stack(lv: int, myo: int, rv: int, *, slices=SLICES, rv_slices=None, labels=CardiacLabels()) -> Volume:
    """Per slice: ``lv`` LV voxels in rows 0-6, ``myo`` myocardium voxels in rows 7-12, ``rv``
    RV voxels in rows 13-19 (row-major fill of the 30-voxel-wide in-plane grid)."""
    arr = np.zeros(G.shape, np.uint8)

    def fill(k: int, rows: range, n: int, value: int | None) -> None:
        if n and value is not None:
            plane = arr[rows.start:rows.stop, k, :].reshape(-1).copy()
            assert n <= plane.size
            plane[:n] = value
            arr[rows.start:rows.stop, k, :] = plane.reshape(len(rows), -1)

    for k in slices:
        fill(k, range(0, 7), lv, labels.lv_blood)
        fill(k, range(7, 13), myo, labels.lv_myo)
    for k in (slices if rv_slices is None else rv_slices):
        fill(k, range(13, 20), rv, labels.rv_blood)
    return Volume(arr, G, "label")


def test_rv_function_hand_computed():
    ed, es = stack(120, 90, 130, rv_slices=range(2, 7)), stack(50, 92, 60, rv_slices=range(3, 7))
    fn = cardiac_function(ed, es, heart_rate_bpm=64)
    rv_edv, rv_esv = 130 * 5 * VOXEL_ML, 60 * 4 * VOXEL_ML
    assert fn.rv_edv_ml == pytest.approx(rv_edv, rel=1e-12)
    assert fn.rv_esv_ml == pytest.approx(rv_esv, rel=1e-12)
    assert fn.rv_sv_ml == pytest.approx(rv_edv - rv_esv, rel=1e-12)
    assert fn.rv_ef_percent == pytest.approx((650 - 240) / 650 * 100, rel=1e-12)
    assert fn.rv_cardiac_output_l_per_min == pytest.approx((rv_edv - rv_esv) * 64 / 1000, rel=1e-12)
    assert fn.lv_myo_es_ml == pytest.approx(92 * 6 * VOXEL_ML) and fn.rv_note == ""
    # LV SV 420 voxels, RV SV 410 (2.4 % apart); myocardium 540 vs 552 (2.2 %): no physiological flag.
    # These band-shaped stacks put the LV on the array edge beside its myocardium, not inside it: only
    # the enclosure check trips (tests/test_measure_cardiac_anatomy.py); the RV band touches the LV.
    assert fn.qc_codes == ["LV_NOT_ENCLOSED"]
    row = fn.to_row()
    assert row["rv_ef_percent"] == pytest.approx(fn.rv_ef_percent) and row["qc_codes"] == "LV_NOT_ENCLOSED"


def test_no_rv_label_gives_nan_and_a_note_not_zeros():
    ed, es = stack(120, 90, 0), stack(50, 90, 0)
    fn = cardiac_function(ed, es, heart_rate_bpm=60)
    for k in ("rv_edv_ml", "rv_esv_ml", "rv_sv_ml", "rv_ef_percent", "rv_cardiac_output_l_per_min"):
        assert math.isnan(getattr(fn, k)), k
    assert fn.rv_note == "RV not measured: RV label 3 absent from both maps"
    none = cardiac_function(ed, es, labels=CardiacLabels(rv_blood=None))
    assert math.isnan(none.rv_edv_ml) and none.rv_note == "RV not measured: no RV label configured"
    assert not {"LV_RV_SV_MISMATCH", "RV_EMPTY"} & set(fn.qc_codes)
    # cine without any RV: the RV curve is NaN, not 0
    cine = Volume(np.stack([ed.array, es.array]), G, "label", "time")
    res = cine_function(cine)
    assert res.curve["rv_volume_ml"].isna().all() and "absent" in res.function.rv_note
    assert res.curve["lv_myo_volume_ml"].tolist() == pytest.approx([540 * VOXEL_ML] * 2)


@pytest.mark.parametrize("rv_slices, codes", [
    (range(0, 6), set()),                 # touching one end is normal (the base end of a short-axis stack)
    (range(4, 10), set()),
    (range(0, 10), {"RV_NOT_COVERED"}),   # as wide on both end slices as on its largest: not covered
    (range(1, 9), set()),
])
def test_rv_coverage_of_the_stack(rv_slices, codes):
    flags = slice_qc(stack(100, 80, 60, rv_slices=rv_slices), phase="ED")
    assert {f.code for f in flags} == codes
    for f in flags:
        assert "at ED" in f.message and "first slice 100%, last slice (9) 100%" in f.message


def test_rv_end_flags_need_an_rv_label():
    arr = stack(100, 80, 60, rv_slices=range(0, 10)).array
    arr[arr == 3] = 4          # the same voxels under a label the config does not call RV
    assert slice_qc(Volume(arr, G, "label"), labels=CardiacLabels(rv_blood=None)) == []


# LV SV = 100 - 40 = 60 voxels per slice; flagged when |LV SV - RV SV| > 35 % of the larger SV:
# RV SV 38 (22 > 21) and 93 (33 > 32.55) trip, 39 (21) and 92 (32 < 32.2) do not
@pytest.mark.parametrize("rv_es, flagged", [(61, False), (62, True), (8, False), (7, True), (40, False)])
def test_lv_rv_stroke_volume_mismatch(rv_es, flagged):
    fn = cardiac_function(stack(100, 80, 100), stack(40, 80, rv_es))
    lv_sv, rv_sv = 60, 100 - rv_es
    expected = abs(lv_sv - rv_sv) > SV_MISMATCH_FRACTION * max(lv_sv, rv_sv)
    assert expected == flagged          # the hand-chosen counts sit where we think
    assert ("LV_RV_SV_MISMATCH" in fn.qc_codes) == flagged
    if flagged:
        msg = next(f.message for f in fn.qc_flags if f.code == "LV_RV_SV_MISMATCH")
        lv_ml, rv_ml = (float(x) for x in re.findall(r"SV ([\d.]+) mL", msg))
        assert lv_ml == pytest.approx(lv_sv * 6 * VOXEL_ML, abs=0.006)
        assert rv_ml == pytest.approx(rv_sv * 6 * VOXEL_ML, abs=0.006)
        assert f"differ by {abs(lv_sv - rv_sv) / max(lv_sv, rv_sv):.0%}" in msg and "tolerance 35%" in msg


# myocardium 100 voxels per slice at ED; tolerance 25 % of the larger
@pytest.mark.parametrize("myo_es, flagged", [(76, False), (74, True), (133, False), (134, True), (100, False)])
def test_myocardium_ed_es_mismatch(myo_es, flagged):
    fn = cardiac_function(stack(100, 100, 100), stack(40, myo_es, 40))
    expected = abs(100 - myo_es) > MYO_ED_ES_FRACTION * max(100, myo_es)
    assert expected == flagged
    assert ("MYO_ED_ES_MISMATCH" in fn.qc_codes) == flagged
    assert fn.lv_myo_ed_ml == pytest.approx(600 * VOXEL_ML) and fn.lv_myo_es_ml == pytest.approx(6 * myo_es * VOXEL_ML)


def test_myocardium_check_needs_both_phases():
    fn = cardiac_function(stack(100, 100, 100), stack(40, 0, 40))   # ES without myocardium (Sunnybrook style)
    assert math.isnan(fn.lv_myo_es_ml) and "MYO_ED_ES_MISMATCH" not in fn.qc_codes


def _cine(myo_per_frame, lv_per_frame=None):
    n = len(myo_per_frame)
    lv = lv_per_frame or [100 - 5 * t for t in range(n)]
    rv = [100 - 5 * t for t in range(n)]
    arr = np.stack([stack(lv[t], myo_per_frame[t], rv[t]).array for t in range(n)])
    return Volume(arr, G, "label", "time", tuple(30.0 * t for t in range(n)))


def test_myocardium_frame_outliers():
    # median of [100, 100, 102, 98, 100, 76, 124] = 100; 24 % off is within the 25 % tolerance
    ok = cine_function(_cine([100, 100, 102, 98, 100, 76, 124]))
    assert "MYO_FRAME_OUTLIER" not in ok.function.qc_codes
    bad = cine_function(_cine([100, 100, 102, 98, 100, 74, 126]))
    flag = next(f for f in bad.function.qc_flags if f.code == "MYO_FRAME_OUTLIER")
    assert "frame(s) 5, 6" in flag.message and "25%" in flag.message
    med = 100 * 6 * VOXEL_ML
    assert f"({med:.2f} mL)" in flag.message
    vals = np.array([100, 100, 102, 98, 100, 74, 126], float)
    assert (np.flatnonzero(np.abs(vals - np.median(vals)) > MYO_FRAME_FRACTION * np.median(vals)) == [5, 6]).all()
    # a frame that lost its myocardium entirely is an outlier too
    lost = cine_function(_cine([100, 100, 0, 100]))
    assert "frame(s) 2 " in next(f.message for f in lost.function.qc_flags if f.code == "MYO_FRAME_OUTLIER")


def test_qc_flag_catalogue_states_the_tolerances():
    assert "35%" in QC_FLAGS["LV_RV_SV_MISMATCH"] and "25%" in QC_FLAGS["MYO_ED_ES_MISMATCH"]
    assert "25%" in QC_FLAGS["MYO_FRAME_OUTLIER"]
    assert "50%" in QC_FLAGS["LV_NOT_COVERED"] and "50%" in QC_FLAGS["RV_NOT_COVERED"]
    assert not {"RV_ON_FIRST_SLICE", "RV_ON_LAST_SLICE", "LV_ON_FIRST_SLICE", "LV_ON_LAST_SLICE"} & set(QC_FLAGS)


def test_measure_cli_cardiac_and_cine_report_rv_and_the_new_flags(tmp_path):
    write_volume(stack(100, 100, 100, rv_slices=range(0, 6)), tmp_path / "p_ED.nii.gz")
    write_volume(stack(40, 70, 50), tmp_path / "p_ES.nii.gz")
    write_volume(_cine([100, 100, 102, 98, 100, 74, 126]), tmp_path / "cine.nii.gz")
    out = tmp_path / "m.csv"
    assert main(["measure", "--cardiac", str(tmp_path / "p_ED.nii.gz"), str(tmp_path / "p_ES.nii.gz"),
                 "--out", str(out), "--heart-rate", "60"]) == 0
    row = read_table(tmp_path / "m.cardiac.csv").iloc[0]
    rv_edv, rv_esv = 100 * 6 * VOXEL_ML, 50 * 6 * VOXEL_ML
    assert row["rv_edv_ml"] == pytest.approx(rv_edv) and row["rv_esv_ml"] == pytest.approx(rv_esv)
    assert row["rv_ef_percent"] == pytest.approx(50.0)
    assert row["rv_cardiac_output_l_per_min"] == pytest.approx((rv_edv - rv_esv) * 60 / 1000)
    # LV SV 60 vs RV SV 50 voxels per slice (17 % < 35 %); myocardium 100 vs 70 (30 % > 25 %); the RV on
    # slice 0 at ED (the base end) is no flag; the band-shaped LV lies on the array edge (not enclosed)
    assert row["qc_codes"].split(";") == ["LV_NOT_ENCLOSED", "MYO_ED_ES_MISMATCH"]
    from medcnn.report.tables import metadata_path  # column meanings live in the CSVW sidecar

    sidecar = metadata_path(tmp_path / "m.cardiac.csv").read_text()
    assert "LV_RV_SV_MISMATCH = |LV SV - RV SV| > 35%" in sidecar
    assert main(["measure", "--cine", str(tmp_path / "cine.nii.gz"), "--out", str(tmp_path / "c.json")]) == 0
    doc = json.loads((tmp_path / "c.json").read_text())
    assert "MYO_FRAME_OUTLIER" in doc["cardiac"][0]["qc_codes"]
    assert [r["rv_volume_ml"] for r in doc["cine_curves"]] == pytest.approx([(100 - 5 * t) * 6 * VOXEL_ML
                                                                             for t in range(7)])
