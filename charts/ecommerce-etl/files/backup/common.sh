# shellcheck shell=bash
# Sourced by backup.sh, restore.sh and verify.sh. They run in the postgres image (its own psql,
# pg_dump and pg_restore, so the client matches the server's major) and reach the server through
# libpq's PGHOST/PGPORT/PGUSER. The superuser's password is read from its Secret file into this
# process only; it is in no pod spec.
set -euo pipefail

BACKUP_ROOT=${BACKUP_ROOT:-/backups}
: "${BACKUP_DATABASES:?space-separated databases to dump}"
if [ -n "${PGPASSWORD_FILE:-}" ]; then
  PGPASSWORD=$(<"$PGPASSWORD_FILE")
  export PGPASSWORD
fi

log() { printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }
die() {
  log "error: $*" >&2
  exit 1
}
sql() { psql -X -v ON_ERROR_STOP=1 -q -A -t -F $'\t' "$@"; }

# A new pod's NetworkPolicy rules may be programmed a few seconds after it starts, and at install
# the server may still be initialising (BACKUP_WAIT_SECONDS, default 120).
wait_for_db() {
  local attempt
  for attempt in $(seq $((${BACKUP_WAIT_SECONDS:-120} / 2))); do
    if sql -d postgres -c 'SELECT 1' >/dev/null 2>&1; then return 0; fi
    [ "$attempt" = 1 ] && log "waiting for PostgreSQL at ${PGHOST:-local socket}:${PGPORT:-5432}"
    sleep 2
  done
  sql -d postgres -c 'SELECT 1' >/dev/null || die "PostgreSQL at ${PGHOST:-local socket} does not answer"
}

# Complete backups of KIND (scheduled: <UTC time>, taken by the CronJob; change: <UTC time>-change,
# taken by the Job of an install or change; all, the default: both), oldest first (the names start
# with their UTC time, so they sort by age whatever their kind).
backups() {
  local kind=${1:-all} d name pattern
  case $kind in
    scheduled) pattern='^[0-9]{8}T[0-9]{6}Z$' ;;
    change) pattern='^[0-9]{8}T[0-9]{6}Z-change$' ;;
    all) pattern='^[0-9]{8}T[0-9]{6}Z(-change)?$' ;;
    *) die "unknown kind of backup: $kind" ;;
  esac
  for d in "$BACKUP_ROOT"/[0-9]*T[0-9]*Z*; do
    name=${d##*/}
    if [ -d "$d" ] && [[ $name =~ $pattern ]]; then printf '%s\n' "$name"; fi
  done
}

# The folder of backup NAME ("latest": the newest of either kind).
backup_dir() {
  local name=$1
  if [ "$name" = latest ]; then
    name=$(backups | tail -n 1)
    [ -n "$name" ] || die "no backup in $BACKUP_ROOT yet"
  fi
  [ -f "$BACKUP_ROOT/$name/counts.tsv" ] || die "no backup $name in $BACKUP_ROOT (have: $(backups | tr '\n' ' '))"
  printf '%s\n' "$BACKUP_ROOT/$name"
}

# Rows of every table of the connected database, one "schema.table<TAB>rows" line each, sorted:
# a query builds one count per table and \gexec runs it (no libxml needed). Partitions are counted
# on their own (ONLY); partitioned parents hold no rows themselves.
COUNT_SQL="SELECT 'SELECT * FROM (' || string_agg(format('SELECT %L::text, count(*) FROM ONLY %I.%I',
    format('%I.%I', n.nspname, c.relname), n.nspname, c.relname), ' UNION ALL ') || ') t ORDER BY 1'
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind = 'r' AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%' \\gexec"

table_counts() { sql -d "$1" <<<"$COUNT_SQL"; }

# The counts backup.sh took for DB, in table_counts' format.
dumped_counts() { awk -F'\t' -v db="$2" '$1 == db {print $2 "\t" $3}' "$1/counts.tsv"; }
