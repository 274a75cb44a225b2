#!/usr/bin/env bash
# verify.sh [NAME|latest]: restore each dump of a backup into a scratch database, compare the row
# count of every table with the counts taken at dump time, and drop the scratch databases.
# With no backup yet it takes one first (backup.sh), so a fresh release checks the whole path.
# shellcheck source=charts/ecommerce-etl/files/backup/common.sh
. "$(dirname "$0")/common.sh"

scratch=()
# shellcheck disable=SC2329  # the EXIT trap calls it
cleanup() {
  local db
  for db in "${scratch[@]}"; do sql -d postgres -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" || true; done
}
trap cleanup EXIT

wait_for_db
if [ "${1:-latest}" = latest ] && [ -z "$(backups)" ]; then
  log "no backup yet: taking one"
  "$(dirname "$0")/backup.sh"
fi
dir=$(backup_dir "${1:-latest}")
failed=0
for dump in "$dir"/*.dump; do
  db=$(basename "$dump" .dump)
  check="restore_check_${db:0:40}"
  scratch+=("$check")
  sql -d postgres -c "DROP DATABASE IF EXISTS \"$check\" WITH (FORCE)" -c "CREATE DATABASE \"$check\"" \
    -c "REVOKE ALL ON DATABASE \"$check\" FROM PUBLIC"
  started=$SECONDS
  pg_restore --exit-on-error --dbname="$check" "$dump"
  want=$(dumped_counts "$dir" "$db")
  have=$(table_counts "$check")
  rows=$(awk -F'\t' '{r += $2} END {print r + 0}' <<<"$have")
  if [ "$want" = "$have" ]; then
    log "$db: backup ${dir##*/} restored in $((SECONDS - started)) s; $(wc -l <<<"$have") tables, $rows rows, every count as dumped"
  else
    log "$db: backup ${dir##*/} restored with other row counts than dumped:"
    diff <(printf '%s\n' "$want") <(printf '%s\n' "$have") || true
    failed=1
  fi
  sql -d postgres -c "DROP DATABASE \"$check\" WITH (FORCE)"
done
[ "$failed" = 0 ] || die "backup ${dir##*/} does not restore to the counts it was taken with"
log "restore check passed: backup ${dir##*/}"
