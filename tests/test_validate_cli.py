"""``medcnn validate`` end to end on small synthetic label maps (and Sunnybrook when present)."""

from __future__ import annotations

import base64
import csv
import json
import re

import numpy as np
import pytest

from medcnn.cli import main
from medcnn.io import read_volume, write_volume
from medcnn.report.provenance import file_sha256
from medcnn.volume import Geometry, Volume

GEOM = Geometry((24, 24, 8), (1.25, 1.25, 8.0), (-10.0, 5.0, 2.0))


def heart(shift: int = 0, grow: int = 0) -> np.ndarray:
    ref = np.zeros(GEOM.shape, np.uint8)
    i, j = np.ogrid[:24, :24]
    r2 = (i - 12) ** 2 + (j - 12) ** 2
    for k in range(1, 7):
        ref[..., k][r2 <= (6 + grow) ** 2] = 2
        ref[..., k][r2 <= (4 + grow) ** 2] = 1
    return np.roll(ref, shift, axis=0)


def write(path, arr, geom=GEOM):
    write_volume(Volume(arr, geom, "label"), path)
    return path


@pytest.fixture
def folders(tmp_path):
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir()
    ref.mkdir()
    for n, (s, g) in enumerate([(0, 0), (1, 0), (0, 1)]):
        write(ref / f"case{n}.nii.gz", heart())
        write(pred / f"case{n}.nii.gz", heart(s, g))
    return pred, ref


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_validate_writes_all_outputs(folders, tmp_path, capsys):
    pred, ref = folders
    out = tmp_path / "out"
    rc = main(["validate", "--pred", str(pred), "--ref", str(ref), "--out", str(out), "--labels", "LV=1", "MYO=2",
               "--tolerance-mm", "1.5", "--bootstrap", "200"])
    assert rc == 0
    rows = read_csv(out / "metrics.csv")
    assert len(rows) == 6 and {r["label"] for r in rows} == {"LV", "MYO"}
    assert all(r["empty_policy"] == "best-worst" and r["nsd_tolerance_mm"] == "1.5" and r["error"] == "" for r in rows)
    lv0 = next(r for r in rows if r["case_id"] == "case0" and r["label"] == "LV")
    assert float(lv0["dice"]) == 1.0 and float(lv0["hd95_mm"]) == 0.0
    lv1 = next(r for r in rows if r["case_id"] == "case1" and r["label"] == "LV")
    assert float(lv1["hd_mm"]) == pytest.approx(1.25)  # one-voxel shift along a 1.25 mm axis

    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["empty_policy"] == "best-worst" and summary["settings"]["tolerance_mm"] == 1.5
    assert "area" in summary["definitions"]["hd95_mm"] and summary["definitions"]["nsd_tolerance_mm"] == "1.5 mm"
    assert summary["definitions"]["empty_policy"].startswith("best-worst")
    assert summary["medcnn_version"]
    c1 = next(c for c in summary["cases"] if c["case_id"] == "case1")
    assert c1["pred_sha256"] == file_sha256(pred / "case1.nii.gz")
    assert c1["ref_sha256"] == file_sha256(ref / "case1.nii.gz")
    assert summary["aggregates"]["LV"]["dice"]["n"] == 3
    assert summary["volume_agreement"]["MYO"]["n"] == 3 and "icc_a1" in summary["volume_agreement"]["MYO"]

    html = (out / "report.html").read_text()
    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(imgs) == 3 and all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in imgs)
    assert "http://" not in html and "https://" not in html
    for name in ("bland_altman_volume.png", "volume_scatter.png", "metric_distributions.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_missing_and_broken_files_are_error_rows(folders, tmp_path, capsys):
    pred, ref = folders
    (pred / "case2.nii.gz").unlink()
    (pred / "extra.nii.gz").write_bytes(b"not a nifti")
    (ref / "extra.nii.gz").write_bytes(b"not a nifti either")
    write(pred / "orphan.nii.gz", heart())
    out = tmp_path / "out"
    rc = main(["validate", "--pred", str(pred), "--ref", str(ref), "--out", str(out)])
    assert rc == 2
    rows = read_csv(out / "metrics.csv")
    errors = {r["case_id"]: r["error"] for r in rows if r["error"]}
    assert set(errors) == {"extra", "orphan"}          # a reference without a prediction is no error
    assert "reference" in errors["orphan"] and "expected" in errors["orphan"]
    assert sum(1 for r in rows if not r["error"]) == 4  # case0, case1 x labels 1, 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["failed_cases"] == 2
    assert summary["counts"]["unmatched_references"] == 1 and summary["unmatched_references"] == ["case2.nii.gz"]
    assert "1 reference(s) without a prediction were not evaluated (case2.nii.gz)" in capsys.readouterr().err


def test_few_predictions_against_a_large_reference_folder(tmp_path, capsys):
    """5 predictions against a 200-file reference folder: the 5 are validated, the 195 other
    references reported once as a count, exit 0 (it was 195 errors and exit 2)."""
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir()
    ref.mkdir()
    small = Geometry((6, 6, 3), (1.0, 1.0, 2.0))
    arr = np.zeros(small.shape, np.uint8)
    arr[1:4, 1:4, :] = 1
    for n in range(200):
        write(ref / f"hippocampus_{n:03d}.nii.gz", arr, small)
    for n in (3, 50, 51, 120, 199):
        write(pred / f"hippocampus_{n:03d}.nii.gz", arr, small)
    out = tmp_path / "out"
    assert main(["validate", "--pred", str(pred), "--ref", str(ref), "--out", str(out), "--bootstrap", "0"]) == 0
    err = capsys.readouterr().err
    assert err.count("without a prediction") == 2      # the one notice line and the closing summary line
    assert "195 reference(s) without a prediction were not evaluated" in err and "error" not in err
    rows = read_csv(out / "metrics.csv")
    assert sorted({r["case_id"] for r in rows}) == [f"hippocampus_{n:03d}" for n in (3, 50, 51, 120, 199)]
    assert all(r["error"] == "" and float(r["dice"]) == 1.0 for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["cases"] == 5 and summary["counts"]["unmatched_references"] == 195
    assert "195 reference(s) without a prediction not evaluated" in (out / "report.html").read_text()
    # no prediction matching any reference is a usage error (one line, exit 2), not an empty report
    empty = tmp_path / "empty"
    empty.mkdir()
    write(empty / "other.nii.gz", arr, small)
    assert main(["validate", "--pred", str(empty), "--ref", str(ref), "--out", str(tmp_path / "o2")]) == 2


def test_suffixes_pair_segment_outputs_with_references_across_formats(tmp_path, capsys):
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir()
    ref.mkdir()
    write(pred / "case0_labels.nii.gz", heart(1))           # medcnn segment's naming
    write(ref / "case0_gt.nrrd", heart())                   # another format
    write(pred / "case1_labels.nii.gz", heart())
    write(ref / "case1_gt.nii.gz", heart())
    write(ref / "case1_gt.mha", heart())                    # two references for one case
    write(pred / "case2_labels.nii.gz", heart())            # no reference
    (pred / "case0_probabilities.nii.gz").write_bytes(b"skipped: no _labels suffix")
    out = tmp_path / "out"
    rc = main(["validate", "--pred", str(pred), "--ref", str(ref), "--pred-suffix", "_labels",
               "--ref-suffix", "_gt", "--out", str(out)])
    assert rc == 2
    rows = read_csv(out / "metrics.csv")
    ok = [r for r in rows if not r["error"]]
    assert {r["case_id"] for r in ok} == {"case0"} and len(ok) == 2   # labels 1 and 2
    # independent check: a 1-voxel shift of the disc stack along axis 0 gives Dice < 1
    assert all(0.5 < float(r["dice"]) < 1.0 for r in ok)
    errors = {r["case_id"]: r["error"] for r in rows if r["error"]}
    assert set(errors) == {"case1", "case2"}
    assert "case1_gt.mha" in errors["case1"] and "case1_gt.nii.gz" in errors["case1"]
    assert "expected a reference" in errors["case2"]
    # without the suffixes nothing pairs: every file is its own case with a missing partner
    rc = main(["validate", "--pred", str(pred), "--ref", str(ref), "--out", str(tmp_path / "plain")])
    assert rc == 2 and not [r for r in read_csv(tmp_path / "plain" / "metrics.csv") if not r["error"]]


def test_grid_mismatch_is_an_error_row_unless_resample(tmp_path):
    ref_dir, pred_dir = tmp_path / "r", tmp_path / "p"
    ref_dir.mkdir()
    pred_dir.mkdir()
    write(ref_dir / "a.nrrd", heart())
    flipped = Geometry(GEOM.shape, GEOM.spacing, tuple(GEOM.index_to_world([[23, 0, 0]])[0]),
                       ((-1, 0, 0), (0, 1, 0), (0, 0, 1)))
    write(pred_dir / "a.nrrd", np.flip(heart(), 0).copy(), flipped)
    out = tmp_path / "o"
    assert main(["validate", "--pred", str(pred_dir), "--ref", str(ref_dir), "--out", str(out)]) == 2
    err = read_csv(out / "metrics.csv")[0]["error"]
    assert "a.nrrd" in err and "--resample" in err
    out2 = tmp_path / "o2"
    assert main(["validate", "--pred", str(pred_dir), "--ref", str(ref_dir), "--out", str(out2), "--resample"]) == 0
    rows = read_csv(out2 / "metrics.csv")
    assert all(float(r["dice"]) == 1.0 and r["resampled"] == "True" for r in rows)


def test_pairs_csv_with_cardiac_indices(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    lines = ["pred,ref,case_id,subject,phase"]
    for s in range(3):
        for phase, grow in (("ED", 1), ("ES", -1)):
            write(d / f"s{s}_{phase}_gt.nii.gz", heart(grow=grow))
            write(d / f"s{s}_{phase}_seg.nii.gz", heart(shift=s % 2, grow=grow + (s == 2)))
            lines.append(f"s{s}_{phase}_seg.nii.gz,s{s}_{phase}_gt.nii.gz,s{s}{phase},s{s},{phase}")
    (d / "pairs.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    rc = main(["validate", "--pairs", str(d / "pairs.csv"), "--out", str(out), "--labels", "LV=1", "MYO=2",
               "--lv-label", "LV", "--myo-label", "MYO", "--bootstrap", "100"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    table = {r["index"]: r for r in summary["acdc"]["clinical"] if r["group"] == "all"}
    assert set(table) == {"lv_edv_ml", "lv_esv_ml", "lv_ef_percent", "myo_mass_g"}   # no RV in --labels
    assert any("--rv-label default 3" in n for n in summary["acdc"]["notes"])
    # independent: volumes from the files themselves
    vox = GEOM.voxel_volume_ml
    diffs = []
    for s in range(3):
        v = {(ph, kind): (read_volume(d / f"s{s}_{ph}_{kind}.nii.gz", kind="label").array == 1).sum() * vox
             for ph in ("ED", "ES") for kind in ("gt", "seg")}
        diffs.append(v[("ED", "seg")] - v[("ED", "gt")])
    assert table["lv_edv_ml"]["n"] == 3
    assert table["lv_edv_ml"]["bias"] == pytest.approx(np.mean(diffs))
    assert table["lv_edv_ml"]["sd_diff"] == pytest.approx(np.std(diffs, ddof=1))
    assert "ACDC-style evaluation" in (out / "report.html").read_text()


def test_bad_arguments_exit_2(tmp_path, capsys):
    assert main(["validate", "--out", str(tmp_path / "o")]) == 2
    assert "--pred" in capsys.readouterr().err
    assert main(["validate", "--pred", str(tmp_path), "--ref", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--labels", "LV=x"]) == 2
    bad = tmp_path / "pairs.csv"
    bad.write_text("a,b\n1,2\n")
    assert main(["validate", "--pairs", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "pred,ref" in capsys.readouterr().err


def test_cardiac_flags_need_known_label_and_phases(folders, tmp_path, capsys):
    pred, ref = folders
    args = ["validate", "--pred", str(pred), "--ref", str(ref), "--out", str(tmp_path / "o"), "--labels", "LV=1"]
    assert main(args + ["--lv-label", "RV"]) == 2
    assert "--lv-label" in capsys.readouterr().err
    assert main(args + ["--lv-label", "LV"]) == 2
    assert "subject and phase" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
@pytest.mark.realdata
def test_sunnybrook_sparse_annotations(tmp_path):
    from scipy import ndimage

    from medcnn._testing import require_shared_data

    src = require_shared_data("sunnybrook", "nifti")
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    pred_dir.mkdir()
    ref_dir.mkdir()
    for name in ("SCD0000101_ED", "SCD0000201_ED"):
        ref = read_volume(src / f"{name}_gt.nii.gz", kind="label")
        write_volume(ref, ref_dir / f"{name}.nii.gz")
        lv = ref.array == 1
        pred = np.where(ndimage.binary_dilation(lv, iterations=1), 1, 0).astype(np.uint8)
        pred[..., :] = np.where(lv.any(axis=(0, 1)), pred, 1)  # label the whole un-annotated slices
        write_volume(ref.with_array(pred), pred_dir / f"{name}.nii.gz")
    out = tmp_path / "out"
    assert main(["validate", "--pred", str(pred_dir), "--ref", str(ref_dir), "--out", str(out), "--labels", "LV=1",
                 "--sparse-slices"]) == 0
    rows = read_csv(out / "metrics.csv")
    assert all(float(r["dice"]) > 0.8 and "slices" in r["sparse_slices"] for r in rows)
    dense = tmp_path / "dense"
    main(["validate", "--pred", str(pred_dir), "--ref", str(ref_dir), "--out", str(dense), "--labels", "LV=1"])
    assert all(float(r["dice"]) < 0.5 for r in read_csv(dense / "metrics.csv"))
