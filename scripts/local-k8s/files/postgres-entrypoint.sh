#!/usr/bin/env bash
# The stand-in postgres image's entrypoint: our own code for the official image's contract as
# k8s/README.md lists it (each item with where the official source states it).
set -Eeo pipefail
if [ "${1:0:1}" = '-' ]; then set -- postgres "$@"; fi
if [ "$1" != postgres ]; then exec "$@"; fi
[ "$(id -u)" != 0 ] || exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"

# VAR_FILE names a file holding VAR (docker secrets, Kubernetes Secret volumes); both is an error.
for var in POSTGRES_USER POSTGRES_PASSWORD POSTGRES_DB POSTGRES_INITDB_ARGS; do
  file_var="${var}_FILE"
  if [ -n "${!file_var:-}" ]; then
    if [ -n "${!var:-}" ]; then echo "error: both $var and $file_var are set (but are exclusive)" >&2; exit 1; fi
    printf -v "$var" '%s' "$(<"${!file_var}")"
    export "${var?}"
    unset "$file_var"
  fi
done
: "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}"
export POSTGRES_USER POSTGRES_DB

if [ -s "$PGDATA/PG_VERSION" ]; then
  echo "PostgreSQL data directory $PGDATA holds a cluster; not initialising."
  exec "$@"
fi

# From 18 on, data lives in /var/lib/postgresql/<major>/docker: with that default PGDATA empty,
# data of another layout or major version on the volume means an upgrade was skipped. Refuse.
if [ "$PGDATA" = "/var/lib/postgresql/$PG_MAJOR/docker" ]; then
  found=()
  for d in /var/lib/postgresql /var/lib/postgresql/data /var/lib/postgresql/*/docker; do
    if [ -s "$d/PG_VERSION" ]; then found+=("$d"); fi
  done
  if [ "${#found[@]}" -eq 0 ] && mountpoint -q /var/lib/postgresql/data 2>/dev/null; then
    found+=("/var/lib/postgresql/data (a mount of its own, unused from 18 on)")
  fi
  if [ "${#found[@]}" -gt 0 ]; then
    echo "error: PostgreSQL $PG_MAJOR keeps its data in $PGDATA, which is empty, but this volume holds" >&2
    echo "PostgreSQL data elsewhere: ${found[*]}." >&2
    echo "That is what an image upgrade without pg_upgrade (or a pre-18 volume layout) leaves behind;" >&2
    echo "refusing to initialise a new, empty cluster beside it." >&2
    exit 1
  fi
fi

mkdir -p "$PGDATA"; chmod 00700 "$PGDATA" 2>/dev/null || true
if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "${POSTGRES_HOST_AUTH_METHOD:-}" != trust ]; then
  echo "error: database is uninitialized and POSTGRES_PASSWORD is not set (or set POSTGRES_HOST_AUTH_METHOD=trust)" >&2
  exit 1
fi
# initdb's own defaults (trust for local and loopback connections), locale from the environment.
# shellcheck disable=SC2086
initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "${POSTGRES_PASSWORD:-}") \
  --locale-provider=libc ${POSTGRES_INITDB_ARGS:-} -D "$PGDATA"
# Every other host authenticates with the server's password_encryption method (or the one given).
auth=${POSTGRES_HOST_AUTH_METHOD:-$(postgres -D "$PGDATA" -C password_encryption)}
printf '\nhost all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"
# The official image's defaults: listen everywhere, socket in /var/run/postgresql
# (this build's compiled-in default is /tmp, so both are kept).
printf "\nlisten_addresses = '*'\nunix_socket_directories = '/var/run/postgresql,/tmp'\n" >>"$PGDATA/postgresql.conf"

# Temporary server on the unix socket only, for POSTGRES_DB and the init scripts.
pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p ${PGPORT:-5432}" -w start
export PGPASSWORD="${PGPASSWORD:-${POSTGRES_PASSWORD:-}}" PGHOST=/var/run/postgresql
psql=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc)
if [ -z "$("${psql[@]}" --dbname postgres --set db="$POSTGRES_DB" -tA <<<"SELECT 1 FROM pg_database WHERE datname = :'db'")" ]; then
  "${psql[@]}" --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
fi
for f in /docker-entrypoint-initdb.d/*; do
  case "$f" in
    *.sh) if [ -x "$f" ]; then echo "running $f"; "$f"; else echo "sourcing $f"; # shellcheck disable=SC1090
            . "$f"; fi ;;
    *.sql) echo "running $f"; "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f" ;;
    *.sql.gz) echo "running $f"; gunzip -c "$f" | "${psql[@]}" --dbname "$POSTGRES_DB" ;;
    *) [ -e "$f" ] && echo "ignoring $f" ;;
  esac
done
unset PGPASSWORD PGHOST
pg_ctl -D "$PGDATA" -m fast -w stop
echo "PostgreSQL init process complete; ready for start up."
exec "$@"
