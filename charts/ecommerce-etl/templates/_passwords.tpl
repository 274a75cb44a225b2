{{/*
Generated passwords and the Secrets that hold them.
*/}}

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
