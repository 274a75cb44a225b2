{{/*
Prometheus monitoring: the exporter's names, the CRD gates and the alert rules.
*/}}

{{- define "ecommerce-etl.metricsName" -}}
{{- include "ecommerce-etl.componentName" (dict "ctx" . "component" "metrics") -}}
{{- end -}}

{{/* "true" when an Operator object of .kind is rendered: metrics on, and its values block enabled
with the CRD served by the cluster, or forced (helm template and GitOps render without a cluster). */}}
{{- define "ecommerce-etl.monitoringObject" -}}
{{- $m := .ctx.Values.metrics -}}
{{- $values := index $m (ternary "serviceMonitor" "prometheusRule" (eq .kind "ServiceMonitor")) -}}
{{- if and $m.enabled (or $values.force (and $values.enabled (.ctx.Capabilities.APIVersions.Has (printf "monitoring.coreos.com/v1/%s" .kind)))) -}}
true
{{- end -}}
{{- end -}}

{{/* Seconds of a duration value ("90s", "15m", "26h", "2d"); the schema admits only these forms. */}}
{{- define "ecommerce-etl.seconds" -}}
{{- $number := regexFind "^[0-9]+" . | int -}}
{{- $unit := trimPrefix (toString $number) . -}}
{{- mul $number (get (dict "s" 1 "m" 60 "h" 3600 "d" 86400) $unit) -}}
{{- end -}}

{{/* Label matchers of the exporter's and the server's series, as Prometheus labels them from the
ServiceMonitor (job = the Service's name). */}}
{{- define "ecommerce-etl.exporterMatchers" -}}
{{- printf "namespace=%q, job=%q" .Release.Namespace (include "ecommerce-etl.metricsName" .) -}}
{{- end -}}
{{- define "ecommerce-etl.serverMatchers" -}}
{{- printf "namespace=%q, job=%q" .Release.Namespace (include "ecommerce-etl.serverName" .) -}}
{{- end -}}

{{/* The PostgreSQL data volume's claim (the StatefulSet's volumeClaimTemplate "data", pod 0). */}}
{{- define "ecommerce-etl.postgresqlClaim" -}}
{{- printf "data-%s-0" (include "ecommerce-etl.postgresqlName" .) -}}
{{- end -}}

{{/* The alert rules: the groups of the PrometheusRule (tests and the kind Prometheus read them from
the rendered object). Each description says what to do. */}}
{{- define "ecommerce-etl.alertRuleGroups" -}}
{{- $r := .Values.metrics.prometheusRule -}}
{{- $exp := include "ecommerce-etl.exporterMatchers" . -}}
{{- $srv := include "ecommerce-etl.serverMatchers" . -}}
{{- $labels := dict "warning" (merge (dict "severity" "warning") $r.alertLabels) "critical" (merge (dict "severity" "critical") $r.alertLabels) -}}
- name: ecommerce-etl-data
  rules:
    - alert: EcommerceEtlDataStale
      expr: time() - max by (namespace, schema, table) (ecommerce_etl_last_success_timestamp_seconds{ {{- $exp -}} }) > {{ include "ecommerce-etl.seconds" .Values.metrics.staleAfter }}
      for: 5m
      labels:
{{ toYaml $labels.warning | indent 8 }}
      annotations:
        summary: {{ `'{{ $labels.schema }}.{{ $labels.table }}: no file loaded or found unchanged for {{ $value | humanizeDuration }}'` }}
        description: {{ printf "No run has loaded a file of this table, or found its files unchanged, for longer than metrics.staleAfter (%s). Check that the schedule runs (the kaggle deployment, deployments.schedule) and the latest runs of the ecommerce-etl flow in the Prefect UI; EcommerceEtlFileFailed or EcommerceEtlRunsWaiting usually say why." .Values.metrics.staleAfter | quote }}
    - alert: EcommerceEtlFileFailed
      expr: max by (namespace, schema, table, file) (ecommerce_etl_file_outcome{ {{- $exp -}}, status="failed"}) == 1
      labels:
{{ toYaml $labels.warning | indent 8 }}
      annotations:
        summary: {{ `'{{ $labels.file }} failed to load into {{ $labels.schema }}.{{ $labels.table }}'` }}
        description: "The latest attempt at this file failed and nothing of it was committed (its earlier rows, if any, stay). The failed run's summary artifact and the ecommerce.file.failed event in the Prefect UI give the reason (a wrong header, an unreadable file, a download error). Fix the file or the source, then run the pipeline again: the alert resolves when the file loads or is found unchanged."
    - alert: EcommerceEtlQuarantineHigh
      expr: max by (namespace, schema, table, file) (ecommerce_etl_file_rows_quarantined{ {{- $exp -}} } / (ecommerce_etl_file_rows_loaded{ {{- $exp -}} } + ecommerce_etl_file_rows_quarantined{ {{- $exp -}} })) > {{ $r.quarantineRatio }}
      labels:
{{ toYaml $labels.warning | indent 8 }}
      annotations:
        summary: {{ `'{{ $labels.file }}: {{ $value | humanizePercentage }} of its rows quarantined'` }}
        description: {{ printf "The quarantined share of this file's rows is above metrics.prometheusRule.quarantineRatio (%v). The rows are in the %s_quarantine table with their reason and raw text (query it for the file, or read the run's quarantine artifact); ecommerce_etl_quarantined_rows_by_reason shows the reason classes. Correct the source and load the file again, or raise the ratio if the share is expected." $r.quarantineRatio .Values.flowRun.table | quote }}
- name: ecommerce-etl-runs
  rules:
    - alert: EcommerceEtlRunsWaiting
      expr: max by (namespace, deployment, state) (ecommerce_etl_flow_runs_waiting_oldest_seconds{ {{- $exp -}} }) > {{ include "ecommerce-etl.seconds" $r.runsWaitingFor }}
      labels:
{{ toYaml $labels.warning | indent 8 }}
      annotations:
        summary: {{ `'{{ $labels.deployment }}: a run has been {{ $labels.state }} for {{ $value | humanizeDuration }}'` }}
        description: "Late: no worker polls the work pool (see EcommerceEtlWorkerAbsent). Pending: the run's Job was created but its pod does not start (kubectl describe the Job's pod: quota, image pull, unschedulable). AwaitingConcurrencySlot: earlier runs of the deployment still hold its concurrency limit (deployments.concurrencyLimit, flowRun.maxParallelFiles); look for a run stuck in Running."
    - alert: EcommerceEtlPrefectServerDown
      expr: (sum by (namespace, job) (up{ {{- $srv -}} }) == 0) or absent(up{ {{- $srv -}} })
      for: {{ $r.serverDownFor }}
      labels:
{{ toYaml $labels.critical | indent 8 }}
      annotations:
        summary: "The Prefect server does not answer its scrape"
        description: "No replica of the Prefect server answered /api/metrics: the API and the UI are down (or Prometheus cannot reach them: the ServiceMonitor, the NetworkPolicy's metrics.networkPolicy peers, basic-auth credentials). Runs cannot start or report, and Prefect's own automations cannot alert. kubectl get pods and the server's logs; its database (PostgreSQL) must be up."
    - alert: EcommerceEtlWorkerAbsent
      expr: sum by (namespace, work_pool) (ecommerce_etl_work_pool_workers{ {{- $exp -}}, work_pool={{ .Values.workPool.name | quote }}, status="online"}) < 1
      for: {{ $r.workerAbsentFor }}
      labels:
{{ toYaml $labels.critical | indent 8 }}
      annotations:
        summary: {{ `'No worker polls the work pool {{ $labels.work_pool }}'` }}
        description: "No worker has sent a heartbeat recently, so no flow run will start (they turn Late). Check the worker Deployment (kubectl get pods, its logs): it must reach the Prefect API, with the auth string when basic auth is on."
    - alert: EcommerceEtlMetricsUnavailable
      expr: (max by (namespace, job) (up{ {{- $exp -}} }) == 0) or (min by (namespace, job, source) (ecommerce_etl_exporter_source_up{ {{- $exp -}} }) == 0) or absent(up{ {{- $exp -}} })
      for: 10m
      labels:
{{ toYaml $labels.warning | indent 8 }}
      annotations:
        summary: "The ecommerce-etl metrics exporter cannot be scraped, or cannot read a source"
        description: "The other ecommerce-etl alerts are blind while this fires. The exporter's log names the source it cannot read (the database: the etl role and its password; the Prefect API: the URL and the auth string)."
{{- if .Values.postgresql.enabled }}
- name: ecommerce-etl-storage
  rules:
    - alert: EcommerceEtlPostgresVolumeFull
      expr: max by (namespace, persistentvolumeclaim) (kubelet_volume_stats_used_bytes{namespace={{ .Release.Namespace | quote }}, persistentvolumeclaim={{ include "ecommerce-etl.postgresqlClaim" . | quote }}} / kubelet_volume_stats_capacity_bytes{namespace={{ .Release.Namespace | quote }}, persistentvolumeclaim={{ include "ecommerce-etl.postgresqlClaim" . | quote }}}) > {{ $r.volumeFullRatio }}
      for: 5m
      labels:
{{ toYaml $labels.warning | indent 8 }}
      annotations:
        summary: {{ `'PostgreSQL volume {{ $labels.persistentvolumeclaim }} is {{ $value | humanizePercentage }} full'` }}
        description: "A full volume stops every load and the Prefect server. Grow the PVC (postgresql.persistence.size, if its StorageClass allows expansion), remove what is no longer needed (ecommerce-etl forget FILE; shorter prefectServer.retention), or move to a larger volume from a backup."
{{- end }}
{{- end -}}
