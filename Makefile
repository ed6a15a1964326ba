# melanoma-kd: the two commands a newcomer runs are `make setup && make repro` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
REMOTE ?= $(abspath ../melanoma-kd-dvc-remote)
# CPU/wall seconds per stage of the last make repro (not tracked; melanoma_kd.stage_times)
STAGE_TIMES := .dvc/tmp/stage_times.jsonl
export DVC_NO_ANALYTICS := 1
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup repro test test-fast lint format bench verify remote clean

setup: $(STAMP)  ## create .venv and install pinned dependencies (quick when up to date)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 required)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/dvc config --local core.check_update false 2>/dev/null || true
	@touch $(STAMP)

repro: setup  ## run the whole default pipeline on the built-in synthetic data
	@start=$$(date +%s); rm -f $(STAGE_TIMES); \
	  MELANOMA_KD_STAGE_TIMES=$(abspath $(STAGE_TIMES)) $(BIN)/dvc repro && \
	  $(BIN)/python -m melanoma_kd.readme_results && \
	  $(BIN)/python -m melanoma_kd.verify --record && \
	  $(BIN)/python -m melanoma_kd.stage_times $(STAGE_TIMES) && \
	  echo "make repro: pipeline up to date in $$(( $$(date +%s) - start )) s"

test: setup  ## the test suite (unit tests + the tiny-profile dvc pipeline tests, built meanwhile)
	$(BIN)/python -m pytest -q --durations=10

test-fast: setup  ## unit tests only, on two pytest-xdist workers (they share nothing)
	$(BIN)/python -m pytest -q -m "not pipeline" -n 2 --durations=10

verify: repro  ## rerun the pipeline; fail if dvc.lock or a committed result is stale or changed
	$(BIN)/python -m melanoma_kd.verify

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup  ## speed/memory benchmarks: print ratios measured side by side
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

remote: setup  ## configure a local-directory DVC remote (REMOTE=path) and push outputs + run-cache
	$(BIN)/dvc remote add --local -f -d local $(REMOTE)
	$(BIN)/dvc push --run-cache

clean:
	rm -rf .pytest_cache .ruff_cache
