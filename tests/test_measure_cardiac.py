"""Cardiac function: Sunnybrook reference values, hand-computed stacks, cine curves, QC flags."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from medcnn._testing import require_shared_data
from medcnn.errors import ConfigError, DimensionError, InvalidLabelError
from medcnn.measure import CardiacLabels, cardiac_function, cine_function
from medcnn.measure.cardiac import slice_qc
from medcnn.volume import Geometry, Volume

# short-axis-like stack: 1.5 x 1.5 mm in plane, 8 mm slices along K (the coarsest axis)
G = Geometry((20, 20, 10), (1.5, 1.5, 8.0), (-40.0, 10.0, 55.0))
VOXEL_ML = 1.5 * 1.5 * 8.0 / 1000


def _stack(lv_slices, *, lv=(5, 12), myo_slices=None, rv_slices=(), geometry=G, labels=CardiacLabels()):
    """LV blood pool = square lv[0]:lv[1] in each listed slice; myocardium = a 1-pixel ring
    around it; RV = a 3 x 4 block."""
    arr = np.zeros(geometry.shape, np.uint8)
    a, b = lv
    for k in (lv_slices if myo_slices is None else myo_slices):
        arr[a - 1:b + 1, a - 1:b + 1, k] = labels.lv_myo
    for k in lv_slices:
        arr[a:b, a:b, k] = labels.lv_blood
    for k in rv_slices:
        arr[14:17, 2:6, k] = labels.rv_blood
    return Volume(arr, geometry, "label")


def _lv_count(lv, n):
    return (lv[1] - lv[0]) ** 2 * n


def _myo_count(lv, n):
    return ((lv[1] - lv[0] + 2) ** 2 - (lv[1] - lv[0]) ** 2) * n


def test_hand_computed_function_with_rv():
    ed = _stack(range(2, 8), lv=(5, 12), rv_slices=range(2, 7))
    es = _stack(range(2, 8), lv=(6, 10), rv_slices=range(3, 6))
    fn = cardiac_function(ed, es, heart_rate_bpm=72)
    edv = _lv_count((5, 12), 6) * VOXEL_ML
    esv = _lv_count((6, 10), 6) * VOXEL_ML
    assert fn.lv_edv_ml == pytest.approx(edv, rel=1e-12)
    assert fn.lv_esv_ml == pytest.approx(esv, rel=1e-12)
    assert fn.lv_sv_ml == pytest.approx(edv - esv)
    assert fn.lv_ef_percent == pytest.approx((edv - esv) / edv * 100)
    assert fn.lv_myocardial_mass_g == pytest.approx(_myo_count((5, 12), 6) * VOXEL_ML * 1.05)
    rv_edv, rv_esv = 12 * 5 * VOXEL_ML, 12 * 3 * VOXEL_ML
    assert fn.rv_edv_ml == pytest.approx(rv_edv) and fn.rv_esv_ml == pytest.approx(rv_esv)
    assert fn.rv_ef_percent == pytest.approx((rv_edv - rv_esv) / rv_edv * 100)
    assert fn.lv_cardiac_output_l_per_min == pytest.approx((edv - esv) * 72 / 1000)
    assert fn.heart_rate_source == "heart_rate_bpm argument"
    # LV SV 198 vs RV SV 24 voxels, myocardium 192 vs 120 voxels: both physiological checks trip
    assert fn.qc_codes == ["LV_RV_SV_MISMATCH", "MYO_ED_ES_MISMATCH"]
    row = fn.to_frame().iloc[0]
    assert row["lv_ef_percent"] == pytest.approx(fn.lv_ef_percent) and row["rv_note"] == ""
    d = fn.to_dict()
    assert "1.05 g/mL" in d["methods"]["lv_myocardial_mass_g"]


def test_rr_interval_and_no_rv_label():
    ed, es = _stack(range(2, 8)), _stack(range(2, 8), lv=(6, 10))
    fn = cardiac_function(ed, es, rr_interval_ms=800)
    assert fn.heart_rate_bpm == pytest.approx(75.0)
    assert math.isnan(fn.rv_edv_ml) and math.isnan(fn.rv_ef_percent)  # RV label 3 absent
    none = cardiac_function(ed, es)
    assert math.isnan(none.lv_cardiac_output_l_per_min) and math.isnan(none.heart_rate_bpm)
    with pytest.raises(ConfigError):
        cardiac_function(ed, es, heart_rate_bpm=60, rr_interval_ms=1000)


def test_label_meanings_come_from_config():
    labels = CardiacLabels(lv_blood=7, lv_myo=4, rv_blood=None)
    ed = _stack(range(2, 8), labels=labels)
    es = _stack(range(2, 8), lv=(6, 10), labels=labels)
    fn = cardiac_function(ed, es, labels=labels)
    assert fn.lv_edv_ml == pytest.approx(_lv_count((5, 12), 6) * VOXEL_ML)
    assert fn.lv_myo_ed_ml == pytest.approx(_myo_count((5, 12), 6) * VOXEL_ML)
    # with the default meanings labels 4 and 7 are unknown: refused, or ignored on request
    with pytest.raises(InvalidLabelError, match=r"unexpected label\(s\) 4 \(\d+ voxels\), 7"):
        cardiac_function(ed, es)
    assert "LV_EMPTY" in cardiac_function(ed, es, strict_labels=False).qc_codes
    with pytest.raises(ConfigError):
        CardiacLabels(lv_blood=1, lv_myo=1)
    with pytest.raises(ConfigError):
        CardiacLabels(lv_blood=0)


@pytest.mark.parametrize("case, code", [
    (dict(lv_slices=[4, 5]), "LV_FEW_SLICES"),
    (dict(lv_slices=[2, 3, 5, 6]), "LV_SLICE_GAP"),
    (dict(lv_slices=range(10)), "LV_NOT_COVERED"),
    (dict(lv_slices=[2, 3, 4, 5], myo_slices=[2, 3]), "MYO_MISSING_ON_LV_SLICES"),
    (dict(lv_slices=[]), "LV_EMPTY"),
])
def test_qc_flags_triggered(case, code):
    vol = _stack(**case)
    flags = slice_qc(vol, phase="ED")
    assert code in [f.code for f in flags]
    msg = next(f.message for f in flags if f.code == code)
    assert "ED" in msg
    clean = slice_qc(_stack(range(2, 8)))
    assert clean == []


def test_qc_details_and_no_myo_flag_without_myo_label():
    gap = slice_qc(_stack([2, 3, 5, 7]))
    assert "4, 6" in next(f.message for f in gap if f.code == "LV_SLICE_GAP")
    # myocardium absent everywhere (Sunnybrook ES style) -> not flagged
    arr = _stack(range(2, 8)).array.copy()
    arr[arr == 2] = 0
    assert slice_qc(Volume(arr, G, "label")) == []


def test_slice_axis_follows_coarsest_spacing():
    """With the 8 mm axis first (permuted array), slices run along axis 0."""
    g = Geometry((10, 20, 20), (8.0, 1.5, 1.5))
    arr = np.zeros(g.shape, np.uint8)
    arr[:, 5:12, 5:12] = 1          # fills every slice along axis 0 (not covered), neither end along axis 2
    codes = [f.code for f in slice_qc(Volume(arr, g, "label"))]
    assert codes == ["LV_NOT_COVERED"]


@pytest.mark.parametrize("apex_voxels, flagged", [(24, False), (25, True), (49, True)])
def test_coverage_flag_measures_the_edge_slice_against_the_largest(apex_voxels, flagged):
    """LV on every slice, 49 voxels on its largest slice: LV_NOT_COVERED only when the apical
    end slice still holds >= 50 % of that (25 of 49 voxels), never for merely touching an end."""
    arr = np.zeros(G.shape, np.uint8)
    arr[5:12, 5:12, :] = 1                       # 7 x 7 = 49 voxels on every slice
    arr[5:12, 5:12, 9] = 0
    plane = arr[:, :, 9]
    ii, jj = np.unravel_index(np.arange(apex_voxels), (7, 7))
    plane[5 + ii, 5 + jj] = 1
    flags = slice_qc(Volume(arr, G, "label"), phase="ES")
    assert ("LV_NOT_COVERED" in [f.code for f in flags]) == flagged
    assert (apex_voxels / 49 >= 0.5) == flagged     # the criterion, computed by hand


def test_each_qc_code_once_per_row():
    """A flag raised at ED and at ES is one code in the row (it was 'RV_ON_LAST_SLICE;RV_ON_LAST_SLICE'),
    with one message per phase."""
    ed = _stack(range(10), rv_slices=range(10))
    es = _stack(range(10), lv=(6, 10), rv_slices=range(10))
    fn = cardiac_function(ed, es, strict_labels=False)
    row = fn.to_row()
    codes = row["qc_codes"].split(";")
    assert len(codes) == len(set(codes)) and "RV_NOT_COVERED" in codes and "LV_NOT_COVERED" in codes
    assert row["qc_messages"].count("RV does not taper") == 2


def test_es_greater_than_ed_and_grid_difference():
    ed, es = _stack(range(2, 8), lv=(6, 10)), _stack(range(2, 8), lv=(5, 12))
    fn = cardiac_function(ed, es)
    assert "ESV_GT_EDV" in fn.qc_codes and fn.lv_ef_percent < 0
    es_other = Volume(es.array, Geometry(G.shape, (1.5, 1.5, 8.0), (0.0, 0.0, 0.0)), "label")
    assert "ED_ES_GRID_DIFFERS" in cardiac_function(_stack(range(2, 8)), es_other).qc_codes


def test_cine_curve_ed_not_first_frame():
    n = 12
    sizes = [7, 8, 9, 10, 11, 12, 10, 8, 6, 5, 4, 6]     # ED at frame 5, ES at frame 10
    arr = np.zeros((n,) + G.shape, np.uint8)
    for t, s in enumerate(sizes):
        arr[t, 3:3 + s, 3:3 + s, 2:8] = 1
    times = tuple(40.0 * t + 10 for t in range(n))
    cine = Volume(arr, G, "label", "time", times)
    res = cine_function(cine)
    assert res.function.ed_frame == 5 and res.function.es_frame == 10
    assert res.function.ed_time_ms == 210.0 and res.function.es_time_ms == 410.0
    assert np.allclose(res.curve["lv_volume_ml"], [s * s * 6 * VOXEL_ML for s in sizes])
    edv, esv = 144 * 6 * VOXEL_ML, 16 * 6 * VOXEL_ML
    assert res.function.lv_edv_ml == pytest.approx(edv) and res.function.lv_esv_ml == pytest.approx(esv)
    # heart rate from frame times: RR = (last - first) + interval = 440 + 40 ms
    assert res.function.heart_rate_bpm == pytest.approx(60000 / 480)
    assert "frame times" in res.function.heart_rate_source
    assert res.function.lv_cardiac_output_l_per_min == pytest.approx((edv - esv) * 125 / 1000)
    # explicit heart rate wins; frame times can be ignored
    assert cine_function(cine, heart_rate_bpm=60).function.heart_rate_bpm == 60
    assert math.isnan(cine_function(cine, use_frame_times=False).function.heart_rate_bpm)


def test_cine_empty_frames_and_bad_input():
    arr = np.zeros((4,) + G.shape, np.uint8)
    arr[1, 3:8, 3:8, 2:6] = 1
    arr[2, 3:6, 3:6, 2:6] = 1
    res = cine_function(Volume(arr, G, "label", "time"))
    assert (res.function.ed_frame, res.function.es_frame) == (1, 2)   # ES among non-empty frames
    assert "LV_EMPTY_FRAMES" in res.function.qc_codes
    with pytest.raises(DimensionError):
        cine_function(_stack(range(2, 8)))
    with pytest.raises(DimensionError):
        cardiac_function(Volume(arr, G, "label", "time"), _stack(range(2, 8)))


def _sunnybrook_reference():
    root = require_shared_data("sunnybrook")
    return {d["patient_id"]: d for d in json.loads((root / "reference.json").read_text())}


@pytest.mark.realdata
@pytest.mark.parametrize("patient", ["SCD0000101", "SCD0000201", "SCD0000301", "SCD0000401"])
def test_sunnybrook_reference(patient):
    from medcnn.io import read_volume

    ref = _sunnybrook_reference()[patient]
    nifti = require_shared_data("sunnybrook", "nifti")
    ed = read_volume(nifti / f"{patient}_ED_gt.nii.gz", kind="label")
    es = read_volume(nifti / f"{patient}_ES_gt.nii.gz", kind="label")
    fn = cardiac_function(ed, es, labels=CardiacLabels(lv_blood=1, lv_myo=2, rv_blood=None))
    assert fn.lv_edv_ml == pytest.approx(ref["ED"]["LV_bloodpool_mL"], abs=0.01)
    assert fn.lv_esv_ml == pytest.approx(ref["ES"]["LV_bloodpool_mL"], abs=0.01)
    assert fn.lv_ef_percent == pytest.approx(ref["EF_percent_from_contours"], abs=0.01)
    assert fn.lv_myo_ed_ml == pytest.approx(ref["ED"]["LV_myocardium_mL"], abs=0.01)
    # ES maps carry no myocardium contour: that must not raise a myocardium flag
    assert "MYO_MISSING_ON_LV_SLICES" not in [f.code for f in fn.qc_flags if f.phase == "ES"]
    # the reference's contoured-slice count; all slices contoured -> LV reaches both stack ends
    assert int(np.any(ed.array == 1, axis=(0, 1)).sum()) == ref["ED"]["contoured_slices"]
    ed_codes = {f.code for f in fn.qc_flags if f.phase == "ED"}
    area = np.sum(ed.array == 1, axis=(0, 1))          # LV voxels per slice (slices along the third axis)
    assert ("LV_NOT_COVERED" in ed_codes) == (min(area[0], area[-1]) >= 0.5 * area.max())
