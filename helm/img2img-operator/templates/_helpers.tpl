{{/* Names ------------------------------------------------------------------------------------------------- */}}

{{- define "img2img.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "img2img.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "img2img.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels (app.kubernetes.io/*). Runner pods carry app.kubernetes.io/managed-by: img2img-operator (set by the
     operator); everything the chart renders carries managed-by: Helm, so the operator never mistakes it. */}}
{{- define "img2img.selectorLabels" -}}
app.kubernetes.io/name: {{ include "img2img.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "img2img.labels" -}}
helm.sh/chart: {{ include "img2img.chart" . }}
{{ include "img2img.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: img2img-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Identities ----------------------------------------------------------------------------------------------- */}}

{{- define "img2img.operatorServiceAccount" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "img2img.fullname" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "img2img.runnerServiceAccount" -}}
{{- .Values.runner.serviceAccount.name }}
{{- end }}

{{- define "img2img.catalogConfigMap" -}}
{{- default (printf "%s-catalog" (include "img2img.fullname" .)) .Values.catalog.configMapName }}
{{- end }}

{{- define "img2img.operatorImage" -}}
{{- printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) }}
{{- end }}

{{- define "img2img.runnerImage" -}}
{{- printf "%s:%s" .Values.runner.image.repository (default .Chart.AppVersion .Values.runner.image.tag) }}
{{- end }}

{{/* The model catalog file: catalog.content, else the chart's default catalog. */}}
{{- define "img2img.catalogContent" -}}
{{- if .Values.catalog.content }}
{{- toYaml .Values.catalog.content }}
{{- else }}
{{- .Files.Get "files/default-catalog.yaml" }}
{{- end }}
{{- end }}

{{/* GPU classes: gpuClasses, else one class "default" with one nvidia.com/gpu. */}}
{{- define "img2img.gpuClasses" -}}
{{- if .Values.gpuClasses }}
{{- toJson .Values.gpuClasses }}
{{- else }}
{{- dict "default" (dict "resources" (dict "nvidia.com/gpu" 1)) | toJson }}
{{- end }}
{{- end }}

{{/* Runner pools ---------------------------------------------------------------------------------------------- */}}

{{/* The Service runners reach the operator through. */}}
{{- define "img2img.runnersService" -}}
{{- printf "%s-runners" (include "img2img.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels of runner pods (set by the operator, img2img_operator.runner_pods). */}}
{{- define "img2img.runnerPodLabels" -}}
app.kubernetes.io/managed-by: img2img-operator
app.kubernetes.io/component: runner
{{- end }}

{{/* Network policies ------------------------------------------------------------------------------------------ */}}

{{/* The port of s3.endpoint ("443" without one: AWS). */}}
{{- define "img2img.s3Port" -}}
{{- $port := "443" }}
{{- with .Values.s3.endpoint }}
{{- $url := urlParse . }}
{{- $port = ternary "443" "80" (eq $url.scheme "https") }}
{{- if contains ":" $url.host }}{{ $port = last (splitList ":" $url.host) }}{{ end }}
{{- end }}
{{- $port }}
{{- end }}

{{/* NetworkPolicy peers: every address but networkPolicy.deniedCidrs (cloud metadata), IPv4 and IPv6. */}}
{{- define "img2img.allowedPeers" -}}
{{- $v4 := list }}
{{- $v6 := list }}
{{- range .Values.networkPolicy.deniedCidrs }}
{{- if contains ":" . }}{{ $v6 = append $v6 . }}{{ else }}{{ $v4 = append $v4 . }}{{ end }}
{{- end }}
- ipBlock:
    cidr: 0.0.0.0/0
    {{- with $v4 }}
    except: {{ toJson . }}
    {{- end }}
- ipBlock:
    cidr: ::/0
    {{- with $v6 }}
    except: {{ toJson . }}
    {{- end }}
{{- end }}

{{/* DNS, on any address: cluster DNS, and node-local caches at link-local addresses. */}}
{{- define "img2img.dnsEgress" -}}
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end }}

{{/* Checks the schema cannot express; each fails with the value's path and the reason. */}}
{{- define "img2img.validate" -}}
{{- $gpuClasses := include "img2img.gpuClasses" . | fromJson }}
{{- $classes := keys $gpuClasses | sortAlpha }}
{{- if and .Values.defaultGpuClass (not (hasKey $gpuClasses .Values.defaultGpuClass)) }}
{{- fail (printf "defaultGpuClass: %q is not one of gpuClasses (%s)" .Values.defaultGpuClass (join ", " $classes)) }}
{{- end }}
{{- if and (not .Values.defaultGpuClass) (gt (len $classes) 1) }}
{{- fail (printf "defaultGpuClass: needed when there is more than one GPU class (gpuClasses: %s)" (join ", " $classes)) }}
{{- end }}
{{- if and .Values.runner.modelCache.persistentVolumeClaim .Values.runner.modelCache.hostPath }}
{{- fail "runner.modelCache: set persistentVolumeClaim or hostPath, not both" }}
{{- end }}
{{- if and (not .Values.catalog.create) (not .Values.catalog.configMapName) }}
{{- fail "catalog.configMapName: needed with catalog.create: false (the name of an existing ConfigMap in the release namespace)" }}
{{- end }}
{{- $poolNames := list }}
{{- range $i, $pool := .Values.pools }}
{{- if has $pool.name $poolNames }}
{{- fail (printf "pools[%d].name: %q is used by another pool" $i $pool.name) }}
{{- end }}
{{- $poolNames = append $poolNames $pool.name }}
{{- if not (hasKey $gpuClasses $pool.gpuClass) }}
{{- fail (printf "pools[%d].gpuClass: %q is not one of gpuClasses (%s)" $i $pool.gpuClass (join ", " $classes)) }}
{{- end }}
{{- if and (not (kindIs "invalid" $pool.maxRunners)) (gt (int64 ($pool.minReady | default 0)) (int64 $pool.maxRunners)) }}
{{- fail (printf "pools[%d].minReady: %d is above maxRunners (%d)" $i (int64 $pool.minReady) (int64 $pool.maxRunners)) }}
{{- end }}
{{- end }}
{{- end }}

{{/* The Lease of the leader election (in the release namespace). */}}
{{- define "img2img.leaseName" -}}
{{- .Values.leaderElection.leaseName | default (include "img2img.fullname" .) -}}
{{- end }}

{{/* The operator's configuration (OperatorConfig, camelCase), as a dict; rendered with toYaml. ------------- */}}
{{- define "img2img.operatorConfig" -}}
{{- $v := .Values }}
{{- $runner := dict
      "image" (include "img2img.runnerImage" .)
      "imagePullPolicy" $v.runner.image.pullPolicy
      "imagePullSecrets" $v.runner.imagePullSecrets
      "serviceAccountName" (include "img2img.runnerServiceAccount" .)
      "resources" $v.runner.resources
      "catalogConfigMap" (include "img2img.catalogConfigMap" .)
      "catalogKey" $v.catalog.key
      "catalogPath" $v.catalog.mountPath
      "allowedHosts" $v.runner.allowedHosts
      "env" $v.runner.env
      "securityContext" (merge (dict "readOnlyRootFilesystem" true) $v.runner.securityContext)
      "tmpSizeLimit" $v.runner.tmpSizeLimit
      "terminationGracePeriodSeconds" $v.runner.terminationGracePeriodSeconds
      "podLabels" $v.runner.podLabels
      "podAnnotations" $v.runner.podAnnotations }}
{{- if $v.runner.modelCache.enabled }}
{{- $cache := dict "mountPath" $v.runner.modelCache.mountPath "readOnly" $v.runner.modelCache.readOnly }}
{{- if $v.runner.modelCache.persistentVolumeClaim }}
{{- $_ := set $cache "persistentVolumeClaim" $v.runner.modelCache.persistentVolumeClaim }}
{{- else if $v.runner.modelCache.hostPath }}
{{- $_ := set $cache "hostPath" $v.runner.modelCache.hostPath }}
{{- else if $v.runner.modelCache.sizeLimit }}
{{- $_ := set $cache "sizeLimit" $v.runner.modelCache.sizeLimit }}
{{- end }}
{{- $_ := set $runner "modelCache" $cache }}
{{- end }}
{{- if $v.runner.hubToken.secretName }}
{{- $_ := set $runner "hubTokenSecret" (dict "name" $v.runner.hubToken.secretName "key" $v.runner.hubToken.key) }}
{{- end }}
{{- $s3 := dict "bucket" $v.s3.bucket "prefix" $v.s3.prefix "allowedReadPrefixes" $v.s3.allowedReadPrefixes
      "allowedOutputLocations" $v.s3.allowedOutputLocations "presignExpirySeconds" $v.s3.presignExpirySeconds
      "reclaimPolicy" $v.s3.reclaimPolicy }}
{{- if $v.s3.endpoint }}{{ $_ := set $s3 "endpoint" $v.s3.endpoint }}{{ end }}
{{- if $v.s3.region }}{{ $_ := set $s3 "region" $v.s3.region }}{{ end }}
{{- if $v.s3.credentialsSecret }}{{ $_ := set $s3 "credentialsSecret" $v.s3.credentialsSecret }}{{ end }}
{{- $classes := dict }}
{{- range $name, $class := include "img2img.gpuClasses" . | fromJson }}
{{- $c := dict "resources" ($class.resources | default (dict "nvidia.com/gpu" 1)) }}
{{- with $class.nodeSelector }}{{ $_ := set $c "nodeSelector" . }}{{ end }}
{{- with $class.tolerations }}{{ $_ := set $c "tolerations" . }}{{ end }}
{{- with $class.priorityClassName }}{{ $_ := set $c "priorityClassName" . }}{{ end }}
{{- if not (kindIs "invalid" $class.maxConcurrent) }}{{ $_ := set $c "maxConcurrent" (int64 $class.maxConcurrent) }}{{ end }}
{{- $_ := set $classes $name $c }}
{{- end }}
{{- $queue := dict }}
{{- if not (kindIs "invalid" $v.queue.maxConcurrent) }}{{ $_ := set $queue "maxConcurrent" (int64 $v.queue.maxConcurrent) }}{{ end }}
{{- $defaults := dict "priority" (int64 $v.defaults.priority) "timeoutSeconds" (int64 $v.defaults.timeoutSeconds)
      "retries" (int64 $v.defaults.retries) }}
{{- if not (kindIs "invalid" $v.defaults.ttlSecondsAfterFinished) }}
{{- $_ := set $defaults "ttlSecondsAfterFinished" (int64 $v.defaults.ttlSecondsAfterFinished) }}
{{- end }}
{{- $runners := dict
      "namespace" .Release.Namespace
      "operatorUrl" (printf "http://%s.%s.svc:%d" (include "img2img.runnersService" .) .Release.Namespace (int64 $v.runners.port))
      "port" (int64 $v.runners.port)
      "tokenSecret" $v.runners.tokenSecret
      "leaseSeconds" $v.runners.leaseSeconds
      "heartbeatSeconds" $v.runners.heartbeatSeconds
      "takeWaitSeconds" $v.runners.takeWaitSeconds
      "maxPendingSeconds" $v.runners.maxPendingSeconds
      "implicitPool" (dict "idleSeconds" (int64 $v.runners.implicitPool.idleSeconds) "maxRunners" (int64 $v.runners.implicitPool.maxRunners)) }}
{{- with $v.runners.modelStoreSecret }}{{ $_ := set $runners "modelStoreSecret" . }}{{ end }}
{{- $webhooks := dict
      "namespace" .Release.Namespace
      "signingKeySecret" $v.webhooks.signingKeySecret
      "publicKeyConfigMap" $v.webhooks.publicKeyConfigMap
      "allowPrivateAddresses" $v.webhooks.allowPrivateAddresses
      "maxAttempts" (int64 $v.webhooks.maxAttempts)
      "retryBackoff" $v.webhooks.retryBackoff
      "timeoutSeconds" $v.webhooks.timeoutSeconds
      "presignExpirySeconds" (int64 $v.webhooks.presignExpirySeconds) }}
{{- $config := dict
      "namespaces" ($v.watch.namespaces | default list)
      "runner" $runner
      "runners" $runners
      "s3" $s3
      "gpuClasses" $classes
      "queue" $queue
      "policy" $v.policy
      "defaults" $defaults
      "retryBackoff" $v.retryBackoff
      "timing" $v.timing
      "leaderElection" (dict "leaseName" (include "img2img.leaseName" .)
                             "leaseDurationSeconds" (int64 $v.leaderElection.leaseDurationSeconds)
                             "renewDeadlineSeconds" $v.leaderElection.renewDeadlineSeconds
                             "retryPeriodSeconds" $v.leaderElection.retryPeriodSeconds
                             "labelPod" true)
      "webhooks" $webhooks
      "logging" $v.logging
      "metricsPort" (ternary (int64 $v.metrics.port) nil $v.metrics.enabled)
      "healthPort" (int64 $v.operator.healthPort)
      "dispatchConcurrency" (int64 $v.operator.dispatchConcurrency) }}
{{- with $v.defaultGpuClass }}{{ $_ := set $config "defaultGpuClass" . }}{{ end }}
{{- toYaml $config }}
{{- end }}
