"""Benchmark: medcnn.measure on a large multi-label map vs a plain numpy/scipy baseline.

Builds a synthetic 512 x 512 x 400 label map (0.8 x 0.8 x 1.5 mm, oblique direction) with
4 large "organ" ellipsoids (labels 1-4) and ~100 spherical lesions (label 5), then times,
in the same run and on the same map:

* ``baseline``: ``np.bincount`` label volumes + ``scipy.ndimage.label`` (26-connectivity) of
  label 5 + ``scipy.ndimage.find_objects`` -- counts and bounding boxes only, no diameters;
* ``medcnn volumes+lesions(5)``: :func:`label_volumes` + :func:`measure_lesions` of label 5
  (volumes, world centroids, 3D / in-plane / perpendicular diameters, border flags);
* ``medcnn volumes+lesions(all)``: the same with every label split into components
  (the four organs included, whose large surfaces dominate the hull work).

Reports the median wall time of ``--repeats`` runs (methods interleaved) and the peak of memory allocated
through Python/numpy during one run (``tracemalloc``; cc3d's internal C++ buffers are not
seen by it), plus the process peak RSS (``resource.getrusage``).

Usage::

    python benchmarks/bench_measure.py [--shape 512 512 400] [--lesions 100] [--repeats 5]
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import sys
import time
import tracemalloc

import numpy as np

# benchmark this checkout even when another copy of medcnn is installed
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))


def _direction():
    a, b = 0.25, -0.15
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return tuple(map(tuple, rz @ rx))


def build(shape, n_lesions: int, seed: int):
    from medcnn.volume import Geometry, Volume

    rng = np.random.default_rng(seed)
    arr = np.zeros(shape, np.uint8)
    s = np.asarray(shape)

    def ellipsoid(centre, radii, value):
        lo = np.maximum(np.floor(centre - radii).astype(int), 0)
        hi = np.minimum(np.ceil(centre + radii).astype(int) + 1, s)
        ii, jj, kk = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        inside = (((ii - centre[0]) / radii[0]) ** 2 + ((jj - centre[1]) / radii[1]) ** 2
                  + ((kk - centre[2]) / radii[2]) ** 2) <= 1
        view = arr[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        view[inside] = value

    organs = [((0.3, 0.35, 0.5), (0.18, 0.15, 0.25)), ((0.7, 0.35, 0.45), (0.12, 0.10, 0.18)),
              ((0.5, 0.7, 0.55), (0.14, 0.12, 0.2)), ((0.3, 0.75, 0.3), (0.08, 0.07, 0.1))]
    for value, (c, r) in enumerate(organs, start=1):
        ellipsoid(np.asarray(c) * s, np.asarray(r) * s, value)
    for _ in range(n_lesions):
        r = rng.uniform(3, 9)
        c = rng.uniform(r + 1, s - r - 1)
        ellipsoid(c, np.array([r, r, r * 0.8 / 1.5]), 5)   # round in mm: 0.8 mm in plane, 1.5 mm slices
    g = Geometry(shape, (0.8, 0.8, 1.5), (-200.0, -180.0, -300.0), _direction())
    return Volume(arr, g, "label")


def baseline(vol):
    from scipy import ndimage

    arr = vol.array
    counts = np.bincount(arr.ravel())
    volumes_ml = counts * vol.voxel_volume_ml
    lab, n = ndimage.label(arr == 5, structure=np.ones((3, 3, 3), bool))
    boxes = ndimage.find_objects(lab)
    return volumes_ml, n, boxes


def medcnn_lesion_label(vol):
    from medcnn.measure import label_volumes, measure_lesions

    return label_volumes(vol), measure_lesions(vol, labels=5)


def medcnn_all_labels(vol):
    from medcnn.measure import label_volumes, measure_lesions

    return label_volumes(vol), measure_lesions(vol)


def time_interleaved(methods, vol, repeats):
    """Median wall time per method, running the methods round-robin so that load from other
    processes on a shared machine affects all of them alike."""
    times = {name: [] for name, _ in methods}
    for _ in range(repeats):
        for name, fn in methods:
            gc.collect()
            t0 = time.perf_counter()
            result = fn(vol)
            times[name].append(time.perf_counter() - t0)
            del result
    return {name: statistics.median(t) for name, t in times.items()}


def peak_memory(fn, vol):
    """tracemalloc peak (bytes) of one run, and its result."""
    gc.collect()
    tracemalloc.start()
    result = fn(vol)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=int, nargs=3, default=[512, 512, 400])
    p.add_argument("--lesions", type=int, default=100)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    vol = build(tuple(args.shape), args.lesions, args.seed)
    print(f"label map {vol.shape} uint8 ({vol.array.nbytes / 2**20:.0f} MiB), spacing {vol.spacing} mm, "
          f"orientation {vol.geometry.orientation}; built in {time.perf_counter() - t0:.1f} s")
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}; median of {args.repeats} interleaved runs; "
          "peak = tracemalloc peak of one run (Python/numpy allocations)")

    warm = build((48, 48, 40), 2, args.seed)          # imports and first-call costs out of the timings
    for fn in (baseline, medcnn_lesion_label, medcnn_all_labels):
        fn(warm)
    methods = [("baseline numpy/scipy (bincount + ndimage.label + find_objects)", baseline),
               ("medcnn volumes + lesions(label 5)", medcnn_lesion_label),
               ("medcnn volumes + lesions(all labels)", medcnn_all_labels)]
    medians = time_interleaved(methods, vol, args.repeats)
    results = {}
    for name, fn in methods:
        peak, res = peak_memory(fn, vol)
        results[name] = (medians[name], peak, res)
    base_t = results["baseline numpy/scipy (bincount + ndimage.label + find_objects)"][0]
    print(f"{'method':<66} {'median s':>9} {'x baseline':>10} {'peak MiB':>9}")
    for name, (med, peak, _) in results.items():
        print(f"{name:<66} {med:9.2f} {med / base_t:10.2f} {peak / 2**20:9.0f}")

    # agreement: the baseline and medcnn count the same lesions and volumes
    volumes_ml, n_base, _ = results["baseline numpy/scipy (bincount + ndimage.label + find_objects)"][2]
    vols, les = results["medcnn volumes + lesions(label 5)"][2]
    _, les_all = results["medcnn volumes + lesions(all labels)"][2]
    same_volumes = np.allclose(vols.set_index("label")["volume_ml"].to_numpy(), volumes_ml[1:6], rtol=1e-12)
    print(f"agreement: lesions (label 5) baseline {n_base} vs medcnn {len(les)}; "
          f"label volumes identical: {same_volumes}; components over all labels: {len(les_all)}")
    print(f"lesion max 3D diameter: median {les['max_3d_diameter_mm'].median():.1f} mm, "
          f"range {les['max_3d_diameter_mm'].min():.1f}-{les['max_3d_diameter_mm'].max():.1f} mm")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"process peak RSS (whole run, includes the {vol.array.nbytes / 2**20:.0f} MiB map): {rss:.0f} MiB")
    return 0 if n_base == len(les) and same_volumes else 1


if __name__ == "__main__":
    raise SystemExit(main())
