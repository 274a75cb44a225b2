{{/*
Shared helpers. Component templates pass a dict: (dict "ctx" $ "component" "worker").
*/}}

{{- define "ecommerce-etl.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ecommerce-etl.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "ecommerce-etl.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Object name of a component: <fullname>-<component>, kept within 63 chars. */}}
{{- define "ecommerce-etl.componentName" -}}
{{- printf "%s-%s" (include "ecommerce-etl.fullname" .ctx | trunc (int (sub 62 (len .component))) | trimSuffix "-") .component -}}
{{- end -}}

{{/* Selector labels. NetworkPolicies select on instance + component only, because
Prefect overwrites app.kubernetes.io/name on flow-run pods. */}}
{{- define "ecommerce-etl.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ecommerce-etl.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "ecommerce-etl.labels" -}}
helm.sh/chart: {{ include "ecommerce-etl.chart" .ctx }}
{{ include "ecommerce-etl.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: {{ include "ecommerce-etl.name" .ctx }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Peer selector for NetworkPolicies: pods of this release with one of the given components. */}}
{{- define "ecommerce-etl.peer" -}}
- podSelector:
    matchExpressions:
      - key: app.kubernetes.io/instance
        operator: In
        values: [{{ .ctx.Release.Name | quote }}]
      - key: app.kubernetes.io/component
        operator: In
        values: {{ toJson .components }}
{{- end -}}

{{/* repository:tag of an image block; tag falls back to .default. */}}
{{- define "ecommerce-etl.imageRef" -}}
{{- printf "%s:%s" .image.repository (default .default .image.tag | toString) -}}
{{- end -}}

{{- define "ecommerce-etl.flowImage" -}}
{{- include "ecommerce-etl.imageRef" (dict "image" .Values.image "default" .Chart.AppVersion) -}}
{{- end -}}

{{/* Pod-level securityContext meeting Pod Security "restricted"; .uid is the image's user. */}}
{{- define "ecommerce-etl.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
fsGroup: {{ .uid }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container-level securityContext; .readOnlyRoot false only where the image must write its root fs. */}}
{{- define "ecommerce-etl.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: {{ .readOnlyRoot }}
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The flow image's securityContexts (uid 10001). */}}
{{- define "ecommerce-etl.flowPodSecurityContext" -}}
{{ include "ecommerce-etl.podSecurityContext" (dict "uid" 10001) }}
{{- end -}}
{{- define "ecommerce-etl.flowContainerSecurityContext" -}}
{{ include "ecommerce-etl.containerSecurityContext" (dict "readOnlyRoot" true) }}
{{- end -}}

{{- define "ecommerce-etl.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* nodeSelector / tolerations / affinity of a component values block. */}}
{{- define "ecommerce-etl.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
{{ toYaml . | indent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
{{ toYaml . }}
{{- end }}
{{- with .affinity }}
affinity:
{{ toYaml . | indent 2 }}
{{- end }}
{{- end -}}

{{/* Writable /tmp for read-only root filesystems; Prefect's home lives under it. */}}
{{- define "ecommerce-etl.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .sizeLimit | default "256Mi" }}
{{- end -}}
{{- define "ecommerce-etl.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* Env every Prefect client process of the flow image gets. */}}
{{- define "ecommerce-etl.prefectClientEnv" -}}
- name: PREFECT_API_URL
  value: {{ include "ecommerce-etl.serverApiUrl" . | quote }}
- name: PREFECT_HOME
  value: /tmp/prefect
- name: PREFECT_SERVER_ANALYTICS_ENABLED
  value: "false"
{{- end -}}

{{/* Prefect server Service and its in-cluster API URL. */}}
{{- define "ecommerce-etl.serverName" -}}
{{- include "ecommerce-etl.componentName" (dict "ctx" . "component" "prefect-server") -}}
{{- end -}}
{{- define "ecommerce-etl.serverApiUrl" -}}
{{- printf "http://%s:4200/api" (include "ecommerce-etl.serverName" .) -}}
{{- end -}}

{{/* initContainer that blocks until the Prefect server answers /api/health. */}}
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
{{ toYaml .Values.tests.resources | indent 4 }}
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
{{ toYaml .Values.tests.resources | indent 4 }}
{{- end -}}

{{/* ---- Database endpoints and credentials (in-chart Postgres or external) ---- */}}
{{- define "ecommerce-etl.postgresqlName" -}}
{{- include "ecommerce-etl.componentName" (dict "ctx" . "component" "postgresql") -}}
{{- end -}}

{{- define "ecommerce-etl.dbHost" -}}
{{- if .Values.postgresql.enabled -}}
{{- include "ecommerce-etl.postgresqlName" . -}}
{{- else -}}
{{- .Values.externalDatabase.host -}}
{{- end -}}
{{- end -}}

{{- define "ecommerce-etl.dbPort" -}}
{{- if .Values.postgresql.enabled -}}5432{{- else -}}{{ .Values.externalDatabase.port }}{{- end -}}
{{- end -}}

{{/* The data (etl) role and database. */}}
{{- define "ecommerce-etl.etlAuth" -}}
{{- if .Values.postgresql.enabled -}}
{{- toYaml .Values.postgresql.auth.etl -}}
{{- else -}}
{{- toYaml .Values.externalDatabase.etl -}}
{{- end -}}
{{- end -}}

{{/* Secret holding etl-password and prefect-connection-url (and, in-chart, the other passwords). */}}
{{- define "ecommerce-etl.dbSecretName" -}}
{{- if .Values.postgresql.enabled -}}
{{- default (include "ecommerce-etl.componentName" (dict "ctx" . "component" "db")) .Values.postgresql.auth.existingSecret -}}
{{- else -}}
{{- .Values.externalDatabase.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "ecommerce-etl.pgadminSecretName" -}}
{{- default (include "ecommerce-etl.componentName" (dict "ctx" . "component" "pgadmin")) .Values.pgadmin.existingSecret -}}
{{- end -}}

{{/* A password that survives upgrades: reuse the key from the live Secret, else generate. */}}
{{- define "ecommerce-etl.password" -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .secret -}}
{{- if and $existing (hasKey ($existing.data | default dict) .key) -}}
{{- index $existing.data .key | b64dec -}}
{{- else -}}
{{- randAlphaNum 32 -}}
{{- end -}}
{{- end -}}

{{/* Libpq env for the data role; the password only through secretKeyRef. */}}
{{- define "ecommerce-etl.etlDbEnv" -}}
{{- $etl := include "ecommerce-etl.etlAuth" . | fromYaml -}}
- name: PGHOST
  value: {{ include "ecommerce-etl.dbHost" . | quote }}
- name: PGPORT
  value: {{ include "ecommerce-etl.dbPort" . | quote }}
- name: PGDATABASE
  value: {{ $etl.database | quote }}
- name: PGUSER
  value: {{ $etl.username | quote }}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "ecommerce-etl.dbSecretName" . }}
      key: etl-password
{{- end -}}

{{/* ServiceAccounts. */}}
{{- define "ecommerce-etl.workerServiceAccountName" -}}
{{- include "ecommerce-etl.componentName" (dict "ctx" . "component" "worker") -}}
{{- end -}}
{{- define "ecommerce-etl.flowRunServiceAccountName" -}}
{{- include "ecommerce-etl.componentName" (dict "ctx" . "component" "flow-run") -}}
{{- end -}}

{{- define "ecommerce-etl.baseJobTemplateName" -}}
{{- include "ecommerce-etl.componentName" (dict "ctx" . "component" "base-job-template") -}}
{{- end -}}
