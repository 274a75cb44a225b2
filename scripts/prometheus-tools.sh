#!/usr/bin/env bash
# Prometheus tools for the tests, from their upstreams' ordinary channels, never copied into the repository:
#   scripts/prometheus-tools.sh promtool   print promtool's path; install Debian's `prometheus` package
#                                          (bookworm: 2.42) when it is missing and this is root
#   scripts/prometheus-tools.sh crds       print the folder of the Prometheus Operator's CRDs, from its Go
#                                          module (go mod download, cached outside the work tree)
# PROMTOOL: a promtool to use instead. PROMETHEUS_OPERATOR_VERSION: the module version (the Go module proxy
# here serves v0.85.0 only). TOOLS_CACHE: the cache folder (default /var/cache/ecommerce-etl/tools, else
# ~/.cache/ecommerce-etl/tools).
#
# Why Debian's promtool and not a Go build of github.com/prometheus/prometheus/cmd/promtool@v0.316.0: on
# these 2-core machines the package installs in about 11 s, the cold Go build took 271 s even with
# -tags remove_all_sd (promtool still imports client-go for its Kubernetes discovery); see the chart
# README, "Monitoring with Prometheus".
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

OPERATOR_VERSION=${PROMETHEUS_OPERATOR_VERSION:-v0.85.0}
CACHE=${TOOLS_CACHE:-/var/cache/ecommerce-etl/tools}
if [ -z "${TOOLS_CACHE:-}" ] && ! mkdir -p "$CACHE" 2>/dev/null; then
  CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/ecommerce-etl/tools
fi

promtool_path() {
  if [ -n "${PROMTOOL:-}" ]; then
    [ -x "$PROMTOOL" ] || die "PROMTOOL=$PROMTOOL is not an executable"
    printf '%s\n' "$PROMTOOL"
    return
  fi
  if ! have promtool; then
    [ "$(id -u)" -eq 0 ] || die "promtool is missing: apt-get install --no-install-recommends prometheus (Debian), or set PROMTOOL"
    log "apt-get install prometheus (for promtool)"
    apt_install prometheus >&2
  fi
  command -v promtool
}

crds_dir() {
  have go || die "needs Go to download github.com/prometheus-operator/prometheus-operator@$OPERATOR_VERSION (its CRDs)"
  mkdir -p "$CACHE/gomod"
  local dir
  dir=$(GOMODCACHE="$CACHE/gomod" GOFLAGS=-modcacherw go mod download -json \
    "github.com/prometheus-operator/prometheus-operator@$OPERATOR_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -d "$dir/example/prometheus-operator-crd" ] || die "no example/prometheus-operator-crd in the module at $dir"
  printf '%s\n' "$dir/example/prometheus-operator-crd"
}

case "${1:-}" in
  promtool) promtool_path ;;
  crds) crds_dir ;;
  *) die "usage: $0 promtool|crds" ;;
esac
