# cloudctl's front door. `make setup` makes a fresh Debian 12 machine (root, no systemd) ready:
# Debian packages, the venv, PostgreSQL, and this machine prepared as a libvirt host by the
# project's own Ansible role. Every step is idempotent and quick when already done.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
# Steps of `setup` must run in order, even under `make -j`.
.NOTPARALLEL:

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMPS := .stamps
LIBVIRT_URI := qemu:///system
PYTEST_ARGS ?=

export DEBIAN_FRONTEND := noninteractive

.PHONY: help setup debs venv postgres host demo test test-unit test-integration lint bench bench-scheduler \
	clean distclean

help:
	@echo "make setup             install and start everything this machine needs (idempotent)"
	@echo "make test              setup, then all tests (unit + integration)"
	@echo "make test-unit         unit tests only (no libvirtd, no setup of the host)"
	@echo "make test-integration  setup, then the tests marked integration"
	@echo "make lint              ruff, mypy, import-linter"
	@echo "make bench             benchmarks (all, including bench-scheduler)"
	@echo "make bench-scheduler   scheduler placement and claim workloads only"
	@echo "make demo              setup, then scripts/demo.sh"
	@echo "make clean|distclean   remove caches and stamps | and the venv"

setup: debs venv postgres host
	@# awk reads to the end: grep -m1 quitting early could kill virsh with SIGPIPE (exit 141)
	@version=$$(virsh -c $(LIBVIRT_URI) version --daemon | awk '/Running against daemon/ && !n++'); \
	echo "setup: libvirtd is up ($(LIBVIRT_URI)): $$version"

# (a) Debian packages the venv needs (libvirt-dev, pkg-config, gcc, python3-dev, ...).
debs:
	@scripts/bootstrap.sh

# (b) the venv, reinstalled when pyproject.toml changes.
venv: $(STAMPS)/venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMPS)/venv: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@mkdir -p $(STAMPS)
	@touch $@

postgres:
	@url=$$(scripts/ensure-postgres.sh); echo "setup: PostgreSQL at $$url"

# (c) this machine as a libvirt host: packages, qemu.conf, virtlogd + libvirtd, bridge.
host: venv
	@VENV=$(abspath $(VENV)) scripts/prepare-host.sh

demo: setup
	scripts/demo.sh

# Tests find the real PostgreSQL in CLOUDCTL_TEST_PG_URL (the cluster's port is usually 5432,
# but Debian picks the next free one if 5432 was taken when the cluster was created).
test: setup
	@url=$$(scripts/ensure-postgres.sh); set -x; \
	CLOUDCTL_TEST_PG_URL=$$url $(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-unit: debs venv
	$(BIN)/pytest -q -p no:cacheprovider -m "not integration" $(PYTEST_ARGS)

test-integration: setup
	@url=$$(scripts/ensure-postgres.sh); set -x; \
	CLOUDCTL_TEST_PG_URL=$$url $(BIN)/pytest -q -p no:cacheprovider -m integration $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check cli library inventory tests benchmarks roles
	$(BIN)/ruff format --check cli library inventory tests benchmarks roles
	$(BIN)/mypy
	$(BIN)/lint-imports

# The claim workloads also race on PostgreSQL, found as `make test` finds it.
bench: venv
	@url=$$(scripts/ensure-postgres.sh); set -x; \
	CLOUDCTL_TEST_PG_URL=$$url $(BIN)/python -m benchmarks

bench-scheduler: venv
	@url=$$(scripts/ensure-postgres.sh); set -x; \
	CLOUDCTL_TEST_PG_URL=$$url $(BIN)/python -m benchmarks scheduler

clean:
	rm -rf $(STAMPS) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache build dist
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) cli/*.egg-info
