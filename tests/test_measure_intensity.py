"""Intensity statistics per label (``medcnn.measure.intensity_statistics``, ``medcnn measure
--image``) against SimpleITK's LabelStatisticsImageFilter and numpy on a real CT."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medcnn.cli import main
from medcnn.cli.measure import read_table
from medcnn.errors import GeometryMismatchError
from medcnn.io import read_volume, write_volume
from medcnn.measure import intensity_statistics
from medcnn.volume import Geometry, Volume

G = Geometry((12, 10, 6), (0.8, 0.9, 3.0), (-20.0, 14.0, 7.5))


def _pair():
    rng = np.random.default_rng(3)
    img = rng.normal(40.0, 12.0, G.shape).astype(np.float32)
    lab = np.zeros(G.shape, np.uint8)
    lab[2:6, 2:7, 1:4] = 1
    lab[7:11, 3:9, 2:6] = 2
    img[lab == 2] -= 900.0                              # a "lung" label: very different intensities
    return Volume(img, G, "intensity"), Volume(lab, G, "label"), img, lab


def test_statistics_match_numpy_by_hand():
    image, labels, img, lab = _pair()
    df = intensity_statistics(image, labels, label_names={1: "liver", 2: "lung"}, modality="CT").set_index("label")
    for v in (1, 2):
        x = img[lab == v].astype(np.float64)
        row = df.loc[v]
        assert row["voxel_count"] == x.size
        assert row["intensity_mean"] == pytest.approx(x.mean(), rel=1e-12)
        assert row["intensity_sd"] == pytest.approx(x.std(ddof=1), rel=1e-12)
        assert row["intensity_median"] == pytest.approx(np.median(x), rel=1e-12)
        for q in (5, 25, 75, 95):
            assert row[f"intensity_p{q}"] == pytest.approx(np.percentile(x, q), rel=1e-12)
        assert row["intensity_unit"] == "HU"
    assert df.loc[2, "label_name"] == "lung" and df.loc[2, "intensity_mean"] < -800
    assert intensity_statistics(image, labels)["intensity_unit"].unique().tolist() == ["image units"]
    absent = intensity_statistics(image, labels, label_values=[3]).iloc[0]
    assert absent["voxel_count"] == 0 and math.isnan(absent["intensity_mean"])
    shifted = Volume(lab, Geometry(G.shape, G.spacing, (0.0, 0.0, 0.0)), "label")
    with pytest.raises(GeometryMismatchError):
        intensity_statistics(image, shifted)


@pytest.mark.realdata
def test_sarcoma_ct_against_simpleitk_label_statistics(shared_data):
    """The CT of the IBSI sarcoma patient and its tumour mask, read and measured by SimpleITK
    independently of medcnn's readers."""
    import SimpleITK as sitk

    from medcnn._testing import require_shared_data

    root = require_shared_data("sarcoma", "STS_001", "CT", "nifti")
    img_path, mask_path = root / "image" / "image.nii.gz", root / "mask" / "mask.nii.gz"
    df = intensity_statistics(read_volume(img_path), read_volume(mask_path, kind="label"), modality="CT")
    s_img = sitk.ReadImage(str(img_path))
    s_mask = sitk.Cast(sitk.ReadImage(str(mask_path)), sitk.sitkUInt8)
    f = sitk.LabelStatisticsImageFilter()
    f.Execute(s_img, s_mask)
    labels = [int(v) for v in f.GetLabels() if v != 0]
    assert df["label"].tolist() == labels
    a_img, a_mask = sitk.GetArrayFromImage(s_img).astype(np.float64), sitk.GetArrayFromImage(s_mask)
    for v in labels:
        row = df.set_index("label").loc[v]
        assert row["voxel_count"] == f.GetCount(v) > 1000
        assert row["intensity_mean"] == pytest.approx(f.GetMean(v), rel=1e-9)
        assert row["intensity_sd"] == pytest.approx(f.GetSigma(v), rel=1e-9)
        assert row["intensity_min"] == f.GetMinimum(v) and row["intensity_max"] == f.GetMaximum(v)
        x = a_img[a_mask == v]
        for q in (5, 25, 75, 95):
            assert row[f"intensity_p{q}"] == pytest.approx(np.percentile(x, q), rel=1e-12)
        assert -200 < row["intensity_median"] < 200 and row["intensity_unit"] == "HU"   # soft tissue in HU


def test_measure_cli_image_statistics(tmp_path, capsys):
    image, labels, img, lab = _pair()
    write_volume(image, tmp_path / "ct.nii.gz")
    write_volume(labels, tmp_path / "seg.nii.gz")
    out = tmp_path / "r.csv"
    assert main(["measure", str(tmp_path / "seg.nii.gz"), "--image", str(tmp_path / "ct.nii.gz"), "--modality", "CT",
                 "--no-lesions", "--out", str(out)]) == 0
    df = read_table(out).set_index("label")
    x = img[lab == 1].astype(np.float64)
    assert df.loc[1, "intensity_mean"] == pytest.approx(x.mean(), rel=1e-6)
    assert df.loc[1, "intensity_p95"] == pytest.approx(np.percentile(x, 95), rel=1e-6)
    assert set(df["intensity_unit"]) == {"HU"}
    from medcnn.report.tables import metadata_path

    assert "intensity_sd" in metadata_path(out).read_text()
    # one --image per LABELMAP, or one clear line and exit 2 with nothing written
    bad = tmp_path / "bad.csv"
    assert main(["measure", str(tmp_path / "seg.nii.gz"), str(tmp_path / "seg.nii.gz"), "--image",
                 str(tmp_path / "ct.nii.gz"), "--out", str(bad)]) == 2
    assert "one --image per LABELMAP" in capsys.readouterr().err and not bad.exists()


def test_run_volumes_csv_has_intensity_statistics(tmp_path):
    """`medcnn run` adds the same columns to volumes.csv (image = the first input channel)."""
    import pandas as pd
    from test_batch_support import blob_scan, make_bundle

    bundle = make_bundle(tmp_path / "tiny")
    scan = blob_scan()
    write_volume(scan, tmp_path / "scan.nii.gz")
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "scan.nii.gz"), "--model", str(bundle), "--out", str(out), "--mode", "volumes",
                 "--no-progress"]) == 0
    vols = pd.read_csv(out / "volumes.csv")
    (label_file,) = [p for p in out.rglob("*labels*.nii.gz")]
    lab = np.asarray(read_volume(label_file, kind="label").array)
    img = np.asarray(scan.array, dtype=np.float64)
    checked = 0
    for _, row in vols.iterrows():
        x = img[lab == int(row["label"])]
        if x.size > 1:
            assert row["intensity_mean"] == pytest.approx(x.mean(), rel=1e-6)
            assert row["intensity_p25"] == pytest.approx(np.percentile(x, 25), rel=1e-6)
            assert row["intensity_unit"] == "image units"
            checked += 1
    assert checked >= 1
    from medcnn.report.tables import metadata_path

    assert "intensity_median" in metadata_path(out / "volumes.csv").read_text()
