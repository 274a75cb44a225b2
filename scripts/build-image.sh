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

log "building $IMAGE from BASE_IMAGE=$BASE_IMAGE"
docker build --network host --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$IMAGE" "$ROOT"
