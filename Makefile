# Two entry points for a fresh machine:  `make run` (the demo pipeline) and `make test`.
# Both create .venv from requirements.lock on first use and reuse it afterwards.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CORES  ?= all
# Local runs hide SLURM's scontrol from Snakemake (see the script): a 9-s wait at every start on machines with SLURM's
# tools but no controller.
LOCAL_PATH := $(CURDIR)/$(BIN):$(CURDIR)/workflow/profiles/default/no-slurm

.PHONY: setup run test test-fast report readme-figure pretrained series-evidence docs clean

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: $(STAMP)
	PATH="$(LOCAL_PATH):$$PATH" $(BIN)/snakemake --cores $(CORES) --profile workflow/profiles/default

report: run
	PATH="$(LOCAL_PATH):$$PATH" $(BIN)/snakemake --cores 1 --report results/report.html

# The shipped published networks (resources/pretrained), regenerated from the lab's files beside the checkout.
LAB_MODELS ?= ../shared/models/hrtem-generalization
pretrained: $(STAMP)
	$(BIN)/rfseg import --shipped $(LAB_MODELS) --out resources/pretrained

# The demo's main figure shown in README.md (regenerated from the demo results).
readme-figure: run
	mkdir -p docs && cp results/figures/hrtem/dice_vs_rf.png docs/demo_dice_vs_rf_hrtem.png

# The measured series that `rfseg recommend` consults for datasets known only by their fingerprint
# (resources/series), collected from a finished run of configs/series.yaml; its summary.csv (mean ± std over seeds)
# is for the docs.
SERIES ?= results/series
series-evidence: $(STAMP)
	mkdir -p resources/series
	$(BIN)/python -c "import glob, sys, pandas as pd; \
	pd.concat([pd.read_csv(f) for f in sorted(glob.glob(sys.argv[1] + '/*/paired.csv'))]).to_csv(sys.argv[2] + '/paired.csv', index=False); \
	pd.concat([pd.read_csv(f) for f in sorted(glob.glob(sys.argv[1] + '/*/fingerprint.csv'))]).to_csv(sys.argv[2] + '/fingerprints.csv', index=False)" \
	$(SERIES) resources/series
	cp $(SERIES)/summary.csv resources/series/summary.csv

# The docs site (results/site): the generated reference pages and tables are rewritten first, then MkDocs builds
# with --strict, so a broken link or a missing page fails.
docs: $(STAMP)
	$(BIN)/python docs/generate.py
	$(BIN)/mkdocs build --strict

# Tests run in parallel, one pytest-xdist worker per core (TEST_WORKERS=0: in this process, one after another);
# the 20 slowest are listed at the end, so the suite's time budget can be watched from any run.
TEST_WORKERS ?= auto
PYTEST := PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -n $(TEST_WORKERS) --durations=20

test: $(STAMP)
	$(PYTEST) $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PYTEST) -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf results .snakemake
