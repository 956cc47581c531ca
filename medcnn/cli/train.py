"""``medcnn train``: train a segmentation network from a YAML config and export a bundle.

Run under ``torchrun --nproc_per_node N -m medcnn train ...`` for data-parallel training
(NCCL on GPUs, gloo on CPU); rank 0 logs, validates, checkpoints and exports.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
from pathlib import Path

__all__ = ["register", "run"]


def register(sub) -> None:
    p = sub.add_parser("train", help="train a network from a config and export it as a bundle",
                       description=__doc__)
    p.add_argument("--config", required=True, help="training config YAML (see configs/)")
    p.add_argument("--data", default=None, help="folder the config's data.dataset is relative to")
    p.add_argument("--out", default=None, help="run folder (default runs/<name>[-foldK])")
    p.add_argument("--fold", type=int, default=None, help="test fold (overrides data.fold)")
    p.add_argument("--folds", type=int, default=None, help="number of folds (overrides data.n_folds)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint")
    p.add_argument("--max-steps", type=int, default=None, help="override max_steps (LR schedule follows)")
    p.add_argument("--stop-after", type=int, default=None,
                   help="stop (with a checkpoint) after this many steps, keeping the max-steps LR schedule")
    p.add_argument("--deterministic", action="store_true", help="torch.use_deterministic_algorithms(True)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: config / auto)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    p.add_argument("--cache", default=None, help="preprocessed-case cache folder (overrides data.cache_dir)")
    p.add_argument("--export", default=None, help="also copy the exported bundle folder here")
    p.add_argument("--evaluate-only", action="store_true",
                   help="skip training: evaluate <out>/bundle on the test fold (and selection split) and record it")
    p.add_argument("--train-on-external", action="store_true",
                   help="train on the data.extra datasets of role external too (a final model; no external test)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medcnn.config import load_config
    from medcnn.train.distributed import init_distributed, shutdown
    from medcnn.train.loop import TrainConfig, train

    from medcnn.report.provenance import portable_command, portable_path

    cfg = load_config(TrainConfig, args.config)
    config_dir = Path(args.config).resolve().parent
    data = cfg.data
    if args.fold is not None:
        data = dataclasses.replace(data, fold=args.fold)
    if args.folds is not None:
        data = dataclasses.replace(data, n_folds=args.folds)
    if args.cache:
        # relative to the config's folder, as the loop resolves it: no build-machine path in the bundle
        data = dataclasses.replace(data, cache_dir=portable_path(Path(args.cache).resolve(), config_dir))
    changes = {"data": data}
    if args.deterministic:
        changes["deterministic"] = True
    if args.device:
        changes["device"] = args.device
    if args.threads:
        changes["num_threads"] = args.threads
    if args.no_progress:
        changes["progress"] = False
    cfg = dataclasses.replace(cfg, **changes)
    out = Path(args.out) if args.out else Path("runs") / (cfg.name + (f"-fold{cfg.data.fold}" if cfg.data.n_folds > 1 else ""))
    if args.evaluate_only:
        from medcnn.train.loop import finalise_run

        v = finalise_run(cfg, out_dir=out, data_dir=args.data, config_dir=config_dir,
                         device="cpu" if cfg.device == "auto" else cfg.device,
                         train_on_external=args.train_on_external)
        _portable_provenance(out / "bundle", config_dir)
        if args.export:
            _export(out / "bundle", Path(args.export))
        print(f"{cfg.name}: test-fold Dice {v.get('mean_dice')}")
        return 0
    env = os.environ
    rank, world, local = int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0))
    ctx = init_distributed(rank=rank, world_size=world, local_rank=local, device=cfg.device)
    command = "medcnn " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else None
    command = portable_command(command, Path.cwd())  # absolute arguments relative to where it ran
    try:
        result = train(cfg, out_dir=out, data_dir=args.data, config_dir=config_dir,
                       resume=args.resume, max_steps=args.max_steps, ctx=ctx, command=command,
                       stop_after=args.stop_after, train_on_external=args.train_on_external)
    finally:
        shutdown(ctx)
    if ctx.is_main:
        if result.bundle is not None:
            _portable_provenance(result.bundle, config_dir)
        if args.export and result.bundle is not None:
            _export(result.bundle, Path(args.export))
        if cfg.checkpoint == "best_selection":
            chosen = ("best selection-split Dice " + ("n/a" if result.best_val_dice is None
                                                      else f"{result.best_val_dice:.4f}"))
        else:
            chosen = "final-step weights (no checkpoint selection)"
        test = (result.validation or {}).get("mean_dice")
        print(f"{cfg.name}: {result.step} steps, {result.wall_s:.0f} s, {chosen}; test-fold Dice "
              f"{test if test is not None else 'n/a'}; bundle: {result.bundle}")
    return 0


def _portable_provenance(bundle: Path, config_dir: Path) -> None:
    """Absolute paths in the bundle's provenance (e.g. from a config's absolute cache_dir or
    dataset) made relative to the training config's folder, weights kept byte for byte."""
    from medcnn.models import load_bundle, update_bundle
    from medcnn.report.provenance import portable_paths

    if not Path(bundle).exists():
        return
    prov = load_bundle(bundle).provenance
    portable = portable_paths(prov, config_dir)
    if portable != prov:
        update_bundle(bundle, provenance=portable)


def _export(bundle: Path, dest: Path) -> None:
    """Copy a bundle folder to ``dest`` (replacing it) via a temporary folder."""
    import shutil

    tmp = dest.with_name(dest.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(bundle, tmp)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
