"""ACDC-style tables of ``medcnn validate`` against a hand-worked example.

Three subjects, ED and ES, each structure a block of rows in its own 4-column band of a
12 x 12 x 2 grid: the reference has ``a`` rows, the prediction ``a'`` rows of the same band,
so |P∩R| = 8 min(a, a') voxels and Dice = 2 min(a, a') / (a + a'); volumes are 8 x rows x
voxel volume. Every expected number below is computed with Python's ``statistics`` module
from those row counts, never with medcnn.
"""

from __future__ import annotations

import csv
import json
import math
import statistics as st

import numpy as np
import pytest

from medcnn.cli import main
from medcnn.io import read_volume, write_volume
from medcnn.volume import Geometry, Volume

GEOM = Geometry((12, 12, 2), (1.5, 1.5, 10.0), (30.0, -12.0, 4.0))
VOXEL_ML = 1.5 * 1.5 * 10.0 / 1000
BANDS = {1: 0, 2: 4, 3: 8}          # label -> first column of its band (LV, Myo, RV)

# subject -> phase -> structure -> (reference rows, predicted rows)
CASES = {
    "s1": {"ED": {1: (10, 9), 2: (6, 6), 3: (12, 11)}, "ES": {1: (5, 5), 2: (7, 6), 3: (6, 7)}},
    "s2": {"ED": {1: (8, 8), 2: (5, 6), 3: (10, 10)}, "ES": {1: (4, 3), 2: (5, 5), 3: (5, 5)}},
    "s3": {"ED": {1: (12, 11), 2: (4, 4), 3: (9, 10)}, "ES": {1: (7, 6), 2: (4, 5), 3: (4, 4)}},
}
GROUPS = {"s1": "DCM", "s2": "NOR", "s3": "NOR"}


def label_map(rows: dict[int, int]) -> Volume:
    arr = np.zeros(GEOM.shape, np.uint8)
    for label, n in rows.items():
        c = BANDS[label]
        arr[:n, c:c + 4, :] = label
    return Volume(arr, GEOM, "label")


@pytest.fixture
def pairs(tmp_path):
    lines = ["pred,ref,case_id,subject,phase,pathology"]
    for subj, phases in CASES.items():
        for ph, structs in phases.items():
            write_volume(label_map({k: v[0] for k, v in structs.items()}), tmp_path / f"{subj}_{ph}_gt.nii.gz")
            write_volume(label_map({k: v[1] for k, v in structs.items()}), tmp_path / f"{subj}_{ph}_seg.nii.gz")
            lines.append(f"{subj}_{ph}_seg.nii.gz,{subj}_{ph}_gt.nii.gz,{subj}_{ph},{subj},{ph},{GROUPS[subj]}")
    (tmp_path / "pairs.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "pairs.csv"


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def hand_dice(ref: int, pred: int) -> float:
    return 2 * min(ref, pred) / (ref + pred)


def hand_indices(subj: str, side: int) -> dict[str, float]:
    """side 0 = reference, 1 = prediction."""
    c = CASES[subj]
    out = {}
    for key, label in (("lv", 1), ("rv", 3)):
        edv, esv = 8 * c["ED"][label][side] * VOXEL_ML, 8 * c["ES"][label][side] * VOXEL_ML
        out[f"{key}_edv_ml"], out[f"{key}_esv_ml"] = edv, esv
        out[f"{key}_ef_percent"] = (edv - esv) / edv * 100
    out["myo_mass_g"] = 8 * c["ED"][2][side] * VOXEL_ML * 1.05
    return out


def test_acdc_tables_match_the_hand_worked_example(pairs, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["validate", "--pairs", str(pairs), "--out", str(out), "--group-column", "pathology",
               "--bootstrap", "0", "--min-n", "2"])    # n = 3 and 2 here: below the default 5 see the next test
    assert rc == 0
    printed = capsys.readouterr().out
    geo = read_csv(out / "acdc_geometric.csv")
    clin = read_csv(out / "acdc_clinical.csv")
    assert list(geo[0]) == ["group", "structure", "label", "phase", "n", "dice_mean", "dice_sd", "hd95_mm_mean",
                            "hd95_mm_sd", "hd_mm_mean", "hd_mm_sd"]
    assert {(r["group"], r["structure"], r["phase"]) for r in geo} == {
        (g, s, p) for g in ("all", "DCM", "NOR") for s in ("LV", "RV", "Myo") for p in ("ED", "ES")}

    # (1) geometric: Dice mean and SD per structure and phase, by hand
    for name, label in (("LV", 1), ("Myo", 2), ("RV", 3)):
        for ph in ("ED", "ES"):
            for group, subjects in (("all", ["s1", "s2", "s3"]), ("NOR", ["s2", "s3"]), ("DCM", ["s1"])):
                dices = [hand_dice(*CASES[s][ph][label]) for s in subjects]
                row = next(r for r in geo if (r["group"], r["structure"], r["phase"]) == (group, name, ph))
                assert int(row["n"]) == len(subjects)
                assert float(row["dice_mean"]) == pytest.approx(st.mean(dices), abs=1e-12)
                if len(dices) > 1:
                    assert float(row["dice_sd"]) == pytest.approx(st.stdev(dices), abs=1e-12)
                else:
                    assert row["dice_sd"] == ""            # one subject: SD undefined, not 0
    # LV at ED, all subjects: Dice 18/19, 1, 22/23 -> mean 0.9649..., written out once by hand
    lv_ed = next(r for r in geo if (r["group"], r["structure"], r["phase"]) == ("all", "LV", "ED"))
    assert float(lv_ed["dice_mean"]) == pytest.approx((18 / 19 + 1 + 22 / 23) / 3)
    # HD / HD95 aggregate the per-case values of metrics.csv (whose own tests check the definition)
    metrics = read_csv(out / "metrics.csv")
    per_case = [float(r["hd95_mm"]) for r in metrics if r["label"] == "1" and r["case_id"].endswith("_ED")]
    assert float(lv_ed["hd95_mm_mean"]) == pytest.approx(st.mean(per_case))
    assert per_case[1] == 0.0           # s2: identical LV at ED

    # (2) clinical: r, bias, SD, LoA per index, by hand
    assert {r["index"] for r in clin} == {"lv_edv_ml", "lv_esv_ml", "lv_ef_percent", "rv_edv_ml", "rv_esv_ml",
                                         "rv_ef_percent", "myo_mass_g"}
    for group, subjects in (("all", ["s1", "s2", "s3"]), ("NOR", ["s2", "s3"])):
        for index in ("lv_edv_ml", "lv_esv_ml", "lv_ef_percent", "rv_edv_ml", "rv_esv_ml", "rv_ef_percent",
                      "myo_mass_g"):
            ref = [hand_indices(s, 0)[index] for s in subjects]
            pred = [hand_indices(s, 1)[index] for s in subjects]
            diff = [p - r for p, r in zip(pred, ref)]
            row = next(r for r in clin if (r["group"], r["index"]) == (group, index))
            assert int(row["n"]) == len(subjects)
            assert float(row["bias"]) == pytest.approx(st.mean(diff), abs=1e-9)
            assert float(row["sd_diff"]) == pytest.approx(st.stdev(diff), abs=1e-9)
            assert float(row["loa_lower"]) == pytest.approx(st.mean(diff) - 1.96 * st.stdev(diff), abs=1e-9)
            assert float(row["loa_upper"]) == pytest.approx(st.mean(diff) + 1.96 * st.stdev(diff), abs=1e-9)
            assert float(row["ref_mean"]) == pytest.approx(st.mean(ref), abs=1e-9)
            if len(subjects) > 2:
                assert float(row["pearson_r"]) == pytest.approx(st.correlation(pred, ref), abs=1e-9)
    # LV EF written out by hand: s1 ref (10-5)/10 = 50 %, pred (9-5)/9 = 44.44 %; s2 50 % vs 62.5 %;
    # s3 (12-7)/12 = 41.67 % vs (11-6)/11 = 45.45 % -> bias = (-5.556 + 12.5 + 3.788) / 3 = 3.577 points
    ef = next(r for r in clin if (r["group"], r["index"]) == ("all", "lv_ef_percent"))
    assert float(ef["bias"]) == pytest.approx(((4 / 9 - 0.5) + (5 / 8 - 0.5) + (5 / 11 - 5 / 12)) * 100 / 3)
    assert float(ef["bias"]) == pytest.approx(3.577, abs=5e-4)
    assert ef["unit"] == "%" and ef["diff_unit"] == "percentage points"   # a difference of EFs is not in %
    assert next(r for r in clin if r["index"] == "lv_edv_ml")["diff_unit"] == "mL"
    assert "bias 3.58 percentage points" in printed
    mass = next(r for r in clin if (r["group"], r["index"]) == ("all", "myo_mass_g"))
    assert float(mass["bias"]) == pytest.approx(8 * VOXEL_ML * 1.05 * (0 + 1 + 0) / 3)

    # per-subject table, JSON and printout
    subj = {r["subject"]: r for r in read_csv(out / "acdc_subjects.csv")}
    assert subj["s1"]["group"] == "DCM" and float(subj["s1"]["ref_lv_ef_percent"]) == pytest.approx(50.0)
    doc = json.loads((out / "acdc.json").read_text())
    assert doc["structures"] == {"LV": "1", "RV": "3", "Myo": "2"} and doc["notes"] == []
    assert "compute_robust_hausdorff" in doc["definitions"]["hd95_mm"]
    assert "Bernard" in doc["reference"]
    assert "ACDC geometric" in printed and "ACDC clinical" in printed
    assert f"Dice {st.mean([hand_dice(*CASES[s]['ED'][1]) for s in CASES]):.3f}" in printed
    html = (out / "report.html").read_text()
    assert "ACDC-style evaluation" in html and "group NOR" in html and "group DCM" in html
    summary = json.loads((out / "summary.json").read_text())
    assert summary["acdc"] == doc


def test_agreement_statistics_withheld_below_the_stated_n(pairs, tmp_path, capsys):
    """r and limits of agreement for n = 3 were printed without a word; below 5 subjects they are
    withheld (empty, with the reason), in the CSVs, the console, summary.json and the HTML."""
    out = tmp_path / "few"
    assert main(["validate", "--pairs", str(pairs), "--out", str(out), "--group-column", "pathology",
                 "--bootstrap", "0"]) == 0
    printed = capsys.readouterr().out
    clin = read_csv(out / "acdc_clinical.csv")
    for row in clin:
        assert int(row["n"]) < 5
        assert row["pearson_r"] == row["loa_lower"] == row["loa_upper"] == ""
        assert row["withheld"].startswith(f"n = {row['n']} < 5")
        assert row["bias"] != ""                                   # the mean difference is still reported
    assert "r and LoA withheld (n = 3 < 5" in printed and " r 0." not in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["min_agreement_n"] == 5
    va = summary["volume_agreement"]["1"]
    assert va["n"] == 6 and va["pearson_r"] is not None and va["withheld"] == ""   # 6 cases per label: reported
    html = (out / "report.html").read_text()
    assert "correlation, limits of agreement, ICC and CCC not reported" in html and "—" in html


def test_named_labels_and_a_missing_rv(pairs, tmp_path, capsys):
    out = tmp_path / "named"
    # structures by --labels name or by value; RV switched off -> no RV rows and no RV indices
    rc = main(["validate", "--pairs", str(pairs), "--out", str(out), "--labels", "LV=1", "MYO=2", "RV=3",
               "--lv-label", "LV", "--myo-label", "2", "--rv-label", "0", "--bootstrap", "0"])
    assert rc == 0
    doc = json.loads((out / "acdc.json").read_text())
    assert doc["structures"] == {"LV": "LV", "RV": None, "Myo": "MYO"}
    assert {r["structure"] for r in doc["geometric"]} == {"LV", "Myo"}
    assert not any(r["index"].startswith("rv_") for r in doc["clinical"])
    assert all(r["group"] == "all" for r in doc["geometric"])      # no 'group' column in this CSV
    s1 = next(r for r in doc["subjects"] if r["subject"] == "s1")
    assert s1["ref_rv_edv_ml"] is None                             # NaN written as null, never 0

    # RV label in no map (maps without label 3): rows absent, indices NaN, a note says so
    for p in [*tmp_path.glob("s*_gt.nii.gz"), *tmp_path.glob("s*_seg.nii.gz")]:
        v = read_volume(p, kind="label")
        write_volume(v.with_array(np.where(v.array == 3, 0, v.array).astype(np.uint8)), p)
    out2 = tmp_path / "norv"
    assert main(["validate", "--pairs", str(pairs), "--out", str(out2), "--bootstrap", "0"]) == 0
    doc = json.loads((out2 / "acdc.json").read_text())
    assert any("RV (structure '3') occurs in no evaluated" in n for n in doc["notes"])
    assert "note: RV" in capsys.readouterr().out
    assert all(math.isfinite(r["bias"]) for r in doc["clinical"] if r["n"] > 1)
    assert {r["index"] for r in doc["clinical"]} == {"lv_edv_ml", "lv_esv_ml", "lv_ef_percent", "myo_mass_g"}


def test_bad_structure_options(pairs, tmp_path, capsys):
    base = ["validate", "--pairs", str(pairs), "--out", str(tmp_path / "o")]
    assert main(base + ["--lv-label", "LV"]) == 2                      # a name without --labels
    assert "--lv-label as a label value" in capsys.readouterr().err
    assert main(base + ["--labels", "LV=1", "--rv-label", "RV"]) == 2
    assert "--rv-label among the --labels names" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
