{{/* Names and labels. */}}
{{- define "lienthong.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "lienthong.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "gateway") */}}
{{- define "lienthong.selector" -}}
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "lienthong.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Kafka connection settings, for a container that talks to Kafka. */}}
{{- define "lienthong.kafkaEnv" -}}
- name: LIENTHONG_KAFKA_BOOTSTRAP
  value: {{ .Values.kafka.bootstrap | quote }}
- name: LIENTHONG_KAFKA_SECURITY_PROTOCOL
  value: {{ .Values.kafka.securityProtocol | quote }}
{{- if .Values.kafka.tls.caSecret }}
- name: LIENTHONG_KAFKA_TLS_CA
  value: /etc/lienthong/kafka-ca/ca.crt
{{- end }}
{{- if .Values.kafka.tls.clientCertSecret }}
- name: LIENTHONG_KAFKA_TLS_CERT
  value: /etc/lienthong/kafka-client/tls.crt
- name: LIENTHONG_KAFKA_TLS_KEY
  value: /etc/lienthong/kafka-client/tls.key
{{- end }}
{{- if hasPrefix "sasl" .Values.kafka.securityProtocol }}
- name: LIENTHONG_KAFKA_SASL_MECHANISM
  value: {{ .Values.kafka.sasl.mechanism | quote }}
- name: LIENTHONG_KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ required "kafka.sasl.secret is required with a sasl-* securityProtocol" .Values.kafka.sasl.secret }}
      key: username
- name: LIENTHONG_KAFKA_SASL_PASSWORD_FILE
  value: /etc/lienthong/kafka-sasl/password
{{- end }}
{{- end -}}

{{/* Schema registry settings, for a container that talks to the registry. */}}
{{- define "lienthong.registryEnv" -}}
- name: LIENTHONG_REGISTRY_URL
  value: {{ .Values.registry.url | quote }}
{{- if .Values.registry.tls.caSecret }}
- name: LIENTHONG_REGISTRY_TLS_CA
  value: /etc/lienthong/registry-ca/ca.crt
{{- end }}
{{- if .Values.registry.credentialsSecret }}
- name: LIENTHONG_REGISTRY_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .Values.registry.credentialsSecret }}
      key: username
- name: LIENTHONG_REGISTRY_PASSWORD_FILE
  value: /etc/lienthong/registry/password
{{- end }}
{{- end -}}

{{/* Logs and metrics, for every container. */}}
{{- define "lienthong.logEnv" -}}
- name: LIENTHONG_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: LIENTHONG_METRICS_ADDR
  value: {{ printf "0.0.0.0:%v" .Values.metricsPort | quote }}
{{- with .Values.tracing }}
{{- if .otlpEndpoint }}
- name: LIENTHONG_OTLP_ENDPOINT
  value: {{ .otlpEndpoint | quote }}
- name: LIENTHONG_TRACE_SAMPLE_RATIO
  value: {{ .sampleRatio | quote }}
{{- if .caSecret }}
- name: LIENTHONG_OTLP_CA
  value: /etc/lienthong/otlp-ca/ca.crt
{{- end }}
{{- if .clientCertSecret }}
- name: LIENTHONG_OTLP_CERT
  value: /etc/lienthong/otlp-client/tls.crt
- name: LIENTHONG_OTLP_KEY
  value: /etc/lienthong/otlp-client/tls.key
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Settings every service shares: Kafka, registry, logs, metrics. */}}
{{- define "lienthong.commonEnv" -}}
{{ include "lienthong.kafkaEnv" . }}
{{ include "lienthong.registryEnv" . }}
{{ include "lienthong.logEnv" . }}
{{- end -}}

{{- define "lienthong.commonVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.kafka.tls.caSecret }}
- name: kafka-ca
  mountPath: /etc/lienthong/kafka-ca
  readOnly: true
{{- end }}
{{- if .Values.kafka.tls.clientCertSecret }}
- name: kafka-client
  mountPath: /etc/lienthong/kafka-client
  readOnly: true
{{- end }}
{{- if hasPrefix "sasl" .Values.kafka.securityProtocol }}
- name: kafka-sasl
  mountPath: /etc/lienthong/kafka-sasl
  readOnly: true
{{- end }}
{{- if .Values.registry.credentialsSecret }}
- name: registry-credentials
  mountPath: /etc/lienthong/registry
  readOnly: true
{{- end }}
{{- if .Values.registry.tls.caSecret }}
- name: registry-ca
  mountPath: /etc/lienthong/registry-ca
  readOnly: true
{{- end }}
{{- if and .Values.tracing.otlpEndpoint .Values.tracing.caSecret }}
- name: otlp-ca
  mountPath: /etc/lienthong/otlp-ca
  readOnly: true
{{- end }}
{{- if and .Values.tracing.otlpEndpoint .Values.tracing.clientCertSecret }}
- name: otlp-client
  mountPath: /etc/lienthong/otlp-client
  readOnly: true
{{- end }}
{{- end -}}

{{- define "lienthong.commonVolumes" -}}
- name: tmp
  emptyDir: {}
{{- if .Values.kafka.tls.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.tls.caSecret }}
{{- end }}
{{- if .Values.kafka.tls.clientCertSecret }}
- name: kafka-client
  secret:
    secretName: {{ .Values.kafka.tls.clientCertSecret }}
    defaultMode: 0400
{{- end }}
{{- if hasPrefix "sasl" .Values.kafka.securityProtocol }}
- name: kafka-sasl
  secret:
    secretName: {{ .Values.kafka.sasl.secret }}
    defaultMode: 0400
    items:
      - key: password
        path: password
{{- end }}
{{- if .Values.registry.credentialsSecret }}
- name: registry-credentials
  secret:
    secretName: {{ .Values.registry.credentialsSecret }}
    defaultMode: 0400
    items:
      - key: password
        path: password
{{- end }}
{{- if .Values.registry.tls.caSecret }}
- name: registry-ca
  secret:
    secretName: {{ .Values.registry.tls.caSecret }}
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- if and .Values.tracing.otlpEndpoint .Values.tracing.caSecret }}
- name: otlp-ca
  secret:
    secretName: {{ .Values.tracing.caSecret }}
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- if and .Values.tracing.otlpEndpoint .Values.tracing.clientCertSecret }}
- name: otlp-client
  secret:
    secretName: {{ .Values.tracing.clientCertSecret }}
    defaultMode: 0400
{{- end }}
{{- end -}}

{{/* Pod-level settings shared by every workload. */}}
{{- define "lienthong.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
automountServiceAccountToken: false
{{- end -}}

{{/* TLS and caller-authentication volumes of a gRPC server: (dict "tls" .tlsSecret "ca" .clientCaSecret "crl" .clientCrlConfigMap "token" .tokenKeysConfigMap) */}}
{{- define "lienthong.serverVolumes" -}}
{{- if and .crl (not .ca) }}
{{- fail "clientCrlConfigMap revokes client certificates: set clientCaSecret too" }}
{{- end }}
- name: server-tls
  secret:
    secretName: {{ .tls }}
    defaultMode: 0400
{{- if .ca }}
- name: client-ca
  secret:
    secretName: {{ .ca }}
{{- end }}
{{- if .crl }}
- name: client-crl
  configMap:
    name: {{ .crl }}
{{- end }}
{{- if .token }}
- name: token-keys
  configMap:
    name: {{ .token }}
{{- end }}
{{- end -}}

{{- define "lienthong.serverVolumeMounts" -}}
- name: server-tls
  mountPath: /etc/lienthong/tls
  readOnly: true
{{- if .ca }}
- name: client-ca
  mountPath: /etc/lienthong/client-ca
  readOnly: true
{{- end }}
{{- if .crl }}
- name: client-crl
  mountPath: /etc/lienthong/client-crl
  readOnly: true
{{- end }}
{{- if .token }}
- name: token-keys
  mountPath: /etc/lienthong/token
  readOnly: true
{{- end }}
{{- end -}}

{{/* Server flags for TLS and caller authentication. */}}
{{- define "lienthong.serverArgs" -}}
- --tls-cert=/etc/lienthong/tls/tls.crt
- --tls-key=/etc/lienthong/tls/tls.key
{{- if .ca }}
- --client-ca=/etc/lienthong/client-ca/ca.crt
{{- end }}
{{- if .crl }}
- --client-crl=/etc/lienthong/client-crl/crl.pem
{{- end }}
{{- if .token }}
- --token-keys=/etc/lienthong/token/token-keys.json
{{- end }}
{{- end -}}

{{- define "lienthong.metricsPort" -}}
- name: metrics
  containerPort: {{ .Values.metricsPort }}
  protocol: TCP
{{- end -}}

{{/* The pseudonym key, only for the workloads that compute pseudonyms (gateway, regional
store): the env entry, the mount and the volume. */}}
{{- define "lienthong.pseudonymEnv" -}}
- name: LIENTHONG_PSEUDONYM_KEY_FILE
  value: /etc/lienthong/pseudonym/pseudonym.key
{{- end -}}
{{- define "lienthong.pseudonymMount" -}}
- name: pseudonym-key
  mountPath: /etc/lienthong/pseudonym
  readOnly: true
{{- end -}}
{{- define "lienthong.pseudonymVolume" -}}
- name: pseudonym-key
  secret:
    secretName: {{ .Values.pseudonymKey.secret }}
    defaultMode: 0400
{{- end -}}

{{/* The pod settings of one workload: the release-wide `pod` values with the workload's own
`pod` block over them. (dict "ctx" $ "pod" .Values.gateway.pod) */}}
{{- define "lienthong.podValues" -}}
{{- toYaml (mergeOverwrite (deepCopy .ctx.Values.pod) (deepCopy (default dict .pod))) }}
{{- end -}}

{{/* Extra pod labels and annotations, under the pod template's metadata (after its labels). */}}
{{- define "lienthong.podMetadata" -}}
{{- $p := include "lienthong.podValues" . | fromYaml }}
{{- with $p.labels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "lienthong.podAnnotations" -}}
{{- $p := include "lienthong.podValues" . | fromYaml }}
{{- $a := deepCopy (default dict $p.annotations) }}
{{- if hasKey . "secrets" }}
{{- $_ := set $a "checksum/mounted" (include "lienthong.mountedChecksum" .) }}
{{- end }}
{{- with $a }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* A hash over the contents of the Secrets and ConfigMaps a workload reads only at start,
as the cluster holds them at install or upgrade (Helm's lookup): a rotated password, key or
certificate, or an edited policy, changes the pod template on the next `helm upgrade` and so
restarts the pods. What the services re-read by themselves (the API servers' certificates and
client CA, token key sets, revocation lists, the facility directory) stays out, so that
renewing or editing it restarts nothing. Without a cluster
(`helm template`) lookup finds nothing and only the names count.
(dict "ctx" $ "secrets" (list ...) "configMaps" (list ...)) */}}
{{- define "lienthong.mountedChecksum" -}}
{{- $ns := .ctx.Release.Namespace }}
{{- $parts := list }}
{{- range $name := compact (default list .secrets) | uniq | sortAlpha }}
{{- $found := lookup "v1" "Secret" $ns $name }}
{{- $parts = append $parts (printf "Secret/%s=%s" $name (toJson (default dict $found.data))) }}
{{- end }}
{{- range $name := compact (default list .configMaps) | uniq | sortAlpha }}
{{- $found := lookup "v1" "ConfigMap" $ns $name }}
{{- $parts = append $parts (printf "ConfigMap/%s=%s" $name (toJson (default dict $found.data))) }}
{{- end }}
{{- join "\n" $parts | sha256sum }}
{{- end -}}

{{/* The Secrets every Kafka and registry client mounts, as a JSON list; called with the
workload's Kafka context (its own SASL secret). */}}
{{- define "lienthong.clientSecrets" -}}
{{- $s := list .Values.kafka.tls.caSecret .Values.kafka.tls.clientCertSecret .Values.registry.tls.caSecret .Values.registry.credentialsSecret }}
{{- if .Values.tracing.otlpEndpoint }}
{{- $s = concat $s (list .Values.tracing.caSecret .Values.tracing.clientCertSecret) }}
{{- end }}
{{- if hasPrefix "sasl" .Values.kafka.securityProtocol }}
{{- $s = append $s .Values.kafka.sasl.secret }}
{{- end }}
{{- toJson (compact $s) }}
{{- end -}}

{{/* Scheduling and identity of a pod: node selection, tolerations, affinity, spread, priority,
service account. */}}
{{- define "lienthong.podScheduling" -}}
{{- $p := include "lienthong.podValues" . | fromYaml }}
{{- with $p.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $p.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $p.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $p.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $p.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with (include "lienthong.serviceAccountName" .ctx) }}
serviceAccountName: {{ . }}
{{- end }}
{{- end -}}

{{/* Extra environment variables of a workload's containers. */}}
{{- define "lienthong.extraEnv" -}}
{{- $p := include "lienthong.podValues" . | fromYaml }}
{{- with $p.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The service account pods run as: the one the chart creates, or one named in values. */}}
{{- define "lienthong.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lienthong.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- .Values.serviceAccount.name }}
{{- end }}
{{- end -}}
