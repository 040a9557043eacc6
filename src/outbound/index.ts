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
import type { IncomingMessage, ServerResponse, Server } from 'node:http'
import type { Dispatcher } from 'undici'
import { http, clearStall } from '../core/http.js'
import { logProxyError, type Logger } from '../core/log.js'
import { classifyUpstreamError, BadRequestError, NoInstanceError, NoServiceError, DoormanError, type UpstreamConnectError } from '../core/errors.js'
import { respondError } from '../core/respond.js'
import { Metrics } from '../metrics/index.js'
import { requestHeaders, responseHeaders, trailerPairs } from '../inbound/headers.js'
import { SERVICE_NAME, type Change, type Instance, type Registry, type Watch } from '../registry/types.js'
import { Balancer } from './balancer.js'
import { Endpoint, type PoolSettings } from './endpoint.js'
import { ejectBudget } from '../checker/policy.js'

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
}

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE'])
/** Errors that mean the request never left: the connection was refused or never made. */
const NOTHING_SENT = new Set(['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'ENOTFOUND'])
/** Most services watched at once (names the app asks for that have no instances are dropped first). */
const MAX_SERVICES = 1000
/** A service with no instances and no requests for this long stops being watched. */
const IDLE_MS = 60_000

/** One service's endpoints, fed by a registry watch. */
class Upstream {
  readonly service: string
  readonly balancer: Balancer<Endpoint>
  readonly endpoints = new Map<string, Endpoint>()
  readonly watch: Watch
  lastUsed = performance.now()
  #out: Outbound

  constructor (out: Outbound, service: string) {
    this.#out = out
    this.service = service
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
      if (ep !== undefined && ep.address === inst.address) {
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
    if (ep.inflight === 0) void ep.pool.close().catch(() => {})
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
    if (ep.removed && ep.inflight === 0) void ep.pool.close().catch(() => {})
  }

  close (): void {
    this.watch.close()
    for (const ep of this.endpoints.values()) void ep.pool.destroy().catch(() => {})
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
  readonly #upstreams = new Map<string, Upstream>()
  #port: number
  #sweep: NodeJS.Timeout
  #closed = false

  constructor (opts: OutboundOptions) {
    this.registry = opts.registry
    this.metrics = opts.metrics
    this.log = opts.log
    this.outlier = opts.outlier
    this.poolSettings = { connections: opts.connections ?? 64, headersTimeout: opts.upstreamTimeout, drainMemoryMs: opts.drainMemoryMs }
    this.maxRetryBody = opts.maxRetryBody ?? 65_536
    this.clientWriteTimeout = opts.clientWriteTimeout ?? 30_000
    this.#port = opts.port
    this.server = http.createServer({ keepAliveTimeout: 5_000, requestTimeout: 0, headersTimeout: 10_000, requireHostHeader: false })
    this.server.on('request', (req: IncomingMessage, res: ServerResponse) => { this.#handle(req, res) })
    this.server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => { res.writeContinue(); this.#handle(req, res) })
    this.server.on('clientError', (_err: Error, socket) => { socket.destroy() })
    this.server.on('connect', (_req: IncomingMessage, socket) => {
      socket.end('HTTP/1.1 501 Not Implemented\r\nconnection: close\r\ncontent-length: 0\r\nx-doorman-error: DOORMAN_ERR_NO_SERVICE\r\n\r\n')
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
    if (up.watch.synced) { this.#start(up, req, res, target); return }
    // The first request for a service waits (briefly) for the registry's first listing.
    const wait = this.registry.up ? 2000 : 250
    let timer: NodeJS.Timeout | undefined
    void Promise.race([up.watch.ready, new Promise<void>((resolve) => { timer = setTimeout(resolve, wait) })]).then(() => {
      clearTimeout(timer)
      if (res.destroyed) return
      this.#start(up, req, res, target)
    })
  }

  #noInstance (res: ServerResponse, service: string): void {
    Metrics.inc(this.metrics.outbound, `${service}\tno-instance`)
    respondError(res, new NoInstanceError(service))
  }

  /**
   * Per-dependency saturation (seed 001): requests in flight to the service, their latency, and the ones that failed
   * (`502`–`504`, other `5xx`, or `incomplete`: the response never finished, e.g. the app gave up waiting) — counted
   * only for services with instances, so the labels stay bounded by the registry.
   */
  #track (service: string, res: ServerResponse, started: number): void {
    const m = this.metrics
    m.outboundInflight.set(service, (m.outboundInflight.get(service) ?? 0) + 1)
    res.once('close', () => {
      m.outboundInflight.set(service, (m.outboundInflight.get(service) ?? 1) - 1)
      m.outboundDuration.observe({ service }, (performance.now() - started) / 1000)
      const s = res.statusCode
      const kind = !res.writableFinished ? 'incomplete' : s >= 502 && s <= 504 ? String(s) : s >= 500 ? '5xx' : null
      if (kind !== null) Metrics.inc(m.outboundErrors, `${service}\t${kind}`)
    })
  }

  #start (up: Upstream, req: IncomingMessage, res: ServerResponse, target: Target): void {
    const now = performance.now()
    const ep = up.balancer.pick(now)
    if (ep === undefined) { this.#noInstance(res, up.service); return }
    const h = requestHeaders(req.rawHeaders, { remoteAddress: req.socket.remoteAddress ?? '127.0.0.1', proto: 'http', port: 0, trusted: true })
    if (h.refused !== null) {
      Metrics.inc(this.metrics.clientErrors, 'malformed')
      respondError(res, new BadRequestError(`doorman cannot forward this request as sent: ${h.refused}`), ['x-request-id', h.requestId])
      return
    }
    if (target.host !== null) setHost(h.headers, target.host)
    const call = new Call(this, up, req, res, target.path, h.headers, h.requestId)
    this.#track(up.service, res, now)
    if (!h.hasBody) { call.begin(ep, null); return }
    const length = Number(req.headers['content-length'] ?? NaN)
    if (Number.isFinite(length) && length <= this.maxRetryBody) {
      // Small bodies are read first so that a retry can send them again.
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.once('end', () => { call.begin(up.balancer.pick(performance.now()) ?? ep, Buffer.concat(chunks)) })
      req.once('error', () => { res.destroy() })
      return
    }
    call.begin(ep, req)
  }

  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    clearInterval(this.#sweep)
    await new Promise<void>((resolve) => { this.server.close(() => { resolve() }); this.server.closeIdleConnections() })
    for (const up of this.#upstreams.values()) up.close()
    this.#upstreams.clear()
  }

  destroy (): void {
    this.server.closeAllConnections()
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

function setHost (headers: string[], host: string): void {
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i].length === 4 && headers[i].toLowerCase() === 'host') { headers[i + 1] = host; return }
  }
  headers.push('host', host)
}

const IDLE = 0
const ACTIVE = 1
const DISCARD = 2
const DONE = 3

/** One outbound request: at most two attempts on two instances (undici handler; raw headers from the controller). */
class Call {
  #out: Outbound
  #up: Upstream
  #req: IncomingMessage
  #res: ServerResponse
  #path: string
  #headers: string[]
  #requestId: string
  #body: Buffer | IncomingMessage | null = null
  #ep: Endpoint | null = null
  #attempt = 0
  #state = IDLE
  #status = 0
  /** undici's controller for the attempt in flight (abort, pause, resume). */
  #ctl: Dispatcher.DispatchController | null = null
  #idempotent: boolean

  constructor (out: Outbound, up: Upstream, req: IncomingMessage, res: ServerResponse, path: string, headers: string[], requestId: string) {
    this.#out = out
    this.#up = up
    this.#req = req
    this.#res = res
    this.#path = path
    this.#headers = headers
    this.#requestId = requestId
    this.#idempotent = IDEMPOTENT.has(req.method ?? 'GET')
    res.once('close', this.#onClientClose)
  }

  begin (ep: Endpoint, body: Buffer | IncomingMessage | null): void {
    this.#body = body
    this.#dispatch(ep)
  }

  #dispatch (ep: Endpoint): void {
    if (this.#res.destroyed) { this.#state = DONE; return }
    this.#ep = ep
    this.#state = ACTIVE
    this.#status = 0
    ep.inflight++
    try {
      ep.pool.dispatch({ path: this.#path, method: this.#req.method as string, headers: this.#headers, body: this.#body, idempotent: false, blocking: true }, this)
    } catch (err) {
      this.onResponseError(null, err as Error)
    }
  }

  /** Another instance for a retry, or null when a retry isn't possible. */
  #retryTarget (): Endpoint | null {
    if (this.#attempt > 0 || this.#res.headersSent || this.#res.destroyed) return null
    if (this.#body !== null && !Buffer.isBuffer(this.#body)) return null
    return this.#up.balancer.pick(performance.now(), this.#ep ?? undefined) ?? null
  }

  #retry (next: Endpoint, reason: string): void {
    this.#attempt++
    Metrics.inc(this.#out.metrics.outboundRetries, `${this.#up.service}\t${reason}`)
    this.#dispatch(next)
  }

  #finishAttempt (): Endpoint | null {
    const ep = this.#ep
    this.#ctl = null
    this.#stall = clearStall(this.#stall)
    if (ep !== null) this.#up.release(ep)
    return ep
  }

  /** The app went away before the answer was complete: abort the attempt in flight. */
  #onClientClose = (): void => {
    if (this.#res.writableFinished || this.#state === DONE) return
    const inFlight = this.#state === ACTIVE || this.#state === DISCARD
    const ctl = this.#ctl
    this.#state = DONE
    if (inFlight) this.#finishAttempt()
    Metrics.inc(this.#out.metrics.outbound, `${this.#up.service}\taborted`)
    ctl?.abort(new Error('client gone'))
  }

  // --- undici DispatchHandler ---
  onRequestStart (controller: Dispatcher.DispatchController): void {
    if (this.#state === DONE) { controller.abort(new Error('client gone')); return }
    this.#ctl = controller
  }

  onResponseStart (controller: Dispatcher.DispatchController, statusCode: number, _headers: unknown, statusText?: string): void {
    if (this.#state !== ACTIVE) return
    if (statusCode < 200) return
    this.#status = statusCode
    const ep = this.#ep as Endpoint
    // HTTP/1.1 (the only protocol between sidecars): the raw headers are the parser's Buffers, name/value in turn.
    const rawHeaders = controller.rawHeaders as Buffer[]
    let shed = false
    for (let i = 0; i < rawHeaders.length; i += 2) {
      const name = rawHeaders[i]
      if (name.length === 18 && name.toString('latin1').toLowerCase() === 'x-doorman-draining') {
        // The instance drains: no new requests to it from now on, before the registry event even arrives.
        if (ep.sawDraining(performance.now())) this.#up.balancer.invalidate()
      } else if (name.length === 14 && name.toString('latin1').toLowerCase() === 'x-doorman-shed') shed = true
    }
    if (statusCode === 503 && shed && this.#retryTarget() !== null) {
      // Shed before the app saw it: drop this answer and try another instance once it is read.
      this.#state = DISCARD
      return
    }
    if (statusCode >= 502 && statusCode <= 504 && !shed) this.#up.outcome(ep, true)
    else this.#up.outcome(ep, false)
    const res = this.#res
    if (res.destroyed) return
    res.writeHead(statusCode, statusText, responseHeaders(rawHeaders, this.#requestId, null, false).headers)
  }

  /** The app took what was written: let undici read the instance's socket again. */
  #onDrain = (): void => {
    this.#stall = clearStall(this.#stall)
    this.#ctl?.resume()
  }

  #stall: NodeJS.Timeout | null = null
  /** The local app read nothing for the write timeout: close its connection (which cancels the attempt). */
  static #onStall (call: Call): void { call.#stalled() }
  #stalled (): void {
    this.#stall = null
    if (this.#state !== ACTIVE) return
    Metrics.inc(this.#out.metrics.clientErrors, 'write-timeout')
    this.#res.destroy()
  }

  onResponseData (controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.#state !== ACTIVE) return
    const res = this.#res
    if (res.destroyed) return
    if (!res.write(chunk) && !controller.paused) {
      controller.pause()
      res.once('drain', this.#onDrain)
      this.#stall = setTimeout(Call.#onStall, this.#out.clientWriteTimeout, this)
    }
  }

  onResponseEnd (controller: Dispatcher.DispatchController): void {
    if (this.#state === DISCARD) {
      this.#finishAttempt()
      const next = this.#retryTarget()
      if (next !== null) { this.#retry(next, 'shed'); return }
      // Nowhere else to go after all: answer what the instance said.
      this.#state = DONE
      Metrics.inc(this.#out.metrics.outbound, `${this.#up.service}\tok`)
      respondError(this.#res, new DoormanError('DOORMAN_ERR_NO_INSTANCE', 'every instance shed the request', 503), ['retry-after', '1', 'x-request-id', this.#requestId])
      return
    }
    if (this.#state !== ACTIVE) return
    this.#state = DONE
    this.#finishAttempt()
    const res = this.#res
    const trailers = controller.rawTrailers as Buffer[] | null | undefined
    if (trailers != null && trailers.length > 0) res.addTrailers(trailerPairs(trailers))
    res.end()
    Metrics.inc(this.#out.metrics.outbound, `${this.#up.service}\tok`)
  }

  /** Also called with no controller when undici refuses the request before it starts. */
  onResponseError (_controller: Dispatcher.DispatchController | null, err: Error): void {
    if (this.#state !== ACTIVE && this.#state !== DISCARD) return
    const ep = this.#finishAttempt()
    const mapped = classifyUpstreamError(err)
    const code = (err as { code?: string }).code ?? ''
    // Outlier detection counts only what the instance did: a request undici refused to send is the app's mistake.
    const clientsFault = mapped.status < 500
    if (ep !== null && !clientsFault) this.#up.outcome(ep, true)
    if (this.#state === DISCARD) {
      const next = this.#retryTarget()
      if (next !== null) { this.#retry(next, 'shed'); return }
    } else if (this.#status === 0) {
      const nothingSent = NOTHING_SENT.has(code)
      const connectFailure = mapped.code === 'DOORMAN_ERR_UPSTREAM_CONNECT'
      if (connectFailure && (nothingSent || this.#idempotent)) {
        const next = this.#retryTarget()
        if (next !== null) { this.#retry(next, nothingSent ? 'connect' : 'reset'); return }
      }
    }
    this.#state = DONE
    Metrics.inc(this.#out.metrics.outbound, `${this.#up.service}\t${clientsFault ? 'bad-request' : 'error'}`)
    if (this.#res.headersSent) { this.#res.destroy(); return }
    respondError(this.#res, mapped as UpstreamConnectError, ['x-request-id', this.#requestId])
    logProxyError(this.#out.log, mapped.code, err)
  }
}
