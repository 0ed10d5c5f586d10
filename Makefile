# The interface: `make demo` and `make test` after a clone; see README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TESTBED := $(PYTHON) -m testbed
# REAL_NODE=1: `make cluster` and `make demo` add the test bed's real node (needs root).
REAL_NODE_FLAG := $(if $(filter 1,$(REAL_NODE)),--real-node)
# The Debian packages a goal needs (testbed/packages.py): installed when make runs as
# root; otherwise make stops at once, naming them and the apt-get command to run.
PACKAGES := $(PYTHON) -m testbed.packages
REAL_NODE_PACKAGES := $(if $(filter 1,$(REAL_NODE)),real-node)
export KUBECONFIG := $(CURDIR)/.cluster/kubeconfig

.PHONY: help venv lint fmt unit integration e2e test mutation cluster cluster-down cluster-status testbed-build demo bench bench-quick clean packages-integration packages-e2e packages-cluster

help:
	@echo "make demo            start the local test bed and watch a bad version get reverted"
	@echo "make test            lint, unit, integration and e2e tests (what CI runs)"
	@echo "make lint            ruff, ruff format --check, mypy --strict, import-linter"
	@echo "make mutation        each guarantee in tests/mutations.toml, removed, must fail its tests"
	@echo "make cluster         start the local test bed (builds it once: ~6 min cold, metrics-server ~6 more)"
	@echo "                     REAL_NODE=1 adds a real node (kubelet, containerd); also for demo"
	@echo "make cluster-down    stop it;  make cluster-status: show it"
	@echo "make bench           benchmarks (bench/results/);  make bench-quick: the same, small N"

packages-integration:
	@$(PACKAGES) tests

packages-e2e:
	@$(PACKAGES) control-plane real-node tests

packages-cluster:
	@$(PACKAGES) control-plane $(REAL_NODE_PACKAGES)

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	PYTHONPATH=operator $(BIN)/lint-imports  # this checkout's operator, whatever the venv names

fmt: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The tiers (tests/conftest.py): unit is the pure core; integration runs binaries
# and subprocesses but needs no cluster; e2e runs only with --e2e, and MARK=... runs a
# slice of it (realnode, gitops, resilience, security, slow, "not slow": tests/README.md).
# Its session fixture starts the test bed if none is running and stops only what it started;
# a cold build (minutes: the test bed, its metrics-server and its images; `testbed build`)
# happens before pytest, in sight and outside its timeouts.
unit: venv
	$(BIN)/pytest tests/unit -q

# The tools the tests run (Helm 4, the kstatus checker, kube-score) are built from Go
# modules here, once and cached, for the same reason, and so are the MLServer images (minutes
# cold; without root or debootstrap this says why not, and their test is skipped) and
# MLflow's own venv (testbed/mlflow.py).
integration: packages-integration venv
	testbed/build-tool.sh helm >/dev/null
	testbed/build-tool.sh kstatus >/dev/null
	testbed/build-tool.sh kube-score >/dev/null
	$(PYTHON) -m testbed.mlserver_image >/dev/null
	$(BIN)/python -m testbed.mlflow install >/dev/null
	$(BIN)/pytest tests/integration -q

e2e: packages-e2e venv
	$(TESTBED) build --real-node
	testbed/build-tool.sh helm >/dev/null
	testbed/build-tool.sh kstatus >/dev/null
	$(BIN)/pytest tests/e2e -q --e2e $(if $(MARK),-m "$(MARK)")

test: packages-e2e lint unit integration e2e

# Each listed guarantee is taken out of a scratch copy of the code and its tests must fail
# (tests/mutation.py); MUTATION_ARGS=--no-e2e runs the quick ones only.
mutation: packages-e2e venv
	$(TESTBED) build --real-node
	$(BIN)/python -m tests.mutation $(MUTATION_ARGS)

testbed-build:
	$(TESTBED) build

cluster: packages-cluster
	$(TESTBED) up $(REAL_NODE_FLAG)

cluster-down:
	$(TESTBED) down

cluster-status:
	$(TESTBED) status

demo: packages-cluster venv
	$(BIN)/python -m testbed.demo $(REAL_NODE_FLAG)

$(BIN)/.bench-installed: $(BIN)/.installed pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

# RUNS=3: three full runs one after another (the figures' spread is over a commit's runs).
bench: $(BIN)/.bench-installed
	$(BIN)/python -m bench $(if $(RUNS),--runs $(RUNS))

bench-quick: $(BIN)/.bench-installed
	$(BIN)/python -m bench --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
