#!/usr/bin/env bash
# Build the flow image (default tag ecommerce-etl:dev) with whatever base is usable here:
# $BASE_IMAGE if set, else python:3.11-slim if present or pullable, else the local
# debootstrap base (scripts/base-image.sh). Usage: scripts/build-image.sh [IMAGE]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

IMAGE=${1:-${IMAGE:-ecommerce-etl:dev}}
ROOT=$(cd "$here/.." && pwd)
DEFAULT_BASE=python:3.11-slim
LOCAL_BASE=${BASE_IMAGE_LOCAL:-local/debian-python:bookworm}

engine_ok || die "no Docker engine answers (run scripts/docker-engine.sh)"

if [ -z "${BASE_IMAGE:-}" ]; then
  if image_exists "$DEFAULT_BASE" || docker pull -q "$DEFAULT_BASE" >/dev/null 2>&1; then
    BASE_IMAGE=$DEFAULT_BASE
  else
    log "$DEFAULT_BASE cannot be pulled; using the debootstrap base $LOCAL_BASE"
    BASE_IMAGE_LOCAL=$LOCAL_BASE "$here/base-image.sh"
    BASE_IMAGE=$LOCAL_BASE
  fi
fi

# pip inside the build must trust the same CAs as the host (TLS interception).
stage_ca_bundle "$ROOT"

# The image's uid is the chart's image.uid, so pods and image agree (a YAML parser reads it:
# the project's venv has PyYAML). APP_UID overrides it.
if [ -z "${APP_UID:-}" ]; then
  py=$ROOT/.venv/bin/python
  [ -x "$py" ] || py=python3
  APP_UID=$("$py" -c 'import sys, yaml; print(int(yaml.safe_load(open(sys.argv[1]))["image"]["uid"]))' \
    "$ROOT/charts/ecommerce-etl/values.yaml") \
    || die "cannot read image.uid from charts/ecommerce-etl/values.yaml (needs PyYAML: make venv), or set APP_UID"
fi

log "building $IMAGE from BASE_IMAGE=$BASE_IMAGE (APP_UID=$APP_UID)"
docker build --network host --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "APP_UID=$APP_UID" -t "$IMAGE" "$ROOT"
