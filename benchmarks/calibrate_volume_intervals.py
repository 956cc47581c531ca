"""Calibration of the volume intervals: how often does the reference volume fall inside?

For each shipped bundle, on the held-out cases recorded in its ``bundle.json``
(``provenance.training.val_cases``), every predicted structure gets its volume interval
(``Segmenter.predict(..., volume_intervals=True)``, see :mod:`medcnn.measure.intervals`),
without and with test-time augmentation (the bundle's trained mirror axes). The reference
volume is the expert label's voxel count x voxel volume on the same grid. Printed per bundle,
structure and TTA setting:

* ``n``: structures measured (cases x labels);
* ``coverage``: fraction with ``volume_low_ml <= reference <= volume_high_ml``;
* ``median width %``: median of (high - low) / volume_ml;
* ``median |error| %``: median of |volume_ml - reference| / reference;
* ``soft closer``: fraction of structures whose soft volume is closer to the reference than
  the voxel-count volume.

Cardiac (Sunnybrook): the experts left basal/apical slices uncontoured, so predictions and
intervals are computed on the contoured slices only (the scan is cropped to them before
prediction; the model is 2D, slice by slice, so only its 3D largest-component postprocessing
can see the crop). The brain-tumour reference is the union of the BRATS labels (whole tumour).

Usage::

    python benchmarks/calibrate_volume_intervals.py [--bundles hippocampus-mri ...] [--max-cases N]
        [--no-tta] [--markdown]

Reads the shared data through ``MEDCNN_DATA`` or ``../shared/data``; takes ~1-2 min on a
2-core CPU with one torch thread.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medcnn._testing import shared_data_dir  # noqa: E402

BUNDLES = ("hippocampus-mri", "cardiac-lv-cine-mri", "brain-tumour-mri")


def _cases(name: str, val_cases: list[str], data: Path) -> list[tuple[str, list[Path], Path]]:
    """(case id, channel files, reference label map) of a bundle's held-out cases."""
    out = []
    for c in val_cases:
        if name == "hippocampus-mri":
            out.append((c, [data / "hippocampus" / "imagesTr" / f"{c}.nii.gz"],
                        data / "hippocampus" / "labelsTr" / f"{c}.nii.gz"))
        elif name == "cardiac-lv-cine-mri":
            stem = c.removesuffix("_gt")
            out.append((stem, [data / "sunnybrook" / "nifti" / f"{stem}.nii.gz"],
                        data / "sunnybrook" / "nifti" / f"{stem}_gt.nii.gz"))
        else:
            folder = data / "brats2015" / c.removesuffix("_OTMultiClass")
            out.append((folder.name, [folder / "Flair_subtrMeanDivStd.nii.gz", folder / "T1c_subtrMeanDivStd.nii.gz"],
                        folder / "OTMultiClass.nii.gz"))
    return out


def _contoured(scan, ref):
    """Crop scan and reference to the slices (coarsest axis) the expert contoured."""
    from medcnn.measure import slice_axis

    ax = slice_axis(ref.geometry)
    other = tuple(a for a in range(3) if a != ax)
    has = np.flatnonzero(np.asarray(ref.array).any(axis=other))
    lo, hi = int(has.min()), int(has.max()) + 1
    start, stop = [0, 0, 0], list(ref.shape)
    start[ax], stop[ax] = lo, hi
    return scan.crop(start, stop), ref.crop(start, stop)


def run(names, *, max_cases: int | None, tta_modes) -> list[dict]:
    from medcnn.inference import Segmenter
    from medcnn.io import read_volume
    from medcnn.models import load_bundle

    data = shared_data_dir()
    if data is None:
        print("shared data not found (set MEDCNN_DATA or put it at ../shared/data)", file=sys.stderr)
        raise SystemExit(2)
    rows = []
    for name in names:
        bundle = load_bundle(name)
        cases = _cases(name, [str(c) for c in bundle.provenance["training"]["val_cases"]], data)[:max_cases]
        for tta in tta_modes:
            seg = Segmenter.from_bundle(bundle, device="cpu", precision="fp32", tta_axes="trained" if tta else ())
            t0 = time.perf_counter()
            for cid, files, ref_path in cases:
                vols = [read_volume(f, require_3d=True) for f in files]
                ref = read_volume(ref_path, kind="label")
                if name == "cardiac-lv-cine-mri":
                    vols[0], ref = _contoured(vols[0], ref)
                ref_arr = np.asarray(ref.array)
                if name == "brain-tumour-mri":
                    ref_arr = (ref_arr > 0).astype(np.uint8)
                pred = seg.predict(vols[0] if len(vols) == 1 else vols, volume_intervals=True)
                for iv in pred.volume_intervals:
                    reference = np.count_nonzero(ref_arr == iv["label"]) * ref.geometry.voxel_volume_ml
                    rows.append({"bundle": name, "tta": tta, "case": cid, "label": iv["label_name"],
                                 "reference_ml": reference, **{k: v for k, v in iv.items() if k.endswith("_ml")}})
            print(f"{name} tta={'on' if tta else 'off'}: {len(cases)} cases in {time.perf_counter() - t0:.1f} s",
                  file=sys.stderr)
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    keys = sorted({(r["bundle"], r["label"], r["tta"]) for r in rows}, key=lambda k: (BUNDLES.index(k[0]), k[1], k[2]))
    for b, lab, tta in keys:
        sel = [r for r in rows if (r["bundle"], r["label"], r["tta"]) == (b, lab, tta) and r["reference_ml"] > 0]
        if not sel:
            continue
        inside = [r["volume_low_ml"] <= r["reference_ml"] <= r["volume_high_ml"] for r in sel]
        width = [(r["volume_high_ml"] - r["volume_low_ml"]) / r["volume_ml"] * 100 for r in sel if r["volume_ml"] > 0]
        err = [abs(r["volume_ml"] - r["reference_ml"]) / r["reference_ml"] * 100 for r in sel]
        soft = [abs(r["volume_soft_ml"] - r["reference_ml"]) < abs(r["volume_ml"] - r["reference_ml"]) for r in sel]
        out.append({"bundle": b, "structure": lab, "tta": "on" if tta else "off", "n": len(sel),
                    "coverage": sum(inside) / len(sel), "median_width_percent": statistics.median(width),
                    "median_abs_error_percent": statistics.median(err), "soft_closer": sum(soft) / len(sel)})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundles", nargs="+", default=list(BUNDLES), choices=BUNDLES)
    ap.add_argument("--max-cases", type=int, default=None, help="at most N held-out cases per bundle")
    ap.add_argument("--no-tta", action="store_true", help="only without test-time augmentation")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown (docs/volume_intervals.md)")
    args = ap.parse_args(argv)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    rows = run(args.bundles, max_cases=args.max_cases, tta_modes=(False,) if args.no_tta else (False, True))
    table = summarise(rows)
    head = ["bundle", "structure", "TTA", "n", "coverage", "median width %", "median |error| %", "soft closer"]
    lines = []
    for t in table:
        lines.append([t["bundle"], t["structure"], t["tta"], str(t["n"]), f"{t['coverage']:.2f}",
                      f"{t['median_width_percent']:.1f}", f"{t['median_abs_error_percent']:.1f}",
                      f"{t['soft_closer']:.2f}"])
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for ln in lines:
            print("| " + " | ".join(ln) + " |")
    else:
        widths = [max(len(h), *(len(ln[i]) for ln in lines)) for i, h in enumerate(head)]
        print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
        for ln in lines:
            print("  ".join(v.ljust(w) for v, w in zip(ln, widths)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
