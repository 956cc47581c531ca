"""Batch overhead: `medcnn run` machinery against a bare read -> predict -> write loop.

Baseline (measured in the same run): for each scan, ``read_volume`` + ``Segmenter.predict`` +
``write_volume`` with one already-loaded segmenter. Compared with it:

* ``run_batch`` in-process without figures (hashing, measuring, result JSON, report tables);
* ``run_batch`` in-process with figures (overlay PNGs + HTML);
* a resumed rerun where every case is up to date (read + hash only);
* ``run_batch`` with ``--workers 2`` (spawned processes; includes their start-up).

A tiny seeded 3D UNet keeps the network cheap, so the numbers show the batch overhead,
not the model. Usage::

    .venv/bin/python benchmarks/bench_batch.py [--cases 6] [--shape 96 96 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=6)
    ap.add_argument("--shape", type=int, nargs=3, default=(96, 96, 32))
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import torch

    from medcnn.batch import run_batch
    from medcnn.inference import Segmenter
    from medcnn.io import read_volume, write_volume
    from test_batch_support import blob_scan, make_bundle

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bundle = make_bundle(root / "bundle")
        scans = root / "scans"
        scans.mkdir()
        for i in range(args.cases):
            write_volume(blob_scan(tuple(args.shape), (1.0, 1.0, 3.0), seed=i, radius=12.0), scans / f"c{i}.nii.gz")
        files = sorted(scans.iterdir())
        seg = Segmenter.from_bundle(bundle, device="cpu", precision="fp32")
        seg.predict(read_volume(files[0]))  # warm up

        def baseline() -> float:
            t = time.perf_counter()
            for f in files:
                v = read_volume(f)
                write_volume(seg.predict(v).labels, root / "bare" / f.name)
            return time.perf_counter() - t

        def batch(out: str, **kw) -> float:
            t = time.perf_counter()
            res = run_batch([scans], model=bundle, out=root / out, progress=False, device="cpu", precision="fp32",
                            **kw)
            assert res.exit_code == 0
            return time.perf_counter() - t

        runs: dict[str, list[float]] = {k: [] for k in ("baseline", "batch", "batch+figures", "resume", "workers2")}
        for r in range(args.repeats):
            runs["baseline"].append(baseline())
            runs["batch"].append(batch(f"b{r}", figures=False))
            runs["batch+figures"].append(batch(f"f{r}", figures=True))
            runs["resume"].append(batch(f"f{r}", figures=True))
            runs["workers2"].append(batch(f"w{r}", figures=False, workers=2))
        base = statistics.median(runs["baseline"])
        print(f"{args.cases} cases of {tuple(args.shape)} voxels, tiny UNet on CPU, torch threads 1 in-process, "
              f"median of {args.repeats}")
        print(f"{'variant':<16}{'median s':>10}{'s/case':>10}{'ratio vs baseline':>20}")
        for k, v in runs.items():
            m = statistics.median(v)
            print(f"{k:<16}{m:>10.2f}{m / args.cases:>10.3f}{m / base:>20.2f}")


if __name__ == "__main__":
    main()
