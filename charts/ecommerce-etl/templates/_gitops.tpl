{{/*
Objects that must survive tools other than Helm (Argo CD, Flux, `helm template | kubectl apply`).
*/}}

{{/* Name of a Job or Pod whose spec Kubernetes will not change once it exists (the secrets Job, the
helm test pods): <fullname>-<component>-<8 hex of the chart version and the values>. Any change
of values or chart gives a new name, so `kubectl apply` of a new rendering creates a new object
instead of failing on an immutable field; Helm deletes the old hook objects itself. */}}
{{- define "ecommerce-etl.versionedName" -}}
{{- include "ecommerce-etl.contentName" (dict "ctx" .ctx "component" .component "content" (toJson .ctx.Values)) -}}
{{- end -}}

{{/* Like versionedName, but named by .content instead of all the values: a Job that should run
again only when what it depends on changes. .content must hold everything its rendered spec is
made of, so that an unchanged name always means an unchanged spec. */}}
{{- define "ecommerce-etl.contentName" -}}
{{- $hash := printf "%s|%s|%s" .ctx.Chart.Version .ctx.Release.Name .content | sha256sum | trunc 8 -}}
{{- printf "%s-%s" (include "ecommerce-etl.componentName" (dict "ctx" .ctx "component" .component) | trunc 54 | trimSuffix "-") $hash -}}
{{- end -}}

{{/* Annotations of every Secret the secrets hook generates: Helm never deletes it, Argo CD (with
any tracking method, label tracking included) neither prunes it nor reports it out of sync, and
Flux never prunes it. Without them a sync could delete the passwords PostgreSQL was initialised
with, and the next hook run would generate new ones. */}}
{{- define "ecommerce-etl.generatedSecretAnnotations" -}}
{{- dict "helm.sh/resource-policy" "keep" "argocd.argoproj.io/sync-options" "Prune=false" "argocd.argoproj.io/compare-options" "IgnoreExtraneous" "kustomize.toolkit.fluxcd.io/prune" "disabled" | toJson -}}
{{- end -}}
