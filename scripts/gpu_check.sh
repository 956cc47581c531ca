#!/usr/bin/env bash
# Prove medcnn's GPU path in one command (make gpu-check), in under 5 minutes on one GPU.
#
#   bash scripts/gpu_check.sh [RESULTS_DIR]
#
# Works in a checkout (with .venv, or $PYTHON) and in the carry-over pack built by
# scripts/gpu_pack.sh (pack/src/scripts/gpu_check.sh; pack/site holds the small
# packages, pack/data the cases), on a machine with only python3 + torch + numpy.
# Prints the GPU, driver, CUDA, cuDNN and torch versions; runs the gpu-marked tests
# (tests/test_gpu.py) and the CUDA inference benchmark against MONAI with AMP; writes
# RESULTS_DIR/gpu-check.md (default: $OUT, else out/gpu-check in a checkout or
# ./gpu-check-results in a pack): one Markdown table of figures with the card's name.
#
# Exit status: 0 every check passed; 1 a check failed (the table says which);
# 2 the environment is incomplete (no torch/numpy, a package missing): one line;
# 3 no CUDA GPU is visible to torch: one line, nothing run.
set -u
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"   # checkout root, or pack/src
PACK="$(cd "$HERE/.." && pwd)"
if [ -d "$PACK/site" ] && [ -d "$PACK/data" ]; then        # the carry-over pack
    export PYTHONPATH="$HERE:$PACK/site${PYTHONPATH:+:$PYTHONPATH}"
    export MEDCNN_GPU_DATA="${MEDCNN_GPU_DATA:-$PACK/data}"
    default_results="${OUT:-$PWD/gpu-check-results}"
else
    export PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}"
    export MEDCNN_GPU_DATA="${MEDCNN_GPU_DATA:-$HERE/out/gpu-pack/data}"
    default_results="${OUT:-$HERE/out/gpu-check}"
fi
RESULTS="${1:-$default_results}"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$HERE/.venv/bin/python" ]; then PYTHON="$HERE/.venv/bin/python"; else PYTHON="$(command -v python3 || command -v python)"; fi
fi
if [ -z "$PYTHON" ]; then
    echo "gpu-check: expected a Python with torch and numpy (set PYTHON=...), got no python3 on PATH"
    exit 2
fi
FACTS="$("$PYTHON" - 2>&1 <<'EOF'
import subprocess, sys
try:
    import numpy, torch
except ImportError as exc:
    print(f"expected a Python with torch and numpy, got {sys.executable} without them ({exc})")
    sys.exit(2)
if not torch.cuda.is_available():
    print(f"no CUDA GPU visible to torch {torch.__version__} (CUDA build {torch.version.cuda or 'none'})")
    sys.exit(3)
try:
    driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", "-i", "0"],
                            capture_output=True, text=True, timeout=20).stdout.strip() or "unknown"
except (OSError, subprocess.SubprocessError):
    driver = "unknown (no nvidia-smi)"
p = torch.cuda.get_device_properties(0)
print(f"GPU {torch.cuda.get_device_name(0)} ({p.total_memory / 2**30:.0f} GiB, compute capability "
      f"{p.major}.{p.minor}, bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}); driver {driver}; "
      f"CUDA {torch.version.cuda}; cuDNN {torch.backends.cudnn.version()}; torch {torch.__version__}; "
      f"Python {sys.version.split()[0]}")
EOF
)"
rc=$?
FACTS="$(printf '%s\n' "$FACTS" | tail -n 1)"   # (warnings on stderr come first)
if [ $rc -eq 3 ]; then
    echo "gpu-check: no GPU present: $FACTS; nothing was run (exit 3)"
    exit 3
elif [ $rc -ne 0 ]; then
    echo "gpu-check: could not query the GPU with $PYTHON (exit $rc): $FACTS"
    exit 2
fi
MISSING="$("$PYTHON" - <<'EOF'
import importlib
missing = []
for name in ("medcnn.inference", "monai", "safetensors", "pytest"):
    try:
        importlib.import_module(name)
    except ImportError as exc:
        missing.append(f"{name} ({exc})")
print("; ".join(missing))
EOF
)"
if [ -n "$MISSING" ]; then
    echo "gpu-check: expected the packages medcnn, monai, safetensors, pytest (build the pack with make gpu-pack), got import errors: $MISSING"
    exit 2
fi
echo "gpu-check: $FACTS"
mkdir -p "$RESULTS"
FIG="$RESULTS/figures.jsonl"
: > "$FIG"
if [ ! -f "$MEDCNN_GPU_DATA/hippocampus.npz" ] && [ -f "$HERE/scripts/gpu_pack.py" ]; then
    echo "gpu-check: building the test cases in $MEDCNN_GPU_DATA (scripts/gpu_pack.py --data-only)"
    "$PYTHON" "$HERE/scripts/gpu_pack.py" --data-only "$MEDCNN_GPU_DATA" >"$RESULTS/gpu_pack.log" 2>&1 \
        || echo "gpu-check: could not build the cases (see $RESULTS/gpu_pack.log); their tests will be skipped"
fi
# deterministic cuBLAS (the training check) needs this before CUDA starts in the process
export CUBLAS_WORKSPACE_CONFIG="${CUBLAS_WORKSPACE_CONFIG:-:4096:8}"
TO=""
command -v timeout >/dev/null 2>&1 && TO="timeout"
start=$(date +%s)
echo "gpu-check: gpu-marked tests (tests/test_gpu.py) and the CPU half (tests/test_gpu_readiness.py) ..."
( cd "$HERE" && MEDCNN_GPU_FIGURES="$FIG" ${TO:+$TO 210} "$PYTHON" -m pytest -q -p no:cacheprovider -rs \
    -m "not slow" tests/test_gpu.py tests/test_gpu_readiness.py ) >"$RESULTS/pytest.log" 2>&1
test_rc=$?
tail -n 25 "$RESULTS/pytest.log"
echo "gpu-check: CUDA inference benchmark against MONAI with AMP ..."
( cd "$HERE" && ${TO:+$TO 150} "$PYTHON" benchmarks/bench_inference.py --device cuda --repeats 3 --train-steps 80 \
    --cache-dir "$RESULTS/bench-cache" --json "$RESULTS/bench_inference.json" ) >"$RESULTS/bench_inference.log" 2>&1
bench_rc=$?
tail -n 20 "$RESULTS/bench_inference.log"
"$PYTHON" "$HERE/scripts/gpu_figures.py" --facts "$FACTS" --figures "$FIG" --bench "$RESULTS/bench_inference.json" \
    --pytest-log "$RESULTS/pytest.log" --pytest-rc "$test_rc" --bench-rc "$bench_rc" \
    --seconds "$(( $(date +%s) - start ))" > "$RESULTS/gpu-check.md"
cat "$RESULTS/gpu-check.md"
if [ $test_rc -ne 0 ] || [ $bench_rc -ne 0 ]; then
    echo "gpu-check: FAILED (tests exit $test_rc, benchmark exit $bench_rc); logs and table in $RESULTS"
    exit 1
fi
echo "gpu-check: passed; table in $RESULTS/gpu-check.md"
exit 0
