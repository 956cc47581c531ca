"""Lesions: connected components, centroids in world mm, 3D and in-plane diameters.

References: analytic spheres and boxes, brute-force pairwise distances over all voxel
centres in world mm (computed through the affine, independently of the hull code), and
PyRadiomics' Maximum3DDiameter.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import pdist

from medcnn._testing import require_shared_data
from medcnn.errors import ConfigError
from medcnn.measure import lesion_components, max_diameter, measure_lesions, slice_axis
from medcnn.volume import Geometry, Volume
from tests.conftest import rotation


def _world(g: Geometry, ijk: np.ndarray) -> np.ndarray:
    """World mm of voxel indices via the 4x4 affine (independent of index_to_world)."""
    h = np.c_[ijk, np.ones(len(ijk))]
    return (g.affine @ h.T).T[:, :3]


def _sphere(g: Geometry, centre_mm, radius_mm) -> np.ndarray:
    ijk = np.argwhere(np.ones(g.shape, bool))
    inside = np.linalg.norm(_world(g, ijk) - np.asarray(centre_mm), axis=1) <= radius_mm
    return inside.reshape(g.shape).astype(np.uint8)


OBLIQUE_ANISO = Geometry((40, 36, 9), (0.7, 0.9, 4.0), (-30.0, 12.5, 100.0),
                         tuple(map(tuple, rotation(0.4, -0.3, 0.7))))


@pytest.mark.parametrize("geometry", [OBLIQUE_ANISO, Geometry((30, 30, 30), (1.0, 1.0, 1.0), (5.0, -3.0, 2.0))],
                         ids=["oblique_aniso", "iso"])
def test_sphere_volume_centroid_and_diameters(geometry):
    g = geometry
    centre_index = (np.asarray(g.shape) - 1) / 2
    centre = _world(g, centre_index[None])[0]
    radius = 11.0
    arr = _sphere(g, centre, radius)
    df = measure_lesions(Volume(arr, g, "label"))
    assert len(df) == 1
    row = df.iloc[0]
    # volume: voxels whose centre lies in the ball; within the shell R -/+ half voxel diagonal
    half_diag = 0.5 * float(np.linalg.norm(g.spacing))
    v_lo, v_hi = (4 / 3 * np.pi * (radius + s * half_diag) ** 3 / 1000 for s in (-1, 1))
    assert v_lo <= row["volume_ml"] <= v_hi
    assert row["volume_ml"] == pytest.approx(4 / 3 * np.pi * radius**3 / 1000, rel=0.1)
    assert row["n_voxels"] == arr.sum()
    # centroid: mean world position of the voxel centres
    pts = _world(g, np.argwhere(arr))
    assert np.allclose(row[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy(float), pts.mean(0), atol=1e-6)
    assert np.allclose(pts.mean(0), centre, atol=1.5)
    # 3D diameter: exact against brute force over all voxel centres in world mm
    assert row["max_3d_diameter_mm"] == pytest.approx(pdist(pts).max(), rel=1e-9)
    # and within voxelisation error of the analytic 2R
    assert 2 * radius - 2 * 2 * half_diag <= row["max_3d_diameter_mm"] <= 2 * radius + 1e-9
    # in-plane: brute force per slice along the coarsest axis
    ax = slice_axis(g)
    ijk = np.argwhere(arr)
    best = max(pdist(_world(g, ijk[ijk[:, ax] == s])).max() if (ijk[:, ax] == s).sum() > 1 else 0.0
               for s in np.unique(ijk[:, ax]))
    assert row["max_inplane_diameter_mm"] == pytest.approx(best, rel=1e-9)
    assert row["max_inplane_diameter_mm"] <= 2 * radius + 1e-9
    assert row["perpendicular_diameter_mm"] <= row["max_inplane_diameter_mm"] + 1e-9
    assert row["perpendicular_diameter_mm"] >= 0.8 * row["max_inplane_diameter_mm"]  # a disc is round
    assert row["slice_axis"] == ax and not row["touches_border"]


def test_box_inplane_long_and_perpendicular_axes_by_hand():
    # slice axis = K (4 mm); a 5 x 9 pixel rectangle over 3 slices, spacing 0.8 x 0.5 in plane
    g = Geometry((12, 14, 6), (0.8, 0.5, 4.0), (1.0, 2.0, 3.0), tuple(map(tuple, rotation(0.2, 0.1, -0.6))))
    arr = np.zeros(g.shape, np.uint8)
    arr[2:7, 3:12, 1:4] = 1
    row = measure_lesions(Volume(arr, g, "label")).iloc[0]
    w, h = 4 * 0.8, 8 * 0.5            # centre-to-centre extents in mm
    long = np.hypot(w, h)
    assert row["max_inplane_diameter_mm"] == pytest.approx(long, rel=1e-9)
    # perpendicular extent of a rectangle across its diagonal: 2wh / L
    assert row["perpendicular_diameter_mm"] == pytest.approx(2 * w * h / long, rel=1e-9)
    assert row["max_3d_diameter_mm"] == pytest.approx(np.sqrt(w**2 + h**2 + (2 * 4.0) ** 2), rel=1e-9)
    assert 1 <= row["inplane_slice_index"] <= 3
    assert row["volume_ml"] == pytest.approx(5 * 9 * 3 * 0.8 * 0.5 * 4.0 / 1000)


def test_slice_axis_is_coarsest_spacing():
    assert slice_axis(Geometry((4, 4, 4), (1, 1, 5))) == 2
    assert slice_axis(Geometry((4, 4, 4), (6, 1, 2))) == 0
    assert slice_axis(Geometry((4, 4, 4), (1, 3, 1))) == 1
    assert slice_axis(Geometry((4, 4, 4), (1, 1, 1))) == 2          # ties -> last axis
    # a flat in-plane line along axis 1 when the coarse axis is 0
    g = Geometry((5, 9, 9), (5.0, 1.0, 1.0))
    arr = np.zeros(g.shape, np.uint8)
    arr[2, 1:8, 4] = 1
    row = measure_lesions(Volume(arr, g, "label")).iloc[0]
    assert row["slice_axis"] == 0 and row["inplane_slice_index"] == 2
    assert row["max_inplane_diameter_mm"] == pytest.approx(6.0) and row["perpendicular_diameter_mm"] == 0.0


@pytest.mark.parametrize("touch, expected", [
    ("corner", {6: 2, 18: 2, 26: 1}),
    ("edge", {6: 2, 18: 1, 26: 1}),
    ("face", {6: 1, 18: 1, 26: 1}),
])
def test_diagonal_touching_lesions_connectivity(touch, expected, awkward_geometry):
    g = Geometry((10, 10, 10), awkward_geometry.spacing, awkward_geometry.origin, awkward_geometry.direction)
    arr = np.zeros(g.shape, np.uint8)
    arr[1:4, 1:4, 1:4] = 1
    shift = {"corner": (3, 3, 3), "edge": (3, 3, 0), "face": (3, 0, 0)}[touch]
    s = np.array([1, 1, 1]) + np.array(shift)
    arr[s[0]:s[0] + 3, s[1]:s[1] + 3, s[2]:s[2] + 3] = 1
    vol = Volume(arr, g, "label")
    for conn, n in expected.items():
        df = measure_lesions(vol, connectivity=conn)
        assert len(df) == n, (touch, conn)
        assert df["n_voxels"].sum() == 54
        assert (df["connectivity"] == conn).all()


def test_per_label_merge_and_filter():
    g = Geometry((20, 20, 10), (1.0, 1.0, 2.0))
    arr = np.zeros(g.shape, np.uint8)
    arr[2:6, 2:6, 2:5] = 1        # 48 voxels, label 1
    arr[6:8, 2:6, 2:5] = 2        # 24 voxels, label 2, touching label 1
    arr[15, 15, 5] = 1            # 1 voxel
    arr[0:3, 17:20, 0:2] = 2      # touches the border
    vol = Volume(arr, g, "label")
    per = measure_lesions(vol, label_names={1: "tumour", 2: "oedema"})
    assert sorted(zip(per["label"], per["n_voxels"])) == [(1, 1), (1, 48), (2, 18), (2, 24)]
    assert per["lesion_id"].tolist() == [1, 2, 3, 4]
    assert per.loc[per["n_voxels"] == 18, "touches_border"].item()
    assert not per.loc[per["n_voxels"] == 48, "touches_border"].item()
    assert per.loc[per["n_voxels"] == 48, "label_name"].item() == "tumour"
    merged = measure_lesions(vol, per_label=False)
    assert sorted(merged["n_voxels"]) == [1, 18, 72]
    assert sorted(zip(merged["n_voxels"], merged["label"])) == [(1, 1), (18, 2), (72, 1)]  # smallest label in it
    assert (measure_lesions(vol, labels=[2, 1], per_label=False)["label"] == 1).all()
    only1 = measure_lesions(vol, labels=1)
    assert sorted(only1["n_voxels"]) == [1, 48]
    big = measure_lesions(vol, min_volume_ml=0.01)     # 0.002 mL per voxel: keeps >= 5 voxels
    assert sorted(big["n_voxels"]) == [18, 24, 48]
    whole = measure_lesions(vol, connectivity=None)
    assert sorted(whole["n_voxels"]) == [42, 49]        # each label as one object
    comp = lesion_components(vol, min_volume_ml=0.01)
    for _, r in big.iterrows():                          # component map ids = table ids
        assert (comp.array == r["lesion_id"]).sum() == r["n_voxels"]
    assert comp.geometry == g and (comp.array[15, 15, 5] == 0)


def test_bad_options():
    vol = Volume(np.ones((3, 3, 3), np.uint8), Geometry((3, 3, 3), (1, 1, 1)), "label")
    with pytest.raises(ConfigError, match="connectivity"):
        measure_lesions(vol, connectivity=8)
    with pytest.raises(ConfigError):
        measure_lesions(vol, min_volume_ml=-1)
    empty = measure_lesions(Volume(np.zeros((3, 3, 3), np.uint8), Geometry((3, 3, 3), (1, 1, 1)), "label"))
    assert len(empty) == 0 and "max_3d_diameter_mm" in empty.columns


def test_single_voxel_and_degenerate_shapes():
    g = Geometry((9, 9, 9), (1.0, 2.0, 3.0))
    arr = np.zeros(g.shape, np.uint8)
    arr[4, 4, 4] = 1                  # one voxel: diameter 0
    arr[0, 0:5, 8] = 2                # a line along J: 4 * 2 mm
    arr[6:9, 0:4, 0] = 3              # a plane (one slice)
    df = measure_lesions(Volume(arr, g, "label")).set_index("label")
    assert df.loc[1, "max_3d_diameter_mm"] == 0.0
    assert df.loc[2, "max_3d_diameter_mm"] == pytest.approx(8.0)
    assert df.loc[3, "max_3d_diameter_mm"] == pytest.approx(np.hypot(2 * 1.0, 3 * 2.0))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 60), st.sampled_from([1, 2, 3]))
def test_max_diameter_equals_brute_force(seed, n, dim):
    rng = np.random.default_rng(seed)
    pts = rng.normal(size=(n, dim)) @ rng.normal(size=(dim, 3))  # rank <= dim: also coplanar / collinear sets
    pts = np.round(pts, 1)                                       # duplicates and grid-like ties
    d, ends = max_diameter(pts)
    assert d == pytest.approx(pdist(pts).max(), rel=1e-9, abs=1e-12)
    assert np.linalg.norm(ends[0] - ends[1]) == pytest.approx(d, rel=1e-9, abs=1e-12)


def _face_midpoints(mask: np.ndarray, spacing) -> np.ndarray:
    """Centres of the voxel faces between the object and the background (mm): where the
    marching-cubes mesh of a binary mask has its vertices (PyRadiomics' definition)."""
    m = np.pad(mask, 1)
    pts = []
    for ax, d in itertools.product(range(3), (-1, 1)):
        edge = m & ~np.roll(m, -d, axis=ax)
        p = np.argwhere(edge).astype(float)
        p[:, ax] += 0.5 * d
        pts.append(p)
    return np.unique(np.concatenate(pts), axis=0) * np.asarray(spacing)


@pytest.mark.parametrize("case", ["brain1", "breast1"])
def test_diameter_against_pyradiomics(case):
    """Our diameter (surface-voxel centres) is at most one voxel (coarsest spacing) below
    PyRadiomics' mesh-vertex diameter, and the same hull code on mesh-vertex positions
    reproduces PyRadiomics' value exactly."""
    from medcnn.io import read_volume

    ref = pd.read_csv(require_shared_data("pyradiomics", "reference_shape.csv")).set_index("featureName")
    expected = float(ref.loc["original_shape_Maximum3DDiameter", case])
    vol = read_volume(require_shared_data("pyradiomics", f"{case}_label.nrrd"), kind="label")
    ours = measure_lesions(vol, connectivity=None)["max_3d_diameter_mm"].item()  # whole label, as PyRadiomics
    assert 0.0 <= expected - ours <= max(vol.spacing)
    mesh_d, _ = max_diameter(_face_midpoints(vol.array > 0, vol.spacing))
    assert mesh_d == pytest.approx(expected, rel=1e-8)
