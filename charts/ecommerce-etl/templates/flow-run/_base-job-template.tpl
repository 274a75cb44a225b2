{{/*
The kubernetes work pool's base job template (prefect-kubernetes format), as YAML.
Starts from KubernetesWorker.get_default_base_job_template(), minus cluster_config
(the worker runs in-cluster). Strings like "{{ env }}" are Prefect placeholders,
filled by the worker per flow run.

The container env is a literal list, not the "{{ env }}" placeholder; prefect-kubernetes
prepends its own env (PREFECT__FLOW_RUN_ID, the job_variables env, ...) to a literal list and
drops our entries it overrides. The data password is a file of a Secret volume
(PGPASSWORD_FILE), never an env value.

Placement (node_selector, tolerations, affinity, pod_annotations) and the Job's annotations are
variables with the chart's values as defaults, so a deployment or a single run can override
them through job_variables.
*/}}
{{- define "ecommerce-etl.baseJobTemplate" -}}
{{- $fr := .Values.flowRun -}}
{{- $p := dict
    "command" "{{ command }}" "env" "{{ env }}" "labels" "{{ labels }}" "name" "{{ name }}"
    "annotations" "{{ annotations }}" "namespace" "{{ namespace }}" "image" "{{ image }}"
-}}
job_configuration:
  command: {{ $p.command | quote }}
  env: {{ $p.env | quote }}
  labels: {{ $p.labels | quote }}
  name: {{ $p.name | quote }}
  annotations: {{ $p.annotations | quote }}
  namespace: {{ $p.namespace | quote }}
  job_watch_timeout_seconds: "{{ "{{ job_watch_timeout_seconds }}" }}"
  pod_watch_timeout_seconds: "{{ "{{ pod_watch_timeout_seconds }}" }}"
  stream_output: "{{ "{{ stream_output }}" }}"
  job_manifest:
    apiVersion: batch/v1
    kind: Job
    metadata:
      annotations: {{ $p.annotations | quote }}
      generateName: "{{ "{{ name }}" }}-"
      namespace: {{ $p.namespace | quote }}
      labels:
{{ include "ecommerce-etl.labels" (dict "ctx" . "component" "flow-run") | indent 8 }}
    spec:
      backoffLimit: "{{ "{{ backoff_limit }}" }}"
      ttlSecondsAfterFinished: "{{ "{{ finished_job_ttl }}" }}"
      template:
        metadata:
          # NetworkPolicies select flow-run pods by instance + component.
          labels:
{{ include "ecommerce-etl.selectorLabels" (dict "ctx" . "component" "flow-run") | indent 12 }}
          annotations: "{{ "{{ pod_annotations }}" }}"
        spec:
          # prefect-kubernetes requires these two keys here (it validates the manifest
          # against a base that has them); the API server drops them as unknown fields.
          parallelism: 1
          completions: 1
          restartPolicy: Never
          serviceAccountName: "{{ "{{ service_account_name }}" }}"
          # Flow runs never call the Kubernetes API.
          automountServiceAccountToken: false
          nodeSelector: "{{ "{{ node_selector }}" }}"
          tolerations: "{{ "{{ tolerations }}" }}"
          affinity: "{{ "{{ affinity }}" }}"
{{- with .Values.imagePullSecrets }}
          imagePullSecrets:
{{ toYaml . | indent 12 }}
{{- end }}
          securityContext:
{{ include "ecommerce-etl.flowPodSecurityContext" . | indent 12 }}
          containers:
            - name: prefect-job
              image: {{ $p.image | quote }}
              imagePullPolicy: "{{ "{{ image_pull_policy }}" }}"
              args: {{ $p.command | quote }}
              env:
{{ include "ecommerce-etl.flowRunEnv" . | indent 16 }}
              resources:
                requests:
                  cpu: "{{ "{{ cpu_request }}" }}"
                  memory: "{{ "{{ memory_request }}" }}"
                limits:
                  cpu: "{{ "{{ cpu_limit }}" }}"
                  memory: "{{ "{{ memory_limit }}" }}"
              securityContext:
{{ include "ecommerce-etl.flowContainerSecurityContext" . | indent 16 }}
              volumeMounts:
{{ include "ecommerce-etl.secretFiles.mount" (dict "name" "db") | indent 16 }}
{{- if .Values.kaggle.existingSecret }}
{{ include "ecommerce-etl.secretFiles.mount" (dict "name" "kaggle") | indent 16 }}
{{- end }}
{{ include "ecommerce-etl.tmpMount" . | indent 16 }}
          volumes:
{{ include "ecommerce-etl.etlPasswordVolume" . | indent 12 }}
{{- with .Values.kaggle }}{{ if .existingSecret }}
            - name: kaggle
              secret:
                secretName: {{ .existingSecret }}
                defaultMode: 0440
                optional: true
                items:
                  - {key: {{ .usernameKey }}, path: {{ .usernameKey }}}
                  - {key: {{ .keyKey }}, path: {{ .keyKey }}}
{{- end }}{{ end }}
{{ include "ecommerce-etl.tmpVolume" (dict "sizeLimit" $fr.tmpSizeLimit) | indent 12 }}
variables:
  description: Variables of the ecommerce-etl kubernetes work pool; defaults come from the Helm values.
  type: object
  properties:
    name:
      anyOf: [{type: string}, {type: "null"}]
      default: null
      title: Name
      description: Name given to infrastructure created by a worker.
    env:
      type: object
      title: Environment Variables
      description: Environment variables to set when starting a flow run (added to, and overriding, the chart's).
      additionalProperties:
        anyOf: [{type: string}, {type: "null"}]
    labels:
      type: object
      title: Labels
      description: Labels applied to infrastructure created by a worker.
      additionalProperties: {type: string}
    command:
      anyOf: [{type: string}, {type: "null"}]
      default: null
      title: Command
      description: The command to use when starting a flow run; blank lets the worker generate it.
    annotations:
      type: object
      title: Annotations
      description: Annotations of the Job (checkov's reasons by default).
      additionalProperties: {type: string}
      default:
{{ include "ecommerce-etl.checkovSkips" (dict "images" (list .Values.image) "extraEnv" (dict "flowRun.extraEnv" $fr.extraEnv)) | indent 8 }}
    pod_annotations:
      type: object
      title: Pod Annotations
      description: Annotations of the flow-run pod.
      additionalProperties: {type: string}
      default: {{ toJson $fr.podAnnotations }}
    node_selector:
      type: object
      title: Node Selector
      description: nodeSelector of the flow-run pod.
      additionalProperties: {type: string}
      default: {{ toJson $fr.nodeSelector }}
    tolerations:
      type: array
      title: Tolerations
      description: Tolerations of the flow-run pod (by default also how long it stays on a lost node).
      items: {type: object}
      default: {{ include "ecommerce-etl.flowRunTolerations" . }}
    affinity:
      type: object
      title: Affinity
      description: Affinity of the flow-run pod.
      default: {{ toJson $fr.affinity }}
    namespace:
      type: string
      default: {{ .Release.Namespace | quote }}
      title: Namespace
      description: The Kubernetes namespace to create jobs within.
    image:
      anyOf: [{type: string}, {type: "null"}]
      default: {{ include "ecommerce-etl.flowImage" . | quote }}
      title: Image
      description: The flow image for created jobs.
    service_account_name:
      anyOf: [{type: string}, {type: "null"}]
      default: {{ include "ecommerce-etl.flowRunServiceAccountName" . | quote }}
      title: Service Account Name
      description: The Kubernetes service account of flow-run pods.
    image_pull_policy:
      type: string
      enum: [IfNotPresent, Always, Never]
      default: {{ .Values.image.pullPolicy | quote }}
      title: Image Pull Policy
      description: The Kubernetes image pull policy to use for job containers.
    backoff_limit:
      type: integer
      minimum: 0
      default: {{ $fr.backoffLimit }}
      title: Backoff Limit
      description: Times Kubernetes retries a job after pod eviction; 0 lets Prefect reschedule the flow run.
    finished_job_ttl:
      anyOf: [{type: integer}, {type: "null"}]
      default: {{ $fr.ttlSecondsAfterFinished }}
      title: Finished Job TTL
      description: Seconds to retain jobs after completion.
    job_watch_timeout_seconds:
      anyOf: [{type: integer}, {type: "null"}]
      default: null
      title: Job Watch Timeout Seconds
      description: Seconds to wait for each event emitted by a job; null waits indefinitely.
    pod_watch_timeout_seconds:
      type: integer
      default: 60
      title: Pod Watch Timeout Seconds
      description: Not read by prefect-kubernetes 0.8.0; the "run not started" alert reports pods that never start.
    stream_output:
      type: boolean
      default: true
      title: Stream Output
      description: If set, output will be streamed from the job to the worker's standard output.
    cpu_request:
      anyOf: [{type: string}, {type: "null"}]
      default: {{ $fr.resources.requests.cpu | toString | quote }}
      title: CPU Request
      description: CPU request of the flow-run container (Kubernetes quantity).
    cpu_limit:
      anyOf: [{type: string}, {type: "null"}]
      default: {{ $fr.resources.limits.cpu | toString | quote }}
      title: CPU Limit
      description: CPU limit of the flow-run container (Kubernetes quantity).
    memory_request:
      anyOf: [{type: string}, {type: "null"}]
      default: {{ $fr.resources.requests.memory | toString | quote }}
      title: Memory Request
      description: Memory request of the flow-run container (Kubernetes quantity).
    memory_limit:
      anyOf: [{type: string}, {type: "null"}]
      default: {{ $fr.resources.limits.memory | toString | quote }}
      title: Memory Limit
      description: Memory limit of the flow-run container (Kubernetes quantity).
{{- end -}}

{{/* COPY connections per file: flowRun.copyParallelism, else the in-chart PostgreSQL container's CPU limit
(rounded up) plus one, as flows.settings.copy_segments_for does for a local server; empty when neither is
known (an external database: the loader's default). */}}
{{- define "ecommerce-etl.copyParallelism" -}}
{{- $fr := .Values.flowRun -}}
{{- $pg := .Values.postgresql -}}
{{- $cpu := "" -}}
{{- if $pg.enabled -}}{{- $cpu = (dig "limits" "cpu" "" ($pg.resources | default dict)) | toString -}}{{- end -}}
{{- if gt (int ($fr.copyParallelism | default 0)) 0 -}}
{{- $fr.copyParallelism -}}
{{- else if $cpu -}}
{{- $cores := ternary (divf (trimSuffix "m" $cpu | float64) 1000.0) ($cpu | float64) (hasSuffix "m" $cpu) -}}
{{- add1 (max 1 (ceil $cores | int)) -}}
{{- end -}}
{{- end -}}

{{/* Env of flow-run containers: database (libpq, the password as a file), pipeline settings,
the quarantine alert threshold, optional Kaggle creds. */}}
{{- define "ecommerce-etl.flowRunEnv" -}}
{{ include "ecommerce-etl.etlDbEnv" . }}
- name: PGPASSWORD_FILE
  value: {{ include "ecommerce-etl.etlPasswordFile" . }}
- name: ETL_TABLE
  value: {{ .Values.flowRun.table | quote }}
- name: ETL_DATA_DIR
  value: /tmp/data
{{- if .Values.alerts.enabled }}
# Above this quarantined share a loaded file emits ecommerce.file.quarantine-high (its alert).
- name: ETL_ALERT_QUARANTINE_RATIO
  value: {{ .Values.alerts.quarantineRatio | toString | quote }}
{{- end }}
{{ include "ecommerce-etl.prefectBaseEnv" . }}
- name: ETL_MAX_PARALLEL_FILES
  value: {{ .Values.flowRun.maxParallelFiles | quote }}
# A crashed load-file run is run again by its pipeline run (flows/recovery.py).
- name: ETL_FILE_RETRIES
  value: {{ .Values.flowRun.fileRetries | quote }}
- name: ETL_RETRY_DELAY_SECONDS
  value: {{ .Values.flowRun.retryDelaySeconds | quote }}
{{- with include "ecommerce-etl.copyParallelism" . }}
# COPY connections per file: flowRun.copyParallelism, or one more than the PostgreSQL container's CPU limit.
- name: ETL_COPY_PARALLELISM
  value: {{ . | quote }}
{{- end }}
{{- if .Values.flowRun.fanOut }}
# One load-file deployment run (its own Job) per file; the name `ecommerce-etl deploy` registers.
- name: ETL_FILE_DEPLOYMENT
  value: "load-file/load-file"
{{- end }}
{{- if .Values.kaggle.existingSecret }}
# Files of the optional kaggle volume (absent files mean no credentials: the sample needs none).
- name: KAGGLE_USERNAME_FILE
  value: /etc/ecommerce-etl/secrets/kaggle/{{ .Values.kaggle.usernameKey }}
- name: KAGGLE_KEY_FILE
  value: /etc/ecommerce-etl/secrets/kaggle/{{ .Values.kaggle.keyKey }}
{{- end }}
{{- with .Values.flowRun.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}


{{/* flowRun.tolerations, plus (unless they name these keys themselves) how long a flow-run pod stays
bound to a node that stopped answering: flowRun.nodeLostSeconds instead of Kubernetes' 300 s, so a run
on a lost node is evicted, reported Crashed and re-run elsewhere sooner. JSON. */}}
{{- define "ecommerce-etl.flowRunTolerations" -}}
{{- $fr := .Values.flowRun -}}
{{- $own := list -}}
{{- range $fr.tolerations }}{{ $own = append $own (.key | default "") }}{{ end -}}
{{- $all := list -}}
{{- range $key := list "node.kubernetes.io/not-ready" "node.kubernetes.io/unreachable" -}}
{{- if not (has $key $own) -}}
{{- $all = append $all (dict "key" $key "operator" "Exists" "effect" "NoExecute" "tolerationSeconds" (int $fr.nodeLostSeconds)) -}}
{{- end -}}
{{- end -}}
{{- concat $all $fr.tolerations | toJson -}}
{{- end -}}
