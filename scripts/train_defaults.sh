#!/usr/bin/env bash
# Retrain the default bundles shipped in medcnn/bundles/ from the shared data.
#
#   scripts/train_defaults.sh [DATA_DIR] [NAME...]
#
# DATA_DIR defaults to ../shared/data (the folder holding sunnybrook/, brats2015/, hippocampus/).
# NAME is any of cardiac-lv-cine-mri, hippocampus-mri, brain-tumour-mri (default: all three).
# Each trains fold 0 of its config (one held-out patient group; see docs/training.md), writes
# runs/<name>-fold0/ (log.csv, checkpoint/, bundle/), evaluates the final-step model (no
# checkpoint selection: `checkpoint: final`) on the test fold on its original grids and copies
# the bundle to medcnn/bundles/<name>/. The shipped bundles predate this default: their figures
# are selection figures (provenance.data_use, scripts/label_shipped_figures.py).
#
# The stages below are the ones the shipped bundles were trained with. Cardiac and hippocampus
# are one run of their config; brain tumour ran a first schedule, then `--resume` with a longer
# `--max-steps` (a warm restart of the poly learning rate), because the 2-core machine it was
# trained on was shared and runs had to be cut into short segments.
# A single `medcnn train --config configs/<name>.yaml` (one poly schedule of max_steps) is the
# simpler alternative and gives comparable results.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-../shared/data}"
shift || true
NAMES=("$@")
[ ${#NAMES[@]} -eq 0 ] && NAMES=(cardiac-lv-cine-mri hippocampus-mri brain-tumour-mri)
PY="${PYTHON:-.venv/bin/python}"

train() {  # name, extra args...
  local name="$1"; shift
  nice -n 5 "$PY" -m medcnn train --config "configs/$name.yaml" --data "$DATA" --out "runs/$name-fold0" \
    --cache runs/cache --threads 1 --no-progress "$@"
}

for name in "${NAMES[@]}"; do
  echo "== $name"
  rm -rf "runs/$name-fold0"
  case "$name" in
    cardiac-lv-cine-mri)
      train "$name" --export "medcnn/bundles/$name" ;;
    hippocampus-mri)
      train "$name" --export "medcnn/bundles/$name" ;;
    brain-tumour-mri)
      train "$name" --max-steps 600
      train "$name" --resume --max-steps 1400 --export "medcnn/bundles/$name" ;;
    *) echo "unknown bundle $name" >&2; exit 2 ;;
  esac
done
