# Two commands for a newcomer: `make demo` and `make test`. Both create or reuse .venv and install first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.motionguide-installed
CONSTRAINTS ?= constraints-cpu.txt
export WANDB_MODE ?= offline
export HF_HUB_OFFLINE ?= 1

.PHONY: install test demo bench clean-venv

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@echo ">> creating $(VENV) and installing (torch first, deepspeed last; about 3 minutes the first time)"
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c $(CONSTRAINTS) torch torchvision
	$(PIP) install -q -c $(CONSTRAINTS) -e ".[dev]"
	$(PIP) install -q -c $(CONSTRAINTS) --no-build-isolation deepspeed
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest -q

demo: install
	$(PY) -m motionguide.cli demo --out demo-output

bench: install
	cd benchmarks && ../$(PY) run_all.py

clean-venv:
	rm -rf $(VENV)
