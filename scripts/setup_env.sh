#!/usr/bin/env bash
# Create a virtual environment and install medcnn with its dev dependencies.
#
# PyTorch: on a machine without an NVIDIA GPU we pin the CPU build (torch==2.13.0+cpu)
# so that nothing downloads several GB of CUDA libraries. It is taken from a local wheel
# directory when pip knows one (PIP_FIND_LINKS), else from the PyTorch CPU index.
# With a GPU (nvidia-smi works), or when MEDCNN_TORCH is set (e.g. MEDCNN_TORCH=skip to
# keep a torch you installed yourself), we do not touch your CUDA build.
set -euo pipefail
VENV="${1:-.venv}"
PY="${PYTHON:-python3}"
TORCH_CPU="torch==2.13.0+cpu"

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"

if [ "${MEDCNN_TORCH:-}" = "skip" ] || "$VPY" -c "import torch" >/dev/null 2>&1; then
  echo "setup: using the installed torch ($("$VPY" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo none))"
elif [ -n "${MEDCNN_TORCH:-}" ]; then
  "$VPY" -m pip install -q "${MEDCNN_TORCH}"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "setup: NVIDIA GPU found; installing the default (CUDA) torch build from PyPI"
  "$VPY" -m pip install -q "torch>=2.6"
else
  echo "setup: no NVIDIA GPU; installing the CPU build $TORCH_CPU"
  "$VPY" -m pip install -q "$TORCH_CPU" 2>/dev/null \
    || "$VPY" -m pip install -q "$TORCH_CPU" --extra-index-url https://download.pytorch.org/whl/cpu
fi

# medcnn and its dependencies, onnxruntime and onnx included (--backend onnxruntime|auto); they do
# not depend on torch, so the torch chosen above stays (checked below)
"$VPY" -m pip install -q -e ".[dev]"

# dcmqi (segimage2itkimage: an independent DICOM SEG decoder for the tests; a 50 MB wheel, so
# optional: its test skips with a reason when it is absent)
"$VPY" -m pip install -q "dcmqi>=1.3" 2>/dev/null || echo "setup: dcmqi not installed (its SEG cross-check test will be skipped)"

# dciodvfy (Debian package dicom3tools) checks the DICOM SEG/SR medcnn writes; optional:
# its tests skip with a reason when it is absent. Installed only where apt-get works as root.
if ! command -v dciodvfy >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq dicom3tools) >/dev/null 2>&1 \
    || echo "setup: dicom3tools not installed (DICOM conformance tests will be skipped)"
fi

# Importing nnU-Net models (medcnn models import) and the parity tests against nnUNetPredictor.
# --no-deps: nnunetv2 / dynamic-network-architectures would otherwise pull a CUDA torch,
# torchvision and timm; these are the pure-Python packages their inference path imports.
# Runtime: dynamic-network-architectures (builds an imported nnU-Net network). Tests only:
# the rest (the reference predictor). Skip with MEDCNN_NNUNET=skip.
if [ "${MEDCNN_NNUNET:-}" != "skip" ]; then
  "$VPY" -m pip install -q --no-deps \
    "dynamic-network-architectures>=0.4,<0.5" "nnunetv2>=2.5,<2.9" "acvl-utils>=0.2.6,<0.3" \
    "batchgenerators>=0.25" "batchgeneratorsv2>=0.3.2" scikit-image lazy-loader imageio tifffile networkx \
    threadpoolctl blosc2 numexpr ndindex msgpack httpx idna \
    || echo "setup: could not install the nnU-Net packages; the nnU-Net import tests will be skipped"
fi
"$VPY" -c "import torch, monai, onnxruntime, medcnn; print('setup: medcnn', medcnn.__version__, '| torch', torch.__version__, '| monai', monai.__version__, '| onnxruntime', onnxruntime.__version__)"
