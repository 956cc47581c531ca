"""Label volumes in mL: PyRadiomics reference values, hand calculations, label tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medcnn._testing import require_shared_data
from medcnn.errors import ConfigError, DimensionError, InvalidIntensityError, InvalidLabelError
from medcnn.measure import label_volumes, load_label_table, probability_volumes
from medcnn.volume import Geometry, Volume


def _reference_shape() -> pd.DataFrame:
    root = require_shared_data("pyradiomics")
    return pd.read_csv(root / "reference_shape.csv").set_index("featureName")


@pytest.mark.parametrize("case", ["brain1", "breast1"])
def test_volume_matches_pyradiomics_voxelvolume(case):
    from medcnn.io import read_volume

    ref = _reference_shape()
    assert case in ref.columns, f"reference_shape.csv columns: {list(ref.columns)}"
    voxel_volume_mm3 = float(ref.loc["original_shape_VoxelVolume", case])
    vol = read_volume(require_shared_data("pyradiomics", f"{case}_label.nrrd"), kind="label")
    df = label_volumes(vol)
    assert df["label"].tolist() == [1]  # one tumour label; PyRadiomics measured label 1
    assert df["volume_ml"].iloc[0] == pytest.approx(voxel_volume_mm3 / 1000.0, rel=1e-9)
    assert df["method"].iloc[0] == "voxel count x voxel volume (mm^3) / 1000"


def test_hand_computed_counts_awkward_geometry(awkward_geometry):
    g = awkward_geometry
    arr = np.zeros(g.shape, np.uint8)
    arr[1:4, 2:5, 1:3] = 2          # 3*3*2 = 18 voxels
    arr[0, 0, 0] = 5                # 1 voxel
    vol = Volume(arr, g, "label")
    df = label_volumes(vol, label_names={2: "liver", 5: "tumour", 7: "spleen"})
    sx, sy, sz = g.spacing
    voxel_mm3 = sx * sy * sz
    got = df.set_index("label")
    assert list(got.index) == [2, 5, 7]                  # named-but-absent label 7 reported as 0 mL
    assert got.loc[2, "voxel_count"] == 18
    assert got.loc[2, "volume_ml"] == pytest.approx(18 * voxel_mm3 / 1000, rel=1e-12)
    assert got.loc[5, "volume_ml"] == pytest.approx(voxel_mm3 / 1000, rel=1e-12)
    assert got.loc[7, "volume_ml"] == 0.0
    assert got.loc[2, "label_name"] == "liver"
    assert "volume_ml" in df.attrs["columns"] and "mL" in df.attrs["columns"]["volume_ml"]
    # background on request; an explicit label list
    bg = label_volumes(vol, include_background=True).set_index("label")
    assert bg.loc[0, "voxel_count"] == arr.size - 19
    only = label_volumes(vol, labels=[5, 9])
    assert only["label"].tolist() == [5, 9] and only["voxel_count"].tolist() == [1, 0]


def test_chunked_counting_matches_bincount(monkeypatch):
    import medcnn.measure._common as common

    monkeypatch.setattr(common, "CHUNK_VOXELS", 97)  # force many slabs
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 6, size=(23, 11, 9)).astype(np.uint16)
    vol = Volume(arr, Geometry(arr.shape, (0.5, 0.6, 3.0)), "label")
    df = label_volumes(vol)
    expected = np.bincount(arr.ravel())[1:]
    assert df["voxel_count"].tolist() == expected.tolist()


def test_large_label_values_use_sparse_counting():
    arr = np.zeros((4, 4, 4), np.uint32)
    arr[0, 0, :2] = 3_000_000_000
    arr[1, 1, 1] = 40_000_000
    df = label_volumes(Volume(arr, Geometry(arr.shape, (1, 1, 1)), "label"))
    assert df.set_index("label")["voxel_count"].to_dict() == {40_000_000: 1, 3_000_000_000: 2}


def test_cine_label_series_per_frame():
    g = Geometry((6, 6, 4), (1.5, 1.5, 8.0))
    arr = np.zeros((3, 6, 6, 4), np.uint8)
    for t in range(3):
        arr[t, : t + 1, :2, :2] = 1      # (t + 1) * 4 voxels
    vol = Volume(arr, g, "label", "time", (0.0, 40.0, 80.0))
    df = label_volumes(vol)
    assert df["frame"].tolist() == [0, 1, 2]
    assert df["time_ms"].tolist() == [0.0, 40.0, 80.0]
    assert np.allclose(df["volume_ml"], [(t + 1) * 4 * 1.5 * 1.5 * 8 / 1000 for t in range(3)])


def test_regions_are_unions_counted_once_per_frame():
    g = Geometry((6, 6, 4), (1.5, 1.5, 8.0))
    arr = np.zeros((2, 6, 6, 4), np.uint8)
    arr[:, 0, :, :] = 1
    arr[:, 1, :, :] = 2
    arr[1, 2, :, :] = 4
    vol = Volume(arr, g, "label", "time", (0.0, 40.0))
    df = label_volumes(vol, regions={"whole": [4, 2, 1], "core": [1, 4]})
    reg = df[df["label_name"].isin(["whole", "core"])]
    # independent reference: np.isin per frame
    want = [(t, n, int(np.isin(arr[t], m).sum())) for t in range(2) for n, m in (("whole", [1, 2, 4]),
                                                                                  ("core", [1, 4]))]
    assert [(r.frame, r.label_name, r.voxel_count) for r in reg.itertuples()] == want
    assert set(reg["label"]) == {"1+2+4", "1+4"}
    assert np.allclose(reg["volume_ml"], reg["voxel_count"] * 1.5 * 1.5 * 8 / 1000)
    assert df[df["label"] == 4]["voxel_count"].tolist() == [0, 24]  # every frame reports every label
    for bad in ({"x": []}, {"x": [0, 1]}, {"": [1]}, {"x": [1.5]}, {"x": "12"}):
        with pytest.raises(ConfigError, match="regions"):
            label_volumes(vol, regions=bad)
    probs = Volume(np.full((2, 2, 2, 1), 0.5, np.float32), Geometry((2, 2, 1), (1, 1, 1)), "probability", "channel")
    with pytest.raises(ConfigError, match="label map"):
        label_volumes(probs, regions={"x": [1]})


def test_probability_soft_and_hard_volumes_by_hand():
    g = Geometry((2, 2, 1), (2.0, 1.0, 5.0))   # 10 mm^3 voxels
    p1 = np.array([[[0.9], [0.2]], [[0.6], [0.0]]])
    p2 = np.array([[[0.05], [0.7]], [[0.1], [0.0]]])
    p0 = 1 - p1 - p2
    vol = Volume(np.stack([p0, p1, p2]).astype(np.float32), g, "probability", "channel")
    df = label_volumes(vol, label_names={1: "a", 2: "b"}).set_index("label")
    # soft: sum of probabilities x 10 mm^3 / 1000
    assert df.loc[1, "soft_volume_ml"] == pytest.approx((0.9 + 0.2 + 0.6) * 10 / 1000, rel=1e-6)
    assert df.loc[2, "soft_volume_ml"] == pytest.approx((0.05 + 0.7 + 0.1) * 10 / 1000, rel=1e-6)
    # hard: argmax -> voxel (0,0)=1, (0,1)=2, (1,0)=1, (1,1)=0
    assert df.loc[1, "voxel_count"] == 2 and df.loc[2, "voxel_count"] == 1
    assert df.loc[1, "volume_ml"] == pytest.approx(2 * 10 / 1000)
    assert "sum of probabilities" in df.loc[1, "method"]
    # independent thresholds
    thr = probability_volumes(vol, threshold=0.5).set_index("label")
    assert thr.loc[1, "voxel_count"] == 2 and thr.loc[2, "voxel_count"] == 1
    thr = probability_volumes(vol, threshold=0.15).set_index("label")
    assert thr.loc[1, "voxel_count"] == 3


@pytest.mark.parametrize("bad, err", [(np.nan, InvalidIntensityError), (1.7, InvalidIntensityError),
                                      (-0.5, InvalidIntensityError)])
def test_probability_map_validation(bad, err):
    arr = np.full((2, 3, 3, 3), 0.5, np.float32)
    arr[1, 0, 0, 0] = bad
    g = Geometry((3, 3, 3), (1, 1, 1), source="p.nii.gz")
    with pytest.raises(err, match="p.nii.gz"):
        label_volumes(Volume(arr, g, "probability", "channel"))


def test_rejects_non_label_data():
    g = Geometry((3, 3, 3), (1, 1, 1), source="x.nii.gz")
    with pytest.raises(InvalidLabelError, match="x.nii.gz: expected integer-valued labels"):
        label_volumes(Volume(np.full((3, 3, 3), 0.5), g, "label"))
    with pytest.raises(DimensionError):
        probability_volumes(Volume(np.zeros((3, 3, 3)), g, "label"))


def test_label_tables(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"1": "liver", "2": "tumour"}))
    (tmp_path / "msd.json").write_text(json.dumps({"name": "x", "labels": {"background": 0, "hippo": 1}}))
    (tmp_path / "list.json").write_text(json.dumps([{"label": 3, "name": "rv"}]))
    (tmp_path / "t.csv").write_text("Label,Name\n1,liver\n2,\"tumour, left\"\n")
    (tmp_path / "t.tsv").write_text("value\tstructure\n4\tkidney\n")
    assert load_label_table(tmp_path / "a.json") == {1: "liver", 2: "tumour"}
    assert load_label_table(tmp_path / "msd.json") == {0: "background", 1: "hippo"}
    assert load_label_table(tmp_path / "list.json") == {3: "rv"}
    assert load_label_table(tmp_path / "t.csv") == {1: "liver", 2: "tumour, left"}
    assert load_label_table(tmp_path / "t.tsv") == {4: "kidney"}
    (tmp_path / "bad.csv").write_text("foo,bar\n1,2\n")
    with pytest.raises(ConfigError, match="bad.csv"):
        load_label_table(tmp_path / "bad.csv")
    (tmp_path / "neg.json").write_text(json.dumps({"-1": "x"}))
    with pytest.raises(ConfigError, match="non-negative"):
        load_label_table(tmp_path / "neg.json")
    with pytest.raises(FileNotFoundError):
        load_label_table(tmp_path / "missing.json")


def test_measure_imports_without_torch():
    code = "import sys, medcnn.measure, medcnn.cli.measure; assert 'torch' not in sys.modules, 'torch imported'"
    repo = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=repo)
