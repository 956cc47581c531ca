"""``medcnn convert`` and DICOM annotations wherever a label map is taken (measure,
validate --ref); bad inputs: one line naming the file, exit 2, nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dicom_factory import voxel_to_lps, write_non_image, write_rtstruct, write_series
from medcnn.cli import main
from medcnn.cli.measure import read_table
from medcnn.io import read_labels, read_volume, write_volume

pytest.importorskip("highdicom")


def _square(i0, i1, j0, j1, k):
    return voxel_to_lps([[i0, j0, k], [i1, j0, k], [i1, j1, k], [i0, j1, k]])


@pytest.fixture()
def case(tmp_path):
    write_series(tmp_path / "image", n_slices=5, rows=12, cols=14)
    write_rtstruct(tmp_path / "mask" / "RS.dcm", {"GTV": [_square(1.5, 4.5, 0.5, 3.5, 1), _square(1.5, 4.5, 0.5, 3.5, 2)],
                                                  "cord": [_square(8.5, 10.5, 6.5, 8.5, 2)]})
    return tmp_path


def test_rtstruct_to_nifti_with_label_table(case, capsys):
    out = case / "out" / "gtv.nii.gz"
    assert main(["convert", str(case / "mask" / "RS.dcm"), "--out", str(out)]) == 0
    lab = read_volume(out, kind="label")
    assert lab.geometry.isclose(read_volume(case / "image").geometry)
    assert (lab.array == 1).sum() == 18 and (lab.array == 2).sum() == 4
    table = json.loads((case / "out" / "gtv.labels.json").read_text())
    assert table["labels"] == {"1": "GTV", "2": "cord"} and table["annotation"] == "rtstruct"
    from medcnn.measure import load_label_table

    assert load_label_table(case / "out" / "gtv.labels.json") == {1: "GTV", 2: "cord"}


def test_roi_choice_and_nrrd(case):
    out = case / "cord.nrrd"
    assert main(["convert", str(case / "mask" / "RS.dcm"), "--out", str(out), "--roi", "cord",
                 "--reference", str(case / "image")]) == 0
    lab = read_volume(out, kind="label")
    assert lab.array.max() == 1 and lab.array.sum() == 4


def test_label_map_to_seg_and_back(case):
    nii = case / "labels.nii.gz"
    main(["convert", str(case / "mask" / "RS.dcm"), "--out", str(nii)])
    seg = case / "seg" / "labels.dcm"
    assert main(["convert", str(nii), "--out", str(seg), "--reference", str(case / "image"),
                 "--labels", str(case / "labels.labels.json")]) == 0
    back = read_labels(seg, reference=case / "image")
    np.testing.assert_array_equal(back.array, read_volume(nii, kind="label").array)
    assert back.meta["label_names"] == {"1": "GTV", "2": "cord"}
    import pydicom

    ds = pydicom.dcmread(str(seg))
    assert ds.PatientName == "" and ds.PatientID == "" and ds.PatientIdentityRemoved == "YES"
    from dicom_factory import documented_pseudonymous_uid

    assert ds.StudyInstanceUID == documented_pseudonymous_uid("1.2.3.9")  # replaced, consistently


def test_measure_and_validate_take_annotations(case):
    report = case / "report.csv"
    assert main(["measure", str(case / "mask" / "RS.dcm"), "--out", str(report), "--no-lesions"]) == 0
    df = read_table(report)
    vox_ml = 0.8 * 0.9 * 2.5 / 1000
    got = dict(zip(df["label_name"], df["volume_ml"]))
    assert got["GTV"] == pytest.approx(18 * vox_ml) and got["cord"] == pytest.approx(4 * vox_ml)
    # validate: a prediction NIfTI against the RTSTRUCT reference (rasterised on the prediction's grid)
    pred = read_labels(case / "mask" / "RS.dcm")
    arr = pred.array.copy()
    arr[2, 1, 1] = 0  # one GTV voxel missed
    (case / "pred").mkdir()
    (case / "ref").mkdir()
    write_volume(pred.with_array(arr), case / "pred" / "c1.nii.gz")
    (case / "ref" / "c1.dcm").write_bytes((case / "mask" / "RS.dcm").read_bytes())
    rc = main(["validate", "--pred", str(case / "pred"), "--ref", str(case / "ref"), "--out", str(case / "val"),
               "--bootstrap", "0"])
    assert rc == 0
    import pandas as pd

    m = pd.read_csv(case / "val" / "metrics.csv", comment="#")
    dice = dict(zip(m["label"].astype(str), m["dice"]))
    assert dice["1"] == pytest.approx(2 * 17 / (17 + 18))
    assert dice["2"] == pytest.approx(1.0)
    # a sparse SEG prediction (slices 0, 3, 4 left out) against a NIfTI reference, and against the RTSTRUCT
    from medcnn.io.dicom_out import write_dicom_seg

    (case / "pred2").mkdir()
    write_dicom_seg(pred, case / "image", case / "pred2" / "c1.dcm")
    write_non_image(case / "pred2", "c1_sr.dcm")  # other DICOM objects in the folder are not cases
    assert read_labels(case / "pred2" / "c1.dcm").shape[2] == 2  # its own grid: 2 slices
    write_volume(pred, case / "ref2" / "c1.nii.gz")
    for ref in ("ref", "ref2"):
        assert main(["validate", "--pred", str(case / "pred2"), "--ref", str(case / ref), "--out",
                     str(case / f"val_{ref}"), "--bootstrap", "0"]) == 0
        m = pd.read_csv(case / f"val_{ref}" / "metrics.csv", comment="#")
        assert m["dice"].tolist() == [1.0, 1.0]


@pytest.mark.parametrize("bad", ["no_series", "other_grid_seg", "empty_roi", "not_dicom", "sr_object"])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, bad):
    write_series(tmp_path / "image", n_slices=5, rows=12, cols=14)
    if bad == "no_series":
        src = write_rtstruct(tmp_path / "lonely" / "x" / "RS.dcm", {"GTV": [_square(1.5, 4.5, 0.5, 3.5, 1)]},
                             series_uid="7.7.7", frame_uid="7.7.8")
        args = []
    elif bad == "other_grid_seg":
        from medcnn.io.dicom_out import write_dicom_seg

        img = read_volume(tmp_path / "image")
        lab = np.zeros(img.shape, np.uint8)
        lab[1:3, 1:3, 1] = 1
        src = tmp_path / "seg.dcm"
        write_dicom_seg(img.with_array(lab, kind="label"), tmp_path / "image", src, label_names={1: "x"})
        write_series(tmp_path / "other", n_slices=5, rows=12, cols=14, dz=3.0, series_uid="5.6.7")
        args = ["--reference", str(tmp_path / "other")]
    elif bad == "empty_roi":
        src = write_rtstruct(tmp_path / "mask" / "RS.dcm", {"GTV": []})
        args = []
    elif bad == "sr_object":
        write_non_image(tmp_path, "sr.dcm")
        src = tmp_path / "sr.dcm"
        args = []
    else:
        src = tmp_path / "notes.dcm"
        src.write_text("hello")
        args = []
    out = tmp_path / "out" / "labels.nii.gz"
    capsys.readouterr()
    assert main(["convert", str(src), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(src) in err, err
    assert not (tmp_path / "out").exists()


def test_measure_keeps_going_past_bad_annotations(case, capsys):
    write_rtstruct(case / "bad" / "empty.dcm", {"GTV": []})
    (case / "bad" / "junk.dcm").write_bytes(b"junk")
    report = case / "m.csv"
    rc = main(["measure", str(case / "mask" / "RS.dcm"), str(case / "bad" / "empty.dcm"), str(case / "bad" / "junk.dcm"),
               "--out", str(report), "--no-lesions"])
    assert rc == 2
    df = read_table(report)
    errors = dict(zip(df["case"], df["error"].fillna("")))
    assert errors["RS"] == ""
    assert "empty.dcm: expected closed planar contours for ROI 'GTV'" in errors["empty"]
    assert "junk.dcm" in errors["junk"]
