{{/*
partroute.name is the chart's name, the app.kubernetes.io/name of every object and the job the
ServiceMonitor scrapes as.
*/}}
{{- define "partroute.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
partroute.fullname names the objects. It is cut to 54 characters so that the Services' names,
which add a suffix of up to 8, stay within Kubernetes' 63.
*/}}
{{- define "partroute.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 54 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
partroute.selectorLabels select the release's pods. They are the pods' only labels besides
podLabels, so that an upgrade of the chart alone does not restart them.
*/}}
{{- define "partroute.selectorLabels" -}}
app.kubernetes.io/name: {{ include "partroute.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "partroute.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "partroute.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "partroute.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "partroute.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "partroute.configMapName" -}}
{{- .Values.config.existingConfigMap | default (printf "%s-config" (include "partroute.fullname" .)) }}
{{- end }}

{{- define "partroute.namingConfigMapName" -}}
{{- .Values.naming.existingConfigMap | default (printf "%s-naming" (include "partroute.fullname" .)) }}
{{- end }}

{{/*
partroute.hasNaming says whether a naming.yaml is mounted: from the chart's ConfigMap or one of
the user's.
*/}}
{{- define "partroute.hasNaming" -}}
{{- if or .Values.naming.existingConfigMap .Values.naming.namingYaml }}true{{ end }}
{{- end }}

{{/*
partroute.validate refuses values that would make pods that cannot start or cannot be
reached: a grace period no longer than the drain, and an inline partroute.yaml whose listen
section disagrees with ports and tls. A ConfigMap of the user's own cannot be read here; its
partroute.yaml must agree all the same (docs/deploy.md).
*/}}
{{- define "partroute.validate" -}}
{{- $drain := add (int .Values.drain.delaySeconds) (int .Values.drain.shutdownTimeoutSeconds) }}
{{- if le (int .Values.terminationGracePeriodSeconds) $drain }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be longer than drain.delaySeconds + drain.shutdownTimeoutSeconds (%d): the kubelet would kill partroute while it drains" (int .Values.terminationGracePeriodSeconds) $drain) }}
{{- end }}
{{- if lt (int .Values.replicas) 1 }}
{{- fail "replicas must be 1 or more (2 or more for restarts no request sees)" }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (ge (int .Values.podDisruptionBudget.minAvailable) (int .Values.replicas)) }}
{{- fail (printf "podDisruptionBudget.minAvailable (%d) must be below replicas (%d), or no node could ever be drained" (int .Values.podDisruptionBudget.minAvailable) (int .Values.replicas)) }}
{{- end }}
{{- if and (not .Values.config.existingConfigMap) (not .Values.config.partrouteYaml) }}
{{- fail "config.partrouteYaml or config.existingConfigMap is required: partroute.yaml" }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) }}
{{- fail "tls.secretName is required with tls.enabled" }}
{{- end }}
{{- if not .Values.config.existingConfigMap }}
{{- $cfg := fromYaml .Values.config.partrouteYaml }}
{{- if hasKey $cfg "Error" }}
{{- fail (printf "config.partrouteYaml is not YAML: %s" (get $cfg "Error")) }}
{{- end }}
{{- $listen := get $cfg "listen" | default dict }}
{{- range $name := list "extproc" "xds" "admin" }}
{{- $port := int (get $.Values.ports $name) }}
{{- $addr := get $listen $name | default "" }}
{{- if and (eq $name "xds") (eq $port 0) }}
{{- if $addr }}
{{- fail (printf "config.partrouteYaml: listen.xds is %q, but ports.xds is 0: set ports.xds to its port" $addr) }}
{{- end }}
{{- else if not (regexMatch (printf "^(0\\.0\\.0\\.0|\\[::\\])?:%d$" $port) (toString $addr)) }}
{{- fail (printf "config.partrouteYaml: listen.%s is %q; in a pod it must be 0.0.0.0:%d (ports.%s), so that Envoy, the kubelet and Prometheus reach it" $name $addr $port $name) }}
{{- end }}
{{- end }}
{{- $tls := get $listen "tls" | default dict }}
{{- if and $.Values.tls.enabled (not $tls) }}
{{- fail "tls.enabled is true, but config.partrouteYaml has no listen.tls: name the Secret's files there, tls/tls.crt, tls/tls.key and tls/ca.crt" }}
{{- end }}
{{- if and (not $.Values.tls.enabled) $tls }}
{{- fail "config.partrouteYaml has listen.tls, but tls.enabled is false: the certificate files would not be mounted" }}
{{- end }}
{{- if hasKey $tls "admin" }}
{{- fail "config.partrouteYaml: listen.tls.admin is not supported by the chart: the kubelet's probes and the ServiceMonitor ask the admin listener in plaintext" }}
{{- end }}
{{- end }}
{{- end }}
