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
