{{/* Chart name (or nameOverride), cut to the 63 characters of a DNS label. */}}
{{- define "fulfillment.name" -}}
{{- .Values.nameOverride | default .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Release-qualified prefix of every object name: fullnameOverride, or <release>-<name> (the release
name alone when it already contains the name). Objects add a suffix through fulfillment.component,
which cuts this prefix so the whole name fits.
*/}}
{{- define "fulfillment.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "fulfillment.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
<fullname>-<suffix>, at most `max` characters (default 63): the prefix is cut, never the suffix,
so names stay distinct and tell what they are. Call with (dict "root" $ "suffix" "redis") and
"max" 52 for a CronJob (its Jobs add 11 characters) or a StatefulSet (its controller-revision-hash
label adds 11 to a 63-character label value).
*/}}
{{- define "fulfillment.component" -}}
{{- $max := .max | default 63 | int }}
{{- $room := sub $max (add 1 (len .suffix)) | int }}
{{- printf "%s-%s" (include "fulfillment.fullname" .root | trunc $room | trimSuffix "-") .suffix }}
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
fulfillment.io/redis-client: "true"
{{- end }}

{{/*
An image reference: <registry>/<repository>:<tag>[@<digest>]. The pipeline's images have no public
home, so a registry is required (deploy/kind sets "fulfillment"). Call with
(dict "root" $ "image" .image).
*/}}
{{- define "fulfillment.image" -}}
{{- $g := .root.Values.global.image -}}
{{- $registry := .image.registry | default $g.registry -}}
{{- if not $registry -}}
{{- fail "global.image.registry is required: no public registry carries the fulfillment images. Build and push them with `scripts/build-images --push <registry>`, then install with --set global.image.registry=<registry> --set global.image.tag=<the tag it printed> (deploy/kind/up.sh loads them into kind and sets registry=fulfillment)." -}}
{{- end -}}
{{- $tag := .image.tag | default $g.tag | default .root.Chart.AppVersion -}}
{{- printf "%s/%s:%s" $registry .image.repository $tag -}}
{{- with .image.digest }}@{{ . }}{{ end -}}
{{- end }}

{{- define "fulfillment.secretName" -}}
{{- .Values.existingSecret | default (include "fulfillment.component" (dict "root" . "suffix" "secrets")) }}
{{- end }}

{{- define "fulfillment.configName" -}}
{{- include "fulfillment.component" (dict "root" . "suffix" "config") }}
{{- end }}

{{/* The bundled Redis: Service, StatefulSet (at most 52 characters), its ConfigMap. */}}
{{- define "fulfillment.redisHost" -}}
{{- include "fulfillment.component" (dict "root" . "suffix" "redis" "max" 52) }}
{{- end }}

{{- define "fulfillment.redisHeadless" -}}
{{- include "fulfillment.component" (dict "root" . "suffix" "redis-headless") }}
{{- end }}

{{/* Mailpit's Service and Deployment (mailpit.enabled). */}}
{{- define "fulfillment.mailpitHost" -}}
{{- include "fulfillment.component" (dict "root" . "suffix" "mailpit") }}
{{- end }}

{{- define "fulfillment.apiServiceName" -}}
{{- include "fulfillment.component" (dict "root" . "suffix" "api") }}
{{- end }}

{{- define "fulfillment.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- .Values.serviceAccount.name | default (include "fulfillment.fullname" .) }}
{{- else }}
{{- .Values.serviceAccount.name | default "default" }}
{{- end }}
{{- end }}

{{/*
The bundled Redis's password, computed once per render (every template that needs it gets the same
one): redis.password, else the one already in the release's Secret (lookup; empty under
`helm template` and Argo CD, where a new one is made on every render: use existingSecret there),
else a new random one.
*/}}
{{- define "fulfillment.redisPassword" -}}
{{- if not (hasKey .Values "__redisPassword") }}
{{- $password := .Values.redis.password }}
{{- if not $password }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "fulfillment.secretName" .) }}
{{- if $existing }}
{{- $password = index $existing.data "redis-password" | default "" | b64dec }}
{{- end }}
{{- end }}
{{- $_ := set .Values "__redisPassword" ($password | default (randAlphaNum 32)) }}
{{- end }}
{{- .Values.__redisPassword }}
{{- end }}

{{/* Percent-encodes a URL's userinfo part (url.QueryEscape, with a space as %20, not +). */}}
{{- define "fulfillment.urlEscape" -}}
{{- urlquery . | replace "+" "%20" }}
{{- end }}

{{/* Decodes %XX escapes of printable ASCII (a password taken from a URL), left to right. */}}
{{- define "fulfillment.urlUnescape" -}}
{{- $hex := dict "0" 0 "1" 1 "2" 2 "3" 3 "4" 4 "5" 5 "6" 6 "7" 7 "8" 8 "9" 9 "a" 10 "b" 11 "c" 12 "d" 13 "e" 14 "f" 15 }}
{{- $pieces := regexSplit "%[0-9A-Fa-f]{2}" . -1 }}
{{- $escapes := regexFindAll "%[0-9A-Fa-f]{2}" . -1 }}
{{- range $i, $piece := $pieces }}
{{- $piece }}
{{- if lt $i (len $escapes) }}
{{- $e := index $escapes $i | lower }}
{{- $code := add (mul (index $hex (substr 1 2 $e)) 16) (index $hex (substr 2 3 $e)) }}
{{- if or (lt (int $code) 32) (gt (int $code) 126) }}
{{- fail (printf "a Redis URL's password (redis.externalUrl, redis.cluster.nodes) holds the escape %s, which is not printable ASCII; put the password in existingSecret (key redis-password) instead" (index $escapes $i)) }}
{{- end }}
{{- printf "%c" (int $code) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Whether the pipeline runs on an external Redis Cluster (redis.cluster.enabled): "true" or empty.
Fails on a combination that cannot work, so every template that asks refuses it alike.
*/}}
{{- define "fulfillment.clusterMode" -}}
{{- $c := .Values.redis.cluster }}
{{- if $c.enabled }}
{{- if .Values.redis.enabled }}
{{- fail "redis.cluster.enabled needs redis.enabled=false: the chart bundles one Redis, not a cluster. Point redis.cluster.nodes at your Redis Cluster's nodes and set redis.enabled=false" }}
{{- end }}
{{- if .Values.redis.externalUrl }}
{{- fail "redis.cluster.enabled and redis.externalUrl exclude each other: a Redis Cluster is reached through its seed nodes (redis.cluster.nodes), one Redis through externalUrl. Remove one of them" }}
{{- end }}
{{- if and (not $c.nodes) (not .Values.existingSecret) }}
{{- fail "redis.cluster.enabled needs redis.cluster.nodes: the seed URLs of the cluster (redis:// or rediss://, password percent-encoded), or existingSecret with a redis-cluster-nodes key" }}
{{- end }}
{{- "true" }}
{{- else if $c.nodes }}
{{- fail "redis.cluster.nodes is set but redis.cluster.enabled is false: set redis.cluster.enabled=true (with redis.enabled=false) to run on that Redis Cluster, or remove the nodes" }}
{{- end }}
{{- end }}

{{/*
The seeds of redis.cluster.nodes as KEDA needs them: {addresses: [host:port], tls, userinfo}.
The processes' cluster client takes one password and one scheme for every node (redis-rs refuses
seeds that differ), so the render refuses them too.
*/}}
{{- define "fulfillment.clusterSeeds" -}}
{{- $addresses := list }}
{{- $schemes := dict }}
{{- $userinfos := dict }}
{{- range .Values.redis.cluster.nodes }}
{{- $u := urlParse . }}
{{- $port := "6379" }}
{{- if contains ":" $u.host }}{{ $port = last (splitList ":" $u.host) }}{{ end }}
{{- $addresses = append $addresses (printf "%s:%s" $u.hostname $port) }}
{{- $_ := set $schemes $u.scheme true }}
{{- $_ := set $userinfos $u.userinfo true }}
{{- end }}
{{- if gt (len $schemes) 1 }}
{{- fail "redis.cluster.nodes mixes redis:// and rediss://: every seed of one cluster takes the same scheme" }}
{{- end }}
{{- if gt (len $userinfos) 1 }}
{{- fail "redis.cluster.nodes carry different passwords: the cluster client uses one for every node; give each seed the same one (or none, and put it in existingSecret's redis-password)" }}
{{- end }}
{{- dict "addresses" $addresses "tls" (hasKey $schemes "rediss") "userinfo" (keys $userinfos | first | default "") | toJson }}
{{- end }}

{{/*
The event streams the consumers read, as a JSON list: the plain STREAM on one Redis with one
partition; otherwise one `<STREAM>:{<tag>}` per partition, tags from files/partition-tags.json (the
output of `fulfillment partitions --chart-table 64`, the same table the binaries use). On a
cluster even one partition is tagged.
*/}}
{{- define "fulfillment.partitionStreams" -}}
{{- $n := int .Values.config.streamPartitions }}
{{- if and (eq $n 1) (not (include "fulfillment.clusterMode" .)) }}
{{- list .Values.config.stream | toJson }}
{{- else }}
{{- $tags := index (.Files.Get "files/partition-tags.json" | fromJson) (toString $n) }}
{{- if not $tags }}
{{- fail (printf "config.streamPartitions %d: files/partition-tags.json names no such partitions (the chart supports 1..64)" $n) }}
{{- end }}
{{- $streams := list }}
{{- range $tags }}
{{- $streams = append $streams (printf "%s:{%s}" $.Values.config.stream .) }}
{{- end }}
{{- $streams | toJson }}
{{- end }}
{{- end }}

{{/* The external Redis as KEDA needs it, from redis.externalUrl: {address, tls, db}. */}}
{{- define "fulfillment.externalRedis" -}}
{{- $u := urlParse .Values.redis.externalUrl }}
{{- $port := "6379" }}
{{- if contains ":" $u.host }}{{ $port = last (splitList ":" $u.host) }}{{ end }}
{{- dict "address" (printf "%s:%s" $u.hostname $port) "tls" (eq $u.scheme "rediss") "db" (trimPrefix "/" $u.path | default "0") | toJson }}
{{- end }}

{{/*
The data of the chart's Secret: the Redis password, the Redis URL every process reads (the bundled
Redis's with the password percent-encoded, or redis.externalUrl) or a Redis Cluster's seed URLs
(redis.cluster.nodes, comma-joined), the mail relay's URL and password (mail.smtpUrl and
mail.smtpPassword, for the notification service and the retry worker), the tokens. Also hashed into
checksum/secret, so a rotated token or password rolls the pods.
*/}}
{{- define "fulfillment.secretData" -}}
{{- if include "fulfillment.clusterMode" . }}
{{- $seeds := include "fulfillment.clusterSeeds" . | fromJson }}
{{- if contains ":" $seeds.userinfo }}
redis-password: {{ include "fulfillment.urlUnescape" (regexReplaceAll "^[^:]*:" $seeds.userinfo "") | b64enc | quote }}
{{- end }}
redis-cluster-nodes: {{ join "," .Values.redis.cluster.nodes | b64enc | quote }}
{{- else if .Values.redis.enabled }}
{{- $password := include "fulfillment.redisPassword" . }}
redis-password: {{ $password | b64enc | quote }}
redis-url: {{ printf "redis://:%s@%s:6379/0" (include "fulfillment.urlEscape" $password) (include "fulfillment.redisHost" .) | b64enc | quote }}
{{- else }}
{{- $url := required "redis.externalUrl is required when redis.enabled is false (redis:// or rediss://, password percent-encoded)" .Values.redis.externalUrl }}
{{- $u := urlParse $url }}
{{- if contains ":" $u.userinfo }}
redis-password: {{ include "fulfillment.urlUnescape" (regexReplaceAll "^[^:]*:" $u.userinfo "") | b64enc | quote }}
{{- end }}
redis-url: {{ $url | b64enc | quote }}
{{- end }}
{{- with .Values.mail.smtpUrl }}
smtp-url: {{ . | b64enc | quote }}
{{- end }}
{{- with .Values.mail.smtpPassword }}
smtp-password: {{ . | b64enc | quote }}
{{- end }}
{{- with .Values.adminToken }}
admin-token: {{ . | b64enc | quote }}
{{- end }}
{{- with .Values.apiToken }}
api-token: {{ . | b64enc | quote }}
{{- end }}
{{- end }}

{{/*
Environment of every pipeline container: the Redis URL (or a Redis Cluster's seeds) and the tokens
from the Secret, and SSL_CERT_FILE when redis.caSecret is set. Settings come from the ConfigMap
through envFrom; each template adds its consumer name.
*/}}
{{- define "fulfillment.env" -}}
{{- if include "fulfillment.clusterMode" . }}
{{- /* A Redis Cluster: its seed URLs (REDIS_URL would be ignored, so none is given). */}}
- name: REDIS_CLUSTER_NODES
  valueFrom:
    secretKeyRef:
      name: {{ include "fulfillment.secretName" . }}
      key: redis-cluster-nodes
{{- if .Values.existingSecret }}
{{- /* Seeds from a Secret made outside the chart may leave the password out: REDIS_PASSWORD, used
as is (no URL-encoding), then stands for every node's. */}}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "fulfillment.secretName" . }}
      key: redis-password
      optional: true
{{- end }}
{{- else if and .Values.existingSecret .Values.redis.enabled }}
{{- /* A Secret made outside the chart holds the password only: the processes take it as
REDIS_PASSWORD, as is (no URL-encoding), beside a URL without one. */}}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "fulfillment.secretName" . }}
      key: redis-password
- name: REDIS_URL
  value: {{ printf "redis://%s:6379/0" (include "fulfillment.redisHost" .) | quote }}
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
- name: API_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "fulfillment.secretName" . }}
      key: api-token
      optional: true
{{- with .Values.redis.caSecret.name }}
- name: SSL_CERT_FILE
  value: /etc/fulfillment/redis-ca/{{ $.Values.redis.caSecret.key }}
{{- end }}
{{- end }}

{{/*
The notification service's mail settings (its Deployment only):
- SMTP_URL: mail.smtpUrl, from the chart's Secret (key smtp-url: the URL may carry a password, as
  redis.externalUrl does); with existingSecret given as it is, which then must carry no password.
  Else Mailpit's Service when mailpit.enabled. Else none: the service only logs each message.
- SMTP_PASSWORD, beside mail.smtpUrl only: mail.smtpPassword from the chart's Secret, or the key
  smtp-password of existingSecret (optional), used as is (no URL-encoding), as REDIS_PASSWORD is.
  Never for Mailpit, which asks for no login.
- MAIL_FROM and SMTP_SEND_LEASE_MS from mail.from and mail.sendLeaseMs.
*/}}
{{- define "fulfillment.mailEnv" -}}
{{- $m := .Values.mail }}
{{- $secret := include "fulfillment.secretName" . }}
{{- if $m.smtpUrl }}
{{- if .Values.existingSecret }}
{{- if contains ":" (urlParse $m.smtpUrl).userinfo }}
{{- fail (printf "mail.smtpUrl carries a password, but with existingSecret (%s) the chart makes no Secret to keep it in: leave the password out of the URL (user@host is fine) and put it in that Secret's smtp-password key" .Values.existingSecret) }}
{{- end }}
- name: SMTP_URL
  value: {{ $m.smtpUrl | quote }}
- name: SMTP_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: smtp-password
      optional: true
{{- else }}
- name: SMTP_URL
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: smtp-url
{{- if $m.smtpPassword }}
- name: SMTP_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: smtp-password
{{- end }}
{{- end }}
{{- else if .Values.mailpit.enabled }}
- name: SMTP_URL
  value: {{ printf "smtp://%s:1025" (include "fulfillment.mailpitHost" .) | quote }}
{{- end }}
- name: MAIL_FROM
  value: {{ $m.from | quote }}
- name: SMTP_SEND_LEASE_MS
  value: {{ $m.sendLeaseMs | int64 | quote }}
{{- end }}

{{/* Volumes of every pipeline pod: the Redis CA (redis.caSecret), global and own extraVolumes. */}}
{{- define "fulfillment.volumes" -}}
{{- $root := .root }}
{{- with $root.Values.redis.caSecret.name }}
- name: redis-ca
  secret:
    secretName: {{ . }}
    items:
      - key: {{ $root.Values.redis.caSecret.key }}
        path: {{ $root.Values.redis.caSecret.key }}
{{- end }}
{{- with concat ($root.Values.global.extraVolumes | default list) (.own.extraVolumes | default list) }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "fulfillment.volumeMounts" -}}
{{- $root := .root }}
{{- if $root.Values.redis.caSecret.name }}
- name: redis-ca
  mountPath: /etc/fulfillment/redis-ca
  readOnly: true
{{- end }}
{{- with concat ($root.Values.global.extraVolumeMounts | default list) (.own.extraVolumeMounts | default list) }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Scheduling of a component's pods: priority class, node selector, tolerations, affinity (its own,
else global, else the podAntiAffinityPreset over its selector labels), topology spread (its own,
else global, each given the component's label selector). Call with
(dict "root" $ "component" "inventory" "own" $svc).
*/}}
{{- define "fulfillment.scheduling" -}}
{{- $root := .root }}
{{- $g := $root.Values.global }}
{{- $selector := include "fulfillment.selectorLabels" (dict "root" $root "component" .component) | fromYaml }}
{{- with (.own.priorityClassName | default $g.priorityClassName) }}
priorityClassName: {{ . }}
{{- end }}
{{- with (.own.nodeSelector | default $g.nodeSelector) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (.own.tolerations | default $g.tolerations) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- $affinity := .own.affinity | default $g.affinity }}
{{- if $affinity }}
affinity:
  {{- toYaml $affinity | nindent 2 }}
{{- else if eq $g.podAntiAffinityPreset "soft" }}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- toYaml $selector | nindent 14 }}
{{- else if eq $g.podAntiAffinityPreset "hard" }}
affinity:
  podAntiAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- toYaml $selector | nindent 12 }}
{{- end }}
{{- with (.own.topologySpreadConstraints | default $g.topologySpreadConstraints) }}
topologySpreadConstraints:
  {{- range . }}
  - {{ toYaml (merge (deepCopy .) (dict "labelSelector" (dict "matchLabels" $selector))) | nindent 4 | trim }}
  {{- end }}
{{- end }}
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

{{/*
Whether KEDA scales this consumer service: asked for, and keda.sh/v1alpha1 served. When KEDA is
asked for but not installed the service falls back to replicaCount (and its HPA, if enabled), and
NOTES.txt says so: never a Deployment without replicas and without an autoscaler.
*/}}
{{- define "fulfillment.kedaScaled" -}}
{{- if and .svc.enabled .svc.keda.enabled (ne .name "order") (.root.Capabilities.APIVersions.Has "keda.sh/v1alpha1") }}
{{- "true" }}
{{- end }}
{{- end }}

{{/* The consumer services that ask for KEDA, whether or not it is installed. */}}
{{- define "fulfillment.kedaWanted" -}}
{{- range $name := list "inventory" "payment" "shipping" "notification" }}
{{- $svc := include "fulfillment.serviceValues" (dict "root" $ "name" $name) | fromYaml }}
{{- if and $svc.enabled $svc.keda.enabled }}{{ $name }} {{ end }}
{{- end }}
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
READ_LINGER_US: {{ $c.readLingerUs | int64 | quote }}
MAX_IN_FLIGHT: {{ $c.maxInFlight | int64 | quote }}
RETRY_MIN_IDLE_MS: {{ .Values.retryWorker.minIdleMs | int64 | quote }}
RETRY_MAX_RETRIES: {{ .Values.retryWorker.maxRetries | int64 | quote }}
RETRY_BATCH_SIZE: {{ .Values.retryWorker.batchSize | int64 | quote }}
RETRY_INTERVAL_MS: {{ .Values.retryWorker.intervalMs | int64 | quote }}
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
WS_MAX_CONNECTIONS: {{ $c.wsMaxConnections | int64 | quote }}
STREAM_PARTITIONS: {{ $c.streamPartitions | int64 | quote }}
REDIS_WAIT_REPLICAS: {{ $c.redisWaitReplicas | int64 | quote }}
REDIS_WAIT_TIMEOUT_MS: {{ $c.redisWaitTimeoutMs | int64 | quote }}
{{- with $c.otlpEndpoint }}
OTEL_EXPORTER_OTLP_ENDPOINT: {{ . | quote }}
{{- end }}
{{- range $k, $v := $c.extraEnv }}
{{ $k }}: {{ $v | quote }}
{{- end }}
{{- end }}

{{/*
Pod annotations every pipeline pod carries: checksums of the ConfigMap's data and (when the chart
owns it) the Secret's data, so a changed setting, token or password rolls the pods.
*/}}
{{- define "fulfillment.checksums" -}}
checksum/config: {{ include "fulfillment.configData" . | sha256sum }}
{{- if not .Values.existingSecret }}
checksum/secret: {{ include "fulfillment.secretData" . | sha256sum }}
{{- end }}
{{- end }}

{{/*
The shutdown budget of a pod: the preStop sleep, then SHUTDOWN_GRACE_MS to finish what is in hand,
plus one BLOCK_MS read that may be under way. terminationGracePeriodSeconds must exceed it, or the
kubelet SIGKILLs a consumer that is still draining. Call with (dict "root" $ "own" $svc "what" "...").
*/}}
{{- define "fulfillment.checkGrace" -}}
{{- $c := .root.Values.config }}
{{- $needMs := add (mul (.own.preStopSleepSeconds | default 0) 1000) $c.shutdownGraceMs $c.blockMs }}
{{- if le (mul .own.terminationGracePeriodSeconds 1000 | int64) ($needMs | int64) }}
{{- fail (printf "%s.terminationGracePeriodSeconds (%d s) must exceed preStopSleepSeconds + config.shutdownGraceMs + config.blockMs (%d ms), or pods are killed while they drain" .what (int .own.terminationGracePeriodSeconds) (int64 $needMs)) }}
{{- end }}
{{- end }}
