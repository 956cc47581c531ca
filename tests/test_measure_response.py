"""Tumour response: thresholds from the RECIST diameter rule, VDT, lesion matching across grids."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from medcnn.errors import ConfigError
from medcnn.measure import (
    PD_VOLUME_CHANGE,
    PR_VOLUME_CHANGE,
    tumour_response,
    volume_change_threshold,
    volume_doubling_time_days,
    volumetric_category,
)
from medcnn.volume import Geometry, Volume
from tests.conftest import rotation


def test_thresholds_follow_sphere_diameter_rule():
    # sphere: V ~ d^3, so -30 % diameter -> 0.7^3 = 0.343 of the volume, +20 % -> 1.2^3 = 1.728
    assert PR_VOLUME_CHANGE == pytest.approx(0.343 - 1, abs=1e-12)
    assert PD_VOLUME_CHANGE == pytest.approx(1.728 - 1, abs=1e-12)
    assert round(PR_VOLUME_CHANGE * 100, 1) == -65.7 and round(PD_VOLUME_CHANGE * 100, 1) == 72.8
    assert volume_change_threshold(0.0) == 0.0


@pytest.mark.parametrize("b, f, new, expected", [
    (10.0, 0.0, False, "CR"),
    (10.0, 3.43, False, "PR"),       # exactly -65.7 %
    (10.0, 3.3, False, "PR"),
    (10.0, 3.5, False, "SD"),
    (10.0, 17.2, False, "SD"),
    (10.0, 17.28, False, "PD"),      # exactly +72.8 %
    (10.0, 25.0, False, "PD"),
    (10.0, 9.0, True, "PD"),         # new lesion -> PD
    (0.0, 0.0, False, "NE"),
    (0.0, 1.0, False, "PD"),
])
def test_volumetric_category(b, f, new, expected):
    assert volumetric_category(b, f, new_lesions=new) == expected


def test_new_lesion_rule_can_be_disabled():
    assert volumetric_category(10.0, 9.0, new_lesions=True, new_lesion_is_pd=False) == "SD"


def test_volume_doubling_time_by_hand():
    # doubling in 90 days -> VDT 90 days; quadrupling in 90 days -> 45
    assert volume_doubling_time_days(2.0, 4.0, 90) == pytest.approx(90.0)
    assert volume_doubling_time_days(2.0, 8.0, 90) == pytest.approx(45.0)
    assert volume_doubling_time_days(4.0, 2.0, 30) == pytest.approx(-30.0)     # halving time
    assert volume_doubling_time_days(3.0, 3.0, 30) == math.inf
    assert math.isnan(volume_doubling_time_days(0.0, 3.0, 30))
    assert math.isnan(volume_doubling_time_days(1.0, 3.0, None))
    v1, v2, days = 1.3, 2.9, 47.0
    assert volume_doubling_time_days(v1, v2, days) == pytest.approx(days * math.log(2) / math.log(v2 / v1))


def _ball(g: Geometry, centre_mm, radius_mm, value, arr=None):
    arr = np.zeros(g.shape, np.uint8) if arr is None else arr
    ijk = np.argwhere(np.ones(g.shape, bool))
    xyz = g.index_to_world(ijk)
    inside = np.linalg.norm(xyz - np.asarray(centre_mm), axis=1) <= radius_mm
    arr.reshape(-1)[inside] = value
    return arr


def test_two_time_points_on_different_grids():
    base_g = Geometry((48, 48, 16), (1.0, 1.0, 3.0), (-24.0, -24.0, -24.0))
    follow_g = Geometry((70, 60, 30), (0.8, 0.9, 2.0), (-30.0, -28.0, -30.0),
                        tuple(map(tuple, rotation(0.0, 0.0, 0.05))))
    a, b, c = (-10.0, -8.0, 0.0), (10.0, 10.0, 6.0), (5.0, -12.0, -12.0)
    base = _ball(base_g, a, 6.0, 1)
    base = _ball(base_g, b, 5.0, 1, base)
    follow = _ball(follow_g, (a[0] + 1.5, a[1], a[2]), 8.0, 1)      # A grew and moved 1.5 mm
    follow = _ball(follow_g, c, 4.0, 1, follow)                     # C is new; B disappeared
    vb, vf = Volume(base, base_g, "label"), Volume(follow, follow_g, "label")
    res = tumour_response(vb, vf, baseline_date="2024-01-10", followup_date=dt.date(2024, 4, 9),
                          max_match_distance_mm=10.0)
    les = res.lesions.set_index("status")
    assert sorted(res.lesions["status"]) == ["disappeared", "matched", "new"]
    # volumes: voxel counts x voxel volume on each grid
    from medcnn.measure import measure_lesions

    lb = measure_lesions(vb).sort_values("centroid_x_mm")
    lf = measure_lesions(vf).sort_values("centroid_z_mm", ascending=False)
    va0, va1 = lb.iloc[0]["volume_ml"], lf.iloc[0]["volume_ml"]
    assert les.loc["matched", "baseline_volume_ml"] == pytest.approx(va0)
    assert les.loc["matched", "followup_volume_ml"] == pytest.approx(va1)
    assert les.loc["matched", "match_distance_mm"] == pytest.approx(1.5, abs=1.0)
    assert les.loc["matched", "change_percent"] == pytest.approx((va1 - va0) / va0 * 100)
    assert les.loc["matched", "vdt_days"] == pytest.approx(90 * math.log(2) / math.log(va1 / va0))
    assert les.loc["matched", "category"] == "PD"          # (8/6)^3 - 1 = +137 %
    assert les.loc["disappeared", "followup_volume_ml"] == 0.0 and les.loc["disappeared", "category"] == "CR"
    assert les.loc["new", "category"] == "PD"
    # per label and overall: totals in mL on each grid
    lab = res.labels.set_index("label")
    total_b = base.sum() * base_g.voxel_volume_ml
    total_f = follow.sum() * follow_g.voxel_volume_ml
    assert lab.loc[1, "baseline_volume_ml"] == pytest.approx(total_b)
    assert lab.loc[1, "followup_volume_ml"] == pytest.approx(total_f)
    assert res.overall["interval_days"] == 90.0
    assert res.overall["n_new"] == 1 and res.category == "PD"
    # matching is limited by distance: with 1 mm nothing matches
    strict = tumour_response(vb, vf, max_match_distance_mm=1.0)
    assert (strict.lesions["status"] == "matched").sum() == 0


def test_response_categories_end_to_end():
    g = Geometry((40, 40, 40), (1.0, 1.0, 1.0))
    base = Volume(_ball(g, (20, 20, 20), 10.0, 1), g, "label")
    shrunk = Volume(_ball(g, (20, 20, 20), 6.0, 1), g, "label")       # (0.6)^3 -> -78 %
    gone = Volume(np.zeros(g.shape, np.uint8), g, "label")
    same = Volume(_ball(g, (20, 20, 20), 10.3, 1), g, "label")
    assert tumour_response(base, shrunk).category == "PR"
    assert tumour_response(base, gone).category == "CR"
    assert tumour_response(base, same).category == "SD"
    assert tumour_response(shrunk, base).category == "PD"
    with pytest.raises(ConfigError):
        tumour_response(base, shrunk, baseline_date="2024-05-01", followup_date="2024-01-01")
    with pytest.raises(ConfigError):
        tumour_response(base, shrunk, baseline_date="2024-05-01")
    with pytest.raises(ConfigError):
        tumour_response(base, shrunk, baseline_date="yesterday", followup_date="2024-01-01")
    res = tumour_response(base, shrunk, interval_days=30)
    assert res.overall["vdt_days"] < 0
    d = res.to_dict()
    assert d["overall"]["category"] == "PR" and "(1-0.30)^3 - 1" in d["methods"]["category"]
