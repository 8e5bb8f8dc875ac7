# rd3kit on a CUDA PyTorch base. Every input is pinned: the base by digest, Python packages by sha256
# (requirements/container.txt, made by `make lock`), the kit by the build context. docs/container.md
# says how to build, run, bump the base, and what was and was not checked.
#
# The base is pinned by tag AND digest; the digest decides what is pulled, the tag is for people.
# NOT READ FROM THE REGISTRY HERE: the machine this was written on reaches no registry. The digest is the
# one that four unrelated public projects pin for this same tag (identical in all four); it has not been
# pulled or inspected by us. Confirm it on a connected machine before a release, and use what it prints:
#   skopeo inspect --format '{{.Digest}}' docker://docker.io/pytorch/pytorch:2.14.0-cuda13.0-cudnn9-runtime
#   crane digest docker.io/pytorch/pytorch:2.14.0-cuda13.0-cudnn9-runtime
# Bump BASE_IMAGE and requirements/base-image.txt together, then `make lock` (docker/check_base.py fails
# the build when they disagree).
ARG BASE_IMAGE=pytorch/pytorch:2.14.0-cuda13.0-cudnn9-runtime@sha256:9c99fafa01edfaa3d16da8c209b38b5970bb6fd6e72725ef60efc901489f70c6

FROM ${BASE_IMAGE}

# An ARG declared before FROM is not visible inside the stage until declared again.
ARG BASE_IMAGE
# index: the locked wheels come from the package index, each checked against its sha256.
# wheelhouse: only from docker/wheelhouse/ (offline builds; the hashes are checked all the same).
ARG INSTALL_FROM=index
# Optional extra hash-locked requirements file inside docker/wheelhouse/, for a base without torch.
ARG EXTRA_REQUIREMENTS=
# 1: fail unless the base ships the torch/torchvision the lock was resolved for, and every installed
# package's requirements are met. Only a base that brings no torch of its own turns it off.
ARG CHECK_BASE=1

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# PYTHONHASHSEED and CUBLAS_WORKSPACE_CONFIG make set iteration and cuBLAS reductions repeatable
# (the latter is what torch.use_deterministic_algorithms asks for on CUDA >= 10.2). The kit's data and
# its per-seed run cache live in the /data volume, so results and resumable runs outlive the container.
ENV PYTHONHASHSEED=0 \
    CUBLAS_WORKSPACE_CONFIG=:4096:8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/cache/huggingface \
    HF_HUB_DISABLE_TELEMETRY=1 \
    RD3KIT_DATA=/data \
    RD3KIT_HOME=/data/.rd3kit \
    RD3KIT_REFERENCE=/opt/rd3kit/reference \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    RD3KIT_IMAGE_BASE=${BASE_IMAGE}

# The venv sees the base's torch (--system-site-packages) and takes the locked packages in front of it;
# it is made --without-pip and uses the base's pip, because the base's Python may lack ensurepip.
RUN useradd --no-log-init --uid 10001 --user-group --create-home --home-dir /home/rd3kit rd3kit \
 && python3 -m venv --without-pip --system-site-packages /opt/venv \
 && mkdir -p /data /cache/huggingface \
 && chown rd3kit:rd3kit /data /cache/huggingface

# --only-binary: no setup.py of a dependency ever runs; --no-deps: nothing outside the lock comes in.
RUN --mount=type=bind,source=requirements,target=/tmp/requirements \
    --mount=type=bind,source=docker,target=/tmp/docker \
    if [ "$INSTALL_FROM" = wheelhouse ]; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=/tmp/docker/wheelhouse; \
    elif [ "$INSTALL_FROM" != index ]; then echo "INSTALL_FROM must be index or wheelhouse, got '$INSTALL_FROM'" >&2; exit 2; fi \
 && python -m pip install --no-cache-dir --no-deps --require-hashes --only-binary=:all: -r /tmp/requirements/container.txt \
 && if [ -n "$EXTRA_REQUIREMENTS" ]; then \
      python -m pip install --no-cache-dir --no-deps --require-hashes --only-binary=:all: -r "/tmp/docker/wheelhouse/$EXTRA_REQUIREMENTS"; \
    fi

# The kit itself: local files only, built offline with the locked setuptools. The reference store
# (claims, reproductions, baselines) is data beside the package, not in it: RD3KIT_REFERENCE points there.
# COPY keeps the checkout's file modes (an atomic writer's 0600 files among them): the chmod below makes
# everything readable by the non-root user whatever the checkout had.
COPY pyproject.toml README.md /opt/rd3kit/src/
COPY rd3kit/ /opt/rd3kit/src/rd3kit/
COPY reference/ /opt/rd3kit/reference/
RUN --mount=type=bind,source=requirements,target=/tmp/requirements \
    --mount=type=bind,source=docker,target=/tmp/docker \
    python -m pip install --no-cache-dir --no-deps --no-index --no-build-isolation /opt/rd3kit/src \
 && rm -rf /opt/rd3kit/src/build /opt/rd3kit/src/rd3kit.egg-info \
 && chmod -R a+rX /opt/rd3kit \
 && if [ "$CHECK_BASE" = 1 ]; then python /tmp/docker/check_base.py /tmp/requirements/base-image.txt; fi \
 && rd3kit --help > /dev/null

# Identity of this build, kept as ENV so result records can carry it (rd3kit/record.py reads
# RD3KIT_IMAGE_BASE, RD3KIT_IMAGE_DIGEST and RD3KIT_GIT_SHA). Declared last: every RUN after an ARG sees
# it, so a new commit sha would otherwise rebuild the dependency layers. The pushed image's digest
# cannot be known inside its own build: pass it at run time as RD3KIT_IMAGE_DIGEST (docs/container.md).
ARG RD3KIT_IMAGE_REF=unset
ARG RD3KIT_GIT_SHA=unknown
ENV RD3KIT_IMAGE_REF=${RD3KIT_IMAGE_REF} \
    RD3KIT_GIT_SHA=${RD3KIT_GIT_SHA}
LABEL org.opencontainers.image.title="rd3kit" \
      org.opencontainers.image.base.name="${BASE_IMAGE}" \
      org.opencontainers.image.revision="${RD3KIT_GIT_SHA}" \
      org.opencontainers.image.ref.name="${RD3KIT_IMAGE_REF}"

USER 10001:10001
WORKDIR /data
VOLUME ["/data", "/cache/huggingface"]
ENTRYPOINT ["rd3kit"]
CMD ["--help"]
