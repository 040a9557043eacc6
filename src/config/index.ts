// The only reader of process.env. Validates every DOORMAN_* setting once, with a parser per kind of the settings
// table, and returns one frozen Config. A bad value throws ConfigError naming the variable.
import { SETTINGS, QUANTITY, keyFor, podSettable, type Setting } from './table.js'
import { ConfigError } from '../core/errors.js'
import { SERVICE_NAME } from './table.js'
import { isIPv6 } from 'node:net'
import { parseZooKeeperUrl } from '../app-registry/url.js'
import { parseAllow, AllowError } from '../authz/index.js'
import { parseCheck, type CheckSpec } from '../check/spec.js'
import { LABEL } from './table.js'

export { SETTINGS, annotationFor, keyFor } from './table.js'

export interface AppProbe {
  httpGet?: { path?: string, port: number | string, host?: string, scheme?: string, httpHeaders?: Array<{ name: string, value: string }> }
  tcpSocket?: { port: number | string, host?: string }
  grpc?: { port: number, service?: string }
  timeoutSeconds?: number
  /** kubelet's timing of the probe; the lane honours a readiness probe's before the registry state changes. */
  periodSeconds?: number
  failureThreshold?: number
  successThreshold?: number
}

/** A container's resources, as the injector gives them to the sidecar. */
export interface SidecarResources {
  requests?: { cpu?: string, memory?: string }
  limits?: { cpu?: string, memory?: string }
}

export interface Config {
  inboundPort: number
  outboundPort: number
  adminPort: number
  bindHost: string
  appPort: number
  appProtocol: 'http1' | 'h2c'
  appHost: string
  service: string
  cluster: string
  zone: string
  org: string
  env: string
  check: CheckSpec | null
  maxConcurrency: number
  limitMode: 'static' | 'adaptive'
  limitMin: number
  criticalPaths: readonly string[]
  lowPaths: readonly string[]
  criticalReserve: number
  fairness: 'flow' | 'off'
  flowHeader: string
  maxQueue: number
  queueTimeout: number
  upstreamTimeout: number
  clientWriteTimeout: number
  trustedHops: number
  maxUpgrades: number
  maxHeaderSize: number
  headersTimeout: number
  idleTimeout: number
  maxConnections: number
  accessLog: 'off' | 'json'
  accessLogSample: number
  otelExporterOtlpEndpoint: string
  otelExporterOtlpTracesEndpoint: string
  otelExporterOtlpProtocol: 'http/protobuf' | 'http/json'
  otelServiceName: string
  otelTracesSampler: string
  otelTracesSamplerArg: string
  otelResourceAttributes: string
  otelSdkDisabled: 'true' | 'false'
  registry: string
  appRegistry: string
  appServices: readonly string[]
  advertiseHost: string
  registryTtl: number
  registerDelay: number
  retryBudget: number
  retryMinPerSecond: number
  outlierFailures: number
  outlierEjectTime: number
  outlierMaxEject: number
  outboundPanicThreshold: number
  warmup: number
  warmupAggression: number
  warmupMinWeight: number
  warmupInbound: 'off' | 'ramp'
  mtls: 'off' | 'permissive' | 'strict'
  tlsDir: string
  /** DOORMAN_ALLOW as written (parsed again by the authorizer; checked here). */
  allow: string
  drainDelay: number
  drainQuiet: number
  drainTimeout: number
  appProbes: Readonly<Record<string, AppProbe>>
  livenessStall: number
  readinessStall: number
  appStall: number
  livenessMaxFailing: number
  appCheckInterval: number
  laneNice: number
  adminToken: string
  nodeIp: string
  logLevel: string
  webhookPort: number
  webhookCert: string
  webhookKey: string
  sidecarImage: string
  sidecarMode: 'native' | 'container'
  sidecarEnv: Readonly<Record<string, string>>
  sidecarResources: Readonly<SidecarResources>
  checkInterval: number
  checkTimeout: number
  checkFailures: number
  checkSuccesses: number
  checkMaxEject: number
  checkMode: 'full' | 'recover-only' | 'off'
  checkConcurrency: number
  checkReplicaId: string
  checkGroup: 'main' | 'canary'
  checkCanary: readonly string[]
  checkExclude: readonly string[]
  checkTargets: string
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }

/** Parses `250ms`, `5s`, `1.5m`, `2h` or a bare number of milliseconds into milliseconds. */
export function parseDuration (text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(text)
  if (m === null) return undefined
  const ms = Number(m[1]) * UNITS[m[2] ?? 'ms']
  return Number.isFinite(ms) ? Math.round(ms) : undefined
}

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']

/** A parsed value, or why the text was refused (`detail` is added to the message when there is one). */
type Parsed = { ok: true, value: unknown } | { ok: false, detail?: string }
const bad = (detail?: string): Parsed => ({ ok: false, detail })
const good = (value: unknown): Parsed => ({ ok: true, value })

/** Trimmed text matching `re`, as a number within [min, max]. */
function numberIn (re: RegExp, min: number, max: number, integer = true): (v: string) => Parsed {
  return (v) => {
    const t = v.trim()
    if (!re.test(t)) return bad()
    const n = Number(t)
    return Number.isFinite(n) && (!integer || Number.isInteger(n)) && n >= min && n <= max ? good(n) : bad()
  }
}

/** A comma-separated list, empty entries dropped, each entry checked. */
function listOf (re: RegExp, detail: string): (v: string) => Parsed {
  return (v) => {
    const items = v.split(',').map((x) => x.trim()).filter((x) => x !== '')
    return items.every((x) => re.test(x)) ? good(Object.freeze(items)) : bad(detail)
  }
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)
const optional = (v: unknown, check: (v: unknown) => boolean): boolean => v === undefined || check(v)
const isString = (v: unknown): boolean => typeof v === 'string'
const isInt = (v: unknown): boolean => Number.isInteger(v)
const isPort = (v: unknown): boolean => isInt(v) || isString(v)

/** One of the app's probes as the injector passes it: a Kubernetes probe with httpGet, tcpSocket or grpc. */
function checkProbe (p: unknown): Parsed {
  if (!isObj(p)) return bad()
  const { httpGet: h, tcpSocket: tcp, grpc } = p
  const shapeOk = optional(h, (h) => isObj(h) && isPort(h.port) && optional(h.path, isString) && optional(h.host, isString) && optional(h.scheme, isString) &&
      optional(h.httpHeaders, (hs) => Array.isArray(hs) && hs.every((x) => isObj(x) && isString(x.name) && isString(x.value)))) &&
    optional(tcp, (t) => isObj(t) && isPort(t.port) && optional(t.host, isString)) &&
    optional(grpc, (g) => isObj(g) && isInt(g.port) && optional(g.service, isString)) &&
    optional(p.timeoutSeconds, (s) => typeof s === 'number' && s > 0 && Number.isFinite(s)) &&
    optional(p.periodSeconds, (s) => typeof s === 'number' && s > 0 && Number.isFinite(s)) &&
    optional(p.failureThreshold, isInt) && optional(p.successThreshold, isInt)
  if (!shapeOk) return bad()
  return h === undefined && tcp === undefined && grpc === undefined ? bad('a probe needs httpGet, tcpSocket or grpc') : good(p)
}

const PROBE_KEY = /^\/app-health\/[^/]+\/(livez|readyz|startupz)$/

/** A JSON setting: empty is `{}`; bad JSON is undefined (refused by the caller). */
function parseJson (v: string): unknown {
  if (v.trim() === '') return {}
  try { return JSON.parse(v) as unknown } catch { return undefined }
}

function parseProbes (v: string): Parsed {
  const probes = parseJson(v)
  if (!isObj(probes)) return bad()
  for (const [key, probe] of Object.entries(probes)) {
    if (!PROBE_KEY.test(key)) return bad('keys are /app-health/<container>/<livez|readyz|startupz>')
    const r = checkProbe(probe)
    if (!r.ok) return r
  }
  return good(probes)
}

const isScalar = (v: unknown): v is string | number | boolean => typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean'
const podSettings = new Set(SETTINGS.filter(podSettable).map((s) => s.env))
/** Settings that describe one pod, which the injector derives from it when its annotations don't say: no defaults. */
const PER_POD = new Set(['DOORMAN_APP_PORT', 'DOORMAN_SERVICE'])

/** The injector's defaults for the sidecar: DOORMAN_* settings a pod annotation may set, to scalar values. */
function parseSettings (v: string): Parsed {
  const o = parseJson(v)
  if (!isObj(o) || !Object.values(o).every(isScalar)) return bad()
  const problems = Object.keys(o).flatMap((k) => PER_POD.has(k)
    ? [`${k} is each pod's own (its annotation, else what the injector reads from the pod)`]
    : podSettings.has(k) ? [] : [`${k} is not a setting a pod annotation may set`])
  if (problems.length > 0) return bad(problems.join('; '))
  return good(Object.freeze(Object.fromEntries(Object.entries(o).map(([k, x]) => [k, String(x)]))))
}

/** A container's resources: requests and limits of cpu and memory, as Kubernetes quantities. */
function parseResources (v: string): Parsed {
  const o = parseJson(v)
  const only = (x: unknown, keys: string[]): x is Record<string, unknown> => isObj(x) && Object.keys(x).every((k) => keys.includes(k))
  if (!only(o, ['requests', 'limits'])) return bad()
  const out: Record<string, Record<string, string>> = {}
  for (const [part, q] of Object.entries(o)) {
    if (q === undefined) continue
    if (!only(q, ['cpu', 'memory'])) return bad()
    out[part] = {}
    for (const [k, x] of Object.entries(q)) {
      if (x === undefined) continue
      if (typeof x !== 'string' && typeof x !== 'number') return bad()
      if (!QUANTITY.test(String(x))) return bad('quantities look like 100m, 128Mi or 1')
      out[part][k] = String(x)
    }
  }
  return good(out)
}

const INT = /^\d+$/
const DECIMAL = /^\d+(\.\d+)?$/
const REGISTRY = /^(memory|(redis|rediss|redis\+sentinel|redis\+cluster):\/\/\S+|file:\/\/\/\S*)$/
const HOST = /^[A-Za-z0-9.:-]+$/
const BRACKETED = /^\[([0-9A-Fa-f:.]+)\]$/

/** A host name or IP address; an IPv6 address may come in brackets (`[::1]`) and is kept without them. */
function parseHost (v: string): Parsed {
  const t = v.trim()
  const m = BRACKETED.exec(t)
  if (m !== null) return isIPv6(m[1]) ? good(m[1]) : bad('brackets hold an IPv6 address')
  if (!HOST.test(t)) return bad()
  if (t.includes(':') && !isIPv6(t)) return bad('a colon only belongs in an IPv6 address')
  return good(t)
}

function parserFor (s: Setting): { parse: (v: string) => Parsed, accepts: string } {
  switch (s.kind) {
    case 'nice':
      return { parse: numberIn(/^-?\d+$/, -20, 19), accepts: 'a nice value, a whole number from -20 to 19' }
    case 'port':
      return { parse: numberIn(INT, 0, 65535), accepts: 'a port number from 0 to 65535' }
    case 'int':
      return { parse: numberIn(INT, 1, Number.MAX_SAFE_INTEGER), accepts: 'a whole number of at least 1' }
    case 'count':
      return { parse: numberIn(INT, 0, Number.MAX_SAFE_INTEGER), accepts: 'a whole number of at least 0' }
    case 'percent':
      return { parse: numberIn(DECIMAL, 0, 100, false), accepts: 'a percentage from 0 to 100' }
    case 'number':
      return { parse: numberIn(DECIMAL, Number.MIN_VALUE, Number.MAX_VALUE, false), accepts: 'a positive number such as 1.0' }
    case 'duration':
      return { parse: (v) => { const d = parseDuration(v); return d === undefined ? bad() : good(d) }, accepts: 'a duration such as 250ms, 5s or 2m' }
    case 'enum':
    case 'level': {
      const values = s.kind === 'level' ? LEVELS : s.values ?? []
      return { parse: (v) => values.includes(v) ? good(v) : bad(), accepts: `one of ${values.join(', ')}` }
    }
    case 'list':
      return { parse: listOf(/^\//, 'globs start with /'), accepts: 'comma-separated path globs starting with / (such as /checkout/*)' }
    case 'globs':
      return { parse: listOf(/^((org|env):)?[a-z0-9._*?-]{1,253}$/, 'globs hold lower-case letters, digits, ., _, -, * and ?, after an optional org: or env:'), accepts: 'comma-separated service name globs (such as orders,pay-*) or org:/env: globs (org:finance)' }
    case 'label':
      return { parse: (v) => v.trim() === '' || LABEL.test(v.trim()) ? good(v.trim()) : bad(), accepts: 'a name of lower-case letters, digits, ., _ and - (at most 63), or empty' }
    case 'check':
      return {
        parse: (v) => {
          try { return good(parseCheck(v)) } catch (err) { return bad((err as Error).message) }
        },
        accepts: 'http:PORT/PATH, https:PORT/PATH, tcp:PORT or grpc:PORT/SERVICE (empty: the lane\'s /readyz)'
      }
    case 'json':
      return { parse: parseProbes, accepts: 'a JSON object from /app-health/<container>/<livez|readyz|startupz> to a probe with httpGet, tcpSocket or grpc' }
    case 'settings':
      return { parse: parseSettings, accepts: 'a JSON object from DOORMAN_* settings a pod annotation may set to their values' }
    case 'resources':
      return { parse: parseResources, accepts: 'a JSON object {"requests":{"cpu":…,"memory":…},"limits":{…}} of Kubernetes quantities' }
    case 'registry':
      return { parse: (v) => REGISTRY.test(v.trim()) ? good(v.trim()) : bad(), accepts: 'memory, redis://…, rediss://…, redis+sentinel://…, redis+cluster://… or file:///directory' }
    case 'app-registry':
      return { parse: (v) => v.trim() === '' ? good('') : parseZooKeeperUrl(v) !== null ? good(v.trim()) : bad(), accepts: 'empty, or zookeeper://host:port[,host:port…][/root][?port=N] (Dubbo on ZooKeeper)' }
    case 'services':
      return { parse: listOf(/^[A-Za-z_$][A-Za-z0-9_$.-]*$/, 'names such as org.apache.dubbo.demo.DemoService'), accepts: 'comma-separated service (Dubbo interface) names' }
    case 'host':
      return { parse: parseHost, accepts: 'a host name or IP address (an IPv6 address with or without brackets)' }
    case 'allow':
      return {
        parse: (v) => { try { parseAllow(v); return good(v.trim()) } catch (err) { return err instanceof AllowError ? bad(err.message) : bad() } },
        accepts: 'comma-separated SPIFFE ID patterns (spiffe://cluster.local/ns/shop/sa/*), each optionally after a path prefix and = (/admin/=spiffe://…)'
      }
    case 'path':
    case 'string':
      return { parse: good, accepts: 'text' }
  }
}

function show (value: string, secret: boolean | undefined): string {
  return secret === true ? '<redacted>' : JSON.stringify(value)
}

export interface LoadOptions {
  /** Check that the sidecar's required settings are present (`doorman run`). */
  sidecar?: boolean
}

/** Reads the environment (process.env unless given) into a frozen Config, or throws ConfigError. */
export function loadConfig (env: NodeJS.ProcessEnv = process.env, opts: LoadOptions = {}): Readonly<Config> {
  const out: Record<string, unknown> = {}
  for (const s of SETTINGS) {
    let raw = env[s.env]
    if (s.env === 'DOORMAN_ADVERTISE_HOST' && (raw === undefined || raw === '')) raw = env.POD_IP !== undefined && env.POD_IP !== '' ? env.POD_IP : '127.0.0.1'
    const { parse, accepts } = parserFor(s)
    if (raw === undefined || (raw === '' && s.kind !== 'string' && s.kind !== 'allow' && s.kind !== 'list' && s.kind !== 'globs' && s.kind !== 'json' && s.kind !== 'settings' && s.kind !== 'services' && s.kind !== 'app-registry')) {
      if (s.default === undefined) {
        if (s.required === true && opts.sidecar === true) throw new ConfigError(s.env, `${s.env} is required: expected ${accepts}`)
        out[keyFor(s.env)] = undefined
        continue
      }
      raw = s.default
    }
    const r = parse(raw)
    if (!r.ok) throw new ConfigError(s.env, `${s.env}: got ${show(raw, s.secret)}; expected ${accepts}${r.detail !== undefined ? ` (${r.detail})` : ''}`)
    out[keyFor(s.env)] = r.value
  }
  const cfg = out as unknown as Config
  // The floor only matters for adaptive limits; a static limit below the default floor is fine.
  if (cfg.limitMode === 'static' && cfg.limitMin > cfg.maxConcurrency) cfg.limitMin = cfg.maxConcurrency
  if (cfg.limitMin > cfg.maxConcurrency) throw new ConfigError('DOORMAN_LIMIT_MIN', `DOORMAN_LIMIT_MIN: got ${cfg.limitMin}; expected at most DOORMAN_MAX_CONCURRENCY (${cfg.maxConcurrency})`)
  if (opts.sidecar === true && cfg.registry !== 'memory' && cfg.service === '') throw new ConfigError('DOORMAN_SERVICE', 'DOORMAN_SERVICE is required when DOORMAN_REGISTRY is not memory: expected a service name')
  if (cfg.flowHeader !== '' && !/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/.test(cfg.flowHeader)) throw new ConfigError('DOORMAN_FLOW_HEADER', `DOORMAN_FLOW_HEADER: got ${JSON.stringify(cfg.flowHeader)}; expected a header name (letters, digits and !#$%&'*+.^_\`|~-)`)
  if (cfg.flowHeader.toLowerCase().startsWith('x-doorman-')) throw new ConfigError('DOORMAN_FLOW_HEADER', `DOORMAN_FLOW_HEADER: got ${JSON.stringify(cfg.flowHeader)}; expected a header a proxy in front sets, not one of doorman's own x-doorman-* headers`)
  if (cfg.service !== '' && !SERVICE_NAME.test(cfg.service)) throw new ConfigError('DOORMAN_SERVICE', `DOORMAN_SERVICE: got ${JSON.stringify(cfg.service)}; expected a service name of lower-case letters, digits, '.', '-' or '_' (as in a Host header)`)
  for (const k of ['queueTimeout', 'upstreamTimeout', 'clientWriteTimeout', 'headersTimeout', 'idleTimeout', 'registryTtl', 'checkInterval', 'drainQuiet', 'checkTimeout'] as const) {
    if (cfg[k] <= 0) {
      const s = SETTINGS.find((x) => keyFor(x.env) === k) as Setting
      throw new ConfigError(s.env, `${s.env}: got 0; expected a duration above 0`)
    }
  }
  const ratio = Number(cfg.otelTracesSamplerArg)
  if (cfg.otelTracesSamplerArg.trim() === '' || !(ratio >= 0 && ratio <= 1)) throw new ConfigError('OTEL_TRACES_SAMPLER_ARG', `OTEL_TRACES_SAMPLER_ARG: got ${JSON.stringify(cfg.otelTracesSamplerArg)}; expected a ratio from 0 to 1`)
  for (const k of ['otelExporterOtlpEndpoint', 'otelExporterOtlpTracesEndpoint'] as const) {
    const v = cfg[k]
    if (v !== '' && !/^https?:\/\/[^\s]+$/.test(v)) {
      const name = k === 'otelExporterOtlpEndpoint' ? 'OTEL_EXPORTER_OTLP_ENDPOINT' : 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT'
      throw new ConfigError(name, `${name}: got ${JSON.stringify(v)}; expected an http:// or https:// URL`)
    }
  }
  if (parseResourceAttributes(cfg.otelResourceAttributes) === null) throw new ConfigError('OTEL_RESOURCE_ATTRIBUTES', `OTEL_RESOURCE_ATTRIBUTES: got ${JSON.stringify(cfg.otelResourceAttributes)}; expected key=value pairs separated by commas`)
  if (cfg.allow !== '' && cfg.mtls === 'off') throw new ConfigError('DOORMAN_ALLOW', 'DOORMAN_ALLOW: set, but DOORMAN_MTLS is off; expected DOORMAN_MTLS=permissive or strict (callers are known by their mTLS identity)')
  // The injector's defaults for the sidecar are checked as the sidecar checks them, together.
  try {
    if (Object.keys(cfg.sidecarEnv).length > 0) loadConfig(cfg.sidecarEnv)
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    throw new ConfigError('DOORMAN_SIDECAR_ENV', `DOORMAN_SIDECAR_ENV: ${err.message}`)
  }
  return Object.freeze(cfg)
}

/** The effective config for the start-up log line, secrets redacted. */
export function describeConfig (cfg: Readonly<Config>): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const s of SETTINGS) {
    const k = keyFor(s.env)
    const v = (cfg as unknown as Record<string, unknown>)[k]
    if (s.kind === 'settings') out[k] = Object.fromEntries(Object.entries(v as Record<string, string>).map(([name, x]) => [name, SETTINGS.find((e) => e.env === name)?.secret === true ? redactUrl(x) : x]))
    else out[k] = s.secret === true && v !== '' && v !== 'memory' ? redactUrl(String(v)) : v
  }
  return out
}

function redactUrl (v: string): string {
  return v.replace(/\/\/[^@/]*@/, '//<redacted>@').replace(/^(?!redis|rediss|memory).+$/, '<redacted>')
}

/** Variables Kubernetes sets for a Service named `doorman` (service links): not settings, never warned about. */
const SERVICE_LINK = /^DOORMAN_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT(_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)?)$/

function distance (a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const row = [i]
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1))
    prev = row
  }
  return prev[b.length]
}

/**
 * DOORMAN_* variables that name no setting (a typo such as DOORMAN_MAX_CONCURENCY means the default applies
 * unnoticed), each with the closest known setting's name; the entry point warns about them at start-up.
 */
export function unknownSettings (env: NodeJS.ProcessEnv = process.env): Array<{ variable: string, closest: string }> {
  const known = SETTINGS.map((s) => s.env)
  const out: Array<{ variable: string, closest: string }> = []
  for (const name of Object.keys(env).sort()) {
    if (!name.startsWith('DOORMAN_') || known.includes(name) || SERVICE_LINK.test(name)) continue
    let closest = known[0]
    let best = Infinity
    for (const k of known) {
      const d = distance(name, k)
      if (d < best) { best = d; closest = k }
    }
    out.push({ variable: name, closest })
  }
  return out
}

/** `key=value,key=value` (values percent-encoded, W3C Baggage style) as an object; null when malformed. */
export function parseResourceAttributes (s: string): Record<string, string> | null {
  const out: Record<string, string> = {}
  for (const part of s.split(',')) {
    if (part.trim() === '') continue
    const eq = part.indexOf('=')
    if (eq <= 0) return null
    try { out[part.slice(0, eq).trim()] = decodeURIComponent(part.slice(eq + 1).trim()) } catch { return null }
  }
  return out
}

/** Where spans go: the traces URL, or '' when tracing is off. */
export function tracesEndpoint (cfg: Readonly<Config>): string {
  if (cfg.otelSdkDisabled === 'true') return ''
  if (cfg.otelExporterOtlpTracesEndpoint !== '') return cfg.otelExporterOtlpTracesEndpoint
  if (cfg.otelExporterOtlpEndpoint === '') return ''
  return cfg.otelExporterOtlpEndpoint.replace(/\/+$/, '') + '/v1/traces'
}
