"""BSA-indexed cardiac values: the Mosteller BSA and every index by hand, `medcnn measure
--height/--weight` both ways, bad values refused, and one ACDC patient's EDVi from the expert map
read by nibabel against the dataset's own height and weight."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from medcnn.cli import main
from medcnn.errors import ConfigError
from medcnn.io import write_volume
from medcnn.measure import cardiac_function, cine_function
from medcnn.measure.body import BSA_COLUMNS, BodySize, body_size, mosteller_bsa_m2
from medcnn.report.tables import metadata_path
from medcnn.volume import Geometry, Volume

G = Geometry((20, 20, 10), (1.5, 1.5, 8.0), (-40.0, 10.0, 55.0))
VOXEL_ML = 1.5 * 1.5 * 8.0 / 1000


def stack(lv: tuple[int, int], rv_rows: int) -> Volume:
    """LV blood pool = square lv[0]:lv[1] on slices 2-7 inside a one-pixel myocardium ring; an RV
    block of ``rv_rows`` x 4 beside the ring."""
    arr = np.zeros(G.shape, np.uint8)
    a, b = lv
    for k in range(2, 8):
        arr[a - 1:b + 1, a - 1:b + 1, k] = 2
        arr[a:b, a:b, k] = 1
        arr[13:13 + rv_rows, 5:9, k] = 3
    return Volume(arr, G, "label")


def test_mosteller_by_hand():
    assert mosteller_bsa_m2(180, 80) == 2.0                      # sqrt(180 x 80 / 3600) = sqrt(4)
    assert mosteller_bsa_m2(184, 95) == pytest.approx(2.20353, abs=1e-5)   # sqrt(4.85556)
    assert mosteller_bsa_m2(50, 3.5) == pytest.approx(0.22048, abs=1e-5)  # a newborn: sqrt(0.048611)
    assert BodySize(180, 80).bsa_m2 == 2.0


def test_indexed_values_by_hand():
    ed, es = stack((5, 12), rv_rows=5), stack((6, 10), rv_rows=3)
    fn = cardiac_function(ed, es, height_cm=180, weight_kg=80)        # BSA exactly 2.0 m^2
    edv, esv = 49 * 6 * VOXEL_ML, 16 * 6 * VOXEL_ML
    mass = (81 - 49) * 6 * VOXEL_ML * 1.05
    rv_edv, rv_esv = 20 * 6 * VOXEL_ML, 12 * 6 * VOXEL_ML
    row = fn.to_row()
    expected = {"height_cm": 180.0, "weight_kg": 80.0, "bsa_m2": 2.0, "lv_edvi_ml_per_m2": edv / 2,
                "lv_esvi_ml_per_m2": esv / 2, "lv_svi_ml_per_m2": (edv - esv) / 2, "rv_edvi_ml_per_m2": rv_edv / 2,
                "rv_esvi_ml_per_m2": rv_esv / 2, "lv_mass_index_g_per_m2": mass / 2}
    for k, v in expected.items():
        assert row[k] == pytest.approx(v, rel=1e-12), k
    cols = list(fn.to_frame().columns)
    assert cols[-2:] == ["qc_codes", "qc_messages"] and cols.index("bsa_m2") < cols.index("qc_codes")
    assert "sqrt(height_cm x weight_kg / 3600)" in fn.to_dict()["methods"]["bsa_m2"]
    assert "mL/m^2" in fn.to_dict()["methods"]["lv_edvi_ml_per_m2"]
    assert "g/m^2" in fn.to_dict()["methods"]["lv_mass_index_g_per_m2"]


def test_without_height_and_weight_nothing_is_indexed():
    fn = cardiac_function(stack((5, 12), 5), stack((6, 10), 3))
    assert fn.body is None and not set(BSA_COLUMNS) & set(fn.to_row()) and not set(BSA_COLUMNS) & set(fn.to_dict())
    assert not set(BSA_COLUMNS) & set(fn.to_frame().columns)


def test_no_rv_or_no_myocardium_gives_nan_indices_not_zero():
    arr = np.asarray(stack((5, 12), 5).array).copy()
    arr[arr == 3] = 0
    arr[arr == 2] = 0
    vol = Volume(arr, G, "label")
    row = cardiac_function(vol, vol, height_cm=180, weight_kg=80).to_row()
    assert row["lv_edvi_ml_per_m2"] == pytest.approx(49 * 6 * VOXEL_ML / 2)
    assert math.isnan(row["rv_edvi_ml_per_m2"]) and math.isnan(row["lv_mass_index_g_per_m2"])


def test_cine_function_indexes_too():
    frames = [stack((5, 12), 5), stack((6, 10), 3), stack((5, 11), 4)]
    cine = Volume.stack(frames, leading_axis="time")
    fn = cine_function(cine, height_cm=180, weight_kg=80).function
    assert fn.to_row()["lv_esvi_ml_per_m2"] == pytest.approx(16 * 6 * VOXEL_ML / 2)


@pytest.mark.parametrize("height,weight,fragment", [
    (1.8, 80, "height in cm between 30 and 250, got 1.8 (a height in metres? give centimetres)"),
    (0, 80, "height in cm between 30 and 250, got 0"),
    (-170, 80, "got -170"),
    (float("nan"), 80, "got nan"),
    (float("inf"), 80, "got inf"),
    (251, 80, "got 251"),
    (170, 0.5, "weight in kg between 1 and 400, got 0.5"),
    (170, 401, "got 401"),
    ("tall", 80, "got 'tall'"),
    (170, None, "expected both height_cm and weight_kg (a BSA needs both), or neither, got height_cm without weight_kg"),
    (None, 70, "got weight_kg without height_cm"),
])
def test_bad_height_or_weight_refused_before_measuring(height, weight, fragment):
    with pytest.raises(ConfigError, match=None) as info:
        cardiac_function(stack((5, 12), 5), stack((6, 10), 3), height_cm=height, weight_kg=weight)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


def test_body_size_names_the_source_and_reads_manifest_strings():
    assert body_size(" 172 ", "68.5") == BodySize(172.0, 68.5)
    assert body_size("", " ") is None and body_size(None, None) is None
    with pytest.raises(ConfigError) as info:
        body_size("1.72", "68", source="cases.csv line 3")
    assert str(info.value).startswith("cases.csv line 3, height_cm: expected a height in cm between 30 and 250")


# ------------------------------------------------------------------ medcnn measure
def _pair(tmp_path):
    ed, es = tmp_path / "p_ED.nii.gz", tmp_path / "p_ES.nii.gz"
    write_volume(stack((5, 12), 5), ed)
    write_volume(stack((6, 10), 3), es)
    return str(ed), str(es)


def test_measure_cli_with_and_without_height_and_weight(tmp_path, capsys):
    ed, es = _pair(tmp_path)
    assert main(["measure", "--cardiac", ed, es, "--out", str(tmp_path / "a.csv"),
                 "--height", "180", "--weight", "80"]) == 0
    row = pd.read_csv(tmp_path / "a.cardiac.csv").iloc[0]
    edv = 49 * 6 * VOXEL_ML
    assert row["bsa_m2"] == pytest.approx(2.0) and row["lv_edvi_ml_per_m2"] == pytest.approx(edv / 2)
    assert row["lv_mass_index_g_per_m2"] == pytest.approx(32 * 6 * VOXEL_ML * 1.05 / 2)
    side = json.loads(metadata_path(tmp_path / "a.cardiac.csv").read_text())
    desc = {c["name"]: c.get("dc:description", "") for c in side["tableSchema"]["columns"]}
    assert "Mosteller" in desc["bsa_m2"] and "mL/m^2" in desc["rv_esvi_ml_per_m2"]
    assert side["medcnn"]["provenance"]["options"]["height_cm"] == 180.0
    # JSON: the same values, the formula in methods
    assert main(["measure", "--cardiac", ed, es, "--out", str(tmp_path / "a.json"),
                 "--height", "180", "--weight", "80"]) == 0
    doc = json.loads((tmp_path / "a.json").read_text())
    assert doc["cardiac"][0]["lv_svi_ml_per_m2"] == pytest.approx((49 - 16) * 6 * VOXEL_ML / 2)
    assert "sqrt(height_cm x weight_kg / 3600)" in doc["methods"]["cardiac"]["bsa_m2"]
    # without them: no BSA column at all
    assert main(["measure", "--cardiac", ed, es, "--out", str(tmp_path / "b.csv")]) == 0
    assert not set(BSA_COLUMNS) & set(pd.read_csv(tmp_path / "b.cardiac.csv").columns)
    capsys.readouterr()


@pytest.mark.parametrize("extra,fragment", [
    (["--height", "1.8", "--weight", "80"], "--height: expected a height in cm between 30 and 250, got '1.8' "
                                            "(a height in metres? give centimetres)"),
    (["--height", "180", "--weight", "nan"], "--weight: expected a weight in kg between 1 and 400, got 'nan'"),
    (["--height", "180", "--weight", "-3"], "got '-3'"),
    (["--height", "180"], "expected both --height and --weight"),
    (["--height", "180", "--weight", "80", "--cardiac", "X_ED", "X_ES"], "expected --height/--weight with one "
                                                                         "patient's cardiac maps"),
])
def test_measure_cli_bad_values_one_line_exit_2_no_output(tmp_path, capsys, extra, fragment):
    ed, es = _pair(tmp_path)
    extra = [str(tmp_path / e) if e.startswith("X_") else e for e in extra]
    rc = main(["measure", "--cardiac", ed, es, "--out", str(tmp_path / "r.csv"), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and fragment in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.glob("r*"))


def test_measure_cli_height_needs_cardiac_inputs(tmp_path, capsys):
    ed, _ = _pair(tmp_path)
    assert main(["measure", ed, "--out", str(tmp_path / "r.csv"), "--height", "180", "--weight", "80"]) == 2
    assert "no --cardiac or --cine input" in capsys.readouterr().err and not (tmp_path / "r.csv").exists()


@pytest.mark.realdata
def test_acdc_patient_edvi_from_the_expert_map(tmp_path, capsys):
    """patient001's EDVi by `medcnn measure` = a numpy count on the map as nibabel reads it,
    divided by the Mosteller BSA of the dataset.json height and weight."""
    import nibabel as nib

    from medcnn._testing import require_shared_data

    root = require_shared_data("acdc")
    entry = next(e for e in json.loads((root / "dataset.json").read_text())["training"]
                 if e["patient"] == "patient001" and e["phase"] == "ED")
    img = nib.load(str(root / entry["label"]))
    edv_ml = float((np.asarray(img.dataobj) == 1).sum()) * float(np.prod(img.header.get_zooms()[:3])) / 1000
    bsa = math.sqrt(entry["height_cm"] * entry["weight_kg"] / 3600)
    out = tmp_path / "acdc.json"
    assert main(["measure", "--cardiac", str(root / "patient001_ED_gt.nii.gz"), str(root / "patient001_ES_gt.nii.gz"),
                 "--out", str(out), "--height", str(entry["height_cm"]), "--weight", str(entry["weight_kg"])]) == 0
    card = json.loads(out.read_text())["cardiac"][0]
    assert card["bsa_m2"] == pytest.approx(bsa, rel=1e-12)
    assert card["lv_edvi_ml_per_m2"] == pytest.approx(edv_ml / bsa, rel=1e-9)
    assert 40 < card["lv_edvi_ml_per_m2"] < 250        # a dilated LV (DCM), in mL/m^2
    capsys.readouterr()
