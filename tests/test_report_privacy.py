"""Reports any tool can read, without the folders they came from.

* every CSV medcnn writes starts with its header row: ``csv.DictReader`` and
  ``pandas.read_csv`` with default options read it, and a CSVW sidecar
  ``<name>.csv-metadata.json`` describes its columns;
* inputs inside a folder named like a patient (``DOE^JOHN``): no output file of
  ``medcnn run``, ``segment``, ``measure`` or ``validate`` (CSV, JSON, HTML, provenance,
  label maps, gzip-decompressed) contains that folder's name or absolute path, unless
  ``--include-paths`` is given.
"""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_batch_support import blob_scan, make_bundle

from medcnn.cli import main
from medcnn.io import write_volume
from medcnn.volume import Volume

PATIENT = "DOE^JOHN"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("privacy") / "tiny-cardiac")


@pytest.fixture
def patient_folder(tmp_path) -> Path:
    folder = tmp_path / "hospital" / PATIENT
    folder.mkdir(parents=True)
    for i in range(2):
        write_volume(blob_scan(seed=i, radius=5.0 + i), folder / f"scan{i}.nii.gz")
    (folder / "broken.nii.gz").write_bytes(b"\x1f\x8b\x08\x00 truncated")  # error messages name files
    return folder


def _texts(folder: Path):
    """(path, decoded text) of every file under ``folder``; .gz files are decompressed."""
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        data = p.read_bytes()
        if p.name.endswith(".gz"):
            data = gzip.decompress(data)
        yield p, data.decode("latin-1")


def _assert_no_patient_path(out: Path, folder: Path) -> int:
    n = 0
    for p, text in _texts(out):
        n += 1
        for needle in (PATIENT, str(folder), str(folder.resolve()), str(folder.parent)):
            assert needle not in text, f"{p.relative_to(out)} contains {needle!r}"
    return n


def _assert_plain_csvs(out: Path) -> int:
    csvs = sorted(out.rglob("*.csv"))
    for p in csvs:
        text = p.read_text(encoding="utf-8")
        first = text.splitlines()[0] if text else ""
        assert first and not first.startswith("#"), p
        with open(p, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
        df = pd.read_csv(p)
        assert list(df.columns) == list(reader.fieldnames) and len(df) == len(rows), p
        side = p.with_name(p.name + "-metadata.json")
        meta = json.loads(side.read_text())
        assert meta["url"] == p.name and [c["name"] for c in meta["tableSchema"]["columns"]] == list(df.columns)
    return len(csvs)


def test_run_reports_hold_no_patient_folder(bundle, patient_folder, tmp_path):
    out = tmp_path / "run"
    rc = main(["run", str(patient_folder), "--model", str(bundle), "--out", str(out), "--no-progress",
               "--device", "cpu"])
    assert rc == 2  # the broken file is an error row
    assert _assert_plain_csvs(out) >= 6
    assert _assert_no_patient_path(out, patient_folder) > 10
    cases = pd.read_csv(out / "cases.csv")
    assert set(cases["inputs"]) == {"MRI=scan0.nii.gz", "MRI=scan1.nii.gz", "MRI=broken.nii.gz"}  # channel=file
    assert "broken.nii.gz" in cases.loc[cases["status"] == "error", "message"].item()
    # --include-paths keeps them (a positive control for the scan above)
    full = tmp_path / "run-full"
    main(["run", str(patient_folder), "--model", str(bundle), "--out", str(full), "--no-progress", "--device", "cpu",
          "--include-paths"])
    assert str(patient_folder / "scan0.nii.gz") in (full / "cases.csv").read_text()
    assert str(patient_folder) in (full / "report.json").read_text()


def test_segment_measure_validate_hold_no_patient_folder(bundle, patient_folder, tmp_path):
    seg_out = tmp_path / "seg"
    assert main(["segment", str(patient_folder / "scan0.nii.gz"), str(patient_folder / "broken.nii.gz"),
                 "--model", str(bundle), "--out", str(seg_out), "--device", "cpu"]) == 2
    # label maps to measure and validate, inside the patient folder too
    labels = patient_folder / "labels"
    labels.mkdir()
    lab = blob_scan(seed=3)
    arr = (lab.array > 350).astype(np.uint8)
    write_volume(Volume(arr, lab.geometry, "label"), labels / "scan0.nii.gz")
    ref = patient_folder / "ref"
    ref.mkdir()
    write_volume(Volume(np.roll(arr, 1, axis=0), lab.geometry, "label"), ref / "scan0.nii.gz")
    (ref / "scan9.nii.gz").write_bytes(b"not a label map")  # unpaired: an error row naming it
    m_out = tmp_path / "measure"
    main(["measure", str(labels / "scan0.nii.gz"), str(patient_folder / "broken.nii.gz"),
          "--out", str(m_out / "report.csv")])
    main(["measure", str(labels / "scan0.nii.gz"), "--out", str(m_out / "report.json")])
    v_out = tmp_path / "validate"
    main(["validate", "--pred", str(labels), "--ref", str(ref), "--out", str(v_out), "--bootstrap", "50"])
    for out in (seg_out, m_out, v_out):
        assert _assert_no_patient_path(out, patient_folder) >= 1
    assert _assert_plain_csvs(m_out) >= 2 and _assert_plain_csvs(v_out) == 1
    prov = json.loads((seg_out / "segment_provenance.json").read_text())
    assert [c["inputs"] for c in prov["cases"] if c["status"] == "ok"] == [["scan0.nii.gz"]]
