{{/*
Refusals for a release's later life (issue 17), added to ecommerce-etl.validate's list: settings
that render a broken release, the PostgreSQL major version, and, where `helm upgrade` can look at
the installed release (`lookup` finds nothing under `helm template`, so GitOps renders skip these),
changes a StatefulSet or an initialised database cannot take. Returns a JSON list of messages.
*/}}
{{- define "ecommerce-etl.validate.lifecycle" -}}
{{- $errors := list -}}
{{- $v := .Values -}}
{{- $srv := $v.prefectServer -}}
{{- if $srv.ingress.enabled -}}
  {{- if regexMatch "^https?://(localhost|127\\.0\\.0\\.1|\\[::1\\])(:[0-9]+)?(/|$)" $srv.uiApiUrl -}}
    {{- $errors = append $errors (printf "prefectServer.ingress.enabled=true with prefectServer.uiApiUrl=%s: the UI served at %s would call the API on each visitor's own machine. Set prefectServer.uiApiUrl=/api (the UI and its API share the Ingress host; kubectl port-forward keeps working with it)." $srv.uiApiUrl $srv.ingress.host) -}}
  {{- end -}}
  {{- if and $v.networkPolicy.enabled (not $v.networkPolicy.serverExtraFrom) -}}
    {{- $errors = append $errors "prefectServer.ingress.enabled=true with networkPolicy.enabled=true and no networkPolicy.serverExtraFrom: the release's NetworkPolicies let no ingress controller reach the Prefect server, so the Ingress would only answer with gateway errors. Add your controller's pods to networkPolicy.serverExtraFrom (e.g. [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ingress-nginx}}}]), or set networkPolicy.enabled=false." -}}
  {{- end -}}
{{- end -}}
{{- if $v.postgresql.enabled -}}
  {{- $tag := toString $v.postgresql.image.tag -}}
  {{- $major := regexFind "^[0-9]+" $tag -}}
  {{- if not $major -}}
    {{- $errors = append $errors (printf "postgresql.image.tag=%s does not start with the PostgreSQL major version (e.g. 18.1-bookworm): the chart needs it to keep the data directory's major version and the image's in step. To move to another major version, follow UPGRADING.md, \"PostgreSQL major upgrade\"." $tag) -}}
  {{- else if lt (atoi $major) 18 -}}
    {{- $errors = append $errors (printf "postgresql.image.tag=%s is PostgreSQL %s: the chart keeps its data in the layout of the official image 18 and later (/var/lib/postgresql/<major>/docker), and an image of 17 or older would start a new, empty cluster in /var/lib/postgresql/data beside it, so every file would load again into nothing. Use 18 or later; to change the major version of an installed release, follow UPGRADING.md, \"PostgreSQL major upgrade\"." $tag $major) -}}
  {{- end -}}
  {{- $errors = concat $errors (include "ecommerce-etl.validate.installed" . | fromJsonArray) -}}
{{- end -}}
{{- toJson $errors -}}
{{- end -}}

{{/* What the installed release fixes for good, read with `lookup` (empty under `helm template`). */}}
{{- define "ecommerce-etl.validate.installed" -}}
{{- $errors := list -}}
{{- $pg := .Values.postgresql -}}
{{- $sts := lookup "apps/v1" "StatefulSet" .Release.Namespace (include "ecommerce-etl.postgresqlName" .) -}}
{{- range (dig "spec" "volumeClaimTemplates" list $sts) -}}
  {{- if eq .metadata.name "data" -}}
    {{- $was := .spec -}}
    {{- $size := dig "resources" "requests" "storage" "" $was -}}
    {{- if ne (include "ecommerce-etl.bytes" $size) (include "ecommerce-etl.bytes" (toString $pg.persistence.size)) -}}
      {{- $errors = append $errors (printf "postgresql.persistence.size changed from %s to %v: a StatefulSet's volumeClaimTemplates cannot change, so this upgrade would fail. Grow the volume as UPGRADING.md, \"Volume size, class or access modes\", describes (the claim first, then the StatefulSet)." $size $pg.persistence.size) -}}
    {{- end -}}
    {{- if ne (dig "storageClassName" "" $was) $pg.persistence.storageClass -}}
      {{- $errors = append $errors (printf "postgresql.persistence.storageClass changed from %q to %q: an existing volume cannot move to another class. Move the data through a backup as UPGRADING.md, \"Volume size, class or access modes\", describes." (dig "storageClassName" "" $was) $pg.persistence.storageClass) -}}
    {{- end -}}
    {{- if ne (toJson (dig "accessModes" list $was)) (toJson $pg.persistence.accessModes) -}}
      {{- $errors = append $errors (printf "postgresql.persistence.accessModes changed from %s to %s: a StatefulSet's volumeClaimTemplates cannot change. Move the data through a backup as UPGRADING.md, \"Volume size, class or access modes\", describes." (toJson (dig "accessModes" list $was)) (toJson $pg.persistence.accessModes)) -}}
    {{- end -}}
  {{- end -}}
{{- end -}}
{{- $init := lookup "v1" "ConfigMap" .Release.Namespace (include "ecommerce-etl.componentName" (dict "ctx" . "component" "postgresql-initdb")) -}}
{{- $script := dig "data" "10-ecommerce-etl.sh" "" $init -}}
{{- range $key, $value := dict "prefect_user" $pg.auth.prefect.username "prefect_db" $pg.auth.prefect.database "etl_user" $pg.auth.etl.username "etl_db" $pg.auth.etl.database -}}
  {{- $was := regexFind (printf "%s=\"[^\"]*\"" $key) $script | trimPrefix (printf "%s=" $key) | trimAll "\"" -}}
  {{- if and $was (ne $was $value) -}}
    {{- $errors = append $errors (printf "postgresql.auth.%s.%s changed from %s to %s: roles and databases are created once, when PostgreSQL first initialises its data directory, so the release would log in as a role or use a database that does not exist. Rename them as UPGRADING.md, \"Role and database names\", describes, or keep %s." (ternary "prefect" "etl" (hasPrefix "prefect" $key)) (ternary "username" "database" (hasSuffix "user" $key)) $was $value $was) -}}
  {{- end -}}
{{- end -}}
{{- toJson $errors -}}
{{- end -}}

{{/* A storage quantity in bytes, as text, so "8Gi" and "8192Mi" compare equal. */}}
{{- define "ecommerce-etl.bytes" -}}
{{- $q := toString . -}}
{{- $number := regexFind "^[0-9.]+" $q -}}
{{- $unit := trimPrefix $number $q -}}
{{- $factor := dict "" 1.0 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "P" 1e15 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "Pi" 1125899906842624.0 -}}
{{- if hasKey $factor $unit -}}
{{- mulf (float64 $number) (get $factor $unit) | printf "%.0f" -}}
{{- else -}}
{{- $q -}}
{{- end -}}
{{- end -}}
