"""``medcnn response``: tumour response over time points from the command line.

Checked against hand calculations (blocks of known voxel counts on different grids, the
RECIST thresholds converted by hand), against SimpleITK (a real BraTS label map resampled
onto another grid, volumes counted on SimpleITK's arrays), and against ``medcnn segment``
(model-segmented time points: the same label maps and volume rows).
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pandas as pd
import pytest

from medcnn.cli import main
from medcnn.io import write_volume
from medcnn.volume import Geometry, Volume
from tests.conftest import rotation

UNIT_SUFFIXES = ("_ml", "_mm3", "_percent", "_days")
UNITLESS = {"followup_index", "baseline_voxel_count", "followup_voxel_count", "label"}


def _label_map(path, geometry: Geometry, blocks: dict[int, tuple[slice, slice, slice]]):
    arr = np.zeros(geometry.shape, np.uint8)
    for value, sl in blocks.items():
        arr[sl] = value
    return write_volume(Volume(arr, geometry, "label"), path)


def _read(out):
    df = pd.read_csv(out / "response.csv")
    doc = json.loads((out / "response.json").read_text())
    return df, doc


def _only_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("medcnn response: error: "), err
    return err[0]


# ---------------------------------------------------------------------- hand calculations
BASE_GEOM = Geometry((14, 12, 9), (0.8, 1.0, 2.5), (-20.0, 10.0, 5.0), tuple(map(tuple, rotation(0.3, -0.2, 0.5))))
FOLLOW_GEOM = Geometry((20, 16, 12), (1.25, 1.0, 1.5), (-22.5, 8.0, 3.0),
                       tuple(map(tuple, np.diag([-1.0, -1.0, 1.0]))))


def test_change_on_two_grids_is_exact_by_hand(tmp_path, capsys):
    """Baseline: label 1 = 10x10x5 = 500 voxels of 0.8x1.0x2.5 = 2 mm^3 -> 1.000 mL, label 2 =
    2x2x2 = 8 voxels -> 0.016 mL. Follow-up on another grid: label 1 = 12x10x8 = 960 voxels of
    1.25x1.0x1.5 = 1.875 mm^3 -> 1.800 mL, label 2 = 4x2x1 = 8 voxels -> 0.015 mL.
    2021-01-10 -> 2021-03-11 = 31 + 28 + 1 = 60 days."""
    base = _label_map(tmp_path / "in" / "base.nii.gz", BASE_GEOM,
                      {1: np.s_[1:11, 1:11, 2:7], 2: np.s_[12:14, 0:2, 0:2]})
    follow = _label_map(tmp_path / "in" / "follow.nrrd", FOLLOW_GEOM,
                        {1: np.s_[2:14, 3:13, 1:9], 2: np.s_[15:19, 0:2, 10:11]})
    out = tmp_path / "out"
    rc = main(["response", str(base), str(follow), "--dates", "2021-01-10,2021-03-11",
               "--region", "tumour=1,2", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    df, doc = _read(out)
    assert len(df) == 3 and (df["followup_index"] == 1).all() and (df["interval_days"] == 60).all()
    r = {str(row["label"]): row for _, row in df.iterrows()}
    ln2 = math.log(2.0)
    # label 1: 1.000 -> 1.800 mL: +0.8 mL, +80 % (>= +72.8 %: PD), VDT = 60 ln2 / ln 1.8 days
    assert (r["1"]["baseline_voxel_count"], r["1"]["followup_voxel_count"]) == (500, 960)
    assert r["1"]["baseline_voxel_volume_mm3"] == pytest.approx(2.0) and \
        r["1"]["followup_voxel_volume_mm3"] == pytest.approx(1.875)
    assert r["1"]["baseline_volume_ml"] == pytest.approx(1.0, abs=1e-12)
    assert r["1"]["followup_volume_ml"] == pytest.approx(1.8, abs=1e-12)
    assert r["1"]["change_ml"] == pytest.approx(0.8, abs=1e-12)
    assert r["1"]["change_percent"] == pytest.approx(80.0, abs=1e-9)
    assert r["1"]["vdt_days"] == pytest.approx(60 * ln2 / math.log(1.8), rel=1e-12)  # 70.75 days
    assert r["1"]["category"] == "PD"
    # label 2: 0.016 -> 0.015 mL: -0.001 mL, -6.25 % (SD), halving time 60 ln2 / ln(0.9375) < 0
    assert r["2"]["change_ml"] == pytest.approx(-0.001, abs=1e-12)
    assert r["2"]["change_percent"] == pytest.approx(-6.25, abs=1e-9)
    assert r["2"]["vdt_days"] == pytest.approx(60 * ln2 / math.log(0.9375), rel=1e-12)
    assert r["2"]["category"] == "SD"
    # the region: union of 1 and 2, 1.016 -> 1.815 mL, +78.64 %, PD
    reg = r["1+2"]
    assert reg["structure"] == "region" and reg["label_name"] == "tumour"
    assert (reg["baseline_voxel_count"], reg["followup_voxel_count"]) == (508, 968)
    assert reg["baseline_volume_ml"] == pytest.approx(1.016, abs=1e-12)
    assert reg["followup_volume_ml"] == pytest.approx(1.815, abs=1e-12)
    assert reg["change_percent"] == pytest.approx((1.815 - 1.016) / 1.016 * 100, abs=1e-9)
    assert reg["category"] == "PD"
    # label-map inputs carry no probabilities: no sensitivity band
    assert df[[c for c in df.columns if c.endswith(("_low_ml", "_high_ml"))]].isna().all().all()
    for col in df.columns:  # every numeric column has its unit in the name
        if pd.api.types.is_numeric_dtype(df[col]) and not df[col].isna().all():
            assert col in UNITLESS or col.endswith(UNIT_SUFFIXES), col

    # response.json: method text, thresholds, version, input SHA-256s, each time point on its own grid
    from medcnn import __version__

    assert doc["medcnn_version"] == __version__ and doc["tool"] == "medcnn response"
    assert "not a confidence interval" in doc["methods"]["sensitivity_band"]
    assert "no time point is resampled" in doc["methods"]["volumes"]
    assert doc["thresholds"]["pr_volume_change_percent"] == pytest.approx((0.7 ** 3 - 1) * 100)   # -65.7
    assert doc["thresholds"]["pd_volume_change_percent"] == pytest.approx((1.2 ** 3 - 1) * 100)   # +72.8
    tps = doc["timepoints"]
    assert [t["inputs"][0]["file"] for t in tps] == ["base.nii.gz", "follow.nrrd"]
    for t, path in zip(tps, (base, follow)):
        assert t["inputs"][0]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert tps[0]["grid"]["spacing_mm"] == pytest.approx([0.8, 1.0, 2.5])
    assert tps[1]["grid"]["spacing_mm"] == pytest.approx([1.25, 1.0, 1.5])
    assert [t["date"] for t in tps] == ["2021-01-10", "2021-03-11"] and tps[1]["interval_days"] == 60
    assert doc["response"][0]["category"] == "PD"

    # no absolute path anywhere; the HTML page is self-contained
    from test_no_absolute_paths import absolute_paths

    assert sorted(p.name for p in out.iterdir()) == ["response.csv", "response.csv-metadata.json", "response.html",
                                                     "response.json"]
    for p in out.iterdir():
        text = p.read_text()
        assert not absolute_paths(text, needles=(str(tmp_path),)), (p.name, absolute_paths(text))
    page = (out / "response.html").read_text()
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org", "")
    assert "https://" not in page and "sensitivity" in page.lower()
    assert "Follow-up 1 against baseline" in page and "PD" in page and "tumour (1+2)" in page


def test_categories_at_the_thresholds_on_both_sides(tmp_path, capsys):
    """Baseline 10^3 = 1000 voxels. PR at <= (0.7^3 - 1) = -65.7 %: 343 voxels is PR, 344
    (-65.6 %) SD; PD at >= (1.2^3 - 1) = +72.8 %: 1728 = 12^3 voxels is PD, 1727 (+72.7 %) SD;
    0 voxels CR. Follow-ups 30, 60, ... days after baseline."""
    g = Geometry((14, 14, 14), (0.9, 1.1, 1.3), (3.0, -4.0, 5.0))

    def mask(n_extra: int, edge: int) -> np.ndarray:
        arr = np.zeros(g.shape, np.uint8)
        arr[:edge, :edge, :edge] = 1
        if n_extra > 0:
            arr[edge, 0, :n_extra] = 1
        elif n_extra < 0:
            arr[edge - 1, edge - 1, edge + n_extra:edge] = 0
        return arr

    cases = {"base": mask(0, 10), "pr_at": mask(0, 7), "sd_above_pr": mask(1, 7), "sd_below_pd": mask(-1, 12),
             "pd_at": mask(0, 12), "cr": np.zeros(g.shape, np.uint8)}
    paths = {k: write_volume(Volume(a, g, "label"), tmp_path / f"{k}.nii.gz") for k, a in cases.items()}
    counts = {k: int(a.sum()) for k, a in cases.items()}
    assert list(counts.values()) == [1000, 343, 344, 1727, 1728, 0]
    out = tmp_path / "out"
    rc = main(["response", *map(str, paths.values()), "--interval-days", "30,60,90,120,150", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    df, _ = _read(out)
    assert df["category"].tolist() == ["PR", "SD", "SD", "PD", "CR"]
    assert df["change_percent"].tolist() == pytest.approx([-65.7, -65.6, 72.7, 72.8, -100.0], abs=1e-9)
    assert df["interval_days"].tolist() == [30, 60, 90, 120, 150]
    assert df["followup_voxel_count"].tolist() == [343, 344, 1727, 1728, 0]
    assert math.isnan(df["vdt_days"].iloc[-1])  # no doubling time to or from 0 mL
    assert df["vdt_days"].iloc[3] == pytest.approx(120 * math.log(2) / math.log(1.728))


# ---------------------------------------------------------------------- real data
@pytest.mark.realdata
def test_brats_map_resampled_to_1_2_mm_is_stable(tmp_path, capsys):
    """A BraTS 2018 expert label map and the same map resampled by SimpleITK (nearest
    neighbour) onto a 1.2 mm grid with a shifted origin in the same world space: whole tumour
    within 5 %, category SD; each time point's volumes equal SimpleITK's voxel counts x its
    spacing."""
    import SimpleITK as sitk

    from medcnn._testing import require_shared_data

    root = require_shared_data("brats2018")
    case = "Brats18_2013_11_1"
    seg = root / case / f"{case}_seg.nii.gz"
    img = sitk.ReadImage(str(seg))
    ref = sitk.Image([int(round(s / 1.2)) + 2 for s in img.GetSize()], img.GetPixelID())
    ref.SetSpacing((1.2, 1.2, 1.2))
    ref.SetOrigin(tuple(np.asarray(img.GetOrigin()) + np.array([-3.3, 2.1, -1.7])))
    ref.SetDirection(img.GetDirection())
    moved = sitk.Resample(img, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    follow = tmp_path / "followup_1p2mm.nii.gz"
    sitk.WriteImage(moved, str(follow))
    moved = sitk.ReadImage(str(follow))  # as stored: NIfTI keeps the spacing in float32
    out = tmp_path / "out"
    rc = main(["response", str(seg), str(follow), "--labels", str(root / "dataset.json"),
               "--dates", "2018-03-01,2018-06-01", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    df, doc = _read(out)

    def sitk_ml(image, labels) -> float:
        arr = sitk.GetArrayViewFromImage(image)
        return float(np.isin(arr, labels).sum()) * float(np.prod(image.GetSpacing())) / 1000.0

    wt = df[(df["structure"] == "region") & (df["label_name"] == "whole_tumour")].iloc[0]
    assert wt["label"] == "1+2+4"
    assert wt["baseline_volume_ml"] == pytest.approx(sitk_ml(img, [1, 2, 4]), rel=1e-9)
    assert wt["followup_volume_ml"] == pytest.approx(sitk_ml(moved, [1, 2, 4]), rel=1e-9)
    assert abs(wt["change_percent"]) < 5.0
    assert wt["category"] == "SD"
    assert wt["interval_days"] == 92
    for name, labels in (("tumour_core", [1, 4]), ("enhancing_tumour", [4])):
        row = df[(df["structure"] == "region") & (df["label_name"] == name)].iloc[0]
        assert row["baseline_volume_ml"] == pytest.approx(sitk_ml(img, labels), rel=1e-9)
        assert row["followup_volume_ml"] == pytest.approx(sitk_ml(moved, labels), rel=1e-9)
    labels = df[df["structure"] == "label"].set_index("label")
    assert set(labels.index.astype(int)) == {1, 2, 4}
    for v in (1, 2, 4):
        assert labels.loc[str(v), "followup_volume_ml"] == pytest.approx(sitk_ml(moved, [v]), rel=1e-9)
    assert doc["timepoints"][1]["grid"]["spacing_mm"] == pytest.approx([1.2] * 3, abs=1e-6)


@pytest.mark.realdata
@pytest.mark.slow  # two four-sequence segmentations: ~20-40 s on 2 CPU cores
def test_four_sequence_model_on_a_case_and_its_1_2_mm_resampling_is_stable(tmp_path, capsys):
    """The shipped four-sequence region model on a BraTS 2018 case (baseline) and on the same
    four sequences resampled by SimpleITK (linear) onto a 1.2 mm grid with a shifted origin in
    the same world space (follow-up): each time point segmented and measured on its own grid,
    whole tumour within 5 %, category SD; volumes are SimpleITK voxel counts of the label maps
    written."""
    import SimpleITK as sitk

    from medcnn._testing import require_shared_data
    from medcnn.batch import bundled_names

    if "brain-tumour-mri-4seq" not in bundled_names():
        pytest.skip("brain-tumour-mri-4seq not installed")
    root = require_shared_data("brats2018")
    case = "Brats18_TCIA02_135_1"
    t0 = [root / case / f"{case}_{s}.nii.gz" for s in ("flair", "t1", "t1ce", "t2")]
    t1 = []
    for p in t0:
        img = sitk.ReadImage(str(p), sitk.sitkFloat32)
        ref = sitk.Image([int(round(n / 1.2)) + 2 for n in img.GetSize()], sitk.sitkFloat32)
        ref.SetSpacing((1.2, 1.2, 1.2))
        ref.SetOrigin(tuple(np.asarray(img.GetOrigin()) + np.array([-3.3, 2.1, -1.7])))
        ref.SetDirection(img.GetDirection())
        out_p = tmp_path / "t1" / p.name
        out_p.parent.mkdir(exist_ok=True)
        sitk.WriteImage(sitk.Resample(img, ref, sitk.Transform(), sitk.sitkLinear, 0.0), str(out_p))
        t1.append(out_p)
    out = tmp_path / "out"
    rc = main(["response", ",".join(map(str, t0)), ",".join(map(str, t1)), "--model", "brain-tumour-mri-4seq",
               "--device", "cpu", "--precision", "fp32", "--threads", "2", "--interval-days", "90", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    df, doc = _read(out)
    wt = df[(df["structure"] == "region") & (df["label_name"] == "whole_tumour")].iloc[0]
    for t, key in zip(doc["timepoints"], ("baseline_volume_ml", "followup_volume_ml")):
        lab = sitk.ReadImage(str(out / t["label_map"]))
        arr = sitk.GetArrayViewFromImage(lab)
        assert wt[key] == pytest.approx(float(np.isin(arr, [1, 2, 4]).sum()) * float(np.prod(lab.GetSpacing()))
                                        / 1000.0, rel=1e-6)
    assert doc["timepoints"][1]["grid"]["spacing_mm"] == pytest.approx([1.2] * 3, abs=1e-6)
    assert abs(wt["change_percent"]) < 5.0, wt["change_percent"]
    assert wt["category"] == "SD"


# ---------------------------------------------------------------------- bad input
def _bad_cases(tmp_path):
    g = Geometry((8, 8, 6), (1.0, 1.0, 2.0))
    a = _label_map(tmp_path / "a.nii.gz", g, {1: np.s_[1:4, 1:4, 1:3], 2: np.s_[5:7, 5:7, 4:5]})
    b = _label_map(tmp_path / "b.nii.gz", g, {1: np.s_[1:5, 1:4, 1:3]})
    other = _label_map(tmp_path / "other_convention.nii.gz", g, {1: np.s_[1:4, 1:4, 1:3], 3: np.s_[5:7, 5:7, 4:5]})
    series = tmp_path / "series.nii.gz"
    write_volume(Volume.stack([Volume(np.zeros(g.shape, np.uint8), g, "label")] * 2, leading_axis="time"), series)
    table = tmp_path / "labels.csv"
    table.write_text("label,name\n1,necrosis\n2,oedema\n")
    return {"a": a, "b": b, "other": other, "series": series, "table": table, "missing": tmp_path / "gone.nii.gz"}


BAD = {
    "one time point": (lambda p: [p["a"]], "at least one FOLLOWUP"),
    "no time point": (lambda p: [], "at least one FOLLOWUP"),
    "missing follow-up": (lambda p: [p["a"], p["missing"]], "gone.nii.gz"),
    "dates out of order": (lambda p: [p["a"], p["b"], "--dates", "2021-05-01,2021-02-01"], "increasing order"),
    "same date": (lambda p: [p["a"], p["b"], "--dates", "2021-05-01,2021-05-01"], "same day"),
    "dates not ISO": (lambda p: [p["a"], p["b"], "--dates", "01/02/2021,2021-05-01"], "ISO dates"),
    "one date short": (lambda p: [p["a"], p["b"], "--dates", "2021-05-01"], "one ISO date per time point"),
    "intervals decreasing": (lambda p: [p["a"], p["b"], p["b"], "--interval-days", "90,30"], "increasing"),
    "label sets differ": (lambda p: [p["a"], p["other"]], "other_convention.nii.gz"),
    "label not in table": (lambda p: [p["a"], p["other"], "--labels", p["table"]], "labels.csv"),
    "region of unknown label": (lambda p: [p["a"], p["b"], "--labels", p["table"], "--region", "wt=1,2,4"], "4"),
    "4D series": (lambda p: [p["a"], p["series"]], "series.nii.gz"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_is_one_line_exit_2_and_no_output(tmp_path, capsys, name):
    paths = _bad_cases(tmp_path)
    argv, needle = BAD[name]
    out = tmp_path / "out"
    rc = main(["response", *map(str, argv(paths)), "--out", str(out)])
    assert rc == 2
    line = _only_error_line(capsys)
    assert needle in line and "expected" in line, line
    assert not out.exists()


def test_mismatched_label_sets_name_both_sets(tmp_path, capsys):
    p = _bad_cases(tmp_path)
    assert main(["response", str(p["a"]), str(p["other"]), "--out", str(tmp_path / "out")]) == 2
    line = _only_error_line(capsys)
    assert "[1, 2]" in line and "[3]" in line and "a.nii.gz" in line


def test_a_structure_that_disappears_is_zero_ml_not_an_error(tmp_path, capsys):
    """Baseline labels {1, 2}, follow-up {1}: label 2 went to 0 mL (CR), label 1 is compared."""
    p = _bad_cases(tmp_path)
    out = tmp_path / "out"
    assert main(["response", str(p["a"]), str(p["b"]), "--out", str(out)]) == 0, capsys.readouterr().err
    df, _ = _read(out)
    by = df.set_index("label")
    assert by.loc[2, "followup_volume_ml"] == 0 and by.loc[2, "category"] == "CR"
    assert by.loc[1, "baseline_voxel_count"] == 18 and by.loc[1, "followup_voxel_count"] == 24
    assert by.loc[1, "change_ml"] == pytest.approx((24 - 18) * 2.0 / 1000)


def test_dates_and_intervals_exclude_each_other(tmp_path, capsys):
    p = _bad_cases(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["response", str(p["a"]), str(p["b"]), "--dates", "2021-01-01,2021-02-01", "--interval-days", "31",
              "--out", str(tmp_path / "out")])
    assert exc.value.code == 2 and "not allowed with" in capsys.readouterr().err


# ---------------------------------------------------------------------- scans with a model
def _bundle(path, *, channels=("MRI",), regions=None):
    """A tiny seeded 3D UNet bundle with the tumour labels (and regions) of the batch tests."""
    import torch

    from medcnn.models import build_network, save_bundle
    from medcnn.preprocess import PreprocessSpec
    from test_batch_support import TUMOUR_LABELS

    spec = {"name": "unet", "spatial_dims": 3, "in_channels": len(channels), "out_channels": len(TUMOUR_LABELS),
            "channels": [4, 8], "strides": [2], "num_res_units": 0}
    torch.manual_seed(0)
    net = build_network(spec)
    with torch.no_grad():
        for prm in net.parameters():
            prm.mul_(3.0)
    return save_bundle(net, path, network=spec, preprocess=PreprocessSpec(orientation=None,
                                                                          modalities=("MR",) * len(channels)),
                       roi_size=(16, 16, 8), labels=TUMOUR_LABELS, channels=list(channels), overlap=0.25,
                       provenance={"task": "tumour"}, regions=regions)


@pytest.mark.slow  # 1.6 s warm; ~12 s when it is the first test to import torch and MONAI on a busy CPU
@pytest.mark.usefixtures("one_torch_thread")
def test_model_time_points_are_segmented_as_segment_does(tmp_path, capsys):
    """Two scans on different grids segmented with a region model: the label maps and the
    volume rows (labels, regions, sensitivity bands) are those of ``medcnn segment``; the
    region volume is the sum of its labels' volumes; the comparison uses those rows."""
    from test_batch_support import blob_scan

    regions = {"regions": {"whole tumour": [1, 2, 3], "tumour core": [2, 3]}}
    bundle = _bundle(tmp_path / "bundle", regions=regions)
    s0 = write_volume(blob_scan(seed=1, radius=5.0), tmp_path / "in" / "scan_t0.nii.gz")
    s1 = write_volume(blob_scan(shape=(20, 24, 10), spacing=(1.8, 1.25, 4.0), seed=2, radius=7.0,
                                origin=(-12.0, 3.0, 18.0)), tmp_path / "in" / "scan_t1.nrrd")
    out, seg_out = tmp_path / "out", tmp_path / "segment"
    rc = main(["response", str(s0), str(s1), "--model", str(bundle), "--device", "cpu", "--precision", "fp32",
               "--interval-days", "42", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert main(["segment", str(s0), str(s1), "--model", str(bundle), "--device", "cpu", "--precision", "fp32",
                 "--out", str(seg_out)]) == 0
    df, doc = _read(out)
    prov = json.loads((seg_out / "segment_provenance.json").read_text())
    from medcnn.io import read_volume

    for t, case, name in zip(doc["timepoints"], prov["cases"], ("scan_t0_labels.nii.gz", "scan_t1_labels.nrrd")):
        mine, theirs = read_volume(out / t["label_map"]), read_volume(seg_out / name)
        assert t["label_map"] == f"t{t['index']}_{name}"
        np.testing.assert_array_equal(mine.array, theirs.array)
        assert not mine.geometry.differences(theirs.geometry)
        keys = ("label", "label_name", "voxel_count", "volume_ml", "volume_low_ml", "volume_high_ml")
        assert [{k: r.get(k) for k in keys} for r in t["volumes"]] == \
            [{k: r.get(k) for k in keys} for r in case["volumes"]]
        vols = {r["label"]: r["volume_ml"] for r in t["volumes"]}
        assert vols["1+2+3"] == pytest.approx(vols[1] + vols[2] + vols[3], abs=1e-12)
        assert vols["2+3"] == pytest.approx(vols[2] + vols[3], abs=1e-12)
    assert doc["model"]["name"] == "bundle" and doc["model"]["sha256"] == prov["model"]["sha256"]
    assert df["structure"].tolist() == ["label"] * 3 + ["region"] * 2
    b0 = {r["label"]: r for r in doc["timepoints"][0]["volumes"]}
    b1 = {r["label"]: r for r in doc["timepoints"][1]["volumes"]}
    for _, row in df.iterrows():
        key = int(row["label"]) if row["structure"] == "label" else row["label"]
        assert row["baseline_volume_ml"] == pytest.approx(b0[key]["volume_ml"])
        assert row["followup_volume_ml"] == pytest.approx(b1[key]["volume_ml"])
        if row["structure"] == "label":  # the sensitivity band of each time point, label rows
            assert row["baseline_volume_low_ml"] == pytest.approx(b0[key]["volume_low_ml"])
            assert row["followup_volume_high_ml"] == pytest.approx(b1[key]["volume_high_ml"])
            assert row["baseline_volume_low_ml"] <= row["baseline_volume_ml"] <= row["baseline_volume_high_ml"]
        else:
            assert pd.isna(row["baseline_volume_low_ml"])
    # the same label maps given as label maps give the same comparison
    again = tmp_path / "again"
    assert main(["response", str(seg_out / "scan_t0_labels.nii.gz"), str(seg_out / "scan_t1_labels.nrrd"),
                 "--regions", str(bundle / "bundle.json"), "--interval-days", "42", "--out", str(again)]) == 0
    df2, _ = _read(again)
    cols = ["label", "baseline_volume_ml", "followup_volume_ml", "change_percent", "vdt_days", "category"]
    pd.testing.assert_frame_equal(df[cols].iloc[3:].reset_index(drop=True), df2[cols].iloc[-2:].reset_index(drop=True))


@pytest.mark.usefixtures("one_torch_thread")
def test_multichannel_time_points_as_comma_list_and_folder(tmp_path, capsys):
    """A two-channel model: the baseline as a comma list in channel order, the follow-up as a
    folder of channel files (matched by name), as ``segment --channels`` reads them."""
    from test_batch_support import blob_scan

    bundle = _bundle(tmp_path / "bundle", channels=("FLAIR", "T1c"))
    t0 = [write_volume(blob_scan(seed=s), tmp_path / "t0" / f"{c}.nii.gz") for s, c in ((1, "a_flair"), (2, "a_t1c"))]
    g1 = dict(shape=(22, 20, 9), spacing=(1.4, 1.6, 4.5), origin=(-8.0, 2.0, 15.0))
    t1 = tmp_path / "t1"
    for s, c in ((3, "flair"), (4, "t1c")):
        write_volume(blob_scan(seed=s, radius=7.5, **g1), t1 / f"case_{c}.nii.gz")
    out = tmp_path / "out"
    rc = main(["response", ",".join(map(str, t0)), str(t1), "--model", str(bundle), "--device", "cpu",
               "--precision", "fp32", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    seg_out = tmp_path / "segment"
    assert main(["segment", "--channels", ",".join(map(str, t0)), "--channels", str(t1), "--model", str(bundle),
                 "--device", "cpu", "--precision", "fp32", "--out", str(seg_out)]) == 0
    _, doc = _read(out)
    prov = json.loads((seg_out / "segment_provenance.json").read_text())
    assert [i["file"] for i in doc["timepoints"][1]["inputs"]] == ["case_flair.nii.gz", "case_t1c.nii.gz"]
    for t, case in zip(doc["timepoints"], prov["cases"]):
        assert [(r["label"], r["voxel_count"]) for r in t["volumes"]] == \
            [(r["label"], r["voxel_count"]) for r in case["volumes"]]
    assert math.isnan(pd.read_csv(out / "response.csv")["vdt_days"].iloc[0])  # no dates: no doubling time


@pytest.mark.parametrize("form", ["single image", "three files"])
def test_a_multichannel_model_refuses_a_wrong_time_point_before_the_model_loads(tmp_path, capsys, monkeypatch,
                                                                                 form):
    pytest.importorskip("torch")
    from test_batch_support import blob_scan

    from medcnn.inference import Segmenter

    bundle = _bundle(tmp_path / "bundle", channels=("FLAIR", "T1c"))
    a = write_volume(blob_scan(seed=1), tmp_path / "a.nii.gz")
    b = write_volume(blob_scan(seed=2), tmp_path / "b.nii.gz")
    base = str(a) if form == "single image" else f"{a},{b},{a}"

    def no_model(*_, **__):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(Segmenter, "from_bundle", no_model)
    rc = main(["response", base, f"{a},{b}", "--model", str(bundle), "--device", "cpu", "--out", str(tmp_path / "o")])
    assert rc == 2
    line = _only_error_line(capsys)
    assert "2-channel model (FLAIR, T1c)" in line and "comma list" in line
    assert ("single image" if form == "single image" else "3 files") in line and "a.nii.gz" in line
    assert not (tmp_path / "o").exists()


def test_label_maps_need_no_torch(tmp_path):
    """Measuring existing label maps does not pay for the deep-learning stack."""
    import subprocess
    import sys
    from pathlib import Path

    p = _bad_cases(tmp_path)
    code = ("import sys; from medcnn.cli import main; "
            f"rc = main(['response', {str(p['a'])!r}, {str(p['b'])!r}, '--out', {str(tmp_path / 'out')!r}]); "
            "assert rc == 0, rc; assert 'torch' not in sys.modules and 'monai' not in sys.modules, 'torch imported'")
    root = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={**__import__("os").environ, "PYTHONPATH": str(root)})
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "out" / "response.csv").is_file()
