# Two-command quick start:  `make demo`  and  `make test`.
# Each creates .venv (if needed), installs medcnn with its dependencies, then runs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
STAMP  := $(VENV)/.medcnn-installed

.PHONY: setup demo test test-fast bench clean

$(STAMP): pyproject.toml scripts/setup_env.sh
	PYTHON="$(PYTHON)" bash scripts/setup_env.sh "$(VENV)"
	touch "$(STAMP)"

setup: $(STAMP)

demo: $(STAMP)
	"$(VENV)/bin/medcnn" demo --out out/demo

test: $(STAMP)
	"$(VENV)/bin/python" -m pytest -q

test-fast: $(STAMP)
	"$(VENV)/bin/python" -m pytest -q -m "not slow"

clean:
	rm -rf out .pytest_cache
