"""An imported nnU-Net model: medcnn's Segmenter vs nnU-Net's own nnUNetPredictor, same run.

Baseline: ``nnUNetPredictor.predict_from_files_sequential`` (nnU-Net 2.x, CPU, float32 as
nnU-Net runs on the CPU, step 0.5, Gaussian, mirroring over the trainer's axes),
initialised with the same weights, on the same NIfTI file, in the same process.
medcnn: ``medcnn models import`` of the same result folder, then ``read_volume`` +
``Segmenter.from_bundle(...).predict`` with ``tta_axes="trained"`` (the same mirroring).
Both include reading, preprocessing, the sliding window and the export to the input grid;
neither includes loading the model.

Model: nnU-Net's PlainConvUNet (dynamic-network-architectures) with 4 stages, features
16-32-64-128, patch 64^3 (``--quick``: 3 stages, features 4-8-16, patch 32^3;
``--realistic``: nnU-Net's 3d_fullres size, 6 stages, features 32-64-128-256-320-320, patch
128^3), 3 classes, briefly trained on synthetic blobs (tests/nnunet_factory.py,
``--train-steps``) so labels are not noise.

Every configuration runs once untimed first (nnU-Net too): first-call costs and the ONNX
export of the ``onnxruntime`` row (built, verified against torch and cached in a temporary
folder) are not in the timings.
Case: an oblique ``--shape`` volume at 1.2 x 0.9 x 1.1 mm, resampled to the plans' 1 mm.

Prints per configuration the median wall time over ``--repeats``, the ratio to the
baseline (> 1: medcnn faster) and the fraction of voxels equal to nnU-Net's labels.

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_import_nnunet.py [--threads 1] [--repeats 3] [--quick |
--realistic] [--train-steps 40] [--no-mirroring] [--no-onnxruntime]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--shape", type=int, nargs=3, default=(110, 96, 80), help="case shape (SimpleITK z, y, x)")
    ap.add_argument("--quick", action="store_true", help="tiny network and volume (smoke test)")
    ap.add_argument("--no-mirroring", action="store_true", help="both without test-time mirroring")
    ap.add_argument("--realistic", action="store_true",
                    help="nnU-Net 3d_fullres size: 6 stages, 32-320 features, patch 128^3")
    ap.add_argument("--train-steps", type=int, default=40, help="training steps of the synthetic model")
    ap.add_argument("--no-onnxruntime", action="store_true", help="skip the ONNX Runtime row")
    args = ap.parse_args(argv)

    import SimpleITK as sitk
    import torch

    try:
        import nnunetv2  # noqa: F401
    except ImportError:
        print("nnunetv2 is not installed (scripts/setup_env.sh installs it); nothing to compare against")
        return 2
    from nnunet_factory import blob_image, make_nnunet_folder, reference_predictor

    from medcnn.inference import Segmenter
    from medcnn.io import read_volume
    from medcnn.models.importers import import_model

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench_nnunet_"))
    if args.quick:
        folder = make_nnunet_folder(tmp, patch=(32, 32, 32), steps=args.train_steps)
        shape = (40, 36, 34)
    elif args.realistic:
        folder = make_nnunet_folder(tmp, patch=(128, 128, 128), steps=args.train_steps, n_stages=6,
                                    features=(32, 64, 128, 256, 320, 320))
        shape = tuple(args.shape)
    else:
        folder = make_nnunet_folder(tmp, patch=(64, 64, 64), steps=args.train_steps, n_stages=4,
                                    features=(16, 32, 64, 128))
        shape = tuple(args.shape)
    img, _ = blob_image(shape, seed=7)
    im = sitk.GetImageFromArray(img)
    im.SetSpacing((1.2, 0.9, 1.1))
    im.SetOrigin((10.0, -5.0, 3.0))
    rot = np.array([[0.9362934, -0.2896295, 0.1986693], [0.3129918, 0.9447025, -0.0978434],
                    [-0.1593451, 0.1537920, 0.9751703]])
    im.SetDirection(tuple(rot.ravel()))
    case = str(tmp / "case_0000.nii.gz")
    sitk.WriteImage(im, case)
    mirror = not args.no_mirroring

    predictor = reference_predictor(folder, (0,), use_mirroring=mirror)
    bundle = import_model(folder, tmp / "bundle")
    configs = {
        "medcnn, the imported bundle's defaults (fp32, contiguous, 2 windows per call)": {},
        "medcnn fp32 contiguous, 1 window per call (nnU-Net's settings)": {"sw_batch_size": 1},
        "medcnn fp32 channels-last, 2 windows (medcnn's CPU default for MONAI UNets)": {
            "memory_format": "channels_last"},
    }
    from medcnn.inference.executors import onnxruntime_version

    if not args.no_onnxruntime and onnxruntime_version() is not None:
        configs["medcnn onnxruntime (fp32, 1 window per call)"] = {"backend": "onnxruntime",
                                                                   "cache_dir": str(tmp / "onnx")}
    segs = {name: Segmenter.from_bundle(bundle, device="cpu", precision="fp32", threads=args.threads,
                                        tta_axes="trained" if mirror else (), **kw) for name, kw in configs.items()}

    def run_nnunet():
        return predictor.predict_from_files_sequential([[case]], None)[0]

    def run_medcnn(seg):
        return seg.predict(read_volume(case)).labels.array.transpose(2, 1, 0)

    import contextlib
    import io
    from importlib.metadata import version

    times: dict[str, list[float]] = {"nnUNetPredictor (baseline)": []}
    times.update({n: [] for n in configs})
    outs = {}
    with contextlib.redirect_stdout(io.StringIO()):  # warm-up: first calls, the ONNX export
        run_nnunet()
    for seg in segs.values():
        run_medcnn(seg)
    for _ in range(args.repeats):  # interleaved, so machine load hits both alike
        t = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            outs["ref"] = run_nnunet()
        times["nnUNetPredictor (baseline)"].append(time.perf_counter() - t)
        for name, seg in segs.items():
            t = time.perf_counter()
            outs[name] = run_medcnn(seg)
            times[name].append(time.perf_counter() - t)
    base = statistics.median(times["nnUNetPredictor (baseline)"])
    from medcnn.hardware import cpu_facts

    first = segs[next(iter(segs))]
    print(f"case {shape} (z, y, x), patch {first.roi_size}, {first.n_parameters / 1e6:.1f} M parameters, "
          f"mirroring {mirror}, {args.threads} thread(s), {args.repeats} repeats, nnunetv2 {version('nnunetv2')}")
    print(f"CPU: {cpu_facts()}")
    print(f"{'configuration':76s} {'median s':>9s} {'ratio':>7s} {'labels = nnU-Net':>17s}")
    for name, ts in times.items():
        med = statistics.median(ts)
        eq = 1.0 if name.startswith("nnUNet") else float((outs[name] == outs["ref"]).mean())
        print(f"{name:76s} {med:9.2f} {base / med:7.2f} {eq:17.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
