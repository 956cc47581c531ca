"""Whole-slice inference of a 2D cine model: agreement with its windowed inference, and speed.

A 2D model trained on patches is normally run with overlapping sliding windows (the bundle's
``roi_size``, Gaussian blending). Running the network once per slice on the whole slice,
zero-padded to a multiple of 16 pixels, is faster (one window, no blending) but only safe if
the network gives the same labels there. For each volume this prints

* the share of voxels whose label is equal in both modes (the acceptance figure: >= 99.5 %),
* the Dice between the two modes' foreground (every labelled structure together; a stricter
  figure, since background dominates the voxel count), and per structure,
* the median wall time of each mode (baseline: windowed inference, the bundle's default).

With ``--record`` the summary is written into the bundle's ``bundle.json`` as ``whole_slice``
(outside the spec hash: it measures the spec, it does not change it); a 2D bundle whose worst
volume reaches 99.5 % then runs whole slices by default
(:func:`medcnn.models.bundle.whole_slice_default`), otherwise only with ``--whole-slice``.

Usage::

    .venv/bin/python benchmarks/bench_whole_slice.py --model medcnn/bundles/cardiac-cine-mri \
        [--data ../shared/data] [--dataset sunnybrook/dataset.json] [--repeats 1] [--record]

The images are the cine frames listed in the dataset JSON (Sunnybrook's ED and ES frames by
default: scanners the ACDC training never saw). Nothing is trained or tuned on them here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def agreement(a: np.ndarray, b: np.ndarray, labels: list[int]) -> dict[str, float]:
    fa, fb = a > 0, b > 0
    out = {"voxels_equal_percent": 100.0 * float((a == b).mean()),
           "foreground_dice": 2.0 * float((fa & fb).sum()) / max(1, int(fa.sum() + fb.sum()))}
    for k in labels:
        pa, pb = a == k, b == k
        s = int(pa.sum() + pb.sum())
        out[f"dice_{k}"] = 2.0 * float((pa & pb).sum()) / s if s else 1.0
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(REPO / "medcnn" / "bundles" / "cardiac-cine-mri"))
    ap.add_argument("--data", default=os.environ.get("MEDCNN_DATA", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--dataset", default="sunnybrook/dataset.json")
    ap.add_argument("--repeats", type=int, default=1, help="timed repeats per mode (median)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", help="also write the per-volume results here")
    ap.add_argument("--limit", type=int, default=None, help="only the first N volumes (smoke test)")
    ap.add_argument("--record", action="store_true",
                    help="write the summary into the bundle's bundle.json as 'whole_slice'")
    args = ap.parse_args(argv)

    import torch

    from medcnn.inference import Segmenter
    from medcnn.io import read_volume

    if args.threads:
        torch.set_num_threads(args.threads)
    ds_path = Path(args.data) / args.dataset
    entries = json.loads(ds_path.read_text())["training"][: args.limit or None]
    windowed = Segmenter.from_bundle(args.model, device="cpu", precision="fp32", threads=args.threads or "auto",
                                     whole_slice=False)
    whole = Segmenter.from_bundle(args.model, device="cpu", precision="fp32", threads=args.threads or "auto",
                                  whole_slice=True)
    labels = sorted(k for k in windowed.labels if k) if windowed.labels else [1]
    print(f"model {Path(args.model).name} (roi {list(windowed.roi_size)}, overlap {windowed.overlap}); "
          f"{len(entries)} volumes of {args.dataset}; torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    from medcnn.hardware import cpu_facts
    print(f"CPU: {cpu_facts()}")
    rows = []
    for e in entries:
        vol = read_volume(ds_path.parent / e["image"], require_3d=True)
        times: dict[str, list[float]] = {"windowed": [], "whole": []}
        preds = {}
        for _ in range(max(1, args.repeats)):
            for name, seg in (("windowed", windowed), ("whole", whole)):
                t = time.perf_counter()
                preds[name] = np.asarray(seg.predict(vol).labels.array)
                times[name].append(time.perf_counter() - t)
        row = {"case": Path(e["image"]).name.split(".")[0], "shape": list(vol.array.shape),
               "whole_roi": list(whole._window_layout(vol.array.shape, vol.spacing)[1][1:]),  # the window it ran
               **agreement(preds["windowed"], preds["whole"], labels),
               "windowed_s": statistics.median(times["windowed"]), "whole_s": statistics.median(times["whole"])}
        rows.append(row)
        print(f"{row['case']:>16} {str(row['shape']):>16} equal {row['voxels_equal_percent']:7.3f} %  "
              f"fg Dice {row['foreground_dice']:.4f}  " + " ".join(f"{k}={row[f'dice_{k}']:.3f}" for k in labels)
              + f"  windowed {row['windowed_s']:.2f} s  whole {row['whole_s']:.2f} s")
    eq = [r["voxels_equal_percent"] for r in rows]
    fg = [r["foreground_dice"] for r in rows]
    speed = statistics.median(r["windowed_s"] / r["whole_s"] for r in rows)
    print(f"\nvoxels with equal labels: min {min(eq):.3f} %, mean {statistics.mean(eq):.3f} % (target >= 99.5 %)")
    print(f"foreground Dice windowed vs whole slice: min {min(fg):.4f}, mean {statistics.mean(fg):.4f}")
    print(f"whole-slice speed-up vs windowed (median over volumes): x{speed:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if args.record:
        record_in_bundle(Path(args.model), rows, repeats=args.repeats,
                         dataset=args.dataset + (f" (its first {len(rows)} volumes)" if args.limit else ""))
    return 0


def record_in_bundle(bundle: Path, rows: list[dict], *, dataset: str, repeats: int) -> dict:
    """Write the summary into ``bundle/bundle.json`` as ``whole_slice`` (key order kept)."""
    import medcnn
    from medcnn.hardware import cpu_facts
    from medcnn.models.bundle import WHOLE_SLICE_MIN_AGREEMENT_PERCENT, whole_slice_default

    eq = [r["voxels_equal_percent"] for r in rows]
    rec = {"method": "benchmarks/bench_whole_slice.py: each volume predicted with overlapping roi_size windows "
                     "and once per whole slice (zero-padded to the network's divisor); share of voxels with "
                     "equal labels",
           "dataset": dataset, "volumes": len(rows),
           "voxels_equal_percent_min": round(min(eq), 3), "voxels_equal_percent_mean": round(statistics.mean(eq), 3),
           "foreground_dice_min": round(min(r["foreground_dice"] for r in rows), 4),
           "speedup_median": round(statistics.median(r["windowed_s"] / r["whole_s"] for r in rows), 2),
           "timing": f"median of {max(1, repeats)} run(s); CPU: {cpu_facts()}",
           "default_rule": f">= {WHOLE_SLICE_MIN_AGREEMENT_PERCENT} % in every volume",
           "medcnn_version": medcnn.__version__}
    path = bundle / "bundle.json"
    meta = json.loads(path.read_text())
    meta["whole_slice"] = rec
    rec["default"] = whole_slice_default(meta)
    path.write_text(json.dumps(meta, indent=2) + "\n")
    print(f"recorded in {path}: whole slices {'on' if rec['default'] else 'off'} by default")
    return rec


if __name__ == "__main__":
    sys.exit(main())
