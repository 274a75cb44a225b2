{{/*
Pieces every pod spec shares: image references, pull secrets, scheduling, the writable /tmp.
*/}}

{{/* repository:tag of an image block; tag falls back to .default. */}}
{{- define "ecommerce-etl.imageRef" -}}
{{- printf "%s:%s" .image.repository (default .default .image.tag | toString) -}}
{{- end -}}

{{- define "ecommerce-etl.flowImage" -}}
{{- include "ecommerce-etl.imageRef" (dict "image" .Values.image "default" .Chart.AppVersion) -}}
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
