#!/usr/bin/env bash
# check-data-layout.sh IMAGE: the StatefulSet's first initContainer, run from the postgres image
# itself on the data volume (mounted read-only at /var/lib/postgresql). Fails, naming the upgrade
# procedure, when the volume holds a cluster of another PostgreSQL major version than the image's:
# the server cannot read it, and an entrypoint that finds its own data directory empty would
# initialise a new, empty cluster beside it.
set -euo pipefail
image=${1:-the postgres image}
major=${PG_MAJOR:-$(postgres -V | sed -E 's/^[^0-9]*([0-9]+).*$/\1/')}
[[ $major =~ ^[0-9]+$ ]] || { echo "check-data-layout: cannot tell the PostgreSQL major version of $image" >&2; exit 1; }
other=()
for dir in /var/lib/postgresql /var/lib/postgresql/data /var/lib/postgresql/*/docker; do
  if [ -s "$dir/PG_VERSION" ] && [ "$(<"$dir/PG_VERSION")" != "$major" ]; then
    other+=("$dir (PostgreSQL $(<"$dir/PG_VERSION"))")
  fi
done
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
if [ -s "/var/lib/postgresql/$major/docker/PG_VERSION" ]; then
  echo "check-data-layout: PostgreSQL $major data in /var/lib/postgresql/$major/docker"
else
  echo "check-data-layout: no cluster yet; PostgreSQL $major initialises /var/lib/postgresql/$major/docker"
fi
