"""A CT-sized volume (512 x 512 x 300) with many classes completes in bounded memory.

``Segmenter.predict`` runs the whole path (CT window + z-score preprocessing, sliding
windows, labels back on the input grid) on a synthetic 512 x 512 x 300 CT-like volume
with a small MONAI UNet and ``--classes`` output classes (default 14, like a
multi-organ model). A full float32 accumulator would need ``classes x 315 MB`` (4.4 GB
for 14 classes); the memory planner streams the accumulator in ROI-deep slabs and
reduces it to labels as it goes (it must below a ``--memory-limit-gb`` of ~5 GiB, and
does so by default above 1 GiB of accumulator). ``--full`` forces full-volume stitching
for comparison (give it ``--memory-limit-gb 16``).

Prints the memory plan, wall time, throughput and the process's peak resident memory
(``ru_maxrss``) next to what full-volume stitching would have needed.

Run: ``python benchmarks/bench_large_volume.py [--memory-limit-gb 2.5] [--classes 14]``
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np

SHAPE = (512, 512, 300)


def ct_like_volume(seed: int = 0) -> np.ndarray:
    """float32 (512, 512, 300) HU-like image built slab by slab (no float64 temporaries)."""
    rng = np.random.default_rng(seed)
    out = np.empty(SHAPE, np.float32)
    x = np.arange(SHAPE[0], dtype=np.float32)[:, None]
    y = np.arange(SHAPE[1], dtype=np.float32)[None, :]
    body = ((x - 256) / 220) ** 2 + ((y - 256) / 170) ** 2 <= 1
    for k in range(SHAPE[2]):
        sl = np.where(body, 40.0, -1000.0).astype(np.float32)
        organ = ((x - 200 - 0.2 * k) / 60) ** 2 + ((y - 260) / 45) ** 2 <= 1
        sl[organ] = 120.0
        sl += rng.normal(0, 15, sl.shape).astype(np.float32)
        out[:, :, k] = sl
    return out


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--classes", type=int, default=14)
    ap.add_argument("--memory-limit-gb", type=float, default=2.5)
    ap.add_argument("--roi", type=int, nargs=3, default=(128, 128, 64))
    ap.add_argument("--overlap", type=float, default=0.25)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--sw-batch-size", type=int, default=1)
    ap.add_argument("--full", action="store_true", help="full-volume stitching when it fits (no streaming)")
    args = ap.parse_args(argv)

    import torch

    from medcnn.inference import Segmenter
    from medcnn.inference.memory import format_bytes
    from medcnn.models import build_network
    from medcnn.preprocess import PreprocessSpec
    from medcnn.volume import Geometry, Volume

    t0 = time.perf_counter()
    arr = ct_like_volume()
    geometry = Geometry(SHAPE, (0.78, 0.78, 1.5), (-200.0, -200.0, -450.0))
    vol = Volume(arr, geometry)
    print(f"built {SHAPE} float32 CT-like volume ({format_bytes(arr.nbytes)}) in {time.perf_counter() - t0:.1f} s; "
          f"peak RSS so far {format_bytes(peak_rss_bytes())}")
    spec = {"name": "unet", "in_channels": 1, "out_channels": args.classes, "channels": [8, 16, 32],
            "strides": [2, 2], "num_res_units": 1}
    torch.manual_seed(0)
    seg = Segmenter(build_network(spec), network=spec, roi_size=tuple(args.roi), overlap=args.overlap,
                    preprocess=PreprocessSpec(orientation="RAS", modalities=("CT",), ct_window=(-200.0, 300.0)),
                    device="cpu", precision=args.precision, sw_batch_size=args.sw_batch_size,
                    memory_limit_gb=args.memory_limit_gb, stream_above_gb=None if args.full else 1.0)
    plan = seg.plan(SHAPE, input_shape=SHAPE)
    full_acc = args.classes * int(np.prod(SHAPE)) * 4
    print(f"plan: {plan.describe()}")
    print(f"full-volume float32 accumulator would be {format_bytes(full_acc)}; "
          f"streamed accumulator {format_bytes(plan.breakdown['accumulator_slab'])}")
    t1 = time.perf_counter()
    pred = seg.predict(vol)
    wall = time.perf_counter() - t1
    info = pred.info
    assert pred.labels.geometry.isclose(geometry) and pred.labels.shape == SHAPE
    n_vox = int(np.prod(SHAPE))
    peak = peak_rss_bytes()
    print(f"\nvolume {SHAPE}, {args.classes} classes, roi {tuple(args.roi)}, overlap {args.overlap}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    print(f"precision {info['precision']}, {info['n_windows']} windows, slab streaming: {info['memory']['slab']} "
          f"(axis {info['memory']['slab_axis']})")
    print(f"wall {wall:.1f} s ({n_vox / wall / 1e6:.2f} Mvoxel/s): preprocess {info['timings_s']['preprocess']:.1f} s, "
          f"network+stitching {info['timings_s']['network']:.1f} s, to input grid "
          f"{info['timings_s']['to_input_grid']:.1f} s")
    print(f"peak RSS {format_bytes(peak)} (input volume itself {format_bytes(arr.nbytes)}; memory limit "
          f"{args.memory_limit_gb} GiB; planner estimate {format_bytes(plan.peak_bytes)}); "
          f"full stitching would add at least {format_bytes(full_acc)}")
    labels, counts = np.unique(pred.labels.array, return_counts=True)
    print(f"labels present: {dict(zip(labels.tolist(), counts.tolist()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
