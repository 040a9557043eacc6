// The inbound lane's policy for the proxy core: admission by the limiter (priorities by path, the queue), one route
// (the app, over HTTP/1.1 or h2c), the drain flag on every answer, and what each outcome releases and records.
import type { Logger } from '../core/log.js'
import { logProxyError } from '../core/log.js'
import { NoInstanceError, DeniedError, type DoormanError } from '../core/errors.js'
import type { Authorizer, DenyReason } from '../authz/index.js'
import { TlsStats } from '../tls/metrics.js'
import { peerOf } from '../tls/peer.js'
import type { Limiter, Priority, ShedReason, Waiter } from '../limiter/index.js'
import { Metrics } from '../metrics/index.js'
import type { Exchange, ExchangeTrace, Outcome, Policy, Route } from '../proxy/exchange.js'
import type { Observer, Subject } from '../observe/index.js'
import type { FlowInput } from './flow.js'

/** Counts that drain and the lane read. */
export interface InboundStats {
  /** Requests that reached the limiter. */
  arrived: number
  /** Requests answered by the app (any status). */
  completed: number
  /** Requests that failed between doorman and the app. */
  failed: number
  /** Requests cut by destroy() (drain timeout). */
  cut: number
  /** performance.now() of the last request arrival. */
  lastArrival: number
}

const DRAIN_H1 = ['x-doorman-draining', '1', 'connection', 'close'] as const
const DRAIN_H2 = ['x-doorman-draining', '1'] as const

export interface InboundPolicyOptions {
  limiter: Limiter
  metrics: Metrics
  log: Logger
  app: Route
  classify: (path: string) => Priority
  trusted: boolean
  writeTimeout: number
  /** Spans and the access log (null: neither on). */
  observer?: Observer | null
  /** With mTLS on: who may call (DOORMAN_ALLOW), and the per-mode counts. */
  access?: { authorizer: Authorizer, stats: TlsStats }
  /** The flow a request belongs to (flow.ts), for fair queuing; absent: fairness is off and no flow is resolved. */
  flow?: ((input: FlowInput) => string) | null
}

/** One of the heaviest flows, as /state and the status page show it. */
export interface FlowReport { flow: string, inflight: number, queued: number, shed: number }

/** The inbound policy keeps an exchange's flow as its target: resolved once, at admission. */
export class InboundPolicy implements Policy<string> {
  readonly stats: InboundStats = { arrived: 0, completed: 0, failed: 0, cut: 0, lastArrival: 0 }
  readonly trusted: boolean
  readonly stripOwn = true
  readonly writeTimeout: number
  readonly maxRetryBody = 0
  /** Exchanges holding a slot (a drain timeout cuts them). */
  readonly exchanges = new Set<Exchange<string>>()
  readonly #limiter: Limiter
  readonly #metrics: Metrics
  readonly #log: Logger
  readonly #debug: boolean
  readonly #app: Route
  readonly #classify: (path: string) => Priority
  readonly #observer: Observer | null
  readonly #subject: Subject
  readonly #flow: ((input: FlowInput) => string) | null
  #draining = false

  constructor (opts: InboundPolicyOptions) {
    this.#limiter = opts.limiter
    this.#metrics = opts.metrics
    this.#log = opts.log
    this.#debug = opts.log.isLevelEnabled('debug')
    this.#app = opts.app
    this.#classify = opts.classify
    this.#flow = opts.flow ?? null
    this.trusted = opts.trusted
    this.writeTimeout = opts.writeTimeout
    const access = opts.access
    if (access !== undefined) {
      const a = access.authorizer
      const stats = access.stats
      // A plaintext caller's fate is the same for every request when no rule depends on the path.
      const plain = a.pathIndependent ? a.decide(null, '/') : undefined
      this.denied = (connection: object | undefined, path: string) => {
        const peer = peerOf(connection)
        TlsStats.inc(stats.requests, peer !== undefined ? 'mtls' : 'plaintext')
        if (a.open) return null
        let reason: DenyReason | null
        if (peer === undefined) reason = plain !== undefined ? plain : a.decide(null, path)
        else reason = peer.denied !== undefined ? peer.denied : a.decide(peer.id, path)
        if (reason !== null) TlsStats.inc(stats.denied, reason)
        return reason
      }
      const denied = this.denied
      this.authorize = (ex: Exchange<string>) => {
        const reason = denied(ex.client.connection(), ex.client.path)
        return reason === null ? null : { err: new DeniedError(reason), headers: ['x-doorman-denied', reason] }
      }
    }
    this.#observer = opts.observer ?? null
    this.#subject = { lane: 'inbound', decisions: () => ({ 'doorman.limit': this.#limiter.limit, 'doorman.draining': this.#draining }) }
  }

  observe (ex: Exchange<string>): ExchangeTrace | null {
    return this.#observer === null ? null : this.#observer.start(ex, this.#subject)
  }

  /** DOORMAN_ALLOW, before admission: a denied request never reaches the limiter or the app. */
  readonly authorize?: (ex: Exchange<string>) => { err: DoormanError, headers: string[] } | null
  /** The same decision for a request on `connection` to `path` (upgrades too): null, or why it is denied. */
  readonly denied?: (connection: object | undefined, path: string) => DenyReason | null

  /** Every answer from now on carries x-doorman-draining (HTTP/1.1: and connection: close). */
  startDraining (): void { this.#draining = true }
  get draining (): boolean { return this.#draining }

  extra (h2: boolean): readonly string[] | null {
    return this.#draining ? (h2 ? DRAIN_H2 : DRAIN_H1) : null
  }

  admit (ex: Exchange<string>): true | ShedReason | Waiter {
    const c = ex.client
    const priority = this.#classify(c.path)
    const resolve = this.#flow
    if (resolve === null) return this.#limiter.acquire(priority, ex.onGrant)
    // The flow is resolved once, here, and kept as the exchange's target. A caller that came over mTLS is its verified
    // SPIFFE ID, whichever address or pod it calls from.
    const flow = resolve({ identity: peerOf(c.connection())?.id, rawHeaders: c.rawHeaders(), remoteAddress: c.forwardInfo(this.trusted).remoteAddress, trusted: this.trusted })
    ex.target = flow
    return this.#limiter.acquire(priority, ex.onGrant, flow)
  }

  /**
   * The heaviest flows (at most `n`): those holding the most of the queue, then the most shed, with what each has in
   * flight. Off the request path (the heartbeat): the in-flight counts are taken from the exchanges holding a slot.
   */
  topFlows (n = 10): FlowReport[] {
    if (this.#flow === null) return []
    const inflight = new Map<string, number>()
    // The flow each was admitted as (the connection may be gone by now: its socket is not asked again).
    for (const ex of this.exchanges) { const f = ex.target ?? ''; inflight.set(f, (inflight.get(f) ?? 0) + 1) }
    const out: FlowReport[] = this.#limiter.topFlows(n).map((f) => ({ flow: f.flow, inflight: inflight.get(f.flow) ?? 0, queued: f.queued, shed: f.shed }))
    if (out.length < n) {
      const listed = new Set(out.map((f) => f.flow))
      const busy = [...inflight].filter(([f]) => !listed.has(f)).sort((a, b) => b[1] - a[1])
      for (const [flow, k] of busy.slice(0, n - out.length)) out.push({ flow, inflight: k, queued: 0, shed: 0 })
    }
    return out
  }

  cancel (w: Waiter): void { this.#limiter.cancel(w) }

  route (ex: Exchange<string>, retry: boolean): Route | null {
    if (retry) return null
    this.exchanges.add(ex)
    ex.sentInflight = this.#limiter.inflight
    return this.#app
  }

  noRoute (): DoormanError { return new NoInstanceError('(the app)') }
  canRetry (): boolean { return false }
  inspect (): 'pass' { return 'pass' }
  attemptEnded (): void {}
  retrying (): void {}

  settle (ex: Exchange<string>, o: Outcome): void {
    const m = this.#metrics
    const h2 = ex.client.h2
    switch (o.kind) {
      case 'shed':
        Metrics.inc(m.shed, o.shed as ShedReason)
        break
      case 'expired':
      case 'refused':
        break
      case 'abandoned':
        Metrics.inc(m.clientErrors, 'abort-queued')
        return
      case 'late-grant':
        this.#limiter.release()
        return
      default: {
        // The exchange held a slot: give it back with what the app's answer says of its capacity.
        this.exchanges.delete(ex)
        const err = o.err
        if (o.kind === 'ok') {
          this.stats.completed++
          this.#limiter.release(o.rtt, o.status >= 500, ex.sentInflight)
        } else if (o.kind === 'aborted') {
          // The app's latency counts only if its response head arrived: the client's impatience says nothing of it.
          this.#limiter.release(o.rtt, o.rtt >= 0 && o.status >= 500, ex.sentInflight)
          if (o.why === 'client') Metrics.inc(m.clientErrors, 'abort')
          else if (o.why === 'stall') Metrics.inc(m.clientErrors, 'write-timeout')
        } else {
          // A timeout is a drop signal without a latency sample (not the client's own deadline); other failures
          // (refused, reset) are neither.
          this.#limiter.release(-1, o.timedOut && o.why !== 'deadline', ex.sentInflight)
          if (err !== null && err.status < 500) {
            // The client's mistake (refused before the app saw it): not the app's failure.
            Metrics.inc(m.clientErrors, 'malformed')
          } else {
            this.stats.failed++
            Metrics.inc(m.upstreamErrors, o.timedOut ? 'timeout' : err?.code === 'DOORMAN_ERR_UPSTREAM_CONNECT' ? 'connect' : err?.code === 'DOORMAN_ERR_UPSTREAM_PROTOCOL' ? 'protocol' : 'other')
          }
          if (err !== null && o.cause !== null) logProxyError(this.#log, err.code, o.cause)
        }
        const ms = performance.now() - ex.arrivedAt
        m.duration.observe(ms / 1000)
        const traceId = ex.traceId
        if (traceId !== '') m.duration.exemplar(ms / 1000, traceId)
        if (this.#debug) this.#log.debug({ status: o.status, ms: Math.round(ms), outcome: o.kind, err: err?.code, protocol: h2 ? 'h2' : 'http1' }, 'request')
      }
    }
    if (o.status !== 0) Metrics.inc(h2 ? m.requestsH2 : m.requests, o.status)
    if (o.grpcStatus !== null) Metrics.inc(m.grpcStatus, o.grpcStatus)
  }
}
