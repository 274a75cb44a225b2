#!/usr/bin/env bash
# Build a python3.11 base image without a registry: debootstrap bookworm + docker import.
# Cached twice: the image itself, and the rootfs tarball (survives a docker reset).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

IMAGE=${BASE_IMAGE_LOCAL:-local/debian-python:bookworm}
SUITE=${DEBIAN_SUITE:-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE_DIR=${ETL_CACHE_DIR:-/var/cache/ecommerce-etl}
TARBALL="$CACHE_DIR/debian-python-$SUITE.tar"

engine_ok || die "no Docker engine answers (run scripts/docker-engine.sh)"

if image_exists "$IMAGE"; then
  log "$IMAGE exists; nothing to do"
  exit 0
fi

if [ ! -s "$TARBALL" ]; then
  have debootstrap || apt_install debootstrap
  [ "$(id -u)" -eq 0 ] || die "debootstrap needs root"
  mkdir -p "$CACHE_DIR"
  rootfs=$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")
  trap 'rm -rf "$rootfs"' EXIT
  log "debootstrap $SUITE into $rootfs (~40 s)"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$rootfs" "$MIRROR" >"$CACHE_DIR/debootstrap.log" 2>&1 \
    || { tail -n 30 "$CACHE_DIR/debootstrap.log" >&2; die "debootstrap failed"; }
  # Slim the image: apt lists/caches are not needed at run time.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  # Write to a temp name first so an interrupted run never leaves a truncated cache.
  tar -C "$rootfs" --numeric-owner -cf "$TARBALL.tmp" .
  mv "$TARBALL.tmp" "$TARBALL"
else
  log "using cached rootfs $TARBALL"
fi

log "docker import -> $IMAGE"
docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  "$TARBALL" "$IMAGE" >/dev/null
log "built $IMAGE"
