{{/*
Names and labels. Component templates pass a dict: (dict "ctx" $ "component" "worker").
*/}}

{{- define "ecommerce-etl.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ecommerce-etl.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "ecommerce-etl.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Object name of a component: <fullname>-<component>, kept within 63 chars. */}}
{{- define "ecommerce-etl.componentName" -}}
{{- printf "%s-%s" (include "ecommerce-etl.fullname" .ctx | trunc (int (sub 62 (len .component))) | trimSuffix "-") .component -}}
{{- end -}}

{{/* Selector labels. NetworkPolicies select on instance + component only, because
Prefect overwrites app.kubernetes.io/name on flow-run pods. */}}
{{- define "ecommerce-etl.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ecommerce-etl.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "ecommerce-etl.labels" -}}
helm.sh/chart: {{ include "ecommerce-etl.chart" .ctx }}
{{ include "ecommerce-etl.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: {{ include "ecommerce-etl.name" .ctx }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Peer selector for NetworkPolicies: pods of this release with one of the given components. */}}
{{- define "ecommerce-etl.peer" -}}
- podSelector:
    matchExpressions:
      - key: app.kubernetes.io/instance
        operator: In
        values: [{{ .ctx.Release.Name | quote }}]
      - key: app.kubernetes.io/component
        operator: In
        values: {{ toJson .components }}
{{- end -}}

{{/* Prefect server Service and its in-cluster API URL. */}}
{{- define "ecommerce-etl.serverName" -}}
{{- include "ecommerce-etl.componentName" (dict "ctx" . "component" "prefect-server") -}}
{{- end -}}
{{- define "ecommerce-etl.serverApiUrl" -}}
{{- printf "http://%s:4200/api" (include "ecommerce-etl.serverName" .) -}}
{{- end -}}

{{- define "ecommerce-etl.postgresqlName" -}}
{{- include "ecommerce-etl.componentName" (dict "ctx" . "component" "postgresql") -}}
{{- end -}}

{{/* ServiceAccounts. */}}
{{- define "ecommerce-etl.workerServiceAccountName" -}}
{{- include "ecommerce-etl.componentName" (dict "ctx" . "component" "worker") -}}
{{- end -}}
{{- define "ecommerce-etl.flowRunServiceAccountName" -}}
{{- include "ecommerce-etl.componentName" (dict "ctx" . "component" "flow-run") -}}
{{- end -}}

{{- define "ecommerce-etl.baseJobTemplateName" -}}
{{- include "ecommerce-etl.componentName" (dict "ctx" . "component" "base-job-template") -}}
{{- end -}}
