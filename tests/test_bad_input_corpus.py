"""The bad-input corpus through every CLI command (issue: robustness).

For each damaged input: exit code 2, exactly one error line per failed case naming the file
and what was expected, no traceback, and no output file for that case.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from bad_inputs import IMAGE_CASES, INTENSITY_CASES
from test_batch_support import blob_scan, make_bundle

from medcnn.cli import main
from medcnn.io import write_volume
from medcnn.volume import Geometry, Volume


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("corpus") / "tiny")


def _run(capsys, argv):
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _error_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if "error" in ln or "failed:" in ln]


@pytest.mark.parametrize("case", sorted(IMAGE_CASES))
def test_info_and_segment_refuse_bad_images(tmp_path, capsys, bundle, case):
    make, fragment = IMAGE_CASES[case]
    (tmp_path / "in").mkdir()
    path = make(tmp_path / "in")
    rc, _, err = _run(capsys, ["info", str(path)])
    assert rc == 2 and fragment in err and str(path) in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1

    out = tmp_path / "seg"
    rc, _, err = _run(capsys, ["segment", str(path), "--model", str(bundle), "--out", str(out)])
    assert rc == 2 and fragment in err and str(path) in err and "Traceback" not in err
    assert len([ln for ln in err.splitlines() if fragment in ln]) == 1
    assert _files(out) == []  # no partial or empty label map


@pytest.mark.parametrize("case", sorted(INTENSITY_CASES))
def test_segment_refuses_unusable_intensities(tmp_path, capsys, bundle, case):
    make, fragment = INTENSITY_CASES[case]
    path = make(tmp_path)
    out = tmp_path / "seg"
    rc, _, err = _run(capsys, ["segment", str(path), "--model", str(bundle), "--out", str(out)])
    assert rc == 2 and fragment in err and str(path) in err and "Traceback" not in err
    assert _files(out) == []


def test_run_batch_keeps_going_past_every_bad_image(tmp_path, capsys, bundle):
    good = write_volume(blob_scan(), tmp_path / "good.nii.gz")
    bad = [IMAGE_CASES[c][0](_mk(tmp_path / c)) for c in ("truncated_gzip", "2d", "zero_spacing", "dicom_missing_slice")]
    out = tmp_path / "out"
    rc, stdout, err = _run(capsys, ["run", str(good), *map(str, bad), "--model", str(bundle), "--out", str(out),
                                    "--no-progress", "--no-figures"])
    assert rc == 2 and "1 ok, 4 failed" in stdout and "Traceback" not in err
    assert not [p for p in _files(out) if ".tmp" in p.name]
    labelmaps = [p for p in _files(out) if p.name.endswith((".nii.gz", ".nii")) and "good" not in str(p)]
    assert labelmaps == []  # only the good case produced a label map


def _mk(d: Path) -> Path:
    d.mkdir()
    return d


# ---------------------------------------------------------------- label maps
def _labelmap(tmp_path, name, arr, geometry=Geometry((8, 8, 4), (1, 1, 2))):
    return write_volume(Volume(arr, geometry), tmp_path / name)


BASE = np.zeros((8, 8, 4), np.uint8)
BASE[2:6, 2:6, 1:3] = 1


@pytest.mark.parametrize("name, arr, extra, fragment", [
    ("float.nii.gz", BASE.astype(np.float32) + 0.5, [], "expected integer-valued labels"),
    ("negative.nii.gz", BASE.astype(np.int16) - 1, [], "expected non-negative labels"),
    ("unexpected.nii.gz", BASE * 7, ["--labels", "TABLE"], "unexpected label(s) 7"),
    ("cine.nii.gz", np.stack([BASE] * 3), [], "expected a 3D label map"),
])
def test_measure_bad_label_maps_become_error_rows(tmp_path, capsys, name, arr, extra, fragment):
    table = tmp_path / "labels.json"
    table.write_text(json.dumps({"1": "tumour"}))
    extra = [str(table) if e == "TABLE" else e for e in extra]
    if name == "cine.nii.gz":
        path = write_volume(Volume(arr, Geometry((8, 8, 4), (1, 1, 2)), leading_axis="time"), tmp_path / name)
    else:
        path = _labelmap(tmp_path, name, arr)
    good = _labelmap(tmp_path, "good.nii.gz", BASE)
    out = tmp_path / "report.csv"
    rc, _, err = _run(capsys, ["measure", str(good), str(path), *extra, "--out", str(out)])
    assert rc == 2 and "Traceback" not in err
    import pandas as pd

    df = pd.read_csv(out)
    bad_rows = df[df["case"] == Path(name).name.split(".")[0]]
    msg = bad_rows["error"].iloc[0]
    assert len(bad_rows) == 1 and fragment in msg and path.name in msg and str(tmp_path) not in msg  # no folders
    assert (df[df["case"] == "good"]["volume_ml"] > 0).all()


def test_cardiac_unknown_labels_are_refused(tmp_path, capsys):
    ed = _labelmap(tmp_path, "ed.nii.gz", BASE * 5)
    es = _labelmap(tmp_path, "es.nii.gz", BASE)
    rc, _, err = _run(capsys, ["measure", "--cardiac", str(ed), str(es), "--out", str(tmp_path / "c.csv")])
    assert rc == 2
    import pandas as pd

    card = pd.read_csv(tmp_path / "c.cardiac.csv")
    assert "unexpected label(s) 5" in card["error"].iloc[0]


def test_validate_geometry_mismatch_names_both(tmp_path, capsys):
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    _labelmap(tmp_path / "pred", "a.nii.gz", BASE)
    _labelmap(tmp_path / "ref", "a.nii.gz", BASE, Geometry((8, 8, 4), (1, 1, 2.5)))
    rc, _, err = _run(capsys, ["validate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"),
                               "--out", str(tmp_path / "val")])
    assert rc == 2 and "Traceback" not in err
    assert str(tmp_path / "pred" / "a.nii.gz") in err and str(tmp_path / "ref" / "a.nii.gz") in err
    assert "spacing (1, 1, 2.5) vs (1, 1, 2)" in err or "spacing (1, 1, 2) vs (1, 1, 2.5)" in err


# ---------------------------------------------------------------- model bundles
class _Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _copy_bundle(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _tampered(src, d):
    b = _copy_bundle(src, d / "tampered")
    w = b / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-10] ^= 0xFF
    w.write_bytes(bytes(data))
    return b, "sha256"


def _missing_key(src, d):
    b = _copy_bundle(src, d / "missingkey")
    meta = json.loads((b / "bundle.json").read_text())
    del meta["network"]
    (b / "bundle.json").write_text(json.dumps(meta))
    return b, "network"


def _wrong_shapes(src, d):
    import torch

    from medcnn.models import build_network, save_bundle
    from medcnn.preprocess import PreprocessSpec

    spec = {"name": "unet", "spatial_dims": 3, "in_channels": 1, "out_channels": 3, "channels": [4, 8],
            "strides": [2], "num_res_units": 0}
    bigger = {**spec, "channels": [6, 8]}
    net = build_network(bigger)
    b = save_bundle(net, d / "wrongshape-src", network=bigger, preprocess=PreprocessSpec(orientation=None),
                    roi_size=(16, 16, 8), labels={0: "bg", 1: "a", 2: "b"}, channels=["MRI"])
    meta = json.loads((b / "bundle.json").read_text())
    meta["network"] = spec  # weights no longer fit the declared network
    (b / "bundle.json").write_text(json.dumps(meta))
    return b, "shape"


def _pickled(src, d):
    marker = d / "pwned"
    p = d / "model.pt"
    p.write_bytes(pickle.dumps({"state_dict": _Evil(str(marker))}))
    return p, "pickle"


def _pickled_in_bundle(src, d):
    marker = d / "pwned"
    b = _copy_bundle(src, d / "pickled-bundle")
    (b / "model.safetensors").write_bytes(pickle.dumps(_Evil(str(marker))))
    return b, "pickle"


@pytest.mark.parametrize("maker", [_tampered, _missing_key, _wrong_shapes, _pickled, _pickled_in_bundle],
                         ids=lambda f: f.__name__.strip("_"))
def test_bad_bundles_are_refused_without_running_code(tmp_path, capsys, bundle, maker):
    bad, fragment = maker(bundle, tmp_path)
    scan = write_volume(blob_scan(), tmp_path / "scan.nii.gz")
    out = tmp_path / "seg"
    rc, _, err = _run(capsys, ["segment", str(scan), "--model", str(bad), "--out", str(out)])
    assert rc == 2 and "Traceback" not in err
    assert fragment.lower() in err.lower() and str(bad) in err
    assert _files(out) == []
    assert not (tmp_path / "pwned").exists()  # the pickle's payload never ran


# ---------------------------------------------------------------- deterministic mode
def test_deterministic_runs_give_identical_label_bytes(tmp_path, capsys, bundle):
    scan = write_volume(blob_scan(shape=(40, 36, 10)), tmp_path / "scan.nii.gz")
    outs = []
    for k in range(2):
        out = tmp_path / f"run{k}"
        rc, _, _ = _run(capsys, ["run", str(scan), "--model", str(bundle), "--out", str(out), "--deterministic",
                                 "--no-progress", "--no-figures"])
        assert rc == 0
        maps = [p for p in _files(out) if p.name.endswith(".nii.gz")]
        assert len(maps) == 1
        outs.append(maps[0])
    import gzip

    assert gzip.decompress(outs[0].read_bytes()) == gzip.decompress(outs[1].read_bytes())
    report = json.loads(next(p for p in _files(tmp_path / "run0") if p.name == "report.json").read_text())
    assert "deterministic" in json.dumps(report)


# ---------------------------------------------------------------- memory guard
def test_memory_guard_refuses_before_running(tmp_path, capsys, bundle):
    scan = write_volume(blob_scan(), tmp_path / "scan.nii.gz")
    out = tmp_path / "seg"
    rc, _, err = _run(capsys, ["segment", str(scan), "--model", str(bundle), "--out", str(out),
                               "--memory-limit-gb", "0.00001"])
    assert rc == 2 and "Traceback" not in err
    assert "memory" in err.lower() and "expected" in err and str(scan) in err
    assert _files(out) == []
