{{- define "sizer.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sizer.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "sizer.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: worker
{{- end -}}

{{- define "sizer.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "sizer.sasl" -}}
{{- hasPrefix "SASL_" .Values.kafka.securityProtocol -}}
{{- end -}}

{{- define "sizer.tls" -}}
{{- or (eq .Values.kafka.securityProtocol "SSL") (eq .Values.kafka.securityProtocol "SASL_SSL") -}}
{{- end -}}

{{/* Kafka connection settings shared by the workers and the setup Job, and the
topics' replication: the Job creates the topics, the workers their changelogs. */}}
{{- define "sizer.kafkaEnv" -}}
{{- if gt (int .Values.topics.minInsyncReplicas) (int .Values.topics.replicationFactor) }}
{{- fail "topics.minInsyncReplicas: at most topics.replicationFactor (a write could never be acknowledged)" }}
{{- end }}
- name: SIZER_REPLICATION_FACTOR
  value: {{ .Values.topics.replicationFactor | quote }}
- name: SIZER_MIN_INSYNC_REPLICAS
  value: {{ .Values.topics.minInsyncReplicas | quote }}
- name: KAFKA_BOOTSTRAP_SERVERS
  value: {{ .Values.kafka.bootstrap | quote }}
- name: SIZER_APP_ID
  value: {{ .Values.kafka.appId | quote }}
- name: SIZER_TOPIC_PREFIX
  value: {{ .Values.kafka.topicPrefix | quote }}
- name: SIZER_SECURITY_PROTOCOL
  value: {{ .Values.kafka.securityProtocol | quote }}
- name: SIZER_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
{{- if eq (include "sizer.sasl" .) "true" }}
- name: SIZER_SASL_MECHANISM
  value: {{ .Values.kafka.sasl.mechanism | quote }}
- name: SIZER_SASL_PASSWORD_FILE
  value: /etc/sizer/kafka/password
{{- end }}
{{- if and (eq (include "sizer.tls" .) "true") .Values.kafka.tls.caSecret }}
- name: SIZER_SSL_CAFILE
  value: /etc/sizer/tls/ca.crt
{{- end }}
{{- if and (eq (include "sizer.tls" .) "true") .Values.kafka.tls.clientSecret }}
- name: SIZER_SSL_CERTFILE
  value: /etc/sizer/tls/client.crt
- name: SIZER_SSL_KEYFILE
  value: /etc/sizer/tls/client.key
{{- if .Values.kafka.tls.keyPasswordKey }}
- name: SIZER_SSL_KEY_PASSWORD_FILE
  value: /etc/sizer/tls/client.key.password
{{- end }}
{{- end }}
{{- end -}}

{{- define "sizer.securityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* A file shipped with deploy/prometheus or deploy/grafana (files/ links to it), its
job="sizer" selectors set to monitoring.job: (list . "files/NAME"). */}}
{{- define "sizer.monitoringFile" -}}
{{- $root := index . 0 -}}
{{- $job := $root.Values.monitoring.job -}}
{{- $root.Files.Get (index . 1) | replace "job=\"sizer\"" (printf "job=\"%s\"" $job) | replace "job=\\\"sizer\\\"" (printf "job=\\\"%s\\\"" $job) -}}
{{- end -}}

{{/* The TLS files of every Kafka client (the brokers' CA, the client's certificate and key),
one volume "kafka-tls" under /etc/sizer/tls: rendered only when one of them is set. */}}
{{- define "sizer.kafkaTlsFiles" -}}
{{- if and (eq (include "sizer.tls" .) "true") (or .Values.kafka.tls.caSecret .Values.kafka.tls.clientSecret) -}}
true
{{- end -}}
{{- end -}}

{{- define "sizer.kafkaTlsVolume" -}}
{{- if eq (include "sizer.kafkaTlsFiles" .) "true" }}
- name: kafka-tls
  projected:
    sources:
      {{- with .Values.kafka.tls.caSecret }}
      - secret:
          name: {{ . }}
          items:
            - {key: {{ $.Values.kafka.tls.caKey }}, path: ca.crt}
      {{- end }}
      {{- with .Values.kafka.tls.clientSecret }}
      - secret:
          name: {{ . }}
          items:
            - {key: {{ $.Values.kafka.tls.certKey }}, path: client.crt}
            - {key: {{ $.Values.kafka.tls.keyKey }}, path: client.key}
            {{- with $.Values.kafka.tls.keyPasswordKey }}
            - {key: {{ . }}, path: client.key.password}
            {{- end }}
      {{- end }}
{{- end }}
{{- end -}}

{{- define "sizer.kafkaTlsMount" -}}
{{- if eq (include "sizer.kafkaTlsFiles" .) "true" }}
- {name: kafka-tls, mountPath: /etc/sizer/tls, readOnly: true}
{{- end }}
{{- end -}}

{{/* The workers' affinity: `affinity` when given, else podAntiAffinity over nodes. */}}
{{- define "sizer.affinity" -}}
{{- if .Values.affinity }}
{{- toYaml .Values.affinity }}
{{- else if eq .Values.podAntiAffinity "hard" }}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- include "sizer.selector" . | nindent 10 }}
{{- else if eq .Values.podAntiAffinity "soft" }}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "sizer.selector" . | nindent 12 }}
{{- end }}
{{- end -}}

{{/* The ports of kafka.bootstrap, for the NetworkPolicy's egress. */}}
{{- define "sizer.bootstrapPorts" -}}
{{- $ports := list -}}
{{- range (splitList "," .Values.kafka.bootstrap) -}}
{{- $ports = append $ports (last (splitList ":" (trim .)) | int) -}}
{{- end -}}
{{- toJson ($ports | uniq) -}}
{{- end -}}

{{/* extraEnv, refusing a variable the chart sets itself: in the pod the last
definition wins, and would silently undo what the chart derives from its value (the
termination grace from shutdownTimeoutSeconds, one static member per pod, the tables
on the persistent volume, the Job's and the workers' replication alike). */}}
{{- define "sizer.extraEnv" -}}
{{- $owned := dict
  "SIZER_SHUTDOWN_TIMEOUT_S" "shutdownTimeoutSeconds (the pod's termination grace is derived from it)"
  "SIZER_GROUP_INSTANCE_ID" "the pod's namespace and name (one static group member per pod)"
  "SIZER_DATA_DIR" "persistence (the pod's persistent volume)"
  "SIZER_REPLICATION_FACTOR" "topics.replicationFactor"
  "SIZER_MIN_INSYNC_REPLICAS" "topics.minInsyncReplicas"
  "SIZER_SESSION_TIMEOUT_S" "kafka.sessionTimeoutSeconds"
  "SIZER_STANDBY_REPLICAS" "kafka.standbyReplicas"
  "SIZER_PROCESSING_GUARANTEE" "kafka.processingGuarantee"
  "SIZER_APP_ID" "kafka.appId"
  "SIZER_TOPIC_PREFIX" "kafka.topicPrefix"
  "SIZER_BOOTSTRAP" "kafka.bootstrap"
  "SIZER_SECURITY_PROTOCOL" "kafka.securityProtocol"
  "SIZER_SASL_MECHANISM" "kafka.sasl.mechanism"
  "SIZER_SASL_USERNAME" "kafka.sasl.username"
  "SIZER_SASL_PASSWORD_FILE" "kafka.sasl (a mounted Secret)"
  "SIZER_SSL_CAFILE" "kafka.tls.caSecret"
  "SIZER_SSL_CERTFILE" "kafka.tls.clientSecret"
  "SIZER_SSL_KEYFILE" "kafka.tls.clientSecret"
  "SIZER_SSL_KEY_PASSWORD_FILE" "kafka.tls.keyPasswordKey"
  "SIZER_LOG_FORMAT" "logFormat"
  "SIZER_LIVENESS_TIMEOUT_S" "livenessTimeoutSeconds"
  "SIZER_REQUIRE_REGISTRATION" "requireRegistration"
  "SIZER_WEB_HOST" "the chart (the probes and the metrics port)"
  "SIZER_WEB_PORT" "the chart (the probes and the metrics port)"
  "SIZER_SCHEMA_REGISTRY_URL" "schemaRegistry.url (the NetworkPolicy lets the workers reach it)"
  "SIZER_SCHEMA_REGISTRY_INPUTS" "schemaRegistry.inputs"
  "SIZER_SCHEMA_REGISTRY_USERNAME" "schemaRegistry.username"
  "SIZER_SCHEMA_REGISTRY_PASSWORD" "schemaRegistry.existingSecret (a mounted Secret)"
  "SIZER_SCHEMA_REGISTRY_PASSWORD_FILE" "schemaRegistry.existingSecret (a mounted Secret)"
  "SIZER_SCHEMA_REGISTRY_CAFILE" "schemaRegistry.caSecret" -}}
{{- range .Values.extraEnv }}
{{- if hasKey $owned .name }}
{{- fail (printf "extraEnv: %s is set by the chart from %s; set that instead" .name (get $owned .name)) }}
{{- end }}
{{- end }}
{{- with .Values.extraEnv }}
{{- toYaml . }}
{{- end }}
{{- end -}}

{{/* The Schema Registry's port, from schemaRegistry.url: the URL's own, else 443 for
https and 80 for http (the NetworkPolicy's egress). */}}
{{- define "sizer.registryPort" -}}
{{- $url := urlParse .Values.schemaRegistry.url -}}
{{- $host := get $url "host" -}}
{{- if regexMatch ":[0-9]+$" $host -}}
{{- last (splitList ":" $host) -}}
{{- else if eq (get $url "scheme") "https" -}}
443
{{- else -}}
80
{{- end -}}
{{- end -}}

{{/* The workers' Schema Registry settings (none without schemaRegistry.url); the
password is a file from a Secret, never an env value in the pod spec. */}}
{{- define "sizer.registryEnv" -}}
{{- with .Values.schemaRegistry }}
{{- if .url }}
- name: SIZER_SCHEMA_REGISTRY_URL
  value: {{ .url | quote }}
- name: SIZER_SCHEMA_REGISTRY_INPUTS
  value: {{ .inputs | quote }}
{{- if .username }}
{{- if not .existingSecret }}
{{- fail "schemaRegistry.existingSecret: required with schemaRegistry.username (the Secret holding its password)" }}
{{- end }}
- name: SIZER_SCHEMA_REGISTRY_USERNAME
  value: {{ .username | quote }}
- name: SIZER_SCHEMA_REGISTRY_PASSWORD_FILE
  value: /etc/sizer/schema-registry/password
{{- end }}
{{- if .caSecret }}
{{- if not (hasPrefix "https://" .url) }}
{{- fail "schemaRegistry.caSecret: set, but schemaRegistry.url is not https" }}
{{- end }}
- name: SIZER_SCHEMA_REGISTRY_CAFILE
  value: /etc/sizer/schema-registry-ca/ca.crt
{{- end }}
{{- else if or .username .existingSecret .caSecret }}
{{- fail "schemaRegistry.username, existingSecret, caSecret: set, but schemaRegistry.url is not" }}
{{- end }}
{{- end }}
{{- end -}}
