// Check definitions: what the central checker asks an instance to prove it is healthy. A definition travels in the
// instance's registry record (`check`), so the checker needs nothing but the record to probe it: a sidecar's comes
// from DOORMAN_CHECK (the pod annotation `doorman.io/check`), a file target's from DOORMAN_CHECK_TARGETS. Pure
// parsing and validation; no I/O. The probes themselves are in checks/ (one module per type).

/** `http`: a request answered with a status in `expect`; `tcp`: a connect; `grpc`: grpc.health.v1 Check says SERVING. */
export type CheckType = 'http' | 'tcp' | 'grpc'
export const CHECK_TYPES: readonly CheckType[] = ['http', 'tcp', 'grpc']

interface Common {
  /** The port probed (default: the instance's own port). */
  port?: number
  /** This check's timeout, ms (default DOORMAN_CHECK_TIMEOUT; never above the round interval). */
  timeout?: number
  /** Probe at most this often, ms (default: every round). */
  interval?: number
}

export interface HttpCheck extends Common {
  type: 'http'
  path: string
  method: string
  headers?: Record<string, string>
  /** Inclusive status range that counts as healthy. */
  expect: [number, number]
  /** HTTPS, verified against this CA file (PEM); `{}` verifies against the system's CAs. */
  tls?: { ca?: string }
}

export interface TcpCheck extends Common { type: 'tcp' }

export interface GrpcCheck extends Common {
  type: 'grpc'
  /** The service name asked for (empty: the server as a whole). */
  service: string
  /** TLS, verified against this CA file (PEM); absent: cleartext HTTP/2 (h2c). */
  tls?: { ca?: string }
}

export type CheckSpec = HttpCheck | TcpCheck | GrpcCheck

/** A refused definition, with what was wrong (`where` names the field). */
export class CheckSpecError extends Error {}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000 }
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'OPTIONS'])
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/
// Header values: visible ASCII and spaces, no control characters (no CR/LF smuggling through a file).
const VALUE = /^[\t\x20-\x7e]*$/
const GRPC_SERVICE = /^[A-Za-z0-9_.]{0,200}$/

function duration (v: unknown, where: string): number {
  if (typeof v === 'number' && Number.isFinite(v) && v > 0) return Math.round(v)
  const m = typeof v === 'string' ? /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$/.exec(v) : null
  const ms = m === null ? NaN : Number(m[1]) * UNITS[m[2] ?? 'ms']
  if (!(ms > 0) || !Number.isFinite(ms)) throw new CheckSpecError(`${where}: got ${JSON.stringify(v)}; expected a duration such as 500ms or 2s`)
  return Math.round(ms)
}

function port (v: unknown, where: string): number {
  const n = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 65535) throw new CheckSpecError(`${where}: got ${JSON.stringify(v)}; expected a port from 1 to 65535`)
  return n
}

/** `200`, `200-299`, `2xx`. */
export function parseExpect (v: unknown, where = 'expect'): [number, number] {
  // As stored in a registry record: [low, high].
  if (Array.isArray(v) && v.length === 2) return parseExpect(`${String(v[0])}-${String(v[1])}`, where)
  const text = String(v).trim()
  let m = /^([1-5])xx$/i.exec(text)
  if (m !== null) return [Number(m[1]) * 100, Number(m[1]) * 100 + 99]
  m = /^(\d{3})(?:\s*-\s*(\d{3}))?$/.exec(text)
  if (m !== null) {
    const lo = Number(m[1])
    const hi = m[2] === undefined ? lo : Number(m[2])
    if (lo >= 100 && hi <= 599 && lo <= hi) return [lo, hi]
  }
  throw new CheckSpecError(`${where}: got ${JSON.stringify(v)}; expected a status or a range such as 200, 200-299 or 2xx`)
}

function tls (v: unknown, where: string): { ca?: string } | undefined {
  if (v === undefined || v === false || v === null) return undefined
  if (v === true) return {}
  if (typeof v !== 'object' || Array.isArray(v)) throw new CheckSpecError(`${where}: expected true or {ca: FILE}`)
  const ca = (v as Record<string, unknown>).ca
  if (ca === undefined) return {}
  if (typeof ca !== 'string' || ca === '') throw new CheckSpecError(`${where}.ca: expected the path of a PEM file`)
  return { ca }
}

const KEYS: Record<CheckType, readonly string[]> = {
  http: ['type', 'port', 'timeout', 'interval', 'path', 'method', 'headers', 'expect', 'tls'],
  tcp: ['type', 'port', 'timeout', 'interval'],
  grpc: ['type', 'port', 'timeout', 'interval', 'service', 'tls']
}

/** A definition as a YAML or JSON object (the targets file's `check:`, a registry record's), checked field by field. */
export function checkFromObject (raw: unknown, where = 'check'): CheckSpec {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new CheckSpecError(`${where}: expected an object with a type (${CHECK_TYPES.join(', ')})`)
  const o = raw as Record<string, unknown>
  const type = o.type
  if (typeof type !== 'string' || !(CHECK_TYPES as readonly string[]).includes(type)) throw new CheckSpecError(`${where}.type: got ${JSON.stringify(type)}; expected one of ${CHECK_TYPES.join(', ')}`)
  const t = type as CheckType
  for (const k of Object.keys(o)) if (!KEYS[t].includes(k)) throw new CheckSpecError(`${where}.${k}: not a field of a ${t} check (${KEYS[t].join(', ')})`)
  const common: Common = {}
  if (o.port !== undefined) common.port = port(o.port, `${where}.port`)
  if (o.timeout !== undefined) common.timeout = duration(o.timeout, `${where}.timeout`)
  if (o.interval !== undefined) common.interval = duration(o.interval, `${where}.interval`)
  if (t === 'tcp') return { type: 'tcp', ...common }
  if (t === 'grpc') {
    const service = o.service ?? ''
    if (typeof service !== 'string' || !GRPC_SERVICE.test(service)) throw new CheckSpecError(`${where}.service: got ${JSON.stringify(service)}; expected a gRPC service name such as pay.v1.Pay`)
    const s = tls(o.tls, `${where}.tls`)
    return { type: 'grpc', ...common, service, ...(s !== undefined ? { tls: s } : {}) }
  }
  const path = o.path ?? '/'
  if (typeof path !== 'string' || !path.startsWith('/') || !VALUE.test(path) || path.includes(' ')) throw new CheckSpecError(`${where}.path: got ${JSON.stringify(path)}; expected a path starting with /`)
  const method = String(o.method ?? 'GET').toUpperCase()
  if (!METHODS.has(method)) throw new CheckSpecError(`${where}.method: got ${JSON.stringify(o.method)}; expected one of ${[...METHODS].join(', ')}`)
  let headers: Record<string, string> | undefined
  if (o.headers !== undefined) {
    if (typeof o.headers !== 'object' || o.headers === null || Array.isArray(o.headers)) throw new CheckSpecError(`${where}.headers: expected a map of header names to values`)
    headers = {}
    for (const [k, v] of Object.entries(o.headers as Record<string, unknown>)) {
      if (!TOKEN.test(k) || (typeof v !== 'string' && typeof v !== 'number') || !VALUE.test(String(v))) throw new CheckSpecError(`${where}.headers.${k}: expected a header name and a printable value`)
      headers[k.toLowerCase()] = String(v)
    }
  }
  const expect = o.expect === undefined ? [200, 299] as [number, number] : parseExpect(o.expect, `${where}.expect`)
  const s = tls(o.tls, `${where}.tls`)
  return { type: 'http', ...common, path, method, ...(headers !== undefined ? { headers } : {}), expect, ...(s !== undefined ? { tls: s } : {}) }
}

/**
 * The short form of the pod annotation `doorman.io/check` (DOORMAN_CHECK): `http:8080/health`, `https:8443/health`,
 * `tcp:8080`, `grpc:9090/pay.v1.Pay` (`grpc:9090` for the server as a whole). Empty: null (the lane's /readyz).
 */
export function parseCheck (text: string): CheckSpec | null {
  const v = text.trim()
  if (v === '') return null
  const m = /^(http|https|tcp|grpc):(\d{1,5})(\/.*)?$/.exec(v)
  if (m === null) throw new CheckSpecError(`got ${JSON.stringify(text)}; expected http:PORT/PATH, https:PORT/PATH, tcp:PORT or grpc:PORT/SERVICE`)
  const [, kind, p, rest] = m
  if (kind === 'tcp') {
    if (rest !== undefined) throw new CheckSpecError(`got ${JSON.stringify(text)}; a tcp check takes a port only (tcp:8080)`)
    return checkFromObject({ type: 'tcp', port: p })
  }
  if (kind === 'grpc') return checkFromObject({ type: 'grpc', port: p, service: (rest ?? '/').slice(1) })
  return checkFromObject({ type: 'http', port: p, path: rest ?? '/', ...(kind === 'https' ? { tls: true } : {}) })
}

/** A stable text of a definition (to notice a changed check). */
export function checkKey (c: CheckSpec | undefined): string {
  return c === undefined ? '' : JSON.stringify(sorted(c))
}

function sorted (v: unknown): unknown {
  if (typeof v !== 'object' || v === null) return v
  if (Array.isArray(v)) return v.map(sorted)
  return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sorted((v as Record<string, unknown>)[k])]))
}
