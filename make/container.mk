# Container targets, included by the main Makefile (`include make/container.mk`).
# docs/container.md says what each one checks and what was run on the machines here.
#
#   make lock           regenerate requirements/container.txt (hash-locked) from pyproject.toml; needs uv + an index
#   make docker-lint    hadolint at warning level + docker/policy.py (pinned FROM, non-root, hashes, lock)
#   make docker-build   build the CUDA image with docker (DOCKER=podman works too); needs the base image's registry
#   make podman-smoke   offline podman build of the same Dockerfile on a local Debian base, then run it
#   make lock-check-cuda  install the lock, hashes checked, for the CUDA base's Python/platform into a temp dir

CONTAINER_PY ?= .venv/bin/python
HADOLINT ?= .venv/bin/hadolint
DOCKER ?= docker
RD3KIT_IMAGE ?= rd3kit:local
RD3KIT_GIT_SHA ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
# A CPU-runnable torch wheel for the smoke image (its sha256 is recorded); empty: the smoke image has no torch.
SMOKE_TORCH_WHEEL ?= $(firstword $(wildcard $(addsuffix /torch-*+cpu-cp311-*.whl,$(subst :, ,$(PIP_FIND_LINKS)))))

# The CUDA base's interpreter and glibc (Ubuntu 24.04: Python 3.12, glibc 2.39), as public reports of the
# image describe it; not inspected here (no registry reachable).
CUDA_BASE_PYTHON ?= 3.12
CUDA_BASE_PLATFORM ?= x86_64-manylinux_2_39

.PHONY: lock docker-lint docker-build podman-smoke lock-check-cuda

lock:
	$(CONTAINER_PY) docker/lock.py

docker-lint:
	$(HADOLINT) --failure-threshold warning Dockerfile
	$(CONTAINER_PY) docker/policy.py Dockerfile requirements/container.txt

docker-build: docker-lint
	$(DOCKER) build \
	  --build-arg RD3KIT_IMAGE_REF=$(RD3KIT_IMAGE) \
	  --build-arg RD3KIT_GIT_SHA=$(RD3KIT_GIT_SHA) \
	  -t $(RD3KIT_IMAGE) .

podman-smoke:
	$(CONTAINER_PY) docker/smoke.py $(if $(SMOKE_TORCH_WHEEL),--torch-wheel $(SMOKE_TORCH_WHEEL))

lock-check-cuda:
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(dir $(CONTAINER_PY))uv pip install --quiet --no-deps --require-hashes --only-binary :all: \
	  --python-version $(CUDA_BASE_PYTHON) --python-platform $(CUDA_BASE_PLATFORM) \
	  --target "$$tmp" -r requirements/container.txt && \
	echo "lock-check-cuda: every locked wheel exists for Python $(CUDA_BASE_PYTHON) $(CUDA_BASE_PLATFORM) and matches its hash"
