{{/*
initContainers that wait for a dependency, with their inline programs.
*/}}

{{/* Blocks until the Prefect server answers /api/health (open even with basic auth). */}}
{{- define "ecommerce-etl.waitForServer" -}}
- name: wait-for-prefect-server
  image: {{ include "ecommerce-etl.flowImage" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command:
    - python
    - -c
    - |
      import sys, time, urllib.request
      url = sys.argv[1]
      for _ in range(120):
          try:
              urllib.request.urlopen(url, timeout=5)
              sys.exit(0)
          except Exception as exc:
              print(f"waiting for {url}: {exc}", flush=True)
              time.sleep(5)
      sys.exit(1)
    - {{ printf "%s/health" (include "ecommerce-etl.serverApiUrl" .) }}
  securityContext:
{{ include "ecommerce-etl.flowContainerSecurityContext" . | indent 4 }}
  resources:
{{ toYaml .Values.initContainers.resources | indent 4 }}
{{- end -}}

{{/* Waits until Postgres accepts connections, so the Prefect server does not crash-loop
     while a fresh database initialises. pg_isready from the postgres image, any uid. */}}
{{- define "ecommerce-etl.waitForDatabase" -}}
{{- $image := .Values.postgresql.image -}}
- name: wait-for-postgresql
  image: {{ include "ecommerce-etl.imageRef" (dict "image" $image "default" "") }}
  imagePullPolicy: {{ $image.pullPolicy }}
  command:
    - sh
    - -c
    - |
      for attempt in $(seq 120); do
        # -U: this uid has no passwd entry, and libpq would give up looking for a default user
        pg_isready -h "$0" -p "$1" -U pg_isready -t 5 && exit 0
        sleep 5
      done
      exit 1
    - {{ include "ecommerce-etl.dbHost" . | quote }}
    - {{ include "ecommerce-etl.dbPort" . | quote }}
  securityContext:
{{ include "ecommerce-etl.containerSecurityContext" (dict "readOnlyRoot" true) | indent 4 }}
  resources:
{{ toYaml .Values.initContainers.resources | indent 4 }}
{{- end -}}
