{{/*
Database wiring: endpoints and the data role, for the in-chart Postgres or an external one.
Credentials travel only as secretKeyRef.
*/}}

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

{{/* Libpq env for the data role. The password is a file of the Secret volume
(etlPasswordVolume), never an env value or a secretKeyRef. */}}
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
{{- end -}}

{{/* The data role's password as the file /etc/ecommerce-etl/secrets/db/etl-password. */}}
{{- define "ecommerce-etl.etlPasswordVolume" -}}
{{ include "ecommerce-etl.secretFiles.volume" (dict "name" "db" "secret" (include "ecommerce-etl.dbSecretName" .) "keys" (list "etl-password")) }}
{{- end -}}
{{- define "ecommerce-etl.etlPasswordFile" -}}/etc/ecommerce-etl/secrets/db/etl-password{{- end -}}
