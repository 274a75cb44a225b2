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
if [ "${LK_NETPOL:-1}" = 1 ]; then
  "$LK_HERE/build-tools.sh" kube-router
  export ETL_E2E_NETPOL_SETUP="$LK_HERE/netpol.sh kind-$cluster"
fi
t_up=$((SECONDS - t0))
t1=$SECONDS
rc=0
read -r -a extra <<<"${PYTEST_ARGS:-}"
(cd "$LK_ROOT" && CLUSTER=$cluster ETL_E2E=1 ETL_E2E_METRICS=1 "${PY:-.venv/bin/python}" -m pytest -m e2e \
  tests/e2e/test_monitoring_kind.py -v -rs -s "${extra[@]}") || rc=$?
log "times: build/cluster ${t_up} s, monitoring test $((SECONDS - t1)) s, total $((SECONDS - t0)) s"
exit "$rc"
