{{/*
A highly available Prefect server (prefectServer.replicas > 1): the API pods, the background services in
their own Deployment, Redis for messaging, leases, event ordering and the worker-channel cleanup queue
(prefect-redis, in the flow image), and migrations run once under a PostgreSQL advisory lock.
*/}}

{{- define "ecommerce-etl.serverHA" -}}
{{- if gt (int .Values.prefectServer.replicas) 1 -}}true{{- end -}}
{{- end -}}

{{- define "ecommerce-etl.servicesName" -}}
{{- include "ecommerce-etl.componentName" (dict "ctx" . "component" "prefect-services") -}}
{{- end -}}

{{- define "ecommerce-etl.redisName" -}}
{{- include "ecommerce-etl.componentName" (dict "ctx" . "component" "redis") -}}
{{- end -}}

{{/* The in-release Redis runs when the server is HA and no external host is given. */}}
{{- define "ecommerce-etl.inReleaseRedis" -}}
{{- if and (include "ecommerce-etl.serverHA" .) (not .Values.prefectServer.redis.host) -}}true{{- end -}}
{{- end -}}

{{/* The Secret holding redis-password, or "" for an external Redis without one. */}}
{{- define "ecommerce-etl.redisSecretName" -}}
{{- $r := .Values.prefectServer.redis -}}
{{- if $r.existingSecret -}}
{{- $r.existingSecret -}}
{{- else if include "ecommerce-etl.inReleaseRedis" . -}}
{{- include "ecommerce-etl.redisName" . -}}
{{- end -}}
{{- end -}}

{{/* The image of the API and services pods: the official Prefect image with one replica, the flow image
(which has prefect-redis) when HA. */}}
{{- define "ecommerce-etl.serverImage" -}}
{{- if include "ecommerce-etl.serverHA" . -}}
{{- include "ecommerce-etl.flowImage" . -}}
{{- else -}}
{{- include "ecommerce-etl.imageRef" (dict "image" .Values.prefectServer.image "default" "") -}}
{{- end -}}
{{- end -}}
{{- define "ecommerce-etl.serverImagePullPolicy" -}}
{{- ternary .Values.image.pullPolicy .Values.prefectServer.image.pullPolicy (not (empty (include "ecommerce-etl.serverHA" .))) -}}
{{- end -}}

{{/* Env of every HA server process (API and services): Prefect's pluggable backends on Redis, and neither
migrations nor block registration at start (the migrate init container did both, once). Prefect 3.9
setting names; prefect-redis 0.3.0. */}}
{{- define "ecommerce-etl.serverHAEnv" -}}
{{- $r := .Values.prefectServer.redis -}}
{{- $host := default (include "ecommerce-etl.redisName" .) $r.host -}}
- name: PREFECT_SERVER_DATABASE_MIGRATE_ON_START
  value: "false"
- name: PREFECT_SERVER_REGISTER_BLOCKS_ON_START
  value: "false"
- name: PREFECT_MESSAGING_BROKER
  value: prefect_redis.messaging
- name: PREFECT_MESSAGING_CACHE
  value: prefect_redis.messaging
- name: PREFECT_SERVER_EVENTS_CAUSAL_ORDERING
  value: prefect_redis.ordering
- name: PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE
  value: prefect_redis.lease_storage
- name: PREFECT_SERVER_WORKER_CHANNEL_CLEANUP_QUEUE_STORAGE
  value: prefect_redis.cleanup_queue
{{- range $prefix := list "PREFECT_REDIS_MESSAGING" "PREFECT_REDIS_WORKER_CLEANUP_QUEUE" }}
- name: {{ $prefix }}_HOST
  value: {{ $host | quote }}
- name: {{ $prefix }}_PORT
  value: {{ $r.port | quote }}
- name: {{ $prefix }}_DB
  value: {{ $r.db | quote }}
{{- end }}
{{- end -}}

{{/* Secret-backed env items of the HA server processes (for envFromFiles): the Redis password. */}}
{{- define "ecommerce-etl.serverHASecretEnv" -}}
{{- $items := list -}}
{{- $secret := include "ecommerce-etl.redisSecretName" . -}}
{{- if and (include "ecommerce-etl.serverHA" .) $secret -}}
{{- range $prefix := list "PREFECT_REDIS_MESSAGING" "PREFECT_REDIS_WORKER_CLEANUP_QUEUE" -}}
{{- $items = append $items (dict "env" (printf "%s_PASSWORD" $prefix) "secret" $secret "key" "redis-password") -}}
{{- end -}}
{{- end -}}
{{- toJson $items -}}
{{- end -}}

{{/* The migrate initContainer: `prefect server database upgrade` while holding a PostgreSQL advisory
lock, so that of all the API and services pods starting at once one migrates and the others find the
schema current. The lock goes with the connection, whatever happens to the process. The others poll
with pg_try_advisory_lock instead of waiting in pg_advisory_lock: a waiting statement keeps a snapshot
open, and Prefect's migrations build indexes CONCURRENTLY, which waits for every such snapshot, so the
two would wait on each other for ever (seen with three pods at once). */}}
{{- define "ecommerce-etl.migrateInitContainer" -}}
- name: migrate
  image: {{ include "ecommerce-etl.flowImage" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command:
{{ include "ecommerce-etl.envFromFiles.command" . | indent 4 }}
    - python
    - -c
    - |
      import os, subprocess, sys, time
      import psycopg2
      url = os.environ["PREFECT_SERVER_DATABASE_CONNECTION_URL"]
      lock = psycopg2.connect("postgresql://" + url.split("://", 1)[1], connect_timeout=10)
      lock.autocommit = True
      cursor = lock.cursor()
      while True:
          cursor.execute("SELECT pg_try_advisory_lock(hashtext('prefect-server-migrations'))")
          if cursor.fetchone()[0]:
              break
          print("another pod is migrating the Prefect database; waiting", flush=True)
          time.sleep(2)
      print("migration lock held; upgrading the Prefect database", flush=True)
      code = subprocess.call(["prefect", "server", "database", "upgrade", "--yes"])
      if code:
          sys.exit(code)
      # Block types, which every API process would otherwise insert at its start (two at once collide:
      # "uq_block_type__slug", and one of them exits; seen with two replicas).
      import asyncio
      from prefect.server.database import provide_database_interface
      from prefect.server.models.block_registration import run_block_auto_registration

      async def register():  # as the API's start-up does it (the registration opens its own transactions)
          async with await provide_database_interface().session() as session:
              await run_block_auto_registration(session=session)

      asyncio.run(register())
      print("Prefect database upgraded and block types registered", flush=True)
  env:
{{ include "ecommerce-etl.prefectBaseEnv" . | indent 4 }}
  securityContext:
{{ include "ecommerce-etl.flowContainerSecurityContext" . | indent 4 }}
  resources:
{{ toYaml .Values.prefectServer.resources | indent 4 }}
  volumeMounts:
{{ include "ecommerce-etl.envFromFiles.mount" . | indent 4 }}
{{ include "ecommerce-etl.tmpMount" . | indent 4 }}
{{- end -}}

{{/* Spread of the API pods over nodes. */}}
{{- define "ecommerce-etl.serverTopologySpread" -}}
{{- $ha := .Values.prefectServer.ha -}}
topologySpreadConstraints:
{{- if $ha.topologySpreadConstraints }}
{{ toYaml $ha.topologySpreadConstraints }}
{{- else }}
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
{{ include "ecommerce-etl.selectorLabels" (dict "ctx" . "component" "prefect-server") | indent 8 }}
{{- end }}
{{- end -}}
