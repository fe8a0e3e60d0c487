# syntax=docker/dockerfile:1
# prober: one image for the agent, the echo and the collector (`prober agent`, `prober echo`,
# `prober collector`).
#   docker build -t prober:0.1.0 .
#   scripts/build-image          the same with buildah, on a Debian base made locally (no registry)
# Build stage: prober's dependencies, then prober itself, into a venv. The dependencies
# are a layer of their own, keyed on the dependency list only, so a change to prober's
# code (or to pyproject.toml's tool settings) reinstalls prober and nothing else.
# Final stage: the same Python base, the venv, a non-root numeric user, no build tools.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS requirements
WORKDIR /src
COPY pyproject.toml ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
      > requirements.txt

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# /opt/build builds prober's wheel; /opt/prober is what the image ships.
RUN python -m venv /opt/build \
 && /opt/build/bin/pip install -q "hatchling>=1.25" \
 && python -m venv /opt/prober
COPY --from=requirements /src/requirements.txt /src/requirements.txt
RUN /opt/prober/bin/pip install -q -r /src/requirements.txt
WORKDIR /src
COPY pyproject.toml README.md ./
COPY prober ./prober
# pip and setuptools leave the venv: nothing installs anything at run time.
RUN /opt/build/bin/pip wheel -q --no-deps --no-build-isolation --wheel-dir /src/dist . \
 && /opt/prober/bin/pip install -q --no-deps /src/dist/prober-*.whl \
 && /opt/prober/bin/pip check \
 && /opt/prober/bin/pip uninstall -q -y pip setuptools

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="prober" \
      org.opencontainers.image.description="Active connectivity prober mesh for Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/prober /opt/prober
# The root filesystem is mounted read-only in the cluster: never try to write bytecode.
ENV PATH=/opt/prober/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# 65532: the conventional "nonroot" UID/GID; the manifests set the same numbers.
USER 65532:65532
ENTRYPOINT ["prober"]
CMD ["--help"]
