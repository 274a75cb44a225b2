# shellcheck shell=bash
# Source this to use the locally built kind/kubectl/helm:  . scripts/local-k8s/env.sh
# (puts them first on PATH; builds nothing).
_lk_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/local-k8s/lib.sh
. "$_lk_here/lib.sh"
set +euo pipefail
PATH="$LK_BIN/kind-$KIND_VERSION:$LK_BIN/helm-$HELM_VERSION:$LK_BIN/kubernetes-$K8S_VERSION:$PATH"
export PATH NODE_IMAGE
