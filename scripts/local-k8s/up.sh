#!/usr/bin/env bash
# Create (or reuse) the kind cluster from kind-config.yaml on the locally built node image,
# and load the chart's stand-in images into it. Builds whatever is missing first.
# Usage: up.sh    Environment: KIND_CONFIG (default kind-config.yaml; kind-config-multi.yaml is
#        the multi-node cluster), CLUSTER (default: the name in that file), LK_STANDINS (more
#        stand-ins of standin-images.sh to build) and LK_LOAD_IMAGES (more images to load)
set -euo pipefail
# shellcheck source=scripts/local-k8s/lib.sh
. "$(dirname "$0")/lib.sh"

"$LK_HERE/engine.sh" start
t0=$SECONDS
"$LK_HERE/build-tools.sh" kind helm
"$LK_HERE/node-image.sh"
"$LK_HERE/standin-images.sh"
# shellcheck disable=SC2086 # word lists
[ -z "${LK_STANDINS:-}" ] || "$LK_HERE/standin-images.sh" $LK_STANDINS
t_build=$((SECONDS - t0))

cluster=$(lk_cluster)
if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  log "kind cluster $cluster exists; reusing it"
else
  log "kind create cluster --name $cluster --image $NODE_IMAGE"
  t1=$SECONDS
  kind create cluster --name "$cluster" --config "$LK_KIND_CONFIG" --image "$NODE_IMAGE" --wait 300s
  log "cluster up in $((SECONDS - t1)) s"
fi
ctx="kind-$cluster"
# A reused cluster may just have restarted with its engine: its API answers Forbidden until RBAC is
# bootstrapped, so wait for /readyz and Ready nodes before anything uses it.
deadline=$((SECONDS + 300))
until kubectl --context "$ctx" get --raw /readyz >/dev/null 2>&1 &&
  kubectl --context "$ctx" wait --for=condition=Ready nodes --all --timeout=10s >/dev/null 2>&1; do
  [ "$SECONDS" -lt "$deadline" ] || die "cluster $cluster is not ready after 300 s: kubectl --context $ctx get --raw '/readyz?verbose'"
  sleep 3
done
# The chart's third-party images, under the names values.yaml uses, and any asked for.
refs=()
for block in postgresql pgadmin prefectServer; do refs+=("$(chart_image "$block")"); done
read -r -a more <<<"${LK_LOAD_IMAGES:-}"
for ref in "${refs[@]}" "${more[@]}"; do
  log "kind load docker-image $ref"
  kind load docker-image "$ref" --name "$cluster" >/dev/null
done
kubectl --context "$ctx" get nodes -o wide
log "ready: context $ctx (build/reuse of parts: ${t_build} s)"
