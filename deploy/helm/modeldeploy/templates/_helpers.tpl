{{/* The release's objects are named <release>-modeldeploy (or the release's name if it says modeldeploy). */}}
{{- define "modeldeploy.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "modeldeploy.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "modeldeploy.labels" -}}
{{ include "modeldeploy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "modeldeploy.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default (include "modeldeploy.fullname" .) -}}
{{- end -}}

{{/* The namespaces the operator watches, one per line; none: every namespace. */}}
{{- define "modeldeploy.watchNamespaces" -}}
{{- if not (has .Values.scope (list "cluster" "namespace")) -}}
{{- fail (printf "scope must be cluster or namespace, not %q" .Values.scope) -}}
{{- end -}}
{{- $namespaces := .Values.watchNamespaces -}}
{{- if and (eq .Values.scope "namespace") (not $namespaces) -}}
{{- $namespaces = list .Release.Namespace -}}
{{- end -}}
{{- range $namespaces }}
{{ . }}
{{- end -}}
{{- end -}}

{{/* Only the verbs the operator uses; deploy/base/rbac.yaml grants the same
     (tests/integration/test_helm_chart.py compares them). */}}
{{- define "modeldeploy.rules" -}}
# Watch ModelDeployments; revert spec.activeVersion, consume the retry annotation.
- apiGroups: [modeldeploy.io]
  resources: [modeldeployments]
  verbs: [get, list, watch, patch]
- apiGroups: [modeldeploy.io]
  resources: [modeldeployments/status]
  verbs: [patch]
# The serving Deployment and Service: server-side apply creates and repairs them.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]  # delete: the standby, its window over
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, patch]
# Rollout signals: pods are watched with a label selector, never written (but for the
# readiness gate of a validated version's pods, set in pods/status); their
# ReplicaSets tell which pods our Deployment owns.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [pods/status]
  verbs: [patch]
- apiGroups: [apps]
  resources: [replicasets]
  verbs: [list, watch]
# A PodDisruptionBudget per model (spec.disruption), applied like the other children.
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create]
# Configuration snapshots (versions[].config): the source ConfigMap is read by name,
# copied into an immutable snapshot, which is deleted once no version needs it. Never
# listed or watched.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, create, delete]
# A webhook URL kept in a Secret (notifications.webhook.urlFrom): read by name only
# when a notification is sent; never listed or watched, never logged.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
{{- end -}}
