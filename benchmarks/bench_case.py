"""Whole-case speed of the default bundles: where the time goes, against MONAI and an older medcnn.

What a user waits for is the whole case: read, preprocess, network, back to the input grid.
For each case this prints, as medians over ``--repeats`` runs:

* the per-step breakdown of ``Segmenter.predict`` (``info["timings_s"]``: preprocessing
  sub-steps, network + stitching, back to the input grid with its sub-steps), and the share
  of ``predict`` spent outside the network;
* the whole case (read + predict) against a MONAI transform pipeline run in the same process,
  interleaved: ``LoadImaged`` (channels stacked), ``Orientationd``, ``Spacingd``,
  ``NormalizeIntensityd`` (non-zero voxels, per channel; CT:
  ``ScaleIntensityRanged`` on the same window), ``sliding_window_inference`` with the same
  network weights, windows, overlap, Gaussian blending and windows per call, softmax,
  ``Invertd`` and argmax — once with ``Spacingd(mode="bilinear")`` (MONAI's default) and,
  for bundles that resample, once with the bundle's spline order (3: cubic, what the model
  was trained with; ``Invertd`` then replays it on the probabilities). Wall and CPU time;
* with ``--against-rev REV``: the same cases run by medcnn at git revision ``REV`` (a
  temporary ``git worktree``, in a child process): its breakdown and the fraction of voxels
  whose labels equal this checkout's;
* peak resident memory (``VmHWM``) of one whole case in a fresh child process, for this
  checkout (and ``REV``);
* with ``--backend torch,onnxruntime`` (or ``auto``): one medcnn column per network
  executor (``Segmenter(backend=...)``, interleaved with the others and MONAI), each one's
  ratio to MONAI and to the first backend (whole case and network), the labels' agreement
  with the first backend, and the ONNX export's one-time build and verification. The CPU's
  model and SIMD flags head the output. Peak memory and ``--against-rev`` use torch.

Cases (``--cases``): ``brats`` (brain-tumour-mri on a held-out BraTS case, 240 x 240 x 155,
FLAIR + T1c, 1 mm -> 2 mm and back), ``hippocampus`` (hippocampus-mri, two held-out MSD
crops, reorientation only), ``cine`` (cardiac-lv-cine-mri, 2D network per slice, the first
``--cine-frames`` frames of the Sunnybrook DICOM cine series), ``acdc`` (cardiac-cine-mri,
the default cardiac model, 2D, on the ACDC ``patient005_ED`` stack: held out by the fold-0
weights, trained on by weights fitted to all 80 patients; speed does not depend on it), ``ct`` (a synthetic
512 x 512 x 300 CT-like volume at 0.78 x 0.78 x 1.5 mm written as an int16 NIfTI, a small
random-weight UNet with ``--ct-classes`` classes on a 1.5 mm grid, CT window + z-score).

``--device cuda`` (or ``cuda:N``, ``auto``) runs medcnn and the MONAI baseline's network on
that device, ``--precision fp16|bf16|auto`` medcnn's precision with the baseline under
``torch.autocast`` at the same dtype (default: CPU, fp32). An unavailable device is one
line on stderr and exit status 2.

Run: ``python benchmarks/bench_case.py [--cases brats,hippocampus,cine,ct] [--repeats 3]
[--threads 1] [--against-rev main] [--no-monai] [--no-memory] [--quick] [--device cpu|cuda|auto]
[--precision fp32|fp16|bf16|auto] [--backend torch,onnxruntime,auto]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import warnings
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ALL_CASES = ("brats", "hippocampus", "cine", "acdc", "ct")
CT_SPACING = (0.78, 0.78, 1.5)


# ---------------------------------------------------------------------------- cases
def case_inputs(name: str, *, quick: bool, cine_frames: int, tmp: Path) -> list[dict]:
    """[{"id", "files": [paths], "frames"}]; shared data through medcnn._testing."""
    from medcnn._testing import shared_data_path

    if name == "brats":
        root = shared_data_path("brats2015", "brats_2013_pat0005_1")
        return [] if root is None else [{"id": "brats-heldout-1", "files": [
            str(root / "Flair_subtrMeanDivStd.nii.gz"), str(root / "T1c_subtrMeanDivStd.nii.gz")]}]
    if name == "hippocampus":
        out = []
        for i, cid in enumerate(("017", "053")[:1 if quick else 2]):
            p = shared_data_path("hippocampus", "imagesTr", f"hippocampus_{cid}.nii.gz")
            if p is not None:
                out.append({"id": f"hippocampus-heldout-{i + 1}", "files": [str(p)]})
        return out
    if name == "cine":
        p = shared_data_path("sunnybrook", "dicom", "SCD0000101")
        return [] if p is None else [{"id": "sunnybrook-cine", "files": [str(p)], "frames": cine_frames}]
    if name == "acdc":
        p = shared_data_path("acdc", "patient005_ED.nii.gz")
        return [] if p is None else [{"id": "acdc-patient005_ED", "files": [str(p)]}]
    if name == "ct":
        path = tmp / ("ct_small.nii" if quick else "ct_512x512x300.nii")
        if not path.exists():
            write_ct_case(path, quick=quick)
        return [{"id": "ct-synthetic", "files": [str(path)]}]
    raise SystemExit(f"unknown case {name!r}; expected some of {', '.join(ALL_CASES)}")


def write_ct_case(path: Path, *, quick: bool) -> None:
    """The CT-like phantom of bench_large_volume.py (or a small crop of it) as int16 HU."""
    import numpy as np

    from medcnn.io import write_volume
    from medcnn.volume import Geometry, Volume

    sys.path.insert(0, str(HERE))
    from bench_large_volume import ct_like_volume

    arr = ct_like_volume()
    if quick:
        arr = arr[::4, ::4, ::4]
    arr = np.clip(np.rint(arr), -1024, 3000).astype(np.int16)
    spacing = tuple(s * (4 if quick else 1) for s in CT_SPACING)
    write_volume(Volume(arr, Geometry(arr.shape, spacing, (-200.0, -200.0, -450.0))), path)


def ct_network_spec(classes: int) -> dict:
    return {"name": "unet", "spatial_dims": 3, "in_channels": 1, "out_channels": classes,
            "channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1}


def build_segmenter(name: str, *, classes: int, quick: bool, device: str = "cpu", precision: str = "fp32",
                    backend: str = "torch", cache_dir: str | None = None):
    """(Segmenter, bundle-like facts) for a case; only APIs that older revisions have (``backend``
    is passed only when it is not torch)."""
    import torch

    from medcnn.inference import Segmenter

    extra = {} if backend == "torch" else {"backend": backend, "cache_dir": cache_dir}

    if name == "ct":
        from medcnn.models import build_network
        from medcnn.preprocess import PreprocessSpec

        spec = ct_network_spec(classes)
        torch.manual_seed(0)
        net = build_network(spec)
        pre = PreprocessSpec(orientation="RAS", target_spacing=(1.5, 1.5, 1.5) if not quick else (6.0, 6.0, 6.0),
                             modalities=("CT",), ct_window=(-200.0, 300.0), ct_mean=50.0, ct_std=150.0)
        roi = (64, 64, 32) if quick else (128, 128, 64)
        return Segmenter(net, network=spec, roi_size=roi, overlap=0.25, preprocess=pre, device=device,
                         precision=precision, **extra), net
    bundle = {"brats": "brain-tumour-mri", "hippocampus": "hippocampus-mri", "cine": "cardiac-lv-cine-mri",
              "acdc": "cardiac-cine-mri"}[name]
    from medcnn.models import load_bundle

    b = load_bundle(bundle)
    return Segmenter.from_bundle(b, device=device, precision=precision, **extra), b.build_model()


def read_case(case: dict):
    from medcnn.io import read_volume

    vols = [read_volume(f) for f in case["files"]]
    if case.get("frames"):
        v = vols[0]
        from medcnn.volume import Volume

        n = min(int(case["frames"]), v.shape[0])
        vols = [Volume(v.array[:n], v.geometry, v.kind, v.leading_axis, v.frame_times_ms[:n], v.meta)]
    return vols[0] if len(vols) == 1 else vols


def medcnn_case(seg, case: dict):
    """(labels array, timings dict) of one whole case: read + predict."""
    t0, c0 = time.perf_counter(), time.process_time()
    image = read_case(case)
    t1 = time.perf_counter()
    pred = seg.predict(image)
    t2 = time.perf_counter()
    timings = {"read": t1 - t0, **{k: float(v) for k, v in pred.info["timings_s"].items()
                                    if isinstance(v, (int, float))}, "whole_case": t2 - t0}
    timings["predict"] = t2 - t1
    timings["whole_case_cpu"] = time.process_time() - c0
    grid = pred.info.get("to_input_grid") or {}
    if grid.get("input_voxels"):  # not in older revisions
        timings["boundary_voxels_percent"] = 100.0 * grid["interpolated_voxels"] / grid["input_voxels"]
    return pred.labels.array, timings


# ---------------------------------------------------------------------------- MONAI baseline
def monai_pipeline(seg, net, spacing_mode):
    """A callable running the MONAI transform pipeline on a case's files; None where the
    bundle has no MONAI equivalent (2D networks). ``spacing_mode``: Spacingd's ``mode``
    ("bilinear", MONAI's default, or a spline order such as the bundle's 3; Invertd
    replays the same mode on the probabilities)."""
    import torch
    from monai.inferers import sliding_window_inference
    from monai.transforms import (Compose, Invertd, LoadImaged, NormalizeIntensityd, Orientationd,
                                  ScaleIntensityRanged, Spacingd)

    if seg.spatial_dims != 3:
        return None
    spec = seg.preprocess_spec
    pre = [LoadImaged("image", ensure_channel_first=True, image_only=True)]
    if spec.orientation is not None:
        pre.append(Orientationd("image", axcodes=spec.orientation))
    if spec.target_spacing is not None:
        pre.append(Spacingd("image", pixdim=spec.target_spacing, mode=spacing_mode))
    if spec.modalities[0] == "CT":
        lo, hi = spec.ct_window
        pre.append(ScaleIntensityRanged("image", a_min=lo, a_max=hi, b_min=(lo - spec.ct_mean) / spec.ct_std,
                                        b_max=(hi - spec.ct_mean) / spec.ct_std, clip=True))
    else:
        pre.append(NormalizeIntensityd("image", nonzero=True, channel_wise=True))
    pre = Compose(pre)
    invert = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False)
    device = seg.device
    net = net.eval().to(device)
    amp = contextlib.nullcontext() if seg.precision == "fp32" else \
        torch.autocast(device.type, dtype=torch.bfloat16 if seg.precision == "bf16" else torch.float16)

    def run(files):
        d = pre({"image": files if len(files) > 1 else files[0]})
        with torch.no_grad():
            with amp:  # the same precision as medcnn's (autocast), the same device
                logits = sliding_window_inference(d["image"].unsqueeze(0).to(device), seg.roi_size,
                                                  seg.sw_batch_size, net, overlap=seg.overlap, mode="gaussian",
                                                  sigma_scale=seg.sigma_scale)
            logits = logits.float().cpu()
            d["pred"] = torch.softmax(logits[0], dim=0) if logits.shape[1] > 1 else torch.sigmoid(logits[0])
            d = invert(d)
            pred = d["pred"]
            labels = torch.argmax(pred, dim=0) if pred.shape[0] > 1 else (pred[0] > 0.5)
        return labels.numpy().astype("uint8")

    return run


# ---------------------------------------------------------------------------- child worker
def worker(args) -> int:
    """Run cases with whatever medcnn is importable (this checkout or an older revision);
    write timings, peak RSS and labels (.npy) to ``args.out``."""
    import numpy as np
    import torch

    import medcnn

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    result = {"medcnn": str(Path(medcnn.__file__).parent), "cases": {}}
    tmp = Path(args.tmp)
    for name in args.cases.split(","):
        seg, _ = build_segmenter(name, classes=args.ct_classes, quick=args.quick, device=args.device,
                                 precision=args.precision)
        for case in case_inputs(name, quick=args.quick, cine_frames=args.cine_frames, tmp=tmp):
            runs = []
            for _ in range(args.repeats):
                labels, timings = medcnn_case(seg, case)
                runs.append(timings)
            np.save(out.parent / f"{out.stem}_{case['id']}.npy", labels)
            result["cases"][case["id"]] = runs
    result["peak_rss_bytes"] = peak_rss_bytes()
    out.write_text(json.dumps(result))
    return 0


def peak_rss_bytes() -> int:
    """This process's peak resident memory: ``VmHWM`` (reset by exec, unlike ``ru_maxrss``,
    which a child started by fork + exec inherits from its parent on Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_child(tree: Path, args, out: Path, cases: str, repeats: int) -> dict:
    from medcnn._testing import shared_data_dir

    data = shared_data_dir()  # an older checkout elsewhere would not find ../shared/data
    env = dict(os.environ, **({"MEDCNN_DATA": str(data)} if data else {}), PYTHONPATH=str(tree),
               OMP_NUM_THREADS=str(args.threads),
               OPENBLAS_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--out", str(out), "--cases", cases,
           "--repeats", str(repeats), "--threads", str(args.threads), "--ct-classes", str(args.ct_classes),
           "--cine-frames", str(args.cine_frames), "--tmp", str(args.tmp), "--device", args.device,
           "--precision", args.precision] + (["--quick"] if args.quick else [])
    proc = subprocess.run(cmd, cwd=str(tree), env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"child run in {tree} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(out.read_text())


# ---------------------------------------------------------------------------- report
def median_timings(runs: list[dict]) -> dict:
    keys = [k for k in runs[0]]
    return {k: statistics.median(r.get(k, 0.0) for r in runs) for k in keys}


def gib(n: float) -> str:
    return f"{n / 1024 ** 3:.2f} GiB"


def print_breakdown(title: str, columns: dict[str, dict]) -> None:
    names = list(columns)
    keys: list[str] = []
    order = ["read", "preprocess", "preprocess_check", "preprocess_reorient", "preprocess_crop",
             "preprocess_normalise", "preprocess_resample", "network", "to_input_grid", "to_input_grid_labels",
             "to_input_grid_resample", "to_input_grid_crop", "to_input_grid_reorient", "postprocess", "predict",
             "whole_case", "whole_case_cpu"]
    for k in order + sorted({k for c in columns.values() for k in c}):
        if k not in keys and any(k in c for c in columns.values()) and k != "total":
            keys.append(k)
    print(f"\n{title}")
    print(f"  {'step (s, median)':28s}" + "".join(f"{n:>20s}" for n in names))
    for k in keys:
        if k == "boundary_voxels_percent":
            continue
        label = ("  " + k) if k.startswith(("preprocess_", "to_input_grid_")) else k
        print(f"  {label:28s}" + "".join(f"{columns[n][k]:20.3f}" if k in columns[n] else f"{'':20s}"
                                         for n in names))
    row = []
    for n in names:
        c = columns[n]
        outside = c["predict"] - c.get("network", 0.0)
        row.append(f"{100 * outside / c['predict']:19.1f}%")
    print(f"  {'share of predict outside net':28s}" + "".join(row))
    share = [f"{c['boundary_voxels_percent']:19.2f}%" if "boundary_voxels_percent" in c else f"{'':20s}"
             for c in columns.values()]
    if any(s.strip() for s in share):
        print(f"  {'voxels interpolated back':28s}" + "".join(share))


def print_backends(backends, segs, columns, first_s, labels, be_labels, monai_s) -> None:
    """One row per network executor: whole case and network (median s), ratios to the first
    backend and to each MONAI baseline, labels equal to the first backend, what ran."""
    cols = list(columns.values())[:len(backends)]
    ref = cols[0]
    print(f"  {'backend':13s} {'whole case s':>12s} {'network s':>10s} {'x ' + backends[0] + ' case':>14s} "
          f"{'x ' + backends[0] + ' net':>13s}" + "".join(f" {'x MONAI ' + k.split('=')[-1]:>16s}" for k in monai_s)
          + f" {'labels = ' + backends[0]:>17s}  ran as (first case incl. export/auto s)")
    for be, c in zip(backends, cols):
        info = segs[be].backend_info()
        ran = f"{info.get('used')} x{segs[be].sw_batch_size} windows/call"
        if info.get("fallback"):
            ran += f" (fallback: {info['fallback'][:60]})"
        lab = labels if be == backends[0] else be_labels[be]
        agree = 100.0 * float((lab == labels).mean()) if lab.shape == labels.shape else float("nan")
        print(f"  {be:13s} {c['whole_case']:12.3f} {c.get('network', float('nan')):10.3f} "
              f"{ref['whole_case'] / c['whole_case']:13.2f}x {ref.get('network', 1) / c.get('network', 1):12.2f}x"
              + "".join(f" {m / c['whole_case']:15.2f}x" for m in monai_s.values())
              + f" {agree:16.3f}%  {ran} ({first_s[be]:.1f} s)")
        if info.get("auto"):
            per = {k: {b: round(1000 * v, 1) for b, v in d.items()} for k, d in info["auto"]["seconds_per_window"].items()}
            print(f"  {'':13s} auto: ms per window by batch {per}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=",".join(ALL_CASES))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--against-rev", default=None, help="git revision to compare labels and timings with")
    ap.add_argument("--no-monai", action="store_true")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    ap.add_argument("--monai-modes", default="bilinear,bundle",
                    help="Spacingd modes of the MONAI baseline: bilinear and/or bundle (its spline order)")
    ap.add_argument("--ct-classes", type=int, default=4)
    ap.add_argument("--cine-frames", type=int, default=4)
    ap.add_argument("--device", default="cpu",
                    help="cpu (default), cuda, cuda:N or auto: where medcnn and the MONAI baseline run")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16", "auto"),
                    help="medcnn's precision; the MONAI baseline runs under torch.autocast with the same dtype")
    ap.add_argument("--backend", default="torch",
                    help="comma-separated network executors, one medcnn column each: torch (default), onnxruntime, "
                         "auto; ratios are against the first")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--tmp", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))  # before numpy/torch start their pools
    warnings.filterwarnings("ignore", module="monai")  # deprecation chatter of the baseline
    if args.worker:
        return worker(args)

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up below (git worktree)
    from medcnn.errors import MedcnnError
    from medcnn.hardware import cpu_facts
    from medcnn.inference import select_device

    try:
        dev = select_device(args.device)
    except MedcnnError as exc:
        print(f"bench_case: {exc}", file=sys.stderr)
        return 2
    args.device = str(dev)
    print(f"CPU: {cpu_facts()}; {args.threads} thread(s); load average {os.getloadavg()[0]:.1f} at start")
    if dev.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(dev)} (torch {torch.__version__}, CUDA {torch.version.cuda}); "
              f"precision {args.precision}; peak RSS below is host memory")
    with tempfile.TemporaryDirectory(prefix="bench_case_") as tmpdir:
        tmp = Path(tmpdir)
        args.tmp = str(tmp)
        rev_tree = None
        if args.against_rev:
            rev_tree = tmp / "rev"
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(rev_tree), args.against_rev],
                           check=True, capture_output=True)
        try:
            for name in args.cases.split(","):
                run_case(name, args, tmp, rev_tree)
        finally:
            if rev_tree is not None:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(rev_tree)],
                               capture_output=True)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")
    return 0


def run_case(name: str, args, tmp: Path, rev_tree: Path | None) -> None:
    import numpy as np

    backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    segs = {}
    for be in backends:
        seg, net = build_segmenter(name, classes=args.ct_classes, quick=args.quick, device=args.device,
                                   precision=args.precision, backend=be, cache_dir=str(tmp / "onnx"))
        segs[be] = seg
    seg = segs[backends[0]]
    baselines = {}
    if not args.no_monai:
        wanted = args.monai_modes.split(",")
        modes = (["bilinear"] if "bilinear" in wanted else []) + \
            ([seg.preprocess_spec.image_order] if "bundle" in wanted and seg.preprocess_spec.target_spacing else [])
        for mode in modes:
            run = monai_pipeline(seg, net, mode)
            if run is not None:
                baselines[f"Spacingd mode={mode}"] = run
    cases = case_inputs(name, quick=args.quick, cine_frames=args.cine_frames, tmp=tmp)
    if not cases:
        print(f"\ncase {name}: shared data not found (set MEDCNN_DATA); skipped")
        return
    rev = run_child(rev_tree, args, tmp / f"rev_{name}.json", name, args.repeats) if rev_tree is not None else None
    for case in cases:
        first_s = {}
        for be, s in segs.items():  # warm-up (first calls allocate pools, load libraries; exports, auto)
            t = time.perf_counter()
            medcnn_case(s, case)
            first_s[be] = time.perf_counter() - t
        for run in baselines.values():
            run(case["files"])
        runs, base_s, base_cpu, base_labels = [], {k: [] for k in baselines}, {k: [] for k in baselines}, {}
        be_runs = {be: [] for be in backends[1:]}
        be_labels = {}
        for _ in range(args.repeats):  # interleaved, same process
            labels, timings = medcnn_case(seg, case)
            runs.append(timings)
            for be in be_runs:
                be_labels[be], t_be = medcnn_case(segs[be], case)
                be_runs[be].append(t_be)
            for k, run in baselines.items():
                t, c = time.perf_counter(), time.process_time()
                base_labels[k] = run(case["files"])
                base_s[k].append(time.perf_counter() - t)
                base_cpu[k].append(time.process_time() - c)
        columns = {"medcnn (this)" if len(backends) == 1 else f"medcnn {backends[0]}": median_timings(runs)}
        for be, r in be_runs.items():
            columns[f"medcnn {be}"] = median_timings(r)
        if rev is not None:
            columns[f"medcnn {args.against_rev}"] = median_timings(rev["cases"][case["id"]])
        shape = "x".join(str(s) for s in labels.shape)
        print_breakdown(f"case {case['id']} ({name}, labels {shape}, {args.repeats} repeats)", columns)
        mine = next(iter(columns.values()))
        for k in baselines:
            m, mc = statistics.median(base_s[k]), statistics.median(base_cpu[k])
            lab = base_labels[k]
            agree = float((lab == labels).mean()) if lab.shape == labels.shape else float("nan")
            print(f"  MONAI transform pipeline ({k}): {m:.3f} s whole case ({mc:.3f} s CPU); medcnn "
                  f"{m / mine['whole_case']:.2f}x faster ({mc / mine['whole_case_cpu']:.2f}x in CPU time); "
                  f"labels equal on {100 * agree:.2f}% of voxels")
        if len(backends) > 1:
            print_backends(backends, segs, columns, first_s, labels, be_labels,
                           {k: statistics.median(v) for k, v in base_s.items()})
        if rev is not None:
            old = np.load(tmp / f"rev_{name}_{case['id']}.npy")
            same = old == labels
            print(f"  labels equal to {args.against_rev} on {100 * same.mean():.4f}% of voxels "
                  f"({int((~same).sum())} differ of {same.size})")
    if not args.no_memory:
        new = run_child(REPO, args, tmp / f"mem_{name}.json", name, 1)
        line = f"  peak RSS ({name}, one run per case in a fresh process): this checkout {gib(new['peak_rss_bytes'])}"
        if rev_tree is not None:
            old = run_child(rev_tree, args, tmp / f"revmem_{name}.json", name, 1)
            line += f", {args.against_rev} {gib(old['peak_rss_bytes'])}"
        print(line)


if __name__ == "__main__":
    sys.exit(main())
