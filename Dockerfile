# syntax=docker/dockerfile:1
# prober: one image for the agent and the collector (`prober agent`, `prober collector`).
#   docker build -t prober:0.1.0 .
# Build stage: install prober and its dependencies from this source tree into a venv.
# Final stage: the same Python base, the venv, a non-root numeric user, no build tools.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/prober
WORKDIR /src
COPY pyproject.toml README.md ./
COPY prober ./prober
RUN /opt/prober/bin/pip install --no-cache-dir .

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
