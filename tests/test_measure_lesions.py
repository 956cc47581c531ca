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


def _face_midpoints_index(mask: np.ndarray) -> np.ndarray:
    """Centres of the voxel faces between the object and the background, in voxel-index
    units: where the marching-cubes mesh of a binary mask has its vertices (PyRadiomics'
    definition), found here without any mesh code."""
    m = np.pad(mask, 1)
    pts = []
    for ax, d in itertools.product(range(3), (-1, 1)):
        edge = m & ~np.roll(m, -d, axis=ax)
        p = np.argwhere(edge).astype(float)
        p[:, ax] += 0.5 * d
        pts.append(p)
    return np.unique(np.concatenate(pts), axis=0) - 1.0


def _face_midpoints(mask: np.ndarray, spacing) -> np.ndarray:
    return _face_midpoints_index(mask) * np.asarray(spacing)


def _brute_max(pts: np.ndarray) -> float:
    """Largest pairwise distance by brute force (blocks of cdist, no hull)."""
    from scipy.spatial.distance import cdist

    if len(pts) < 2:
        return 0.0
    return float(max(cdist(pts[i:i + 2000], pts).max() for i in range(0, len(pts), 2000)))


def _brute_inplane(mask: np.ndarray, spacing, ax: int, *, between_slices: bool = False) -> tuple[float, float]:
    """PyRadiomics Maximum2DDiameterSlice by brute force over mesh vertices sharing their
    ``ax`` coordinate: whole slices only (default), or also the groups half way between
    two slices (PyRadiomics). Returns (value, slice coordinate)."""
    idx = _face_midpoints_index(mask)
    pts = idx * np.asarray(spacing)
    plane = [a for a in range(3) if a != ax]
    best = (0.0, 0.0)
    for z in np.unique(idx[:, ax]):
        if not between_slices and z != np.round(z):
            continue
        d = _brute_max(pts[idx[:, ax] == z][:, plane])
        best = max(best, (d, float(z)))
    return best


def _brute_mesh_volume_mm3(mask: np.ndarray, spacing) -> float:
    """PyRadiomics MeshVolume reproduced: marching cubes (level 0.5) on the padded mask,
    then the sum of the signed tetrahedra (origin, triangle)."""
    from skimage.measure import marching_cubes

    verts, faces, _, _ = marching_cubes(np.pad(mask, 1).astype(float), 0.5, spacing=tuple(spacing))
    t = verts[faces]
    return abs(float(np.sum(np.einsum("ij,ij->i", t[:, 0], np.cross(t[:, 1], t[:, 2]))))) / 6.0


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
    # mesh volume: PyRadiomics' definition reproduced, and close to the ball
    assert row["mesh_volume_ml"] == pytest.approx(_brute_mesh_volume_mm3(arr > 0, g.spacing) / 1000, rel=1e-6)
    assert row["mesh_volume_ml"] == pytest.approx(4 / 3 * np.pi * radius**3 / 1000, rel=0.1)
    # centroid: mean world position of the voxel centres
    pts = _world(g, np.argwhere(arr))
    assert np.allclose(row[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy(float), pts.mean(0), atol=1e-6)
    assert np.allclose(pts.mean(0), centre, atol=1.5)
    # 3D diameter: exact against brute force over all mesh vertices (face midpoints), and
    # edge to edge: about 2R (voxelisation error of up to half a voxel diagonal at each end)
    assert row["max_3d_diameter_mm"] == pytest.approx(_brute_max(_face_midpoints(arr > 0, g.spacing)), rel=1e-9)
    assert 2 * radius - 2 * half_diag <= row["max_3d_diameter_mm"] <= 2 * radius + 2 * half_diag
    # in-plane: brute force per slice along the coarsest axis
    ax = slice_axis(g)
    best, z = _brute_inplane(arr > 0, g.spacing, ax)
    assert row["max_inplane_diameter_mm"] == pytest.approx(best, rel=1e-9)
    assert row["max_inplane_diameter_mm"] <= 2 * radius + 2 * half_diag
    assert row["perpendicular_diameter_mm"] <= row["max_inplane_diameter_mm"] + 1e-9
    assert row["perpendicular_diameter_mm"] >= 0.8 * row["max_inplane_diameter_mm"]  # a disc is round
    assert row["slice_axis"] == ax and not row["touches_border"]


def test_box_inplane_long_and_perpendicular_axes_by_hand():
    # slice axis = K (4 mm); a 5 x 9 pixel rectangle over 3 slices, spacing 0.8 x 0.5 in plane
    g = Geometry((12, 14, 6), (0.8, 0.5, 4.0), (1.0, 2.0, 3.0), tuple(map(tuple, rotation(0.2, 0.1, -0.6))))
    arr = np.zeros(g.shape, np.uint8)
    arr[2:7, 3:12, 1:4] = 1
    row = measure_lesions(Volume(arr, g, "label")).iloc[0]
    # the slice contour: pixel-edge midpoints; its corners are cut, so the long axis runs from
    # a side midpoint to the opposite one: full width (5 px) x centre-to-centre height (8 px)
    # or centre-to-centre width (4 px) x full height (9 px), whichever is longer
    cands = [(5 * 0.8, 8 * 0.5), (4 * 0.8, 9 * 0.5), (4.5 * 0.8, 8.5 * 0.5)]
    long = max(np.hypot(*c) for c in cands)
    assert long == pytest.approx(np.hypot(4.0, 4.0))
    assert row["max_inplane_diameter_mm"] == pytest.approx(long, rel=1e-9)
    # perpendicular to the (4, 4) mm diagonal: contour points projected onto (-1, 1)/sqrt(2);
    # extremes at the side midpoints (x = -0.5 px, y = 8 px) and (x = 4.5 px, y = 0 px)
    perp = ((-(-0.5 * 0.8) + 8 * 0.5) - (-(4.5 * 0.8) + 0.0)) / np.sqrt(2)
    assert row["perpendicular_diameter_mm"] == pytest.approx(perp, rel=1e-9)
    assert row["max_3d_diameter_mm"] == pytest.approx(_brute_max(_face_midpoints(arr > 0, g.spacing)), rel=1e-9)
    assert 1 <= row["inplane_slice_index"] <= 3
    assert row["volume_ml"] == pytest.approx(5 * 9 * 3 * 0.8 * 0.5 * 4.0 / 1000)
    assert row["mesh_volume_ml"] < row["volume_ml"]  # the mesh cuts the staircase corners


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
    # edge to edge: 7 pixels of 1 mm; perpendicular extent of the contour: one pixel
    assert row["max_inplane_diameter_mm"] == pytest.approx(7.0) and row["perpendicular_diameter_mm"] == pytest.approx(1.0)


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
    arr[4, 4, 4] = 1                  # one voxel: opposite face centres, the largest spacing apart
    arr[0, 0:5, 8] = 2                # a line along J: 5 voxels x 2 mm edge to edge
    arr[6:9, 0:4, 0] = 3              # a plane (one slice)
    df = measure_lesions(Volume(arr, g, "label")).set_index("label")
    assert df.loc[1, "max_3d_diameter_mm"] == pytest.approx(3.0)
    assert df.loc[1, "mesh_volume_ml"] == pytest.approx(1.0 * 2.0 * 3.0 / 6 / 1000)  # an octahedron
    assert df.loc[1, "max_inplane_diameter_mm"] == pytest.approx(2.0)  # slice K: face centres along J
    assert df.loc[1, "perpendicular_diameter_mm"] == pytest.approx(1.0)
    assert df.loc[2, "max_3d_diameter_mm"] == pytest.approx(10.0)
    for lab in (2, 3):
        mask = arr == lab
        assert df.loc[lab, "max_3d_diameter_mm"] == pytest.approx(_brute_max(_face_midpoints(mask, g.spacing)))
        assert df.loc[lab, "max_inplane_diameter_mm"] == pytest.approx(_brute_inplane(mask, g.spacing, 2)[0])
        assert df.loc[lab, "mesh_volume_ml"] == pytest.approx(_brute_mesh_volume_mm3(mask, g.spacing) / 1000)


SPACINGS = [(0.7, 1.3, 4.5), (2.0, 0.6, 1.1), (0.5, 0.5, 5.0)]


@pytest.mark.parametrize("spacing", SPACINGS, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("shape", ["sphere", "ellipsoid", "voxel"])
def test_mesh_features_match_pyradiomics_definitions_at_anisotropic_spacing(shape, spacing):
    """Maximum3DDiameter, Maximum2DDiameterSlice (whole slices) and MeshVolume within 1 %
    of PyRadiomics' definitions reproduced by brute force (PyRadiomics has no wheel for
    this Python; its reference values on real maps are checked below)."""
    sp = np.asarray(spacing)
    g = Geometry((25, 27, 23), tuple(spacing), (3.0, -2.0, 1.0), tuple(map(tuple, rotation(0.3, 0.2, -0.4))))
    ijk = np.indices(g.shape).reshape(3, -1).T * sp
    c = (np.asarray(g.shape) - 1) / 2 * sp + np.array([0.3, -0.2, 0.1]) * sp
    semi = {"sphere": (6.0, 6.0, 6.0), "ellipsoid": (9.0, 5.0, 6.5), "voxel": None}[shape]
    if semi is None:
        mask = np.zeros(g.shape, bool)
        mask[12, 13, 11] = True
    else:
        mask = (np.sum(((ijk - c) / np.asarray(semi)) ** 2, axis=1) <= 1).reshape(g.shape)
    row = measure_lesions(Volume(mask.astype(np.uint8), g, "label")).iloc[0]
    ax = slice_axis(g)
    assert row["max_3d_diameter_mm"] == pytest.approx(_brute_max(_face_midpoints(mask, sp)), rel=0.01)
    assert row["max_inplane_diameter_mm"] == pytest.approx(_brute_inplane(mask, sp, ax)[0], rel=0.01)
    assert row["mesh_volume_ml"] == pytest.approx(_brute_mesh_volume_mm3(mask, sp) / 1000, rel=0.01)
    if semi is None:
        assert row["max_3d_diameter_mm"] == pytest.approx(max(spacing))
        assert row["mesh_volume_ml"] == pytest.approx(np.prod(sp) / 6 / 1000)
    else:  # edge to edge: the longest semi-axis, doubled, within a voxel diagonal
        assert abs(row["max_3d_diameter_mm"] - 2 * max(semi)) <= float(np.linalg.norm(sp))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 60), st.sampled_from([1, 2, 3]))
def test_max_diameter_equals_brute_force(seed, n, dim):
    rng = np.random.default_rng(seed)
    pts = rng.normal(size=(n, dim)) @ rng.normal(size=(dim, 3))  # rank <= dim: also coplanar / collinear sets
    pts = np.round(pts, 1)                                       # duplicates and grid-like ties
    d, ends = max_diameter(pts)
    assert d == pytest.approx(pdist(pts).max(), rel=1e-9, abs=1e-12)
    assert np.linalg.norm(ends[0] - ends[1]) == pytest.approx(d, rel=1e-9, abs=1e-12)


@pytest.mark.realdata
@pytest.mark.parametrize("case", ["brain1", "breast1"])
def test_mesh_features_against_pyradiomics_reference(case):
    """PyRadiomics' own values (reference_shape.csv): Maximum3DDiameter and MeshVolume
    within 1 %; Maximum2DDiameterSlice reproduced by the brute-force definition, and our
    in-plane long axis equal to that definition on whole slices."""
    from medcnn.io import read_volume

    ref = pd.read_csv(require_shared_data("pyradiomics", "reference_shape.csv")).set_index("featureName")
    vol = read_volume(require_shared_data("pyradiomics", f"{case}_label.nrrd"), kind="label")
    row = measure_lesions(vol, connectivity=None).iloc[0]  # whole label, as PyRadiomics
    mask, sp = vol.array > 0, vol.spacing
    assert row["max_3d_diameter_mm"] == pytest.approx(float(ref.loc["original_shape_Maximum3DDiameter", case]),
                                                      rel=0.01)
    assert row["mesh_volume_ml"] * 1000 == pytest.approx(float(ref.loc["original_shape_MeshVolume", case]), rel=0.01)
    assert row["volume_ml"] * 1000 == pytest.approx(float(ref.loc["original_shape_VoxelVolume", case]), rel=1e-6)
    expected_2d = float(ref.loc["original_shape_Maximum2DDiameterSlice", case])
    full, z = _brute_inplane(mask, sp, 2, between_slices=True)  # PyRadiomics: slice axis = third array axis
    assert full == pytest.approx(expected_2d, rel=1e-6)          # the definition is reproduced
    own, own_z = _brute_inplane(mask, sp, 2)
    assert row["slice_axis"] == 2
    assert row["max_inplane_diameter_mm"] == pytest.approx(own, rel=0.01)
    assert row["inplane_slice_index"] == own_z
    if z == np.round(z):   # PyRadiomics' maximum lies on a whole slice: the same number
        assert row["max_inplane_diameter_mm"] == pytest.approx(expected_2d, rel=0.01)
    else:                  # brain1: its maximum mixes two slices 6.5 mm apart; ours is on one slice
        assert row["max_inplane_diameter_mm"] < expected_2d


@pytest.mark.realdata
@pytest.mark.slow
def test_mesh_features_on_other_shared_label_maps():
    """The other shared tumour label maps (prostate phantom, sarcoma CT/MR/PET masks, a BRATS
    whole tumour): the same brute-force PyRadiomics definitions."""
    from medcnn.io import read_volume

    maps = [(require_shared_data("pyradiomics", "prostate_phantom_subvolume-label.nrrd"), None)]
    import glob

    maps += [(p, None) for p in sorted(glob.glob(str(require_shared_data("sarcoma") / "STS_001" / "*" / "nifti"
                                                          / "mask" / "*.nii.gz")))]
    maps.append((require_shared_data("brats2015", "brats_2013_pat0004_1", "OTMultiClass.nii.gz"), "whole tumour"))
    for path, merge in maps:
        vol = read_volume(path, kind="label")
        if merge:  # BRATS: the union of the tumour labels
            vol = vol.with_array((np.asarray(vol.array) > 0).astype(np.uint8), kind="label")
        df = measure_lesions(vol, connectivity=None)
        for _, row in df.iterrows():
            mask, sp = vol.array == row["label"], vol.spacing
            assert row["max_3d_diameter_mm"] == pytest.approx(_brute_max(_face_midpoints(mask, sp)), rel=0.01), path
            assert row["max_inplane_diameter_mm"] == pytest.approx(
                _brute_inplane(mask, sp, row["slice_axis"])[0], rel=0.01), path
            assert row["mesh_volume_ml"] == pytest.approx(_brute_mesh_volume_mm3(mask, sp) / 1000, rel=0.01), path
