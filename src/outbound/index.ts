// The outbound lane: the app's calls to other services, on a loopback-only listener (DOORMAN_OUTBOUND_PORT).
// The service is named by the Host header or an absolute-form request (so HTTP_PROXY works); doorman balances over
// the service's `up` and `warming` instances from its registry watch (weighted power-of-two-choices, warmup weights
// included), keeps an undici pool per instance, and:
//   - drops an instance for new requests the moment one of its responses says x-doorman-draining (until the registry
//     reports it routable again in a newer record, it registers anew, or 10 s pass);
//   - retries once on another instance when the connection was refused, or reset before any response byte
//     (idempotent methods; any method when nothing was sent), or when the instance shed the request (503 with
//     x-doorman-shed: the app never saw it);
//   - ejects an instance after consecutive gateway failures, never more than DOORMAN_OUTLIER_MAX_EJECT percent of
//     the service's instances at once (the protection threshold);
//   - answers 503 with x-doorman-error when the service has no usable instance.
// HTTP/2 calls (h2c prior knowledge, told apart by the preface on the same port) are balanced per stream and sent to
// the providers over h2c: h2.ts.
import type { IncomingMessage, ServerResponse, Server } from 'node:http'
import { http } from '../core/http.js'
import { logProxyError, type Logger } from '../core/log.js'
import { NoInstanceError, NoServiceError, MtlsError, type DoormanError } from '../core/errors.js'
import type { OutboundTls } from '../tls/outbound.js'
import { respondError } from '../core/respond.js'
import { Metrics } from '../metrics/index.js'
import { SERVICE_NAME, type Change, type Instance, type Registry, type Watch } from '../registry/types.js'
import { Balancer } from './balancer.js'
import { Endpoint, type PoolSettings } from './endpoint.js'
import { ejectBudget } from '../protection/index.js'
import { detectProtocol, type Connections } from '../proxy/detect.js'
import { H2_MAX_HEADER_COUNT } from '../proxy/h2-server.js'
import type { Observer, Subject } from '../observe/index.js'
import { Exchange, type Client, type ExchangeTrace, type Outcome, type Policy, type Route } from '../proxy/exchange.js'
import { H1Client } from '../proxy/client.js'
import type { Waiter } from '../limiter/index.js'
import { OutboundH2 } from './h2.js'
import { RetryBudget } from './retry-budget.js'

export { Balancer } from './balancer.js'
export { Endpoint } from './endpoint.js'

export interface OutlierSettings {
  /** Consecutive gateway failures that eject an instance. */
  failures: number
  /** Base ejection time in milliseconds (multiplied by the number of ejections, at most 10×). */
  ejectTime: number
  /** Most percent of a service's instances ejected at once. */
  maxEject: number
  /** Panic mode: below this percent of routable instances, balance over all registered non-draining ones (0 = off). */
  panicThreshold?: number
}

export interface OutboundOptions {
  port: number
  registry: Registry
  metrics: Metrics
  log: Logger
  upstreamTimeout: number
  outlier: OutlierSettings
  /** Most connections per instance (default 64). */
  connections?: number
  /** Request bodies up to this size are buffered so the request can be retried (default 64 KiB). */
  maxRetryBody?: number
  /** Longest a response write may wait on a local app that reads nothing (default 30 s). */
  clientWriteTimeout?: number
  /** Longest a response's drain flag keeps an instance out without the registry agreeing (default 10 s). */
  drainMemoryMs?: number
  /** HTTP/2 sessions with no open stream are closed after this (default 60 s). */
  idleTimeout?: number
  /** Most connections from the app open at once (0: no cap). */
  maxConnections?: number
  /** Largest request header block (default 16 KiB). */
  maxHeaderSize?: number
  /** Spans and the access log (null: neither on). */
  observer?: Observer | null
  /** DOORMAN_MTLS permissive or strict: mTLS to the instances that take it (strict: to no other). */
  tls?: OutboundTls
  /** Retry budget per service (DOORMAN_RETRY_BUDGET, DOORMAN_RETRY_MIN_PER_SECOND); default 20 % plus 10 per second. */
  retryBudget?: { percent: number, minPerSecond: number }
}

/** Backoff before retrying a refused or reset connection elsewhere: 25 ms, jittered by ±50 %. */
const RETRY_BACKOFF_MS = 25

/** Most services watched at once (names the app asks for that have no instances are dropped first). */
const MAX_SERVICES = 1000
/** A service with no instances and no requests for this long stops being watched. */
const IDLE_MS = 60_000

/**
 * One service's endpoints, fed by a registry watch; and the outbound lane's policy for the proxy core on the calls
 * to it: every attempt picks an instance (weighted, warmup, ejection, drain flag, panic mode), a provider's shed
 * answer or a refused connection goes once more elsewhere, and what each instance did counts toward its ejection.
 */
export class Upstream implements Policy<Endpoint> {
  readonly service: string
  readonly balancer: Balancer<Endpoint>
  readonly endpoints = new Map<string, Endpoint>()
  readonly watch: Watch
  /** Retries allowed to this service (retry-budget.ts). */
  readonly budget: RetryBudget
  lastUsed = performance.now()
  #out: Outbound
  readonly #subject: Subject<Endpoint>
  /** Calls whose retry the budget already granted (asked once when the shed answer arrives, again at its end). */
  readonly #granted = new WeakSet<Exchange<Endpoint>>()

  constructor (out: Outbound, service: string) {
    this.#out = out
    this.service = service
    this.#subject = {
      lane: 'outbound',
      service,
      target: (ex) => {
        const ep = ex.target
        return ep === null ? null : { address: ep.address, weight: ep.weight(performance.now()) }
      }
    }
    this.budget = new RetryBudget(out.retryBudget)
    const threshold = out.outlier.panicThreshold ?? 0
    this.balancer = new Balancer<Endpoint>({
      panicThreshold: threshold,
      onPanic: (panic, routable, total) => {
        out.metrics.outboundPanic.set(service, Number(panic))
        if (panic) out.metrics.outboundPanics.set(service, (out.metrics.outboundPanics.get(service) ?? 0) + 1)
        if (panic) out.log.warn({ service, routable, total, threshold }, 'panic mode: too few instances routable, balancing over every registered instance that is not draining (DOORMAN_OUTBOUND_PANIC_THRESHOLD)')
        else out.log.info({ service, routable, total, threshold }, 'panic mode over: enough instances routable again')
      }
    })
    this.watch = out.registry.watch(service, (_view, change) => { this.#onChange(change) })
  }

  #onChange (change: Change): void {
    const now = performance.now()
    if (change.type === 'put') {
      const inst: Instance = change.instance
      const ep = this.endpoints.get(inst.id)
      if (ep !== undefined && ep.address === inst.address && ep.inst.identity === inst.identity && ep.inst.mtls === inst.mtls) {
        ep.update(inst, now)
      } else {
        if (ep !== undefined) this.#remove(ep)
        this.endpoints.set(inst.id, new Endpoint(inst, now, this.#out.poolSettings))
        this.balancer.set([...this.endpoints.values()])
      }
      this.balancer.invalidate()
    } else if (change.type === 'delete') {
      const ep = this.endpoints.get(change.id)
      if (ep !== undefined) this.#remove(ep)
    }
  }

  #remove (ep: Endpoint): void {
    this.endpoints.delete(ep.id)
    ep.removed = true
    this.balancer.set([...this.endpoints.values()])
    if (ep.inflight === 0) void ep.close().catch(() => {})
  }

  /** Counts a gateway failure or a success toward passive ejection. */
  outcome (ep: Endpoint, failed: boolean): void {
    if (!failed) { ep.failures = 0; return }
    ep.failures++
    const o = this.#out.outlier
    const now = performance.now()
    if (ep.failures < o.failures || ep.ejected(now)) return
    let total = 0
    let ejected = 0
    for (const e of this.endpoints.values()) {
      const tier = e.tier(now)
      if (tier === 2 || tier === -1) continue
      total++
      if (e.ejected(now)) ejected++
    }
    if (ejected + 1 > ejectBudget(total, o.maxEject)) {
      this.#out.log.warn({ service: this.service, id: ep.id, address: ep.address, failures: ep.failures, ejected, total }, 'outlier not ejected: the protection threshold is reached')
      ep.failures = 0
      return
    }
    if (now - ep.lastEjectedAt > o.ejectTime * 20) ep.ejections = 0
    ep.ejections++
    ep.lastEjectedAt = now
    const ms = o.ejectTime * Math.min(ep.ejections, 10)
    ep.ejectedUntil = now + ms
    ep.failures = 0
    this.balancer.invalidate()
    Metrics.inc(this.#out.metrics.outboundEjections, this.service)
    this.#out.log.warn({ service: this.service, id: ep.id, address: ep.address, forMs: ms }, 'outlier ejected after consecutive failures')
  }

  /** A request finished on `ep`. */
  release (ep: Endpoint): void {
    ep.inflight--
    if (ep.removed && ep.inflight === 0) void ep.close().catch(() => {})
  }

  // --- the proxy core's Policy ---
  /** The local app is the client: its x-forwarded-* stand. */
  readonly trusted = true
  /** A provider's x-doorman-* signals reach the app (it may be a doorman-aware client); the lane reads them too. */
  readonly stripOwn = false
  observe (ex: Exchange<Endpoint>): ExchangeTrace | null {
    const o = this.#out.observer
    return o === null ? null : o.start(ex, this.#subject)
  }

  get writeTimeout (): number { return this.#out.clientWriteTimeout }
  get maxRetryBody (): number { return this.#out.maxRetryBody }
  extra (): null { return null }
  admit (): true { return true }
  cancel (_w: Waiter): void {}

  route (ex: Exchange<Endpoint>, retry: boolean): Route | null {
    const prev = ex.target
    const ep = this.balancer.pick(performance.now(), retry && prev !== null ? prev : undefined)
    if (ep === undefined) return null
    if (prev === null) {
      this.budget.request()
      const m = this.#out.metrics
      m.outboundInflight.set(this.service, (m.outboundInflight.get(this.service) ?? 0) + 1)
    }
    ep.inflight++
    ex.target = ep
    const tls = this.#out.poolSettings.tls
    if (tls?.mode === 'strict' && !ep.mtls) return refuseRoute(tls, this.service, ep.inst.id)
    return ex.client.h2 ? ep.h2 : ep.pool
  }

  noRoute (): DoormanError { return new NoInstanceError(this.service) }

  /**
   * Another instance to try, and the retry budget allows it. A call the budget refuses gets the provider's own answer
   * (its 503, or gRPC's 14, with x-doorman-shed), or doorman's error for a refused or reset connection.
   */
  canRetry (ex: Exchange<Endpoint>): boolean {
    if (this.balancer.pick(performance.now(), ex.target ?? undefined) === undefined) return false
    if (this.#granted.has(ex)) return true
    if (!this.budget.tryRetry()) {
      Metrics.inc(this.#out.metrics.outboundRetryExhausted, this.service)
      return false
    }
    this.#granted.add(ex)
    return true
  }

  /** A shed answer is sent elsewhere at once (the app there never saw it); a refused or reset connection after a jittered backoff. */
  retryDelay (_ex: Exchange<Endpoint>, reason: string): number {
    return reason === 'shed' ? 0 : RETRY_BACKOFF_MS * (0.5 + Math.random())
  }

  inspect (ex: Exchange<Endpoint>, status: number, raw: Buffer[]): 'pass' | 'retry' {
    // An attempt's response comes from the instance route() set as the target.
    const ep = ex.target
    if (ep === null) return 'pass'
    let shed = false
    let doormanError = false
    let grpcStatus = ''
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]
      if (name.length < 11 || name.length > 18) continue
      const lower = name.toString('latin1').toLowerCase()
      if (lower === 'x-doorman-draining') {
        // The instance drains: no new requests to it from now on, before the registry event even arrives.
        if (ep.sawDraining(performance.now())) this.balancer.invalidate()
      } else if (lower === 'x-doorman-shed') shed = true
      else if (lower === 'x-doorman-error') doormanError = true
      else if (lower === 'grpc-status') grpcStatus = raw[i + 1].toString('latin1')
    }
    // Shed before the app there saw it (503, or gRPC's UNAVAILABLE, with x-doorman-shed): safe to send elsewhere.
    if (shed && (status === 503 || (status === 200 && grpcStatus === '14'))) return 'retry'
    this.outcome(ep, !shed && ((status >= 502 && status <= 504) || (doormanError && grpcStatus !== '')))
    return 'pass'
  }

  attemptEnded (ex: Exchange<Endpoint>, failed: boolean | undefined): void {
    const ep = ex.target
    if (ep === null) return
    if (failed !== undefined) this.outcome(ep, failed)
    this.release(ep)
  }

  retrying (_ex: Exchange<Endpoint>, reason: string): void {
    Metrics.inc(this.#out.metrics.outboundRetries, `${this.service}\t${reason}`)
  }

  /**
   * Per-dependency saturation (seed 001): requests in flight to the service, their latency, and the ones that failed
   * (`502`–`504`, other `5xx`, or `incomplete`: the response never finished, e.g. the app gave up waiting) — counted
   * only for requests that went to an instance, so the labels stay bounded by the registry.
   */
  settle (ex: Exchange<Endpoint>, o: Outcome): void {
    const m = this.#out.metrics
    const service = this.service
    const err = o.err
    const clientsFault = err !== null && err.status < 500
    const label = o.kind === 'ok' ? 'ok' : o.kind === 'aborted' ? 'aborted' : o.kind === 'no-route' ? 'no-instance' : clientsFault ? 'bad-request' : 'error'
    Metrics.inc(m.outbound, `${service}\t${label}`)
    if (clientsFault) Metrics.inc(m.clientErrors, 'malformed')
    if (o.why === 'stall') Metrics.inc(m.clientErrors, 'write-timeout')
    if (err !== null && o.cause !== null) logProxyError(this.#out.log, err.code, o.cause)
    if (ex.attempt > 0) Metrics.inc(m.outboundRetryOutcomes, `${service}\t${o.kind === 'ok' && o.status < 500 && o.grpcStatus !== '14' ? 'ok' : 'failed'}`)
    if (ex.target === null) return
    m.outboundInflight.set(service, (m.outboundInflight.get(service) ?? 1) - 1)
    m.outboundDuration.observe({ service }, (performance.now() - ex.arrivedAt) / 1000)
    const s = o.kind === 'error' && !ex.client.headSent ? (err as DoormanError).status : o.status
    const kind = o.kind === 'aborted' || (o.kind === 'error' && ex.client.headSent) ? 'incomplete' : s >= 502 && s <= 504 ? String(s) : s >= 500 ? '5xx' : null
    if (kind !== null) Metrics.inc(m.outboundErrors, `${service}\t${kind}`)
  }

  close (): void {
    this.watch.close()
    for (const ep of this.endpoints.values()) ep.destroy()
    this.endpoints.clear()
  }
}

export class Outbound {
  readonly server: Server
  readonly registry: Registry
  readonly metrics: Metrics
  readonly log: Logger
  readonly outlier: OutlierSettings
  readonly poolSettings: PoolSettings
  readonly maxRetryBody: number
  readonly clientWriteTimeout: number
  readonly observer: Observer | null
  readonly retryBudget: { percent: number, minPerSecond: number }
  readonly #upstreams = new Map<string, Upstream>()
  /** The app's HTTP/2 calls (h2c prior knowledge on the same port). */
  readonly h2: OutboundH2<Upstream>
  #port: number
  #sweep: NodeJS.Timeout
  #closed = false
  #conns: Connections

  constructor (opts: OutboundOptions) {
    this.registry = opts.registry
    this.metrics = opts.metrics
    this.log = opts.log
    this.outlier = opts.outlier
    this.poolSettings = { connections: opts.connections ?? 64, headersTimeout: opts.upstreamTimeout, drainMemoryMs: opts.drainMemoryMs, tls: opts.tls }
    this.maxRetryBody = opts.maxRetryBody ?? 65_536
    this.clientWriteTimeout = opts.clientWriteTimeout ?? 30_000
    this.observer = opts.observer ?? null
    this.retryBudget = opts.retryBudget ?? { percent: 20, minPerSecond: 10 }
    this.#port = opts.port
    this.server = http.createServer({ keepAliveTimeout: opts.idleTimeout ?? 60_000, requestTimeout: 0, headersTimeout: 10_000, requireHostHeader: false })
    this.server.on('request', (req: IncomingMessage, res: ServerResponse) => { this.#handle(req, res) })
    this.server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => { res.writeContinue(); this.#handle(req, res) })
    this.server.on('clientError', (_err: Error, socket) => { socket.destroy() })
    this.server.on('connect', (_req: IncomingMessage, socket) => {
      socket.end('HTTP/1.1 501 Not Implemented\r\nconnection: close\r\ncontent-length: 0\r\nx-doorman-error: DOORMAN_ERR_NO_SERVICE\r\n\r\n')
    })
    this.h2 = new OutboundH2(this, {
      maxHeaderSize: opts.maxHeaderSize ?? 16_384,
      maxHeaderCount: H2_MAX_HEADER_COUNT,
      headersTimeout: 10_000,
      idleTimeout: opts.idleTimeout ?? 60_000,
      lingerTimeout: this.clientWriteTimeout
    })
    this.#conns = detectProtocol(this.server, {
      onH2: (socket) => { this.h2.accept(socket) },
      timeoutMs: 10_000,
      maxConnections: opts.maxConnections,
      onDrop: () => { Metrics.inc(this.metrics.connectionsClosed, 'outbound\tlimit') }
    })
    this.#sweep = setInterval(() => { this.#sweepIdle() }, 10_000)
    this.#sweep.unref()
    opts.metrics.readings.instances = () => this.instanceCounts()
  }

  /** Listens on 127.0.0.1 only. Resolves with the port. */
  async listen (): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(this.#port, '127.0.0.1', () => { this.server.off('error', reject); resolve() })
    })
    this.#port = (this.server.address() as { port: number }).port
    return this.#port
  }

  get closed (): boolean { return this.#closed }
  /** Connections from the app open now (HTTP/1.1 and HTTP/2). */
  get connections (): number { return this.#conns.open }

  /** Instances by service and state, for metrics (watched services only). */
  instanceCounts (): Array<[string, string, number]> {
    const out: Array<[string, string, number]> = []
    for (const [service, up] of this.#upstreams) {
      const counts = new Map<string, number>()
      for (const inst of up.watch.view.values()) counts.set(inst.state, (counts.get(inst.state) ?? 0) + 1)
      for (const [state, n] of counts) out.push([service, state, n])
    }
    return out
  }

  /** The watched service's upstream (created on first use). */
  upstream (service: string): Upstream | undefined {
    let up = this.#upstreams.get(service)
    if (up === undefined) {
      if (this.#upstreams.size >= MAX_SERVICES) this.#sweepIdle(0)
      if (this.#upstreams.size >= MAX_SERVICES) return undefined
      up = new Upstream(this, service)
      this.#upstreams.set(service, up)
    }
    up.lastUsed = performance.now()
    return up
  }

  #sweepIdle (idleMs = IDLE_MS): void {
    const now = performance.now()
    for (const [service, up] of this.#upstreams) {
      if (up.endpoints.size === 0 && now - up.lastUsed > idleMs) { up.close(); this.#upstreams.delete(service) }
    }
  }

  #handle (req: IncomingMessage, res: ServerResponse): void {
    if (this.#closed) { respondError(res, new NoInstanceError('(closing)')); return }
    const target = parseTarget(req)
    if (target === null) {
      Metrics.inc(this.metrics.outbound, '-\tbad-request')
      respondError(res, new NoServiceError())
      return
    }
    const up = this.upstream(target.service)
    if (up === undefined) { this.#noInstance(res, target.service); return }
    this.begin(up, new H1Client(req, res, false), { path: target.path, host: target.host })
  }

  /** Starts a call to `up`'s service; the first call for a service waits (briefly) for the registry's first listing. */
  begin (up: Upstream, client: Client, opts: { path?: string, host?: string | null } = {}): void {
    const ex = new Exchange(client, up, performance.now(), opts)
    if (up.watch.synced) { ex.start(); return }
    const wait = this.registry.up ? 2000 : 250
    let timer: NodeJS.Timeout | undefined
    void Promise.race([up.watch.ready, new Promise<void>((resolve) => { timer = setTimeout(resolve, wait) })]).then(() => {
      clearTimeout(timer)
      ex.start()
    })
  }

  #noInstance (res: ServerResponse, service: string): void {
    Metrics.inc(this.metrics.outbound, `${service}\tno-instance`)
    respondError(res, new NoInstanceError(service))
  }

  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    clearInterval(this.#sweep)
    this.h2.close(1000)
    const hard = setTimeout(() => { this.server.closeAllConnections() }, 1000)
    hard.unref()
    await new Promise<void>((resolve) => { this.server.close(() => { resolve() }); this.server.closeIdleConnections() })
    clearTimeout(hard)
    for (const up of this.#upstreams.values()) up.close()
    this.#upstreams.clear()
  }

  destroy (): void {
    this.server.closeAllConnections()
    this.h2.destroy()
    void this.close()
  }
}

interface Target {
  service: string
  path: string
  /** The Host header to send, when the request was in absolute form; null keeps the request's own. */
  host: string | null
}

/** The service and path a request names: absolute-form URL first, else the Host header. Null when neither does. */
export function parseTarget (req: { url?: string, headers: { host?: string } }): Target | null {
  const url = req.url ?? '/'
  if (url.startsWith('http://') || url.startsWith('HTTP://')) {
    let u: URL
    try { u = new URL(url) } catch { return null }
    const service = u.hostname.toLowerCase()
    if (!SERVICE_NAME.test(service)) return null
    return { service, path: `${u.pathname}${u.search}`, host: u.host }
  }
  if (!url.startsWith('/')) return null
  const host = req.headers.host
  if (host === undefined || host === '') return null
  const service = host.replace(/:\d+$/, '').toLowerCase()
  if (!SERVICE_NAME.test(service)) return null
  return { service, path: url, host: null }
}

/** DOORMAN_MTLS=strict and an instance that takes no mTLS: the attempt fails at once, saying so (never plaintext). */
function refuseRoute (tls: OutboundTls, service: string, id: string): Route {
  return {
    dispatch: (_opts, handler) => {
      tls.failed(service, 'plaintext-refused', { instance: id })
      handler.onResponseError?.(null as never, new MtlsError(`the instance ${id} of ${service} takes no mTLS, and DOORMAN_MTLS is strict: no plaintext`))
    }
  }
}
