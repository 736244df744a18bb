# The two commands a new user needs: `make demo` (the main job) and `make test` (lint, types, tests).
# Each bootstraps .venv on first use (tools/bootstrap.sh).
PYTHON ?= python3
VENV := .venv
BOOT := $(VENV)/.bootstrapped
DEMO_OUT ?= demo-output

.PHONY: demo test clean

$(BOOT): pyproject.toml tools/bootstrap.sh
	PYTHON=$(PYTHON) tools/bootstrap.sh

demo: $(BOOT)
	$(VENV)/bin/blcam demo --out $(DEMO_OUT)

test: $(BOOT)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/python -m pytest

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .mypy_cache .ruff_cache
