# spectralearth: `make run` (whole pipeline on the embedded default) and `make test`.
# Both set up the environment first (.ci/setup-venv): the 6-7 GB install of requirements.lock
# is cached per lock hash and shared; .venv is a small per-checkout layer over it.
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -eu -o pipefail -c

VENV := .venv
# pytest-xdist processes for `make test` (each test file stays on one of them); 0 = serial
TEST_WORKERS ?= 2
BIN := $(CURDIR)/$(VENV)/bin

# Belt and braces: this checkout's code first on the path for every tool make runs.
export PYTHONPATH := $(CURDIR)/src:$(CURDIR)
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export GX_ANALYTICS_ENABLED := false
export DAGSTER_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := 1
export DAGSTER_HOME := $(CURDIR)/data/dagster_home

.PHONY: help setup run test test-all lint bench bench-ssl ui lock clean-data

help:
	@echo "make run    - set up, then run the whole pipeline on the embedded synthetic archive"
	@echo "make test   - set up, then run the test suite"
	@echo "make ui     - Dagster UI and MLflow UI on 127.0.0.1"
	@echo "make bench  - speed and memory benchmarks (results go to benchmarks/RESULTS.md by hand)"
	@echo "make bench-ssl - what pretraining learns vs random init (hours on a CPU; docs/what-pretraining-learns.md)"
	@echo "make lint   - ruff"

setup: $(VENV)/.ready

$(VENV)/.ready: requirements.lock pyproject.toml .ci/setup-venv
	@.ci/setup-venv
	touch $(VENV)/.ready

# The whole pipeline on the embedded default: synthetic archive -> DVC-tracked raw data ->
# every Dagster asset materialized in-process (recorded in DAGSTER_HOME for the UI) ->
# `dvc commit` records those same outputs in dvc.lock, so `dvc repro` reports up to date, and
# `dvc exp save -n baseline` keeps this result for `dvc exp show` / `dvc metrics diff baseline`.
run: setup
	@set -eu
	stage() { echo; echo "== $$1"; }
	fail() { echo "make run: stage '$$1' failed (see the lines above)" >&2; exit 1; }
	mkdir -p $(DAGSTER_HOME)
	[ -f $(DAGSTER_HOME)/dagster.yaml ] || printf 'telemetry:\n  enabled: false\n' > $(DAGSTER_HOME)/dagster.yaml
	start=$$(date +%s)
	stage "synthetic EnMAP L2A archive"
	if [ -d data/archive ] && [ -d data/labels ]; then echo "data/archive exists (make clean-data to regenerate)";
	else spectralearth synth-archive || fail synth-archive; fi
	stage "DVC: track the raw archive (data.dvc)"
	dvc commit -f -q data.dvc || fail dvc-commit-archive
	stage "Dagster: materialize every asset"
	$(BIN)/python -m dagster_project.run_pipeline || fail dagster
	stage "DVC: record the outputs in dvc.lock, push them to the local remote"
	dvc commit -f -q || fail dvc-commit
	dvc remote add --local --force --default local "$(CURDIR)/data/dvc-remote" >/dev/null
	dvc push -q || fail dvc-push
	dvc status
	stage "DVC: this result as the experiment 'baseline' (docs/experiments.md)"
	if git rev-parse -q --verify HEAD >/dev/null; then dvc exp save -f -q -n baseline || fail dvc-exp-save;
	else echo "no git commit here: the DVC baseline experiment is not saved"; fi
	echo "compare later runs with: dvc exp show / dvc metrics diff baseline / dvc plots diff baseline"
	stage "results (from data/results/evaluations.csv)"
	spectralearth report
	echo; echo "make run finished in $$(( $$(date +%s) - start )) s"

test: setup
	rc=0; $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS) || rc=$$?
	# pytest exits 5 when it collected nothing: an empty run must not pass.
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi
	exit $$rc

lint: setup
	$(BIN)/ruff check src dagster_project tests benchmarks
	$(BIN)/ruff format --check src dagster_project tests benchmarks

# bench_ssl measures representation quality, not speed, and takes hours on a CPU: its own target
bench: setup
	for f in benchmarks/bench_*.py; do [ "$$f" = benchmarks/bench_ssl.py ] && continue; \
	  echo "== $$f"; $(BIN)/python $$f; done

bench-ssl: setup
	nice -n 19 $(BIN)/python benchmarks/bench_ssl.py

ui: setup
	$(BIN)/python -m spectralearth.cli ui

lock: PYTHON_BOOT ?= python3.11
lock: PIP_VERSION ?= 26.3
lock:
	rm -rf /tmp/spectralearth-lock && $(PYTHON_BOOT) -m venv /tmp/spectralearth-lock
	/tmp/spectralearth-lock/bin/python -m pip install -q "pip==$(PIP_VERSION)"
	/tmp/spectralearth-lock/bin/python -m pip install -q ".[dev]"
	{ echo "# Resolved dependency set (pip freeze of a fresh install of pyproject.toml's pins + dev extra)."; \
	  echo "# Regenerate with 'make lock' after changing a pin. Installed with: pip install -r requirements.lock"; \
	  /tmp/spectralearth-lock/bin/python -m pip freeze --exclude-editable | grep -v '^spectralearth'; } > requirements.lock

clean-data:
	rm -rf data/archive data/labels data/catalog data/patches data/models data/results data/validation data/downstream data/summary data/maps
