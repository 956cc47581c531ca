#!/usr/bin/env python
"""Label the figures of the bundles shipped before checkpoint selection was separated from
the test fold, for what they are; weights untouched (``update_bundle``), no retraining.

    python scripts/label_shipped_figures.py [--data ../shared/data] [--check]

Writes ``provenance.data_use`` (case ids per role: training / selection / test, plus the
cases whose results shaped the recipe) and a ``kind`` (see ``medcnn.report.data_use``) with
a note on every recorded figure:

* brain-tumour-mri: the exported weights are the best-validation-Dice checkpoint (step 1000
  of 1400) chosen on patient pat0005, and its figures are on that same patient: ``selection``.
* hippocampus-mri: final-step weights (the best validation happened to be the last), but the
  schedule length and the mirrored axes were chosen on its 40 validation cases: ``selection``.
* cardiac-lv-cine-mri: final-step weights, but largest-component postprocessing and the
  rotation/flip augmentation were adopted after looking at SCD0000301 (its validation
  patient) and SCD0000101: ``selection``.
* cardiac-cine-mri: 5-fold cross-validation over ACDC (``cross-validation``; each fold's test
  case ids re-derived from the config and the data, the fold models' per-case results were
  not kept), the fold models on Sunnybrook (``selection``: the recipe was shaped on two of
  those four patients), the shipped weights on Sunnybrook (``training-set regression check``:
  trained on them with ``--train-on-external``).

Idempotent; ``--check`` only reports whether the bundles already carry these labels.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from medcnn.models import load_bundle, update_bundle  # noqa: E402
from medcnn.report.data_use import data_use_record  # noqa: E402

BUNDLES = REPO / "medcnn" / "bundles"
SUNNYBROOK_RECIPE = ["SCD0000101_ED_gt", "SCD0000101_ES_gt", "SCD0000301_ED_gt", "SCD0000301_ES_gt"]
CV_NOTE = ("Recipe choices and which folds they saw: no choice was made looking at an ACDC fold's results (one "
           "evaluation at the end of each fold run, no checkpoint selection; network, patch, schedule and "
           "augmentation strengths were fixed before the runs, the schedule by the CPU budget). Largest-component "
           "postprocessing and rotation by any angle plus one mirror were adopted from the cardiac-lv-cine-mri runs "
           "after seeing Sunnybrook patients SCD0000301 (fold 0) and SCD0000101 (fold 1), docs/training.md.")
NOT_KEPT = ("not re-derivable: the fold models' per-case results were not kept (only these per-fold means and the "
            "per-patient Sunnybrook EF errors); the next cross-validation keeps them (docs/crossval/)")


def _labels(name: str, prov: dict, data: Path | None) -> dict:
    t = prov.get("training") or {}
    train_ids, val_ids = list(t.get("train_cases") or []), list(t.get("val_cases") or [])
    step, max_steps = t.get("step"), (t.get("config") or {}).get("max_steps")
    v = prov.get("validation") or {}
    if name == "brain-tumour-mri":
        prov["data_use"] = data_use_record(
            training=train_ids, selection=val_ids, checkpoint=(
                f"best validation Dice on the selection case (step {step} of {max_steps}; training-time "
                "validation every 200 steps on that same case)"),
            notes=["no test case: the one validation patient chose the checkpoint and is the one the figures are on"])
        v.update(kind="selection", kind_note=(
            "the checkpoint with the best validation Dice on this patient, evaluated on the same patient: a selection "
            "figure, optimistic, not held out"))
    elif name == "hippocampus-mri":
        prov["data_use"] = data_use_record(
            training=train_ids, selection=val_ids, checkpoint=(
                f"final step {step} of {max_steps} (the export kept the best validation Dice, which was the last)"),
            notes=["the schedule length (1200 -> 2400 -> 4800 steps) and the mirrored axes (left-right only) were "
                   "chosen on these validation cases' Dice (docs/training.md)"])
        v.update(kind="selection", kind_note=(
            "final-step weights, but the schedule and flip axes were chosen on these 40 cases: a selection figure"))
    elif name == "cardiac-lv-cine-mri":
        prov["data_use"] = data_use_record(
            training=train_ids, selection=val_ids, recipe_selection=SUNNYBROOK_RECIPE,
            checkpoint=f"final step {step} of {max_steps} (the export kept the best validation Dice, which was the last)",
            notes=["largest-component postprocessing and rotation/flip augmentation were adopted after seeing "
                   "SCD0000301 (this bundle's validation patient) and SCD0000101 (fold 1, not shipped)"])
        v.update(kind="selection", kind_note=(
            "the postprocessing and augmentation were chosen after seeing this patient's results: a selection figure"))
    elif name == "cardiac-cine-mri":
        folds = _cv_folds(data) if data is not None else (prov.get("cross_validation") or {}).get("fold_test_cases")
        if not folds:
            raise SystemExit("cardiac-cine-mri: --data is needed to re-derive the cross-validation folds")
        cv = prov["cross_validation"]
        n = [len(folds[str(k)]) for k in range(cv["n_folds"])]
        if n != [f["n_cases"] for f in cv["folds"]]:
            raise SystemExit(f"cardiac-cine-mri: re-derived fold sizes {n} differ from the recorded ones")
        cv.update(kind="cross-validation", fold_test_cases=folds, recipe_note=CV_NOTE, per_case_results=NOT_KEPT)
        cv["external"].update(kind="selection", kind_note=(
            "the fold models were not trained on Sunnybrook, but the recipe (postprocessing, rotation/flip) was shaped "
            "on SCD0000301 and SCD0000101 of these 4 patients: not an external test"))
        cv["external"]["rules"] = ("each fold model on every Sunnybrook case (no fold model trained on them; two of the "
                                   "patients shaped the recipe); EF error signed, predicted - reference, points")
        prov["regression_check"].update(kind="training-set regression check")
        prov["data_use"] = data_use_record(
            training=train_ids, recipe_selection=SUNNYBROOK_RECIPE,
            checkpoint=f"final step {step} of {max_steps} (no validation during the final run)",
            notes=["no test case of its own: trained on all 80 ACDC and 4 Sunnybrook patients (--train-on-external); "
                   "its expected accuracy is the ACDC cross-validation (cross_validation, each case held out once by a "
                   "fold model of the same recipe)", CV_NOTE])
    else:
        raise SystemExit(f"{name}: no labels defined for this bundle")
    if v:
        prov["validation"] = v
    return prov


def _cv_folds(data: Path) -> dict[str, list[str]]:
    """Test case ids of each ACDC fold, re-derived from the config (same split as the runs)."""
    from medcnn.config import load_config
    from medcnn.train.loop import TrainConfig, split_run_cases

    config = REPO / "configs" / "cardiac-cine-mri.yaml"
    cfg = load_config(TrainConfig, config)
    out = {}
    for k in range(cfg.data.n_folds):
        ck = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, fold=k))
        out[str(k)] = sorted(c.case_id for c in split_run_cases(ck, data, config.parent).test)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="shared data folder")
    ap.add_argument("--check", action="store_true", help="only report whether the labels are there")
    args = ap.parse_args(argv)
    data = Path(args.data) if Path(args.data).is_dir() else None
    status = 0
    for folder in sorted(p for p in BUNDLES.iterdir() if (p / "bundle.json").is_file()):
        b = load_bundle(folder)
        before = json.loads(json.dumps(b.provenance))
        after = _labels(folder.name, json.loads(json.dumps(b.provenance)), data)
        if after == before:
            print(f"{folder.name}: labelled")
            continue
        if args.check:
            print(f"{folder.name}: NOT labelled")
            status = 1
            continue
        spec, sha = b.spec_sha256, b.sha256
        update_bundle(folder, provenance=after)  # weights byte for byte
        b2 = load_bundle(folder)
        assert (b2.sha256, b2.spec_sha256) == (sha, spec), folder
        print(f"{folder.name}: labelled (weights sha256 and spec hash unchanged: {spec[:12]})")
    return status


if __name__ == "__main__":
    sys.exit(main())
