#!/usr/bin/env bash
# Regenerate charts/*/README.md from README.md.gotmpl and the `# --` comments in values.yaml with
# helm-docs, pinned, built once with `go install` through the Go module proxy (about 95 s) and
# cached outside the work tree.
#   scripts/helm-docs.sh               regenerate the chart READMEs (the tests' drift check runs this too)
#   scripts/helm-docs.sh --print-path  build if needed and print the binary's path
# HELM_DOCS_ROOT: the folder of charts (default charts/); HELM_DOCS_CACHE: the cache folder;
# HELM_DOCS_VERSION: the pinned version. Extra arguments go to helm-docs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

VERSION=${HELM_DOCS_VERSION:-v1.14.2}
# Shared by every checkout on the machine; a user who cannot write there (CI runners) caches in ~/.cache.
CACHE=${HELM_DOCS_CACHE:-/var/cache/ecommerce-etl/tools}
if [ -z "${HELM_DOCS_CACHE:-}" ] && ! mkdir -p "$CACHE" 2>/dev/null; then
  CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/ecommerce-etl/tools
fi
bin="$CACHE/helm-docs-$VERSION/helm-docs"

if [ ! -x "$bin" ]; then
  have go || die "helm-docs $VERSION is not cached at $bin and there is no go to build it (Go 1.22+)"
  mkdir -p "$(dirname "$bin")"
  log "go install github.com/norwoodj/helm-docs/cmd/helm-docs@$VERSION (about 95 s, once)"
  # A private GOBIN so a half-written binary never sits at $bin.
  tmp=$(mktemp -d "$CACHE/.helm-docs-build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  GOBIN="$tmp" CGO_ENABLED=0 GOFLAGS=-mod=mod nice -n 10 \
    go install -ldflags "-s -w" "github.com/norwoodj/helm-docs/cmd/helm-docs@$VERSION"
  mv "$tmp/helm-docs" "$bin"
fi

if [ "${1:-}" = --print-path ]; then
  printf '%s\n' "$bin"
  exit 0
fi
# File order keeps each component's values together, as values.yaml groups them.
exec "$bin" --chart-search-root "${HELM_DOCS_ROOT:-$here/../charts}" --sort-values-order file \
  --template-files README.md.gotmpl --log-level warning "$@"
