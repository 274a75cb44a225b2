# shellcheck shell=bash disable=SC2034  # assignments used by the files that source this one
# Versions and cache paths of the local Kubernetes toolchain: plain assignments only (no
# `set`, no exports, no commands), so that lib.sh, env.sh and bin/ can all source it safely.
# Every value can be overridden from the environment.

# Kubernetes 1.34 is the newest minor whose kubelet still starts on a cgroup v1 host by
# default (1.35 made failCgroupV1 default to true) and supports containerd 1.6/1.7.
: "${K8S_VERSION:=v1.34.4}"
: "${KIND_VERSION:=v0.32.0}"
: "${ETCD_VERSION:=v3.6.5}"            # kubeadm v1.34 expects registry.k8s.io/etcd:3.6.5-0
: "${COREDNS_VERSION:=v1.12.1}"        # kubeadm v1.34 expects registry.k8s.io/coredns/coredns:v1.12.1
: "${PAUSE_TAG:=3.10}"                 # kind's containerd config.toml sandbox_image
: "${CRICTL_VERSION:=v1.34.0}"
: "${LOCAL_PATH_VERSION:=v0.0.30}"
: "${HELM_VERSION:=v4.2.3}"            # the Helm CI pins (.github/workflows)
: "${KUBE_ROUTER_VERSION:=v2.1.0}"     # NetworkPolicy firewall only (netpol.sh)
# The Go module proxy refuses skaffold's version list (@latest), so the version is pinned.
: "${SKAFFOLD_VERSION:=v2.16.1}"
# skaffold v2.16.1 drives Helm 3 only (it runs `helm version --client`, which Helm 4 removed): its own helm.
: "${SKAFFOLD_HELM_VERSION:=v3.19.2}"
: "${DEBIAN_SUITE:=bookworm}"
: "${DEBIAN_MIRROR:=http://deb.debian.org/debian}"

: "${LK_CACHE:=${ETL_CACHE_DIR:-/var/cache/ecommerce-etl}/k8s}"
LK_BIN="$LK_CACHE/bin"
LK_SRC="$LK_CACHE/src"
# The kind node and every image it uses live on a Docker engine of their own (engine.sh).
: "${LK_DOCKER_SOCK:=/run/lk-docker/docker.sock}"
