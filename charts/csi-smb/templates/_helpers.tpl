{{/* The prefix of every object's name: the release name, or <release>-csi-smb. */}}
{{- define "csi-smb.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "csi-smb.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- with .Values.customLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of a component: (dict "root" $ "component" "controller"). */}}
{{- define "csi-smb.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* All labels of a component's objects. */}}
{{- define "csi-smb.componentLabels" -}}
{{ include "csi-smb.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* An image reference: (dict "root" $ "image" .Values.image.csiSMB).
     <image.baseRepo or the image's registry>/<repository>:<tag>; the driver's tag defaults to appVersion. */}}
{{- define "csi-smb.image" -}}
{{- $registry := .root.Values.image.baseRepo | default .image.registry -}}
{{- $tag := .image.tag | default .root.Chart.AppVersion -}}
{{- if $registry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" $registry) .image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "csi-smb.controllerServiceAccount" -}}
{{- .Values.serviceAccount.controller | default (printf "%s-controller" (include "csi-smb.fullname" .)) -}}
{{- end -}}

{{- define "csi-smb.nodeServiceAccount" -}}
{{- .Values.serviceAccount.node | default (printf "%s-node" (include "csi-smb.fullname" .)) -}}
{{- end -}}

{{/* The node plugin's socket directory and socket, as the kubelet sees them. */}}
{{- define "csi-smb.socketDir" -}}
{{- printf "%s/plugins/%s" (trimSuffix "/" .Values.kubeletDir) .Values.driver.name -}}
{{- end -}}

{{- define "csi-smb.socketPath" -}}
{{- printf "%s/csi.sock" (include "csi-smb.socketDir" .) -}}
{{- end -}}

{{- define "csi-smb.registrationDir" -}}
{{- printf "%s/plugins_registry" (trimSuffix "/" .Values.kubeletDir) -}}
{{- end -}}

{{/* The liveness probe of a driver container: (dict "root" $ "ports" .Values.controller.ports).
     To the livenessprobe sidecar's /healthz (CSI Probe over the socket) when it runs, else to the driver's own
     /healthz on --health-address. */}}
{{- define "csi-smb.livenessProbe" -}}
{{- $p := .root.Values.livenessProbe -}}
httpGet:
  path: /healthz
  port: {{ if $p.sidecar }}liveness{{ else }}health{{ end }}
initialDelaySeconds: {{ $p.initialDelaySeconds }}
periodSeconds: {{ $p.periodSeconds }}
timeoutSeconds: {{ $p.timeoutSeconds }}
failureThreshold: {{ $p.failureThreshold }}
{{- end -}}

{{/* The securityContext of an unprivileged container. */}}
{{- define "csi-smb.restrictedContainer" -}}
privileged: false
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}
