#!/usr/bin/env bash
# The multi-node local kind cluster (kind-config-multi.yaml) and the chaos run on it.
#   chaos.sh up     create (or reuse) it, turn on NetworkPolicy enforcement, check pod traffic and
#                   policies across its nodes (netcheck.sh); it stays up for other kind jobs
#   chaos.sh run    up, then `make chaos-local`: benchmarks/chaos.py installs the chart and injects
#                   every fault (CHAOS_ARGS are passed on, e.g. CHAOS_ARGS='--only node-lost --rounds 1')
#   chaos.sh down   delete it
# Run every one of them under the kind lock: flock /work/locks/kind.lock scripts/local-k8s/chaos.sh up
set -euo pipefail
export KIND_CONFIG=${KIND_CONFIG:-kind-config-multi.yaml}
# shellcheck source=scripts/local-k8s/lib.sh
. "$(dirname "$0")/lib.sh"

cluster=$(lk_cluster)
ctx="kind-$cluster"

up() {
  local t0=$SECONDS
  "$LK_HERE/up.sh"
  "$LK_HERE/netpol.sh" "$ctx"
  "$LK_HERE/netcheck.sh" "$ctx"
  log "multi-node cluster $cluster ready in $((SECONDS - t0)) s (context $ctx)"
}

case "${1:-run}" in
  up) up ;;
  down) kind delete cluster --name "$cluster" ;;
  run)
    t0=$SECONDS
    up
    read -r -a extra <<<"${CHAOS_ARGS:-}"
    rc=0
    (cd "$LK_ROOT" && "${PY:-.venv/bin/python}" -m benchmarks.chaos "${extra[@]}") || rc=$?
    log "chaos run: $((SECONDS - t0)) s in all (exit $rc)"
    exit "$rc" ;;
  *) die "usage: chaos.sh up|run|down" ;;
esac
