"""`medcnn info` prints the geometry facts and never patient identifiers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dicom_factory import write_series
from medcnn.cli import main
from medcnn.io import write_volume
from medcnn.volume import Geometry, Volume

FIELDS = ("shape", "spacing_mm", "orientation", "origin_mm", "direction", "voxel_volume_ml", "dtype",
          "intensity_min", "intensity_max")


def test_info_nifti_json(tmp_path, capsys):
    g = Geometry((4, 5, 6), (0.5, 0.5, 3.0), (1.0, 2.0, 3.0))
    arr = np.arange(120, dtype=np.int16).reshape(4, 5, 6) - 7
    p = write_volume(Volume(arr, g), tmp_path / "a.nii.gz")
    assert main(["info", "--json", str(p)]) == 0
    d = json.loads(capsys.readouterr().out)
    for f in FIELDS:
        assert f in d
    assert d["shape"] == [4, 5, 6] and d["spacing_mm"] == [0.5, 0.5, 3.0] and d["orientation"] == "RAS"
    assert d["voxel_volume_ml"] == pytest.approx(0.00075)
    assert (d["intensity_min"], d["intensity_max"]) == (-7, 112)


def test_info_dicom_cine_frames_and_no_identifiers(tmp_path, capsys):
    write_series(tmp_path, n_slices=3, frames=4, patient_name="Smith^John", patient_id="MRN-999")
    assert main(["info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "frames             4" in out and "frame_times_ms" in out
    assert "Smith" not in out and "MRN-999" not in out and "19700101" not in out


@pytest.mark.realdata
def test_info_on_real_nifti_nrrd_and_cine(shared_data, capsys):
    paths = [shared_data / "sunnybrook" / "nifti" / "SCD0000101_ED.nii.gz",
             shared_data / "pyradiomics" / "brain1_image.nrrd",
             shared_data / "sunnybrook" / "dicom" / "SCD0000101"]
    assert main(["info", "--json", *map(str, paths)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["format"] for r in rows] == ["nifti", "nrrd", "dicom"]
    assert rows[2]["frames"] == 20 and rows[2]["shape"] == [20, 256, 256, 12]
    assert rows[1]["spacing_mm"] == pytest.approx([0.78125, 0.78125, 6.5])
    text = json.dumps(rows)
    assert "PatientName" not in text and "patient" not in text.lower()
