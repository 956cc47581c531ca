#!/usr/bin/env bash
# Retrain the default bundles shipped in medcnn/bundles/ from the shared data.
#
#   scripts/train_defaults.sh [DATA_DIR] [NAME...]
#
# DATA_DIR defaults to ../shared/data (the folder holding sunnybrook/, brats2015/, hippocampus/).
# NAME is any of cardiac-lv-cine-mri, hippocampus-mri, brain-tumour-mri (default: all three,
# in that order). Each run trains fold 0 of its config (one held-out patient group), writes
# runs/<name>-fold0/ (log.csv, checkpoint/, bundle/) and copies the best bundle, with its
# held-out evaluation in bundle.json's provenance, to medcnn/bundles/<name>/.
# Add --resume by hand to continue an interrupted run. Wall times: see docs/training.md.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-../shared/data}"
shift || true
NAMES=("$@")
[ ${#NAMES[@]} -eq 0 ] && NAMES=(cardiac-lv-cine-mri hippocampus-mri brain-tumour-mri)
PY="${PYTHON:-.venv/bin/python}"
for name in "${NAMES[@]}"; do
  echo "== $name"
  nice -n 5 "$PY" -m medcnn train --config "configs/$name.yaml" --data "$DATA" \
    --out "runs/$name-fold0" --cache runs/cache --export "medcnn/bundles/$name" --no-progress
done
