# shellcheck shell=bash
# Shared settings for scripts/local-k8s/*.sh (sourced). Everything that is built or
# downloaded lands under $LK_CACHE (outside the work tree) and is reused on the next run.
set -euo pipefail

LK_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LK_ROOT=$(cd "$LK_HERE/../.." && pwd)
# shellcheck source=scripts/lib.sh
. "$LK_ROOT/scripts/lib.sh"

# shellcheck source=scripts/local-k8s/versions.sh
. "$LK_HERE/versions.sh"
export GOPATH="$LK_CACHE/gopath"
export GOMODCACHE="$GOPATH/pkg/mod"
export GOCACHE="$LK_CACHE/gocache"
export GOTOOLCHAIN=local
export CGO_ENABLED=0
# Shared 2-core machines: build one package at a time by default, always at lowest priority.
: "${LK_GO_PARALLEL:=1}"
export GOFLAGS="-p=$LK_GO_PARALLEL -mod=mod -trimpath"
mkdir -p "$LK_BIN" "$LK_SRC" "$GOPATH" "$GOCACHE"

have go || die "needs the Go toolchain (go) on PATH"

NICE=(nice -n 19)
if have ionice; then NICE=(ionice -c3 nice -n 19); fi

go_nice() { "${NICE[@]}" go "$@"; }

# Directory of a module in the module cache (downloads it on first use).
mod_dir() { go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'; }

# Tag names the node image and its preloaded images carry.
NODE_IMAGE=${NODE_IMAGE:-kindest/node:${K8S_VERSION}-local}

# The kind node and every image it uses live on a Docker engine of its own (engine.sh):
# all local-k8s scripts talk to it, and so does the T5 test run by e2e.sh.
export DOCKER_HOST="unix://$LK_DOCKER_SOCK"
# kind, kubectl, helm and skaffold: the locally built ones (bin/shim.sh).
export PATH="$LK_HERE/bin:$PATH"

# Python with PyYAML (the project's venv, `make venv`): YAML is read only through yaml_value.py.
LK_PY=${LK_PY:-$LK_ROOT/.venv/bin/python}

# yaml_value FILE KEY...: the strings at dotted paths of a YAML file, one per line.
yaml_value() {
  [ -x "$LK_PY" ] || die "no Python with PyYAML at $LK_PY: run \`make venv\` (or set LK_PY)"
  "$LK_PY" "$LK_HERE/yaml_value.py" "$@"
}

# chart_image BLOCK: "repository:tag" of a values.yaml block (postgresql|pgadmin|prefectServer).
chart_image() {
  local v
  v=$(yaml_value "$LK_ROOT/charts/ecommerce-etl/values.yaml" "$1.image.repository" "$1.image.tag") || return
  printf '%s:%s\n' "${v%%$'\n'*}" "${v#*$'\n'}"
}

# The kind configuration: $KIND_CONFIG (absolute, or relative to the repository), else
# kind-config.yaml (single node, T5); kind-config-multi.yaml is the multi-node cluster (chaos.sh).
LK_KIND_CONFIG=${KIND_CONFIG:-kind-config.yaml}
case $LK_KIND_CONFIG in /*) ;; *) LK_KIND_CONFIG="$LK_ROOT/$LK_KIND_CONFIG" ;; esac

# The cluster: $CLUSTER, else the name in the kind configuration.
lk_cluster() { if [ -n "${CLUSTER:-}" ]; then echo "$CLUSTER"; else yaml_value "$LK_KIND_CONFIG" name; fi; }

# For one test run: create (or reuse) the cluster with up.sh, and delete it when the calling script
# exits if this run created it (KEEP=1 keeps it). Sets LK_RUN_CLUSTER.
lk_run_cluster() {
  LK_RUN_CLUSTER=$(lk_cluster)
  if ! { have kind && kind get clusters 2>/dev/null | grep -qx "$LK_RUN_CLUSTER"; } && [ "${KEEP:-0}" != 1 ]; then
    trap 'log "deleting kind cluster $LK_RUN_CLUSTER"; kind delete cluster --name "$LK_RUN_CLUSTER" || true' EXIT
  fi
  CLUSTER=$LK_RUN_CLUSTER "$LK_HERE/up.sh"
}
