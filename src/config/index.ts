// The only reader of process.env. Validates every DOORMAN_* setting once, against schemas built from the
// settings table, and returns one frozen Config. A bad value throws ConfigError naming the variable.
import { z } from 'zod'
import { SETTINGS, QUANTITY, keyFor, podSettable, type Setting } from './table.js'
import { ConfigError } from '../core/errors.js'
import { SERVICE_NAME } from '../registry/types.js'

export { SETTINGS, annotationFor, keyFor } from './table.js'

export interface AppProbe {
  httpGet?: { path?: string, port: number | string, host?: string, scheme?: string, httpHeaders?: Array<{ name: string, value: string }> }
  tcpSocket?: { port: number | string, host?: string }
  grpc?: { port: number, service?: string }
  timeoutSeconds?: number
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
  appHost: string
  service: string
  cluster: string
  zone: string
  maxConcurrency: number
  limitMode: 'static' | 'adaptive'
  limitMin: number
  criticalPaths: readonly string[]
  lowPaths: readonly string[]
  criticalReserve: number
  maxQueue: number
  queueTimeout: number
  upstreamTimeout: number
  maxUpgrades: number
  maxHeaderSize: number
  headersTimeout: number
  registry: string
  advertiseHost: string
  registryTtl: number
  registerDelay: number
  outlierFailures: number
  outlierEjectTime: number
  outlierMaxEject: number
  warmup: number
  warmupAggression: number
  warmupMinWeight: number
  warmupInbound: 'off' | 'ramp'
  drainDelay: number
  drainQuiet: number
  drainTimeout: number
  appProbes: Readonly<Record<string, AppProbe>>
  livenessStall: number
  readinessStall: number
  appStall: number
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
const intText = z.string().trim().regex(/^\d+$/)

const probeSchema = z.object({
  httpGet: z.object({
    path: z.string().optional(),
    port: z.union([z.number().int(), z.string()]),
    host: z.string().optional(),
    scheme: z.string().optional(),
    httpHeaders: z.array(z.object({ name: z.string(), value: z.string() })).optional()
  }).optional(),
  tcpSocket: z.object({ port: z.union([z.number().int(), z.string()]), host: z.string().optional() }).optional(),
  grpc: z.object({ port: z.number().int(), service: z.string().optional() }).optional(),
  timeoutSeconds: z.number().positive().optional()
}).passthrough().refine((p) => p.httpGet !== undefined || p.tcpSocket !== undefined || p.grpc !== undefined, 'a probe needs httpGet, tcpSocket or grpc')

/** A JSON setting, parsed (bad JSON reported as such); empty is `{}`. */
const jsonText = z.string().transform((v, ctx) => {
  if (v.trim() === '') return {}
  try { return JSON.parse(v) as unknown } catch { ctx.addIssue({ code: 'custom', message: 'bad JSON' }); return z.NEVER }
})

const scalar = z.union([z.string(), z.number(), z.boolean()]).transform(String)
const podSettings = new Set(SETTINGS.filter(podSettable).map((s) => s.env))
/** Settings that describe one pod, which the injector derives from it when its annotations don't say: no defaults. */
const PER_POD = new Set(['DOORMAN_APP_PORT', 'DOORMAN_SERVICE'])
const settingsSchema = z.record(z.string(), scalar).superRefine((o, ctx) => {
  for (const k of Object.keys(o)) {
    if (PER_POD.has(k)) ctx.addIssue({ code: 'custom', message: `${k} is each pod's own (its annotation, else what the injector reads from the pod)` })
    else if (!podSettings.has(k)) ctx.addIssue({ code: 'custom', message: `${k} is not a setting a pod annotation may set` })
  }
})
const quantity = z.union([z.string(), z.number()]).transform(String).pipe(z.string().regex(QUANTITY, 'quantities look like 100m, 128Mi or 1'))
const cpuMemory = z.object({ cpu: quantity.optional(), memory: quantity.optional() }).strict()
const resourcesSchema = z.object({ requests: cpuMemory.optional(), limits: cpuMemory.optional() }).strict()

const probesSchema = z.record(z.string().regex(/^\/app-health\/[^/]+\/(livez|readyz|startupz)$/, 'keys are /app-health/<container>/<livez|readyz|startupz>'), probeSchema)

function schemaFor (s: Setting): { schema: z.ZodType, accepts: string } {
  switch (s.kind) {
    case 'nice':
      return { schema: z.string().trim().regex(/^-?\d+$/).transform(Number).pipe(z.number().int().min(-20).max(19)), accepts: 'a nice value, a whole number from -20 to 19' }
    case 'port':
      return { schema: intText.transform(Number).pipe(z.number().int().min(0).max(65535)), accepts: 'a port number from 0 to 65535' }
    case 'int':
      return { schema: intText.transform(Number).pipe(z.number().int().min(1).max(Number.MAX_SAFE_INTEGER)), accepts: 'a whole number of at least 1' }
    case 'count':
      return { schema: intText.transform(Number).pipe(z.number().int().min(0).max(Number.MAX_SAFE_INTEGER)), accepts: 'a whole number of at least 0' }
    case 'percent':
      return { schema: z.string().trim().regex(/^\d+(\.\d+)?$/).transform(Number).pipe(z.number().min(0).max(100)), accepts: 'a percentage from 0 to 100' }
    case 'number':
      return { schema: z.string().trim().regex(/^\d+(\.\d+)?$/).transform(Number).pipe(z.number().positive().finite()), accepts: 'a positive number such as 1.0' }
    case 'duration':
      return { schema: z.string().transform((v, ctx) => { const d = parseDuration(v); if (d === undefined) { ctx.addIssue({ code: 'custom', message: 'bad duration' }); return z.NEVER } return d }), accepts: 'a duration such as 250ms, 5s or 2m' }
    case 'enum':
      return { schema: z.enum(s.values as [string, ...string[]]), accepts: `one of ${(s.values ?? []).join(', ')}` }
    case 'level':
      return { schema: z.enum(LEVELS as [string, ...string[]]), accepts: `one of ${LEVELS.join(', ')}` }
    case 'list':
      return { schema: z.string().transform((v) => Object.freeze(v.split(',').map((x) => x.trim()).filter((x) => x !== ''))).pipe(z.array(z.string().regex(/^\//, 'globs start with /'))), accepts: 'comma-separated path globs starting with / (such as /checkout/*)' }
    case 'globs':
      return { schema: z.string().transform((v) => Object.freeze(v.split(',').map((x) => x.trim()).filter((x) => x !== ''))).pipe(z.array(z.string().regex(/^[a-z0-9._*?-]{1,253}$/, 'globs hold lower-case letters, digits, ., _, -, * and ?'))), accepts: 'comma-separated service name globs (such as orders,pay-*)' }
    case 'json':
      return { schema: jsonText.pipe(probesSchema), accepts: 'a JSON object from /app-health/<container>/<livez|readyz|startupz> to a probe with httpGet, tcpSocket or grpc' }
    case 'settings':
      return { schema: jsonText.pipe(settingsSchema).transform((v) => Object.freeze(v)), accepts: 'a JSON object from DOORMAN_* settings a pod annotation may set to their values' }
    case 'resources':
      return { schema: jsonText.pipe(resourcesSchema), accepts: 'a JSON object {"requests":{"cpu":…,"memory":…},"limits":{…}} of Kubernetes quantities' }
    case 'registry':
      return { schema: z.string().trim().regex(/^(memory|(redis|rediss|redis\+sentinel|redis\+cluster):\/\/\S+|file:\/\/\/\S*)$/), accepts: 'memory, redis://…, rediss://…, redis+sentinel://…, redis+cluster://… or file:///directory' }
    case 'host':
      return { schema: z.string().trim().regex(/^[A-Za-z0-9.:\-[\]]+$/), accepts: 'a host name or IP address' }
    case 'path':
    case 'string':
      return { schema: z.string(), accepts: 'text' }
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
    const { schema, accepts } = schemaFor(s)
    if (raw === undefined || (raw === '' && s.kind !== 'string' && s.kind !== 'list' && s.kind !== 'globs' && s.kind !== 'json' && s.kind !== 'settings')) {
      if (s.default === undefined) {
        if (s.required === true && opts.sidecar === true) throw new ConfigError(s.env, `${s.env} is required: expected ${accepts}`)
        out[keyFor(s.env)] = undefined
        continue
      }
      raw = s.default
    }
    const r = schema.safeParse(raw)
    if (!r.success) {
      const detail = r.error.issues.map((i) => i.message).filter((m) => m !== 'bad duration' && m !== 'bad JSON' && !m.startsWith('Invalid')).join('; ')
      throw new ConfigError(s.env, `${s.env}: got ${show(raw, s.secret)}; expected ${accepts}${detail !== '' ? ` (${detail})` : ''}`)
    }
    out[keyFor(s.env)] = r.data
  }
  const cfg = out as unknown as Config
  // The floor only matters for adaptive limits; a static limit below the default floor is fine.
  if (cfg.limitMode === 'static' && cfg.limitMin > cfg.maxConcurrency) cfg.limitMin = cfg.maxConcurrency
  if (cfg.limitMin > cfg.maxConcurrency) throw new ConfigError('DOORMAN_LIMIT_MIN', `DOORMAN_LIMIT_MIN: got ${cfg.limitMin}; expected at most DOORMAN_MAX_CONCURRENCY (${cfg.maxConcurrency})`)
  if (opts.sidecar === true && cfg.registry !== 'memory' && cfg.service === '') throw new ConfigError('DOORMAN_SERVICE', 'DOORMAN_SERVICE is required when DOORMAN_REGISTRY is not memory: expected a service name')
  if (cfg.service !== '' && !SERVICE_NAME.test(cfg.service)) throw new ConfigError('DOORMAN_SERVICE', `DOORMAN_SERVICE: got ${JSON.stringify(cfg.service)}; expected a service name of lower-case letters, digits, '.', '-' or '_' (as in a Host header)`)
  for (const k of ['queueTimeout', 'upstreamTimeout', 'headersTimeout', 'registryTtl', 'checkInterval', 'drainQuiet', 'checkTimeout'] as const) {
    if (cfg[k] <= 0) {
      const s = SETTINGS.find((x) => keyFor(x.env) === k) as Setting
      throw new ConfigError(s.env, `${s.env}: got 0; expected a duration above 0`)
    }
  }
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
