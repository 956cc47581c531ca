"""BraTS-style validation per region: ``medcnn validate --regions``.

Region Dice and volumes are checked against unions computed here in numpy, HD95 by hand
(two voxels apart), against SimpleITK's Hausdorff distance and against medcnn's surface
code run on the numpy unions; both sides of BraTS's empty-region rule; regions recorded by
the model that wrote a prediction (``segment_provenance.json``, ``result.json``, DICOM
SEG); and a real BraTS 2018 reference against a copy whose enhancing tumour is eroded with
scipy, the expected Dice of each region computed independently.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from medcnn.cli import main  # noqa: E402
from medcnn.io import write_volume  # noqa: E402
from medcnn.metrics import evaluate_case  # noqa: E402
from medcnn.regions import BRATS_REGIONS, match_region_names, parse_regions, regions_of_volume_rows  # noqa: E402
from medcnn.volume import Geometry, Volume  # noqa: E402

#: BraTS's worst distance, from the grid it is the diagonal of (240 x 240 x 155 voxels of 1 mm).
BRATS_WORST_MM = math.sqrt(240 ** 2 + 240 ** 2 + 155 ** 2)
#: An anisotropic, oblique grid with a non-zero origin.
_A = 0.3
GEOM = Geometry((34, 30, 22), (0.9, 1.1, 1.6), (12.0, -30.0, 7.5),
                ((math.cos(_A), -math.sin(_A), 0.0), (math.sin(_A), math.cos(_A), 0.0), (0.0, 0.0, 1.0)))
UNIONS = {"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)}


@pytest.fixture(autouse=True)
def _no_figures(monkeypatch):
    """The PNG figures (matplotlib, most of a validate run's time; tested in
    test_validate_cli.py) are left out: these tests read the numbers."""
    monkeypatch.setattr("medcnn.report.validation.validation_figures", lambda rows: {})


def tumour(shift: int = 0, et: bool = True, seed: int = 0) -> np.ndarray:
    """BraTS labels: oedema (2) around a core of necrosis (1) and enhancing rim (4)."""
    rng = np.random.default_rng(seed)
    i, j, k = np.indices(GEOM.shape)
    c = np.array([17 + shift, 15, 11])
    r = np.sqrt(((i - c[0]) * 0.9) ** 2 + ((j - c[1]) * 1.1) ** 2 + ((k - c[2]) * 1.6) ** 2)
    r += rng.normal(0, 0.6, r.shape)
    lab = np.zeros(GEOM.shape, np.uint8)
    lab[r < 12] = 2
    lab[r < 7.5] = 4 if et else 1
    lab[r < 4.5] = 1
    return lab


def write(path: Path, arr: np.ndarray, geom: Geometry = GEOM) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_volume(Volume(arr, geom, "label"), path)
    return path


def read_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(line for line in fh if not line.startswith("#")))


def by_region(rows) -> dict[str, dict[str, str]]:
    return {r["label"]: r for r in rows if r["structure_kind"] == "region"}


def np_dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


# --------------------------------------------------------------------------- specifications
def test_region_specifications():
    assert parse_regions("brats") == {"WT": [1, 2, 4], "TC": [1, 4], "ET": [4]}
    assert parse_regions("WT=1,2,4;TC=1,4;ET=4") == parse_regions("brats")
    assert parse_regions('{"WT": [4, 2, 1], "ET": [4]}') == {"WT": [1, 2, 4], "ET": [4]}
    assert {k: tuple(v) for k, v in parse_regions("brats").items()} == BRATS_REGIONS
    names = match_region_names(["WT", "TC", "ET"], ["enhancing tumor", "Whole_Tumour", "tumor core"])
    assert names == {"WT": "Whole_Tumour", "TC": "tumor core", "ET": "enhancing tumor"}
    assert match_region_names(["ET"], ["whole tumor"]) == {"ET": None}
    # the region rows of a medcnn volume table (string labels "1+2+3"), as segment / run record them
    rows = [{"label": 1, "label_name": "oedema"}, {"label": "1+2+3", "label_name": "whole tumor"},
            {"label": "3", "label_name": "enhancing tumor"}, {"label": "1+2+3", "label_name": "whole tumor"}]
    assert regions_of_volume_rows(rows) == {"whole tumor": [1, 2, 3], "enhancing tumor": [3]}


@pytest.mark.parametrize("spec, needle", [
    ("WT=1,2;TC=2,3", "nested or disjoint"),
    ("WT=", "--regions"),
    ("WT=1;WT=2", "twice"),
    ("{not json", "JSON"),
    ("missing_regions.json", "missing_regions.json"),
])
def test_bad_region_spec_is_one_line_and_no_output(tmp_path, capsys, spec, needle):
    write(tmp_path / "p" / "c1.nii.gz", tumour())
    write(tmp_path / "r" / "c1.nii.gz", tumour())
    rc = main(["validate", "--pred", str(tmp_path / "p"), "--ref", str(tmp_path / "r"), "--out",
               str(tmp_path / "out"), "--regions", spec])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and needle in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "out").exists()


def test_region_names_must_differ_from_label_names(tmp_path, capsys):
    write(tmp_path / "p" / "c1.nii.gz", tumour())
    write(tmp_path / "r" / "c1.nii.gz", tumour())
    rc = main(["validate", "--pred", str(tmp_path / "p"), "--ref", str(tmp_path / "r"), "--out",
               str(tmp_path / "out"), "--regions", "brats", "--labels", "ET=4"])
    assert rc == 2 and "'ET'" in capsys.readouterr().err and not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- Dice and volumes
def test_region_dice_and_volumes_equal_numpy_unions(tmp_path):
    ref = tumour(seed=1)
    pred = tumour(shift=2, seed=2)
    pred[pred == 4] = np.where(np.random.default_rng(3).random(np.count_nonzero(pred == 4)) < 0.3, 1, 4)
    write(tmp_path / "p" / "c1.nii.gz", pred)
    write(tmp_path / "r" / "c1.nii.gz", ref)
    out = tmp_path / "out"
    rc = main(["validate", "--pred", str(tmp_path / "p"), "--ref", str(tmp_path / "r"), "--out", str(out),
               "--regions", "WT=1,2,4;TC=1,4;ET=4", "--bootstrap", "50"])
    assert rc == 0
    rows = read_rows(out)
    assert [r["label"] for r in rows] == ["WT", "TC", "ET"]  # --regions without --labels: regions only
    voxel_ml = 0.9 * 1.1 * 1.6 / 1000.0
    for name, members in UNIONS.items():
        r = by_region(rows)[name]
        p, q = np.isin(pred, members), np.isin(ref, members)
        assert r["label_values"] == r["pred_label_values"] == ",".join(map(str, members))
        assert float(r["dice"]) == pytest.approx(np_dice(p, q), abs=1e-12)
        assert 0.3 < float(r["dice"]) < 0.99
        assert float(r["ref_volume_ml"]) == pytest.approx(np.count_nonzero(q) * voxel_ml, rel=1e-9)
        assert float(r["pred_volume_ml"]) == pytest.approx(np.count_nonzero(p) * voxel_ml, rel=1e-9)
        diff = (np.count_nonzero(p) - np.count_nonzero(q)) * voxel_ml
        assert float(r["volume_diff_ml"]) == pytest.approx(diff, rel=1e-9)
        assert float(r["abs_volume_error_ml"]) == pytest.approx(abs(diff), rel=1e-9)
        assert float(r["rel_volume_error_percent"]) == pytest.approx(100 * diff / (np.count_nonzero(q) * voxel_ml))
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["aggregates"]) == {"WT", "TC", "ET"}
    assert summary["aggregates"]["ET"]["dice"]["mean"] == pytest.approx(float(by_region(rows)["ET"]["dice"]))
    table = summary["regions"]["table"]
    assert table["TC"]["pred_volume_ml"]["mean"] == pytest.approx(float(by_region(rows)["TC"]["pred_volume_ml"]))
    assert summary["regions"]["regions"] == {"WT": [1, 2, 4], "TC": [1, 4], "ET": [4]}
    assert summary["settings"]["empty_policy"] == "best-worst"  # only --regions brats implies the BraTS rule
    html = (out / "report.html").read_text()
    assert "<h2>Regions</h2>" in html and "373.13" in html and "HD95 mean (mm)" in html


def test_regions_next_to_label_rows_with_labels(tmp_path):
    write(tmp_path / "p" / "c1.nii.gz", tumour(shift=1))
    write(tmp_path / "r" / "c1.nii.gz", tumour())
    out = tmp_path / "out"
    assert main(["validate", "--pred", str(tmp_path / "p"), "--ref", str(tmp_path / "r"), "--out", str(out),
                 "--regions", "brats", "--labels", "necrosis=1", "oedema=2", "enhancing=4",
                 "--bootstrap", "0"]) == 0
    rows = read_rows(out)
    assert [(r["label"], r["structure_kind"]) for r in rows] == [
        ("necrosis", "label"), ("oedema", "label"), ("enhancing", "label"),
        ("WT", "region"), ("TC", "region"), ("ET", "region")]
    assert by_region(rows)["ET"]["dice"] == next(r["dice"] for r in rows if r["label"] == "enhancing")


# --------------------------------------------------------------------------- HD95
def test_region_hd95_by_hand_two_voxels(tmp_path):
    """A reference tumour of one necrosis voxel, a predicted one of one enhancing voxel two
    voxels away along x (1.5 mm): each voxel's surface is 8 corners, 4 of them 1 voxel
    (1.5 mm) from the other voxel's nearest corners and 4 of them 2 voxels (3 mm): HD = HD95
    = 3 mm, ASSD = (4 x 1.5 + 4 x 3) / 8 = 2.25 mm, Dice 0."""
    g = Geometry((9, 7, 7), (1.5, 1.0, 1.0))
    ref = np.zeros(g.shape, np.uint8)
    pred = ref.copy()
    ref[2, 3, 3] = 1
    pred[4, 3, 3] = 4
    rows = evaluate_case(Volume(pred, g, "label"), Volume(ref, g, "label"), labels={}, regions=BRATS_REGIONS,
                         empty_policy="brats")
    got = {r["label"]: r for r in rows}
    for name in ("WT", "TC"):
        assert got[name]["dice"] == 0.0
        assert got[name]["hd95_mm"] == pytest.approx(3.0) and got[name]["hd_mm"] == pytest.approx(3.0)
        assert got[name]["assd_mm"] == pytest.approx(2.25)
    # ET: empty in the reference, not in the prediction -> BraTS's worst values
    assert got["ET"]["ref_empty"] and not got["ET"]["pred_empty"]
    assert got["ET"]["dice"] == 0.0 and got["ET"]["hd95_mm"] == pytest.approx(BRATS_WORST_MM)


def test_region_hausdorff_matches_simpleitk_and_surface_code():
    """A tumour box shifted by 3 voxels along x (0.9 mm): the Hausdorff distance is 2.7 mm
    for voxel centres (SimpleITK) and for surfaces (medcnn); HD95 equals medcnn's surface
    code run on the unions built here in numpy."""
    sitk = pytest.importorskip("SimpleITK")
    from medcnn.metrics import surface_metrics

    ref = np.zeros(GEOM.shape, np.uint8)
    ref[8:24, 6:22, 4:16] = 2
    ref[11:21, 9:19, 6:14] = 1
    ref[13:19, 11:17, 8:12] = 4
    pred = np.roll(ref, 3, axis=0)
    rows = evaluate_case(Volume(pred, GEOM, "label"), Volume(ref, GEOM, "label"), labels={},
                         regions=BRATS_REGIONS)
    for r in rows:
        p, q = np.isin(pred, UNIONS[r["label"]]), np.isin(ref, UNIONS[r["label"]])
        images = []
        for m in (p, q):
            im = sitk.GetImageFromArray(m.transpose(2, 1, 0).astype(np.uint8))
            im.SetSpacing(GEOM.spacing)
            images.append(im)
        f = sitk.HausdorffDistanceImageFilter()
        f.Execute(*images)
        assert f.GetHausdorffDistance() == pytest.approx(2.7)
        assert r["hd_mm"] == pytest.approx(2.7)
        sm = surface_metrics(Volume(p, GEOM, "label"), Volume(q, GEOM, "label"))
        assert r["hd95_mm"] == pytest.approx(sm["hd95_mm"], abs=1e-9) and 0 < r["hd95_mm"] <= r["hd_mm"] + 1e-9


# --------------------------------------------------------------------------- empty regions
@pytest.mark.parametrize("pred_et", [False, True], ids=["prediction-empty", "prediction-not-empty"])
def test_brats_rule_for_an_empty_reference_et(tmp_path, pred_et):
    ref = tumour(et=False)
    pred = tumour(et=pred_et)
    assert not (ref == 4).any() and (pred == 4).any() == pred_et
    write(tmp_path / "p" / "c1.nii.gz", pred)
    write(tmp_path / "r" / "c1.nii.gz", ref)
    out = tmp_path / "out"
    assert main(["validate", "--pred", str(tmp_path / "p"), "--ref", str(tmp_path / "r"), "--out", str(out),
                 "--regions", "brats", "--bootstrap", "0"]) == 0
    et = by_region(read_rows(out))["ET"]
    assert et["empty_policy"] == "brats" and et["ref_empty"] == "True"
    if pred_et:
        assert float(et["dice"]) == 0.0 and float(et["hd95_mm"]) == pytest.approx(BRATS_WORST_MM)
    else:
        assert float(et["dice"]) == 1.0 and float(et["hd95_mm"]) == 0.0
    s = json.loads((out / "summary.json").read_text())
    rule = s["regions"]["empty_region_rule"]
    assert rule["empty_policy"] == "brats" and rule["follows_brats_rule"] is True
    assert rule["brats"]["reference_empty_prediction_empty"] == {"dice": 1.0, "hd95_mm": 0.0}
    assert rule["brats"]["reference_empty_prediction_not_empty"]["hd95_mm"] == pytest.approx(BRATS_WORST_MM)
    assert "Task082_BraTS_2020" in rule["brats"]["source"] and "240" in rule["brats"]["worst_distance_is"]
    counts = s["regions"]["empty_counts"]["ET"]
    assert counts["reference_empty"] == 1
    assert counts["reference_empty_prediction_not_empty"] == int(pred_et)
    assert counts["reference_empty_prediction_empty"] == int(not pred_et)


def test_reference_et_missed_by_the_prediction_and_other_policies(tmp_path):
    ref, pred = tumour(), tumour(et=False)
    write(tmp_path / "p" / "c1.nii.gz", pred)
    write(tmp_path / "r" / "c1.nii.gz", ref)
    out = tmp_path / "out"
    assert main(["validate", "--pred", str(tmp_path / "p"), "--ref", str(tmp_path / "r"), "--out", str(out),
                 "--regions", "brats", "--bootstrap", "0"]) == 0
    et = by_region(read_rows(out))["ET"]
    assert et["pred_empty"] == "True" and float(et["dice"]) == 0.0
    assert float(et["hd95_mm"]) == pytest.approx(BRATS_WORST_MM)
    # an explicit best-worst policy: the image diagonal of this (non-BraTS) grid, said in summary.json
    out2 = tmp_path / "out2"
    assert main(["validate", "--pred", str(tmp_path / "p"), "--ref", str(tmp_path / "r"), "--out", str(out2),
                 "--regions", "brats", "--empty-policy", "best-worst", "--bootstrap", "0"]) == 0
    diag = math.sqrt(sum((n * s) ** 2 for n, s in zip(GEOM.shape, GEOM.spacing)))
    assert float(by_region(read_rows(out2))["ET"]["hd95_mm"]) == pytest.approx(diag)
    rule = json.loads((out2 / "summary.json").read_text())["regions"]["empty_region_rule"]
    assert rule["follows_brats_rule"] is False and "not by the BraTS rule" in rule["note"]


# --------------------------------------------------------------------------- recorded regions
NNUNET_REGIONS = {"whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}
NNUNET_NAMES = {0: "background", 1: "whole tumor minus tumor core", 2: "tumor core minus enhancing tumor",
                3: "enhancing tumor"}


def to_nnunet(brats: np.ndarray) -> np.ndarray:
    """BraTS 1 necrosis / 2 oedema / 4 enhancing -> nnU-Net's 2 / 1 / 3."""
    return np.choose(np.searchsorted([0, 1, 2, 4], brats), [0, 2, 1, 3]).astype(np.uint8)


def nnunet_volume_rows(labels: np.ndarray) -> list[dict]:
    """The volume rows medcnn segment / run record for a region model (the real code)."""
    from medcnn.batch.pipeline import volume_rows

    return volume_rows(Volume(labels, GEOM, "label"), label_names=NNUNET_NAMES, regions=NNUNET_REGIONS,
                       phase=None, frame=None, qc=[])


def test_regions_recorded_by_medcnn_segment_give_the_prediction_labels(tmp_path, capsys):
    ref = tumour()
    pred = to_nnunet(tumour(shift=1))
    write(tmp_path / "seg" / "c1_labels.nii.gz", pred)
    write(tmp_path / "r" / "c1.nii.gz", ref)
    (tmp_path / "seg" / "segment_provenance.json").write_text(json.dumps({
        "tool": "medcnn segment", "model": {"name": "brats-regions"},
        "cases": [{"case": "c1.nii.gz", "status": "ok", "outputs": ["c1_labels.nii.gz"],
                   "volumes": nnunet_volume_rows(pred)}]}))
    args = ["validate", "--pred", str(tmp_path / "seg"), "--ref", str(tmp_path / "r"), "--pred-suffix", "_labels",
            "--bootstrap", "0"]
    out = tmp_path / "out"
    assert main(args + ["--out", str(out), "--regions", "brats"]) == 0
    rows = by_region(read_rows(out))
    shifted = tumour(shift=1)
    for name, members in UNIONS.items():  # the model's 1/2/3 against BraTS's 1/2/4: the same tumour parts
        assert rows[name]["label_values"] == ",".join(map(str, members))
        expected = np_dice(np.isin(shifted, members), np.isin(ref, members))
        assert float(rows[name]["dice"]) == pytest.approx(expected, abs=1e-12) and expected > 0.8
    assert rows["WT"]["pred_label_values"] == "1,2,3" and rows["ET"]["pred_label_values"] == "3"
    info = json.loads((out / "summary.json").read_text())["regions"]["per_case"]["c1"]
    assert info["prediction"]["ET"] == [3] and "segment_provenance.json" in info["source"]
    assert "brats-regions" in info["source"]
    # the --regions label values on the prediction too: the model's label 3 is not BraTS's 4
    out2 = tmp_path / "out2"
    assert main(args + ["--out", str(out2), "--regions", "brats", "--ignore-recorded-regions"]) == 0
    rows2 = by_region(read_rows(out2))
    assert float(rows2["ET"]["dice"]) == 0.0 and float(rows2["WT"]["dice"]) < float(rows["WT"]["dice"])
    # no --regions: the recorded regions themselves, in both maps, after the label rows
    out3 = tmp_path / "out3"
    assert main(args + ["--out", str(out3)]) == 0
    rows3 = read_rows(out3)
    assert [r["label"] for r in rows3 if r["structure_kind"] == "region"] == list(NNUNET_REGIONS)
    assert [r["label"] for r in rows3 if r["structure_kind"] == "label"] == ["1", "2", "3", "4"]
    # a --regions name the model did not record: the case fails with the way out
    out4 = tmp_path / "out4"
    assert main(args + ["--out", str(out4), "--regions", "WT=1,2,4;NET=1"]) == 2
    err = capsys.readouterr().err
    assert "['NET']" in err and "--ignore-recorded-regions" in err
    # --regions none: no region rows at all
    out5 = tmp_path / "out5"
    assert main(args + ["--out", str(out5), "--regions", "none"]) == 0
    assert all(r["structure_kind"] == "label" for r in read_rows(out5))


def test_regions_recorded_by_medcnn_run_case_record(tmp_path):
    ref = tumour()
    pred = to_nnunet(ref)
    folder = tmp_path / "run" / "cases" / "c1"
    write(folder / "c1_labels.nii.gz", pred)
    (folder / "result.json").write_text(json.dumps({
        "case_id": "c1", "status": "ok", "model": {"name": "brats-regions"},
        "outputs": {"labels": ["cases/c1/c1_labels.nii.gz"]}, "volumes": nnunet_volume_rows(pred)}))
    write(tmp_path / "r" / "c1.nii.gz", ref)
    (tmp_path / "pairs.csv").write_text("case_id,pred,ref\nc1,run/cases/c1/c1_labels.nii.gz,r/c1.nii.gz\n")
    out = tmp_path / "out"
    assert main(["validate", "--pairs", str(tmp_path / "pairs.csv"), "--out", str(out), "--regions", "brats",
                 "--bootstrap", "0"]) == 0
    rows = by_region(read_rows(out))
    assert all(float(rows[n]["dice"]) == 1.0 and float(rows[n]["hd95_mm"]) == 0.0 for n in UNIONS)
    assert rows["TC"]["pred_label_values"] == "2,3"


def test_corrupt_region_record_fails_that_case_naming_the_file(tmp_path, capsys):
    write(tmp_path / "seg" / "c1_labels.nii.gz", tumour())
    write(tmp_path / "r" / "c1.nii.gz", tumour())
    (tmp_path / "seg" / "segment_provenance.json").write_text("{truncated")
    rc = main(["validate", "--pred", str(tmp_path / "seg"), "--ref", str(tmp_path / "r"), "--pred-suffix",
               "_labels", "--out", str(tmp_path / "out"), "--regions", "brats", "--bootstrap", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and "segment_provenance.json" in err and "JSON" in err
    assert read_rows(tmp_path / "out")[0]["error"]


def test_regions_recorded_in_a_dicom_seg_prediction(tmp_path):
    pytest.importorskip("highdicom")
    from dicom_factory import write_series

    from medcnn.io import read_volume
    from medcnn.io.dicom_out import write_dicom_seg

    write_series(tmp_path / "image", n_slices=8, rows=14, cols=16)
    img = read_volume(tmp_path / "image")
    ref = np.zeros(img.shape, np.uint8)
    ref[3:13, 2:12, 1:7] = 2
    ref[5:11, 4:10, 2:6] = 1
    ref[6:9, 5:8, 3:5] = 4
    pred = to_nnunet(np.roll(ref, 1, axis=0))
    write_dicom_seg(img.with_array(pred, kind="label"), tmp_path / "image", tmp_path / "p" / "c1.dcm",
                    label_names={k: v for k, v in NNUNET_NAMES.items() if k}, regions=NNUNET_REGIONS)
    write_volume(img.with_array(ref, kind="label"), tmp_path / "r" / "c1.nii.gz")
    out = tmp_path / "out"
    assert main(["validate", "--pred", str(tmp_path / "p"), "--ref", str(tmp_path / "r"), "--out", str(out),
                 "--regions", "brats", "--bootstrap", "0"]) == 0
    rows = by_region(read_rows(out))
    shifted = np.roll(ref, 1, axis=0)
    for name, members in UNIONS.items():
        assert float(rows[name]["dice"]) == pytest.approx(np_dice(np.isin(shifted, members), np.isin(ref, members)))
    assert rows["WT"]["pred_label_values"] == "1,2,3"
    source = json.loads((out / "summary.json").read_text())["regions"]["per_case"]["c1"]["source"]
    assert "DICOM SEG" in source


# --------------------------------------------------------------------------- real BraTS 2018
def test_brats2018_reference_against_eroded_enhancing_tumour(shared_data, tmp_path):
    """A real BraTS 2018 reference against itself with label 4 eroded (scipy, one voxel,
    6-connected) and the eroded voxels relabelled oedema: the whole tumour is unchanged
    (Dice 1, HD95 0), the core loses the rim, the enhancing tumour loses it from a smaller
    volume: Dice WT 1.0 > TC > ET, each as computed here with numpy from nibabel's arrays."""
    nib = pytest.importorskip("nibabel")
    from scipy import ndimage

    case = "Brats18_CBICA_ABM_1"
    src = shared_data / "brats2018" / case / f"{case}_seg.nii.gz"
    if not src.is_file():
        pytest.skip(f"{src} not in the shared data")
    img = nib.load(str(src))
    ref = np.asarray(img.dataobj).astype(np.uint8)
    et = ref == 4
    kept = ndimage.binary_erosion(et)
    pred = ref.copy()
    pred[et & ~kept] = 2
    assert 0 < np.count_nonzero(kept) < np.count_nonzero(et)
    (tmp_path / "p").mkdir()
    nib.save(nib.Nifti1Image(pred, img.affine, img.header), str(tmp_path / "p" / f"{case}.nii.gz"))
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / f"{case}.nii.gz").symlink_to(src)
    out = tmp_path / "out"
    assert main(["validate", "--pred", str(tmp_path / "p"), "--ref", str(tmp_path / "r"), "--out", str(out),
                 "--regions", "brats", "--bootstrap", "0"]) == 0
    rows = by_region(read_rows(out))
    voxel_ml = float(np.prod(img.header.get_zooms()[:3])) / 1000.0
    expected = {}
    for name, members in UNIONS.items():
        p, q = np.isin(pred, members), np.isin(ref, members)
        expected[name] = np_dice(p, q)
        assert float(rows[name]["dice"]) == pytest.approx(expected[name], abs=1e-12)
        assert float(rows[name]["ref_volume_ml"]) == pytest.approx(np.count_nonzero(q) * voxel_ml, rel=1e-9)
        assert float(rows[name]["pred_volume_ml"]) == pytest.approx(np.count_nonzero(p) * voxel_ml, rel=1e-9)
    assert expected["WT"] == 1.0 > expected["TC"] > expected["ET"] > 0.3
    assert float(rows["WT"]["dice"]) == 1.0 > float(rows["TC"]["dice"]) > float(rows["ET"]["dice"])
    assert float(rows["WT"]["hd95_mm"]) == 0.0 and 0 < float(rows["ET"]["hd95_mm"]) <= 2.0
    removed_ml = np.count_nonzero(et & ~kept) * voxel_ml
    assert float(rows["ET"]["volume_diff_ml"]) == pytest.approx(-removed_ml, rel=1e-9)
    assert float(rows["TC"]["volume_diff_ml"]) == pytest.approx(-removed_ml, rel=1e-9)
    s = json.loads((out / "summary.json").read_text())
    assert s["regions"]["empty_region_rule"]["reference_diagonals_mm"] == [pytest.approx(BRATS_WORST_MM, abs=1e-4)]


# --------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_segment_with_an_nnunet_region_model_then_validate(tmp_path):
    """`medcnn segment` with an imported nnU-Net region model (labels 1/2/3) and `medcnn
    validate --regions brats` against the same prediction written in BraTS's 1/2/4: every
    region agrees exactly through the regions the model recorded."""
    pytest.importorskip("dynamic_network_architectures", reason="dynamic-network-architectures is not installed")
    from nnunet_factory import make_nnunet_folder
    from test_import_nnunet import write_case

    from medcnn.io import read_labels
    from medcnn.models.importers import import_model

    folder = make_nnunet_folder(tmp_path, dim=3, patch=(24, 24, 24), n_classes=4, region_labels=NNUNET_REGIONS,
                                regions_class_order=[1, 2, 3], seed=3, steps=60)
    bundle = import_model(folder, tmp_path / "bundle")
    files = write_case(tmp_path, n_classes=4)
    assert main(["segment", str(files[0]), "--model", str(bundle), "--out", str(tmp_path / "seg"),
                 "--device", "cpu", "--precision", "fp32", "--no-tta"]) == 0
    (label_file,) = (tmp_path / "seg").glob("*_labels.nii.gz")
    pred = read_labels(label_file)
    brats = np.choose(pred.array, [0, 2, 1, 4]).astype(np.uint8)  # nnU-Net 1/2/3 -> BraTS 2/1/4
    assert (brats == 4).any() and (brats == 2).any()
    write_volume(pred.with_array(brats), tmp_path / "r" / label_file.name.replace("_labels", ""))
    out = tmp_path / "out"
    assert main(["validate", "--pred", str(tmp_path / "seg"), "--ref", str(tmp_path / "r"), "--pred-suffix",
                 "_labels", "--out", str(out), "--regions", "brats", "--bootstrap", "0"]) == 0
    rows = by_region(read_rows(out))
    assert all(float(rows[n]["dice"]) == 1.0 for n in UNIONS)
    assert rows["WT"]["pred_label_values"] == "1,2,3"
