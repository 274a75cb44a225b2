#!/usr/bin/env bash
# Build everything else a kind node runs, from Go modules by name (nothing vendored here):
#   kind CLI, etcd, CoreDNS (only the plugins kubeadm's Corefile uses), crictl,
#   local-path-provisioner, a pause binary, the helm CLI (the version CI pins) and
#   kube-router (only its NetworkPolicy firewall is used, see netpol.sh), and skaffold for
#   the dev loop (skaffold-check.sh).
# Binaries land in $LK_BIN/<name>-<version>/; an existing binary is reused.
# Usage: build-tools.sh [name ...]   names: kind etcd coredns crictl local-path pause helm kube-router skaffold
set -euo pipefail
# shellcheck source=scripts/local-k8s/lib.sh
. "$(dirname "$0")/lib.sh"

# build_in_module NAME MODULE VERSION PKG OUT: a throw-away module that takes the upstream
# go.mod (same dependency pins), drops its relative-path replaces (sibling modules are
# used at their published versions instead) and builds PKG.
build_in_module() {
  local name=$1 module=$2 version=$3 pkg=$4 out=$5 src work start
  [ -x "$out" ] && { log "$name cached: $out"; return 0; }
  src=$(mod_dir "$module@$version")
  [ -n "$src" ] || die "$module@$version not served by the Go module proxy"
  work="$LK_SRC/$name-$version"
  mkdir -p "$work"
  if [ ! -s "$work/go.mod" ]; then
    sed -e "s|^module .*|module local/$name-build|" -e '/=> \.\{1,2\}\//d' "$src/go.mod" >"$work/go.mod"
    printf '\nrequire %s %s\n' "$module" "$version" >>"$work/go.mod"
    cp "$src/go.sum" "$work/go.sum"
  fi
  if [ -n "${MAIN_GO:-}" ]; then printf '%s\n' "$MAIN_GO" >"$work/main.go"; fi
  log "go build $pkg ($version)"
  start=$SECONDS
  mkdir -p "$(dirname "$out")"
  (cd "$work" && go_nice build -ldflags "-s -w ${LDFLAGS:-}" -o "$out.tmp" "$pkg")
  mv "$out.tmp" "$out"
  log "built $name in $((SECONDS - start)) s"
}

build_kind() {
  local out="$LK_BIN/kind-$KIND_VERSION/kind"
  [ -x "$out" ] && { log "kind cached: $out"; return 0; }
  mkdir -p "$(dirname "$out")"
  log "go install sigs.k8s.io/kind@$KIND_VERSION"
  GOBIN=$(dirname "$out") go_nice install "sigs.k8s.io/kind@$KIND_VERSION"
}

build_etcd() {
  LDFLAGS="-X go.etcd.io/etcd/api/v3/version.GitSHA=${ETCD_VERSION}" \
    build_in_module etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" go.etcd.io/etcd/server/v3 \
    "$LK_BIN/etcd-$ETCD_VERSION/etcd"
}

# The plugins named in kubeadm's default Corefile (errors health ready kubernetes prometheus
# forward cache loop reload loadbalance) plus log; the directive order comes from CoreDNS.
build_coredns() {
  MAIN_GO='package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

func main() { coremain.Run() }' \
    build_in_module coredns github.com/coredns/coredns "$COREDNS_VERSION" . \
    "$LK_BIN/coredns-$COREDNS_VERSION/coredns"
}

build_crictl() {
  build_in_module crictl sigs.k8s.io/cri-tools "$CRICTL_VERSION" sigs.k8s.io/cri-tools/cmd/crictl \
    "$LK_BIN/crictl-$CRICTL_VERSION/crictl"
}

build_helm() {
  local out="$LK_BIN/helm-$HELM_VERSION/helm" major=${HELM_VERSION%%.*}
  [ -x "$out" ] && { log "helm cached: $out"; return 0; }
  mkdir -p "$(dirname "$out")"
  log "go install helm.sh/helm/$major/cmd/helm@$HELM_VERSION"
  GOBIN=$(dirname "$out") go_nice install \
    -ldflags "-s -w -X helm.sh/helm/$major/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/$major/cmd/helm@$HELM_VERSION"
}

build_kube_router() {
  local out="$LK_BIN/kube-router-$KUBE_ROUTER_VERSION/kube-router"
  [ -x "$out" ] && { log "kube-router cached: $out"; return 0; }
  mkdir -p "$(dirname "$out")"
  log "go install github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@$KUBE_ROUTER_VERSION"
  GOBIN=$(dirname "$out") go_nice install -ldflags "-s -w" \
    "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@$KUBE_ROUTER_VERSION"
}

# skaffold's go.mod pins dependencies with (versioned) replace directives, so `go install
# module@version` refuses it; build_in_module keeps those replaces. The proxy refuses
# skaffold's version list, so SKAFFOLD_VERSION is pinned (versions.sh). It gets a Helm 3 of its own
# (bin/shim.sh puts it first on skaffold's PATH).
build_skaffold() {
  HELM_VERSION=$SKAFFOLD_HELM_VERSION build_helm
  LDFLAGS="-X github.com/GoogleContainerTools/skaffold/v2/pkg/skaffold/version.version=$SKAFFOLD_VERSION" \
    build_in_module skaffold github.com/GoogleContainerTools/skaffold/v2 "$SKAFFOLD_VERSION" \
    github.com/GoogleContainerTools/skaffold/v2/cmd/skaffold "$LK_BIN/skaffold-$SKAFFOLD_VERSION/skaffold"
}

build_local_path() {
  build_in_module local-path github.com/rancher/local-path-provisioner "$LOCAL_PATH_VERSION" \
    github.com/rancher/local-path-provisioner "$LK_BIN/local-path-$LOCAL_PATH_VERSION/local-path-provisioner"
}

# The sandbox ("pause") container only has to sleep, exit on SIGINT/SIGTERM and reap
# zombies when it is PID 1 of a shared PID namespace.
build_pause() {
  local work="$LK_SRC/pause" out="$LK_BIN/pause/pause"
  [ -x "$out" ] && { log "pause cached: $out"; return 0; }
  mkdir -p "$work" "$(dirname "$out")"
  printf 'module local/pause\n\ngo 1.22\n' >"$work/go.mod"
  cat >"$work/main.go" <<'GO'
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s == syscall.SIGCHLD {
			for {
				pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
			continue
		}
		os.Exit(0)
	}
}
GO
  (cd "$work" && go_nice build -ldflags "-s -w" -o "$out" .)
  log "built pause"
}

names=("$@")
[ "${#names[@]}" -gt 0 ] || names=(pause kind etcd crictl local-path coredns helm)
for n in "${names[@]}"; do
  case $n in
    kind) build_kind ;; etcd) build_etcd ;; coredns) build_coredns ;; crictl) build_crictl ;;
    local-path) build_local_path ;; pause) build_pause ;; helm) build_helm ;;
    kube-router) build_kube_router ;; skaffold) build_skaffold ;;
    *) die "unknown tool $n" ;;
  esac
done
