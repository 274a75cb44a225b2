{{/*
Pieces every pod spec shares: image references, pull secrets, scheduling, the writable /tmp,
secrets as files, and checkov's skip annotations.
*/}}

{{/* repository:tag of an image block, tag falling back to .default; @digest appended when set
(the digest then decides what runs). */}}
{{- define "ecommerce-etl.imageRef" -}}
{{- $ref := printf "%s:%s" .image.repository (default .default .image.tag | toString) -}}
{{- if .image.digest -}}{{- $ref = printf "%s@%s" $ref .image.digest -}}{{- end -}}
{{- $ref -}}
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

{{/*
Secrets as files. A pod spec holds no secret value and no secretKeyRef env: each Secret key is
a file (group-readable through fsGroup). Programs that read a file themselves get its path
(POSTGRES_PASSWORD_FILE, PGADMIN_DEFAULT_PASSWORD_FILE, PGPASSWORD_FILE,
ETL_ALERT_WEBHOOK_URL_FILE). Prefect reads its settings only from the environment, so its
processes start through envFromFiles.command, which exports each file of
/etc/ecommerce-etl/env as the variable it is named after, then execs the real command.
.items: a list of (dict "env" NAME "secret" SECRET "key" KEY).
*/}}
{{- define "ecommerce-etl.envFromFiles.command" -}}
- sh
- -c
- {{ `for f in /etc/ecommerce-etl/env/*; do if [ -f "$f" ]; then export "${f##*/}=$(cat "$f")"; fi; done; exec "$@"` | toJson }}
- sh
{{- end -}}
{{- define "ecommerce-etl.envFromFiles.volume" -}}
- name: secret-env
  projected:
    defaultMode: 0440
    sources:
{{- range .items }}
      - secret:
          name: {{ .secret }}
          items:
            - key: {{ .key }}
              path: {{ .env }}
{{- end }}
{{- end -}}
{{- define "ecommerce-etl.envFromFiles.mount" -}}
- name: secret-env
  mountPath: /etc/ecommerce-etl/env
  readOnly: true
{{- end -}}

{{/* A Secret's keys as files under /etc/ecommerce-etl/secrets/<volume name>/. */}}
{{- define "ecommerce-etl.secretFiles.volume" -}}
- name: {{ .name }}
  secret:
    secretName: {{ .secret }}
    defaultMode: 0440
    items:
{{- range .keys }}
      - key: {{ . }}
        path: {{ . }}
{{- end }}
{{- end -}}
{{- define "ecommerce-etl.secretFiles.mount" -}}
- name: {{ .name }}
  mountPath: {{ printf "/etc/ecommerce-etl/secrets/%s" .name }}
  readOnly: true
{{- end -}}

{{/*
checkov's skip annotations (checkov.io/skipN: CHECK=reason) for a workload, so that a user's
own checkov run on the rendered chart is clean and shows why. .images: the image blocks the
pod runs; .extraEnv: {value name: its env list} (a secretKeyRef there is the user's choice);
.skips: further "CHECK=reason" entries that apply to this workload.
*/}}
{{- define "ecommerce-etl.checkovSkips" -}}
{{- $skips := list -}}
{{- range .images -}}
{{- if not .digest -}}
{{- $skips = append $skips "CKV_K8S_43=images are pinned by tag; set the image's digest value (image.digest, postgresql.image.digest, ...) to pin them by digest" -}}
{{- end -}}
{{- if ne .pullPolicy "Always" -}}
{{- $skips = append $skips "CKV_K8S_15=the pull policy comes from values (IfNotPresent by default: tags are pinned, and images loaded into kind cannot be pulled); set pullPolicy Always to re-pull on every start" -}}
{{- end -}}
{{- end -}}
{{- range $value, $env := .extraEnv | default dict -}}
{{- range $env -}}
{{- if and .valueFrom .valueFrom.secretKeyRef -}}
{{- $skips = append $skips (printf "CKV_K8S_35=%s passes a Secret as an environment variable, as configured in values" $value) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $lines := list -}}
{{- range $i, $skip := concat (uniq $skips) (.skips | default list) -}}
{{- $lines = append $lines (printf "checkov.io/skip%d: %s" (add1 $i) ($skip | quote)) -}}
{{- end -}}
{{- join "\n" $lines -}}
{{- end -}}

{{- define "ecommerce-etl.skip.oneShotProbes" -}}
{{- list "CKV_K8S_8=a helm test pod runs once to completion: a liveness probe has nothing to watch" "CKV_K8S_9=a helm test pod runs once to completion: no traffic is routed to it, so no readiness probe" | toJson -}}
{{- end -}}
