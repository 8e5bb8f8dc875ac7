# rd3kit developer targets. `make install` once, then `make test`; `make verify` is what CI's verify job runs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
RD3KIT := $(VENV)/bin/rd3kit
# Torch pinned for the CPU machines this project is developed on (see README "Install").
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
DATA ?= $(if $(RD3KIT_DATA),$(RD3KIT_DATA),../shared/data)

.PHONY: install test test-slow verify verify-gpu verify-all lock-protocols reproduce

install:
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[test]'

test:
	$(PY) -m pytest -q

test-slow:
	$(PY) -m pytest -q -m slow

reproduce:
	$(RD3KIT) reproduce

# Regression tests, then every CPU-feasible reference entry rerun from its pinned inputs.
# Entries needing ../shared/data are skipped (and say so) when it is absent. ENTRIES="a b" reruns only those.
verify:
	$(PY) -m pytest -q tests/test_protocols.py tests/test_reference.py tests/test_verdict.py tests/test_cli.py tests/test_evaluate.py
	$(RD3KIT) reference verify-all --tier cpu --data-dir $(DATA) $(foreach e,$(ENTRIES),--only $(e))

verify-gpu:
	$(RD3KIT) reference verify-all --tier gpu --device cuda --data-dir $(DATA)

verify-all:
	$(RD3KIT) reference verify-all --tier cpu --tier gpu --tier heavy --device $(if $(DEVICE),$(DEVICE),cpu) --data-dir $(DATA)

# Add newly released protocol files to the lock; existing hashes are never rewritten.
lock-protocols:
	$(PY) -c "from rd3kit.protocols import release_new, check_lock; print(release_new()); assert not check_lock(), check_lock()"

-include make/*.mk
