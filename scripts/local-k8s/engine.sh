#!/usr/bin/env bash
# A Docker engine of its own for the local kind cluster (socket $LK_DOCKER_SOCK), separate
# from the shared one scripts/docker-engine.sh starts, so the kind node never touches it.
#
# Why a second engine: kind runs its node with `docker run --privileged`, and Docker 20.10
# then asks runc for every capability it knows. This sandbox's capability bounding set
# lacks CAP_SYS_RESOURCE, so runc fails with
#   "runc create failed: unable to start container process: unable to apply caps:
#    operation not permitted"
# This engine's default runtime is a thin wrapper around runc that drops from the OCI spec
# (config.json, or the exec process.json) the capabilities that are not in our bounding set;
# everything else is passed to runc unchanged.
# Usage: engine.sh [start|stop|status]      then: export DOCKER_HOST=unix://$LK_DOCKER_SOCK
set -euo pipefail
# shellcheck source=scripts/local-k8s/lib.sh
. "$(dirname "$0")/lib.sh"

run_dir=/run/lk-docker
sock=$LK_DOCKER_SOCK
wrapper="$LK_BIN/runc-bounded"
logf="$LK_CACHE/logs/dockerd.log"
mkdir -p "$run_dir" "$LK_CACHE/logs"

write_wrapper() {
  local runc_bin
  runc_bin=$(command -v runc) || die "runc not found (apt-get install runc)"
  sed "s|@RUNC@|$runc_bin|" "$LK_HERE/files/runc-bounded.sh" >"$wrapper.tmp"
  chmod 0755 "$wrapper.tmp"; mv "$wrapper.tmp" "$wrapper"
}

lk_docker() { DOCKER_HOST="unix://$sock" docker "$@"; }
running() { lk_docker info >/dev/null 2>&1; }

case "${1:-start}" in
  start)
    if running; then log "kind engine answers on $sock"; exit 0; fi
    have dockerd || apt_install docker.io
    have jq || apt_install jq
    write_wrapper
    log "starting dockerd for kind on $sock (log: $logf)"
    # daemonize (setsid, no inherited locks): outlive this script. No iptables/bridge (like the shared engine); kind makes
    # its own bridge network. Its own data-root, exec-root and managed containerd.
    daemonize dockerd --host "unix://$sock" --pidfile "$run_dir/dockerd.pid" \
      --data-root "${LK_DOCKER_ROOT:-/var/lib/lk-docker}" --exec-root "$run_dir/exec" \
      --iptables=false --ip6tables=false --bridge=none \
      --add-runtime "runc-bounded=$wrapper" --default-runtime runc-bounded \
      >>"$logf" 2>&1 </dev/null
    for _ in $(seq 60); do running && { log "kind engine ready"; exit 0; }; sleep 1; done
    tail -n 30 "$logf" >&2; die "kind dockerd did not answer within 60 s" ;;
  stop)
    if [ -s "$run_dir/dockerd.pid" ]; then
      pid=$(cat "$run_dir/dockerd.pid"); kill "$pid" 2>/dev/null || true
      for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    fi ;;
  status) running && lk_docker version --format '{{.Server.Version}}' ;;
  *) die "usage: engine.sh [start|stop|status]" ;;
esac
