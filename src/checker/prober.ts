// The Prober: runs a round's probes through a pool of at most `concurrency` at once, and hands each result on as
// soon as it is known. An instance whose record carries a check definition (a file target's, or a sidecar's
// `doorman.io/check`) gets that check, through the module of its type (checks/). Otherwise: an instance with an admin
// port gets an HTTP GET of its lane's /readyz (the instance's own verdict: app ready, registered, not draining, main
// loop alive; a frozen process answers nothing); one without gets a TCP connect to its address. Every probe is
// bounded by `timeout` (a definition's own timeout, at most `maxTimeout`), connect included.
import { Agent } from 'undici'
import type { Instance } from '../registry/types.js'
import { version } from '../core/version.js'
import type { CheckSpec, CheckType } from './spec.js'
import { checkModules, type CheckModule } from './checks/index.js'
import { tcpConnect } from './checks/tcp.js'

/** One instance to probe, as the Dispatcher saw it. */
export interface Target {
  service: string
  cluster: string
  id: string
  /** `host:port` of the instance's inbound listener. */
  address: string
  /** The instance's lane port (0 = none: TCP connect to `address`). */
  adminPort: number
  ejected: boolean
  instance: Instance
  /** The instance's own check (absent: the lane's /readyz, or a TCP connect). */
  check?: CheckSpec
}

/** What kind of probe a target gets: its check's type, `lane` (the sidecar's /readyz) or `connect` (no lane). */
export type ProbeKind = CheckType | 'lane' | 'connect'
export const PROBE_KINDS: readonly ProbeKind[] = ['lane', 'connect', 'http', 'tcp', 'grpc']

export function probeKind (t: Pick<Target, 'check' | 'adminPort'>): ProbeKind {
  return t.check?.type ?? (t.adminPort > 0 ? 'lane' : 'connect')
}

/** The key of an instance in the Decider's and the Performer's maps. */
export function targetKey (service: string, id: string): string { return `${service}\0${id}` }

import type { ProbeOutcome } from './checks/types.js'
export { OUTCOMES, type ProbeOutcome } from './checks/types.js'

export interface ProbeResult {
  target: Target
  ok: boolean
  outcome: ProbeOutcome
  /** The HTTP status, or the error code. */
  detail: string
  ms: number
}

export interface ProberOptions {
  concurrency: number
  /** One probe's timeout in milliseconds, connect included. */
  timeout: number
  /** The lane path probed (default /readyz). */
  path?: string
  /** How long an idle probe connection is kept for the next round (default 4 s). */
  keepAlive?: number
  /** The longest a check definition's own timeout may be, ms (default `timeout`): the round interval. */
  maxTimeout?: number
}

/** Splits `host:port` (IPv6 hosts in brackets). */
export function splitAddress (address: string): { host: string, port: number } {
  const colon = address.lastIndexOf(':')
  let host = colon === -1 ? address : address.slice(0, colon)
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1)
  return { host, port: colon === -1 ? 0 : Number(address.slice(colon + 1)) }
}

function errorCode (err: unknown): string {
  const e = err as { code?: string, cause?: { code?: string }, name?: string }
  return e?.cause?.code ?? e?.code ?? e?.name ?? 'error'
}

const NO_CHECKS = new Map<CheckType, CheckModule>()

export class Prober {
  readonly #concurrency: number
  readonly #timeout: number
  readonly #path: string
  readonly #maxTimeout: number
  readonly #agent: Agent
  /** Check modules by type, created at the first target with a definition. */
  #checks: Map<CheckType, CheckModule> = NO_CHECKS
  readonly #keepAlive: number
  #stopped = false

  constructor (opts: ProberOptions) {
    this.#concurrency = Math.max(1, opts.concurrency)
    this.#timeout = opts.timeout
    this.#path = opts.path ?? '/readyz'
    const keepAlive = opts.keepAlive ?? 4000
    this.#keepAlive = keepAlive
    this.#maxTimeout = Math.max(opts.maxTimeout ?? opts.timeout, 1)
    // Connections are kept between rounds (one TCP handshake per instance, not one per probe); a reused connection
    // to a frozen process fails the same way a new one would: no answer before the timeout.
    this.#agent = new Agent({ keepAliveTimeout: keepAlive, keepAliveMaxTimeout: keepAlive, pipelining: 1, connect: { timeout: opts.timeout } })
  }

  /** Probes every target, calling `onResult` as each finishes; resolves once all have. */
  async run (targets: readonly Target[], onResult: (r: ProbeResult) => void): Promise<void> {
    let next = 0
    const worker = async (): Promise<void> => {
      while (next < targets.length && !this.#stopped) {
        const target = targets[next++]
        onResult(await this.probe(target))
      }
    }
    await Promise.all(Array.from({ length: Math.min(this.#concurrency, targets.length) }, worker))
  }

  /** One probe; never throws. */
  async probe (target: Target): Promise<ProbeResult> {
    const t0 = performance.now()
    const done = (outcome: ProbeOutcome, detail: string): ProbeResult => ({ target, ok: outcome === 'ok', outcome, detail, ms: performance.now() - t0 })
    const { host, port } = splitAddress(target.address)
    const check = target.check
    if (check !== undefined) {
      const p = check.port ?? port
      if (host === '' || !(p > 0)) return done('error', 'no address')
      if (this.#checks === NO_CHECKS) this.#checks = checkModules({ keepAlive: this.#keepAlive })
      const mod = this.#checks.get(check.type)
      if (mod === undefined) return done('error', `no ${check.type} check`)
      const r = await mod.probe(check, { host, port: p, timeout: Math.min(check.timeout ?? this.#timeout, this.#maxTimeout) })
      return done(r.outcome, r.detail)
    }
    if (host === '' || !(port > 0 || target.adminPort > 0)) return done('error', 'no address')
    if (target.adminPort > 0) return await this.#http(host, target.adminPort, done)
    const r = await tcpConnect(host, port, this.#timeout)
    return done(r.outcome, r.detail)
  }

  async #http (host: string, port: number, done: (o: ProbeOutcome, d: string) => ProbeResult): Promise<ProbeResult> {
    const ac = new AbortController()
    const timer = setTimeout(() => { ac.abort() }, this.#timeout)
    try {
      const origin = `http://${host.includes(':') ? `[${host}]` : host}:${port}`
      const res = await this.#agent.request({ origin, path: this.#path, method: 'GET', signal: ac.signal, headers: { 'user-agent': `doorman-checker/${version}` } })
      await res.body.dump({ limit: 16_384 })
      if (ac.signal.aborted) return done('timeout', 'timeout')
      return done(res.statusCode >= 200 && res.statusCode < 300 ? 'ok' : 'status', String(res.statusCode))
    } catch (err) {
      if (ac.signal.aborted) return done('timeout', 'timeout')
      const code = errorCode(err)
      if (code === 'UND_ERR_CONNECT_TIMEOUT') return done('timeout', code)
      return done(code === 'ECONNREFUSED' ? 'refused' : 'error', code)
    } finally {
      clearTimeout(timer)
    }
  }

  /** Starts no more probes (those in flight finish within the timeout). */
  stop (): void { this.#stopped = true }

  async close (): Promise<void> {
    this.#stopped = true
    await this.#agent.close().catch(() => {})
    await Promise.all([...this.#checks.values()].map(async (m) => { await m.close() }))
  }
}
