#!/usr/bin/env bash
# `make lifecycle-local`: on the local kind cluster (created or reused; CLUSTER picks another one,
# e.g. the shared multi-node one), run tests/e2e/test_lifecycle.py: the upgrade from the last
# release, backup -> delete -> restore, the major-version guard, and `helm template | kubectl
# apply` twice. Deletes the cluster again if this run created it (KEEP=1 leaves it up).
set -euo pipefail
# shellcheck source=scripts/local-k8s/lib.sh
. "$(dirname "$0")/lib.sh"

cluster=$(lk_cluster)
existed=0
if have kind && kind get clusters 2>/dev/null | grep -qx "$cluster"; then existed=1; fi
# shellcheck disable=SC2329  # called by the EXIT trap
cleanup() {
  if [ "$existed" = 0 ] && [ "${KEEP:-0}" != 1 ]; then
    log "deleting kind cluster $cluster"
    kind delete cluster --name "$cluster" || true
  fi
}
trap cleanup EXIT

t0=$SECONDS
CLUSTER=$cluster "$LK_HERE/up.sh"
t_up=$((SECONDS - t0))
t1=$SECONDS
rc=0
read -r -a extra <<<"${PYTEST_ARGS:-}"
(cd "$LK_ROOT" && CLUSTER=$cluster ETL_E2E=1 ETL_E2E_LIFECYCLE=1 "${PY:-.venv/bin/python}" -m pytest -m e2e tests/e2e/test_lifecycle.py \
  -v -rs -s "${extra[@]}") || rc=$?
log "times: build/cluster ${t_up} s, lifecycle test $((SECONDS - t1)) s, total $((SECONDS - t0)) s"
exit "$rc"
