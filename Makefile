# Tessera: `make run` starts the suite, `make test` runs every test.
# Both set up what they need first (virtual environment, packages, code
# generated from the protos), so they work on a fresh clone.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
GENERATED := $(VENV)/.generated
PROTOS := $(shell find protos -name '*.proto')
BUF := .tools/node_modules/.bin/buf

.PHONY: install proto run test test-unit test-integration test-e2e lint format bench clean

# Five editable distributions sharing the `tessera` namespace (see pyproject.toml).
DISTRIBUTIONS := runtime services/profiles services/segments services/experiments services/decision
PYPROJECTS := pyproject.toml $(addsuffix /pyproject.toml,$(DISTRIBUTIONS))
# What the venv installs: every distribution, profiles with its training extra.
EDITABLES := $(subst services/profiles,'services/profiles[train]',$(DISTRIBUTIONS))

$(INSTALLED): $(PYPROJECTS)
	@$(PYTHON) -c 'import sys, ensurepip; sys.exit(0 if sys.version_info >= (3, 11) else "Tessera needs Python 3.11 or newer: make PYTHON=python3.11 ...")' \
	  || { echo "Python 3.11+ with venv and ensurepip is needed (Debian: apt-get install python3-venv)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade 'pip>=25.1'
	$(PY) -m pip install --quiet --disable-pip-version-check --group dev $(addprefix -e ,$(EDITABLES))
	touch $@

$(GENERATED): $(INSTALLED) $(PROTOS) tools/protogen.py
	$(PY) tools/protogen.py
	touch $@

install: $(GENERATED)  ## virtual environment, packages and generated code

proto: $(GENERATED)  ## regenerate the Python API from protos/

run: install  ## start all four services on embedded defaults; Ctrl-C stops them
	$(VENV)/bin/tessera up

test: install  ## unit, integration (real PostgreSQL and Redis) and end-to-end tests
	$(PY) -m pytest

test-unit: install
	$(PY) -m pytest tests/unit

test-integration: install
	$(PY) -m pytest tests/integration

test-e2e: install
	$(PY) -m pytest tests/e2e

$(BUF):
	npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@1.75.0

lint: install $(BUF)  ## buf lint, ruff and mypy
	$(BUF) lint
	$(BUF) format --diff --exit-code
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) tools/protogen.py --check
	$(VENV)/bin/mypy

format: install $(BUF)
	$(BUF) format -w
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: install  ## Decide against an echo RPC, at concurrency 1, 16 and 64
	$(PY) -m bench

clean:
	-$(PY) tools/protogen.py --clean
	rm -rf $(VENV) build .tools .tessera $(addsuffix /src/*.egg-info,$(DISTRIBUTIONS))
