"""Dataset files (dataset.json / CSV), path safety, grouped k-fold, partial-annotation masks, cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from medcnn.errors import ConfigError
from medcnn.train.datasets import (Case, kfold_split, load_cases, load_csv_manifest, load_dataset_json, prepare_case,
                                   unlabelled_slice_mask)


def _write(root: Path, entries, name="dataset.json") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    p = root / name
    p.write_text(json.dumps({"training": entries}))
    return p


@pytest.mark.parametrize("bad", ["/etc/passwd", "../outside.nii.gz", "img/../../outside.nii.gz"])
def test_dataset_json_paths_escaping_the_folder_are_refused(tmp_path, bad):
    p = _write(tmp_path / "ds", [{"image": "img/a.nii.gz", "label": bad}])
    with pytest.raises(ConfigError, match="dataset"):
        load_dataset_json(p)
    p = _write(tmp_path / "ds2", [{"image": [bad, "img/b.nii.gz"], "label": "lab/a.nii.gz"}])
    with pytest.raises(ConfigError):
        load_dataset_json(p)


def test_symlink_leaving_the_folder_is_refused(tmp_path):
    (tmp_path / "secret").mkdir()
    ds = tmp_path / "ds"
    ds.mkdir()
    os.symlink(tmp_path / "secret", ds / "link")
    p = _write(ds, [{"image": "link/a.nii.gz", "label": "a_seg.nii.gz"}])
    with pytest.raises(ConfigError, match="outside|inside"):
        load_dataset_json(p)


def test_csv_escaping_path_is_refused(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("case_id,flair,t1c,label\nx,a.nii.gz,/abs/b.nii.gz,c.nii.gz\n")
    with pytest.raises(ConfigError):
        load_csv_manifest(p)


def test_dataset_json_reads_channels_groups_and_ids(tmp_path):
    p = _write(tmp_path, [
        {"image": ["p1/flair.nii.gz", "p1/t1c.nii.gz"], "label": "p1/seg.nii.gz", "patient": "P1"},
        {"image": "x/SCD01_ES.nii.gz", "label": "x/SCD01_ES_gt.nii.gz", "annotated_classes": [1]},
    ])
    cases = load_cases(tmp_path)  # folder → dataset.json
    assert cases[0].images == (tmp_path / "p1/flair.nii.gz", tmp_path / "p1/t1c.nii.gz")
    assert cases[0].group == "P1" and cases[0].case_id == "seg"
    assert cases[1].case_id == "SCD01_ES_gt" and cases[1].annotated_classes == (1,)
    grouped = load_dataset_json(p, group_pattern=r"^(SCD\d+)_")
    assert grouped[1].group == "SCD01"


def test_csv_manifest(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("case_id,patient_id,flair,t1c,label\nA1,A,a/f.nii.gz,a/t.nii.gz,a/s.nii.gz\n"
                 "A2,A,b/f.nii.gz,b/t.nii.gz,b/s.nii.gz\n")
    cases = load_cases(p)
    assert [c.case_id for c in cases] == ["A1", "A2"]
    assert cases[0].images == (tmp_path / "a/f.nii.gz", tmp_path / "a/t.nii.gz")
    assert {c.group for c in cases} == {"A"}
    with pytest.raises(ConfigError, match="case_id"):
        (tmp_path / "bad.csv").write_text("id,image,label\n1,a,b\n")
        load_cases(tmp_path / "bad.csv")


def _cases(n_patients=7, per=3):
    return [Case(f"p{p}_{k}", (Path(f"p{p}_{k}.nii.gz"),), None, f"p{p}") for p in range(n_patients)
            for k in range(per)]


def test_kfold_groups_patients_and_covers_everything():
    cases = _cases()
    seen = []
    for fold in range(3):
        tr, va = kfold_split(cases, n_folds=3, fold=fold, seed=4)
        assert {c.group for c in tr}.isdisjoint({c.group for c in va})
        assert len(tr) + len(va) == len(cases)
        seen += [c.case_id for c in va]
    assert sorted(seen) == sorted(c.case_id for c in cases)  # every case validated exactly once
    assert kfold_split(cases, n_folds=3, fold=1, seed=4) == kfold_split(cases, n_folds=3, fold=1, seed=4)
    with pytest.raises(ConfigError):
        kfold_split(cases, n_folds=8, fold=0)
    with pytest.raises(ConfigError):
        kfold_split(cases, n_folds=3, fold=3)


def test_unlabelled_slices_along_the_coarsest_axis():
    lab = np.zeros((5, 4, 6), np.uint8)
    lab[1, 1, 2] = 1
    lab[2, 2, 4] = 2
    m = unlabelled_slice_mask(lab, (1.3, 1.3, 10.0))
    assert m.shape == lab.shape
    assert [bool(m[..., z].all()) for z in range(6)] == [True, True, False, True, False, True]
    assert not m[..., 2].any()
    m0 = unlabelled_slice_mask(lab, (8.0, 1.0, 1.0))  # coarsest axis 0
    assert [bool(m0[i].all()) for i in range(5)] == [True, False, False, True, True]


def test_prepare_case_cache_and_partial_annotation(tmp_path):
    img_p, lab_p = tmp_path / "i.bin", tmp_path / "l.bin"
    img_p.write_bytes(b"1")
    lab_p.write_bytes(b"2")
    calls = []

    def pre(case):
        calls.append(case.case_id)
        lab = np.zeros((4, 4, 3), np.int64)
        lab[1:3, 1:3, 1] = 1  # only slice 1 is contoured, class 2 absent
        return np.ones((1, 4, 4, 3), np.float32), lab, (1.0, 1.0, 8.0)

    case = Case("c", (img_p,), lab_p, "g")
    kw = dict(preprocess=pre, spec={"a": 1}, label_map=None, n_classes=3, ignore_unlabelled_slices=True,
              absent_classes_unannotated=True, cache_dir=tmp_path / "cache")
    a = prepare_case(case, **kw)
    assert a.ignore[..., 0].all() and a.ignore[..., 2].all() and not a.ignore[..., 1].any()
    assert a.annotated.tolist() == [True, True, False]
    b = prepare_case(case, **kw)
    assert calls == ["c"]  # second call read the cache
    np.testing.assert_array_equal(a.label, b.label)
    np.testing.assert_array_equal(a.ignore, b.ignore)
    img_p.write_bytes(b"changed")  # new file content → new cache key
    prepare_case(case, **kw)
    assert calls == ["c", "c"]
    prepare_case(case, **{**kw, "spec": {"a": 2}})  # new spec → recomputed
    assert len(calls) == 3


def test_label_map_and_unknown_values(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"x")

    def pre(case):
        lab = np.array([0, 1, 2, 4, 4], np.int64).reshape(5, 1, 1)
        return np.zeros((1, 5, 1, 1), np.float32), lab, (1.0, 1.0, 1.0)

    kw = dict(preprocess=pre, spec={}, n_classes=2, ignore_unlabelled_slices=False,
              absent_classes_unannotated=False, cache_dir=None)
    out = prepare_case(Case("c", (f,), f, "g"), label_map={1: 1, 2: 1, 3: 1, 4: 1}, **kw)
    assert out.label.ravel().tolist() == [0, 1, 1, 1, 1]
    with pytest.raises(ConfigError, match="label_map"):
        prepare_case(Case("c", (f,), f, "g"), label_map={1: 1, 2: 1}, **kw)


def test_held_out_foreground_metrics_ignore_classes_a_case_does_not_annotate(tmp_path, monkeypatch):
    """End-systolic Sunnybrook contours have no myocardium: the union must be the LV alone."""
    from medcnn.io import write_volume
    from medcnn.train import evaluate as ev
    from medcnn.volume import Geometry, Volume

    g = Geometry((10, 10, 4), (1.0, 1.0, 10.0))
    ref = np.zeros(g.shape, np.uint8)
    ref[2:6, 2:6, :] = 1                      # LV only (64 voxels)
    pred = np.zeros(g.shape, np.int64)
    pred[2:6, 2:6, :] = 1
    pred[1, 1:8, :] = 2                       # myocardium predicted, not annotated in this case
    img, lab = tmp_path / "img.nii.gz", tmp_path / "lab.nii.gz"
    write_volume(Volume(np.ones(g.shape, np.float32), g), img)
    write_volume(Volume(ref, g, "label"), lab)
    monkeypatch.setattr(ev, "predict_case_labels", lambda *a, **k: pred)
    case = Case("es", (img,), lab, "p1", meta={"phase": "ES"})
    out = ev.evaluate_bundle("unused", [case], labels={"lv": 1, "myo": 2}, absent_classes_unannotated=True)
    row = out["cases"][0]
    assert set(row["dice"]) == {"lv"} and row["dice"]["lv"] == 1.0
    assert row["foreground_volume_ml"] == row["foreground_ref_volume_ml"] == pytest.approx(64 * 10 / 1000)
    assert row["foreground_volume_error_percent"] == 0.0 and row["foreground_dice"] == 1.0
    assert row["volume_ml_all_slices"]["myo"] == pytest.approx(4 * 7 * 10 / 1000)  # still reported
    # with every class annotated, the predicted myocardium counts
    out = ev.evaluate_bundle("unused", [case], labels={"lv": 1, "myo": 2})
    assert out["cases"][0]["foreground_volume_ml"] == pytest.approx((64 + 28) * 10 / 1000)


def _stratified_cases():
    """15 patients in 3 pathology strata of 6, 6 and 3 (2 phases each)."""
    groups = ["DCM"] * 6 + ["NOR"] * 6 + ["RV"] * 3
    return [Case(f"p{p}_{ph}", (Path(f"p{p}_{ph}.nii.gz"),), None, f"p{p}", meta={"group": g, "phase": ph})
            for p, g in enumerate(groups) for ph in ("ED", "ES")]


def test_stratified_kfold_holds_every_stratum_in_proportion():
    cases = _stratified_cases()
    seen = []
    for fold in range(3):
        tr, va = kfold_split(cases, n_folds=3, fold=fold, seed=0, stratify_by="group")
        assert {c.group for c in tr}.isdisjoint({c.group for c in va})
        patients = {c.group: c.meta["group"] for c in va}
        counts = {s: sum(1 for v in patients.values() if v == s) for s in ("DCM", "NOR", "RV")}
        assert counts == {"DCM": 2, "NOR": 2, "RV": 1}, counts  # 6/3, 6/3, 3/3 per fold
        seen += [c.case_id for c in va]
    assert sorted(seen) == sorted(c.case_id for c in cases)


def test_stratified_kfold_refuses_missing_or_inconsistent_strata():
    cases = _stratified_cases()
    bad = cases[:-1] + [Case("p14_ES", (Path("x.nii.gz"),), None, "p14", meta={"group": "DCM"})]
    with pytest.raises(ConfigError, match="one 'group' per patient"):
        kfold_split(bad, n_folds=3, fold=0, stratify_by="group")
    with pytest.raises(ConfigError, match="'pathology' field"):
        kfold_split(cases, n_folds=3, fold=0, stratify_by="pathology")


def test_a_cases_own_label_options_override_the_run_defaults(tmp_path):
    """A partially contoured dataset beside a fully contoured one: its case ignores its
    uncontoured slices and its absent class although the run's defaults say otherwise."""
    lab = np.zeros((6, 6, 4), np.int64)
    lab[1:4, 1:4, 1] = 1  # one contoured slice (coarsest axis 2), no class 2

    def pre(case):
        return np.zeros((1,) + lab.shape, np.float32), lab, (1.0, 1.0, 8.0)

    opts = dict(preprocess=pre, spec={}, label_map=None, n_classes=3, ignore_unlabelled_slices=False,
                absent_classes_unannotated=False, cache_dir=tmp_path / "cache")
    for name in ("a", "b"):  # hashed into the cache key; the stand-in preprocess never reads them
        (tmp_path / f"{name}.nii.gz").write_bytes(name.encode())
    run_default = prepare_case(Case("a", (tmp_path / "a.nii.gz",), None, "a"), **opts)
    assert not run_default.ignore.any() and run_default.annotated.tolist() == [True, True, True]
    own = prepare_case(Case("b", (tmp_path / "b.nii.gz",), None, "b", ignore_unlabelled_slices=True,
                            absent_classes_unannotated=True), **opts)
    assert own.ignore[:, :, [0, 2, 3]].all() and not own.ignore[:, :, 1].any()
    assert own.annotated.tolist() == [True, True, False]
