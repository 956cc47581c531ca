"""Listing cases: files, folders, globs, DICOM folders and CSV manifests (no model needed)."""

from __future__ import annotations

import pytest
from dicom_factory import write_series

from medcnn.batch import discover_cases, read_manifest, safe_case_id
from medcnn.errors import ConfigError


def _touch(p, text="x"):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def test_files_folders_globs_and_ids(tmp_path):
    a = _touch(tmp_path / "scans" / "b case.nii.gz")
    _touch(tmp_path / "scans" / "a.nrrd")
    _touch(tmp_path / "scans" / "notes.txt")  # ignored: folder holds image files
    _touch(tmp_path / "other" / "a.mha")
    cases = discover_cases([tmp_path / "scans", str(tmp_path / "other" / "*.mha"), a])
    ids = [c.case_id for c in cases]
    # folder sorted, then glob, then the file again: ids made unique and file-name safe
    assert ids == ["a", "b_case", "a-2", "b_case-2"]
    assert cases[0].inputs[0].channels == (("image", str(tmp_path / "scans" / "a.nrrd")),)
    assert all(c.error is None for c in cases)


def test_dicom_folders_are_one_case_each(tmp_path):
    write_series(tmp_path / "dicom" / "series1", n_slices=3)
    write_series(tmp_path / "dicom" / "series2", n_slices=3, series_uid="1.2.3.5")
    cases = discover_cases([tmp_path / "dicom"], channels=("MRI",))
    assert [c.case_id for c in cases] == ["series1", "series2"]
    assert cases[0].inputs[0].channels == (("MRI", str(tmp_path / "dicom" / "series1")),)
    one = discover_cases([tmp_path / "dicom" / "series2"])
    assert len(one) == 1 and one[0].case_id == "series2"


def test_missing_paths_and_empty_folders_become_error_cases(tmp_path):
    (tmp_path / "empty").mkdir()
    cases = discover_cases([tmp_path / "nope.nii.gz", tmp_path / "empty", str(tmp_path / "*.nrrd")])
    assert [c.case_id for c in cases] == ["nope", "empty", "nrrd"]
    assert all(c.error for c in cases)
    assert "nothing at that path" in cases[0].error and "nope.nii.gz" in cases[0].error
    assert "empty folder" in cases[1].error
    assert "no match" in cases[2].error


def test_multichannel_model_needs_a_manifest(tmp_path):
    f = _touch(tmp_path / "x.nii.gz")
    (case,) = discover_cases([f], channels=("FLAIR", "T1c"))
    assert case.error and "manifest" in case.error and "FLAIR, T1c" in case.error


def test_manifest_channels_relative_paths_and_bad_rows(tmp_path):
    m = tmp_path / "sub" / "m.csv"
    _touch(m, "Case_ID,flair,T1C,label,age\n"
              "p1,p1/f.nii.gz,p1/t.nii.gz,p1/seg.nii.gz,50\n"
              "p2,/abs/f.nii.gz,/abs/t.nii.gz,,61\n"
              "p3,p3/f.nii.gz,,,40\n"
              ",x.nii.gz,y.nii.gz,,1\n"
              "p1,a.nii.gz,b.nii.gz,,2\n")
    cases = read_manifest(m, channels=("FLAIR", "T1c"))
    assert [c.case_id for c in cases] == ["p1", "p2", "p3", "line5", "p1"]  # uniqueness is discover_cases' job
    c1 = cases[0]
    assert c1.inputs[0].channels == (("FLAIR", str(tmp_path / "sub" / "p1" / "f.nii.gz")),
                                     ("T1c", str(tmp_path / "sub" / "p1" / "t.nii.gz")))
    assert c1.inputs[0].reference == str(tmp_path / "sub" / "p1" / "seg.nii.gz")
    assert cases[1].inputs[0].channels[0][1] == "/abs/f.nii.gz" and cases[1].inputs[0].reference is None
    assert cases[2].error and "T1c" in cases[2].error and "m.csv line 4" in cases[2].error
    assert cases[3].error and "case_id" in cases[3].error
    ids = [c.case_id for c in discover_cases([m], channels=("FLAIR", "T1c"))]
    assert ids == ["p1", "p2", "p3", "line5", "p1-2"]


def test_manifest_cardiac_pairs_and_image_column(tmp_path):
    m = _touch(tmp_path / "pairs.csv", "case_id,ed,es,ed_label\nh1,h1_ED.nii.gz,h1_ES.nii.gz,h1_ED_gt.nii.gz\n"
                                       "h2,h2_ED.nii.gz,,\n")
    c1, c2 = read_manifest(m, channels=("MRI",))
    assert c1.kind == "pair" and [ci.phase for ci in c1.inputs] == ["ED", "ES"]
    assert c1.inputs[0].reference == str(tmp_path / "h1_ED_gt.nii.gz") and c1.inputs[1].reference is None
    assert c2.error and "both 'ed' and 'es'" in c2.error
    m2 = _touch(tmp_path / "img.csv", "case_id,image\nq,q.nii.gz\n")
    (c,) = read_manifest(m2, channels=("MRI",))
    assert c.inputs[0].channels == (("MRI", str(tmp_path / "q.nii.gz")),)


@pytest.mark.parametrize("text, needle", [
    ("id,image\na,b.nii.gz\n", "case_id"),
    ("case_id,t2\na,b.nii.gz\n", "T1c"),
])
def test_manifest_without_needed_columns_is_refused(tmp_path, text, needle):
    m = _touch(tmp_path / "m.csv", text)
    with pytest.raises(ConfigError, match=needle):
        discover_cases([m], channels=("FLAIR", "T1c"))


def test_safe_case_id():
    assert safe_case_id("../../etc/passwd") == "etc_passwd"
    assert safe_case_id("Doe, Jane (2)") == "Doe_Jane_2"
    assert safe_case_id("...") == "case"
