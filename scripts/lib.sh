# shellcheck shell=bash
# Shared helpers for scripts/*.sh (sourced, not executed).

log() { printf '[%s] %s\n' "${0##*/}" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

# Install Debian packages; `apt-get update` only once per process.
apt_install() {
  [ "$(id -u)" -eq 0 ] || die "need root to apt-get install $*"
  have apt-get || die "no apt-get; install $* by hand"
  if [ -z "${_APT_UPDATED:-}" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    _APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

engine_ok() { docker info >/dev/null 2>&1; }

# Run a daemon in its own session, without the caller's open files beyond stdio: an inherited
# `flock` descriptor would otherwise hold the caller's lock for as long as the daemon lives.
daemonize() {
  (
    for fd in /proc/"$BASHPID"/fd/*; do
      fd=${fd##*/}
      if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi
    done
    exec setsid "$@"
  ) &
}

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# Host CA bundle handed to pip inside builds (this sandbox intercepts TLS).
host_ca_bundle() {
  local f
  for f in "${PIP_CERT:-}" "${SSL_CERT_FILE:-}" /etc/ssl/certs/ca-certificates.crt; do
    if [ -n "$f" ] && [ -s "$f" ]; then printf '%s\n' "$f"; return 0; fi
  done
  return 1
}

# The host CA bundle at ROOT/.cache/build/ca-bundle.crt, where the Dockerfile's build stage picks it up for
# pip (TLS interception); removed where there is none. Used by build-image.sh and the skaffold builds.
stage_ca_bundle() {
  local dir="$1/.cache/build" ca
  mkdir -p "$dir"
  if ca=$(host_ca_bundle); then cp "$ca" "$dir/ca-bundle.crt"; else rm -f "$dir/ca-bundle.crt"; fi
}
