#!/usr/bin/env bash
# Build the Kubernetes binaries a kind node needs from the k8s.io/kubernetes Go module.
# k8s.io/kubernetes cannot be `go install`ed (its go.mod replaces the staging modules with
# ./staging paths that its module zip does not hold), so a throw-away build module under
# $LK_CACHE/src takes its go.mod, points each staging module at its published version
# (k8s.io/api v0.34.x for Kubernetes v1.34.x, ...) and builds the commands from there.
# Usage: build-k8s.sh [command ...]   (default: the seven a node needs)
set -euo pipefail
# shellcheck source=scripts/local-k8s/lib.sh
. "$(dirname "$0")/lib.sh"

cmds=("$@")
[ "${#cmds[@]}" -gt 0 ] || cmds=(kubeadm kubelet kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy)
out="$LK_BIN/kubernetes-$K8S_VERSION"
mkdir -p "$out"

todo=()
for c in "${cmds[@]}"; do [ -x "$out/$c" ] || todo+=("$c"); done
if [ "${#todo[@]}" -eq 0 ]; then log "kubernetes $K8S_VERSION binaries cached in $out"; exit 0; fi

src=$(mod_dir "k8s.io/kubernetes@$K8S_VERSION")
[ -n "$src" ] || die "k8s.io/kubernetes@$K8S_VERSION not served by the Go module proxy"
staging=${K8S_VERSION/v1./v0.}   # v1.34.4 -> v0.34.4

work="$LK_SRC/kubernetes-$K8S_VERSION"
mkdir -p "$work"
if [ ! -s "$work/go.mod" ]; then
  # Same dependency pins as upstream; staging modules from the proxy instead of ./staging.
  sed -e 's|^module k8s.io/kubernetes$|module local/k8s-build|' \
      -e "s|=> ./staging/src/\(k8s.io/[a-z0-9-]*\)$|=> \1 $staging|" \
      "$src/go.mod" >"$work/go.mod.tmp"
  printf '\nrequire k8s.io/kubernetes %s\n' "$K8S_VERSION" >>"$work/go.mod.tmp"
  cp "$src/go.sum" "$work/go.sum"
  mv "$work/go.mod.tmp" "$work/go.mod"
fi

major=${K8S_VERSION#v}; major=${major%%.*}
minor=${K8S_VERSION#v*.}; minor=${minor%%.*}
ld="-s -w"
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

cd "$work"
for c in "${todo[@]}"; do
  pkg="k8s.io/kubernetes/cmd/$c"
  log "go build $pkg ($K8S_VERSION)"
  start=$SECONDS
  go_nice build -ldflags "$ld" -o "$out/$c.tmp" "$pkg"
  mv "$out/$c.tmp" "$out/$c"
  log "built $c in $((SECONDS - start)) s"
done
