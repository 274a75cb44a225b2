#!/usr/bin/env bash
# `make metrics-local`: on the local kind cluster (created or reused; CLUSTER picks another one, e.g. the
# shared multi-node one), run tests/e2e/test_monitoring_kind.py: a release with metrics on, an HA Prefect
# server (Valkey stand-in) and basic auth, scraped by a real Prometheus (Debian's package) that evaluates the
# chart's rules; an API pod deleted mid-run. Builds the Valkey and Prometheus stand-ins first, turns on
# NetworkPolicy enforcement (LK_NETPOL=0: off), deletes the cluster again if this run created it (KEEP=1 keeps it).
set -euo pipefail
# shellcheck source=scripts/local-k8s/lib.sh
. "$(dirname "$0")/lib.sh"

t0=$SECONDS
lk_run_cluster
cluster=$LK_RUN_CLUSTER
"$LK_HERE/standin-images.sh" valkey prometheus
valkey=$(chart_image prefectServer.redis)
kind load docker-image "$valkey" "${PROMETHEUS_IMAGE:-local/prometheus:bookworm}" --name "$cluster"
log "stand-ins ready in $((SECONDS - t0)) s"
# the run itself is T5's (e2e.sh: NetworkPolicy enforcement, times); the cluster is deleted on exit here if this run made it
CLUSTER=$cluster ETL_E2E_METRICS=1 E2E_TESTS=tests/e2e/test_monitoring_kind.py PYTEST_ARGS="-s ${PYTEST_ARGS:-}" \
  "$LK_HERE/e2e.sh"
