# Every target wires one stage of the kit; `make demo` runs them all on synthetic data.
# CONFIG picks the competition config, e.g. `make train CONFIG=configs/chest-xray.toml`.
CONFIG ?= configs/competition.toml
PYTHON ?= python3
VENV := .venv
KIT := $(VENV)/bin/kit --config $(CONFIG)
SYNTH_DIR ?= data/synth
SYNTH_ARGS ?= --n-train 5000 --n-test 1700 --size 128
MESSAGE ?= kit submission
HOST ?= 127.0.0.1
PORT ?= 8080
STAMP := $(VENV)/.installed

.PHONY: setup synth folds train calibrate blend submit demo test test-fast dashboard bench clean doctor plan report timings

setup: $(STAMP)

# uv installs the several-GB torch stack in seconds where pip takes minutes.
$(STAMP): pyproject.toml
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --root-user-action=ignore uv
	$(PYTHON) -m uv venv --quiet --allow-existing -p $(PYTHON) $(VENV)
	$(PYTHON) -m uv pip install --quiet -p $(VENV)/bin/python -e '.[test,ray]'
	touch $(STAMP)

synth: $(STAMP)
	$(KIT) synth $(SYNTH_DIR) $(SYNTH_ARGS) --preview

folds: $(STAMP)
	$(KIT) folds

train: $(STAMP)
	$(KIT) train --variant all --fold all

calibrate: $(STAMP)
	$(KIT) calibrate --variant all

blend: $(STAMP)
	$(KIT) blend

submit: $(STAMP)
	$(KIT) submit --message "$(MESSAGE)"

doctor: $(STAMP)
	$(KIT) doctor

plan: $(STAMP)
	$(KIT) plan

report: $(STAMP)
	$(KIT) report

timings: $(STAMP)
	$(KIT) timings

dashboard: $(STAMP)
	$(KIT) dashboard --host $(HOST) --port $(PORT)

# With KIT_TIMINGS set, each kit command adds its wall time to that file; the demo starts a new log and prints it at the end.
TIMINGS ?= runs/timings.jsonl
demo timings: export KIT_TIMINGS = $(TIMINGS)
demo: $(STAMP)
	$(KIT) timings --reset
	$(KIT) synth $(SYNTH_DIR) $(SYNTH_ARGS) --preview
	$(KIT) folds
	$(KIT) train --variant all --fold all
	$(KIT) calibrate --variant all
	$(KIT) blend --name demo
	$(KIT) score submissions/demo.csv --solution $(SYNTH_DIR)/solution.csv --compare-argmax
	$(KIT) report
	$(KIT) submit submissions/demo.csv --message "kit demo" --dry-run
	$(KIT) timings

# `make test` runs everything (CI's command: .ci/run); `make test-fast` leaves out the tests marked slow (they train,
# search or run a pipeline end to end), ray (start Ray) or subprocess (start a Python process, seconds each just to
# import torch): the edit-test loop. Both print the 15 slowest tests.
# Two worker processes (pytest-xdist), each test file on one worker so a module fixture is built once;
# PYTEST_WORKERS=0 runs in this process. PYTEST_ARGS passes more, e.g. PYTEST_ARGS="tests/test_blend.py -k stacker".
PYTEST_WORKERS ?= 2
PYTEST_ARGS ?=
PYTEST := $(VENV)/bin/python -m pytest -q --durations=15 -n $(PYTEST_WORKERS) --dist loadfile

test: $(STAMP)
	$(VENV)/bin/ruff check kit tests benchmarks
	$(PYTEST) $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(VENV)/bin/ruff check kit tests benchmarks
	$(PYTEST) -m "not slow and not ray and not subprocess" $(PYTEST_ARGS)

bench: $(STAMP)
	$(VENV)/bin/python -m benchmarks

# Long-tail recipes and the pipelines beyond one model (stack, pseudo-labels, seeds, blend), 5 folds each, on the
# realistic synthetic preset (LONGTAIL_ARGS="--recipes core --threads 1": 43.7 min on 2 shared cores; all 8 recipes: longer);
# LONGTAIL_ARGS=--quick checks the plumbing in minutes. Results: benchmarks/results/longtail.json
LONGTAIL_ARGS ?=
.PHONY: bench-longtail
bench-longtail: $(STAMP)
	$(VENV)/bin/python -m benchmarks.longtail $(LONGTAIL_ARGS)

clean:
	rm -rf .cache runs oof/*.npz oof/*.json oof/*.db oof/*.png folds/*.csv submissions/*.csv submissions/*.json submissions/*.png submissions/*.html $(SYNTH_DIR)
