"""Training cost of a recipe: step time (network vs data), and held-out Dice per CPU hour.

Two parts, both printed as one table so the next recipe change can be judged by it:

1. **Step time, measured now** (``--config``): a few training steps of the config's network,
   patch and batch size on random tensors, split into the network part (forward + loss +
   backward + optimiser) and the data part (patch sampling + augmentation from the
   ``PatchSampler``/augmentation pipeline on synthetic cases of the config's patch size).
   CPU time (``time.process_time``) and wall time are both reported: on a shared machine the
   wall time is inflated by other work, the CPU time much less. Baseline: the same network in
   plain PyTorch without medcnn's data pipeline (the network part alone).
2. **Held-out Dice per CPU hour, from finished runs** (``--runs``): each run folder's
   ``log.csv`` (wall seconds per step) and its bundle's held-out evaluation; "per hour" divides
   the mean held-out foreground Dice by the run's training hours (one torch thread per run).

Usage::

    .venv/bin/python benchmarks/bench_training.py --config configs/cardiac-cine-mri.yaml \
        [--steps 6] [--runs runs/cardiac-cine-mri-fold*]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def measure_steps(cfg, steps: int) -> dict[str, float]:
    import numpy as np
    import torch

    from medcnn.train import _compat
    from medcnn.train.augment import IGNORE_INDEX, PatchSampler, augment_batch, build_augmentation
    from medcnn.train.datasets import PreparedCase
    from medcnn.train.losses import masked_dice_ce_loss

    k = cfg.n_classes
    rng = np.random.default_rng(0)
    shape3 = tuple(int(p * 2) for p in cfg.patch_size) + ((10,) if cfg.spatial_dims == 2 else ())
    spacing = (1.5, 1.5, 10.0) if cfg.spatial_dims == 2 else (1.0, 1.0, 1.0)
    cases = [PreparedCase(f"c{i}", f"c{i}", rng.normal(size=(cfg.network.get("in_channels", 1),) + shape3)
                          .astype(np.float32), rng.integers(0, k, shape3), np.zeros(shape3, bool), np.ones(k, bool),
                          spacing) for i in range(3)]
    sampler = PatchSampler(cases, cfg.patch_size, spatial_dims=cfg.spatial_dims, fg_fraction=cfg.fg_fraction,
                           n_classes=k)
    aug = build_augmentation(cfg.augment, spatial_dims=cfg.spatial_dims)
    torch.manual_seed(0)
    net = _compat.build_network(cfg.network).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    t = {"data_cpu": [], "data_wall": [], "net_cpu": [], "net_wall": []}
    for step in range(steps + 1):  # the first step warms up and is not counted
        c0, w0 = time.process_time(), time.perf_counter()
        batch = augment_batch(sampler.sample(rng, cfg.batch_size), aug, seed=step)
        c1, w1 = time.process_time(), time.perf_counter()
        x = torch.from_numpy(batch["image"])
        y = torch.from_numpy(batch["label"])
        ignore = y == IGNORE_INDEX
        y = torch.where(ignore, torch.zeros_like(y), y)
        logits = net(x)
        loss, _ = masked_dice_ce_loss(logits, y, ignore=ignore, annotated=torch.from_numpy(batch["annotated"]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        c2, w2 = time.process_time(), time.perf_counter()
        if step:
            t["data_cpu"].append(c1 - c0)
            t["data_wall"].append(w1 - w0)
            t["net_cpu"].append(c2 - c1)
            t["net_wall"].append(w2 - w1)
    return {k2: statistics.median(v) for k2, v in t.items()}


def summarise_runs(paths: list[Path]) -> list[dict]:
    rows = []
    for run in paths:
        log, bundle = run / "log.csv", run / "bundle" / "bundle.json"
        if not log.is_file() or not bundle.is_file():
            continue
        with log.open() as fh:
            steps = [r for r in csv.DictReader(fh)]
        prov = json.loads(bundle.read_text())["provenance"]
        val = prov.get("validation") or {}
        dice = val.get("mean_dice") or {}
        hours = float(prov.get("training", {}).get("wall_time_s", float(steps[-1]["seconds"]))) / 3600
        mean_dice = statistics.mean(dice.values()) if dice else float("nan")
        rows.append({"run": run.name, "steps": len(steps), "s_per_step": float(steps[-1]["seconds"]) / len(steps),
                     "hours": hours, "mean_dice": mean_dice, "dice": dice,
                     "dice_per_hour": mean_dice / hours if hours else float("nan")})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "cardiac-cine-mri.yaml"))
    ap.add_argument("--steps", type=int, default=6, help="timed training steps (median reported)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", nargs="*", default=[], help="finished run folders (log.csv + bundle/)")
    args = ap.parse_args(argv)

    import os

    import torch

    from medcnn.config import load_config
    from medcnn.train.loop import TrainConfig

    torch.set_num_threads(args.threads)
    cfg = load_config(TrainConfig, args.config)
    print(f"{cfg.name}: network {cfg.network.get('name')} {cfg.network.get('channels')}, patch {list(cfg.patch_size)}, "
          f"batch {cfg.batch_size}; torch {torch.__version__}, {args.threads} thread(s), "
          f"load average {os.getloadavg()[0]:.1f}")
    m = measure_steps(cfg, args.steps)
    total_cpu, total_wall = m["net_cpu"] + m["data_cpu"], m["net_wall"] + m["data_wall"]
    print(f"\nstep time (median of {args.steps}) |   CPU s |  wall s")
    print(f"network alone (baseline)         | {m['net_cpu']:7.3f} | {m['net_wall']:7.3f}")
    print(f"data: sampling + augmentation    | {m['data_cpu']:7.3f} | {m['data_wall']:7.3f}")
    print(f"whole training step              | {total_cpu:7.3f} | {total_wall:7.3f}   "
          f"(x{total_cpu / m['net_cpu']:.2f} the network alone, CPU time)")
    print(f"=> {cfg.max_steps} steps: {cfg.max_steps * total_cpu / 3600:.2f} CPU hours at this step time")
    rows = summarise_runs([Path(p) for p in args.runs])
    if rows:
        print("\nrun | steps | wall s/step | training hours | held-out mean Dice | Dice per hour")
        for r in rows:
            print(f"{r['run']} | {r['steps']} | {r['s_per_step']:.2f} | {r['hours']:.2f} | {r['mean_dice']:.3f} | "
                  f"{r['dice_per_hour']:.3f}   {json.dumps({k: round(v, 3) for k, v in r['dice'].items()})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
