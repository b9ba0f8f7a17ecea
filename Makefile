# `make test` is the README's test command and what CI runs; `make demo` is the main job.
VENV := .venv
PIP := $(VENV)/bin/pip install -q torch==2.13.0

.PHONY: test test-fast demo install bench study mutants faults gpu-check docs

install:
	python3 -m venv $(VENV)
	$(PIP) -e '.[test]'

test: install
	sh scripts/install-browser.sh
	$(VENV)/bin/pytest

# While changing code: the tests not marked slow, without reinstalling (after one `make install`):
# the unit tests and the quick end-to-end ones, under 2 minutes on 2 cores; the bad-input
# catalogues, the fault runs, the browser and most command-line runs are marked slow and run in
# the whole suite (`make test`, what CI runs).
test-fast:
	$(VENV)/bin/pytest -m "not slow" -q

demo:
	python3 -m venv $(VENV)
	$(PIP) -e .
	$(VENV)/bin/charnn train --out runs/demo --max-time 2m

# The docs site in site/ (open site/index.html; nothing is fetched from the network): the command
# reference regenerated from the parsers, API pages from the docstrings, built --strict.
docs: install
	$(VENV)/bin/python -m charnn.cli.reference > docs/reference.md
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# The benchmark suite: one table. BIG_CORPUS=path/to/linux_all.txt adds the half-gigabyte rows
# (build it with ../shared/data/make_linux.py --all --chars 0); BENCH_ARGS=--quick skips the slow rows.
BIG_CORPUS ?=
BENCH_ARGS ?=
bench: install
	$(VENV)/bin/python bench/suite.py $(if $(BIG_CORPUS),--big-corpus $(BIG_CORPUS)) $(BENCH_ARGS)

# The paper's study at a small budget (about 23 minutes on 2 cores): report in docs/study/.
study: install
	$(VENV)/bin/python scripts/study.py --per-run 60s

# Break each feature on purpose and check that its tests fail (a few minutes; not run by CI).
mutants: install
	$(VENV)/bin/python scripts/mutants.py

# Kill training at random moments and inside checkpoint writes; resume; compare (a few minutes).
faults: install
	$(VENV)/bin/python bench/faults.py

# On a machine with CUDA or Apple MPS: the whole GPU path in a few minutes, a verdict per line.
# Without a GPU it says so and exits 0.
gpu-check: install
	$(VENV)/bin/python scripts/gpu_check.py
