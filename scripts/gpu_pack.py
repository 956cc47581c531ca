"""Build the carry-over folder for ``make gpu-check`` on a bare, offline GPU machine.

The GPU machine has its own Python and torch (with numpy) and nothing else; only a few
tens of MB can be brought. This script, run here (a machine with medcnn's full
environment and the shared data), writes ``OUT`` (default ``out/gpu-pack``)::

    OUT/site/    monai, safetensors, pyyaml, nibabel, dynamic-network-architectures and
                 pytest, copied from this environment
                 without tests or caches (pure Python, or abi3 / optional extensions);
                 pytest brings pluggy, iniconfig, packaging and pygments
    OUT/src/     medcnn (with its shipped bundles), pyproject.toml, tests/conftest.py,
                 tests/test_gpu.py, tests/gpu_cases.py, benchmarks/bench_inference.py,
                 scripts/gpu_check.sh
    OUT/data/    test cases (``*.npz``: float32 arrays + geometry JSON) and an imported
                 nnU-Net fixture bundle; see :func:`build_data`
    OUT/README.txt

and prints every part's size. Nothing here is committed: ``out/`` is ignored.

Data (``--data-only`` writes just ``OUT/data``; ``tests/gpu_cases.py`` reads it):

* ``hippocampus.npz``: MSD hippocampus case 001 as it is (1 mm, ~35 x 50 x 35).
* ``brain.npz``: BRATS 2015 ``brats_2013_pat0003_1`` FLAIR + T1c, reoriented to RAS and
  resampled to the brain-tumour bundle's 2 mm grid (here, with scipy), then cropped to
  64 x 64 x 48 around the tumour: on the GPU machine that bundle's preprocessing has
  nothing left to resample, so it runs without scipy.
* ``cardiac_cine.npz``: ACDC patient001 ED and ES, cropped to 128 x 128 in plane around
  the heart, stacked as a 2-frame cine (frame times from the dataset's frame numbers).
* ``imported-nnunet/``: a tiny nnU-Net v2 result folder (``tests/nnunet_factory.py``,
  briefly trained on blobs) imported with ``medcnn models import``; ``nnunet_case.npz``
  holds its test image and, for machines without scipy (nnU-Net's preprocessing uses
  it), the image already preprocessed onto the model grid.

Run: ``python scripts/gpu_pack.py [OUT] [--data-only]`` (or ``bash scripts/gpu_pack.sh``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

#: packages copied into ``site/`` (import name -> why it is needed on the GPU machine)
SITE_PACKAGES = {
    "monai": "networks of every bundle (medcnn.models)",
    "safetensors": "bundle weights",
    "yaml": "configs (PyYAML; its C extension is optional and skipped if it does not load)",
    "nibabel": "NIfTI I/O (not needed by the core; for the training check)",
    "dynamic_network_architectures": "imported nnU-Net networks",
    "pytest": "runs the gpu-marked tests",
    "_pytest": "pytest",
    "pluggy": "pytest",
    "iniconfig": "pytest",
    "packaging": "pytest, nibabel",
    "py.py": "pytest",
    "pygments": "pytest (terminal output)",
}
#: Python < 3.11 also needs these for pytest (copied when this environment has them)
OPTIONAL_PACKAGES = ("tomli", "exceptiongroup")
SKIP_DIRS = {"__pycache__", "tests"}
BUDGET_SITE_MB = 40.0
BUDGET_DATA_MB = 10.0


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def _copy_tree(src: Path, dst: Path) -> None:
    if src.is_file():
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
        return
    shutil.copytree(src, dst, ignore=lambda d, names: [n for n in names if n in SKIP_DIRS or n.endswith(".pyc")])


def _npz(path: Path, **arrays) -> None:
    np.savez_compressed(path, **arrays)


def _save_volume(path: Path, vol, *, bundle: str, note: str, extra: dict | None = None) -> None:
    from medcnn.volume import Volume

    assert isinstance(vol, Volume)
    meta = {"geometry": vol.geometry.to_dict(), "leading_axis": vol.leading_axis, "bundle": bundle, "note": note,
            "frame_times_ms": list(vol.frame_times_ms) if vol.frame_times_ms is not None else None}
    _npz(path, image=np.asarray(vol.array, dtype=np.float32), meta=np.array(json.dumps(meta)),
         **(extra or {}))


def _box_around(centre, size, shape):
    lo = [int(min(max(round(c) - s // 2, 0), max(n - s, 0))) for c, s, n in zip(centre, size, shape)]
    return lo, [min(a + s, n) for a, s, n in zip(lo, size, shape)]


def build_data(out: Path, *, log=print) -> dict[str, int]:
    """Write the GPU-check cases into ``out``; returns ``{name: bytes}``."""
    from medcnn._testing import shared_data_path
    from medcnn.io import read_volume
    from medcnn.preprocess import Preprocessor, PreprocessSpec
    from medcnn.volume import Volume

    out.mkdir(parents=True, exist_ok=True)
    sizes: dict[str, int] = {}

    hip = shared_data_path("hippocampus", "imagesTr", "hippocampus_001.nii.gz")
    if hip is None:
        raise SystemExit("gpu_pack: the shared data (hippocampus) is not here: set MEDCNN_DATA")
    vol = read_volume(hip)
    _save_volume(out / "hippocampus.npz", Volume(vol.array.astype(np.float32), vol.geometry.with_source(None)),
                 bundle="hippocampus-mri", note="MSD Task04 hippocampus_001 (CC BY-SA 4.0), whole case")

    def tumour_crop(path: Path, chans, lab, *, bundle: str, note: str) -> None:
        """The channels on a RAS 2 mm grid (intensities as they are: the bundle normalises),
        cropped to 64 x 64 x 48 voxels around the label map's tumour."""
        spec = PreprocessSpec(orientation="RAS", target_spacing=(2.0, 2.0, 2.0), modalities=("none",) * len(chans),
                              image_order=3)
        arr, record = Preprocessor(spec).forward(chans)
        g = record.model_geometry
        centre_world = lab.geometry.index_to_world(np.argwhere(lab.array > 0).mean(axis=0))[0]
        lo, hi = _box_around(g.world_to_index(centre_world)[0], (64, 64, 48), g.shape)
        crop = Volume(arr, g, leading_axis="channel").crop(lo, hi)
        _save_volume(path, Volume(crop.array, crop.geometry.with_source(None), leading_axis="channel"),
                     bundle=bundle, note=note)

    case = shared_data_path("brats2015", "brats_2013_pat0003_1")
    tumour_crop(out / "brain.npz",
                [read_volume(case / f) for f in ("Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz")],
                read_volume(case / "OTMultiClass.nii.gz"), bundle="brain-tumour-mri",
                note="BRATS2015 brats_2013_pat0003_1 FLAIR+T1c (CC BY-NC-SA 3.0 CH), RAS 2 mm, 64x64x48 crop")
    b18 = shared_data_path("brats2018", "Brats18_CBICA_ABM_1")
    if b18 is not None:  # the four-sequence region model (raw scanner intensities; it z-scores inside the brain)
        cid = b18.name
        tumour_crop(out / "brain4.npz", [read_volume(b18 / f"{cid}_{s}.nii.gz") for s in ("flair", "t1", "t1ce", "t2")],
                    read_volume(b18 / f"{cid}_seg.nii.gz", kind="label"), bundle="brain-tumour-mri-4seq",
                    note="BraTS 2018 Brats18_CBICA_ABM_1 FLAIR, T1, T1ce, T2 (BraTS data terms: research use), "
                         "RAS 2 mm, 64x64x48 crop")

    acdc = shared_data_path("acdc")
    entries = {e["image"]: e for e in json.loads((acdc / "dataset.json").read_text())["training"]}
    frames = []
    for phase in ("ED", "ES"):
        v = read_volume(acdc / f"patient001_{phase}.nii.gz")
        frames.append((v, read_volume(acdc / f"patient001_{phase}_gt.nii.gz", kind="label"),
                       entries[f"patient001_{phase}.nii.gz"]))
    v0, gt0, _ = frames[0]
    ij = np.argwhere(gt0.array > 0).mean(axis=0)
    lo, hi = _box_around((ij[0], ij[1], 0), (128, 128, v0.geometry.shape[2]), v0.geometry.shape)
    lo[2], hi[2] = 0, v0.geometry.shape[2]
    crops = [Volume(v.array.astype(np.float32), v.geometry).crop(lo, hi) for v, _, _ in frames]
    n_frames = frames[0][2].get("n_frames") or 30
    times = [1000.0 * (e["frame"] - 1) / n_frames for _, _, e in frames]  # one cycle taken as 1 s
    cine = Volume.stack([Volume(c.array, crops[0].geometry.with_source(None)) for c in crops], leading_axis="time",
                        frame_times_ms=times)
    _save_volume(out / "cardiac_cine.npz", cine, bundle="cardiac-cine-mri",
                 note="ACDC patient001 ED and ES (research use), 128x128 in-plane crop, 2-frame cine")

    nn_dir = out / "imported-nnunet"
    if nn_dir.exists():
        shutil.rmtree(nn_dir)
    sys.path.insert(0, str(REPO / "tests"))
    try:
        from nnunet_factory import blob_image, make_nnunet_folder

        from medcnn.inference import Segmenter
        from medcnn.models.importers import import_model

        with tempfile.TemporaryDirectory() as tmp:
            folder = make_nnunet_folder(Path(tmp), patch=(32, 32, 32), spacing=(1.0, 1.0, 1.5), n_classes=3,
                                        mirror=(0, 1, 2), seed=0)
            import_model(folder, nn_dir, name="gpu-check nnU-Net fixture")
        img, _lab = blob_image((56, 48, 40), seed=7, n_classes=3)
        from medcnn.volume import Geometry

        geom = Geometry((56, 48, 40), (1.0, 1.0, 1.5), (12.0, -30.0, 4.0))
        nn_vol = Volume(img.astype(np.float32), geom)
        seg = Segmenter.from_bundle(nn_dir, device="cpu", precision="fp32")
        x, rec = Preprocessor(seg.preprocess_spec).forward(nn_vol)
        _save_volume(out / "nnunet_case.npz", nn_vol, bundle="imported-nnunet",
                     note="synthetic blobs for the imported nnU-Net fixture",
                     extra={"model_grid": x.astype(np.float32),
                            "model_spacing": np.asarray(rec.model_geometry.spacing, dtype=np.float64)})
    finally:
        sys.path.remove(str(REPO / "tests"))

    for p in sorted(out.iterdir()):
        sizes[p.name] = _size(p)
    return sizes


def build_pack(out: Path, *, log=print) -> int:
    import importlib.util

    if out.exists():
        shutil.rmtree(out)
    site = out / "site"
    site.mkdir(parents=True)
    rows = []
    for name in list(SITE_PACKAGES) + list(OPTIONAL_PACKAGES):
        spec = importlib.util.find_spec(name.removesuffix(".py"))
        if spec is None or spec.origin is None:
            if name in OPTIONAL_PACKAGES:
                rows.append((f"site/{name}", 0, "absent here: the GPU machine needs Python >= 3.11 for pytest"))
                continue
            raise SystemExit(f"gpu_pack: expected package {name!r} in this environment, got none")
        src = Path(spec.origin)
        src = src.parent if src.name == "__init__.py" else src
        _copy_tree(src, site / src.name)
        if name == "yaml":  # its C extension is built for this Python only; yaml falls back to pure Python
            for ext in (site / "yaml").glob("_yaml*.so"):
                ext.unlink()
        rows.append((f"site/{src.name}", _size(site / src.name), SITE_PACKAGES.get(name, "pytest on Python 3.10")))
    src = out / "src"
    for rel in ("medcnn", "pyproject.toml", "tests/conftest.py", "tests/budget_plugin.py", "tests/test_gpu.py",
                "tests/test_gpu_readiness.py",
                "tests/gpu_cases.py",
                "tests/nnunet_factory.py", "benchmarks/bench_inference.py", "scripts/gpu_check.sh",
                "scripts/gpu_figures.py"):
        _copy_tree(REPO / rel, src / rel)
    n_bundles = len(list((src / "medcnn" / "bundles").glob("*/bundle.json")))
    rows.append(("src (medcnn + tests + benchmark)", _size(src), f"medcnn source with its {n_bundles} shipped bundles"))
    data_sizes = build_data(out / "data", log=log)
    for name, n in data_sizes.items():
        rows.append((f"data/{name}", n, "test case"))
    (out / "README.txt").write_text(
        "medcnn GPU check pack. On the GPU machine (its own python3 with torch and numpy):\n\n"
        "    bash src/scripts/gpu_check.sh [RESULTS_DIR]\n\n"
        "prints the GPU, driver/CUDA and torch versions, runs the gpu-marked tests and the\n"
        "inference benchmark, and writes RESULTS_DIR/gpu-check.md (default: $OUT or ./gpu-check-results).\n"
        "Exit codes: 0 passed, 1 a check failed, 2 environment incomplete, 3 no CUDA GPU.\n")
    site_total = _size(site)
    data_total = _size(out / "data")
    width = max(len(r[0]) for r in rows)
    for name, n, why in rows:
        log(f"{name:<{width}}  {_mb(n):>9}  {why}")
    log(f"{'site total':<{width}}  {_mb(site_total):>9}  (budget {BUDGET_SITE_MB:.0f} MB)")
    log(f"{'data total':<{width}}  {_mb(data_total):>9}  (budget {BUDGET_DATA_MB:.0f} MB)")
    log(f"{'pack total':<{width}}  {_mb(_size(out)):>9}  {out}")
    if site_total > BUDGET_SITE_MB * 2**20 or data_total > BUDGET_DATA_MB * 2**20:
        log("gpu_pack: over budget")
        return 1
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", default=str(REPO / "out" / "gpu-pack"))
    ap.add_argument("--data-only", action="store_true", help="write only the test cases, into OUT")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.data_only:
        sizes = build_data(out)
        for name, n in sizes.items():
            print(f"{name:<24} {_mb(n):>9}")
        print(f"{'total':<24} {_mb(sum(sizes.values())):>9}  {out}")
        return 0
    return build_pack(out)


if __name__ == "__main__":
    sys.exit(main())
