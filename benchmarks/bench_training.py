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
3. **Recipe table** (``--recipes``): for finished runs on the same fixed split, held-out Dice per
   structure (mean over ED and ES, and per phase), mean |EF error| (LV, RV, points), mean |EDV
   error| (LV, RV, mL) and mean Dice per CPU hour. CPU hours = steps x the CPU seconds of one
   step of the run's own recipe (network + data, measured now with ``--steps`` steps on one
   thread), so runs that shared the machine with other work are charged their own cost, not
   the wall time they waited. ``--markdown FILE`` also writes the table as Markdown.

Usage::

    .venv/bin/python benchmarks/bench_training.py --config configs/cardiac-cine-mri.yaml \
        [--steps 6] [--runs runs/cardiac-cine-mri-fold*]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
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
    from medcnn.train.loop import training_loss

    k = cfg.n_classes
    values = sorted(int(v) for v in cfg.data.labels.values()) if cfg.data.regions else list(range(k))
    rng = np.random.default_rng(0)
    shape3 = tuple(int(p * 2) for p in cfg.patch_size) + ((10,) if cfg.spatial_dims == 2 else ())
    spacing = (1.5, 1.5, 10.0) if cfg.spatial_dims == 2 else (1.0, 1.0, 1.0)
    cases = [PreparedCase(f"c{i}", f"c{i}", rng.normal(size=(cfg.network.get("in_channels", 1),) + shape3)
                          .astype(np.float32), rng.choice(values, shape3), np.zeros(shape3, bool), np.ones(k, bool),
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
        loss, _ = training_loss(cfg, logits, y, ignore=ignore, annotated=torch.from_numpy(batch["annotated"]))
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


def _patient_volumes(cases: list[dict], name: str) -> list[dict]:
    """ED/ES volumes of the structure ``name`` per patient from an evaluation's per-case rows."""
    by: dict[str, dict[str, dict]] = {}
    for r in cases:
        phase = str(r.get("meta", {}).get("phase", "")).upper()
        if phase in ("ED", "ES") and name in r.get("volume_ml", {}):
            by.setdefault(r["group"], {})[phase] = r
    out = []
    for patient, d in sorted(by.items()):
        if "ED" in d and "ES" in d:
            edv, esv = d["ED"]["volume_ml"][name], d["ES"]["volume_ml"][name]
            redv, resv = d["ED"]["ref_volume_ml"][name], d["ES"]["ref_volume_ml"][name]
            ef = 100 * (edv - esv) / edv if edv > 0 else 0.0  # an empty ED prediction: EF 0, counted, not skipped
            out.append({"patient": patient, "edv_err": abs(edv - redv), "esv_err": abs(esv - resv),
                        "ef_err": abs(ef - 100 * (redv - resv) / redv)})
    return out


def recipe_rows(paths: list[Path], steps: int) -> list[dict]:
    """One row per finished run: held-out Dice per structure and phase, EF and EDV errors, CPU hours."""
    from medcnn.config import from_dict
    from medcnn.train.loop import TrainConfig

    rows = []
    for run in paths:
        bundle = run / "bundle" / "bundle.json"
        if not bundle.is_file():
            continue
        prov = json.loads(bundle.read_text())["provenance"]
        val = prov.get("validation") or {}
        val = val.get("test", val) if isinstance(val.get("test"), dict) else val
        cases = val.get("cases") or []
        training = prov.get("training", {})
        cfg = from_dict(TrainConfig, training["config"])
        cpu_step = sum(v for k, v in measure_steps(cfg, steps).items() if k.endswith("_cpu"))
        n_steps = int(training.get("step") or cfg.max_steps)
        row = {"run": run.name, "steps": n_steps, "cpu_s_per_step": cpu_step, "cpu_hours": n_steps * cpu_step / 3600,
               "n_cases": len(cases)}
        structs = ("lv_blood_pool", "lv_myocardium", "rv_blood_pool")
        for s in structs:
            for phase in ("ED", "ES", None):
                vals = [r["dice"][s] for r in cases if s in r.get("dice", {}) and not math.isnan(r["dice"][s])
                        and (phase is None or str(r.get("meta", {}).get("phase", "")).upper() == phase)]
                row[f"{s}{'_' + phase if phase else ''}"] = statistics.mean(vals) if vals else float("nan")
        for key, s in (("lv", "lv_blood_pool"), ("rv", "rv_blood_pool")):
            pv = _patient_volumes(cases, s)
            row[f"{key}_ef_err"] = statistics.mean(p["ef_err"] for p in pv) if pv else float("nan")
            row[f"{key}_edv_err"] = statistics.mean(p["edv_err"] for p in pv) if pv else float("nan")
        row["mean_dice"] = statistics.mean(row[s] for s in structs)
        row["dice_per_cpu_hour"] = row["mean_dice"] / row["cpu_hours"] if row["cpu_hours"] else float("nan")
        rows.append(row)
    return rows


RECIPE_COLUMNS = [("run", "{}"), ("steps", "{}"), ("cpu_hours", "{:.2f}"), ("lv_blood_pool", "{:.3f}"),
                  ("lv_myocardium", "{:.3f}"), ("rv_blood_pool", "{:.3f}"), ("lv_blood_pool_ES", "{:.3f}"),
                  ("rv_blood_pool_ES", "{:.3f}"), ("lv_ef_err", "{:.1f}"), ("rv_ef_err", "{:.1f}"),
                  ("lv_edv_err", "{:.1f}"), ("rv_edv_err", "{:.1f}"), ("mean_dice", "{:.3f}"),
                  ("dice_per_cpu_hour", "{:.2f}")]
RECIPE_HEADERS = ["run", "steps", "CPU h", "LV Dice", "MYO Dice", "RV Dice", "LV ES", "RV ES", "LV EF abs err (pt)",
                  "RV EF abs err (pt)", "LV EDV abs err (mL)", "RV EDV abs err (mL)", "mean Dice", "Dice / CPU h"]


def recipe_markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(RECIPE_HEADERS) + " |", "|" + "---|" * len(RECIPE_HEADERS)]
    for r in rows:
        lines.append("| " + " | ".join(f.format(r[k]) for k, f in RECIPE_COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "cardiac-cine-mri.yaml"))
    ap.add_argument("--steps", type=int, default=6, help="timed training steps (median reported)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", nargs="*", default=[], help="finished run folders (log.csv + bundle/)")
    ap.add_argument("--recipes", nargs="*", default=[], help="finished run folders on one fixed split: recipe table")
    ap.add_argument("--markdown", help="write the recipe table as Markdown to this file")
    args = ap.parse_args(argv)

    import os

    import torch

    from medcnn.config import load_config
    from medcnn.train.loop import TrainConfig

    torch.set_num_threads(args.threads)
    if args.recipes:
        from medcnn.hardware import cpu_facts

        rows = recipe_rows([Path(p) for p in args.recipes], args.steps)
        flags = cpu_facts()
        print(f"recipe table: held-out ACDC cases of each run's test fold; torch {torch.__version__}, "
              f"{args.threads} thread(s) for the step cost; CPU: {flags}")
        md = recipe_markdown(rows)
        print(md)
        if args.markdown:
            Path(args.markdown).write_text(md)
        return 0
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
