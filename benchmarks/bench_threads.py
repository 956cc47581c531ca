"""Prediction time on an idle and on a busy machine: medcnn's thread policy against one
thread and against torch's defaults (one spinning thread per core).

For each scenario — *idle*, and *busy* (one spinning Python process per usable core
started beside medcnn, as other jobs on a shared machine would be) — each configuration
runs in a fresh process (the OpenMP wait policy is read once, when torch loads): it loads
the bundle, predicts the case once to warm up, then ``--repeats`` times, timed. The
configurations:

* ``medcnn default``: ``threads="auto"``, the OpenMP runtime's default waiting;
* ``auto + OMP_WAIT_POLICY=PASSIVE``: the same thread choice with passive waiting, to
  show what passive waiting costs or saves;
* ``--threads 1``: one thread;
* ``torch defaults (before)``: torch's default thread count and the OpenMP runtime's
  default waiting (spin, then sleep) — what medcnn did before the policy.

Printed: median seconds per prediction, the threads chosen, and the ratios the policy is
judged by (busy / idle of the default; default / ``--threads 1`` when busy), with the CPU
flags. Rounds alternate the configurations' order.

Usage::

    .venv/bin/python benchmarks/bench_threads.py [--model cardiac-cine-mri] \
        [--case acdc/patient001_ED.nii.gz] [--repeats 5] [--rounds 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from medcnn.hardware import cpu_facts  # noqa: E402

CHILD = r"""
import json, sys, time
import torch
from medcnn.inference import Segmenter
from medcnn.io import read_volume
model, case, threads, repeats = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
threads = "auto" if threads == "auto" else (torch.get_num_threads() if threads == "torch" else int(threads))
seg = Segmenter.from_bundle(model, device="cpu", threads=threads)
vol = read_volume(case)
pred = seg.predict(vol)
times, chosen = [], []
for _ in range(repeats):
    t = time.perf_counter()
    pred = seg.predict(vol)
    times.append(time.perf_counter() - t)
    chosen.append(pred.info["threads"]["threads"])
print(json.dumps({"times_s": times, "threads": chosen, "labels_sum": int(pred.labels.array.astype("int64").sum())}))
"""

CONFIGS = {
    "medcnn default": {"threads": "auto", "env": {}},
    "auto + OMP_WAIT_POLICY=PASSIVE": {"threads": "auto", "env": {"OMP_WAIT_POLICY": "PASSIVE"}},
    "--threads 1": {"threads": "1", "env": {}},
    "torch defaults (before)": {"threads": "torch", "env": {}},
}


def _spin(stop) -> None:  # pragma: no cover - runs in a child
    while not stop.is_set():
        for _ in range(100_000):
            pass


def run_child(model: str, case: str, cfg: dict, repeats: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env.update(cfg["env"])
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", CHILD, model, case, cfg["threads"], str(repeats)], env=env,
                         capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"bench_threads: child failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    from medcnn._testing import shared_data_dir
    from medcnn.inference.threads import usable_cores

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="cardiac-cine-mri")
    ap.add_argument("--case", default="acdc/patient001_ED.nii.gz", help="path, or relative to the shared data")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    case = Path(args.case)
    if not case.exists():
        root = shared_data_dir()
        if root is None:
            print("bench_threads: shared data not found (set MEDCNN_DATA) and --case is not a file", file=sys.stderr)
            return 2
        case = root / args.case
    cores = usable_cores()
    print(f"cpu: {cpu_facts()}; usable cores {cores}; load average before: {os.getloadavg()}")
    results: dict[str, dict[str, list]] = {}
    ctx = multiprocessing.get_context("spawn")
    for scenario in ("idle", "busy"):
        stop = ctx.Event()
        spinners = [ctx.Process(target=_spin, args=(stop,), daemon=True) for _ in range(cores if scenario == "busy"
                                                                                      else 0)]
        for p in spinners:
            p.start()
        try:
            names = list(CONFIGS)
            for r in range(args.rounds):
                for name in (names if r % 2 == 0 else names[::-1]):
                    res = run_child(args.model, str(case), CONFIGS[name], args.repeats)
                    slot = results.setdefault(f"{scenario}|{name}", {"times_s": [], "threads": [], "labels": []})
                    slot["times_s"] += res["times_s"]
                    slot["threads"] += res["threads"]
                    slot["labels"].append(res["labels_sum"])
        finally:
            stop.set()
            for p in spinners:
                p.join(timeout=10)
                if p.is_alive():
                    p.terminate()
    med = {k: statistics.median(v["times_s"]) for k, v in results.items()}
    print(f"\n{args.model} on {case.name}: median seconds per prediction ({args.rounds} rounds x {args.repeats})")
    print(f"| configuration | idle s | busy ({cores} spinning processes) s | busy / idle | threads idle | threads busy |")
    print("|---|---|---|---|---|---|")
    for name in CONFIGS:
        i, b = med[f"idle|{name}"], med[f"busy|{name}"]
        ti = sorted(set(results[f"idle|{name}"]["threads"]))
        tb = sorted(set(results[f"busy|{name}"]["threads"]))
        print(f"| {name} | {i:.2f} | {b:.2f} | {b / i:.2f}x | {ti} | {tb} |")
    d_idle, d_busy, one_busy = med["idle|medcnn default"], med["busy|medcnn default"], med["busy|--threads 1"]
    before_busy = med["busy|torch defaults (before)"]
    same = len({x for v in results.values() for x in v["labels"]}) == 1
    print(f"\ndefault busy / idle: {d_busy / d_idle:.2f}x (target <= 2.5x)")
    print(f"default / --threads 1 when busy: {d_busy / one_busy:.2f}x (target <= 1.10x)")
    print(f"before / default when busy: {before_busy / d_busy:.2f}x faster now")
    print(f"labels identical in every configuration: {same}")
    if args.json:
        Path(args.json).write_text(json.dumps({"medians_s": med, "raw": results, "cpu": cpu_facts()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
