{{/*
Registration of the work pool, the deployments and the alert automations (`ecommerce-etl deploy`,
idempotent) as an initContainer of the worker: it runs wherever the worker runs, whether the tool
that applies the chart runs Helm hooks or not (Helm, Argo CD, Flux, `helm template | kubectl
apply`), and every worker pod polls only a pool registered with its own base job template. Any
change of what is registered changes the worker's pod template, so a rollout registers again.
*/}}

{{- define "ecommerce-etl.register.container" -}}
{{- $d := .Values.deployments -}}
{{- $alerts := .Values.alerts -}}
{{- $secretEnv := include "ecommerce-etl.clientSecretEnv" . | fromJsonArray -}}
- name: register-deployments
  image: {{ include "ecommerce-etl.flowImage" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command:
    {{- if $secretEnv }}
{{ include "ecommerce-etl.envFromFiles.command" . | indent 4 }}
    {{- end }}
    - ecommerce-etl
    - deploy
    - --pool
    - {{ .Values.workPool.name | quote }}
    - --base-job-template
    - /etc/ecommerce-etl/pool/base-job-template.json
    - --concurrency-limit
    - {{ $d.concurrencyLimit | quote }}
    {{- with $d.schedule }}
    - --schedule
    - {{ . | quote }}
    {{- end }}
    {{- with $d.timezone }}
    - --timezone
    - {{ . | quote }}
    {{- end }}
    - --max-parallel-files
    - {{ .Values.flowRun.maxParallelFiles | quote }}
    {{- if gt (int $d.sampleRows) 0 }}
    - --sample-rows
    - {{ $d.sampleRows | quote }}
    {{- end }}
  env:
{{ include "ecommerce-etl.prefectClientEnv" . | indent 4 }}
    # The alert automations (flows/alerts.py); the webhook URL only as a file.
    - name: ETL_ALERTS_ENABLED
      value: {{ $alerts.enabled | quote }}
    - name: ETL_ALERT_PENDING_MINUTES
      value: {{ $alerts.pendingMinutes | quote }}
    - name: ETL_ALERT_RUNNING_MINUTES
      value: {{ $alerts.runningMinutes | quote }}
    - name: ETL_ALERT_CRASHED_MINUTES
      value: {{ $alerts.crashedMinutes | quote }}
    {{- if $alerts.webhook.existingSecret }}
    - name: ETL_ALERT_WEBHOOK_URL_FILE
      value: {{ printf "/etc/ecommerce-etl/secrets/alert-webhook/%s" $alerts.webhook.key | quote }}
    {{- end }}
  resources:
{{ toYaml $d.registration.resources | indent 4 }}
  securityContext:
{{ include "ecommerce-etl.flowContainerSecurityContext" . | indent 4 }}
  volumeMounts:
    - name: base-job-template
      mountPath: /etc/ecommerce-etl/pool
      readOnly: true
    {{- if $alerts.webhook.existingSecret }}
{{ include "ecommerce-etl.secretFiles.mount" (dict "name" "alert-webhook") | indent 4 }}
    {{- end }}
    {{- if $secretEnv }}
{{ include "ecommerce-etl.envFromFiles.mount" . | indent 4 }}
    {{- end }}
{{ include "ecommerce-etl.tmpMount" . | indent 4 }}
{{- end -}}

{{/* The volumes only the registration needs (the worker has the others). */}}
{{- define "ecommerce-etl.register.volumes" -}}
{{- $alerts := .Values.alerts -}}
{{- if $alerts.webhook.existingSecret }}
{{ include "ecommerce-etl.secretFiles.volume" (dict "name" "alert-webhook" "secret" $alerts.webhook.existingSecret "keys" (list $alerts.webhook.key)) }}
{{- end }}
{{- end -}}
