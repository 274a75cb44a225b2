#!/usr/bin/env bash
# Make a Docker engine answer: install docker.io if needed and start dockerd
# without iptables/bridge (no netfilter in this sandbox; builds/runs use --network host).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

DOCKERD_LOG=${DOCKERD_LOG:-/var/log/dockerd.log}
WAIT_SECONDS=${DOCKER_WAIT_SECONDS:-60}

if engine_ok; then
  log "docker engine already answers"
  exit 0
fi

have dockerd || apt_install docker.io
have debootstrap || apt_install debootstrap
have docker || die "docker CLI missing after installing docker.io"

log "starting dockerd (log: $DOCKERD_LOG)"
# daemonize: keep dockerd alive after this script (and its caller's process group) exits.
daemonize dockerd --iptables=false --bridge=none >>"$DOCKERD_LOG" 2>&1 </dev/null

for _ in $(seq "$WAIT_SECONDS"); do
  if engine_ok; then
    log "docker engine ready: $(docker version --format '{{.Server.Version}}')"
    exit 0
  fi
  sleep 1
done
tail -n 30 "$DOCKERD_LOG" >&2 || true
die "dockerd did not answer within ${WAIT_SECONDS}s"
