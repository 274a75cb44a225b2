#!/usr/bin/env bash
# `make skaffold-check`: the skaffold dev loop, for real, on the local kind cluster.
#   1. `skaffold run -p offline`: builds the flow image, kind-loads it, installs the chart (skaffold.yaml's
#      release, in its namespace).
#   2. `skaffold dev -p offline`, one iteration: a file under flows/ appears, skaffold rebuilds and redeploys
#      under a new tag, its port-forward serves the UI, and a run of the `sample` deployment runs its Job(s)
#      on the new tag (and the new image holds the new file).
#   3. Teardown, also on failure: skaffold's own cleanup and `skaffold delete` (helm uninstall), the
#      namespace and the cluster if this run created them (KEEP=1 keeps the cluster), the file in flows/.
# Prints the times and tags; everything skaffold said is kept under $LK_CACHE/logs/skaffold-check-<time>/.
# On a shared machine run it under the cluster lock: flock /tmp/e2e.lock make skaffold-check
set -euo pipefail
# shellcheck source=scripts/local-k8s/lib.sh
. "$(dirname "$0")/lib.sh"

PROFILE=${SKAFFOLD_PROFILE:-offline}
cluster=$(lk_cluster)
ctx="kind-$cluster"
release=$(yaml_value "$LK_ROOT/skaffold.yaml" deploy.helm.releases.0.name)
ns=$(yaml_value "$LK_ROOT/skaffold.yaml" deploy.helm.releases.0.namespace)
logs="$LK_CACHE/logs/skaffold-check-$(date +%Y%m%d-%H%M%S)"
marker="$LK_ROOT/flows/_skaffold_check_marker.py"
mkdir -p "$logs"

# Our own skaffold config: no update check, survey or metrics (no internet here; nothing to phone home).
printf 'global:\n  update-check: false\n  collect-metrics: false\n  survey:\n    disable-prompt: true\n' \
  >"$logs/skaffold-config.yaml"
skaffold_() { skaffold "$@" --kube-context "$ctx" --config "$logs/skaffold-config.yaml" -p "$PROFILE"; }
kubectl_() { kubectl --context "$ctx" -n "$ns" "$@"; }
# The flow image the release runs: what skaffold set as image.repository:image.tag.
release_image() {
  helm --kube-context "$ctx" -n "$ns" get values "$release" -o json | jq -r '.image.repository + ":" + .image.tag'
}
elapsed() { echo "$((SECONDS - $1)) s"; }

t_start=$SECONDS
"$LK_HERE/build-tools.sh" skaffold
cluster_existed=0
if kind get clusters 2>/dev/null | grep -qx "$cluster"; then cluster_existed=1; fi
ns_existed=0
dev_pid=""

# shellcheck disable=SC2329  # called by the EXIT trap
cleanup() {
  local rc=$?
  rm -f "$marker"
  if [ -n "$dev_pid" ] && kill -0 "$dev_pid" 2>/dev/null; then
    kill -INT "$dev_pid" 2>/dev/null || true  # skaffold dev's own cleanup uninstalls the release
    for _ in $(seq 120); do kill -0 "$dev_pid" 2>/dev/null || break; sleep 1; done
    kill "$dev_pid" 2>/dev/null || true
  fi
  if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
    skaffold_ delete >>"$logs/skaffold-delete.log" 2>&1 || true
    if [ "$ns_existed" = 0 ]; then
      kubectl --context "$ctx" delete namespace "$ns" --wait=true --timeout=300s >/dev/null 2>&1 || true
    else  # what helm uninstall leaves: the StatefulSet's volume claims (a later install must start afresh)
      kubectl_ delete pvc,secret -l "app.kubernetes.io/instance=$release" --wait=true >/dev/null 2>&1 || true
    fi
    if [ "$cluster_existed" = 0 ] && [ "${KEEP:-0}" != 1 ]; then
      log "deleting kind cluster $cluster"
      kind delete cluster --name "$cluster" || true
    fi
  fi
  log "logs: $logs"
  exit "$rc"
}
trap cleanup EXIT

"$LK_HERE/up.sh" >"$logs/up.log" 2>&1 || { tail -n 30 "$logs/up.log" >&2; die "up.sh failed"; }
if kubectl --context "$ctx" get namespace "$ns" >/dev/null 2>&1; then ns_existed=1; fi
if helm --kube-context "$ctx" -n "$ns" status "$release" >/dev/null 2>&1; then
  trap - EXIT
  die "release $release already exists in $ns on $ctx: uninstall it first (this check installs its own)"
fi
stage_ca_bundle "$LK_ROOT"  # pip in the image build trusts the host's CAs (TLS interception)
cd "$LK_ROOT"

# --- 1. skaffold run ------------------------------------------------------------------------------
log "skaffold run -p $PROFILE (build, kind load, helm install $release in $ns)"
t=$SECONDS
skaffold_ run --status-check=true >"$logs/skaffold-run.log" 2>&1 \
  || { tail -n 40 "$logs/skaffold-run.log" >&2; die "skaffold run failed"; }
t_run=$(elapsed "$t")
image1=$(release_image)
log "skaffold run: $t_run, image $image1"

# --- 2. skaffold dev: one iteration ---------------------------------------------------------------
# wait_for PATTERN COUNT SECONDS: until skaffold dev's log holds COUNT lines matching PATTERN.
wait_for() {
  local deadline=$((SECONDS + $3))
  until [ "$(grep -cE "$1" "$logs/skaffold-dev.log" || true)" -ge "$2" ]; do
    kill -0 "$dev_pid" 2>/dev/null || { tail -n 40 "$logs/skaffold-dev.log" >&2; die "skaffold dev exited"; }
    [ "$SECONDS" -lt "$deadline" ] || { tail -n 40 "$logs/skaffold-dev.log" >&2; die "no '$1' x$2 in $3 s"; }
    sleep 2
  done
}
log "skaffold dev -p $PROFILE --port-forward=user"
t=$SECONDS
# Not through skaffold_ (a function would run in a subshell): $! must be skaffold itself, for the SIGINT.
skaffold dev --kube-context "$ctx" --config "$logs/skaffold-config.yaml" -p "$PROFILE" --port-forward=user \
  --cleanup=true >"$logs/skaffold-dev.log" 2>&1 &
dev_pid=$!
ready='Watching for changes'
wait_for "$ready" 1 900
t_dev_up=$(elapsed "$t")
# The address skaffold forwards the Prefect server to (4200, or the next free port when 4200 is taken).
forwarded_ui() { grep -oE 'remote port 4200 -> http://[0-9.]+:[0-9]+' "$logs/skaffold-dev.log" | tail -n1 | sed 's/.*-> //'; }
ui=$(forwarded_ui)
[ -n "$ui" ] || die "skaffold dev did not port-forward the Prefect server (see $logs/skaffold-dev.log)"
curl -fsS --max-time 10 "$ui/api/health" >/dev/null || die "no Prefect API behind skaffold's port-forward $ui"
curl -fsS --max-time 10 "$ui/" | grep -qi '<html' || die "no Prefect UI behind skaffold's port-forward $ui"
log "skaffold dev up in $t_dev_up; UI and API forwarded at $ui"

t=$SECONDS
printf '"""Written by scripts/local-k8s/skaffold-check.sh (removed again): a change under flows/."""\n\nCHECK = "%s"\n' \
  "$(date +%s)" >"$marker"
log "changed flows/: $(basename "$marker")"
wait_for "$ready" 2 900
t_iteration=$(elapsed "$t")
image2=$(release_image)
[ "$image2" != "$image1" ] || die "skaffold dev redeployed the same image $image1"
log "skaffold dev rebuilt and redeployed in $t_iteration: image $image2"
has_marker() { docker run --rm --network none --entrypoint python "$1" -c 'import flows._skaffold_check_marker'; }
has_marker "$image2" || die "the new image $image2 lacks the changed file"
if has_marker "$image1" 2>/dev/null; then die "the old image $image1 already has the changed file"; fi

ui=$(forwarded_ui)
t=$SECONDS
since=$(date -u +%Y-%m-%dT%H:%M:%SZ)
run=$("$LK_PY" "$LK_HERE/run_deployment.py" "$ui/api" ecommerce-etl/sample 900) \
  || die "the sample flow run did not complete: $run"
t_flow=$(elapsed "$t")
# Every flow-run Job made since the trigger (one per run, or one per file with fan-out) runs the new tag.
images=$(kubectl_ get jobs -l prefect.io/flow-run-id -o json | jq -r --arg since "$since" \
  '.items[] | select(.metadata.creationTimestamp >= $since) | .spec.template.spec.containers[0].image' | sort -u)
[ -n "$images" ] || die "no flow-run Job was created for $run"
[ "$images" = "$image2" ] || die "flow-run Jobs ran $images, not $image2"
log "flow run $run: completed in $t_flow, its Jobs ran $images"

# --- 3. teardown (also the EXIT trap) ---------------------------------------------------------------
t=$SECONDS
kill -INT "$dev_pid"
wait "$dev_pid" || true
dev_pid=""
skaffold_ delete >"$logs/skaffold-delete.log" 2>&1 || true
log "skaffold dev stopped and the release removed in $(elapsed "$t")"
echo "skaffold_run=${t_run// /} dev_up=${t_dev_up// /} dev_iteration=${t_iteration// /} flow_run=${t_flow// /}" \
  "image_run=$image1 image_dev=$image2 ui=$ui total=$((SECONDS - t_start))s"
