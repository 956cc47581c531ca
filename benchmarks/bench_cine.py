"""Cine speed: ``Segmenter.predict`` of a whole 4D cine against a plain MONAI loop.

The case is the Sunnybrook ``SCD0000101`` DICOM cine series (20 frames x 12 slices of
256 x 256), read once by :func:`medcnn.io.read_volume`. The model is a 2D cine bundle
(default ``cardiac-cine-mri``, windows of 128 x 128, overlap 0.5).

**Baseline** (named ``monai-loop``, what a MONAI user writes for the network part): the
same preprocessed frames (medcnn's :class:`~medcnn.preprocess.Preprocessor`, one per frame,
prepared outside the timing), then for every frame and every slice
``monai.inferers.sliding_window_inference(slice, roi, sw_batch_size, net, overlap,
mode="gaussian", sigma_scale)`` and an argmax, with the bundle's plain network (fp32,
contiguous) and MONAI's default ``sw_batch_size=1``. ``monai-loop-b2`` is the same at 2
windows per call, for reference.

**medcnn paths**, each a whole ``Segmenter.predict(cine)`` (preprocessing, network, back
to the input grid, postprocessing) with the bundle's defaults plus:

* ``frame-by-frame``: ``predict`` of each frame in a loop (how cine ran before frames were
  batched);
* ``default``: the 4D cine in one call (every frame's windows through one sliding-window
  call);
* ``onnxruntime``: ``backend="onnxruntime"`` (export built and verified before the timing);
* ``auto``: ``backend="auto"`` (its timing and choice made in the warm-up run);
* ``whole-slice`` and ``whole-slice+ort``: one window per slice (``whole_slice=True``);
* with ``--sweep``: the torch executor at each memory format and window batch
  (``--sweep-batches``), windowed and on whole slices
  (``torch:<channels_last|contiguous>:b<N>[:whole]``), the figures behind the 2D defaults.

Runs alternate (one of each per repeat) and the medians are compared. Printed per path:
median seconds, ratio to the baseline, and the share of voxels whose labels equal medcnn's
torch fp32 windowed path (``default``; the acceptance figure is >= 99.5 %). Then the
whole ``medcnn run SCD0000101 --mode cardiac`` command is timed once in a child process. The
CPU's model and flags head the output.

Run: ``python benchmarks/bench_cine.py [--model cardiac-cine-mri] [--repeats 3]
[--threads 2] [--frames N] [--paths frame-by-frame,default,onnxruntime,auto,whole-slice,whole-slice+ort]
[--no-run] [--sweep] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ALL_PATHS = ("frame-by-frame", "default", "onnxruntime", "auto", "whole-slice", "whole-slice+ort")


def monai_loop(frames, net, *, roi, overlap, sigma_scale, sw_batch_size, slice_axis):
    """Labels ``(T, X, Y, Z)`` of a MONAI ``sliding_window_inference`` per frame and slice."""
    import torch
    from monai.inferers import sliding_window_inference

    out = []
    with torch.no_grad():
        for x in frames:  # (1, X, Y, Z) on the model grid
            t = torch.from_numpy(np.moveaxis(np.asarray(x), 1 + slice_axis, 1).copy())  # (1, S, A, B)
            lab = np.empty(t.shape[1:], np.uint8)
            for k in range(t.shape[1]):
                logits = sliding_window_inference(t[:, k][None], roi, sw_batch_size, net, overlap=overlap,
                                                  mode="gaussian", sigma_scale=sigma_scale)
                lab[k] = torch.argmax(logits[0], dim=0).numpy().astype(np.uint8)
            out.append(np.moveaxis(lab, 0, slice_axis))
    return np.stack(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="cardiac-cine-mri")
    ap.add_argument("--case", default=None, help="DICOM cine folder (default: Sunnybrook SCD0000101)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--frames", type=int, default=None, help="only the first N frames (smoke test)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--paths", default=",".join(ALL_PATHS))
    ap.add_argument("--no-run", action="store_true", help="skip timing the medcnn run command")
    ap.add_argument("--sweep", action="store_true",
                    help="also time torch at each memory format x window batch, windowed and whole slices")
    ap.add_argument("--sweep-batches", default="1,2,4,8", help="window batches of --sweep")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    paths = [p for p in args.paths.split(",") if p]
    unknown = sorted(set(paths) - set(ALL_PATHS))
    if unknown:
        raise SystemExit(f"unknown --paths {unknown}; expected some of {', '.join(ALL_PATHS)}")

    import torch

    from medcnn._testing import shared_data_path
    from medcnn.hardware import cpu_facts
    from medcnn.inference import Segmenter
    from medcnn.io import read_volume
    from medcnn.models import load_bundle
    from medcnn.preprocess import Preprocessor

    torch.set_num_threads(args.threads)
    case = Path(args.case) if args.case else shared_data_path("sunnybrook", "dicom", "SCD0000101")
    if case is None or not case.exists():
        print("no cine case: pass --case or provide ../shared/data/sunnybrook/dicom/SCD0000101", file=sys.stderr)
        return 2
    cine = read_volume(case)
    if cine.leading_axis != "time":
        raise SystemExit(f"{case}: expected a cine series (4D, time first), got {cine.shape}")
    if args.frames:
        from medcnn.volume import Volume

        n = min(int(args.frames), cine.shape[0])
        cine = Volume(cine.array[:n], cine.geometry, cine.kind, "time", cine.frame_times_ms[:n], cine.meta)
    cache = tempfile.mkdtemp(prefix="bench_cine_")
    common = dict(device="cpu", precision="fp32", threads=args.threads, cache_dir=cache)
    segs = {
        "frame-by-frame": Segmenter.from_bundle(args.model, whole_slice=False, **common),
        "default": Segmenter.from_bundle(args.model, whole_slice=False, **common),
        "onnxruntime": Segmenter.from_bundle(args.model, whole_slice=False, backend="onnxruntime", **common),
        "auto": Segmenter.from_bundle(args.model, whole_slice=False, backend="auto", **common),
        "whole-slice": Segmenter.from_bundle(args.model, whole_slice=True, **common),
        "whole-slice+ort": Segmenter.from_bundle(args.model, whole_slice=True, backend="onnxruntime", **common),
    }
    sweep = []
    if args.sweep:
        for ws in (False, True):
            for mf in ("channels_last", "contiguous"):
                for nb in [int(b) for b in args.sweep_batches.split(",")]:
                    name = f"torch:{mf}:b{nb}" + (":whole" if ws else "")
                    segs[name] = Segmenter.from_bundle(args.model, whole_slice=ws, memory_format=mf,
                                                       sw_batch_size=nb, **common)
                    sweep.append(name)
    ref = segs["default"]
    if ref.spatial_dims != 2:
        raise SystemExit(f"{args.model}: a 2D cine model expected")
    b = load_bundle(args.model)
    net = b.build_model().eval()
    prepared = [Preprocessor(ref.preprocess_spec).forward(f) for f in cine.frames()]
    frames = [x for x, _ in prepared]
    ax = ref._slice_axis(prepared[0][1].model_geometry.spacing)
    loop_kw = dict(roi=ref.roi_size, overlap=ref.overlap, sigma_scale=ref.sigma_scale, slice_axis=ax)

    runners = {
        "monai-loop": lambda: monai_loop(frames, net, sw_batch_size=1, **loop_kw),
        "monai-loop-b2": lambda: monai_loop(frames, net, sw_batch_size=2, **loop_kw),
        "frame-by-frame": lambda: np.stack([np.asarray(segs["frame-by-frame"].predict(f).labels.array)
                                            for f in cine.frames()]),
    }
    for name in paths:
        if name != "frame-by-frame":
            runners[name] = (lambda s: lambda: np.asarray(s.predict(cine).labels.array))(segs[name])
    for name in sweep:
        runners[name] = (lambda sg: lambda: np.asarray(sg.predict(cine).labels.array))(segs[name])
    order = ["monai-loop", "monai-loop-b2"] + [p for p in ALL_PATHS if p in paths] + sweep
    if "default" not in order:
        order.append("default")
        runners["default"] = lambda: np.asarray(ref.predict(cine).labels.array)

    print(f"case {case.name}: {cine.shape[0]} frames x {cine.shape[1:]} voxels; model {args.model} "
          f"(roi {list(ref.roi_size)}, overlap {ref.overlap}); torch {torch.__version__}, {args.threads} thread(s); "
          f"default: {ref.memory_format}, {ref.sw_batch_size} window(s) per call")
    print(f"CPU: {cpu_facts()}")
    labels, times = {}, {name: [] for name in order}
    for name in order:  # warm-up: exports built and verified, first-call costs paid
        labels[name] = runners[name]()
    for _ in range(max(1, args.repeats)):
        for name in order:
            t = time.perf_counter()
            labels[name] = runners[name]()
            times[name].append(time.perf_counter() - t)
    base = statistics.median(times["monai-loop"])
    rows = []
    print(f"\n{'path':<24} {'median s':>9} {'vs monai-loop':>14} {'labels = default':>17}  ran as")
    for name in order:
        med = statistics.median(times[name])
        equal = 100.0 * float((labels[name] == labels["default"]).mean())
        rows.append({"path": name, "median_s": med, "speedup_vs_monai_loop": base / med,
                     "labels_equal_to_default_percent": equal, "times_s": times[name],
                     "backend": (segs[name].backend_info() if name in segs else None)})
        sg = segs.get(name)
        ran = (f"{sg.backend}, {sg.sw_batch_size} window(s)/call, {sg.memory_format}"
               + (", whole slices" if sg.whole_slice else "")) if sg is not None else \
            f"MONAI, {1 if name == 'monai-loop' else 2} window(s)/call, contiguous"
        print(f"{name:<24} {med:9.2f} {base / med:13.2f}x {equal:16.3f}%  {ran}")
    print("(monai-loop: no postprocessing, so its agreement also counts the keep-largest changes)")
    if not args.no_run:
        with tempfile.TemporaryDirectory() as out:
            cmd = [sys.executable, "-m", "medcnn", "run", str(case), "--model", args.model, "--out", out,
                   "--mode", "cardiac", "--device", "cpu", "--threads", str(args.threads), "--no-progress"]
            t = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
            run_s = time.perf_counter() - t
        status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}"
        print(f"\nwhole `medcnn run {case.name} --mode cardiac` (read DICOM, segment, measure, figures, report): "
              f"{run_s:.1f} s ({status})")
        rows.append({"path": "medcnn run --mode cardiac", "wall_s": run_s, "returncode": proc.returncode})
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_facts(), "rows": rows}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
