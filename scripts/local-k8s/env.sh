# shellcheck shell=bash
# Put the locally built kind, kubectl, helm and skaffold first on PATH:
#     . scripts/local-k8s/env.sh        or     eval "$(make -s local-k8s-env)"
# Safe to source from an interactive shell: it sets no shell options, never exits, and
# changes nothing but PATH. The tools are thin wrappers (bin/shim.sh): kind and skaffold
# talk to the local cluster's own Docker engine, so DOCKER_HOST and `docker` stay yours.
# Builds nothing (`make local-k8s-build`, `make skaffold`).
if [ -n "${BASH_SOURCE[0]:-}" ]; then
  _lk_bin="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/bin"
else  # zsh
  # shellcheck disable=SC2296  # zsh's own expansion for the sourced file's path
  _lk_bin="$(cd "$(dirname "${(%):-%x}")" && pwd)/bin"
fi
case ":$PATH:" in
  *":$_lk_bin:"*) ;;
  *) PATH="$_lk_bin:$PATH"; export PATH ;;
esac
unset _lk_bin
