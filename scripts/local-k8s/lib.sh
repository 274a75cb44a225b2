# shellcheck shell=bash
# Shared settings for scripts/local-k8s/*.sh (sourced). Everything that is built or
# downloaded lands under $LK_CACHE (outside the work tree) and is reused on the next run.
set -euo pipefail

LK_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LK_ROOT=$(cd "$LK_HERE/../.." && pwd)
# shellcheck source=scripts/lib.sh
. "$LK_ROOT/scripts/lib.sh"

# --- versions (one place) ---------------------------------------------------------------
# Kubernetes 1.34 is the newest minor whose kubelet still starts on a cgroup v1 host by
# default (1.35 made failCgroupV1 default to true) and supports containerd 1.6/1.7.
: "${K8S_VERSION:=v1.34.4}"
: "${KIND_VERSION:=v0.32.0}"
: "${ETCD_VERSION:=v3.6.5}"            # kubeadm v1.34 expects registry.k8s.io/etcd:3.6.5-0
: "${COREDNS_VERSION:=v1.12.1}"        # kubeadm v1.34 expects registry.k8s.io/coredns/coredns:v1.12.1
: "${PAUSE_TAG:=3.10}"                 # kind's containerd config.toml sandbox_image
: "${CRICTL_VERSION:=v1.34.0}"
: "${LOCAL_PATH_VERSION:=v0.0.30}"
: "${HELM_VERSION:=v4.2.3}"           # the Helm CI pins (.github/workflows)
: "${KUBE_ROUTER_VERSION:=v2.1.0}"     # NetworkPolicy firewall only (netpol.sh)
: "${DEBIAN_SUITE:=bookworm}"
: "${DEBIAN_MIRROR:=http://deb.debian.org/debian}"

: "${LK_CACHE:=${ETL_CACHE_DIR:-/var/cache/ecommerce-etl}/k8s}"
LK_BIN="$LK_CACHE/bin"
LK_SRC="$LK_CACHE/src"
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
LK_DOCKER_SOCK=${LK_DOCKER_SOCK:-/run/lk-docker/docker.sock}
export DOCKER_HOST="unix://$LK_DOCKER_SOCK"
