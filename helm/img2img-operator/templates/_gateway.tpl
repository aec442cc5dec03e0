{{/* The RunPod-compatible gateway (gateway/img2img_gateway): names, its configuration file, its namespaces. */}}

{{- define "img2img.gatewayName" -}}
{{- printf "%s-gateway" (include "img2img.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "img2img.gatewayServiceAccount" -}}
{{- if .Values.gateway.serviceAccount.create }}
{{- default (include "img2img.gatewayName" .) .Values.gateway.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.gateway.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator's image unless gateway.image names another: it holds the gateway's console script. */}}
{{- define "img2img.gatewayImage" -}}
{{- $repository := default .Values.operator.image.repository .Values.gateway.image.repository }}
{{- printf "%s:%s" $repository (default .Chart.AppVersion (default .Values.operator.image.tag .Values.gateway.image.tag)) }}
{{- end }}

{{- define "img2img.gatewayRunnerNamespace" -}}
{{- default .Release.Namespace .Values.gateway.runnerNamespace }}
{{- end }}

{{/* The namespaces the endpoints' jobs live in, as a JSON list without repeats. */}}
{{- define "img2img.gatewayNamespaces" -}}
{{- $namespaces := list }}
{{- range $id, $endpoint := .Values.gateway.endpoints }}
{{- $namespaces = append $namespaces $endpoint.namespace }}
{{- end }}
{{- $namespaces | uniq | sortAlpha | toJson }}
{{- end }}

{{- define "img2img.gatewayConfig" -}}
port: {{ .Values.gateway.port }}
namespace: {{ .Release.Namespace }}
runnerNamespace: {{ include "img2img.gatewayRunnerNamespace" . }}
catalogPath: /etc/img2img-gateway/catalog.yaml
s3:
  bucket: {{ .Values.s3.bucket | quote }}
  {{- with .Values.s3.endpoint }}
  endpoint: {{ . | quote }}
  {{- end }}
  {{- with .Values.s3.region }}
  region: {{ . | quote }}
  {{- end }}
presignExpirySeconds: {{ .Values.gateway.presignExpirySeconds }}
keyRefreshSeconds: {{ .Values.gateway.keyRefreshSeconds }}
imageCacheBytes: {{ .Values.gateway.imageCacheBytes | int64 }}
allowPrivateAddresses: {{ .Values.gateway.allowPrivateAddresses }}
webhookPublicKeyConfigMap: {{ .Values.webhooks.publicKeyConfigMap | quote }}
endpoints:
  {{- toYaml .Values.gateway.endpoints | nindent 2 }}
keys:
  {{- toYaml .Values.gateway.keys | nindent 2 }}
{{- end }}
