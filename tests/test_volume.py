"""Geometry and Volume: affine conventions, orientation codes, tolerance comparison."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import rotation
from medcnn.errors import ConfigError, DimensionError, GeometryMismatchError, InvalidGeometryError
from medcnn.volume import Geometry, Volume


def test_affine_maps_index_to_world(awkward_geometry):
    g = awkward_geometry
    ijk = np.array([[0, 0, 0], [1, 2, 3], [g.shape[0] - 1, 0, g.shape[2] - 1]])
    world = g.index_to_world(ijk)
    expected = (np.asarray(g.direction) * g.spacing) @ ijk.T + np.asarray(g.origin)[:, None]
    assert np.allclose(world, expected.T)
    assert np.allclose(g.world_to_index(world), ijk)
    assert Geometry.from_affine(g.affine, g.shape).isclose(g, atol_mm=1e-9)


def test_orientation_codes_match_nibabel(awkward_geometry):
    nib = pytest.importorskip("nibabel")
    assert awkward_geometry.orientation == "".join(nib.aff2axcodes(awkward_geometry.affine))


def test_voxel_volume_ml():
    g = Geometry((2, 2, 2), (0.5, 2.0, 3.0))
    assert g.voxel_volume_ml == pytest.approx(0.003)  # 3 mm^3 = 0.003 mL


@pytest.mark.parametrize("spacing", [(0, 1, 1), (-1, 1, 1), (np.nan, 1, 1), (1, np.inf, 1)])
def test_bad_spacing_rejected(spacing):
    with pytest.raises(InvalidGeometryError, match="expected finite spacing > 0 mm"):
        Geometry((2, 2, 2), spacing, source="scan.nii")


def test_non_orthonormal_and_nonfinite_direction_rejected():
    with pytest.raises(InvalidGeometryError, match="orthonormal"):
        Geometry((2, 2, 2), (1, 1, 1), direction=((1, 0.2, 0), (0, 1, 0), (0, 0, 1)))
    with pytest.raises(InvalidGeometryError, match="finite"):
        Geometry.from_affine(np.full((4, 4), np.nan), (2, 2, 2))


def test_check_matches_names_both_and_suggests_fix():
    a = Geometry((4, 4, 4), (1, 1, 1), source="pred.nii.gz")
    b = Geometry((4, 4, 4), (1, 1, 1.5), source="ref.nii.gz")
    with pytest.raises(GeometryMismatchError) as exc:
        a.check_matches(b, what="prediction and reference")
    msg = str(exc.value)
    assert "pred.nii.gz" in msg and "ref.nii.gz" in msg and "spacing (1, 1, 1) vs (1, 1, 1.5)" in msg
    assert "resample" in msg.lower()
    assert a.isclose(Geometry((4, 4, 4), (1, 1, 1 + 1e-6)))


def test_volume_shape_checks_and_with_array():
    g = Geometry((3, 4, 5), (1, 1, 2))
    v = Volume(np.zeros((3, 4, 5), np.float32), g)
    with pytest.raises(DimensionError, match="expected array shape ending in"):
        v.with_array(np.zeros((3, 4, 6)))
    with pytest.raises(DimensionError, match="expected a 3D"):
        Volume(np.zeros((3, 4)), g)
    lab = v.with_array(np.ones((3, 4, 5), np.uint8), kind="label")
    assert lab.kind == "label" and lab.geometry is g
    cine = Volume(np.zeros((6, 3, 4, 5)), g, leading_axis="time", frame_times_ms=range(6))
    assert cine.n_frames == 6 and cine.frame(2).meta["frame_time_ms"] == 2.0
    assert Volume.stack(cine.frames(), leading_axis="time").shape == (6, 3, 4, 5)


@settings(max_examples=50, deadline=None)
@given(angles=st.tuples(*[st.floats(-3.1, 3.1)] * 3),
       spacing=st.tuples(*[st.floats(0.1, 10)] * 3),
       origin=st.tuples(*[st.floats(-500, 500)] * 3))
def test_affine_round_trip_property(angles, spacing, origin):
    g = Geometry((5, 6, 7), spacing, origin, tuple(map(tuple, rotation(*angles))))
    g2 = Geometry.from_affine(g.affine, g.shape)
    assert g2.isclose(g, atol_mm=1e-6)
    assert len(set(g.orientation)) == 3


def test_crop_keeps_world_positions_and_nonzero_box_adds_a_margin_in_mm(awkward_geometry):
    g = awkward_geometry
    rng = np.random.default_rng(0)
    arr = np.zeros(g.shape, np.uint8)
    lo = tuple(s // 4 for s in g.shape)
    hi = tuple(max(s // 2, a + 1) for s, a in zip(g.shape, lo))
    arr[tuple(slice(a, b) for a, b in zip(lo, hi))] = 1
    vol = Volume(arr, g, "label")
    assert vol.nonzero_box() == (lo, hi)
    cropped = vol.crop(lo, hi)
    assert cropped.shape == tuple(b - a for a, b in zip(lo, hi)) and cropped.array.all()
    # every cropped voxel sits where the same voxel sat in the full grid (hand check via index offset)
    ijk = np.array([[0, 0, 0], [i - 1 for i in cropped.shape]])
    np.testing.assert_allclose(cropped.geometry.index_to_world(ijk), g.index_to_world(ijk + np.array(lo)),
                               atol=1e-9)
    np.testing.assert_allclose(cropped.spacing, g.spacing)
    np.testing.assert_allclose(cropped.geometry.direction_matrix, g.direction_matrix)
    # margin in mm: ceil(margin / spacing) voxels per axis, clipped to the grid
    m = 2.5
    start, stop = vol.nonzero_box(margin_mm=m)
    pad = [int(np.ceil(m / s)) for s in g.spacing]
    assert start == tuple(max(a - p, 0) for a, p in zip(lo, pad))
    assert stop == tuple(min(b + p, n) for b, p, n in zip(hi, pad, g.shape))
    # a 4D volume crops every frame alike; an empty one has no box
    cine = Volume(np.stack([arr, rng.integers(0, 2, g.shape).astype(np.uint8)]), g, "label", "time", (0.0, 30.0))
    assert cine.crop(lo, hi).shape == (2,) + cropped.shape and cine.crop(lo, hi).frame_times_ms == (0.0, 30.0)
    assert Volume(np.zeros(g.shape), g).nonzero_box() is None
    with pytest.raises(ConfigError, match="margin_mm"):
        vol.nonzero_box(margin_mm=-1.0)
    for bad in ((lo, lo), ((-1, 0, 0), hi), (lo, tuple(s + 1 for s in g.shape))):
        with pytest.raises(DimensionError, match="start < stop"):
            vol.crop(*bad)
