"""Volume uncertainty intervals: synthetic probability maps with answers counted by hand,
the EF interval against brute force over the two intervals, and the Segmenter's intervals
(uint8 on the model grid) against the same computation on its float probabilities and on
independently predicted mirrored views."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from medcnn.measure.intervals import (
    cardiac_intervals,
    ef_interval_percent,
    volume_interval,
    volume_intervals,
)
from medcnn.volume import Geometry, Volume
from tests.conftest import AWKWARD_GEOMETRIES

G = Geometry((20, 16, 10), (0.8, 1.2, 2.5), (3.0, -4.0, 7.0))
VOX = G.voxel_volume_ml


def _known_map():
    """Label 1 = a 6x6x4 block (core p=0.9, its outer shell p=0.6); a ring of p=0.3 around it;
    a far blob with p=0.8 that postprocessing removed (not in the labels); faint noise p=0.1."""
    p = np.full(G.shape, 0.1, np.float32)
    lab = np.zeros(G.shape, np.uint8)
    p[3:11, 3:11, 2:8] = 0.3                   # ring (band) around the block
    p[4:10, 4:10, 3:7] = 0.6                   # the label's shell
    p[5:9, 5:9, 4:6] = 0.9                     # the label's core
    lab[4:10, 4:10, 3:7] = 1
    p[15:18, 12:15, 1:3] = 0.8                 # far blob, removed from the labels
    ring = 8 * 8 * 6 - 6 * 6 * 4
    core, shell = 4 * 4 * 2, 6 * 6 * 4 - 4 * 4 * 2
    expected = {"volume_ml": 144 * VOX, "volume_prob_low_ml": core * VOX,
                "volume_prob_high_ml": (144 + ring) * VOX,
                "volume_soft_ml": (0.9 * core + 0.6 * shell + 0.3 * ring) * VOX}
    return p, Volume(lab, G, "label"), expected


def test_known_answers_and_the_removed_blob_does_not_count():
    p, lab, exp = _known_map()
    row = volume_interval(lab, 1, p)
    for k, v in exp.items():
        assert row[k] == pytest.approx(v, rel=1e-6), k
    assert row["volume_low_ml"] == row["volume_prob_low_ml"] < row["volume_ml"] < row["volume_high_ml"]
    assert row["volume_high_ml"] == row["volume_prob_high_ml"]
    assert row["volume_tta_min_ml"] is None and "not a confidence interval" in row["interval_method"]
    # the far blob (p = 0.8, 18 voxels) would add 18 voxels to the soft volume and the band
    unrestricted_high = np.count_nonzero(p >= 0.25) * VOX
    assert unrestricted_high == pytest.approx(row["volume_high_ml"] + 18 * VOX)


def test_uint8_probabilities_give_the_same_interval():
    p, lab, exp = _known_map()
    q = np.round(p * 255).astype(np.uint8)
    row = volume_interval(lab, 1, q)
    for k in ("volume_prob_low_ml", "volume_prob_high_ml", "volume_ml"):
        assert row[k] == pytest.approx(exp[k], rel=1e-9)
    # quantised to 1/255: at most half a unit per voxel of the band
    n_band = exp["volume_prob_high_ml"] / VOX
    assert abs(row["volume_soft_ml"] - exp["volume_soft_ml"]) <= n_band * VOX / 510 + 1e-12


def test_tta_views_widen_the_interval_within_the_kept_band():
    p, lab, exp = _known_map()
    big = np.zeros(G.shape, np.uint8)
    big[3:11, 3:11, 2:8] = 1                   # a view labelling the whole ring too
    small = np.zeros(G.shape, np.uint8)
    small[5:9, 5:9, 4:6] = 1                   # a view labelling only the core
    far = np.zeros(G.shape, np.uint8)
    far[4:10, 4:10, 3:7] = 1
    far[15:18, 12:15, 1:3] = 1                 # a view labelling the removed blob too: outside the band
    row = volume_interval(lab, 1, p, view_labels=[big, small, far])
    assert row["volume_tta_max_ml"] == pytest.approx(8 * 8 * 6 * VOX)
    assert row["volume_tta_min_ml"] == pytest.approx(32 * VOX)
    assert row["volume_low_ml"] == pytest.approx(32 * VOX) and row["volume_high_ml"] == pytest.approx(384 * VOX)
    # a narrower band: a view larger than it widens the upper end
    p2 = p.copy()
    p2[p2 == 0.3] = 0.1
    row2 = volume_interval(lab, 1, p2, view_labels=[big])
    assert row2["volume_prob_high_ml"] == pytest.approx(144 * VOX)
    assert row2["volume_high_ml"] == row2["volume_tta_max_ml"] == pytest.approx(144 * VOX)  # big clipped to band


def test_volume_intervals_of_a_probability_volume(awkward_geometry):
    g = awkward_geometry
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3,) + g.shape) * 3
    prob = np.exp(logits) / np.exp(logits).sum(0)
    vol = Volume(prob.astype(np.float32), g, "probability", "channel")
    df = volume_intervals(vol, label_names={1: "a", 2: "b"})
    assert df["label"].tolist() == [1, 2] and df["label_name"].tolist() == ["a", "b"]
    argmax = prob.argmax(0)
    for _, r in df.iterrows():
        assert r["volume_ml"] == pytest.approx(np.count_nonzero(argmax == r["label"]) * g.voxel_volume_ml)
        assert r["volume_low_ml"] <= r["volume_ml"] <= r["volume_high_ml"]
        assert r["volume_low_ml"] <= r["volume_soft_ml"] <= r["volume_high_ml"]
    assert "volume_high_ml" in df.attrs["columns"]


@pytest.mark.parametrize("edv, esv", [((100.0, 130.0), (40.0, 55.0)), ((60.0, 61.0), (58.0, 70.0))])
def test_ef_interval_is_the_exact_extreme_combination(edv, esv):
    grid = [(e, s) for e in np.linspace(*edv, 41) for s in np.linspace(*esv, 41)]
    efs = [100 * (e - s) / e for e, s in grid]
    lo, hi = ef_interval_percent(edv[0], edv[1], esv[0], esv[1])
    # the exact extremes, clipped to the physically possible 0-100 %
    assert lo == pytest.approx(min(max(min(efs), 0.0), 100.0)) and hi == pytest.approx(min(max(max(efs), 0.0), 100.0))
    rows = cardiac_intervals({1: {"volume_low_ml": edv[0], "volume_high_ml": edv[1]}},
                             {1: {"volume_low_ml": esv[0], "volume_high_ml": esv[1]}}, lv_blood=1, rv_blood=3)
    assert rows["lv_ef_low_percent"] == pytest.approx(lo) and "rv_ef_low_percent" not in rows
    assert rows["lv_edv_low_ml"] == edv[0] and rows["lv_esv_high_ml"] == esv[1]


def test_ef_interval_is_clipped_to_what_is_physically_possible():
    """An uncertain RV (ESV interval reaching above the EDV interval) gave "-30 % to 62 %";
    the EF of a ventricle cannot be below 0 % or above 100 %, and the method text says so."""
    from medcnn.measure.intervals import INTERVAL_COLUMNS, INTERVAL_METHOD

    # RV EDV 100..130 mL, ESV 50..130 mL: unclipped 100 (1 - 130/100) = -30 %, 100 (1 - 50/130) = 61.5 %
    rows = cardiac_intervals({1: {"volume_low_ml": 150.0, "volume_high_ml": 160.0},
                              3: {"volume_low_ml": 100.0, "volume_high_ml": 130.0}},
                             {1: {"volume_low_ml": 60.0, "volume_high_ml": 70.0},
                              3: {"volume_low_ml": 50.0, "volume_high_ml": 130.0}}, lv_blood=1, rv_blood=3)
    assert rows["rv_ef_low_percent"] == 0.0
    assert rows["rv_ef_high_percent"] == pytest.approx(100 * (1 - 50 / 130))
    assert ef_interval_percent(10.0, 10.0, -5.0, -5.0) == (100.0, 100.0)   # never above 100 %
    assert all(0 <= v <= 100 for k, v in rows.items() if k.endswith("_percent"))
    assert all(v >= 0 for k, v in rows.items() if k.endswith("_ml"))
    assert "clipped to 0-100 %" in INTERVAL_METHOD and "clipped to 0-100 %" in INTERVAL_COLUMNS["rv_ef_low_percent"]


# ----------------------------------------------------------------------------- the Segmenter
def _segmenter(**kw):
    from medcnn.inference import Segmenter
    from medcnn.models import build_network

    torch.manual_seed(0)
    spec = {"name": "unet", "spatial_dims": 3, "in_channels": 1, "out_channels": 3, "channels": [4, 8],
            "strides": [2], "num_res_units": 0}
    net = build_network(spec)
    with torch.no_grad():
        for prm in net.parameters():
            prm.mul_(3.0)
    return Segmenter(net, network=spec, roi_size=(16, 16, 8), device="cpu", precision="fp32", overlap=0.25,
                     labels={0: "bg", 1: "a", 2: "b"}, **kw)


def _scan(g: Geometry) -> Volume:
    rng = np.random.default_rng(1)
    idx = np.indices(g.shape).reshape(3, -1).T
    d = np.linalg.norm((idx - (np.asarray(g.shape) - 1) / 2) * np.asarray(g.spacing), axis=1).reshape(g.shape)
    return Volume((100 + 400 * (d < 6) + 150 * ((d >= 6) & (d < 9)) + rng.normal(0, 20, g.shape)).astype(np.float32),
                  g)


@pytest.mark.usefixtures("one_torch_thread")
def test_segmenter_intervals_match_its_float_probabilities_and_leave_labels_unchanged():
    g = AWKWARD_GEOMETRIES["oblique"]
    g = Geometry((24, 20, 8), g.spacing, g.origin, g.direction)
    scan = _scan(g)
    seg = _segmenter()
    plain = seg.predict(scan, return_probabilities=True)
    pred = seg.predict(scan, volume_intervals=True)
    assert np.array_equal(plain.labels.array, pred.labels.array)
    assert pred.probabilities is None and [r["label"] for r in pred.volume_intervals] == [1, 2]
    for r in pred.volume_intervals:
        ref = volume_interval(plain.labels, r["label"], plain.probabilities.array[r["label"]])
        assert r["volume_ml"] == ref["volume_ml"]
        for k in ("volume_prob_low_ml", "volume_prob_high_ml", "volume_soft_ml"):  # uint8 vs float: within 2 %
            assert r[k] == pytest.approx(ref[k], rel=0.02, abs=2 * g.voxel_volume_ml), k
        assert r["volume_tta_min_ml"] is None


@pytest.mark.usefixtures("one_torch_thread")
def test_segmenter_tta_views_are_the_mirrored_predictions():
    g = Geometry((16, 16, 8), (1.2, 1.2, 3.0), (0.0, 0.0, 0.0))  # one window: views are exact mirror images
    scan = _scan(g)
    tta = _segmenter(tta_axes=(0, 1), mirror_axes=(0, 1)).predict(scan, volume_intervals=True)
    assert tta.info["volume_intervals"]["tta_views"] == 4
    plain = _segmenter()
    views = []
    for r in range(0, 3):
        for axes in itertools.combinations((0, 1), r):
            flipped = scan.with_array(np.flip(scan.array, axes).copy()) if axes else scan
            lab = plain.predict(flipped).labels.array
            views.append(np.flip(lab, axes) if axes else lab)
    probs = _segmenter(tta_axes=(0, 1), mirror_axes=(0, 1)).predict(scan, return_probabilities=True)
    for r in tta.volume_intervals:
        ref = volume_interval(probs.labels, r["label"], probs.probabilities.array[r["label"]], view_labels=views)
        # the Segmenter's views come from uint8 probabilities: near-ties of a random net may flip (<= 3 %)
        assert r["volume_tta_min_ml"] == pytest.approx(ref["volume_tta_min_ml"], rel=0.03)
        assert r["volume_tta_max_ml"] == pytest.approx(ref["volume_tta_max_ml"], rel=0.03)
        assert r["volume_tta_min_ml"] < r["volume_tta_max_ml"]  # the views differ: the spread is real
        assert r["volume_low_ml"] <= r["volume_ml"] <= r["volume_high_ml"]
