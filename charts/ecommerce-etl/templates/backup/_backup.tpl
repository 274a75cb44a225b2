{{/*
Backups of the in-chart PostgreSQL: the scripts of files/backup/ (ConfigMap <fullname>-backup)
run in the postgres image, as its postgres user, with the superuser's password as a file.
*/}}

{{- define "ecommerce-etl.backup.enabled" -}}
{{- if and .Values.postgresql.enabled .Values.backup.enabled }}true{{ end -}}
{{- end -}}

{{- define "ecommerce-etl.backup.name" -}}
{{- include "ecommerce-etl.componentName" (dict "ctx" . "component" "backup") -}}
{{- end -}}

{{- define "ecommerce-etl.backup.claimName" -}}
{{- default (include "ecommerce-etl.backup.name" .) .Values.backup.persistence.existingClaim -}}
{{- end -}}

{{/* Databases a backup holds: Prefect's metadata and the pipeline's data. */}}
{{- define "ecommerce-etl.backup.databases" -}}
{{- $auth := .Values.postgresql.auth -}}
{{- printf "%s %s" $auth.prefect.database $auth.etl.database -}}
{{- end -}}

{{/* The pod spec of a backup, restore or restore-check pod. .ctx: the root context; .script: the
file of files/backup/ it runs; .env: extra env entries. */}}
{{- define "ecommerce-etl.backup.podSpec" -}}
{{- $ := .ctx -}}
{{- $pg := $.Values.postgresql -}}
restartPolicy: Never
serviceAccountName: {{ include "ecommerce-etl.flowRunServiceAccountName" $ }}
automountServiceAccountToken: false
{{- with $.Values.imagePullSecrets }}
imagePullSecrets:
{{ toYaml . }}
{{- end }}
# The postgres image's own user (uid 999): the dumps are its files.
securityContext:
{{ include "ecommerce-etl.podSecurityContext" (dict "uid" 999) | indent 2 }}
{{ include "ecommerce-etl.scheduling" $pg }}
containers:
  - name: {{ trimSuffix ".sh" .script }}
    image: {{ include "ecommerce-etl.imageRef" (dict "image" $pg.image "default" "") }}
    imagePullPolicy: {{ $pg.image.pullPolicy }}
    command: [bash, {{ printf "/etc/ecommerce-etl/backup/%s" .script | quote }}]
    env:
      - name: PGHOST
        value: {{ include "ecommerce-etl.postgresqlName" $ | quote }}
      - name: PGPORT
        value: "5432"
      - name: PGUSER
        value: postgres
      - name: PGPASSWORD_FILE
        value: /etc/ecommerce-etl/secrets/db/postgres-password
      - name: BACKUP_ROOT
        value: /backups
      - name: BACKUP_DATABASES
        value: {{ include "ecommerce-etl.backup.databases" $ | quote }}
      - name: BACKUP_KEEP
        value: {{ $.Values.backup.keep | quote }}
      {{- with .env }}
{{ toYaml . | indent 6 }}
      {{- end }}
    resources:
{{ toYaml $.Values.backup.resources | indent 6 }}
    securityContext:
{{ include "ecommerce-etl.containerSecurityContext" (dict "readOnlyRoot" true) | indent 6 }}
    volumeMounts:
      - name: scripts
        mountPath: /etc/ecommerce-etl/backup
        readOnly: true
      - name: backups
        mountPath: /backups
{{ include "ecommerce-etl.secretFiles.mount" (dict "name" "db") | indent 6 }}
{{ include "ecommerce-etl.tmpMount" $ | indent 6 }}
volumes:
  - name: scripts
    configMap:
      name: {{ include "ecommerce-etl.backup.name" $ }}
      defaultMode: 0555
  - name: backups
    persistentVolumeClaim:
      claimName: {{ include "ecommerce-etl.backup.claimName" $ }}
{{ include "ecommerce-etl.secretFiles.volume" (dict "name" "db" "secret" (include "ecommerce-etl.dbSecretName" $) "keys" (list "postgres-password")) | indent 2 }}
{{ include "ecommerce-etl.tmpVolume" (dict) | indent 2 }}
{{- end -}}

{{/* The spec of the Job that backs up at install and at every change that matters (job.yaml), which
also names it: every field of it is in its name's hash. */}}
{{- define "ecommerce-etl.backup.changeJobSpec" -}}
backoffLimit: 2
activeDeadlineSeconds: {{ .Values.backup.activeDeadlineSeconds }}
template:
  metadata:
    labels:
{{ include "ecommerce-etl.labels" (dict "ctx" . "component" "backup") | indent 6 }}
  spec:
{{ include "ecommerce-etl.backup.podSpec" (dict "ctx" . "script" "backup.sh" "env" (list (dict "name" "BACKUP_WAIT_SECONDS" "value" "900") (dict "name" "BACKUP_KIND" "value" "change"))) | indent 4 }}
{{- end -}}

{{/* The Job a user creates to restore a backup into the release (UPGRADING.md, "Restoring a
backup"): kept as restore-job.yaml in the backup ConfigMap, not rendered as an object. */}}
{{- define "ecommerce-etl.backup.restoreJob" -}}
apiVersion: batch/v1
kind: Job
metadata:
  generateName: {{ printf "%s-restore-" (include "ecommerce-etl.fullname" . | trunc 45 | trimSuffix "-") }}
  namespace: {{ .Release.Namespace }}
  # Created by hand, not by Helm; the labels let it through the backup NetworkPolicy. A GitOps
  # tool that tracks the release by its instance label must neither prune nor report it.
  labels:
{{ include "ecommerce-etl.selectorLabels" (dict "ctx" . "component" "backup") | indent 4 }}
  annotations:
    argocd.argoproj.io/sync-options: Prune=false
    argocd.argoproj.io/compare-options: IgnoreExtraneous
spec:
  backoffLimit: 0
  activeDeadlineSeconds: {{ .Values.backup.activeDeadlineSeconds }}
  ttlSecondsAfterFinished: 604800
  template:
    metadata:
      labels:
{{ include "ecommerce-etl.selectorLabels" (dict "ctx" . "component" "backup") | indent 8 }}
    spec:
{{ include "ecommerce-etl.backup.podSpec" (dict "ctx" . "script" "restore.sh" "env" (list (dict "name" "BACKUP" "value" "latest") (dict "name" "RESTORE_DATABASES" "value" ""))) | indent 6 }}
{{- end -}}
