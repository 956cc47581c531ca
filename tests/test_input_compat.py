"""Issue 26 point 1: inputs are checked against the model before inference.

A clear mismatch (the sarcoma CT series, Modality CT and HU intensities, given to the T1 MRI
model ``hippocampus-mri``) is refused with one line and exit 2 unless
``--allow-input-mismatch``; a doubtful input (a z-scored image for a raw-intensity model, an MR
series described as FLAIR for a T1 model) runs with ``INPUT_MODEL_MISMATCH_SUSPECTED`` in every
output, the DICOM SR included; every shipped bundle's own real cases pass without a flag."""

from __future__ import annotations

import hashlib
import json
import warnings

import numpy as np
import pandas as pd
import pydicom
import pytest
from dicom_factory import write_series
from test_batch_support import make_bundle

from medcnn.batch import bundle_info, bundled_names
from medcnn.cli import main
from medcnn.errors import InputModelMismatchError
from medcnn.io import read_volume, write_volume
from medcnn.models import load_bundle
from medcnn.models.bundle import bundle_spec_sha256, update_bundle
from medcnn.models.compat import OVERRIDDEN_CODE, SUSPECTED_CODE, check_inputs, intensity_statistics

HIPPO = "hippocampus-mri"


def _need(name: str) -> str:
    if name not in bundled_names():
        pytest.skip(f"default bundle {name!r} not installed")
    return name


def _read(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_volume(path)


def _sr_flags(path) -> dict[str, str]:
    """``{code: meaning}`` of the 99MEDCNN coded values in an SR, read with pydicom."""
    out = {}

    def walk(seq):
        for item in seq:
            for c in item.get("ConceptCodeSequence", []):
                if c.CodingSchemeDesignator == "99MEDCNN":
                    out[str(c.get("LongCodeValue") or c.get("CodeValue"))] = str(c.CodeMeaning)
            if "ContentSequence" in item:
                walk(item.ContentSequence)

    walk(pydicom.dcmread(str(path)).ContentSequence)
    return out


# ----------------------------------------------------------------------------- clear mismatch
def test_sarcoma_ct_series_is_refused_by_the_t1_mri_model(shared_data, tmp_path, capsys):
    _need(HIPPO)
    ct = shared_data / "sarcoma" / "STS_001" / "CT" / "dicom" / "image"
    first = sorted(ct.glob("*.dcm"))[0]
    assert pydicom.dcmread(str(first), stop_before_pixels=True).Modality == "CT"  # the reference: the file itself
    out = tmp_path / "seg"
    rc = main(["segment", str(ct), "--model", HIPPO, "--out", str(out), "--dicom"])
    err = capsys.readouterr().err
    assert rc == 2
    lines = [ln for ln in err.splitlines() if "error" in ln]
    assert len(lines) == 1
    assert str(ct) in lines[0] and "DICOM Modality CT" in lines[0] and "HU-like" in lines[0]
    assert "--allow-input-mismatch" in lines[0] and "expected a T1-weighted MRI" in lines[0]
    assert not list(out.glob("*")), "nothing written for a refused input"

    rc = main(["run", str(ct), "--model", HIPPO, "--out", str(tmp_path / "run"), "--no-progress", "--no-figures"])
    cap = capsys.readouterr()
    assert rc == 2 and "1 failed" in cap.out
    errors = pd.read_csv(tmp_path / "run" / "errors.csv")
    assert "InputModelMismatchError" in errors.to_string()


def test_override_runs_and_flags_every_output_sr_included(shared_data, tmp_path, capsys):
    _need(HIPPO)
    ct = shared_data / "sarcoma" / "STS_001" / "CT" / "dicom" / "image"
    out = tmp_path / "run"
    rc = main(["run", str(ct), "--model", HIPPO, "--out", str(out), "--no-progress", "--no-figures", "--dicom",
               "--allow-input-mismatch"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert f"image: warning: input does not fit model {HIPPO}" in cap.err
    vols = pd.read_csv(out / "volumes.csv")
    assert len(vols) >= 2 and vols["qc_codes"].str.contains(OVERRIDDEN_CODE).all()
    rec = json.loads((out / "cases" / "image" / "result.json").read_text())
    assert OVERRIDDEN_CODE in {f["code"] for f in rec["qc_flags"]}
    assert OVERRIDDEN_CODE in _sr_flags(out / "cases" / "image" / "image_sr.dcm")


# ----------------------------------------------------------------------------- no false alarms
def _training_images(shared_data, bundle: str):
    meta = bundle_info(bundle).json
    data = meta["provenance"]["training"]["config"]["data"]
    for ds in [data["dataset"]] + [e["dataset"] for e in data.get("extra") or []]:
        dj = shared_data / ds
        for e in json.loads(dj.read_text())["training"]:
            images = e["image"] if isinstance(e["image"], list) else [e["image"]]
            yield [dj.parent / p for p in images]


@pytest.mark.parametrize("bundle", ["hippocampus-mri", "brain-tumour-mri", "cardiac-cine-mri",
                                    "cardiac-lv-cine-mri"])
def test_each_bundles_own_real_cases_pass_without_a_flag(shared_data, bundle):
    _need(bundle)
    meta = bundle_info(bundle).json
    assert set(meta["input"]["channels"]) == set(meta["channels"])
    n = 0
    for paths in _training_images(shared_data, bundle):
        vols = [_read(p) for p in paths]
        assert check_inputs(vols, meta, model=bundle) == [], paths
        n += 1
    assert n == meta["input"]["channels"][meta["channels"][0]]["intensity"]["n_images"]


def test_mri_of_the_right_kind_outside_the_training_data_passes(shared_data):
    """Other T1 MRI (a whole brain, a thigh) and the Sunnybrook cine DICOM series (Modality MR)."""
    hippo = bundle_info(_need(HIPPO)).json
    for p in (shared_data / "colin27" / "ch2.nii.gz", shared_data / "sarcoma" / "STS_001" / "MR_T1" / "nifti" /
              "image" / "image.nii.gz"):
        assert check_inputs([_read(p)], hippo, model=HIPPO) == [], p
    for name in ("cardiac-cine-mri", "cardiac-lv-cine-mri"):
        cine = _read(shared_data / "sunnybrook" / "dicom" / "SCD0000101")
        assert cine.meta.get("Modality") == "MR" and cine.leading_axis == "time"
        assert check_inputs([cine], bundle_info(_need(name)).json, model=name) == []


# ----------------------------------------------------------------------------- borderline
def test_z_scored_image_given_to_a_raw_intensity_model_is_flagged(shared_data, tmp_path, capsys):
    """BRATS 2015 FLAIR, z-scored inside the brain (signed values, none below -500), cropped
    to hippocampus size: not refused, but flagged in every row and in result.json."""
    _need(HIPPO)
    flair = _read(shared_data / "brats2015" / "brats_2013_pat0003_1" / "Flair_subtrMeanDivStd.nii.gz")
    st = intensity_statistics(flair.array)
    assert st["negative_fraction"] > 0.5 and st["air_fraction"] == 0.0  # what makes it borderline
    crop = flair.crop((96, 96, 60), (136, 152, 100))  # 40 x 56 x 40 voxels around the left temporal lobe
    write_volume(crop, tmp_path / "flair_crop.nii.gz")
    out = tmp_path / "run"
    rc = main(["run", str(tmp_path / "flair_crop.nii.gz"), "--model", HIPPO, "--out", str(out), "--no-progress",
               "--no-figures"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "below 0" in cap.err and "warning" in cap.err
    vols = pd.read_csv(out / "volumes.csv")
    assert vols["qc_codes"].str.contains(SUSPECTED_CODE).all()
    rec = json.loads((out / "cases" / "flair_crop" / "result.json").read_text())
    assert [f["code"] for f in rec["qc_flags"] if f.get("scope") == "input"] == [SUSPECTED_CODE]


def test_mr_series_described_as_flair_for_the_t1_model_is_flagged_in_the_sr(shared_data, tmp_path, capsys):
    """Real T1 pixels (a hippocampus crop) in an MR series whose SeriesDescription says FLAIR."""
    _need(HIPPO)
    img = np.asarray(_read(shared_data / "hippocampus" / "imagesTr" / "hippocampus_001.nii.gz").array)
    vol = np.clip(img, 0, 65535).astype(np.uint16)  # (I, J, K) -> slices along K
    pixels = np.transpose(vol, (2, 1, 0))[None]  # (frames, slices, rows, cols)
    write_series(tmp_path / "dcm", n_slices=pixels.shape[1], rows=pixels.shape[2], cols=pixels.shape[3],
                 spacing=(1.0, 1.0), dz=1.0, description="Ax T2 FLAIR", pixels=pixels)
    out = tmp_path / "seg"
    rc = main(["segment", str(tmp_path / "dcm"), "--model", HIPPO, "--out", str(out), "--dicom"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    prov = json.loads((out / "segment_provenance.json").read_text())
    flags = prov["cases"][0]["qc_flags"]
    assert [f["code"] for f in flags] == [SUSPECTED_CODE]
    assert "'Ax T2 FLAIR' names flair, t2" in flags[0]["message"]
    assert SUSPECTED_CODE in _sr_flags(out / "dcm_sr.dcm")


# ----------------------------------------------------------------------------- the bundle key
def test_input_description_is_metadata_weights_and_spec_hash_unchanged(tmp_path):
    b = make_bundle(tmp_path / "tiny")
    weights = hashlib.sha256((b / "model.safetensors").read_bytes()).hexdigest()
    before = load_bundle(b).spec_sha256
    desc = {"channels": {"MRI": {"modality": "MR", "sequence": "cine", "intensity": {"min_value": [0.0, 5.0],
                                                                                     "negative_fraction": [0, 0]}}}}
    update_bundle(b, input=desc)
    assert hashlib.sha256((b / "model.safetensors").read_bytes()).hexdigest() == weights
    after = load_bundle(b)
    assert after.spec_sha256 == before == bundle_spec_sha256(json.loads((b / "bundle.json").read_text()))
    assert json.loads((b / "bundle.json").read_text())["input"] == desc
    update_bundle(b, mirror_axes=[0])  # another update keeps it
    assert json.loads((b / "bundle.json").read_text())["input"] == desc
    from medcnn.volume import Geometry, Volume

    hu = Volume(np.full((8, 8, 4), -1000.0, np.float32), Geometry((8, 8, 4), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0)))
    with pytest.raises(InputModelMismatchError, match="HU-like"):
        check_inputs([hu], json.loads((b / "bundle.json").read_text()), model="tiny")


def test_bundles_without_an_input_description_check_only_ct_against_mr(tmp_path):
    """Imported / older bundles: ``preprocess.modalities`` is a normalisation rule (``MR`` =
    z-score, ``none`` = imported), so only a CT series for an MR model is refused."""
    from medcnn.volume import Geometry, Volume

    g = Geometry((8, 8, 4), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0))

    def series(modality):
        return Volume(np.full((8, 8, 4), 5.0, np.float32), g, meta={"Modality": modality})

    mr_model = {"channels": ["image"], "preprocess": {"modalities": ["MR"]}}
    with pytest.raises(InputModelMismatchError, match="DICOM Modality CT"):
        check_inputs([series("CT")], mr_model, model="m")
    assert check_inputs([series("PT")], mr_model, model="m") == []  # e.g. a PET model trained with z-scores
    assert check_inputs([series("CT")], {"channels": ["image"], "preprocess": {"modalities": ["none"]}},
                        model="imported") == []


@pytest.mark.slow
def test_shipped_profiles_are_what_the_script_derives(shared_data):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, str(repo / "scripts" / "input_profiles.py"), "--data", str(shared_data),
                          "--check"], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
