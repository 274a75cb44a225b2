{{/*
Security contexts meeting Pod Security "restricted".
*/}}

{{/* The uid (and gid) the flow image runs as: the Dockerfile's APP_UID, which
scripts/build-image.sh sets from this value. The Prefect server runs as it too. */}}
{{- define "ecommerce-etl.appUid" -}}
{{- .Values.image.uid -}}
{{- end -}}

{{/* Pod-level securityContext; .uid is the image's user. */}}
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

{{/* The flow image's securityContexts (the app uid, read-only root). */}}
{{- define "ecommerce-etl.flowPodSecurityContext" -}}
{{ include "ecommerce-etl.podSecurityContext" (dict "uid" (include "ecommerce-etl.appUid" .)) }}
{{- end -}}
{{- define "ecommerce-etl.flowContainerSecurityContext" -}}
{{ include "ecommerce-etl.containerSecurityContext" (dict "readOnlyRoot" true) }}
{{- end -}}
