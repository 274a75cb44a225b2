#!/usr/bin/env bash
# One backup: each database of $BACKUP_DATABASES dumped with `pg_dump -Fc`, and the row count of
# every table read in the very snapshot the dump reads (verify.sh compares a restore with them),
# written to $BACKUP_ROOT/.partial-<UTC time> and renamed to $BACKUP_ROOT/<UTC time> only when
# complete. BACKUP_KIND says who took it: "scheduled" (the CronJob, the default) or "change" (the
# Job of an install or a change of the release; its folder is <UTC time>-change). Each kind is
# pruned on its own, by the run of that kind: the newest $BACKUP_KEEP scheduled backups are kept,
# and the newest $CHANGE_KEEP change-triggered ones, so a day of upgrades never deletes the nightly
# backups.
# shellcheck source=charts/ecommerce-etl/files/backup/common.sh
. "$(dirname "$0")/common.sh"
: "${BACKUP_KEEP:=7}"
: "${BACKUP_KIND:=scheduled}"
CHANGE_KEEP=3
case $BACKUP_KIND in
  scheduled) suffix='' keep=$BACKUP_KEEP ;;
  change) suffix=-change keep=$CHANGE_KEEP ;;
  *) die "BACKUP_KIND must be scheduled or change, not '$BACKUP_KIND'" ;;
esac

# dump DB DIR: a read-only repeatable-read transaction exports its snapshot; pg_dump reads that
# snapshot, and the same transaction then counts the rows, so the counts match the dump exactly
# even while loads run.
dump() {
  local db=$1 dir=$2 snapshot line pid to from done=0
  coproc SNAP { sql -d "$db"; }
  # kept now: bash unsets SNAP and SNAP_PID as soon as the session ends (e.g. the server restarted)
  pid=$SNAP_PID to=${SNAP[1]} from=${SNAP[0]}
  printf '%s\n' 'BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;' 'SELECT pg_export_snapshot();' >&"$to" \
    || die "$db: the session ended before it could export a snapshot"
  read -r snapshot <&"$from" || die "$db: could not export a snapshot (did the server restart?)"
  pg_dump --format=custom --snapshot="$snapshot" --dbname="$db" --file="$dir/$db.dump"
  # The session stays open until its output is read (bash closes a finished coprocess's pipes).
  printf '%s\n' "$COUNT_SQL" '\echo END-OF-COUNTS' >&"$to"
  while read -r line <&"$from"; do
    if [ "$line" = END-OF-COUNTS ]; then done=1; break; fi
    printf '%s\t%s\n' "$db" "$line" >>"$dir/counts.tsv"
  done
  printf '%s\n' 'COMMIT;' '\q' >&"$to" || true
  wait "$pid" || die "$db: the snapshot session failed"
  [ "$done" = 1 ] || die "$db: no row counts"
  log "$db: $(du -h "$dir/$db.dump" | cut -f1) dump, $(awk -F'\t' -v db="$db" '$1 == db {n++; r += $3} END {printf "%d tables, %d rows", n, r}' "$dir/counts.tsv")"
}

# Only backups of this run's kind: a change-triggered backup never removes a scheduled one.
prune() {
  local all=() i
  mapfile -t all < <(backups "$BACKUP_KIND")
  for ((i = 0; i < ${#all[@]} - keep; i++)); do
    rm -rf "${BACKUP_ROOT:?}/${all[i]}"
    log "removed backup ${all[i]} (keeping the newest $keep $BACKUP_KIND backups)"
  done
  # leftovers of backups that died more than a day ago
  find "$BACKUP_ROOT" -mindepth 1 -maxdepth 1 -name '.partial-*' -mmin +1440 -exec rm -rf {} + || true
}

wait_for_db
started=$SECONDS
name=$(date -u +%Y%m%dT%H%M%SZ)$suffix
work="$BACKUP_ROOT/.partial-$name"
mkdir -p "$work"
: >"$work/counts.tsv"
for db in $BACKUP_DATABASES; do dump "$db" "$work"; done
# Roles and memberships, without passwords: what a restore into another cluster needs first.
pg_dumpall --globals-only --no-role-passwords --file="$work/globals.sql"
sql -d postgres -c 'SHOW server_version' >"$work/server-version"
mv "$work" "$BACKUP_ROOT/$name"
log "$BACKUP_KIND backup $name complete in $((SECONDS - started)) s: $BACKUP_DATABASES"
prune
