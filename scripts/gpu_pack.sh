#!/usr/bin/env bash
# Build the carry-over folder for `make gpu-check` on a bare GPU machine (see scripts/gpu_pack.py):
#   bash scripts/gpu_pack.sh [OUT]      (default out/gpu-pack; prints each part's size)
# Needs medcnn's full environment and the shared data here; copy OUT to the GPU machine and run
#   bash OUT/src/scripts/gpu_check.sh
set -eu
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$HERE/.venv/bin/python" ]; then PYTHON="$HERE/.venv/bin/python"; else PYTHON="$(command -v python3)"; fi
fi
PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}" exec "$PYTHON" "$HERE/scripts/gpu_pack.py" "$@"
