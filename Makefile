# Set-up, demo and tests.  `make demo` and `make test` do all set-up on a fresh
# machine: a .venv built with Python 3.12, the package and its test extra
# installed editable, and nginx (the HTTP byte-range server of the tests).

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DOCS_STAMP := $(VENV)/.docs-stamp
DOCS_EXECUTION ?= force
PYTEST_ARGS ?=

.PHONY: help demo test lint docs nginx clean

help:
	@echo "make demo    set up .venv if needed, then run 'cellcoadd-dask demo'"
	@echo "make test    set up .venv and nginx if needed, then run ruff, mypy and pytest"
	@echo "             (extra pytest arguments: make test PYTEST_ARGS='-k infra')"
	@echo "make docs    build the documentation site into docs/_build/html, executing every"
	@echo "             tutorial and guide page; any warning fails the build"
	@echo "             (reuse outputs of unchanged pages: make docs DOCS_EXECUTION=cache)"
	@echo "make fuzz    mutation-fuzz the FITS, JSON and Zarr readers: N cases (default 20000), outcome table"
	@echo "make clean   remove .venv and docs/_build"

# A Python 3.12 interpreter, in order: $PYTHON312, pyenv (which honours
# .python-version), python3.12 on PATH, pyenv's 3.12.1 install directory.
$(PY):
	@py=""; \
	for c in "$${PYTHON312:-}" \
	         "$$(pyenv which python3.12 2>/dev/null)" \
	         "$$(command -v python3.12 2>/dev/null)" \
	         "$$(pyenv root 2>/dev/null || echo "$$HOME/.pyenv")/versions/3.12.1/bin/python"; do \
	  if [ -n "$$c" ] && [ -x "$$c" ] && \
	     "$$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1; then \
	    py="$$c"; break; \
	  fi; \
	done; \
	if [ -z "$$py" ]; then \
	  echo "error: no Python 3.12 found (tried \$$PYTHON312, 'pyenv which python3.12', python3.12," >&2; \
	  echo "       \$$(pyenv root)/versions/3.12.1/bin/python). Install it, e.g. 'pyenv install 3.12.1'," >&2; \
	  echo "       or point PYTHON312 at a Python 3.12 interpreter." >&2; \
	  exit 1; \
	fi; \
	echo "Creating $(VENV) with $$py"; \
	"$$py" -m venv $(VENV) && \
	$(PY) -m pip install --disable-pip-version-check -q --upgrade pip

# Reinstalled only when pyproject.toml changes.
$(STAMP): $(PY) pyproject.toml
	@$(PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' || \
	  { echo "error: $(VENV) is not a Python 3.12 environment; run 'make clean' first" >&2; exit 1; }
	$(PY) -m pip install --disable-pip-version-check -q -e '.[test]'
	@touch $@

$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[test,docs]'
	@touch $@

# The tests run a private nginx on a loopback port; install it when missing.
nginx:
	@if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then \
	  :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "Installing nginx-light (HTTP byte-range server used by the tests)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q --no-install-recommends nginx-light >/dev/null 2>&1 || \
	  { apt-get update -q && apt-get install -y -q --no-install-recommends nginx-light; }; \
	else \
	  echo "error: the tests need nginx: run 'sudo apt-get install -y nginx-light'" >&2; \
	  echo "       (or your system's nginx package), then 'make test' again." >&2; \
	  exit 1; \
	fi

demo: $(STAMP)
	$(VENV)/bin/cellcoadd-dask demo

lint: $(STAMP)
	$(VENV)/bin/ruff check cellcoadd_dask tests
	$(VENV)/bin/mypy cellcoadd_dask

# pytest runs even when ruff or mypy find problems, so one run reports all; any failure fails the target.
# pytest exits with code 5 when it collects no tests, which fails the target too.
test: $(STAMP) nginx
	@status=0; \
	echo "$(VENV)/bin/ruff check cellcoadd_dask tests"; \
	$(VENV)/bin/ruff check cellcoadd_dask tests || status=$$?; \
	echo "$(VENV)/bin/mypy cellcoadd_dask"; \
	$(VENV)/bin/mypy cellcoadd_dask || status=$$?; \
	echo "$(PY) -m pytest $(PYTEST_ARGS)"; \
	$(PY) -m pytest $(PYTEST_ARGS) || status=$$?; \
	exit $$status

# -W --keep-going: every warning is an error, and one build reports all of them.
# -n: every cross-reference must resolve.  The executed pages start the same loopback
# servers as the tests, so nginx must be present.
docs: $(DOCS_STAMP) nginx
	CELLCOADD_DOCS_EXECUTION=$(DOCS_EXECUTION) $(VENV)/bin/sphinx-build -W --keep-going -n -q -b html docs docs/_build/html

# N mutated archives, each read in a child process (2 GiB address space, 5 s); prints the outcome table.
N ?= 20000
.PHONY: fuzz
fuzz: $(STAMP)
	PYTHONPATH=tests $(PY) -m fuzz -n $(N)

clean:
	rm -rf $(VENV) docs/_build
