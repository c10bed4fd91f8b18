# netprobe: `make run` sets up and runs the live view; `make test` sets up and runs the tests.
SHELL := /bin/bash
VENV ?= $(CURDIR)/.venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: setup run test unit-test doctor ebpf clean

setup:
	$(SUDO) NETPROBE_VENV=$(VENV) scripts/setup.sh

# /usr/local/bin/netprobe is the launcher setup installs (scripts/netprobe.sh)
run: setup
	$(SUDO) /usr/local/bin/netprobe watch

doctor: setup
	$(SUDO) /usr/local/bin/netprobe doctor

# Unit tests need no root; the integration tests load real BPF and build real namespaces.
test: setup
	$(SUDO) scripts/test-deps.sh
	$(SUDO) $(PY) -m pytest -q tests

unit-test:
	$(PY) -m pytest -q tests/unit

clean:
	rm -rf $(VENV) .pytest_cache

-include lab/lab.mk
-include bench/bench.mk
