# Flow image: used by the Prefect worker (and its registration initContainer) and every flow-run Job.
# Legacy-builder compatible (no BuildKit-only syntax): dockerd 20.10 here builds without BuildKit.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DEFAULT_TIMEOUT=180
# A C compiler and the Python headers for the compiled check (flows/transform/_fastcheck.c),
# in this stage only (python:3.11-slim has the headers, Debian's python3 needs python3-dev). First,
# because it does not depend on the lock: a lock change does not run apt again.
RUN set -eu; \
    packages="gcc libc6-dev"; \
    python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
      || packages="$packages python3-dev"; \
    apt-get update -qq; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $packages >/dev/null; \
    rm -rf /var/lib/apt/lists/*
# Optional extra CA bundle for TLS-intercepting networks: scripts/build-image.sh drops it
# at .cache/build/ca-bundle.crt. The glob keeps COPY valid when it is absent. It only
# exists in this stage, so it never reaches the final image.
COPY requirements.lock .cache/build/ca-bundle.cr[t] /tmp/build/
# python3 -m venv works on python:3.11-slim and on Debian bookworm (python3-venv).
RUN set -eu; \
    if [ -s /tmp/build/ca-bundle.crt ]; then export PIP_CERT=/tmp/build/ca-bundle.crt; fi; \
    python3 -m venv /opt/venv; \
    /opt/venv/bin/pip install -r /tmp/build/requirements.lock
# Editable install: the code lives once, at WORKDIR/flows, where the Prefect deployment
# entrypoint (flows/etl.py:ecommerce_etl, relative to WORKDIR) expects it. A stub package
# and the C source are enough here (setuptools compiles the check in place), so a change
# elsewhere in flows/ never invalidates these layers.
WORKDIR /opt/ecommerce-etl
# README.md is only the package's long description: a stub keeps README edits from
# invalidating these layers.
COPY pyproject.toml setup.py ./
COPY flows/transform/_fastcheck.c ./flows/transform/
RUN set -eu; \
    if [ -s /tmp/build/ca-bundle.crt ]; then export PIP_CERT=/tmp/build/ca-bundle.crt; fi; \
    touch flows/__init__.py flows/transform/__init__.py README.md; \
    /opt/venv/bin/pip install --no-deps -e .; \
    ls flows/transform/_fastcheck*.so

FROM ${BASE_IMAGE}
# The app's uid and gid. Keep this default equal to the chart's image.uid (a test checks it);
# scripts/build-image.sh passes that value explicitly.
ARG APP_UID=10001
# Same base as the build stage, so the venv's interpreter symlinks stay valid.
RUN set -eu; \
    groupadd --gid "${APP_UID}" app; \
    useradd --uid "${APP_UID}" --gid "${APP_UID}" --no-create-home \
      --home-dir /tmp --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
WORKDIR /opt/ecommerce-etl
COPY flows/ ./flows/
# The check compiled in the build stage (a host's build never reaches the image: .dockerignore).
COPY --from=build /opt/ecommerce-etl/flows/transform/_fastcheck*.so ./flows/transform/
# Code is root-owned and read-only for the app user; everything writable lives in /tmp
# (an emptyDir under readOnlyRootFilesystem).
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    PREFECT_HOME=/tmp/prefect \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    ETL_DATA_DIR=/tmp/data
# Numeric user so Kubernetes can verify runAsNonRoot.
USER ${APP_UID}:${APP_UID}
# No ENTRYPOINT: the worker's Job sets args (`prefect flow-run execute`), the hook sets its own.
CMD ["ecommerce-etl", "--help"]
