"""Surface metrics: DeepMind surface-distance and MONAI as independent references, analytic
cases (single voxels, shifted cubes), empty-mask policies and geometry handling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medcnn.errors import GeometryMismatchError
from medcnn.metrics import surface as surface_mod
from medcnn.metrics._surfels import neighbour_codes, surfel_area_table
from medcnn.metrics.surface import surface_distances, surface_metrics
from medcnn.volume import Geometry, Volume

sd_ref = pytest.importorskip("surface_distance", reason="DeepMind surface-distance is a test dependency")
from surface_distance import lookup_tables as dm_tables  # noqa: E402

TOL = 1e-6  # mm

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),  # surface_distance uses old scipy namespaces
    pytest.mark.filterwarnings("ignore::FutureWarning"),  # MONAI argument deprecations
]


def vol(mask: np.ndarray, spacing, **kw) -> Volume:
    return Volume(np.asarray(mask), Geometry(mask.shape, spacing, **kw), kind="label")


def ellipsoid(shape, centre, radii) -> np.ndarray:
    i, j, k = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return ((i - centre[0]) / radii[0]) ** 2 + ((j - centre[1]) / radii[1]) ** 2 + ((k - centre[2]) / radii[2]) ** 2 <= 1


def dm_values(ref: np.ndarray, pred: np.ndarray, spacing, tol_mm: float) -> dict[str, float]:
    d = sd_ref.compute_surface_distances(ref.astype(bool), pred.astype(bool), tuple(spacing))
    a_rp, a_pr = sd_ref.compute_average_surface_distance(d)
    o_r, o_p = sd_ref.compute_surface_overlap_at_tolerance(d, tol_mm)
    return {"hd": sd_ref.compute_robust_hausdorff(d, 100), "hd95": sd_ref.compute_robust_hausdorff(d, 95),
            "hd99": sd_ref.compute_robust_hausdorff(d, 99), "asd_rp": a_rp, "asd_pr": a_pr,
            "nsd": sd_ref.compute_surface_dice_at_tolerance(d, tol_mm), "ov_r": o_r, "ov_p": o_p,
            "assd": (np.sum(d["distances_gt_to_pred"] * d["surfel_areas_gt"])
                     + np.sum(d["distances_pred_to_gt"] * d["surfel_areas_pred"]))
            / (np.sum(d["surfel_areas_gt"]) + np.sum(d["surfel_areas_pred"]))}


def ours(ref: np.ndarray, pred: np.ndarray, spacing, tol_mm: float) -> dict[str, float]:
    s = surface_distances(vol(pred, spacing), vol(ref, spacing))
    a_rp, a_pr = s.average_distance_mm()
    o_r, o_p = s.surface_overlap(tol_mm)
    return {"hd": s.hausdorff_mm(), "hd95": s.percentile_hausdorff_mm(95), "hd99": s.percentile_hausdorff_mm(99),
            "asd_rp": a_rp, "asd_pr": a_pr, "nsd": s.surface_dice(tol_mm), "ov_r": o_r, "ov_p": o_p,
            "assd": s.assd_mm()}


def assert_all_close(a: dict, b: dict, tol: float = TOL) -> None:
    for k in a:
        assert abs(a[k] - b[k]) <= tol, f"{k}: medcnn {a[k]!r} vs reference {b[k]!r}"


# ------------------------------------------------------------------ surfel definition
def _dm_code(code: int) -> int:
    """DeepMind numbers neighbourhood voxel (a, b, c) as bit 7 - (4a + 2b + c); medcnn as 4a + 2b + c."""
    return int(f"{code:08b}"[::-1], 2)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.7, 1.3, 4.5), (3.1, 0.25, 1.9)])
def test_surfel_area_table_equals_deepmind_for_every_code(spacing):
    dm = dm_tables.create_table_neighbour_code_to_surface_area(spacing)
    mine = surfel_area_table(spacing)
    np.testing.assert_allclose(mine, dm[[_dm_code(c) for c in range(256)]], rtol=0, atol=1e-12)


def test_single_voxel_surface_is_the_octahedron():
    # marching cubes around one voxel: 8 triangles with vertices at the face centres,
    # each of area |(sy*sz, sx*sz, sx*sy)| / 8 (hand-derived cross product)
    sx, sy, sz = 0.7, 1.3, 4.5
    m = np.zeros((3, 3, 3), bool)
    m[1, 1, 1] = True
    s = surface_distances(vol(m, (sx, sy, sz)), vol(m, (sx, sy, sz)))
    assert s.ref_areas_mm2.size == 8
    assert s.ref_area_mm2 == pytest.approx(math.sqrt((sy * sz) ** 2 + (sx * sz) ** 2 + (sx * sy) ** 2), rel=1e-12)


def test_neighbour_codes_use_corner_lattice():
    m = np.zeros((2, 1, 1), bool)
    m[0, 0, 0] = True
    codes = neighbour_codes(m)
    assert codes.shape == (3, 2, 2)
    # the lattice point (i, j, k) sees voxel (i-1+a, j-1+b, k-1+c) as bit 4a + 2b + c
    assert codes[0, 0, 0] == 1 << 7 and codes[1, 1, 1] == 1 << 0 and codes[2, 1, 1] == 0


# ------------------------------------------------------------------ analytic cases
@pytest.mark.parametrize("k", [2, 3])
def test_two_single_voxels_analytic(k):
    # voxel A at x=0, voxel B at x=k: A's 4 corners at x=+0.5 are (k-1)*sx from B's nearest
    # corners, the 4 at x=-0.5 are k*sx; all 8 surfels have equal area.
    sx, sy, sz = 1.5, 0.8, 3.0
    a = np.zeros((k + 3, 3, 3), bool)
    b = a.copy()
    a[1, 1, 1] = True
    b[1 + k, 1, 1] = True
    s = surface_distances(vol(b, (sx, sy, sz)), vol(a, (sx, sy, sz)))
    assert s.hausdorff_mm() == pytest.approx(k * sx, abs=1e-12)
    assert s.percentile_hausdorff_mm(95) == pytest.approx(k * sx, abs=1e-12)
    assert s.percentile_hausdorff_mm(40) == pytest.approx((k - 1) * sx, abs=1e-12)
    assert s.average_distance_mm() == pytest.approx(((k - 0.5) * sx,) * 2, abs=1e-12)
    assert s.assd_mm() == pytest.approx((k - 0.5) * sx, abs=1e-12)
    assert s.surface_dice((k - 1) * sx) == pytest.approx(0.5, abs=1e-12)
    assert s.surface_dice((k - 1) * sx - 1e-9) == 0.0


@pytest.mark.parametrize("shift", [(2, 0, 0), (0, 1, 0), (1, 2, 1), (3, 1, 2)])
def test_shifted_cube_hausdorff_is_the_shift_in_mm(shift):
    spacing = (0.9, 1.7, 3.2)
    a = np.zeros((20, 18, 14), bool)
    a[4:12, 5:13, 3:9] = True
    b = np.roll(a, shift, axis=(0, 1, 2))
    s = surface_distances(vol(b, spacing), vol(a, spacing))
    expected = math.sqrt(sum((n * sp) ** 2 for n, sp in zip(shift, spacing)))
    assert s.hausdorff_mm() == pytest.approx(expected, abs=1e-12)
    assert s.directed_hausdorff_mm() == pytest.approx((expected, expected), abs=1e-12)
    assert s.surface_dice(expected) == pytest.approx(1.0)
    assert_all_close(ours(a, b, spacing, 1.0), dm_values(a, b, spacing, 1.0))


def test_identical_masks_have_zero_distances():
    a = ellipsoid((16, 16, 10), (8, 7, 5), (5, 4, 3))
    m = surface_metrics(vol(a, (0.5, 0.5, 2.0)), vol(a, (0.5, 0.5, 2.0)), tolerance_mm=0.0)
    assert m["hd_mm"] == m["hd95_mm"] == m["assd_mm"] == 0.0
    assert m["nsd"] == 1.0


# ------------------------------------------------------------------ DeepMind on random pairs
@pytest.mark.parametrize("seed", range(6))
def test_matches_deepmind_on_random_anisotropic_pairs(seed):
    rng = np.random.default_rng(seed)
    shape = (34, 40, 22)
    spacing = tuple(rng.uniform(0.3, 5.0, 3))
    a = ellipsoid(shape, rng.uniform(8, 25, 3), rng.uniform(3, 10, 3))
    b = ellipsoid(shape, rng.uniform(8, 25, 3), rng.uniform(3, 10, 3))
    b |= rng.random(shape) < 0.002  # scattered false positives far from the reference
    tol = float(rng.uniform(0.5, 3.0))
    assert_all_close(ours(a, b, spacing, tol), dm_values(a, b, spacing, tol))


def test_matches_deepmind_when_masks_touch_the_image_border():
    spacing = (1.25, 0.6, 2.5)
    a = np.zeros((12, 15, 9), bool)
    a[:7, 3:, :4] = True
    b = np.zeros_like(a)
    b[2:, :10, 2:] = True
    assert_all_close(ours(a, b, spacing, 1.5), dm_values(a, b, spacing, 1.5))


@pytest.mark.parametrize("patch", ["tiny_lattice", "ambiguous"])
def test_exact_nearest_neighbour_fallback_matches_deepmind(monkeypatch, patch):
    # force the cKDTree path: no lattice norms enumerated, or every snap ambiguous
    if patch == "tiny_lattice":
        monkeypatch.setattr(surface_mod, "_MAX_LATTICE", 1)
    else:
        monkeypatch.setattr(surface_mod, "_EDTSQ_REL_ERR", 0.5)
    rng = np.random.default_rng(11)
    shape = (30, 26, 18)
    spacing = (0.8, 1.1, 3.3)
    a = ellipsoid(shape, (14, 12, 9), (9, 7, 5))
    b = ellipsoid(shape, (16, 12, 8), (8, 8, 6)) | (rng.random(shape) < 0.003)
    assert_all_close(ours(a, b, spacing, 2.0), dm_values(a, b, spacing, 2.0))


# ------------------------------------------------------------------ geometry
def test_distances_use_spacing_only_not_direction_or_origin(awkward_geometry):
    g = awkward_geometry
    rng = np.random.default_rng(3)
    a = ellipsoid(g.shape, np.array(g.shape) / 2, np.array(g.shape) / 3)
    b = np.roll(a, 1, axis=0) | (rng.random(g.shape) < 0.01)
    oblique = surface_metrics(Volume(b, g, "label"), Volume(a, g, "label"))
    plain = surface_metrics(vol(b, g.spacing), vol(a, g.spacing))
    assert oblique == pytest.approx(plain, abs=1e-12)
    assert_all_close(ours(a, b, g.spacing, 2.0), dm_values(a, b, g.spacing, 2.0))


def test_transposed_volume_gives_identical_metrics():
    rng = np.random.default_rng(5)
    spacing = (0.7, 1.9, 3.0)
    a = ellipsoid((18, 14, 10), (9, 7, 5), (6, 5, 3))
    b = np.roll(a, (1, -1, 1), axis=(0, 1, 2)) | (rng.random(a.shape) < 0.01)
    m1 = surface_metrics(vol(b, spacing), vol(a, spacing))
    perm = (2, 0, 1)
    m2 = surface_metrics(vol(b.transpose(perm), [spacing[p] for p in perm]),
                         vol(a.transpose(perm), [spacing[p] for p in perm]))
    assert m1 == pytest.approx(m2, abs=1e-9)


def test_grid_mismatch_names_both_geometries():
    a = np.zeros((10, 10, 6), bool)
    a[3:6, 3:6, 2:4] = True
    ref = Volume(a, Geometry(a.shape, (1.0, 1.0, 2.0), source="ref.nii.gz"), "label")
    pred = Volume(a, Geometry(a.shape, (1.0, 1.0, 2.5), source="pred.nii.gz"), "label")
    with pytest.raises(GeometryMismatchError) as exc:
        surface_metrics(pred, ref)
    msg = str(exc.value)
    assert "ref.nii.gz" in msg and "pred.nii.gz" in msg and "2.5" in msg and "resample" in msg


# ------------------------------------------------------------------ empty masks
@pytest.mark.parametrize("policy,both,one", [
    ("best-worst", (1.0, 0.0), (0.0, "diag")),
    ("best-nan", (1.0, 0.0), (0.0, math.nan)),
    ("nan", (math.nan, math.nan), (0.0, math.nan)),
])
def test_empty_mask_policies(policy, both, one):
    spacing = (0.5, 2.0, 4.0)
    shape = (10, 8, 6)
    empty = np.zeros(shape, bool)
    full = empty.copy()
    full[2:5, 2:5, 1:3] = True
    diag = math.sqrt((10 * 0.5) ** 2 + (8 * 2.0) ** 2 + (6 * 4.0) ** 2)

    def check(m, nsd, dist):
        dist = diag if dist == "diag" else dist
        for k in ("hd_mm", "hd95_mm", "assd_mm", "asd_ref_to_pred_mm", "asd_pred_to_ref_mm"):
            assert (math.isnan(m[k]) and math.isnan(dist)) or m[k] == pytest.approx(dist), k
        assert (math.isnan(m["nsd"]) and math.isnan(nsd)) or m["nsd"] == nsd

    check(surface_metrics(vol(empty, spacing), vol(empty, spacing), empty_policy=policy), *both)
    check(surface_metrics(vol(full, spacing), vol(empty, spacing), empty_policy=policy), *one)
    check(surface_metrics(vol(empty, spacing), vol(full, spacing), empty_policy=policy), *one)


def test_raw_distances_follow_deepmind_when_one_mask_is_empty():
    a = np.zeros((8, 8, 8), bool)
    a[2:5, 2:5, 2:5] = True
    s = surface_distances(vol(np.zeros_like(a), (1, 1, 1)), vol(a, (1, 1, 1)))
    assert math.isinf(s.hausdorff_mm()) and math.isinf(s.percentile_hausdorff_mm(95))
    assert s.pred_to_ref_mm.size == 0 and np.all(np.isinf(s.ref_to_pred_mm))


def test_unknown_policy_is_rejected():
    a = np.ones((3, 3, 3), bool)
    with pytest.raises(ValueError, match="best-worst"):
        surface_metrics(vol(a, (1, 1, 1)), vol(a, (1, 1, 1)), empty_policy="zero")


# ------------------------------------------------------------------ MONAI where definitions match
@pytest.fixture
def monai_metrics():
    return pytest.importorskip("monai.metrics", reason="MONAI comparisons")


def _t(mask):
    import torch

    return torch.from_numpy(np.ascontiguousarray(mask))[None, None].float()


def test_surface_dice_matches_monai_subvoxel_nsd(monai_metrics):
    rng = np.random.default_rng(2)
    spacing = (0.8, 1.2, 2.5)
    shape = (28, 24, 16)
    a = ellipsoid(shape, (13, 11, 8), (8, 7, 5))
    b = ellipsoid(shape, (14, 12, 7), (8, 6, 6)) | (rng.random(shape) < 0.002)
    for tol in (1.0, 2.0, 3.7):
        theirs = float(monai_metrics.compute_surface_dice(_t(b), _t(a), class_thresholds=[tol], spacing=spacing,
                                                          include_background=True, use_subvoxels=True)[0, 0])
        mine = surface_metrics(vol(b, spacing), vol(a, spacing), tolerance_mm=tol)["nsd"]
        assert mine == pytest.approx(theirs, abs=1e-5)


def test_hausdorff_matches_monai_for_shifted_cubes(monai_metrics):
    # for a rigidly shifted box both definitions give the shift length: voxel centres of
    # MONAI's boundary voxels and DeepMind's voxel corners move together
    spacing = (0.9, 1.7, 3.2)
    a = np.zeros((20, 18, 14), bool)
    a[4:12, 5:13, 3:9] = True
    b = np.roll(a, (2, 1, 1), axis=(0, 1, 2))
    theirs = float(monai_metrics.compute_hausdorff_distance(_t(b), _t(a), include_background=True,
                                                            spacing=spacing)[0, 0])
    mine = surface_metrics(vol(b, spacing), vol(a, spacing))["hd_mm"]
    assert mine == pytest.approx(theirs, rel=1e-6)


def test_documented_difference_with_monai_single_voxels(monai_metrics):
    # docs/metrics.md worked example: voxel A at x=0, voxel B at x=k=2, spacing 1.5 mm along x.
    # MONAI: boundary voxels are the voxels themselves -> every distance is k*sx = 3 mm.
    # medcnn / DeepMind: half of each surface is (k-1)*sx = 1.5 mm away -> ASSD 2.25 mm,
    # NSD at 1.5 mm = 0.5 (MONAI: 0).
    sx = 1.5
    spacing = (sx, 1.0, 1.0)
    a = np.zeros((6, 3, 3), bool)
    b = a.copy()
    a[1, 1, 1] = True
    b[3, 1, 1] = True
    asd = float(monai_metrics.compute_average_surface_distance(_t(b), _t(a), include_background=True,
                                                               symmetric=True, spacing=spacing)[0, 0])
    nsd = float(monai_metrics.compute_surface_dice(_t(b), _t(a), class_thresholds=[1.5], spacing=spacing,
                                                   include_background=True)[0, 0])
    assert asd == pytest.approx(2 * sx) and nsd == 0.0
    m = surface_metrics(vol(b, spacing), vol(a, spacing), tolerance_mm=1.5)
    assert m["assd_mm"] == pytest.approx(1.5 * sx) and m["nsd"] == pytest.approx(0.5)
    assert m["hd_mm"] == pytest.approx(2 * sx)


# ------------------------------------------------------------------ real data
@pytest.mark.slow
@pytest.mark.realdata
def test_sunnybrook_lv_against_eroded_shifted_copy_matches_deepmind():
    from scipy import ndimage

    from medcnn._testing import require_shared_data
    from medcnn.io import read_volume

    path = require_shared_data("sunnybrook", "nifti", "SCD0000101_ED_gt.nii.gz")
    ref = read_volume(path, kind="label")
    lv = ref.array == 1
    pred = np.roll(ndimage.binary_erosion(lv, iterations=2), (2, -1), axis=(0, 1))
    spacing = ref.geometry.spacing
    assert_all_close(ours(lv, pred, spacing, 2.0), dm_values(lv, pred, spacing, 2.0))


@pytest.mark.slow
@pytest.mark.realdata
def test_brats_whole_tumour_vs_tumour_core_matches_deepmind():
    from medcnn._testing import require_shared_data
    from medcnn.io import read_volume

    path = require_shared_data("brats2015", "brats_2013_pat0003_1", "OTMultiClass.nii.gz")
    ref = read_volume(path, kind="label")
    wt = ref.array > 0
    tc = np.isin(ref.array, (1, 3, 4))
    spacing = ref.geometry.spacing
    assert_all_close(ours(wt, tc, spacing, 1.0), dm_values(wt, tc, spacing, 1.0))
