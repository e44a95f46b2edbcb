{{/* Chart name, at most 63 characters. */}}
{{- define "twig.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-qualified name; the monolith's Deployment and Service use it. */}}
{{- define "twig.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
"<fullname>-<suffix>", at most 63 characters: the fullname is shortened,
never the suffix, so two names never collapse into one.
Takes a list: the top context and the suffix.
*/}}
{{- define "twig.componentName" -}}
{{- $root := index . 0 -}}
{{- $suffix := index . 1 -}}
{{- $base := include "twig.fullname" $root | trunc (int (sub 62 (len $suffix))) | trimSuffix "-" -}}
{{- printf "%s-%s" $base $suffix -}}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "twig.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "twig.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Labels that pick this release's pods (every component). */}}
{{- define "twig.selectorLabels" -}}
app.kubernetes.io/name: {{ include "twig.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "twig.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The Secret with DATABASE_URL and the internal token. */}}
{{- define "twig.secretName" -}}
{{- default (include "twig.fullname" .) .Values.existingSecret -}}
{{- end -}}

{{/*
Fails rendering on database and credential settings that cannot work.
Messages never repeat a secret value.
*/}}
{{- define "twig.validate" -}}
{{- if eq (int .Values.metrics.port) (int .Values.server.port) -}}
{{- fail "metrics.port must differ from server.port (the binary binds both, whether metrics.enabled or not)" -}}
{{- end -}}
{{- if and .Values.metrics.enabled (eq (int .Values.metrics.port) (int .Values.service.port)) -}}
{{- fail "metrics.port must differ from service.port (both are ports of each Service)" -}}
{{- end -}}
{{- if .Values.existingSecret -}}
{{- if or .Values.database.url .Values.auth.internalToken -}}
{{- fail "existingSecret is set: leave database.url and auth.internalToken empty (the Secret holds them)" -}}
{{- end -}}
{{- else -}}
{{- $url := required "database.url is required: a postgres:// URL, or set existingSecret to the name of a Secret you made" .Values.database.url -}}
{{- if not (regexMatch "^postgres(ql)?://" $url) -}}
{{- fail "database.url must start with postgres:// or postgresql:// (SQLite cannot be shared by several pods)" -}}
{{- end -}}
{{- $token := required "auth.internalToken is required (at least 32 characters), or set existingSecret" .Values.auth.internalToken -}}
{{- if lt (len $token) 32 -}}
{{- fail "auth.internalToken must be at least 32 characters" -}}
{{- end -}}
{{- if .Values.redis.enabled -}}
{{- $redis := required "redis.url is required when redis.enabled (a redis:// or rediss:// URL), or set existingSecret" .Values.redis.url -}}
{{- if not (regexMatch "^rediss?://" $redis) -}}
{{- fail "redis.url must start with redis:// or rediss://" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and (ne .Values.mode "monolith") (gt (len (include "twig.components" . | fromJson).items) 1) (not .Values.existingSecret) -}}
{{- $edge := required "auth.edgeToken is required in split mode with more than one service (at least 32 characters, unlike auth.internalToken), or set existingSecret" .Values.auth.edgeToken -}}
{{- if lt (len $edge) 32 -}}
{{- fail "auth.edgeToken must be at least 32 characters" -}}
{{- end -}}
{{- if eq $edge .Values.auth.internalToken -}}
{{- fail "auth.edgeToken must differ from auth.internalToken" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.existingSecret .Values.auth.edgeToken -}}
{{- fail "existingSecret is set: leave auth.edgeToken empty (the Secret holds it under secretKeys.edgeToken)" -}}
{{- end -}}
{{- if and .Values.existingSecret .Values.redis.url -}}
{{- fail "existingSecret is set: leave redis.url empty (the Secret holds it under secretKeys.redisUrl)" -}}
{{- end -}}
{{- with .Values.mail.smtp.host -}}
{{- if not (and $.Values.mail.from $.Values.mail.linkBase) -}}
{{- fail "mail.smtp.host is set: set mail.from (e.g. \"Acme <no-reply@acme.example>\") and mail.linkBase (the public https:// URL links start with) too" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.mail.smtp.password (not .Values.mail.smtp.username) -}}
{{- fail "mail.smtp.password is set without mail.smtp.username: set both or neither" -}}
{{- end -}}
{{- if and .Values.existingSecret .Values.mail.smtp.password -}}
{{- fail "existingSecret is set: leave mail.smtp.password empty (the Secret holds it under secretKeys.smtpPassword)" -}}
{{- end -}}
{{- if and .Values.mail.smtp.username (not .Values.existingSecret) (not .Values.mail.smtp.password) -}}
{{- fail "mail.smtp.username is set: set mail.smtp.password too (stored in the Secret), or set existingSecret" -}}
{{- end -}}
{{- /* Read from what runs, so services absent from the values count as off. */ -}}
{{- range (include "twig.components" . | fromJson).items -}}
{{- if and (has .component (list "monolith" "secrets-vault")) (not $.Values.vault.masterKeysSecret) -}}
{{- fail "the vault runs (monolith, or services.secrets-vault): set vault.masterKeysSecret to a Secret with one master key per version (e.g. kubectl create secret generic twig-vault-keys --from-literal=1=$(openssl rand -base64 32))" -}}
{{- end -}}
{{- end -}}
{{- if not .Values.redis.enabled -}}
{{- range (include "twig.components" . | fromJson).items -}}
{{- if and (has .component (list "monolith" "quota")) (gt (int .replicas) 1) -}}
{{- fail "the quota service runs on more than one replica: set redis.enabled (and redis.url or secretKeys.redisUrl) so they share one count, or run one replica" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
What runs, as JSON {"items": [...]}: in monolith mode one component running
`serve`; in split mode one per enabled entry of services running
`serve --services X`, whatever its name (the binary checks the names: see
twig.migrateArgs). An entry's replicas and resources default to
serviceDefaults, then (resources) to the top-level resources.
*/}}
{{- define "twig.components" -}}
{{- $root := . -}}
{{- $fullname := include "twig.fullname" . -}}
{{- $items := list -}}
{{- if eq .Values.mode "monolith" -}}
{{- $items = append $items (dict "component" "monolith" "name" $fullname "args" (list "serve") "replicas" .Values.monolith.replicas "resources" (default .Values.resources .Values.monolith.resources)) -}}
{{- else -}}
{{- $defaults := .Values.serviceDefaults -}}
{{- range $svc, $cfg := .Values.services -}}
{{- if $cfg.enabled -}}
{{- $name := include "twig.componentName" (list $root $svc) -}}
{{- $replicas := dig "replicas" $defaults.replicas $cfg -}}
{{- $resources := $cfg.resources | default $defaults.resources | default $root.Values.resources -}}
{{- $items = append $items (dict "component" $svc "name" $name "args" (list "serve" "--services" $svc) "replicas" $replicas "resources" $resources) -}}
{{- end -}}
{{- end -}}
{{- if not $items -}}
{{- fail "mode is split but no entry of services has enabled: true" -}}
{{- end -}}
{{- /* Each component reaches the other services at their Services. */ -}}
{{- if gt (len $items) 1 -}}
{{- $withRemotes := list -}}
{{- range $item := $items -}}
{{- $remotes := list -}}
{{- range $other := $items -}}
{{- /* remote.<service>: the service's name with _ for -; nobody calls the edge. */ -}}
{{- $env := printf "TWIG__REMOTE__%s" ($other.component | replace "-" "_" | upper) -}}
{{- if and (ne $other.component "edge") (ne $other.component $item.component) -}}
{{- $remotes = append $remotes (dict "env" $env "url" (printf "http://%s:%d" $other.name (int $root.Values.service.port))) -}}
{{- end -}}
{{- end -}}
{{- $withRemotes = append $withRemotes (merge (dict "remotes" $remotes "split" true) $item) -}}
{{- end -}}
{{- $items = $withRemotes -}}
{{- end -}}
{{- end -}}
{{- dict "items" $items | toJson -}}
{{- end -}}

{{/*
The migration Job's arguments, as JSON: `migrate` in monolith mode (every
service of the image); in split mode `migrate --services a,b` with every
enabled service. The binary refuses a name missing from its module list,
naming the known ones, so a misspelt or unknown service fails the
pre-install/pre-upgrade hook before any Deployment rolls.
*/}}
{{- define "twig.migrateArgs" -}}
{{- $args := list "migrate" -}}
{{- if ne .Values.mode "monolith" -}}
{{- $names := list -}}
{{- range (include "twig.components" . | fromJson).items -}}
{{- $names = append $names .component -}}
{{- end -}}
{{- $args = list "migrate" "--services" (join "," $names) -}}
{{- end -}}
{{- toJson $args -}}
{{- end -}}

{{/*
The admin (metrics) address: 0.0.0.0:<metrics.port> when metrics.enabled,
else 127.0.0.1:<metrics.port>, unreachable from outside the pod (the binary
binds it either way).
*/}}
{{- define "twig.adminListen" -}}
{{- printf "%s:%d" (ternary "0.0.0.0" "127.0.0.1" (eq .Values.metrics.enabled true)) (int .Values.metrics.port) -}}
{{- end -}}

{{/*
Environment of every twig-identity container. Takes a dict: "root" (the
top context), "secret" (the Secret to read credentials from) and, optional,
"adminListen" (default: twig.adminListen).
*/}}
{{- define "twig.env" -}}
{{- $v := .root.Values -}}
- name: TWIG__SERVER__LISTEN
  value: {{ printf "0.0.0.0:%d" (int $v.server.port) | quote }}
- name: TWIG__SERVER__ADMIN_LISTEN
  value: {{ .adminListen | default (include "twig.adminListen" .root) | quote }}
{{- with $v.server.corsOrigins }}
- name: TWIG__SERVER__CORS_ORIGINS
  value: {{ toJson . | quote }}
{{- end }}
{{- with $v.server.publicOrigins }}
- name: TWIG__SERVER__PUBLIC_ORIGINS
  value: {{ toJson . | quote }}
{{- end }}
- name: TWIG__TELEMETRY__JSON_LOGS
  value: "true"
- name: TWIG__TELEMETRY__LOG_FILTER
  value: {{ $v.telemetry.logFilter | quote }}
- name: TWIG__DATABASE__MAX_CONNECTIONS
  value: {{ $v.database.maxConnections | quote }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ $v.secretKeys.databaseUrl }}
- name: TWIG__AUTH__INTERNAL_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ $v.secretKeys.internalToken }}
{{- if $v.redis.enabled }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ $v.secretKeys.redisUrl }}
- name: TWIG__REDIS__KEY_PREFIX
  value: {{ $v.redis.keyPrefix | quote }}
{{- end }}
- name: TWIG__QUOTA__STORE
  value: {{ ternary "redis" "memory" (eq $v.redis.enabled true) | quote }}
- name: TWIG__QUOTA__DEFAULT_LIMIT
  value: {{ $v.quota.defaultLimit | int64 | toString | quote }}
- name: TWIG__QUOTA__PERIOD
  value: {{ $v.quota.period | quote }}
- name: TWIG__QUOTA__ON_STORE_ERROR
  value: {{ $v.quota.onStoreError | quote }}
- name: TWIG__PLANS__DEFAULT_PLAN
  value: {{ $v.plans.defaultPlan | quote }}
{{- range $name, $plan := $v.plans.definitions }}
{{- $key := printf "TWIG__PLANS__%s" (upper $name) }}
{{- with $plan.defaultLimit }}
{{- with .requests }}
- name: {{ $key }}__DEFAULT_LIMIT__REQUESTS
  value: {{ . | int64 | toString | quote }}
{{- end }}
{{- with .period }}
- name: {{ $key }}__DEFAULT_LIMIT__PERIOD
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- with $plan.maxCustomLimit }}
{{- with .requests }}
- name: {{ $key }}__MAX_CUSTOM_LIMIT__REQUESTS
  value: {{ . | int64 | toString | quote }}
{{- end }}
{{- with .period }}
- name: {{ $key }}__MAX_CUSTOM_LIMIT__PERIOD
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- if hasKey $plan "features" }}
- name: {{ $key }}__FEATURES
  value: {{ $plan.features | toJson | quote }}
{{- end }}
{{- end }}
{{- with $v.mail.smtp.host }}
- name: TWIG__MAIL__FROM
  value: {{ $v.mail.from | quote }}
- name: TWIG__MAIL__LINK_BASE
  value: {{ $v.mail.linkBase | quote }}
- name: TWIG__MAIL__SMTP__HOST
  value: {{ . | quote }}
- name: TWIG__MAIL__SMTP__TLS
  value: {{ $v.mail.smtp.tls | quote }}
{{- with $v.mail.smtp.port }}
- name: TWIG__MAIL__SMTP__PORT
  value: {{ . | int | toString | quote }}
{{- end }}
{{- with $v.mail.smtp.username }}
- name: TWIG__MAIL__SMTP__USERNAME
  value: {{ . | quote }}
- name: TWIG__MAIL__SMTP__PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $.secret }}
      key: {{ $v.secretKeys.smtpPassword }}
{{- end }}
{{- end }}
{{- with $v.telemetry.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The credentials, base64-encoded, for the chart's own Secrets. */}}
{{- define "twig.secretData" -}}
{{ .Values.secretKeys.databaseUrl }}: {{ .Values.database.url | b64enc | quote }}
{{ .Values.secretKeys.internalToken }}: {{ .Values.auth.internalToken | b64enc | quote }}
{{- if .Values.auth.edgeToken }}
{{ .Values.secretKeys.edgeToken }}: {{ .Values.auth.edgeToken | b64enc | quote }}
{{- end }}
{{- if .Values.redis.enabled }}
{{ .Values.secretKeys.redisUrl }}: {{ .Values.redis.url | b64enc | quote }}
{{- end }}
{{- if and .Values.mail.smtp.host .Values.mail.smtp.username }}
{{ .Values.secretKeys.smtpPassword }}: {{ .Values.mail.smtp.password | b64enc | quote }}
{{- end }}
{{- end -}}

{{/* Secret the migration Job reads: made as a hook, before the Job. */}}
{{- define "twig.migrationSecretName" -}}
{{- if .Values.existingSecret -}}
{{- .Values.existingSecret -}}
{{- else -}}
{{- include "twig.componentName" (list . "migrate") -}}
{{- end -}}
{{- end -}}
