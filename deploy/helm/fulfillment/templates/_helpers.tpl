{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "fulfillment.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name; the release name alone when it already contains the chart name. */}}
{{- define "fulfillment.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "fulfillment.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels of a component: name, instance and component only (they never change). */}}
{{- define "fulfillment.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fulfillment.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Every label of a component's objects. Call with (dict "root" $ "component" "inventory"). */}}
{{- define "fulfillment.labels" -}}
{{ include "fulfillment.selectorLabels" . }}
app.kubernetes.io/part-of: fulfillment
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ include "fulfillment.chart" .root }}
{{- end }}

{{/* Marks the pods allowed to reach Redis (the NetworkPolicy selects on it). */}}
{{- define "fulfillment.redisClientLabel" -}}
{{ include "fulfillment.name" . }}.io/redis-client: "true"
{{- end }}

{{/* An image reference. Call with (dict "root" $ "image" .image). */}}
{{- define "fulfillment.image" -}}
{{- $g := .root.Values.global.image -}}
{{- $registry := .image.registry | default $g.registry -}}
{{- $tag := .image.tag | default $g.tag | default .root.Chart.AppVersion -}}
{{- if $registry }}{{ printf "%s/%s:%s" $registry .image.repository $tag }}{{ else }}{{ printf "%s:%s" .image.repository $tag }}{{ end }}
{{- end }}

{{- define "fulfillment.secretName" -}}
{{- .Values.existingSecret | default (printf "%s-secrets" (include "fulfillment.fullname" .)) }}
{{- end }}

{{- define "fulfillment.redisHost" -}}
{{- printf "%s-redis" (include "fulfillment.fullname" .) }}
{{- end }}

{{- define "fulfillment.apiServiceName" -}}
{{- printf "%s-api" (include "fulfillment.fullname" .) }}
{{- end }}

{{/*
Environment of every pipeline container: Redis URL (with the password from the Secret) and the
admin token. Settings come from the ConfigMap through envFrom; each template adds its consumer name.
*/}}
{{- define "fulfillment.env" -}}
{{- if .Values.redis.enabled }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "fulfillment.secretName" . }}
      key: redis-password
- name: REDIS_URL
  value: {{ printf "redis://:$(REDIS_PASSWORD)@%s:6379/0" (include "fulfillment.redisHost" .) | quote }}
{{- else }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "fulfillment.secretName" . }}
      key: redis-url
{{- end }}
- name: ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "fulfillment.secretName" . }}
      key: admin-token
      optional: true
{{- end }}

{{/* A service's values: its own block over serviceDefaults. Call with (dict "root" $ "name" "inventory"). */}}
{{- define "fulfillment.serviceValues" -}}
{{- $own := index .root.Values.services .name -}}
{{- toYaml (mergeOverwrite (deepCopy .root.Values.serviceDefaults) (deepCopy $own)) }}
{{- end }}

{{/* The consumer group of a service. */}}
{{- define "fulfillment.group" -}}
{{- printf "%s_group" . }}
{{- end }}

{{/* The ConfigMap's data; also hashed into checksum/config so a change rolls the pods. Numbers go
through int64: YAML numbers are floats to Helm, and quote would write 604800000 as 6.048e+08. */}}
{{- define "fulfillment.configData" -}}
{{- $c := .Values.config -}}
STREAM: {{ $c.stream | quote }}
DLQ_STREAM: {{ $c.dlqStream | quote }}
LOG_FORMAT: {{ $c.logFormat | quote }}
RUST_LOG: {{ $c.rustLog | quote }}
HTTP_ADDR: "0.0.0.0:8080"
BATCH_SIZE: {{ $c.batchSize | int64 | quote }}
BLOCK_MS: {{ $c.blockMs | int64 | quote }}
MAX_IN_FLIGHT: {{ $c.maxInFlight | int64 | quote }}
RETRY_MIN_IDLE_MS: {{ .Values.retryWorker.minIdleMs | int64 | quote }}
RETRY_MAX_RETRIES: {{ .Values.retryWorker.maxRetries | int64 | quote }}
RETRY_BATCH_SIZE: {{ .Values.retryWorker.batchSize | int64 | quote }}
CONSUMER_GONE_AFTER_MS: {{ $c.consumerGoneAfterMs | int64 | quote }}
STREAM_RETENTION_MS: {{ $c.streamRetentionMs | int64 | quote }}
ORDER_RETENTION_MS: {{ $c.orderRetentionMs | int64 | quote }}
INVENTORY_FAILURE_RATE: {{ $c.inventoryFailureRate | quote }}
INVENTORY_ACK_LOSS_RATE: {{ $c.inventoryAckLossRate | quote }}
PAYMENT_FAILURE_RATE: {{ $c.paymentFailureRate | quote }}
PAYMENT_MAX_ATTEMPTS: {{ $c.paymentMaxAttempts | int64 | quote }}
SEED_CATALOG: {{ $c.seedCatalog | quote }}
SHUTDOWN_GRACE_MS: {{ $c.shutdownGraceMs | int64 | quote }}
HTTP_REQUEST_TIMEOUT_MS: {{ $c.httpRequestTimeoutMs | int64 | quote }}
HTTP_MAX_IN_FLIGHT: {{ $c.httpMaxInFlight | int64 | quote }}
{{- with $c.otlpEndpoint }}
OTEL_EXPORTER_OTLP_ENDPOINT: {{ . | quote }}
{{- end }}
{{- range $k, $v := $c.extraEnv }}
{{ $k }}: {{ $v | quote }}
{{- end }}
{{- end }}
