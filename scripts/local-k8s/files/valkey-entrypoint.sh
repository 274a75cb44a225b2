#!/usr/bin/env bash
# Entrypoint of the valkey stand-in (Debian's redis-server), after the official image's contract: arguments
# that start with "-" or name a .conf file go to valkey-server; VALKEY_EXTRA_FLAGS are appended to its
# arguments; started as root it runs as the valkey user (uid 999) and owns /data.
set -euo pipefail
if [ "${1:0:1}" = "-" ] || [[ ${1:-} == *.conf ]]; then set -- valkey-server "$@"; fi
if [ "${1:-}" = valkey-server ] && [ -n "${VALKEY_EXTRA_FLAGS:-}" ]; then
  read -r -a extra <<<"$VALKEY_EXTRA_FLAGS"
  set -- "$@" "${extra[@]}"
fi
if [ "${1:-}" = valkey-server ] && [ "$(id -u)" = 0 ]; then
  find . \! -user valkey -exec chown valkey '{}' +
  exec setpriv --reuid=valkey --regid=valkey --init-groups "$@"
fi
exec "$@"
