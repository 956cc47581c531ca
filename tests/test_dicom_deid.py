"""De-identification of every DICOM object medcnn writes, by DICOM PS3.15 Annex E.

Sources: a synthetic series whose images carry every attribute of the shipped PS3.15 Table
E.1-1 (built from the table itself: distinctive values per VR, sequences with nested
identifying values, a private block, a de-identification claim of its own), and series made
from pydicom's own test files with their real headers (``CT_small.dcm``, ``MR_small.dcm``).
For ``medcnn convert MASK --reference SERIES``, ``segment --dicom`` and ``run --dicom`` at
default settings no original identifying value appears in any file written (byte search;
DICOM outputs also parsed, nested sequences included), the de-identification claims are
medcnn's own, dciodvfy finds no errors and highdicom reads SEG and SR back equal to the CSV.
The table itself is checked against pydicom's data dictionary and rows copied by hand from the
standard.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pandas as pd
import pydicom
import pytest

from dicom_factory import annex_e_rows, documented_pseudonymous_uid, pydicom_testfile_series, write_profile_series
from test_batch_support import make_bundle
from test_dicom_outputs import _groups
from medcnn.cli import main
from medcnn.io import read_labels, read_volume, write_volume

hd = pytest.importorskip("highdicom")

SERIES = dict(n_slices=6, rows=20, cols=18, spacing=(1.4, 1.3), dz=6.0)


def _files(folder):
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _string_values(ds):
    """Every textual value in ``ds``, nested sequences included."""
    out = []
    for elem in ds.iterall():
        if elem.VR in ("SQ", "OB", "OW", "OF", "OD", "OL", "OV", "UN"):
            continue
        vals = elem.value if isinstance(elem.value, (list, pydicom.multival.MultiValue)) else [elem.value]
        out += [str(v).strip() for v in vals if v is not None]
    return out


def assert_nothing_identifying(folder, secrets, *, exact=()):
    """No secret (bytes) in any file under ``folder``; in DICOM files, no value equal to one of
    ``exact`` either (short values such as times, too generic for a byte search)."""
    files = _files(folder)
    assert files
    for p in files:
        data = p.read_bytes()
        found = [s for s in secrets if s in data]
        assert not found, f"{p.name}: {found[:10]}"
        if p.suffix == ".dcm":
            ds = pydicom.dcmread(str(p))
            assert not [e for e in ds.iterall() if e.tag.is_private], p.name
            same = set(_string_values(ds)) & {s.decode("latin-1") for s in exact}
            assert not same, f"{p.name}: {sorted(same)}"
    return files


def assert_claims_are_medcnns(path):
    from pydicom.sr.codedict import codes

    ds = pydicom.dcmread(str(path))
    assert ds.PatientIdentityRemoved == "YES"
    got = {(c.CodeValue, c.CodingSchemeDesignator) for c in ds.DeidentificationMethodCodeSequence}
    want = {(codes.DCM.BasicApplicationConfidentialityProfile.value, "DCM"),
            (codes.DCM.CleanDescriptorsOption.value, "DCM"), (codes.DCM.CleanStructuredContentOption.value, "DCM")}
    assert got == want  # pydicom's copy of CID 7050 as the reference
    methods = list(ds.DeidentificationMethod) if ds["DeidentificationMethod"].VM > 1 else [ds.DeidentificationMethod]
    assert all(m.startswith("medcnn") or "Option" in m or "UIDs replaced" in m for m in methods), methods
    assert all(len(m) <= 64 for m in methods)  # LO
    return ds


def dciodvfy_errors(path):
    res = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    return [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("Error")]


needs_dciodvfy = pytest.mark.skipif(shutil.which("dciodvfy") is None,
                                    reason="dciodvfy not installed (Debian package dicom3tools: "
                                           "apt-get install dicom3tools)")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("deid") / "tiny-cardiac")


@pytest.fixture(scope="module")
def profile_series(tmp_path_factory):
    root = tmp_path_factory.mktemp("profile")
    tokens = write_profile_series(root / "scan1", **SERIES)
    return root / "scan1", tokens


def _label_nifti(series, out):
    from medcnn.volume import Volume

    vol = read_volume(series)
    arr = np.asarray(vol.array, float)
    labels = (arr > np.quantile(arr, 0.5)).astype(np.uint8) + (arr > np.quantile(arr, 0.9)).astype(np.uint8)
    write_volume(Volume(labels, vol.geometry), out)
    return out


def test_table_is_ps3_15_table_e1_1():
    """The shipped table against pydicom's data dictionary (generated from PS3.6) and rows
    copied by hand from PS3.15 2024b Table E.1-1."""
    from pydicom.datadict import dictionary_description, keyword_for_tag

    rows = annex_e_rows()
    assert len(rows) == 621 and len({r["tag"] for r in rows}) == 621
    for r in rows:
        if r["keyword"]:
            tag = int(r["tag"], 16)
            assert keyword_for_tag(tag) == r["keyword"]
            norm = lambda s: "".join(c for c in s.lower() if c.isalnum())  # noqa: E731
            assert norm(dictionary_description(tag)).startswith(norm(r["name"])[:12]), (r, dictionary_description(tag))
    by_kw = {r["keyword"]: r for r in rows if r["keyword"]}
    hand = {  # keyword: (Basic Profile, Retain UIDs, Retain Longitudinal Full Dates, Clean Descriptors)
        "PatientName": ("Z", "", "", ""), "PatientID": ("Z/D", "", "", ""),  # Z before 2024b "PatientBirthDate": ("Z", "", "", ""),
        "PatientSex": ("Z", "", "", ""), "StudyDate": ("Z", "", "K", ""), "AccessionNumber": ("Z", "", "", ""),
        "StudyInstanceUID": ("U", "K", "", ""), "SOPInstanceUID": ("U", "K", "", ""),
        "FrameOfReferenceUID": ("U", "K", "", ""), "ContentDate": ("Z/D", "", "K", ""),
        "InstitutionName": ("X/Z/D", "", "", ""), "SeriesDescription": ("X", "", "", "C"),
        "AdditionalPatientHistory": ("X", "", "", "C"), "Occupation": ("X", "", "", "C"),
        "PatientState": ("X", "", "", "C"), "ReasonForVisit": ("X", "", "", "C"), "Allergies": ("X", "", "", "C"),
        "AdmissionID": ("X", "", "", ""),
        "ReferencedImageSequence": ("X/Z/U*", "K", "", ""), "ContentSequence": ("D", "", "", ""),
        "PatientAge": ("X", "", "", ""),
    }
    for kw, (basic, uids, dates, desc) in hand.items():
        r = by_kw[kw]
        assert (r["basic_profile"], r["retain_uids"], r["retain_longitudinal_full_dates"], r["clean_descriptors"]) \
            == (basic, uids, dates, desc), kw
    assert by_kw["ContentSequence"]["clean_structured_content"] == "C"
    assert [r for r in rows if r["name"] == "Private Attributes"][0]["basic_profile"] == "X"


def test_table_regenerates_from_its_source(tmp_path):
    """scripts/annex_e_table.py --check against the source file, where a copy of it is at hand."""
    import os
    from pathlib import Path

    src = os.environ.get("MEDCNN_ANNEX_E_JSON")
    if not src or not Path(src).is_file():
        pytest.skip("set MEDCNN_ANNEX_E_JSON to innolitics/dicom-standard@8670abdd "
                    "standard/confidentiality_profile_attributes.json to regenerate the table")
    script = Path(__file__).resolve().parents[1] / "scripts" / "annex_e_table.py"
    res = subprocess.run([__import__("sys").executable, str(script), src, "--check"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_fixture_carries_every_table_attribute(profile_series):
    """The source really holds the table's attributes (at least every textual / sequence one of
    the modules highdicom copies), so the tests below test something."""
    folder, tokens = profile_series
    ds = pydicom.dcmread(str(next(folder.iterdir())))
    for kw in ("AdditionalPatientHistory", "AdmissionID", "AdmittingDiagnosesDescription", "Allergies",
               "ConsultingPhysicianName", "Occupation", "PatientState", "ReasonForVisit", "InstitutionName",
               "ClinicalTrialSubjectID", "ClinicalTrialSponsorName", "OtherPatientIDsSequence", "PatientAddress",
               "IssuerOfPatientID", "StudyDescription", "PhysiciansOfRecord", "ContentCreatorName"):
        assert kw in ds and not ds[kw].is_empty, kw
    assert len([r for r in annex_e_rows() if r["keyword"] and r["keyword"] in ds]) >= 595  # docs/dicom.md
    assert len(tokens) > 600


def test_convert_mask_to_seg(profile_series, tmp_path):
    folder, tokens = profile_series
    nii = _label_nifti(folder, tmp_path / "mask.nii.gz")
    out = tmp_path / "out"
    assert main(["convert", str(nii), "--out", str(out / "seg.dcm"), "--reference", str(folder)]) == 0
    assert_nothing_identifying(out, tokens)
    seg = assert_claims_are_medcnns(out / "seg.dcm")
    assert seg.StudyInstanceUID == documented_pseudonymous_uid("1.3.6.1.4.1.99999.1.1")
    assert seg.FrameOfReferenceUID == documented_pseudonymous_uid("1.3.6.1.4.1.99999.1.2")
    assert seg.PatientName == "" and seg.PatientID == "" and seg.StudyDate == ""
    np.testing.assert_array_equal(read_labels(out / "seg.dcm", reference=folder).array,
                                  read_volume(nii, kind="label").array)


def test_segment_dicom(profile_series, bundle, tmp_path):
    folder, tokens = profile_series
    out = tmp_path / "o"
    assert main(["segment", str(folder), "--model", str(bundle), "--out", str(out), "--dicom"]) == 0
    files = assert_nothing_identifying(out, tokens)
    assert {p.name for p in files} >= {"scan1_seg.dcm", "scan1_sr.dcm"}
    seg = assert_claims_are_medcnns(out / "scan1_seg.dcm")
    sr = assert_claims_are_medcnns(out / "scan1_sr.dcm")
    # UIDs replaced consistently: SEG and SR name the same (pseudonymous) study and source images
    source_uids = {documented_pseudonymous_uid(str(pydicom.dcmread(str(f)).SOPInstanceUID)) for f in folder.iterdir()}
    assert seg.StudyInstanceUID == sr.StudyInstanceUID == documented_pseudonymous_uid("1.3.6.1.4.1.99999.1.1")
    seg_refs = {str(i.ReferencedSOPInstanceUID) for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    ev = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    sr_refs = {str(i.ReferencedSOPInstanceUID) for s in ev for i in s.ReferencedSOPSequence}
    assert seg_refs <= source_uids and source_uids <= sr_refs and seg.SOPInstanceUID in sr_refs
    # highdicom reads the SR back equal to the label map's volumes
    labels = read_volume(out / "scan1_labels.nii.gz", kind="label")
    _, groups = _groups(out / "scan1_sr.dcm")
    for number, g in groups.items():
        assert g["Volume"] == pytest.approx(int((labels.array == number).sum()) * 1.4 * 1.3 * 6.0 / 1000, rel=1e-12)


@pytest.fixture(scope="module")
def run_out(profile_series, bundle, tmp_path_factory):
    folder, _ = profile_series
    out = tmp_path_factory.mktemp("run") / "out"
    manifest = out.parent / "cases.csv"
    manifest.write_text(f"case_id,image\nscan1,{folder}\n")
    assert main(["run", str(manifest), "--model", str(bundle), "--out", str(out), "--dicom", "--no-progress",
                 "--mode", "volumes"]) == 0
    return out


def test_run_dicom(run_out, profile_series):
    _, tokens = profile_series
    files = assert_nothing_identifying(run_out, tokens)
    assert {".dcm", ".csv", ".json", ".html"} <= {p.suffix for p in files}
    seg = assert_claims_are_medcnns(run_out / "cases" / "scan1" / "scan1_seg.dcm")
    assert_claims_are_medcnns(run_out / "cases" / "scan1" / "scan1_sr.dcm")
    vols = pd.read_csv(run_out / "volumes.csv").set_index("label")
    _, groups = _groups(run_out / "cases" / "scan1" / "scan1_sr.dcm")
    assert len(groups) == len(seg.SegmentSequence)
    for number, g in groups.items():
        assert g["Volume"] == vols.loc[number, "volume_ml"]


@needs_dciodvfy
def test_dciodvfy_no_errors_from_a_fully_loaded_source(run_out):
    for name in ("scan1_seg.dcm", "scan1_sr.dcm"):
        path = run_out / "cases" / "scan1" / name
        assert not dciodvfy_errors(path), name


@pytest.mark.parametrize("name", ["MR_small.dcm", "CT_small.dcm"])
def test_pydicom_test_files_with_real_headers(name, bundle, tmp_path):
    folder = tmp_path / "series"
    secrets = pydicom_testfile_series(folder, name)
    distinctive = [s for s in secrets if len(s) >= 8 or any(chr(c).isalpha() for c in s)]  # times: parsed only
    assert b"CompressedSamples^" + name[:2].encode() + b"1" in secrets  # the real PatientName
    nii = _label_nifti(folder, tmp_path / "mask.nii.gz")
    assert main(["convert", str(nii), "--out", str(tmp_path / "c" / "seg.dcm"), "--reference", str(folder)]) == 0
    assert_nothing_identifying(tmp_path / "c", distinctive, exact=secrets)
    assert_claims_are_medcnns(tmp_path / "c" / "seg.dcm")
    if name.startswith("MR"):  # the tiny model is an MR model
        assert main(["segment", str(folder), "--model", str(bundle), "--out", str(tmp_path / "s"), "--dicom"]) == 0
        assert_nothing_identifying(tmp_path / "s", distinctive, exact=secrets)
        for p in (tmp_path / "s").glob("*.dcm"):
            assert_claims_are_medcnns(p)
            if shutil.which("dciodvfy"):
                assert not dciodvfy_errors(p), p.name


def test_include_identifiers_keeps_them_and_claims_nothing(profile_series, tmp_path):
    folder, _ = profile_series
    nii = _label_nifti(folder, tmp_path / "mask.nii.gz")
    assert main(["convert", str(nii), "--out", str(tmp_path / "seg.dcm"), "--reference", str(folder),
                 "--include-identifiers"]) == 0
    seg = pydicom.dcmread(str(tmp_path / "seg.dcm"))
    assert str(seg.PatientName) == "Zqpatient^Privacy" and seg.StudyInstanceUID == "1.3.6.1.4.1.99999.1.1"
    assert str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID) == "1.3.6.1.4.1.99999.1.3"
    # highdicom's Contributing Equipment item for the source, with its institution: what the
    # default settings must keep out (the byte searches above)
    inst = {str(getattr(i, "InstitutionName", "")) for i in seg.ContributingEquipmentSequence}
    assert any(n.startswith("ZQ") and n.endswith("LO secret") for n in inst), inst
    # the source's own de-identification claim is not copied: medcnn de-identified nothing here
    assert "PatientIdentityRemoved" not in seg and "DeidentificationMethod" not in seg


def test_one_segment_seg_and_sr(profile_series, tmp_path):
    """A label map with a single structure: highdicom puts the segment's identification in the
    shared functional groups; the SR still references it and reads back (highdicom)."""
    from medcnn.io.dicom_out import write_dicom_results
    from medcnn.volume import Volume

    folder, tokens = profile_series
    vol = read_volume(folder)
    labels = Volume((np.asarray(vol.array) > np.median(vol.array)).astype(np.uint8), vol.geometry)
    write_dicom_results(labels, folder, tmp_path / "seg.dcm", tmp_path / "sr.dcm", label_names={1: "tumour"},
                        volumes_ml={1: 12.5})
    assert_nothing_identifying(tmp_path, tokens)
    sr, groups = _groups(tmp_path / "sr.dcm")
    assert groups == {1: {"Volume": 12.5}}
    np.testing.assert_array_equal(read_labels(tmp_path / "seg.dcm", reference=folder).array, labels.array)


def test_profile_on_a_dataset_by_hand():
    """apply_confidentiality_profile on a hand-built dataset: repeating-group overlay rows
    (60xx), private attributes, nested sequences and compound actions, checked against the
    action letters of PS3.15 E.1.1 written out here."""
    from pydicom.dataset import Dataset

    from medcnn.io.deid import apply_confidentiality_profile, pseudonymous_uid

    ds = Dataset()
    ds.add_new(0x60023000, "OB", b"\x01\x02")  # Overlay Data, group 6002: X
    ds.add_new(0x60024000, "LT", "ZQ overlay comment")  # Overlay Comments: X
    ds.private_block(0x0011, "ZQ CREATOR", create=True).add_new(0x01, "LO", "ZQ private")
    ds.ContentDate, ds.ContentTime = "20240102", "101112"  # Z/D, type 1 in SEG/SR: dummy
    ds.InstanceCreationDate = "20240102"  # X/D, type 3: removed
    ds.SeriesDescription = "medcnn segmentation"  # X, Clean Descriptors C: medcnn's own text kept
    item = Dataset()
    item.InstitutionName = "ZQ nested institution"  # X/Z/D, type 3: removed
    item.ContributionDateTime = "20240102101112"  # X
    item.Manufacturer = "medcnn"  # not in the table: kept
    ds.ContributingEquipmentSequence = [item]
    ds.ReferencedImageSequence = [Dataset()]  # X/Z/U*: kept, contents cleaned
    ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = "2.25.1"
    apply_confidentiality_profile(ds)
    assert 0x60023000 not in ds and 0x60024000 not in ds
    assert not [e for e in ds.iterall() if e.tag.is_private]
    assert (ds.ContentDate, ds.ContentTime) == ("19000101", "000000") and "InstanceCreationDate" not in ds
    assert ds.SeriesDescription == "medcnn segmentation"
    eq = ds.ContributingEquipmentSequence[0]
    assert "InstitutionName" not in eq and "ContributionDateTime" not in eq and eq.Manufacturer == "medcnn"
    assert ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID == "2.25.1"
    assert ds.PatientIdentityRemoved == "YES" and ds.LongitudinalTemporalInformationModified == "REMOVED"
    # the replacement UID is a valid, deterministic 2.25 UID of at most 64 characters
    u = pseudonymous_uid("1.2.3")
    assert u == pseudonymous_uid("1.2.3") == documented_pseudonymous_uid("1.2.3") != pseudonymous_uid("1.2.4")
    assert u.startswith("2.25.") and len(u) <= 64 and u[5:].isdigit()
