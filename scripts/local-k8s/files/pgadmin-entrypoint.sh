#!/usr/bin/env bash
set -euo pipefail
app=/pgadmin4
{
  echo "LOG_FILE = '/dev/null'"
  echo "DATA_DIR = '/var/lib/pgadmin'"
  echo "SERVER_MODE = True"
  env | sed -n 's/^PGADMIN_CONFIG_\([A-Z0-9_]*\)=\(.*\)$/\1 = \2/p'
} >"$app/config_distro.py"

if [ -n "${PGADMIN_DEFAULT_PASSWORD_FILE:-}" ]; then  # as the official entrypoint does
  PGADMIN_DEFAULT_PASSWORD=$(cat "$PGADMIN_DEFAULT_PASSWORD_FILE")
  export PGADMIN_DEFAULT_PASSWORD
fi
if [ ! -f /var/lib/pgadmin/pgadmin4.db ]; then
  if [ -z "${PGADMIN_DEFAULT_EMAIL:-}" ] || [ -z "${PGADMIN_DEFAULT_PASSWORD:-}" ]; then
    echo "You need to define the PGADMIN_DEFAULT_EMAIL and PGADMIN_DEFAULT_PASSWORD environment variables." >&2
    exit 1
  fi
  PGADMIN_SETUP_EMAIL=$PGADMIN_DEFAULT_EMAIL PGADMIN_SETUP_PASSWORD=$PGADMIN_DEFAULT_PASSWORD \
    python3 "$app/setup.py" setup-db
  if [ -f "${PGADMIN_SERVER_JSON_FILE:-/pgadmin4/servers.json}" ]; then
    python3 "$app/setup.py" load-servers "${PGADMIN_SERVER_JSON_FILE:-/pgadmin4/servers.json}" --user "$PGADMIN_DEFAULT_EMAIL"
  fi
fi

addr=${PGADMIN_LISTEN_ADDRESS:-[::]}
if [ "$addr" = '[::]' ] && ! grep -q . /proc/net/if_inet6 2>/dev/null; then addr=0.0.0.0; fi
cd "$app"
exec gunicorn --timeout "${GUNICORN_TIMEOUT:-86400}" --bind "$addr:${PGADMIN_LISTEN_PORT:-80}" \
  -w 1 --threads "${GUNICORN_THREADS:-25}" --access-logfile "${GUNICORN_ACCESS_LOGFILE:--}" \
  pgAdmin4:app
