# The two commands a newcomer needs: `make demo` and `make test`. Both set up .venv by themselves.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export MPLBACKEND := Agg
export PYTHONHASHSEED := 0

.PHONY: install demo test test-slow check-clean nbtest pytest notebooks bench docs readme lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip setuptools wheel

# Reinstall only when the dependency list changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/python tools/run_demo.py

# Notebooks are the source: exporting and cleaning must leave the tree as committed.
check-clean: install
	@before=$$(git status --porcelain); \
	$(BIN)/nbdev-export && $(BIN)/nbdev-clean && $(BIN)/python tools/make_readme.py; \
	after=$$(git status --porcelain); \
	if [ "$$before" != "$$after" ]; then echo "nbdev-export/nbdev-clean/README changed files: commit them"; git status --porcelain; git diff --stat; exit 1; fi
	$(BIN)/ruff check mlopsnb --select F403,F405,F401,F811,F821

nbtest: install
	$(BIN)/nbdev-test --n_workers 2 --skip_file_re '^(tutorials|jobs)/|^index'

pytest: install
	$(BIN)/pytest -q -m "not slow and not cuda" tests

notebooks: install
	$(BIN)/python tools/run_notebooks.py

test: check-clean nbtest pytest notebooks

test-slow: install
	$(BIN)/nbdev-test --n_workers 1 --flags slow
	$(BIN)/pytest -q -m "slow" tests

bench: install
	mkdir -p bench/results
	for f in bench/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

readme: install
	$(BIN)/python tools/make_readme.py

docs: install
	$(BIN)/python tools/make_docs.py

lint: install
	$(BIN)/ruff check mlopsnb

clean:
	rm -rf _proc docs mlruns mlflow.db bench/results
