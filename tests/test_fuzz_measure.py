"""Property-based checks of the measurement functions on random label maps and geometries."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from conftest import rotation
from medcnn.measure import cardiac_function, label_volumes, measure_lesions
from medcnn.volume import Geometry, Volume

geometries = st.builds(
    lambda shape, spacing, angles: Geometry(shape, spacing, (1.0, -2.0, 3.0), tuple(map(tuple, rotation(*angles)))),
    st.tuples(*[st.integers(2, 9)] * 3), st.tuples(*[st.floats(0.3, 8.0)] * 3),
    st.tuples(*[st.floats(-3.1, 3.1)] * 3))


@settings(max_examples=60, deadline=None)
@given(g=geometries, data=st.data())
def test_volumes_and_lesions_add_up(g, data):
    arr = data.draw(arrays(np.uint8, g.shape, elements=st.integers(0, 3)))
    vol = Volume(arr, g, kind="label")
    df = label_volumes(vol)
    total = float(df["volume_ml"].sum())
    assert np.isclose(total, np.count_nonzero(arr) * g.voxel_volume_ml, rtol=1e-12, atol=0)
    assert (df["volume_ml"] >= 0).all()
    les = measure_lesions(vol, connectivity=26)
    if len(les):
        assert np.isclose(les["volume_ml"].sum(), total, rtol=1e-9)
        assert (les["max_3d_diameter_mm"] >= 0).all()
        # every centroid lies inside the grid's bounding box in world space
        corners = g.corners_world()
        lo, hi = corners.min(0) - 1e-6, corners.max(0) + 1e-6
        cent = les[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy()
        assert np.all((cent >= lo) & (cent <= hi))
    else:
        assert total == 0


@settings(max_examples=40, deadline=None)
@given(g=geometries, data=st.data())
def test_cardiac_function_is_consistent(g, data):
    ed = data.draw(arrays(np.uint8, g.shape, elements=st.integers(0, 3)))
    es = data.draw(arrays(np.uint8, g.shape, elements=st.integers(0, 3)))
    fn = cardiac_function(Volume(ed, g, kind="label"), Volume(es, g, kind="label"))
    edv, esv = np.count_nonzero(ed == 1) * g.voxel_volume_ml, np.count_nonzero(es == 1) * g.voxel_volume_ml
    assert np.isclose(fn.lv_edv_ml, edv) and np.isclose(fn.lv_esv_ml, esv)
    if edv > 0:
        assert np.isclose(fn.lv_ef_percent, (edv - esv) / edv * 100)
    else:
        assert pd.isna(fn.lv_ef_percent) or fn.lv_ef_percent is None
