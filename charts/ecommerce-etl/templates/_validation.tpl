{{/*
Contradictory values fail the render with one message per problem.
values.schema.json handles types and shapes; this file handles combinations.
*/}}
{{- define "ecommerce-etl.validate" -}}
{{- $errors := list -}}
{{- $v := .Values -}}
{{- if not $v.postgresql.enabled -}}
  {{- if not $v.externalDatabase.host -}}
    {{- $errors = append $errors "postgresql.enabled=false requires externalDatabase.host (the managed PostgreSQL server to use)." -}}
  {{- end -}}
  {{- if not $v.externalDatabase.existingSecret -}}
    {{- $errors = append $errors "postgresql.enabled=false requires externalDatabase.existingSecret (a Secret with keys etl-password and prefect-connection-url); the chart cannot generate passwords for a database it does not run." -}}
  {{- end -}}
  {{- if $v.postgresql.auth.existingSecret -}}
    {{- $errors = append $errors "postgresql.auth.existingSecret is set but postgresql.enabled=false: put the credentials in externalDatabase.existingSecret instead." -}}
  {{- end -}}
  {{- if ($v.postgresql.bulkLoadTuning | default dict).enabled -}}
    {{- $errors = append $errors "postgresql.bulkLoadTuning.enabled=true but postgresql.enabled=false: the chart cannot tune a database it does not run; set wal_level=minimal and max_wal_senders=0 on the managed server instead, if it has no replicas or WAL archiving." -}}
  {{- end -}}
{{- else -}}
  {{- if $v.externalDatabase.host -}}
    {{- $errors = append $errors "externalDatabase.host is set but postgresql.enabled=true: set postgresql.enabled=false to use an external database, or unset externalDatabase.host." -}}
  {{- end -}}
  {{- if $v.externalDatabase.existingSecret -}}
    {{- $errors = append $errors "externalDatabase.existingSecret is set but postgresql.enabled=true: use postgresql.auth.existingSecret for the in-chart database." -}}
  {{- end -}}
  {{- if eq $v.postgresql.auth.prefect.database $v.postgresql.auth.etl.database -}}
    {{- $errors = append $errors "postgresql.auth.prefect.database and postgresql.auth.etl.database must differ: each role reaches only its own database." -}}
  {{- end -}}
  {{- if eq $v.postgresql.auth.prefect.username $v.postgresql.auth.etl.username -}}
    {{- $errors = append $errors "postgresql.auth.prefect.username and postgresql.auth.etl.username must differ: each role reaches only its own database." -}}
  {{- end -}}
{{- end -}}
{{- if and (not $v.pgadmin.enabled) $v.pgadmin.existingSecret -}}
  {{- $errors = append $errors "pgadmin.existingSecret is set but pgadmin.enabled=false." -}}
{{- end -}}
{{- if and $v.prefectServer.basicAuth.existingSecret (not $v.prefectServer.basicAuth.enabled) -}}
  {{- $errors = append $errors "prefectServer.basicAuth.existingSecret is set but prefectServer.basicAuth.enabled=false: set enabled=true to require the auth string." -}}
{{- end -}}
{{- if and $v.alerts.webhook.existingSecret (not $v.alerts.enabled) -}}
  {{- $errors = append $errors "alerts.webhook.existingSecret is set but alerts.enabled=false: set alerts.enabled=true to register the automations that post to it." -}}
{{- end -}}
{{- range $name := list "pendingMinutes" "runningMinutes" "crashedMinutes" -}}
  {{- $minutes := index $v.alerts $name | float64 -}}
  {{- if and (gt $minutes 0.0) (lt (mulf $minutes 60.0) 10.0) -}}
    {{- $errors = append $errors (printf "alerts.%s=%v is below 10 seconds, the shortest wait Prefect can watch for: use 0.17 or more, or 0 to switch this alert off." $name $minutes) -}}
  {{- end -}}
{{- end -}}
{{- if and $v.deployments.timezone (not $v.deployments.schedule) -}}
  {{- $errors = append $errors "deployments.timezone is set but deployments.schedule is empty: a timezone only applies to a schedule." -}}
{{- end -}}
{{- $srvHA := .Values.prefectServer -}}
{{- if le (int $srvHA.replicas) 1 -}}
  {{- if or $srvHA.redis.host $srvHA.redis.existingSecret -}}
    {{- $errors = append $errors "prefectServer.redis is set but prefectServer.replicas is 1: Redis is only used by a server with more than one replica (set replicas: 2 or more, or unset prefectServer.redis)." -}}
  {{- end -}}
{{- else if ge (int $srvHA.ha.minAvailable) (int $srvHA.replicas) -}}
  {{- $errors = append $errors (printf "prefectServer.ha.minAvailable=%d leaves no API pod to evict with prefectServer.replicas=%d, so every node drain would block: use a smaller minAvailable or more replicas." (int $srvHA.ha.minAvailable) (int $srvHA.replicas)) -}}
{{- end -}}
{{- $errors = concat $errors (include "ecommerce-etl.validate.lifecycle" . | fromJsonArray) -}}
{{- if $errors -}}
{{- fail (printf "\n\nInvalid values for ecommerce-etl:\n  - %s\n" (join "\n  - " $errors)) -}}
{{- end -}}
{{- end -}}
