# skd-book: two commands do everything on a fresh machine with Python 3.11.
#   make book   create .venv if missing, install, run the main job, render _build/html/index.html
#   make test   create .venv if missing, install, run every test (lint, library, notebooks under
#               nbval, the smoke pipeline); make test-fast: lint and the library tests not marked slow
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Chapters that are notebooks: MyST markdown files with a jupytext header.
NOTEBOOK_SOURCES := $(shell grep -l '^jupytext:' book/*.md 2>/dev/null)
NOTEBOOKS := $(NOTEBOOK_SOURCES:.md=.ipynb)

.PHONY: book experiments teacher widgets test test-fast lint test-lib test-notebooks test-pipeline test-slurm notebooks bench install clean help
help:
	@echo "make book   run the main job and render the book to _build/html/index.html"
	@echo "make test   run every test (lint, library, notebooks, the smoke pipeline)"
	@echo "make test-fast  lint and the library tests not marked slow (a couple of minutes)"
	@echo "make bench  run the benchmarks in bench/ and save their outputs (text and JSON) in bench/results/"
	@echo "make test-slurm  (root) start a single-node SLURM cluster here and run the slurm tests"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# The .ipynb twins are generated from the MyST sources (and git-ignored).
book/%.ipynb: book/%.md $(STAMP)
	$(BIN)/jupytext --quiet --to ipynb --output $@ $<

notebooks: $(NOTEBOOKS)

test: lint test-lib test-notebooks test-pipeline

# ruff: lint rules and formatting, configured in pyproject.toml; the chapters' code cells, read
# through jupytext, against the same rules (tests/test_chapters.py).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_chapters.py -k ruff

# The tests run in TEST_WORKERS processes (pytest-xdist), each on one thread: a module's tests
# stay in one process (their module fixtures run once), the notebooks one file per process.
# TEST_WORKERS=0 runs them in this process. pytest exits 5 when it collects no test: that is a
# failure here, said clearly.
TEST_WORKERS ?= 2
# $(call XDIST,<xdist distribution mode>): the pytest-xdist options, none for TEST_WORKERS=0.
XDIST = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist $(1))
test-lib: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest tests -q $(call XDIST,loadscope) || { rc=$$?; [ $$rc -eq 5 ] && echo "pytest collected no tests"; exit $$rc; }

# The fast loop while working: lint, then every library test not marked slow.
test-fast: lint
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest tests -q -m "not slow" $(call XDIST,loadscope) || { rc=$$?; [ $$rc -eq 5 ] && echo "pytest collected no tests"; exit $$rc; }

# Every chapter notebook runs under nbval in the smoke size (SKD_SMOKE=1 is read in each parameters cell).
test-notebooks: $(NOTEBOOKS)
	SKD_SMOKE=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest --nbval-lax -q -p no:cacheprovider $(call XDIST,loadfile) $(NOTEBOOKS) || { rc=$$?; [ $$rc -eq 5 ] && echo "nbval collected no notebooks"; exit $$rc; }

# The main job end to end in the smoke profile (every experiment, tiny sizes) in a temporary runs folder.
test-pipeline: $(STAMP)
	tmp=$$(mktemp -d) && $(BIN)/python -m skdlib.experiments run --profile smoke --runs-root $$tmp/runs \
	  && $(BIN)/python -m skdlib.experiments status --profile smoke --runs-root $$tmp/runs && rm -rf $$tmp

# submitit against a real single-node SLURM cluster on this machine (not part of `make test`): needs
# root; installs Debian's munge, slurmctld, slurmd, slurmdbd and mariadb-server when missing, starts
# the daemons and leaves them running (tests/slurm/stop_cluster.sh stops them).
test-slurm: $(STAMP)
	bash tests/slurm/start_cluster.sh
	SKD_SLURM=1 $(BIN)/python -m pytest -m slurm tests -q -p no:cacheprovider || { rc=$$?; [ $$rc -eq 5 ] && echo "pytest collected no slurm tests"; exit $$rc; }

bench: $(STAMP)
	mkdir -p bench/results
	for f in bench/*.py; do n=$$(basename $$f .py); echo "== $$f"; \
	  $(BIN)/python $$f --json bench/results/$$n.json | tee bench/results/$$n.txt; done

# The main job: every experiment of the profile (data set, teacher, students; finished runs are
# reused, interrupted ones resumed), then the rendered book, whose chapters read the run folders.
# PROFILE=quick (default, CPU), smoke (a minute or two), gpu (one GPU, the embedded data) or paper
# (GPUs and a real data set: make book PROFILE=paper DATA=cityscapes DATA_ROOT=/data/cityscapes).
# EXPERIMENT_OPTIONS passes more options, e.g. "--gpus 0,1,2,3" or "--executor slurm --partition gpu".
PROFILE ?= quick
DATA ?=
DATA_ROOT ?=
EXPERIMENT_OPTIONS ?=
EXPERIMENT_SETS := $(if $(DATA),--set data.name=$(DATA)) $(if $(DATA_ROOT),--set data.root=$(DATA_ROOT))

# Every teacher of the profile (and its pretraining run) trained again from scratch (the quick
# profile keeps them in kept/quick, committed: make book reuses each while its configuration matches).
teacher: $(STAMP)
	$(BIN)/python -m skdlib.experiments run --profile $(PROFILE) --teacher-only --force $(EXPERIMENT_SETS)

experiments: $(STAMP)
	$(BIN)/python -m skdlib.experiments run --profile $(PROFILE) $(EXPERIMENT_SETS) \
	  $(EXPERIMENT_OPTIONS)

# The widgets' and MathJax's JavaScript, pinned in package-lock.json, copied into the book (no CDN).
widgets: $(STAMP)
	$(BIN)/python book/vendor_widgets.py

# Execution is forced (no stale cache: the cache ignores library changes).
book: experiments widgets
	rm -rf _build/.jupyter_cache
	SKD_PROFILE=$(PROFILE) $(BIN)/jupyter-book build . --warningiserror --keep-going
	@echo "Book: $(CURDIR)/_build/html/index.html"

clean:
	rm -rf _build book/*.ipynb
