#!/usr/bin/env bash
# The stand-in pgAdmin image's entrypoint: our own code for the official image's contract as
# k8s/README.md lists it (each item with where the official source states it).
set -euo pipefail
app=/pgadmin4

# PGADMIN_DEFAULT_PASSWORD_FILE names a file holding the password; both, or an unreadable file, is an error.
if [ -n "${PGADMIN_DEFAULT_PASSWORD_FILE:-}" ]; then
  if [ -n "${PGADMIN_DEFAULT_PASSWORD:-}" ]; then
    echo "error: both PGADMIN_DEFAULT_PASSWORD and PGADMIN_DEFAULT_PASSWORD_FILE are set (but are exclusive)" >&2
    exit 1
  fi
  [ -r "$PGADMIN_DEFAULT_PASSWORD_FILE" ] || {
    echo "error: PGADMIN_DEFAULT_PASSWORD_FILE is set to \"$PGADMIN_DEFAULT_PASSWORD_FILE\" but the file does not exist or is not readable" >&2
    exit 1
  }
  PGADMIN_DEFAULT_PASSWORD=$(<"$PGADMIN_DEFAULT_PASSWORD_FILE")
  export PGADMIN_DEFAULT_PASSWORD
  unset PGADMIN_DEFAULT_PASSWORD_FILE
fi

# config_distro.py, written when it is empty (a new container): our defaults (the official image
# gets server mode and its data folder from its own launcher), then each PGADMIN_CONFIG_<KEY>=<value>
# as `KEY = value`, true/false spelt as Python's True/False.
if [ ! -s "$app/config_distro.py" ]; then
  {
    echo "LOG_FILE = '/dev/null'"
    echo "DATA_DIR = '/var/lib/pgadmin'"
    echo "SERVER_MODE = True"
    while IFS='=' read -r name value; do
      case "${value,,}" in true) value=True ;; false) value=False ;; esac
      echo "${name#PGADMIN_CONFIG_} = $value"
    done < <(env | grep '^PGADMIN_CONFIG_[A-Z0-9_]*=')
  } >"$app/config_distro.py"
fi

if [ ! -f /var/lib/pgadmin/pgadmin4.db ]; then
  if [ -z "${PGADMIN_DEFAULT_EMAIL:-}" ] || [ -z "${PGADMIN_DEFAULT_PASSWORD:-}" ]; then
    echo "You need to define the PGADMIN_DEFAULT_EMAIL and PGADMIN_DEFAULT_PASSWORD or PGADMIN_DEFAULT_PASSWORD_FILE environment variables." >&2
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
