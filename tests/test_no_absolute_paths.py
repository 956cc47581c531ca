"""No absolute or machine-specific path in a shipped bundle or in a report.

* every file under ``medcnn/bundles/`` (bundle.json text; weights skipped only if binary);
* every output of ``medcnn segment``, ``run`` (with ``--dicom``), ``measure`` and ``validate``
  written without ``--include-paths`` -- CSV, JSON, HTML, provenance, label maps (gzip
  decompressed, NIfTI header extensions included), DICOM -- contains neither the temporary
  folder, the home folder, the working directory, ``/work``, the model's absolute path, nor
  anything shaped like an absolute path (``/a/b``, ``C:\\a``);
* a bundle written by ``medcnn train --export`` records its cache and data paths relative to
  the training config (or not at all) and its command line without absolute paths.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from dicom_factory import write_series
from test_batch_support import blob_scan, make_bundle
from medcnn.cli import main
from medcnn.io import write_volume
from medcnn.volume import Volume

REPO = Path(__file__).resolve().parents[1]
BUNDLES = REPO / "medcnn" / "bundles"
#: an absolute POSIX path of at least two components, or a Windows drive path
ABSOLUTE = re.compile(r"""(?:^|[\s"'=(,;:\[])(/[A-Za-z0-9._~^-]+(?:/[A-Za-z0-9._~^-]+)+)|\b([A-Za-z]:\\[^\s"']+)""")


def _texts(folder: Path):
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.suffix in (".png", ".safetensors"):
            continue
        data = p.read_bytes()
        if p.name.endswith(".gz"):
            data = gzip.decompress(data)
        yield p, data.decode("latin-1")


def absolute_paths(text: str, *, needles=()) -> list[str]:
    found = [m.group(1) or m.group(2) for m in ABSOLUTE.finditer(text)]
    found += [n for n in needles if n and n in text]
    return found


def machine_needles(*extra) -> list[str]:
    home = str(Path.home())
    return [n for n in {home if home != "/" else "", os.getcwd(), str(REPO), "/work", *map(str, extra)} if n]


def test_shipped_bundles_hold_no_absolute_path():
    files = [p for p in BUNDLES.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"bundle.json", "model.safetensors"} and len(files) >= 8
    for p, text in _texts(BUNDLES):
        assert not absolute_paths(text, needles=machine_needles()), p.relative_to(REPO)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("abs") / "tiny-cardiac")


def test_reports_hold_no_absolute_path(bundle, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for i in range(2):
        write_volume(blob_scan(seed=i, radius=5.0 + i), inputs / f"scan{i}.nii.gz")
    write_series(inputs / "dicom1", n_slices=6, rows=20, cols=18, spacing=(1.4, 1.3), dz=6.0)
    (inputs / "broken.nii.gz").write_bytes(b"\x1f\x8b\x08\x00 truncated")  # error messages name files
    outs = {}
    outs["segment"] = tmp_path / "seg"
    main(["segment", str(inputs / "scan0.nii.gz"), str(inputs / "dicom1"), str(inputs / "broken.nii.gz"),
          "--model", str(bundle), "--out", str(outs["segment"]), "--dicom", "--device", "cpu"])
    outs["run"] = tmp_path / "run"
    manifest = tmp_path / "cases.csv"
    manifest.write_text(f"case_id,image\ns0,{inputs / 'scan0.nii.gz'}\nd1,{inputs / 'dicom1'}\n"
                        f"b,{inputs / 'broken.nii.gz'}\n")
    main(["run", str(manifest), "--model", str(bundle), "--out", str(outs["run"]), "--no-progress", "--device",
          "cpu", "--dicom"])
    labels, ref = inputs / "labels", inputs / "ref"
    labels.mkdir()
    ref.mkdir()
    lab = blob_scan(seed=3)
    arr = (lab.array > 350).astype(np.uint8)
    write_volume(Volume(arr, lab.geometry, "label"), labels / "scan0.nii.gz")
    write_volume(Volume(np.roll(arr, 1, axis=0), lab.geometry, "label"), ref / "scan0.nii.gz")
    outs["measure"] = tmp_path / "measure"
    main(["measure", str(labels / "scan0.nii.gz"), str(inputs / "broken.nii.gz"),
          "--out", str(outs["measure"] / "report.csv")])
    main(["measure", str(labels / "scan0.nii.gz"), "--out", str(outs["measure"] / "report.json")])
    main(["measure", str(labels / "scan0.nii.gz"), "--out", str(outs["measure"] / "report.html")])
    outs["validate"] = tmp_path / "validate"
    main(["validate", "--pred", str(labels), "--ref", str(ref), "--out", str(outs["validate"]), "--bootstrap", "20"])
    needles = machine_needles(tmp_path, tmp_path.resolve(), bundle, bundle.resolve(), inputs)
    kinds = set()
    for name, out in outs.items():
        n = 0
        for p, text in _texts(out):
            n += 1
            kinds.add(p.suffix)
            assert not absolute_paths(text, needles=needles), f"{name}: {p.relative_to(out)}"
        assert n >= 1, name
    assert {".csv", ".json", ".html", ".dcm", ".gz"} <= kinds


def test_train_export_records_relative_paths(tmp_path, monkeypatch):
    """The writer: ``medcnn train`` given absolute --config / --data / --cache / --out / --export
    records them relative (config values to the config's folder, the command line to the folder
    it ran in); the exported bundle verifies (weights hash) and holds no absolute path."""
    import sys

    from test_train_loop import make_dataset
    from medcnn.models import load_bundle

    root = tmp_path / "project"
    cfg = make_dataset(root)
    monkeypatch.chdir(root)
    args = ["train", "--config", str(cfg), "--data", str(root), "--cache", str(tmp_path / "cache"), "--out",
            str(root / "runs" / "t"), "--max-steps", "2", "--no-progress", "--export", str(root / "exported")]
    monkeypatch.setattr(sys, "argv", ["medcnn", *args])
    assert main(args) == 0
    b = load_bundle(root / "exported")  # verifies the weights against bundle.json
    training = b.provenance["training"]
    assert training["config"]["data"]["cache_dir"] == "../cache"  # relative to tiny.yaml's folder
    assert training["command"].startswith("medcnn train --config tiny.yaml --data . --cache ../cache")
    assert (tmp_path / "cache").is_dir()  # the cache went where it was asked to
    needles = machine_needles(tmp_path, tmp_path.resolve(), root)
    for p, text in _texts(root / "exported"):
        assert not absolute_paths(text, needles=needles), p.name
    # an absolute cache_dir written in the config itself: recorded relative to the config too
    abs_cfg = root / "abs.yaml"
    abs_cfg.write_text(cfg.read_text().replace("  dataset: data/dataset.json",
                                               f"  dataset: data/dataset.json\n  cache_dir: {tmp_path / 'cache2'}"))
    args = ["train", "--config", str(abs_cfg), "--out", str(root / "runs" / "a"), "--max-steps", "2", "--no-progress"]
    monkeypatch.setattr(sys, "argv", ["medcnn", *args])
    assert main(args) == 0
    b = load_bundle(root / "runs" / "a" / "bundle")
    assert b.provenance["training"]["config"]["data"]["cache_dir"] == "../cache2" and (tmp_path / "cache2").is_dir()
    for p, text in _texts(root / "runs" / "a" / "bundle"):
        assert not absolute_paths(text, needles=needles), p.name
