#!/usr/bin/env bash
# 5-fold cross-validation of the default cardiac recipe (configs/cardiac-cine-mri.yaml).
#
#   scripts/train_cardiac_cv.sh [DATA_DIR] [FOLD...]
#
# FOLD is 0-4 (held-out ACDC fold; Sunnybrook evaluated, reported as selection) or "all" (every
# ACDC patient, no held-out fold: the shipped model); default 0 1 2 3 4.
# Fold 0 is the fixed split the shipped model's figures come from, "all" the shipped weights
# (scripts/cardiac_fixed_split.py --run runs/cardiac-cine-mri-fold0 --final runs/cardiac-cine-mri-all).
# Each fold is two data-parallel processes (torchrun, gloo, one thread each, batch 4 each =
# the config's 8 patches per step) and takes about an hour of a 2-core CPU; every run is
# resumable: a run folder with a checkpoint continues with --resume, a finished one is skipped.
# Then: python scripts/cardiac_cv_summary.py --runs runs   (the 5-fold tables)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-../shared/data}"
shift || true
FOLDS=("$@")
[ ${#FOLDS[@]} -eq 0 ] && FOLDS=(0 1 2 3 4)
PY="${PYTHON:-.venv/bin/python}"
TORCHRUN="$(dirname "$PY")/torchrun"
CFG=configs/cardiac-cine-mri.yaml
STEPS="$(grep -m1 '^max_steps:' "$CFG" | grep -o '[0-9]*')"

for k in "${FOLDS[@]}"; do
  if [ "$k" = all ]; then out=runs/cardiac-cine-mri-all; split=(--folds 1); else out=runs/cardiac-cine-mri-fold$k; split=(--fold "$k"); fi
  if [ -f "$out/bundle/bundle.json" ] && { [ "$k" = all ] || grep -q '"validation"' "$out/bundle/bundle.json"; } \
     && [ "$(grep -o '"step": [0-9]*' "$out/checkpoint/state.json" | head -1 | grep -o '[0-9]*$')" = "$STEPS" ]; then
    echo "== $out: finished, skipped"; continue
  fi
  resume=(); [ -f "$out/checkpoint/state.json" ] && resume=(--resume)
  echo "== $out ${resume[*]}"
  OMP_NUM_THREADS=1 "$TORCHRUN" --standalone --nproc_per_node 2 -m medcnn train --config "$CFG" --data "$DATA" \
    --out "$out" --cache runs/cache --threads 1 --no-progress "${split[@]}" "${resume[@]}"
done
