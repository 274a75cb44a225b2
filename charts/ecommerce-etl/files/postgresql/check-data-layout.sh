#!/usr/bin/env bash
# check-data-layout.sh IMAGE: the StatefulSet's first initContainer, run from the postgres image
# itself on the data volume (mounted read-only at /var/lib/postgresql). Like the official image's
# entrypoint, it refuses only when the image's own data directory ($PGDATA, 18+:
# /var/lib/postgresql/<major>/docker) holds no cluster while the volume holds a cluster of another
# PostgreSQL major version: the server cannot read that one, and the entrypoint would initialise a
# new, empty cluster beside it. It also refuses a $PGDATA holding another major's cluster. A
# cluster in $PGDATA of the image's own major starts as it is, whatever is left beside it (e.g. the
# old major's folder after an in-place `pg_upgrade --link`): the leftovers are only named.
set -euo pipefail
image=${1:-the postgres image}
major=${PG_MAJOR:-$(postgres -V | sed -E 's/^[^0-9]*([0-9]+).*$/\1/')}
[[ $major =~ ^[0-9]+$ ]] || { echo "check-data-layout: cannot tell the PostgreSQL major version of $image" >&2; exit 1; }
pgdata=${PGDATA:-/var/lib/postgresql/$major/docker}
pgdata=${pgdata%/}
dirs=(/var/lib/postgresql /var/lib/postgresql/data /var/lib/postgresql/*/docker)
[[ " ${dirs[*]} " == *" $pgdata "* ]] || dirs=("$pgdata" "${dirs[@]}")  # a PGDATA set elsewhere
other=()
for dir in "${dirs[@]}"; do
  if [ -s "$dir/PG_VERSION" ] && [ "$(<"$dir/PG_VERSION")" != "$major" ]; then
    other+=("$dir (PostgreSQL $(<"$dir/PG_VERSION"))")
  fi
done
if [ -s "$pgdata/PG_VERSION" ] && [ "$(<"$pgdata/PG_VERSION")" = "$major" ]; then
  echo "check-data-layout: PostgreSQL $major data in $pgdata"
  if [ "${#other[@]}" -gt 0 ]; then
    echo "check-data-layout: not used, left beside it (delete when no longer needed, UPGRADING.md): ${other[*]}"
  fi
  exit 0
fi
if [ "${#other[@]}" -gt 0 ]; then
  cat >&2 <<MSG
Refusing to start PostgreSQL $major ($image): this volume holds the data of another major version:
  ${other[*]}
PostgreSQL cannot read another major version's files, and starting anyway would initialise a new,
empty cluster beside them (every file would load again into it). Either set postgresql.image.tag
back to that major version, or change the major version as charts/ecommerce-etl/UPGRADING.md,
"PostgreSQL major upgrade", describes (back up, install the new major on a new volume, restore).
MSG
  exit 1
fi
echo "check-data-layout: no cluster yet; PostgreSQL $major initialises $pgdata"
