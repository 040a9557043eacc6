// docs/configuration.md and the setting names the Helm chart's values.schema.json accepts, generated from the settings
// table (and the injector's own annotations), so neither can drift from the code: `npm run docs:config` rewrites
// both, and a test fails when a committed file is stale.
import { readFileSync, writeFileSync } from 'node:fs'
import { fileURLToPath, pathToFileURL } from 'node:url'
// The sidecar's own modules, as built (`npm run build`): this generator is no part of the sidecar's package.
import { SETTINGS, annotationFor, podSettable, type Setting, type Scope } from '../../dist/config/table.js'
import { INJECTOR_ANNOTATIONS } from '../../dist/inject/annotations.js'

export const DOC_PATH = fileURLToPath(new URL('../../docs/configuration.md', import.meta.url))
export const CHART_SCHEMA_PATH = fileURLToPath(new URL('../../charts/doorman/values.schema.json', import.meta.url))

/**
 * The settings the chart's `sidecar.env` and `checker.env` values may hold: every setting a pod may set (but the
 * app's port and the service, which are per workload), and the checker's own (but those the chart sets itself).
 */
export function chartSettingNames (): { sidecar: string[], checker: string[] } {
  return {
    sidecar: SETTINGS.filter(podSettable).map((s) => s.env).filter((e) => e !== 'DOORMAN_APP_PORT' && e !== 'DOORMAN_SERVICE'),
    checker: SETTINGS.filter((s) => s.scope === 'checker' || s.scope === 'all').map((s) => s.env).filter((e) => !['DOORMAN_REGISTRY', 'DOORMAN_ADMIN_PORT', 'DOORMAN_LOG_LEVEL'].includes(e))
  }
}

/** values.schema.json (its text) with the setting-name lists of `sidecar.env` and `checker.env` from the table. */
export function renderChartSchema (text: string): string {
  const schema = JSON.parse(text) as { properties: Record<'sidecar' | 'checker', { properties: { env: { propertyNames: { enum: string[] } } } }> }
  const names = chartSettingNames()
  schema.properties.sidecar.properties.env.propertyNames.enum = names.sidecar
  schema.properties.checker.properties.env.propertyNames.enum = names.checker
  return JSON.stringify(schema, null, 2) + '\n'
}

const SCOPES: Array<[Scope, string, string]> = [
  ['sidecar', 'The sidecar (`doorman run`)', 'Each is also settable per pod by its annotation, which the injector copies into the sidecar\'s environment.'],
  ['all', 'Every command', 'Read by the sidecar, the checker and the webhook alike.'],
  ['webhook', 'The injector (`doorman webhook`, `doorman inject`)', 'Settings of the injector itself, not of the pods it injects.'],
  ['checker', 'The checker (`doorman checker`)', 'It reads `DOORMAN_REGISTRY` too.']
]

function cell (text: string): string { return text.replace(/\|/g, '\\|').replace(/\n/g, ' ') }

function defaultOf (s: Setting): string {
  if (s.required === true) return 'required'
  if (s.default === undefined) return '—'
  if (s.default === '') return 'empty'
  return `\`${s.default}\``
}

function annotationOf (s: Setting): string {
  if (s.annotatable === false) return s.scope === 'sidecar' || s.scope === 'all' ? 'none (see meaning)' : '—'
  if (s.scope !== 'sidecar' && s.scope !== 'all') return '—'
  return `\`${annotationFor(s.env)}\``
}

function accepts (s: Setting): string {
  switch (s.kind) {
    case 'port': return 'port (0–65535)'
    case 'int': return 'whole number ≥ 1'
    case 'count': return 'whole number ≥ 0'
    case 'percent': return 'percent (0–100)'
    case 'number': return 'positive number'
    case 'duration': return 'duration (`250ms`, `5s`, `2m`)'
    case 'string': return 'text'
    case 'host': return 'host or IP (`[::1]` or `::1`)'
    case 'list': return 'comma-separated path globs'
    case 'globs': return 'comma-separated service (or `org:`) globs'
    case 'json': return 'JSON'
    case 'settings': return 'JSON object of settings'
    case 'resources': return 'JSON `resources`'
    case 'enum': return (s.values ?? []).map((v) => `\`${v}\``).join(', ')
    case 'registry': return 'registry URL'
    case 'app-registry': return '`zookeeper://` URL or empty'
    case 'services': return 'comma-separated service names'
    case 'level': return 'log level'
    case 'path': return 'file path'
    case 'nice': return 'nice value (-20–19)'
    case 'allow': return 'comma-separated SPIFFE ID patterns, each optionally `/prefix/=`'
    case 'label': return 'name (`finance`)'
    case 'check': return 'check (`http:8080/health`)'
  }
}

export function renderConfigDoc (): string {
  const out: string[] = []
  const line = (s = ''): void => { out.push(s) }
  line('<!-- Generated from src/config/table.ts by `npm run docs:config`; edit the table, not this file. -->')
  line('# Configuration')
  line()
  line('Every setting is a `DOORMAN_*` environment variable; the sidecar\'s settings are also pod annotations')
  line('`doorman.io/<kebab-name>` (`DOORMAN_MAX_CONCURRENCY` ⇄ `doorman.io/max-concurrency`), which the injector copies into')
  line('the sidecar\'s environment. Durations accept `250ms`, `5s`, `2m`. A bad value stops start-up with exit 78 and a')
  line('message naming the variable, the value seen and what is accepted; at injection, a bad annotation is refused the')
  line('same way, naming the annotation. A `DOORMAN_*` variable that names no setting (a typo such as')
  line('`DOORMAN_MAX_CONCURENCY`) is ignored with a warning at start-up naming the closest setting; the variables')
  line('Kubernetes sets for a Service named `doorman` (`DOORMAN_SERVICE_HOST`, `DOORMAN_PORT_…`) are not warned about.')
  line('Host settings take a name or an IP address; an IPv6 address may be written with or without brackets (`[::1]`).')
  line()
  line('## Commands')
  line()
  line('| command | what it does |')
  line('| --- | --- |')
  line('| `doorman run` | the sidecar (the default when no command is given) |')
  line('| `doorman drain` | asks the local sidecar to drain; exits when drained or at the drain timeout |')
  line('| `doorman inject [-f FILE]` | reads Kubernetes YAML (stdin or file, multi-document) and writes it back with the sidecar injected where annotated |')
  line('| `doorman webhook` | the mutating admission webhook server (HTTPS, AdmissionReview v1) that injects at pod creation |')
  line('| `doorman checker` | the central active health checker |')
  line('| `doorman demo` | the seed incident replayed with and without doorman |')
  line('| `doorman instances SERVICE [--json]` | a service\'s instances from the registry |')
  line()
  line('Exit codes: 0 clean stop, 78 bad configuration, 1 anything else (64 for a command line doorman does not understand).')
  line()
  line('## Ports')
  line()
  line('| port | env | default |')
  line('| --- | --- | --- |')
  for (const s of SETTINGS.filter((x) => x.kind === 'port' && x.required !== true)) line(`| ${cell(s.doc)} | \`${s.env}\` | ${defaultOf(s)} |`)
  line()
  for (const [scope, title, intro] of SCOPES) {
    const settings = SETTINGS.filter((s) => s.scope === scope)
    if (settings.length === 0) continue
    line(`## ${title}`)
    line()
    line(intro)
    line()
    line('| env | annotation | default | accepts | meaning |')
    line('| --- | --- | --- | --- | --- |')
    for (const s of settings) line(`| \`${s.env}\` | ${annotationOf(s)} | ${defaultOf(s)} | ${accepts(s)} | ${cell(s.doc)} |`)
    line()
  }
  line('## Injector annotations')
  line()
  line('Annotations on a pod template that steer the injector rather than set the sidecar\'s environment. A namespace opts')
  line('all its pods in with the label `doorman.io/inject=enabled` (the webhook\'s namespace selector). Any other')
  line('`doorman.io/*` annotation that is not a setting of the sidecar is reported as a warning (with the closest known')
  line('name) and ignored.')
  line()
  line('| annotation | default | meaning |')
  line('| --- | --- | --- |')
  for (const a of INJECTOR_ANNOTATIONS) line(`| \`${a.name}\` | ${a.default} | ${cell(a.doc)} |`)
  line()
  line('## Admin / probe lane endpoints')
  line()
  line('| path | answer |')
  line('| --- | --- |')
  line('| `GET /livez`, `/readyz`, `/startupz` | 200 `ok`, or 503 with the failing check; `?verbose` lists every check |')
  line('| `GET /app-health/<container>/<livez or readyz or startupz>` | the app\'s own rewritten probe, run over a reserved connection; with `DOORMAN_APP_PROBES` set, a path it doesn\'t hold is 404 |')
  line('| `GET /metrics` | Prometheus text format, metric names prefixed `doorman_` |')
  line('| `GET /state` | JSON: limit, in flight, queued, warmup progress, registration (and the app\'s own, with `DOORMAN_APP_REGISTRY`), drain phase |')
  line('| `POST /drain` | starts draining; 202 at once |')
  line('| `GET /drain?wait=1` (or `POST`) | starts draining and answers 200 only when drained: the app container\'s injected preStop hook |')
  line()
  line('`/drain` is accepted from the pod\'s loopback address, from `DOORMAN_NODE_IP` (kubelet\'s hooks come from the node),')
  line('or with `Authorization: Bearer $DOORMAN_ADMIN_TOKEN`; anything else gets 403.')
  line()
  line('## Headers')
  line()
  line('| header | when |')
  line('| --- | --- |')
  line('| `x-doorman-draining: 1` + `connection: close` | on every response while the instance drains |')
  line('| `503` + `retry-after` + `x-doorman-shed: <reason>` | a request shed by the limiter; the app never saw it, so a retry elsewhere is safe |')
  line('| `x-request-id` | passed through, or generated when missing |')
  line('| `x-forwarded-for`, `x-forwarded-proto`, `x-forwarded-host` | appended toward the app |')
  line()
  return out.join('\n')
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  writeFileSync(DOC_PATH, renderConfigDoc())
  writeFileSync(CHART_SCHEMA_PATH, renderChartSchema(readFileSync(CHART_SCHEMA_PATH, 'utf8')))
  process.stdout.write(`wrote ${DOC_PATH} and ${CHART_SCHEMA_PATH}\n`)
}
