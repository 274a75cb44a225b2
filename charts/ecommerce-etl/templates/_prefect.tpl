{{/*
Prefect: the environment of its processes, the server's URLs, basic auth and retention.
*/}}

{{/* What every Prefect process of this chart gets: its home on the writable /tmp, and no
telemetry (there may be no network to send it to). */}}
{{- define "ecommerce-etl.prefectBaseEnv" -}}
- name: PREFECT_HOME
  value: /tmp/prefect
- name: PREFECT_SERVER_ANALYTICS_ENABLED
  value: "false"
{{- end -}}

{{/* Env every Prefect client process of the flow image gets. */}}
{{- define "ecommerce-etl.prefectClientEnv" -}}
- name: PREFECT_API_URL
  value: {{ include "ecommerce-etl.serverApiUrl" . | quote }}
{{ include "ecommerce-etl.prefectBaseEnv" . }}
{{- end -}}

{{/* The UI as users open it (alert messages link there): prefectServer.uiUrl, else the
Ingress, else an absolute uiApiUrl without /api, else the port-forward address. */}}
{{- define "ecommerce-etl.uiUrl" -}}
{{- $srv := .Values.prefectServer -}}
{{- if $srv.uiUrl -}}
{{- $srv.uiUrl | trimSuffix "/" -}}
{{- else if $srv.ingress.enabled -}}
{{- printf "%s://%s" (ternary "https" "http" (not (empty $srv.ingress.tls.secretName))) $srv.ingress.host -}}
{{- else if hasPrefix "http" $srv.uiApiUrl -}}
{{- $srv.uiApiUrl | trimSuffix "/api" -}}
{{- else -}}
http://localhost:4200
{{- end -}}
{{- end -}}

{{/* Basic auth: the Secret and key holding "user:password". */}}
{{- define "ecommerce-etl.basicAuthSecretName" -}}
{{- default (include "ecommerce-etl.componentName" (dict "ctx" . "component" "basic-auth")) .Values.prefectServer.basicAuth.existingSecret -}}
{{- end -}}
{{- define "ecommerce-etl.basicAuthKey" -}}auth-string{{- end -}}

{{/* Secret-backed env of a Prefect client (worker, hook, helm test): the auth string when
basic auth is on. JSON list for envFromFiles. */}}
{{- define "ecommerce-etl.clientSecretEnv" -}}
{{- $items := list -}}
{{- if .Values.prefectServer.basicAuth.enabled -}}
{{- $items = append $items (dict "env" "PREFECT_API_AUTH_STRING" "secret" (include "ecommerce-etl.basicAuthSecretName" .) "key" (include "ecommerce-etl.basicAuthKey" .)) -}}
{{- end -}}
{{- toJson $items -}}
{{- end -}}

{{/* Secret-backed env of the server: its database URL, and the auth string it requires. */}}
{{- define "ecommerce-etl.serverSecretEnv" -}}
{{- $items := list (dict "env" "PREFECT_SERVER_DATABASE_CONNECTION_URL" "secret" (include "ecommerce-etl.dbSecretName" .) "key" "prefect-connection-url") -}}
{{- if .Values.prefectServer.basicAuth.enabled -}}
{{- $items = append $items (dict "env" "PREFECT_SERVER_API_AUTH_STRING" "secret" (include "ecommerce-etl.basicAuthSecretName" .) "key" (include "ecommerce-etl.basicAuthKey" .)) -}}
{{- end -}}
{{- toJson $items -}}
{{- end -}}

{{/* Retention (Prefect 3.9 settings, prefect/settings/models/server/services.py and events.py):
the DB vacuum service deletes ended flow runs (with their logs and artifacts) older than
flowRunDays by end time, and events older than eventDays. */}}
{{- define "ecommerce-etl.retentionEnv" -}}
{{- $r := .Values.prefectServer.retention -}}
- name: PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED
  value: {{ ternary "events,flow_runs" "events" (gt (int $r.flowRunDays) 0) | quote }}
{{- if gt (int $r.flowRunDays) 0 }}
# seconds (SecondsTimeDelta)
- name: PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD
  value: {{ mul (int $r.flowRunDays) 86400 | quote }}
{{- end }}
# a plain timedelta setting: ISO 8601 (it does not read a bare number of seconds)
- name: PREFECT_SERVER_EVENTS_RETENTION_PERIOD
  value: {{ printf "P%dD" (int $r.eventDays) | quote }}
{{- end -}}
