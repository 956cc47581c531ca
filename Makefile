# Two-command quick start:  `make demo`  and  `make test`.
# Each creates .venv (if needed), installs medcnn with its dependencies, then runs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
STAMP  := $(VENV)/.medcnn-installed

.PHONY: setup demo demo-tumour test test-fast bench clean gpu-pack gpu-check

$(STAMP): pyproject.toml scripts/setup_env.sh
	PYTHON="$(PYTHON)" bash scripts/setup_env.sh "$(VENV)"
	touch "$(STAMP)"

setup: $(STAMP)

demo: $(STAMP)
	"$(VENV)/bin/medcnn" demo --out out/demo

# The tumour demo: the four-sequence region model on BraTS 2018 cases (whole tumour, core, enhancing in mL).
demo-tumour: $(STAMP)
	"$(VENV)/bin/medcnn" demo --tumour --out out/demo-tumour

test: $(STAMP)
	"$(VENV)/bin/python" -m pytest -q

test-fast: $(STAMP)
	"$(VENV)/bin/python" -m pytest -q -m "not slow"

# The GPU path in one command (docs/inference.md, "GPU check"): on a CPU-only machine it
# prints one line and exits 3. gpu-pack builds out/gpu-pack to carry to a bare GPU machine,
# where `bash gpu-pack/src/scripts/gpu_check.sh` does the same without make or .venv.
gpu-pack: $(STAMP)
	PYTHON="$(VENV)/bin/python" bash scripts/gpu_pack.sh out/gpu-pack

gpu-check:
	PYTHON="$$( [ -x "$(VENV)/bin/python" ] && echo "$(VENV)/bin/python" || command -v python3 )" bash scripts/gpu_check.sh

clean:
	rm -rf out .pytest_cache
