"""Sliding-window inference throughput: medcnn's predictor vs MONAI's, same network, same volume.

Baseline: ``monai.inferers.sliding_window_inference`` in float32 (contiguous tensors,
``torch.inference_mode``, ``sw_batch_size=1``, Gaussian blending), measured in the same
process on the same data.

Network: MONAI ``UNet(channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2),
num_res_units=2)``, 1 input channel, 3 classes, briefly trained (``--train-steps``) on
a synthetic 192 x 192 x 96 volume of nested ellipsoids in noise so its labels are not
degenerate (an untrained network's logits sit near its decision boundaries and make
label agreement meaningless). ROI 96^3, overlap 0.25 (``--overlap``), Gaussian blending.

Prints, per configuration: median wall time over ``--repeats`` runs, throughput in
voxels/s, the ratio to the MONAI fp32 baseline, the peak resident memory added during
one call (measured in a fresh child process), and the fraction of voxels whose label equals MONAI fp32's.

With a CUDA GPU (``--device all``, the default, when ``torch.cuda.is_available()``; or
``--device cuda``) the same table is printed for the GPU: MONAI fp32 on the GPU as the
baseline, and MONAI under ``torch.autocast`` (fp16, bf16 where supported; one and four
windows per batch) beside medcnn's fp32/fp16/bf16 on the same network and windows; the
column ``x MONAI AMP`` compares each medcnn configuration with MONAI at the same precision
and batch. Peak memory = ``torch.cuda.max_memory_allocated`` above the level before one
call. With a GPU the network is trained on it (seconds; the CPU would take minutes).

``--json FILE`` also writes the table's rows (for ``make gpu-check``'s Markdown table).

Run: ``python benchmarks/bench_inference.py [--repeats 3] [--train-steps 120] [--compile] [--device all|cpu|cuda]
[--json FILE]``
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import statistics
import tempfile
import sys
import threading
import time

import numpy as np

SHAPE = (192, 192, 96)
ROI = (96, 96, 96)
#: ``--small``: the smoke-test size (a quarter of each side's volume), seconds even where bf16 is emulated
SMALL_SHAPE, SMALL_ROI = (96, 96, 48), (48, 48, 48)
N_CLASSES = 3


def synthetic_case(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(image (X, Y, Z) float32, labels (X, Y, Z) uint8): ellipsoids (1) with cores (2) in noise."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in SHAPE), indexing="ij")
    lab = np.zeros(SHAPE, np.uint8)
    scale = np.array(SHAPE, float) / (192, 192, 96)  # the same scene at --small
    for _ in range(7):
        c = rng.uniform([20, 20, 15], [172, 172, 81]) * scale
        r = rng.uniform([12, 12, 8], [30, 30, 18]) * scale
        inside = ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2 <= 1
        lab[inside] = np.maximum(lab[inside], 1)
        if rng.random() < 0.7:
            core = ((x - c[0]) / (0.45 * r[0])) ** 2 + ((y - c[1]) / (0.45 * r[1])) ** 2 + \
                   ((z - c[2]) / (0.45 * r[2])) ** 2 <= 1
            lab[core] = 2
    field = 0.4 * np.sin(x / 23.0) * np.cos(y / 31.0) + 0.2 * np.sin(z / 17.0)
    img = field + np.where(lab == 1, 1.5, 0.0) + np.where(lab == 2, 3.0, 0.0)
    img = img + rng.normal(0, 0.6, SHAPE)
    img = (img - img.mean()) / img.std()
    return img.astype(np.float32), lab


def build_unet():
    from monai.networks.nets import UNet

    return UNet(spatial_dims=3, in_channels=1, out_channels=N_CLASSES, channels=(16, 32, 64, 128, 256),
                strides=(2, 2, 2, 2), num_res_units=2)


def train_briefly(net, img: np.ndarray, lab: np.ndarray, steps: int, *, patch: int = 64, seed: int = 0,
                  device: str = "cpu") -> float:
    """A few Adam steps on random crops on ``device`` (bf16 autocast where supported, fp16
    with a gradient scaler on older GPUs); returns seconds. The network ends on the CPU."""
    import torch
    from monai.losses import DiceCELoss

    from medcnn.inference.device import cpu_supports_bf16

    if steps <= 0:
        return 0.0
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    patch = min(patch, *SHAPE)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    net.to(device)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    net.train()
    scaler = None
    if device == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        ctx = lambda: torch.autocast("cuda", dtype=dtype)  # noqa: E731
        scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    else:
        ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if cpu_supports_bf16() else contextlib.nullcontext
    for step in range(steps):
        xs, ys = [], []
        for _ in range(2):
            o = [int(rng.integers(0, n - patch + 1)) for n in SHAPE]
            sl = tuple(slice(a, a + patch) for a in o)
            xs.append(img[sl])
            ys.append(lab[sl])
        x = torch.from_numpy(np.stack(xs)[:, None]).to(device)
        y = torch.from_numpy(np.stack(ys)[:, None].astype(np.int64)).to(device)
        with ctx():
            out = net(x)
        loss = loss_fn(out.float(), y)
        opt.zero_grad()
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        if step % 10 == 0 or step == steps - 1:
            print(f"  train step {step + 1}/{steps}: loss {loss.item():.3f}", file=sys.stderr)
    net.eval()
    net.to("cpu")
    return time.perf_counter() - t0


class PeakRSS:
    """Peak resident set size (bytes) above the level at entry, sampled every 5 ms."""

    def __init__(self) -> None:
        import psutil

        self.proc = psutil.Process()
        self.peak = 0

    def __enter__(self):
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def added(self) -> int:
        return self.peak - self.base


def run_once(fn, sync=lambda: None):
    """(wall seconds, CPU seconds, output) of one call; ``sync`` waits for queued GPU work."""
    import gc

    gc.collect()
    sync()
    c0 = time.process_time()
    t0 = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - t0, time.process_time() - c0, out


def cached_training(net, img, gt, steps: int, cache_dir: str | None, *, device: str = "cpu") -> float:
    """Train briefly, or load the weights trained by an earlier run (same steps and seed)."""
    import os

    import torch
    from safetensors.torch import load_file, save_file

    path = None
    if cache_dir:
        os.makedirs(cache_dir, exist_ok=True)
        where = "" if device == "cpu" else f"_{device}"
        path = os.path.join(cache_dir, f"bench_unet16_{'x'.join(map(str, SHAPE))}_steps{steps}_seed0{where}"
                                       ".safetensors")
        if os.path.exists(path):
            net.load_state_dict(load_file(path))
            print(f"loaded trained weights from {path}", file=sys.stderr)
            return 0.0
    t = train_briefly(net, img, gt, steps, device=device)
    if path:
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, path)
    return t


def main(argv=None) -> int:
    global SHAPE, ROI
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds (configurations interleaved per round)")
    ap.add_argument("--overlap", type=float, default=0.25)
    ap.add_argument("--train-steps", type=int, default=120,
                    help="Adam steps on the synthetic volume before timing (cached; 120 reaches Dice ~0.96 / 0.84 "
                         "on the two foreground classes, so agreement is measured on real boundaries)")
    ap.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "medcnn-bench"),
                    help="where the briefly trained weights are cached ('' disables)")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile (inductor) variants")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--quick", action="store_true", help="fewer configurations")
    ap.add_argument("--small", action="store_true",
                    help=f"volume {SMALL_SHAPE}, roi {SMALL_ROI} instead of {SHAPE}, {ROI} (the smoke test's size)")
    ap.add_argument("--no-memory", dest="memory", action="store_false",
                    help="skip the per-configuration peak-memory measurement (child processes)")
    ap.add_argument("--device", choices=("all", "cpu", "cuda"), default="all",
                    help="all (default): the CPU table, plus the GPU table when CUDA is available")
    ap.add_argument("--json", default=None, help="also write the table rows (JSON) to this file")
    ap.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.small:
        SHAPE, ROI = SMALL_SHAPE, SMALL_ROI

    import torch

    from medcnn.inference import cpu_supports_bf16

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    img, gt = synthetic_case()
    net = build_unet()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, bf16 native: {cpu_supports_bf16()}, "
          f"load average {os.getloadavg()[0]:.1f}; volume {SHAPE}, roi {ROI}, overlap {args.overlap}, "
          f"gaussian blending, {N_CLASSES} classes", file=sys.stderr)
    if args.memory_child is not None:  # quiet: only the JSON line goes to stdout
        sys.stderr = open(os.devnull, "w")
    train_device = "cuda" if args.device in ("all", "cuda") and args.memory_child is None and \
        torch.cuda.is_available() else "cpu"
    t_train = cached_training(net, img, gt, args.train_steps, args.cache_dir or None, device=train_device)
    if t_train:
        print(f"trained {args.train_steps} steps on the {train_device} in {t_train:.0f} s", file=sys.stderr)
    net.eval()
    devices = ["cpu"] if args.memory_child is not None else \
        [d for d in ("cpu", "cuda") if args.device in (d, "all")]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            print("CUDA is not available (torch.cuda.is_available() is False)", file=sys.stderr)
            return 2
        devices.remove("cuda")
        print("no CUDA GPU: CPU table only", file=sys.stderr)
    tables = []
    for device in devices:
        rc = run_table(device, net, img, gt, args, tables)
        if rc:
            return rc
    if args.json:
        import json

        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(tables, fh, indent=1)
    return 0


def run_table(device: str, net, img: np.ndarray, gt: np.ndarray, args, tables: list | None = None) -> int:
    """Time MONAI fp32 and the medcnn configurations on ``device``; print the table."""
    import torch
    from monai.inferers import sliding_window_inference as monai_swi

    from medcnn.inference import Segmenter

    cuda = device == "cuda"
    n_vox = int(np.prod(SHAPE))
    base_net = copy.deepcopy(net).to(device)
    x5 = torch.from_numpy(img)[None, None].to(device)

    def monai_run(precision: str = "fp32", sw: int = 1):
        """MONAI's sliding window (under torch.autocast for fp16/bf16, as a MONAI bundle's
        ``amp: true`` evaluator runs it); float32 accumulation (MONAI's default)."""
        ctx = contextlib.nullcontext() if precision == "fp32" else \
            torch.autocast(device, dtype=torch.float16 if precision == "fp16" else torch.bfloat16)

        def fn():
            with torch.inference_mode(), ctx:
                out = monai_swi(x5, ROI, sw, base_net, overlap=args.overlap, mode="gaussian")[0].argmax(0)
            return out.to(torch.uint8).cpu()
        return fn

    monai_fp32 = monai_run()

    if cuda:
        name = torch.cuda.get_device_name()
        print(f"\n== GPU: {name}", file=sys.stderr)
        configs = [
            ("medcnn fp32 sw1", dict(precision="fp32", sw_batch_size=1)),
            ("medcnn fp16 sw1", dict(precision="fp16", sw_batch_size=1)),
            ("medcnn fp16 sw4", dict(precision="fp16", sw_batch_size=4)),
            ("medcnn auto (defaults)", dict()),
        ]
        if torch.cuda.is_bf16_supported():
            configs.insert(2, ("medcnn bf16 sw1", dict(precision="bf16", sw_batch_size=1)))
        if args.compile:
            configs.append(("medcnn fp16 sw4 + torch.compile", dict(precision="fp16", sw_batch_size=4,
                                                                    compile=True)))
    else:
        configs = [
            ("medcnn fp32 contiguous sw1", dict(precision="fp32", memory_format="contiguous", sw_batch_size=1)),
            ("medcnn fp32 channels_last sw1", dict(precision="fp32", memory_format="channels_last",
                                                   sw_batch_size=1)),
            ("medcnn fp32 channels_last sw2", dict(precision="fp32", memory_format="channels_last",
                                                   sw_batch_size=2)),
            ("medcnn bf16 contiguous sw1", dict(precision="bf16", memory_format="contiguous", sw_batch_size=1)),
            ("medcnn bf16 channels_last sw1", dict(precision="bf16", memory_format="channels_last",
                                                   sw_batch_size=1)),
            ("medcnn bf16 contiguous sw2", dict(precision="bf16", memory_format="contiguous", sw_batch_size=2)),
            ("medcnn auto (defaults)", dict()),
        ]
        if args.quick:  # fp32 and bf16 without options, and the defaults
            configs = [c for c in configs if c[0] in ("medcnn fp32 contiguous sw1", "medcnn bf16 contiguous sw1")
                       or not c[1]]
        if args.compile:
            configs += [("medcnn bf16 contiguous sw1 + torch.compile",
                         dict(precision="bf16", memory_format="contiguous", sw_batch_size=1, compile=True)),
                        ("medcnn fp32 channels_last sw1 + torch.compile",
                         dict(precision="fp32", memory_format="channels_last", sw_batch_size=1, compile=True))]
    arr = img[None]
    fns = {"monai sliding_window_inference fp32 (baseline)": monai_fp32}
    amp_of = {}  # medcnn configuration -> MONAI AMP row of the same precision and batch
    if cuda:
        for prec in [p for p in ("fp16", "bf16") if p == "fp16" or torch.cuda.is_bf16_supported()]:
            for sw in (1, 4):
                fns[f"monai sliding_window_inference {prec} autocast sw{sw}"] = monai_run(prec, sw)
    for name, opts in configs:
        seg = Segmenter(copy.deepcopy(net), roi_size=ROI, in_channels=1, out_channels=N_CLASSES,
                        overlap=args.overlap, device=device, **opts)
        if not opts:
            name = f"{name}: {seg.precision}, {seg.memory_format}, sw{seg.sw_batch_size}"
        monai_twin = f"monai sliding_window_inference {seg.precision} autocast sw{seg.sw_batch_size}"
        if monai_twin in fns:
            amp_of[name] = monai_twin
        fns[name] = (lambda s: (lambda: s.predict_array(arr, outputs=("labels",)).labels))(seg)
    if args.memory_child is not None:
        import json

        fn = list(fns.values())[args.memory_child]
        fn()  # warm-up
        with PeakRSS() as mem:
            fn()
        print(json.dumps({"peak_added_bytes": mem.added}))
        return 0
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    # warm-up (and compilation) once each, then interleave the timed rounds so that load
    # from other processes hits every configuration alike
    outs, compile_s = {}, {}
    for name, fn in fns.items():
        t, _, outs[name] = run_once(fn, sync)
        if "compile" in name:
            compile_s[name] = t
            print(f"  {name}: first call incl. compilation {t:.1f} s", file=sys.stderr)
    ref = outs[next(iter(fns))].numpy()
    dice_gt = [2 * np.sum((ref == c) & (gt == c)) / max(np.sum(ref == c) + np.sum(gt == c), 1) for c in (1, 2)]
    print(f"MONAI fp32 labels vs synthetic truth: Dice class1 {dice_gt[0]:.3f}, class2 {dice_gt[1]:.3f}; "
          f"label fractions {[round(float(np.mean(ref == c)), 3) for c in range(N_CLASSES)]}", file=sys.stderr)
    times = {n: [] for n in fns}
    cpu = {n: [] for n in fns}
    ratios = {n: [] for n in fns}
    agree = {}
    for r in range(args.repeats):
        for name, fn in fns.items():
            t, c, out = run_once(fn, sync)
            times[name].append(t)
            cpu[name].append(c)
            agree[name] = float(np.mean(out.numpy() == ref))
        base = times[next(iter(fns))][-1]
        for name in fns:
            ratios[name].append(base / times[name][-1])
        print(f"  round {r + 1}/{args.repeats}: " + ", ".join(f"{t[-1]:.2f}" for t in times.values()) + " s",
              file=sys.stderr)

    peaks = {n: float("nan") for n in fns}
    if cuda:
        for n, fn in fns.items():
            sync()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            fn()
            sync()
            peaks[n] = torch.cuda.max_memory_allocated() - before
        peak_text = "peak = GPU memory allocated above the level before one call (torch.cuda.max_memory_allocated)"
        where = f"GPU {torch.cuda.get_device_name()}"
    else:
        if args.memory:
            for i, n in enumerate(fns):
                peaks[n] = measure_memory_in_child(i, args)
        peak_text = "peak = resident memory added by one call, measured in a fresh child process"
        where = f"CPU, {torch.get_num_threads()} threads"
    print(f"\n[{where}] volume {SHAPE} = {n_vox} voxels, roi {ROI}, overlap {args.overlap}, {N_CLASSES} classes, "
          f"{args.repeats} interleaved rounds, load average now "
          f"{os.getloadavg()[0]:.1f}; 'x MONAI' = median of per-round wall-time ratios; 'cpu x' = ratio of median "
          f"CPU seconds (less sensitive to other processes); {peak_text}")
    c_ref = statistics.median(cpu[next(iter(fns))])
    amp_ratio = {n: statistics.median(times[m]) / statistics.median(times[n]) for n, m in amp_of.items()}
    print(f"{'configuration':<58} {'median s':>9} {'Mvox/s':>8} {'x MONAI':>8} {'cpu x':>6} {'peak MiB':>9} "
          f"{'agree':>8}" + (f" {'x MONAI AMP':>11}" if cuda else ""))
    rows = []
    for name in fns:
        t = statistics.median(times[name])
        print(f"{name:<58} {t:9.2f} {n_vox / t / 1e6:8.2f} {statistics.median(ratios[name]):8.2f} "
              f"{c_ref / statistics.median(cpu[name]):6.2f} {peaks[name] / 2**20:9.0f} {agree[name]:8.5f}"
              + (f" {amp_ratio[name]:11.2f}" if name in amp_ratio else (f" {'':>11}" if cuda else "")))
        rows.append({"configuration": name, "median_s": t, "mvox_per_s": n_vox / t / 1e6,
                     "x_monai_fp32": statistics.median(ratios[name]), "peak_mib": peaks[name] / 2**20,
                     "agreement_vs_monai_fp32": agree[name], "x_monai_amp_same_batch": amp_ratio.get(name),
                     "monai_amp_row": amp_of.get(name)})
    if tables is not None:
        tables.append({"device": device, "where": where, "volume": list(SHAPE), "roi": list(ROI),
                       "overlap": args.overlap, "repeats": args.repeats, "rows": rows})
    cands = [n for n in list(fns)[1:] if agree[n] >= 0.995 and not n.startswith("monai")]
    if not cands:
        print("\nno medcnn configuration reached 99.5% label agreement with MONAI fp32")
        return 1
    best = max(cands, key=lambda n: statistics.median(ratios[n]))
    print(f"\n[{where}] best medcnn configuration with >= 99.5% label agreement: {best}: "
          f"{statistics.median(ratios[best]):.2f}x MONAI fp32 throughput (agreement {agree[best]:.5f})")
    for n, t in compile_s.items():
        print(f"torch.compile first call (compilation + one prediction): {n}: {t:.1f} s")
    return 0


def measure_memory_in_child(index: int, args) -> int:
    """Peak resident memory (bytes) added by one call of configuration ``index``, measured
    in a fresh process. glibc keeps freed blocks once its mmap threshold adapts, which hides
    later peaks from RSS; the child fixes the threshold so every large tensor is an mmap
    returned on free (this slows allocation, so timings are never taken there)."""
    import json
    import subprocess

    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    cmd = [sys.executable, os.path.abspath(__file__), "--memory-child", str(index), "--overlap", str(args.overlap),
           "--train-steps", str(args.train_steps), "--cache-dir", args.cache_dir]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    cmd += ["--compile"] * bool(args.compile) + ["--quick"] * bool(args.quick) + ["--small"] * bool(args.small)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return int(json.loads(out.strip().splitlines()[-1])["peak_added_bytes"])


if __name__ == "__main__":
    sys.exit(main())
