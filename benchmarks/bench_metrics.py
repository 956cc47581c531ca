"""Surface-metric speed: medcnn vs MONAI on one large pair, same process, same data.

Pair: two overlapping ellipsoids in a 512 x 512 x 300 grid, spacing 0.8 x 0.8 x 1.5 mm
(semi-axes 180/150/110 and 170/160/100 voxels, centres 14-16 voxels apart: HD ~34 mm).

* medcnn: ``surface_metrics`` (HD, HD95, ASSD, both directed average distances and
  NSD at 2 mm from one set of surface distances) plus ``dice``.
* baseline, MONAI ``monai.metrics``: ``compute_hausdorff_distance`` (percentile=95),
  ``compute_average_surface_distance`` (symmetric) and ``compute_surface_dice`` (2 mm), the
  three calls the brief names; also reported with a 4th call for HD (max), since MONAI
  needs one call per percentile.

Both single-threaded by default (``torch.set_num_threads``, medcnn ``threads``). Prints
the median over ``--repeats`` runs, the ratio MONAI / medcnn, and the values side by side
(they differ by definition: see docs/metrics.md).

Run: ``python benchmarks/bench_metrics.py [--repeats 3] [--threads 1] [--shape 512 512 300]``
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np


def ellipsoid(shape, centre, radii) -> np.ndarray:
    i, j, k = (np.arange(n, dtype=np.float32) for n in shape)
    return (((i[:, None, None] - centre[0]) / radii[0]) ** 2 + ((j[None, :, None] - centre[1]) / radii[1]) ** 2
            + ((k[None, None, :] - centre[2]) / radii[2]) ** 2) <= 1


def make_pair(shape):
    s = np.asarray(shape, dtype=float) / np.array([512, 512, 300])
    ref = ellipsoid(shape, np.array([256, 256, 150]) * s, np.array([180, 150, 110]) * s)
    pred = ellipsoid(shape, np.array([270, 240, 160]) * s, np.array([170, 160, 100]) * s)
    return pred, ref


def timed(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--shape", type=int, nargs=3, default=(512, 512, 300))
    args = ap.parse_args()

    import torch
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice

    from medcnn.metrics import dice, surface_metrics
    from medcnn.volume import Geometry, Volume

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    spacing = (0.8, 0.8, 1.5)
    pred, ref = make_pair(tuple(args.shape))
    g = Geometry(tuple(args.shape), spacing)
    pv, rv = Volume(pred, g, "label"), Volume(ref, g, "label")
    yp = torch.from_numpy(pred)[None, None]
    y = torch.from_numpy(ref)[None, None]
    print(f"pair {tuple(args.shape)} spacing {spacing} mm; ref {int(ref.sum())} voxels, pred {int(pred.sum())}; "
          f"threads {args.threads}, repeats {args.repeats}")

    def ours():
        m = surface_metrics(pv, rv, tolerance_mm=2.0, threads=args.threads)
        m["dice"] = dice(pv, rv)
        return m

    def monai3():
        return {
            "hd95_mm": float(compute_hausdorff_distance(yp, y, include_background=True, percentile=95,
                                                        spacing=spacing)[0, 0]),
            "assd_mm": float(compute_average_surface_distance(yp, y, include_background=True, symmetric=True,
                                                              spacing=spacing)[0, 0]),
            "nsd": float(compute_surface_dice(yp.float(), y.float(), class_thresholds=[2.0], spacing=spacing,
                                              include_background=True)[0, 0]),
        }

    def monai_hd():
        return float(compute_hausdorff_distance(yp, y, include_background=True, spacing=spacing)[0, 0])

    t_ours, all_ours, m_ours = timed(ours, args.repeats)
    t_m3, all_m3, m_m3 = timed(monai3, args.repeats)
    t_hd, all_hd, hd = timed(monai_hd, args.repeats)
    print(f"medcnn surface_metrics + dice      median {t_ours:7.2f} s   runs {[round(t, 2) for t in all_ours]}")
    print(f"MONAI hd95 + asd + nsd (3 calls)   median {t_m3:7.2f} s   runs {[round(t, 2) for t in all_m3]}")
    print(f"MONAI + hd max (4 calls)           median {t_m3 + t_hd:7.2f} s")
    print(f"ratio MONAI(3 calls) / medcnn: {t_m3 / t_ours:.2f}x;  MONAI(4 calls) / medcnn: {(t_m3 + t_hd) / t_ours:.2f}x")
    print("values (definitions differ, see docs/metrics.md):")
    print(f"  HD      medcnn {m_ours['hd_mm']:.4f} mm   MONAI {hd:.4f} mm")
    print(f"  HD95    medcnn {m_ours['hd95_mm']:.4f} mm   MONAI {m_m3['hd95_mm']:.4f} mm")
    print(f"  ASSD    medcnn {m_ours['assd_mm']:.4f} mm   MONAI {m_m3['assd_mm']:.4f} mm")
    print(f"  NSD@2mm medcnn {m_ours['nsd']:.4f}      MONAI {m_m3['nsd']:.4f}")
    print(f"  Dice    medcnn {m_ours['dice']:.4f}")


if __name__ == "__main__":
    main()
