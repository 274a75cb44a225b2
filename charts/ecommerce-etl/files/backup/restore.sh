#!/usr/bin/env bash
# restore.sh [NAME|latest]: put the databases of a backup back into the release. Each dump is
# restored into a new database first; only when that succeeded is it swapped in (new connections
# refused, existing ones ended, renamed), so a failed restore leaves the live database as it was.
# The replaced database is kept as <db>_replaced_<time> (dropped by hand once you are sure).
# BACKUP (or the first argument) names the backup, default the newest ("list" lists them);
# RESTORE_DATABASES limits the restore to some of its databases (default: every dump in the backup).
# shellcheck source=charts/ecommerce-etl/files/backup/common.sh
. "$(dirname "$0")/common.sh"

# SQL that creates database :new like :db (owner, encoding, locale) and gives it :db's privileges.
CLONE_SQL="SELECT format('CREATE DATABASE %I OWNER %I TEMPLATE template0 ENCODING %L LOCALE_PROVIDER %s LC_COLLATE %L LC_CTYPE %L%s',
    :'new', pg_get_userbyid(datdba), pg_encoding_to_char(encoding),
    CASE datlocprovider WHEN 'i' THEN 'icu' WHEN 'b' THEN 'builtin' ELSE 'libc' END, datcollate, datctype,
    CASE datlocprovider WHEN 'i' THEN format(' ICU_LOCALE %L', datlocale)
                        WHEN 'b' THEN format(' BUILTIN_LOCALE %L', datlocale) ELSE '' END)
  FROM pg_database WHERE datname = :'db' \\gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'new') \\gexec
SELECT format('GRANT %s ON DATABASE %I TO %s', a.privilege_type, :'new',
    CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END)
  FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
  WHERE d.datname = :'db' \\gexec"

# Swap :new in for :db; :old keeps the replaced one. Runs in one session, retried if a client
# slipped in between ending the connections and the rename.
SWAP_SQL="ALTER DATABASE :\"db\" WITH ALLOW_CONNECTIONS false;
SELECT count(pg_terminate_backend(pid, 10000)) FROM pg_stat_activity WHERE datname = :'db' AND pid <> pg_backend_pid();
ALTER DATABASE :\"db\" RENAME TO :\"old\";
ALTER DATABASE :\"new\" RENAME TO :\"db\";
ALTER DATABASE :\"old\" WITH ALLOW_CONNECTIONS true;"

restore_one() {  # DUMP
  local dump=$1 db new old started attempt
  db=$(basename "$dump" .dump)
  new="${db:0:40}_restoring"
  old="${db:0:36}_replaced_$(date -u +%Y%m%dt%H%M%Sz)"
  [ -n "$(sql -d postgres -v db="$db" <<<"SELECT 1 FROM pg_database WHERE datname = :'db'")" ] \
    || die "$db does not exist in this cluster: the release creates it at first start (a restore into it keeps its owner and privileges)"
  sql -d postgres -c "DROP DATABASE IF EXISTS \"$new\" WITH (FORCE)"
  sql -d postgres -v db="$db" -v new="$new" <<<"$CLONE_SQL"
  started=$SECONDS
  if ! pg_restore --exit-on-error --dbname="$new" "$dump"; then
    sql -d postgres -c "DROP DATABASE IF EXISTS \"$new\" WITH (FORCE)" || true
    die "$db: pg_restore of $dump failed; the live database is unchanged"
  fi
  # Checked before the swap, while no client can have written to it.
  if [ "$(dumped_counts "$dir" "$db")" != "$(table_counts "$new")" ]; then
    die "$db: the restored tables in $new do not hold the rows counted at dump time; the live database is unchanged"
  fi
  log "$db: restored into $new in $((SECONDS - started)) s, every table's row count as dumped"
  for attempt in 1 2 3 4 5; do
    if sql -d postgres -v db="$db" -v new="$new" -v old="$old" <<<"$SWAP_SQL" >/dev/null; then
      log "$db: now the restored backup; the replaced database is kept as $old (DROP DATABASE \"$old\" when sure)"
      return 0
    fi
    sql -d postgres -c "ALTER DATABASE \"$db\" WITH ALLOW_CONNECTIONS true" >/dev/null 2>&1 || true
    log "$db: swap attempt $attempt failed; retrying"
    sleep 2
  done
  die "$db: could not swap the restored database in; it is kept as $new, the live one is unchanged"
}

if [ "${BACKUP:-${1:-latest}}" = list ]; then  # the backups there are, newest last
  for name in $(backups); do
    printf '%s\t%s\t%s\n' "$name" "$(du -sh "$BACKUP_ROOT/$name" | cut -f1)" \
      "$(awk -F'\t' '{n[$1] += $3} END {for (db in n) printf "%s %d rows  ", db, n[db]}' "$BACKUP_ROOT/$name/counts.tsv")"
  done
  exit 0
fi
wait_for_db
dir=$(backup_dir "${BACKUP:-${1:-latest}}")
wanted=${RESTORE_DATABASES:-}
log "restoring backup ${dir##*/} (taken from PostgreSQL $(cat "$dir/server-version" 2>/dev/null || echo '?'))"
for dump in "$dir"/*.dump; do
  db=$(basename "$dump" .dump)
  if [ -n "$wanted" ] && [[ " $wanted " != *" $db "* ]]; then continue; fi
  restore_one "$dump"
done
log "restore of backup ${dir##*/} complete"
