#!/usr/bin/env bash
# Cross-validate and train the default cardiac model (configs/cardiac-cine-mri.yaml).
#
#   scripts/train_cardiac_cv.sh [DATA_DIR] [RUN...]
#
# RUN is a fold number 0-4 (held-out ACDC fold; Sunnybrook evaluated, reported as selection) or
# "final" (all 80 ACDC + 4 Sunnybrook patients, no held-out patients); default: 0 1 2 3 4 final.
# Every run is resumable: a run folder with a checkpoint continues with --resume, a finished
# one is skipped. One torch thread per process, so two runs can share a 2-core machine:
#   scripts/train_cardiac_cv.sh ../shared/data 0 2 4 &  scripts/train_cardiac_cv.sh ../shared/data 1 3 final
# Then: python scripts/cardiac_cv_summary.py --runs runs --final runs/cardiac-cine-mri-final/bundle \
#         --export medcnn/bundles/cardiac-cine-mri
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-../shared/data}"
shift || true
RUNS=("$@")
[ ${#RUNS[@]} -eq 0 ] && RUNS=(0 1 2 3 4 final)
PY="${PYTHON:-.venv/bin/python}"
CFG=configs/cardiac-cine-mri.yaml

for run in "${RUNS[@]}"; do
  if [ "$run" = final ]; then
    out=runs/cardiac-cine-mri-final; args=(--folds 1 --train-on-external)
  else
    out=runs/cardiac-cine-mri-fold$run; args=(--fold "$run")
  fi
  if [ -f "$out/bundle/bundle.json" ] && grep -q '"validation"' "$out/bundle/bundle.json" \
     && [ "$(grep -o '"step": [0-9]*' "$out/checkpoint/state.json" | head -1 | grep -o '[0-9]*$')" = \
          "$(grep -m1 '^max_steps:' "$CFG" | grep -o '[0-9]*')" ]; then
    echo "== $out: finished, skipped"; continue
  fi
  resume=(); [ -f "$out/checkpoint/state.json" ] && resume=(--resume)
  echo "== $out ${resume[*]}"
  OMP_NUM_THREADS=1 nice -n 5 "$PY" -m medcnn train --config "$CFG" --data "$DATA" --out "$out" \
    --cache runs/cache --threads 1 --no-progress "${args[@]}" "${resume[@]}"
done
