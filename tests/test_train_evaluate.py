"""Held-out evaluation: LV and RV ejection fraction errors per patient, checked by hand.

The bundle's prediction is replaced by a label map built here, so every number follows
from voxel counts that the test states."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medcnn.io import write_volume
from medcnn.train import evaluate
from medcnn.train.datasets import Case
from medcnn.volume import Geometry, Volume

LABELS = {"background": 0, "lv_blood_pool": 1, "lv_myocardium": 2, "rv_blood_pool": 3}
GEOM = Geometry((10, 10, 6), (1.5, 1.5, 10.0))  # 0.0225 mL per voxel


def _stack(lv: int, myo: int, rv: int) -> np.ndarray:
    """lv, myo and rv voxels filled in raster order on slices 1-4 (0 and 5 empty)."""
    lab = np.zeros(GEOM.shape, np.uint8)
    flat = lab[:, :, 1:5].reshape(-1)
    flat[:lv] = 1
    flat[lv:lv + myo] = 2
    flat[lv + myo:lv + myo + rv] = 3
    lab[:, :, 1:5] = flat.reshape(10, 10, 4)
    return lab


def test_lv_and_rv_ef_errors_by_hand(tmp_path, monkeypatch):
    # reference ED: LV 100, RV 120 voxels; ES: LV 40, RV 60 -> LV EF 60 %, RV EF 50 %
    # predicted ED: LV 90, RV 130;      ES: LV 45, RV 52 -> LV EF 50 %, RV EF 60 %
    ref = {"ED": _stack(100, 30, 120), "ES": _stack(40, 30, 60)}
    pred = {"ED": _stack(90, 30, 130), "ES": _stack(45, 30, 52)}
    cases = []
    for phase in ("ED", "ES"):
        img, lab = tmp_path / f"p1_{phase}.nii.gz", tmp_path / f"p1_{phase}_gt.nii.gz"
        write_volume(Volume(np.zeros(GEOM.shape, np.float32), GEOM), img)
        write_volume(Volume(ref[phase], GEOM, kind="label"), lab)
        cases.append(Case(f"p1_{phase}", (img,), lab, "p1", meta={"phase": phase}))
    by_file = {str(c.images[0]): pred[c.meta["phase"]] for c in cases}
    monkeypatch.setattr(evaluate, "predict_case_labels",
                        lambda bundle, chans, device="cpu": by_file[chans[0].geometry.source])
    out = evaluate.evaluate_bundle(tmp_path, cases, labels=LABELS)
    (lv,), (rv,) = out["ejection_fraction"], out["rv_ejection_fraction"]
    assert lv["ref_ef_percent"] == pytest.approx(60.0) and lv["ef_percent"] == pytest.approx(50.0)
    assert rv["ref_ef_percent"] == pytest.approx(50.0) and rv["ef_percent"] == pytest.approx(60.0)
    assert out["mean_abs_ef_error_points"] == pytest.approx(10.0)
    assert out["mean_abs_rv_ef_error_points"] == pytest.approx(10.0)
    assert rv["edv_ml"] == pytest.approx(130 * 0.0225) and rv["ref_esv_ml"] == pytest.approx(60 * 0.0225)
    # Dice by hand (raster positions): ED LV pred 0..89, ref 0..99 -> 180/190; RV pred 120..249, ref 130..249
    ed = next(r for r in out["cases"] if r["case_id"] == "p1_ED")
    assert ed["dice"]["lv_blood_pool"] == pytest.approx(180 / 190)
    assert ed["dice"]["rv_blood_pool"] == pytest.approx(2 * 120 / 250)
    json.dumps(out)  # JSON-able


def test_an_lv_only_model_keeps_its_first_class_as_the_blood_pool(tmp_path, monkeypatch):
    geom_lab = _stack(100, 30, 0)
    img, lab = tmp_path / "a_ED.nii.gz", tmp_path / "a_ED_gt.nii.gz"
    write_volume(Volume(np.zeros(GEOM.shape, np.float32), GEOM), img)
    write_volume(Volume(geom_lab, GEOM, kind="label"), lab)
    es_img, es_lab = tmp_path / "a_ES.nii.gz", tmp_path / "a_ES_gt.nii.gz"
    write_volume(Volume(np.zeros(GEOM.shape, np.float32), GEOM), es_img)
    write_volume(Volume(_stack(50, 30, 0), GEOM, kind="label"), es_lab)
    cases = [Case("a_ED", (img,), lab, "a", meta={"phase": "ED"}), Case("a_ES", (es_img,), es_lab, "a",
                                                                         meta={"phase": "ES"})]
    preds = {str(img): _stack(100, 30, 0), str(es_img): _stack(40, 30, 0)}
    monkeypatch.setattr(evaluate, "predict_case_labels", lambda b, chans, device="cpu": preds[chans[0].geometry.source])
    out = evaluate.evaluate_bundle(Path(tmp_path), cases, labels={"background": 0, "lv": 1, "myo": 2})
    assert out["mean_abs_ef_error_points"] == pytest.approx(10.0)  # 60 % vs 50 %
    assert "rv_ejection_fraction" not in out
