{{/*
Environment of Prefect processes (server and clients).
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
