"""Partial references: a structure the reference dataset does not annotate (Sunnybrook: no RV,
no ES myocardium) is "not annotated" in ``medcnn validate`` (CSV empty + reason, HTML "—",
left out of every summary and ACDC table), never Dice 0."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from medcnn.cli import main
from medcnn.io import read_volume, write_volume


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.realdata
def test_sunnybrook_rv_and_es_myocardium_not_annotated(tmp_path, shared_data, capsys):
    from medcnn._testing import require_shared_data

    root = require_shared_data("sunnybrook")
    shared = json.loads((root / "dataset.json").read_text())
    # the declaration: Sunnybrook's own labels (no RV) plus "no myocardium at ES" per phase
    entries = [dict(e, label=str((root / e["label"]).resolve())) for e in shared["training"]
               if e["patient"] in ("SCD0000101", "SCD0000201")]
    dataset = tmp_path / "dataset.json"
    dataset.write_text(json.dumps({"labels": shared["labels"], "not_annotated": {"ES": ["lv_myocardium"]},
                                   "training": entries}))
    # "predictions" of a three-structure model: the experts' maps plus an RV beside the LV, and a
    # myocardium ring at ES (which the reference cannot score)
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    lines = ["pred,ref"]
    for e in entries:
        ref = read_volume(e["label"], kind="label")
        arr = np.asarray(ref.array).astype(np.uint8).copy()
        lv = np.argwhere(arr == 1)
        (i0, j0, _), (i1, j1, _) = lv.min(0), lv.max(0)
        ks = np.unique(lv[:, 2])
        arr[i0:i1, max(0, j0 - 25):max(1, j0 - 10), ks[0]:ks[-1] + 1] = 3     # an RV block beside the LV
        if e["phase"] == "ES":
            ring = np.zeros_like(arr, bool)
            ring[max(0, i0 - 2):i1 + 3, max(0, j0 - 2):j1 + 3, ks[0]:ks[-1] + 1] = True
            arr[ring & (arr == 0)] = 2
        name = f"{e['patient']}_{e['phase']}.nii.gz"
        write_volume(ref.with_array(arr), pred_dir / name)
        lines.append(f"{pred_dir / name},{e['label']}")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("\n".join(lines) + "\n")
    out = tmp_path / "val"
    assert main(["validate", "--pairs", str(pairs), "--ref-dataset", str(dataset), "--out", str(out),
                 "--bootstrap", "0", "--min-n", "2"]) == 0
    printed = capsys.readouterr().out
    assert "3 not annotated" in printed and "Dice 0.000" not in printed
    rows = read_csv(out / "metrics.csv")
    rv = [r for r in rows if r["label"] == "3"]
    assert len(rv) == 4 and all(r["annotated"] == "False" and r["dice"] == "" and r["ref_volume_ml"] == "" for r in rv)
    assert all("not among the labels of dataset.json" in r["not_annotated_reason"] for r in rv)
    myo = {r["case_id"]: r for r in rows if r["label"] == "2"}
    es_myo = [r for cid, r in myo.items() if cid.endswith("ES_gt")]
    ed_myo = [r for cid, r in myo.items() if cid.endswith("ED_gt")]
    assert es_myo and all(r["annotated"] == "False" and r["dice"] == "" and "at ES" in r["not_annotated_reason"]
                          for r in es_myo)
    assert ed_myo and all(r["annotated"] == "True" and float(r["dice"]) == 1.0 for r in ed_myo)
    summary = json.loads((out / "summary.json").read_text())
    assert "3" not in summary["aggregates"] and "3" not in summary["volume_agreement"]
    assert summary["aggregates"]["2"]["dice"]["n"] == 2 and summary["aggregates"]["2"]["dice"]["n_missing"] == 0
    acdc = json.loads((out / "acdc.json").read_text())          # subject/phase from the dataset entries
    assert {(r["structure"], r["phase"]) for r in acdc["geometric"] if r["group"] == "all"} == {
        ("LV", "ED"), ("LV", "ES"), ("Myo", "ED")}
    assert not any(r["index"].startswith("rv_") for r in acdc["clinical"])
    assert all(s["ref_rv_ef_percent"] is None for s in acdc["subjects"])
    assert any("RV (structure '3') is not annotated in the reference at ED/ES" in n for n in acdc["notes"])
    html = (out / "report.html").read_text()
    assert "not annotated: label 3 is not among the labels of dataset.json" in html and "<td>—</td>" in html


def test_pairs_csv_column_declares_unannotated_labels(tmp_path):
    from medcnn.volume import Geometry, Volume

    g = Geometry((8, 8, 3), (1.0, 1.0, 5.0))
    ref, pred = np.zeros(g.shape, np.uint8), np.zeros(g.shape, np.uint8)
    ref[1:4, 1:4] = 1
    pred[1:4, 1:4] = 1
    pred[5:7, 5:7] = 2                   # the model labels a structure the reference never drew
    write_volume(Volume(ref, g, "label"), tmp_path / "r.nii.gz")
    write_volume(Volume(pred, g, "label"), tmp_path / "p.nii.gz")
    (tmp_path / "pairs.csv").write_text("pred,ref,not_annotated\np.nii.gz,r.nii.gz,2\n")
    assert main(["validate", "--pairs", str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "o"),
                 "--bootstrap", "0"]) == 0
    rows = {r["label"]: r for r in read_csv(tmp_path / "o" / "metrics.csv")}
    assert rows["1"]["dice"] == "1.0" and rows["2"]["dice"] == "" and rows["2"]["annotated"] == "False"
    # without the declaration the same structure is scored as a miss (Dice 0): the declaration is what differs
    (tmp_path / "pairs.csv").write_text("pred,ref\np.nii.gz,r.nii.gz\n")
    assert main(["validate", "--pairs", str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "o2"),
                 "--bootstrap", "0"]) == 0
    assert {r["label"]: r for r in read_csv(tmp_path / "o2" / "metrics.csv")}["2"]["dice"] == "0.0"


def test_evaluate_case_not_annotated_api():
    from medcnn.metrics import aggregate, evaluate_case
    from medcnn.volume import Geometry, Volume

    g = Geometry((8, 8, 4), (1.0, 1.0, 3.0), (4.0, -2.0, 1.0))
    ref, pred = np.zeros(g.shape, np.uint8), np.zeros(g.shape, np.uint8)
    ref[1:4, 1:4] = 1
    ref[4:6, 4:6] = 2
    pred[1:4, 1:4] = 1
    pred[4:6, 4:6] = 2
    pred[6:8, 0:2] = 4                       # a label the reference dataset never draws (BraTS 2018: no 3)
    rows = evaluate_case(Volume(pred, g, "label"), Volume(ref, g, "label"),
                         labels={"WT": (1, 2, 3), "ET": (4,)}, not_annotated={3: "unused", 4: "no ET drawn"})
    by = {r["label"]: r for r in rows}
    assert by["WT"]["annotated"] is True and by["WT"]["dice"] == 1.0        # one unused value: still annotated
    assert by["ET"]["annotated"] is False and np.isnan(by["ET"]["dice"]) and by["ET"]["not_annotated_reason"] == \
        "no ET drawn"
    assert set(aggregate(rows, n_bootstrap=0)) == {"WT"}                      # left out of the summaries
