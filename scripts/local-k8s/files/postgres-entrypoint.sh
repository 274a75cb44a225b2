#!/usr/bin/env bash
set -Eeo pipefail
if [ "${1:0:1}" = '-' ]; then set -- postgres "$@"; fi
if [ "$1" != postgres ]; then exec "$@"; fi
[ "$(id -u)" != 0 ] || exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"

# VAR_FILE names a file holding VAR (docker secrets, Kubernetes Secret volumes), as file_env does.
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
mkdir -p "$PGDATA"; chmod 00700 "$PGDATA" 2>/dev/null || true

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "${POSTGRES_HOST_AUTH_METHOD:-}" != trust ]; then
    echo "error: database is uninitialized and POSTGRES_PASSWORD is not set" >&2; exit 1
  fi
  pwfile=$(mktemp); printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$pwfile"
  # shellcheck disable=SC2086
  initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --locale-provider=libc --locale=C.UTF-8 \
    --auth-local=trust --auth-host="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" \
    ${POSTGRES_INITDB_ARGS:-} -D "$PGDATA"
  rm -f "$pwfile"
  printf '\nhost all all all %s\n' "${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" >>"$PGDATA/pg_hba.conf"
  # The official image's defaults: listen everywhere, socket in /var/run/postgresql
  # (this build's compiled-in default is /tmp, so both are kept).
  printf "\nlisten_addresses = '*'\nunix_socket_directories = '/var/run/postgresql,/tmp'\n" >>"$PGDATA/postgresql.conf"

  # Temporary server on the unix socket only, for POSTGRES_DB and the init scripts.
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start
  export PGPASSWORD="${POSTGRES_PASSWORD:-}" PGHOST=/var/run/postgresql
  psql=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc)
  if [ "$POSTGRES_DB" != postgres ]; then
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
fi
exec "$@"
