#!/usr/bin/env bash
# `make e2e-local`: build or reuse the local kind cluster, run the same T5 test CI runs
# (tests/e2e, pytest -m e2e), and delete the cluster again if this run created it
# (KEEP=1 leaves it up). Prints the build, cluster and test times.
# At its end the test also turns on NetworkPolicy enforcement (netpol.sh) and checks the
# chart's policies (ETL_E2E_NETPOL_SETUP); LK_NETPOL=0 leaves that out. E2E_TESTS runs other
# tests than the whole of tests/e2e (`make lifecycle-local`, `make metrics-local`).
set -euo pipefail
# shellcheck source=scripts/local-k8s/lib.sh
. "$(dirname "$0")/lib.sh"

t0=$SECONDS
lk_run_cluster
cluster=$LK_RUN_CLUSTER
# NetworkPolicy: after the CI steps, the test turns on enforcement (kube-router's firewall,
# netpol.sh) and checks the chart's policies. Not before: enforcement that lags a new pod by
# seconds makes the chart's one-shot helm test pods fail (see k8s/README.md). LK_NETPOL=0: off.
if [ "${LK_NETPOL:-1}" = 1 ]; then
  "$LK_HERE/build-tools.sh" kube-router
  export ETL_E2E_NETPOL_SETUP="$LK_HERE/netpol.sh kind-$cluster"
fi
t_up=$((SECONDS - t0))

t1=$SECONDS
rc=0
read -r -a extra <<<"${PYTEST_ARGS:-}"
# E2E_TESTS: what to run (default the whole of tests/e2e, as CI does).
read -r -a tests <<<"${E2E_TESTS:-tests/e2e}"
(cd "$LK_ROOT" && ETL_E2E=1 "${PY:-.venv/bin/python}" -m pytest -m e2e "${tests[@]}" -v -rs "${extra[@]}") || rc=$?
log "times: build/cluster ${t_up} s, T5 test $((SECONDS - t1)) s, total $((SECONDS - t0)) s"
exit "$rc"
