#!/usr/bin/env python
"""Summarise the cardiac cross-validation and export the shipped model.

    python scripts/cardiac_cv_summary.py --runs runs --final runs/cardiac-cine-mri-final/bundle \
        --export medcnn/bundles/cardiac-cine-mri [--data ../shared/data]

Reads each fold's held-out (ACDC) and Sunnybrook evaluation from
runs/cardiac-cine-mri-fold{0..4}/bundle/bundle.json, keeps the per-fold, per-case results in
the repository (docs/crossval/cardiac-cine-mri-cases.csv), derives the tables from that CSV
(medcnn.train.crossval; tests/test_crossval_tables.py re-derives them the same way), prints
them and writes them to <runs>/cardiac-cine-mri-cv.{json,md}. With --final
it records them in the final bundle's provenance (``cross_validation``), adds a regression
check (the final weights on the Sunnybrook cases, which it was trained on: a check that the
shipped weights reproduce, not a measure of generalisation) and copies the bundle to --export.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from medcnn.config import load_config  # noqa: E402
from medcnn.models import load_bundle, update_bundle  # noqa: E402
from medcnn.report.data_use import data_use_record  # noqa: E402
from medcnn.train.crossval import crossval_markdown, read_fold_cases_csv, summarise_folds, write_fold_cases_csv  # noqa: E402
from medcnn.train.evaluate import evaluate_bundle  # noqa: E402
from medcnn.train.loop import TrainConfig, split_cases  # noqa: E402

CONFIG = REPO / "configs" / "cardiac-cine-mri.yaml"
CASES_CSV = "docs/crossval/cardiac-cine-mri-cases.csv"
# the current recipe's postprocessing and rotation/flip were adopted after seeing these
# Sunnybrook patients' results (docs/training.md): Sunnybrook is no external test for it
RECIPE_SELECTION = ["SCD0000101_ED_gt", "SCD0000101_ES_gt", "SCD0000301_ED_gt", "SCD0000301_ES_gt"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default="runs", help="folder holding cardiac-cine-mri-fold<K>/")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--final", default=None, help="the final model's bundle folder")
    ap.add_argument("--export", default=None, help="copy the final bundle here (e.g. medcnn/bundles/cardiac-cine-mri)")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="shared data folder")
    ap.add_argument("--sunnybrook-kind", choices=["selection", "external test"], default=None,
                    help="override what the fold models' Sunnybrook figures are reported as (default: as the fold "
                         "runs recorded it, from the config's data.extra reported_as: selection for the current "
                         "recipe, which was shaped on Sunnybrook patients)")
    args = ap.parse_args(argv)

    runs = Path(args.runs)
    validations, fold_cases = [], {}
    for k in range(args.folds):
        doc = json.loads((runs / f"cardiac-cine-mri-fold{k}" / "bundle" / "bundle.json").read_text())
        v = doc["provenance"]["validation"]
        if v.get("external") and args.sunnybrook_kind:
            v["external"]["kind"] = args.sunnybrook_kind
        validations.append(v)
        fold_cases[str(k)] = sorted(c["case_id"] for c in v.get("cases", []))
    # the tables come from the kept per-case CSV, exactly as the test re-derives them
    write_fold_cases_csv(REPO / CASES_CSV, validations)
    summary = summarise_folds(read_fold_cases_csv(REPO / CASES_CSV), stratum_field="group")
    summary["per_case_results"] = CASES_CSV
    summary["fold_test_cases"] = fold_cases
    sunnybrook_kind = summary.get("external", {}).get("kind", "selection")
    md = crossval_markdown(summary)
    print(md)
    (runs / "cardiac-cine-mri-cv.json").write_text(json.dumps(summary, indent=1))
    (runs / "cardiac-cine-mri-cv.md").write_text(md)
    if not args.final:
        return 0
    final = Path(args.final)
    cfg = load_config(TrainConfig, CONFIG)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, n_folds=1))
    _, _, sunnybrook = split_cases(cfg, args.data, CONFIG.parent)
    check = evaluate_bundle(final, sunnybrook, labels=cfg.data.labels, label_map=cfg.data.label_map,
                            ignore_unlabelled_slices=cfg.data.ignore_unlabelled_slices,
                            absent_classes_unannotated=cfg.data.absent_classes_unannotated)
    check["kind"] = "training-set regression check"
    check["note"] = ("the final weights on the Sunnybrook cases, which they were trained on: a check that the shipped "
                     "weights reproduce these numbers, not a measure of generalisation (see cross_validation)")
    print(f"regression check on Sunnybrook (training cases): Dice {check['mean_dice']}, "
          f"|LV EF error| {check.get('mean_abs_ef_error_points', float('nan')):.2f} points")
    prov = load_bundle(final).provenance
    prov["cross_validation"] = summary
    prov["regression_check"] = check
    t = prov.get("training") or {}
    prov["data_use"] = data_use_record(
        training=t.get("train_cases") or [], recipe_selection=RECIPE_SELECTION if sunnybrook_kind != "external test"
        else [], checkpoint=f"final step {t.get('step')} (no checkpoint selection)",
        notes=["no test case of its own: its expected accuracy is the cross-validation (cross_validation)"])
    update_bundle(final, provenance=prov)  # the weights file (and its sha256) stays as trained
    if args.export:
        from medcnn.cli.train import _export  # the same atomic copy `medcnn train --export` uses

        _export(final, Path(args.export))
        print(f"exported {final} -> {args.export}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
