#!/usr/bin/env bash
# The locally built kind, kubectl, helm and skaffold (bin/<tool> are symlinks to this file).
# kind and skaffold talk to the local cluster's own Docker engine (engine.sh); the caller's
# DOCKER_HOST, and so its `docker`, is left alone. skaffold gets the Helm 3 it needs first on its PATH.
set -euo pipefail
tool=${0##*/}
# shellcheck source=scripts/local-k8s/versions.sh
. "$(dirname "$(readlink -f "$0")")/../versions.sh"

build="make local-k8s-up"
case $tool in
  kind) exe="$LK_BIN/kind-$KIND_VERSION/kind" ;;
  kubectl) exe="$LK_BIN/kubernetes-$K8S_VERSION/kubectl" ;;
  helm) exe="$LK_BIN/helm-$HELM_VERSION/helm" ;;
  skaffold) exe="$LK_BIN/skaffold-$SKAFFOLD_VERSION/skaffold"; build="make skaffold" ;;
  *) echo "shim.sh: call it as kind, kubectl, helm or skaffold (not $tool)" >&2; exit 2 ;;
esac
if [ ! -x "$exe" ]; then
  echo "$tool is not built yet ($exe): run \`$build\`" >&2
  exit 127
fi
case $tool in
  kind) export DOCKER_HOST="unix://$LK_DOCKER_SOCK" ;;
  skaffold)
    export DOCKER_HOST="unix://$LK_DOCKER_SOCK"
    # Its Helm 3 (`make skaffold` builds it): skaffold v2.16.1 does not speak Helm 4.
    export PATH="$LK_BIN/helm-$SKAFFOLD_HELM_VERSION:$PATH" ;;
esac
exec "$exe" "$@"
