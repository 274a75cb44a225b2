#!/usr/bin/env bash
# `make metrics-local`: on the local kind cluster (created or reused; CLUSTER picks another one, e.g. the
# shared multi-node one), run tests/e2e/test_monitoring_kind.py: a release with metrics on, an HA Prefect
# server (Valkey stand-in) and basic auth, scraped by a real Prometheus (Debian's package) that evaluates the
# chart's rules; an API pod deleted mid-run. Builds the Valkey and Prometheus stand-ins first, turns on
# NetworkPolicy enforcement (LK_NETPOL=0: off), deletes the cluster again if this run created it (KEEP=1 keeps it).
set -euo pipefail
# shellcheck source=scripts/local-k8s/lib.sh
. "$(dirname "$0")/lib.sh"

# The stand-ins are built and loaded by up.sh (through e2e.sh); the run itself is T5's (NetworkPolicy
# enforcement, times, the cluster deleted again if this run created it).
LK_STANDINS="valkey prometheus" \
LK_LOAD_IMAGES="$(chart_image prefectServer.redis) ${PROMETHEUS_IMAGE:-local/prometheus:bookworm}" \
ETL_E2E_METRICS=1 E2E_TESTS=tests/e2e/test_monitoring_kind.py PYTEST_ARGS="-s ${PYTEST_ARGS:-}" \
  exec "$LK_HERE/e2e.sh"
