"""Anatomical plausibility flags LV_NOT_ENCLOSED and RV_NOT_ADJACENT: synthetic maps on both sides
of each tolerance (every expected number computed here by hand or by brute force over pixel
centres), the experts' ACDC / Sunnybrook maps (never flagged), and the calibration script."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from medcnn.io import read_volume, write_volume
from medcnn.measure import CardiacLabels, cardiac_function, cine_function
from medcnn.measure.anatomy import DETACHED_DISTANCE_MM, anatomy_statistics
from medcnn.measure.cardiac import LV_DETACHED_FRACTION, LV_OPEN_FRACTION, QC_FLAGS, RV_LV_GAP_MM, anatomy_qc
from medcnn.volume import Geometry, Volume

REPO = Path(__file__).resolve().parents[1]
NEW = {"LV_NOT_ENCLOSED", "RV_NOT_ADJACENT"}
# in-plane pixels 1.25 x 1.5 mm (anisotropic), 8 mm slices, non-zero origin
INPLANE = (1.25, 1.5)
SLICE_MM = 8.0
N_SLICES = 8
PLANE = (64, 56)


def geometry(slice_axis: int) -> Geometry:
    """A grid with the slices along ``slice_axis`` (the coarsest), the in-plane axes in order."""
    spacing = list(INPLANE)
    spacing.insert(slice_axis, SLICE_MM)
    shape = list(PLANE)
    shape.insert(slice_axis, N_SLICES)
    return Geometry(tuple(shape), tuple(spacing), (-31.0, 12.5, 70.0))


def disc(centre: tuple[float, float], radius_mm: float) -> np.ndarray:
    """In-plane mask of the pixel centres within ``radius_mm`` of ``centre`` (mm)."""
    ii, jj = np.meshgrid(np.arange(PLANE[0]) * INPLANE[0], np.arange(PLANE[1]) * INPLANE[1], indexing="ij")
    return (ii - centre[0]) ** 2 + (jj - centre[1]) ** 2 <= radius_mm ** 2


def heart(planes: dict[int, np.ndarray], slice_axis: int = 2) -> Volume:
    """A label Volume from per-slice in-plane label arrays (slices along ``slice_axis``)."""
    arr = np.zeros((N_SLICES, *PLANE), np.uint8)
    for k, plane in planes.items():
        arr[k] = plane
    return Volume(np.moveaxis(arr, 0, slice_axis).copy(), geometry(slice_axis), "label")


CENTRE = (25.0, 25.0)     # mm from the first pixel centre; the plane spans 80 x 84 mm
FAR = (62.0, 68.0)        # 56 mm from CENTRE: a disc of radius <= 10 mm there is > 25 mm from the ring


def ring_plane(*, blood_r=10.0, wall_mm=6.0, blood_centre=CENTRE, rv_gap_mm=None) -> np.ndarray:
    """Myocardium ring (outer radius blood_r + wall) around CENTRE; the blood-pool disc at
    ``blood_centre``; an RV block whose first row lies ``rv_gap_mm`` beyond the ring's last
    row along the first in-plane axis (``None``: no RV)."""
    plane = np.zeros(PLANE, np.uint8)
    plane[disc(CENTRE, blood_r + wall_mm)] = 2
    plane[disc(CENTRE, blood_r)] = 0
    plane[disc(blood_centre, blood_r)] = 1
    if rv_gap_mm is not None:
        last = int(np.flatnonzero((plane == 2).any(axis=1))[-1])     # the ring's last row
        first = last + int(round(rv_gap_mm / INPLANE[0]))           # RV row that far (centre to centre)
        plane[first:first + 6, 8:28] = 3                           # columns 12-40.5 mm, across the centre
    return plane


def codes(fn) -> set[str]:
    return set(fn.qc_codes) & NEW


# ------------------------------------------------------------------ LV_NOT_ENCLOSED
@pytest.mark.parametrize("slice_axis", [0, 1, 2])
def test_ring_around_disc_is_enclosed_and_a_displaced_disc_is_not(slice_axis):
    good = heart({k: ring_plane() for k in range(1, 7)}, slice_axis)
    # the same ring, empty, and the blood pool 56 mm away from its centre, outside the ring (radius 16 mm)
    bad = heart({k: ring_plane(blood_centre=FAR) for k in range(1, 7)}, slice_axis)
    st_good = anatomy_statistics(good.array, good.spacing, lv_blood=1, lv_myo=2, rv_blood=3)
    st_bad = anatomy_statistics(bad.array, bad.spacing, lv_blood=1, lv_myo=2, rv_blood=3)
    assert st_good.slice_axis == slice_axis and st_good.lv_slices == 6
    assert st_good.lv_open_fraction == 0.0 and st_good.lv_detached_fraction == 0.0
    assert st_bad.lv_open_fraction == 1.0 and st_bad.lv_detached_fraction == 1.0
    # the blob's nearest myocardium: brute force over the pixel centres of one slice
    plane = ring_plane(blood_centre=FAR)
    pts = {v: np.argwhere(plane == v) * np.array(INPLANE) for v in (1, 2)}
    assert st_bad.lv_component_distance_mm == pytest.approx(cdist(pts[1], pts[2]).min(), rel=1e-9)
    assert st_bad.lv_component_distance_mm > DETACHED_DISTANCE_MM
    assert anatomy_qc(good) == []
    flags = anatomy_qc(bad, phase="ED")
    assert [f.code for f in flags] == ["LV_NOT_ENCLOSED"] and flags[0].phase == "ED"
    assert "100%" in flags[0].message and "at ED" in flags[0].message
    fn = cardiac_function(good, good)
    assert codes(fn) == set() and codes(cardiac_function(good, bad)) == {"LV_NOT_ENCLOSED"}


def square_plane(open_sides: int) -> np.ndarray:
    """A 10 x 10 blood pool with a 3-pixel myocardium wall on 4 - ``open_sides`` of its sides
    (never the corners): its outer 4-neighbour ring is 40 pixels, 10 per side; a patch of
    myocardium far away keeps the label in the map when every side is open."""
    plane = np.zeros(PLANE, np.uint8)
    plane[55:58, 45:48] = 2
    a, b = 20, 30
    plane[a:b, a:b] = 1
    walls = [(slice(a - 3, a), slice(a, b)), (slice(b, b + 3), slice(a, b)),
             (slice(a, b), slice(a - 3, a)), (slice(a, b), slice(b, b + 3))]
    for rows, cols in walls[open_sides:]:
        plane[rows, cols] = 2
    return plane


@pytest.mark.parametrize("open_sides,flagged", [(0, False), (1, False), (2, False), (3, True), (4, True)])
def test_open_fraction_is_the_share_of_the_ring_on_background(open_sides, flagged):
    vol = heart({k: square_plane(open_sides) for k in range(2, 7)})
    st = anatomy_statistics(vol.array, vol.spacing, lv_blood=1, lv_myo=2, rv_blood=None)
    assert st.lv_open_fraction == pytest.approx(open_sides * 10 / 40)   # hand count: 10 ring pixels per side
    # 2 open sides = exactly the tolerance (50 %): not above it
    assert (st.lv_open_fraction > LV_OPEN_FRACTION) is flagged
    assert bool(anatomy_qc(vol, labels=CardiacLabels(rv_blood=None))) is flagged


def test_open_basal_slices_do_not_flag_but_a_mostly_open_stack_does():
    """The median over the LV slices: 3 of 8 fully open slices (an outflow tract) pass, 5 of 8 do not."""
    closed, opened = square_plane(0), square_plane(4)
    base_open = heart({k: opened if k < 3 else closed for k in range(8)})
    mostly_open = heart({k: opened if k < 5 else closed for k in range(8)})
    assert anatomy_statistics(base_open.array, base_open.spacing, lv_blood=1, lv_myo=2,
                              rv_blood=None).lv_open_fraction_max == 1.0
    assert anatomy_qc(base_open) == []
    assert [f.code for f in anatomy_qc(mostly_open)] == ["LV_NOT_ENCLOSED"]


def test_the_array_edge_counts_as_background():
    plane = np.zeros(PLANE, np.uint8)
    plane[0:10, 20:30] = 1            # a blood pool on the array's first row
    plane[10:13, 20:30] = 2           # myocardium below it only
    vol = heart({k: plane for k in range(2, 6)})
    st = anatomy_statistics(vol.array, vol.spacing, lv_blood=1, lv_myo=2, rv_blood=None)
    assert st.lv_open_fraction == pytest.approx(30 / 40)    # edge row + both sides open, 10 ring pixels each


@pytest.mark.parametrize("blob_slices,flagged", [(1, False), (3, True)])
def test_a_detached_blob_beside_an_enclosed_cavity(blob_slices, flagged):
    """The true cavity enclosed on 6 slices, plus a disc labelled LV far beyond the ring on
    ``blob_slices`` slices: flagged when it holds more than LV_DETACHED_FRACTION of the blood pool
    (one slice: about 6 %, three: about 15 %)."""
    planes = {}
    for k in range(1, 7):
        p = ring_plane()
        if k < 1 + blob_slices:
            p[disc(FAR, 6.0)] = 1
        planes[k] = p
    vol = heart(planes)
    st = anatomy_statistics(vol.array, vol.spacing, lv_blood=1, lv_myo=2, rv_blood=None)
    blob = int(disc(FAR, 6.0).sum()) * blob_slices
    cavity = int(disc(CENTRE, 10.0).sum()) * 6
    assert st.lv_detached_fraction == pytest.approx(blob / (blob + cavity), rel=1e-12)
    assert (blob / (blob + cavity) > LV_DETACHED_FRACTION) is flagged
    assert st.lv_open_fraction == 0.0 or blob_slices >= 3      # the median slice holds the cavity only
    assert ("LV_NOT_ENCLOSED" in {f.code for f in anatomy_qc(vol)}) is flagged


def test_no_myocardium_label_no_enclosure_check():
    """Sunnybrook's ES maps carry no myocardium: the enclosure check does not apply."""
    plane = np.zeros(PLANE, np.uint8)
    plane[disc(CENTRE, 10.0)] = 1
    vol = heart({k: plane for k in range(1, 7)})
    st = anatomy_statistics(vol.array, vol.spacing, lv_blood=1, lv_myo=2, rv_blood=3)
    assert math.isnan(st.lv_open_fraction) and math.isnan(st.lv_detached_fraction)
    assert anatomy_qc(vol) == [] and anatomy_qc(vol, labels=CardiacLabels(lv_myo=None, rv_blood=None)) == []


# ------------------------------------------------------------------ RV_NOT_ADJACENT
@pytest.mark.parametrize("gap_mm,flagged", [(INPLANE[0], False), (7.5, False), (30.0, True)])
def test_rv_touching_or_far(gap_mm, flagged):
    vol = heart({k: ring_plane(rv_gap_mm=gap_mm) for k in range(1, 7)})
    st = anatomy_statistics(vol.array, vol.spacing, lv_blood=1, lv_myo=2, rv_blood=3)
    plane = ring_plane(rv_gap_mm=gap_mm)
    rv = np.argwhere(plane == 3) * np.array(INPLANE)
    lv = np.argwhere((plane == 1) | (plane == 2)) * np.array(INPLANE)
    brute = cdist(rv, lv).min()                           # nearest pixel centres, by brute force
    assert brute == pytest.approx(gap_mm) and st.rv_lv_distance_mm == pytest.approx(brute, rel=1e-12)
    assert st.rv_shared_slices == 6
    assert (st.rv_lv_distance_mm > RV_LV_GAP_MM) is flagged
    flags = anatomy_qc(vol, phase="ES")
    assert [f.code for f in flags] == (["RV_NOT_ADJACENT"] if flagged else [])
    if flagged:
        assert "30.0 mm" in flags[0].message and "at ES" in flags[0].message


def test_rv_far_on_few_slices_is_the_median_that_counts():
    """The RV touches the LV on 4 of 6 shared slices and lies 30 mm away on 2: no flag."""
    planes = {k: ring_plane(rv_gap_mm=INPLANE[0] if k < 5 else 30.0) for k in range(1, 7)}
    vol = heart(planes)
    st = anatomy_statistics(vol.array, vol.spacing, lv_blood=1, lv_myo=2, rv_blood=3)
    assert st.rv_lv_distance_mm == pytest.approx(INPLANE[0]) and st.rv_lv_distance_max_mm == pytest.approx(30.0)
    assert anatomy_qc(vol) == []


def test_rv_and_lv_on_different_slices():
    planes = {k: ring_plane() for k in range(1, 4)}
    rv_only = np.zeros(PLANE, np.uint8)
    rv_only[45:55, 10:20] = 3
    planes.update({k: rv_only for k in range(5, 8)})
    vol = heart(planes)
    st = anatomy_statistics(vol.array, vol.spacing, lv_blood=1, lv_myo=2, rv_blood=3)
    assert st.rv_shared_slices == 0 and math.isinf(st.rv_lv_distance_mm)
    flags = anatomy_qc(vol)
    assert [f.code for f in flags] == ["RV_NOT_ADJACENT"] and "share no slice" in flags[0].message
    # no RV label configured, or none in the map: nothing to check
    assert anatomy_qc(vol, labels=CardiacLabels(rv_blood=None)) == []
    assert anatomy_qc(heart({k: ring_plane() for k in range(1, 4)})) == []


def test_cine_function_checks_its_ed_and_es_frames():
    good = np.moveaxis(np.stack([ring_plane(rv_gap_mm=INPLANE[0])] * N_SLICES), 0, 2)
    small = np.moveaxis(np.stack([ring_plane(blood_r=8.0, wall_mm=10.0, rv_gap_mm=30.0)] * N_SLICES), 0, 2)
    g = geometry(2)
    cine = Volume(np.stack([good, good, small, good]), g, "label", "time")
    fn = cine_function(cine).function
    assert (fn.ed_frame, fn.es_frame) == (0, 2)
    assert [(f.code, f.phase) for f in fn.qc_flags if f.code in NEW] == [("RV_NOT_ADJACENT", "ES (frame 2)")]


def test_flags_documented_with_their_tolerances():
    assert f"{LV_OPEN_FRACTION:.0%}" in QC_FLAGS["LV_NOT_ENCLOSED"]
    assert f"{LV_DETACHED_FRACTION:.0%}" in QC_FLAGS["LV_NOT_ENCLOSED"]
    assert f"{DETACHED_DISTANCE_MM:g} mm" in QC_FLAGS["LV_NOT_ENCLOSED"]
    assert f"{RV_LV_GAP_MM:g} mm" in QC_FLAGS["RV_NOT_ADJACENT"]


# ------------------------------------------------------------------ experts' maps, calibration script
@pytest.mark.slow
@pytest.mark.realdata
def test_no_expert_reference_is_flagged(shared_data):
    """All 80 ACDC patients (ED + ES = 160 maps) and the 4 Sunnybrook patients: neither flag, and
    one map's RV-LV distance agrees with a brute-force search over pixel centres."""
    from medcnn._testing import require_shared_data

    flagged = []
    for name, labels in (("acdc", CardiacLabels()), ("sunnybrook", CardiacLabels(rv_blood=None))):
        root = require_shared_data(name)
        by: dict[str, dict[str, Path]] = {}
        for e in json.loads((root / "dataset.json").read_text())["training"]:
            by.setdefault(e["patient"], {})[e["phase"]] = root / e["label"]
        assert len(by) == (80 if name == "acdc" else 4)
        for patient, ph in sorted(by.items()):
            fn = cardiac_function(read_volume(ph["ED"], kind="label"), read_volume(ph["ES"], kind="label"),
                                  labels=labels)
            flagged += [(patient, f.phase, f.code) for f in fn.qc_flags if f.code in NEW]
    assert flagged == []
    vol = read_volume(require_shared_data("acdc") / "patient043_ED_gt.nii.gz", kind="label")
    arr, sp = np.asarray(vol.array), np.asarray(vol.spacing)
    st = anatomy_statistics(arr, vol.spacing, lv_blood=1, lv_myo=2, rv_blood=3)
    per_slice = [cdist(np.argwhere(arr[..., k] == 3) * sp[:2], np.argwhere(np.isin(arr[..., k], (1, 2))) * sp[:2]).min()
                 for k in range(arr.shape[2]) if (arr[..., k] == 3).any() and np.isin(arr[..., k], (1, 2)).any()]
    assert st.rv_lv_distance_mm == pytest.approx(float(np.median(per_slice)), rel=1e-9)


def _script():
    spec = importlib.util.spec_from_file_location("calibrate", REPO / "scripts" / "calibrate_cardiac_anatomy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_calibration_script_prints_the_distribution_and_fails_on_a_flagged_reference(tmp_path, capsys):
    for name in ("acdc", "sunnybrook"):
        (tmp_path / name).mkdir()
    acdc, sb = [], []
    maps = {"p1_ED": ring_plane(rv_gap_mm=INPLANE[0]), "p1_ES": ring_plane(blood_r=8.0, rv_gap_mm=INPLANE[0])}
    for stem, plane in maps.items():
        write_volume(heart({k: plane for k in range(1, 7)}), tmp_path / "acdc" / f"{stem}_gt.nii.gz")
        acdc.append({"label": f"{stem}_gt.nii.gz", "patient": "p1", "phase": stem[-2:], "group": "NOR"})
    no_rv = ring_plane()
    write_volume(heart({k: no_rv for k in range(1, 7)}), tmp_path / "sunnybrook" / "s1_ED_gt.nii.gz")
    sb.append({"label": "s1_ED_gt.nii.gz", "patient": "s1", "phase": "ED"})
    for name, entries in (("acdc", acdc), ("sunnybrook", sb)):
        (tmp_path / name / "dataset.json").write_text(json.dumps({"training": entries}))
    assert _script().main(["--data", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "3 expert maps: acdc 2, sunnybrook 1" in out
    assert "LV_NOT_ENCLOSED: fires on 0 of 3 expert maps" in out and "RV_NOT_ADJACENT: fires on 0 of 3" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("rv_lv_distance_mm "))
    assert line.split()[1:6] == ["2", "1.250", "1.250", "1.250", "1.250"]     # touching: one pixel, 1.25 mm
    # an RV 30 mm away in one reference: the script names it and exits 1
    write_volume(heart({k: ring_plane(rv_gap_mm=30.0) for k in range(1, 7)}), tmp_path / "acdc" / "p1_ES_gt.nii.gz")
    assert _script().main(["--data", str(tmp_path)]) == 1
    assert "RV_NOT_ADJACENT: fires on 1 of 3 expert maps: acdc p1 ES" in capsys.readouterr().out
