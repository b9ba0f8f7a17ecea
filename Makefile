# `make test` is the README's test command and what CI runs; `make demo` is the main job.
VENV := .venv
PIP := $(VENV)/bin/pip install -q torch==2.13.0

.PHONY: test demo install

install:
	python3 -m venv $(VENV)
	$(PIP) -e '.[test]'

test: install
	sh scripts/install-browser.sh
	$(VENV)/bin/pytest

demo:
	python3 -m venv $(VENV)
	$(PIP) -e .
	$(VENV)/bin/charnn train --out runs/demo --max-time 2m
