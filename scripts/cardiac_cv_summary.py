#!/usr/bin/env python
"""Summarise the cardiac cross-validation and export the shipped model.

    python scripts/cardiac_cv_summary.py --runs runs --final runs/cardiac-cine-mri-final/bundle \
        --export medcnn/bundles/cardiac-cine-mri [--data ../shared/data]

Reads each fold's held-out (ACDC) and external (Sunnybrook) evaluation from
runs/cardiac-cine-mri-fold{0..4}/bundle/bundle.json, prints the tables
(medcnn.train.crossval) and writes them to <runs>/cardiac-cine-mri-cv.{json,md}. With --final
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
from medcnn.train.crossval import crossval_markdown, summarise_folds  # noqa: E402
from medcnn.train.evaluate import evaluate_bundle  # noqa: E402
from medcnn.train.loop import TrainConfig, split_cases  # noqa: E402

CONFIG = REPO / "configs" / "cardiac-cine-mri.yaml"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default="runs", help="folder holding cardiac-cine-mri-fold<K>/")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--final", default=None, help="the final model's bundle folder")
    ap.add_argument("--export", default=None, help="copy the final bundle here (e.g. medcnn/bundles/cardiac-cine-mri)")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="shared data folder")
    args = ap.parse_args(argv)

    runs = Path(args.runs)
    validations = []
    for k in range(args.folds):
        doc = json.loads((runs / f"cardiac-cine-mri-fold{k}" / "bundle" / "bundle.json").read_text())
        validations.append(doc["provenance"]["validation"])
    summary = summarise_folds(validations, stratum_field="group")
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
    check["note"] = ("the final weights on the Sunnybrook cases, which they were trained on: a check that the shipped "
                     "weights reproduce these numbers, not a measure of generalisation (see cross_validation)")
    print(f"regression check on Sunnybrook (training cases): Dice {check['mean_dice']}, "
          f"|LV EF error| {check.get('mean_abs_ef_error_points', float('nan')):.2f} points")
    prov = load_bundle(final).provenance
    prov["cross_validation"] = summary
    prov["regression_check"] = check
    update_bundle(final, provenance=prov)  # the weights file (and its sha256) stays as trained
    if args.export:
        from medcnn.cli.train import _export  # the same atomic copy `medcnn train --export` uses

        _export(final, Path(args.export))
        print(f"exported {final} -> {args.export}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
