{{/* The release's name for its objects: the release name when it contains "doorman", else <release>-doorman. */}}
{{- define "doorman.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels of every object; "component" names the part (webhook, checker, redis). */}}
{{- define "doorman.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "doorman.selectorLabels" . }}
app.kubernetes.io/part-of: doorman
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end }}

{{- define "doorman.selectorLabels" -}}
app.kubernetes.io/name: {{ include "doorman.fullname" .root }}-{{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end }}

{{/* The doorman image, by digest when one is given. */}}
{{- define "doorman.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* certManager, generate or secret: what webhook.tls.mode (auto by default) comes to in this cluster. */}}
{{- define "doorman.tlsMode" -}}
{{- $mode := .Values.webhook.tls.mode }}
{{- if eq $mode "auto" }}
{{- ternary "certManager" "generate" (.Capabilities.APIVersions.Has "cert-manager.io/v1") }}
{{- else }}
{{- $mode }}
{{- end }}
{{- end }}

{{/* The host name the API server calls the webhook by, and checks its certificate against. */}}
{{- define "doorman.webhookHost" -}}
{{- printf "%s-webhook.%s.svc" (include "doorman.fullname" .) .Release.Namespace }}
{{- end }}

{{/* The checker's DOORMAN_REGISTRY, as an env entry. */}}
{{- define "doorman.registryEnv" -}}
- name: DOORMAN_REGISTRY
{{- if .Values.registry.existingSecret.name }}
  valueFrom:
    secretKeyRef:
      name: {{ .Values.registry.existingSecret.name }}
      key: {{ .Values.registry.existingSecret.key }}
{{- else if .Values.registry.url }}
  value: {{ .Values.registry.url | quote }}
{{- else if .Values.redis.enabled }}
  {{- /* By its short name: it resolves in the checker's own namespace. */}}
  value: {{ printf "redis://%s-redis:6379" (include "doorman.fullname" .) | quote }}
{{- else }}
{{- fail "the checker needs a registry: set registry.url or registry.existingSecret.name, or redis.enabled=true (or checker.enabled=false)" }}
{{- end }}
{{- end }}

{{/* The security context of doorman's containers: non-root, read-only, no capabilities (Pod Security "restricted"). */}}
{{- define "doorman.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end }}

{{/* Scheduling values shared by the webhook and the checker. */}}
{{- define "doorman.scheduling" -}}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
