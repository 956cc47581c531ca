#!/usr/bin/env python
"""Cross-validation of the four-sequence tumour recipe, and export of the shipped bundle.

    python scripts/brats_cv_summary.py --runs RUN_FOLD0 RUN_FOLD1 ... [--final RUN_ALL] \
        [--export medcnn/bundles/brain-tumour-mri-4seq] [--data ../shared/data] [--threads 2]

Each ``RUN_FOLDk`` is a ``medcnn train --config configs/brain-tumour-mri-4seq.yaml --fold k``
run folder (``bundle/`` with ``provenance.validation.held_out_groups``: the patients that
fold never trained on). The recipe was fixed before any fold was run and no checkpoint was
chosen on a held-out case (final-step weights), so the figures are of kind
``cross-validation``.

What it does:

* runs every fold's bundle through the shipped inference path (``Segmenter``) on its held-out
  BraTS 2018 cases, on their own 1 mm grids, and scores whole tumour, tumour core and enhancing
  tumour with ``medcnn validate``'s own metrics (:func:`medcnn.metrics.evaluate.evaluate_case`,
  BraTS's rule for an empty region): Dice, HD95 (mm), predicted and reference volume (mL);
* keeps one row per fold, case and region in ``docs/crossval/brain-tumour-mri-4seq-cases.csv``
  and prints the table derived from that CSV (``tests/test_crossval_tables.py`` re-derives it);
* with ``--final RUN_ALL`` (the same recipe on all 8 patients, ``medcnn train --folds 1``):
  records that summary as the shipped weights' ``provenance.cross_validation`` (an estimate of
  the recipe, not of these weights), the data use (every case trained it; nothing held out),
  and copies the bundle to ``--export``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from medcnn.models import load_bundle, update_bundle  # noqa: E402
from medcnn.report.data_use import data_use_record  # noqa: E402
from medcnn.train.crossval import (  # noqa: E402
    read_region_cases_csv, region_crossval_markdown, summarise_region_folds, write_region_cases_csv)

CASES_CSV = REPO / "docs" / "crossval" / "brain-tumour-mri-4seq-cases.csv"
CONFIG = REPO / "configs" / "brain-tumour-mri-4seq.yaml"
SPLIT_NOTE = ("4-fold cross-validation grouped by patient on the 8 BraTS 2018 four-sequence patients of the shared "
              "data (2 held out per fold, each patient held out exactly once; configs/brain-tumour-mri-4seq.yaml, "
              "split_seed 0); recipe fixed before any fold ran, final-step weights (no checkpoint selection). The "
              "brats2015 cases were not used: they have two of the four sequences, are already z-scored with a "
              "constant background, and may be the same patients as the four BRATS2013 cases here.")


def _held_out_cases(run: Path, data: Path):
    from medcnn.config import read_mapping
    from medcnn.train.datasets import load_dataset_json

    pattern = read_mapping(CONFIG)["data"]["group_pattern"]
    bundle = load_bundle(run / "bundle")
    v = bundle.provenance["validation"]
    groups = set(v["held_out_groups"])
    cases = [c for c in load_dataset_json(data / "brats2018" / "dataset.json", group_pattern=pattern)
             if c.group in groups]
    regions = {k: tuple(x) for k, x in v["regions"].items()}
    return bundle, cases, regions


def evaluate_runs(runs: list[Path], data: Path, *, threads: int) -> list[dict]:
    from medcnn.inference import Segmenter
    from medcnn.io import read_labels, read_volume
    from medcnn.metrics.evaluate import evaluate_case

    rows = []
    for fold, run in enumerate(runs):
        bundle, cases, regions = _held_out_cases(run, data)
        if not cases:
            raise SystemExit(f"{run}: no held-out BraTS 2018 case found under {data}")
        seg = Segmenter.from_bundle(run / "bundle", device="cpu", precision="fp32", threads=threads)
        for case in cases:
            channels = [read_volume(p) for p in case.images]
            ref = read_labels(case.label, reference=channels[0])
            pred = seg.predict(channels).labels
            for r in evaluate_case(pred, ref, labels={}, regions=regions, empty_policy="brats", case_id=case.case_id):
                rows.append({"fold": fold, "kind": "cross-validation", "case_id": case.case_id, "patient": case.group,
                             "region": r["label"], "dice": r["dice"], "hd95_mm": r["hd95_mm"],
                             "pred_volume_ml": r["pred_volume_ml"], "ref_volume_ml": r["ref_volume_ml"],
                             "volume_error_percent": None if r["ref_empty"] else r["rel_volume_error_percent"]})
            wt = [r for r in rows if r["case_id"] == case.case_id]
            print(f"fold {fold} {case.case_id}: " + ", ".join(f"{r['region']} Dice {r['dice']:.3f}" for r in wt),
                  flush=True)
    return rows


def export(final: Path, dest: Path, summary: dict) -> None:
    src = final / "bundle"
    b = load_bundle(src)
    prov = b.provenance
    training = sorted(prov.get("data_use", {}).get("training") or [])
    if not training:
        raise SystemExit(f"{src}: no data_use.training record (train with medcnn train --folds 1)")
    cv_cases = sorted({c for f in summary["folds"] for c in f["cases"]})
    cv = dict(summary)
    cv["note"] = SPLIT_NOTE + " These figures estimate the recipe: the shipped weights are the same recipe " \
                              "trained on all 8 patients, so every case below also trained them."
    cv["fold_test_cases"] = {str(f["fold"]): list(f["cases"]) for f in summary["folds"]}
    cv["per_case_results"] = CASES_CSV.relative_to(REPO).as_posix()
    tmp = dest.with_name(dest.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(src, tmp)
    update_bundle(tmp, provenance={
        **prov,
        "task": "tumour",
        "cross_validation": cv,
        "data_use": data_use_record(
            training=training, checkpoint=prov.get("data_use", {}).get("checkpoint", "final step"),
            notes=["cross_validation: the same recipe's 4 fold models, each tested on the 2 patients it never saw "
                   f"({', '.join(cv_cases)}); all 8 trained the shipped weights, so no figure here is a test of "
                   "them", "brats2015 cases not used (two sequences only; possibly the same patients as the "
                   "BRATS2013 cases)"]),
    })
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    print(f"exported {dest}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="*", default=[], help="fold run folders, fold 0 first (re-evaluated)")
    ap.add_argument("--csv", default=str(CASES_CSV), help="per-case CSV (written with --runs, else read)")
    ap.add_argument("--final", default=None, help="run folder of the recipe trained on all patients (--folds 1)")
    ap.add_argument("--export", default=None, help="copy the final bundle here with its records")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="shared data folder")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--markdown", default=None, help="also write the table here")
    args = ap.parse_args(argv)

    if args.runs:
        rows = evaluate_runs([Path(r) for r in args.runs], Path(args.data), threads=args.threads)
        write_region_cases_csv(args.csv, rows)
    summary = summarise_region_folds(read_region_cases_csv(args.csv))
    table = region_crossval_markdown(summary)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table)
    if args.final:
        if not args.export:
            raise SystemExit("--final needs --export")
        export(Path(args.final), Path(args.export), summary)
    print(json.dumps(summary["mean_over_folds"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
