// The proxy core: one request's lifecycle, for both lanes and both protocols. A lane turns what arrives on its
// listener into an Exchange over a client-side adapter (HTTP/1.1 request/response, or one HTTP/2 stream: client.ts)
// and gives it the lane's policy (the inbound lane's limiter and the app; the outbound lane's balancer and the
// service's instances). The Exchange then does the rest the same way everywhere:
//   admission   the policy grants a slot now, queues it (a Waiter), or sheds it;
//   dispatch    request headers rewritten once (headers.ts), the attempt sent through the route the policy picks
//               (undici to an HTTP/1.1 peer, node:http2 sessions to an h2c one: both behind undici's DispatchHandler
//               and its controller), a second attempt where the policy allows (a shed answer, a refused connection);
//   streaming   the response head held until its first body bytes (so a response broken right after its head can
//               still be answered 502, and a gRPC trailers-only answer stays one frame), the body relayed under
//               backpressure (the peer is paused while the client doesn't read, for at most the write timeout),
//               trailers passed on;
//   deadlines   grpc-timeout bounds the queue wait and the wait for the peer together; the peer gets what is left;
//   settle      exactly once, with the outcome: the slot released, metrics recorded, the connection given back.
import type { Readable } from 'node:stream'
import type { Dispatcher } from 'undici'
import { clearStall } from '../core/http.js'
import { BadRequestError, DoormanError, UpstreamProtocolError, UpstreamTimeoutError, classifyUpstreamError, TLS_VERIFY_CODES } from '../core/errors.js'
import { GRPC_DEADLINE_EXCEEDED, GRPC_UNAVAILABLE, MAX_TIMER_MS, encodeGrpcTimeout, grpcStatusOf, grpcTimeoutMs } from '../core/grpc.js'
import type { ShedReason, Waiter } from '../limiter/index.js'
import { requestHeaders, responseHeaders, type ForwardInfo } from './headers.js'
import { ReplayBody } from './replay.js'

/** doorman's own answer (a shed, an error): the HTTP form, and the gRPC form for a gRPC call. */
export interface OwnAnswer {
  status: number
  /** The one-line body (HTTP) or grpc-message (gRPC). */
  message: string
  grpcStatus: number
  grpcMessage: string
  /** Flat name/value pairs: x-doorman-shed or x-doorman-error, retry-after, x-request-id, the lane's extra headers. */
  headers: string[]
}

/** The client side of an exchange: an HTTP/1.1 request and its response, or one HTTP/2 stream (client.ts). */
export interface Client {
  readonly h2: boolean
  /** A gRPC call (content-type application/grpc): doorman's own answers take gRPC's trailers-only form. */
  readonly grpc: boolean
  readonly method: string
  readonly path: string
  /** The request's headers as flat name/value pairs (HTTP/2: pseudo-headers dropped, :authority as host). */
  rawHeaders: () => string[]
  /** The request's grpc-timeout header, if any. */
  readonly grpcTimeout: string | string[] | undefined
  forwardInfo: (trusted: boolean) => ForwardInfo
  /** The client's connection (its socket), for what the lane keeps per connection (the mTLS peer). */
  connection: () => object | undefined
  /** Whether the request has a body; `framed` is what its HTTP/1.1 framing headers say. */
  hasBody: (framed: boolean) => boolean
  /** The request body, to send upstream. */
  body: () => Readable
  /** Nothing can be written any more (the client went away or the stream is closed). */
  readonly gone: boolean
  /** A response head went out on the wire. */
  readonly headSent: boolean
  /** Calls `fn` once when the client's side closes (after a complete response too). */
  onClose: (fn: () => void) => void
  /** A 100-continue the client waits for, if any. */
  proceed: () => void
  /** Holds the response head; it goes out with the first body bytes, at the end, or a moment later. */
  head: (status: number, statusText: string, headers: string[], contentLength: number) => void
  /** Writes body bytes (the head first); false when the client's buffer is full. */
  write: (chunk: Buffer) => boolean
  onceDrain: (fn: () => void) => void
  /** Ends the response, with the peer's trailers (raw, flat), if any. */
  end: (trailers: Array<Buffer | string> | null) => void
  /** doorman's own answer; once a head went out, the response is cut instead. */
  answer: (a: OwnAnswer) => void
  /** The peer failed after the head went out: a gRPC call ends with this status in its trailers, others are cut. */
  failAfterHead: (grpcStatus: number, grpcMessage: string) => void
  /** Cuts the response (HTTP/1.1: the connection; HTTP/2: RST_STREAM CANCEL). */
  reset: () => void
}

/**
 * Where an attempt goes: an undici dispatcher, the app's connection stack, or an h2c session pool. A route that lends
 * the attempt a connection of its own sets `handler.conn` (opaque to the core) and gets it back through free() once
 * the attempt is over.
 */
export interface Route {
  dispatch (opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler & { conn: object | null }): unknown
  free? (conn: object): void
}

export type OutcomeKind =
  /** The peer's response was relayed whole. */
  | 'ok'
  /** doorman answered with an error: the peer failed, or the request could not be sent (`err` says which). */
  | 'error'
  /** The client went away, or a drain or write timeout cut it, while the peer worked. */
  | 'aborted'
  /** The client went away while queued. */
  | 'abandoned'
  /** Answered by doorman before admission (a request the lane won't take). */
  | 'refused'
  /** A slot granted to an exchange already over: only to release. */
  | 'late-grant'
  /** Shed before any attempt (the limiter, a drain): `shed` says why. */
  | 'shed'
  /** The deadline passed while queued. */
  | 'expired'
  /** No instance to send it to. */
  | 'no-route'

export interface Outcome {
  kind: OutcomeKind
  /** The HTTP status the client got (0: none). */
  status: number
  err: DoormanError | null
  /** The peer (or the deadline) timed out: a drop signal for the adaptive limit. */
  timedOut: boolean
  /** The peer's latency, from the request fully sent to its response head; -1 when no head came. */
  rtt: number
  /** The grpc-status the client got, as a bounded label, for a gRPC call. */
  grpcStatus: string | null
  shed: ShedReason | null
  /** Why an aborted exchange ended: the client went away, stopped reading (the write timeout), or a drain cut it. */
  why: 'client' | 'stall' | 'cut' | 'deadline' | null
  /** The error that ended the attempt, as the peer's side raised it (for the log). */
  cause: Error | null
}

/** An exchange's observation (a span, an access log line): told of each attempt and of the end. */
export interface ExchangeTrace {
  /** The trace id of a sampled (recorded) span; '' otherwise. */
  readonly traceId: string
  /** The request waits for a slot. */
  queued (): void
  /** An attempt is sent: returns the headers to send (with the trace context for the peer). */
  attempt (ex: Exchange, headers: string[], retry: string | null): string[]
  /** The exchange is over (before the policy's settle). */
  end (ex: Exchange, outcome: Outcome): void
}

/**
 * A lane's policy: what the core asks of the lane at each step. `T` is what the policy keeps on an exchange as its
 * target (the outbound lane: the instance of the attempt in flight; the inbound lane: the flow it admitted it as).
 */
export interface Policy<T = unknown> {
  /** The exchange's observation, or null when nothing observes it (tracing and the access log off). */
  observe? (ex: Exchange<T>): ExchangeTrace | null
  /** Whether the client's x-forwarded-proto/-host/-port are kept (a trusted hop). */
  readonly trusted: boolean
  /** Whether x-doorman-* is stripped from the peer's response (inbound: always; outbound: the provider's are kept). */
  readonly stripOwn: boolean
  /** Longest a response write may wait on a client that reads nothing, in milliseconds. */
  readonly writeTimeout: number
  /** Request bodies up to this size are kept so that a second attempt can send them again (0: no retries). */
  readonly maxRetryBody: number
  /** Headers every response carries now (the drain flag), for this client's protocol. */
  extra (h2: boolean): readonly string[] | null
  /**
   * Whether the caller may make this request, asked before admission: null, or doorman's refusal (answered at once,
   * never admitted), with headers saying why.
   */
  authorize? (ex: Exchange<T>): { err: DoormanError, headers: string[] } | null
  /** A slot for the exchange: true (granted), a reason to shed it, or a Waiter whose grant calls ex.onGrant. */
  admit (ex: Exchange<T>): true | ShedReason | Waiter
  cancel (w: Waiter): void
  /** Where an attempt goes; null: nowhere (no instance, or none left for a retry). Counts the attempt as started. */
  route (ex: Exchange<T>, retry: boolean): Route | null
  /** What the client is told when the first attempt has nowhere to go. */
  noRoute (ex: Exchange<T>): DoormanError
  /** Whether another attempt could go elsewhere (asked before a shed answer is dropped). */
  canRetry (ex: Exchange<T>): boolean
  /** The attempt's response head: pass it on, or drop it to retry elsewhere (only asked to pass it when not). */
  inspect (ex: Exchange<T>, status: number, raw: Buffer[]): 'pass' | 'retry'
  /** The attempt is over; `failed`: the peer failed it (true), answered (false), or nothing to say (undefined). */
  attemptEnded (ex: Exchange<T>, failed: boolean | undefined): void
  /** A second attempt starts, and why (`shed`, `connect`, `reset`). */
  retrying (ex: Exchange<T>, reason: string): void
  /** Milliseconds to wait before a second attempt is sent (a backoff); absent or 0: at once. */
  retryDelay? (ex: Exchange<T>, reason: string): number
  /** The exchange is over: release its slot, record it. Called exactly once for every exchange that started. */
  settle (ex: Exchange<T>, outcome: Outcome): void
}

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE'])
/** Errors that mean the request never left: the connection was refused or never made. */
const NOTHING_SENT = new Set(['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'ENOTFOUND'])
/** RST_STREAM REFUSED_STREAM (RFC 9113 §8.7): the peer did not process the stream. */
const REFUSED_STREAM = 7

const IDLE = 0
const QUEUED = 1
const ACTIVE = 2
/** A shed answer being read to its end, to retry elsewhere. */
const DISCARD = 3
const DONE = 4

export interface ExchangeOptions {
  /** The path to send (default: the client's). */
  path?: string
  /** The Host to send instead of the client's (an absolute-form request). */
  host?: string | null
}

const NO_OPTIONS: ExchangeOptions = Object.freeze({})

export class Exchange<T = unknown> implements Dispatcher.DispatchHandler {
  readonly client: Client
  readonly policy: Policy<T>
  readonly arrivedAt: number
  /** The connection the route lent the attempt (the app's HTTP/1.1 connection stack), given back when it is over. */
  conn: object | null = null
  /** The policy's own per-exchange state (outbound: the instance of the attempt in flight; inbound: the flow). */
  target: T | null = null
  /** The policy's in-flight count when the request was sent (for the adaptive limit). */
  sentInflight = 0
  /** Attempts started, minus one. */
  attempt = 0
  requestId = ''
  /** Milliseconds the exchange waited in the queue for its slot (0: none). */
  queueWaitMs = 0
  #trace: ExchangeTrace | null
  #retryReason: string | null = null
  #wasQueued = false
  #opts: ExchangeOptions
  #state = IDLE
  #waiter: Waiter | null = null
  #route: Route | null = null
  #ctl: Dispatcher.DispatchController | null = null
  #headers: string[] = []
  #body: Readable | ReplayBody | null = null
  #status = 0
  #sent = 0
  #rtt = -1
  #deadlineAt = -1
  #deadline: NodeJS.Timeout | null = null
  #stall: NodeJS.Timeout | null = null
  #attemptOpen = false

  constructor (client: Client, policy: Policy<T>, arrivedAt: number, opts: ExchangeOptions = NO_OPTIONS) {
    this.client = client
    this.policy = policy
    this.arrivedAt = arrivedAt
    this.#opts = opts
    this.#trace = policy.observe?.(this) ?? null
    client.onClose(this.#onClientClose)
    if (client.grpc) {
      // grpc-timeout bounds the wait for a slot and for the peer together. A deadline beyond what a timer holds
      // (about 24.8 days; grpc-timeout goes up to 99,999,999 hours) is not enforced here, only passed on.
      const ms = grpcTimeoutMs(client.grpcTimeout)
      if (ms >= 0) {
        this.#deadlineAt = arrivedAt + ms
        if (ms <= MAX_TIMER_MS) {
          this.#deadline = setTimeout(Exchange.#onDeadline, Math.max(1, Math.ceil(ms)), this)
          this.#deadline.unref()
        }
      }
    }
  }

  /** The trace id of the exchange's sampled span ('' when not traced). */
  get traceId (): string { return this.#trace?.traceId ?? '' }

  /** The status the peer answered (0: no head yet). */
  get status (): number { return this.#status }

  /** Asks the policy for a slot, then sends, waits or sheds. */
  start (): void {
    const denied = this.policy.authorize?.(this) ?? null
    if (denied !== null) { this.refuse(denied.err, denied.headers); return }
    const grant = this.policy.admit(this)
    if (grant === true) this.#dispatch()
    else if (typeof grant === 'string') this.shed(grant)
    else { this.#state = QUEUED; this.#waiter = grant; this.#wasQueued = true; this.#trace?.queued() }
  }

  /** Ends the exchange for the policy (and its observation): exactly once per exchange. */
  #settle (o: Outcome): void {
    if (this.#wasQueued && this.queueWaitMs === 0) this.queueWaitMs = performance.now() - this.arrivedAt
    this.#trace?.end(this, o)
    this.policy.settle(this, o)
  }

  /** The limiter's callback for a queued exchange. */
  onGrant = (reason: ShedReason | null): void => {
    this.#waiter = null
    if (this.#state === QUEUED) this.queueWaitMs = performance.now() - this.arrivedAt
    if (this.#state === DONE) { if (reason === null) this.policy.settle(this, this.#outcome('late-grant', 0, null, false)); return }
    if (reason !== null) { this.shed(reason); return }
    this.#dispatch()
  }

  /** Sheds before any attempt: 503 (gRPC: UNAVAILABLE), x-doorman-shed naming the reason; safe to retry anywhere. */
  shed (reason: ShedReason): void {
    this.#state = DONE
    this.#clearDeadline()
    const extra = this.policy.extra(this.client.h2)
    const headers = ['x-doorman-shed', reason, 'retry-after', '1', 'x-request-id', this.#ownRequestId()]
    if (extra !== null) for (const h of extra) headers.push(h)
    this.client.answer({ status: 503, message: `shed: ${reason}`, grpcStatus: GRPC_UNAVAILABLE, grpcMessage: `doorman: shed (${reason})`, headers })
    const o = this.#outcome('shed', this.client.grpc ? 200 : 503, null, false, this.client.grpc ? String(GRPC_UNAVAILABLE) : null)
    o.shed = reason
    this.#settle(o)
  }

  /** Answers with doorman's own error before admission: a request the lane won't take. */
  refuse (err: DoormanError, more?: string[]): void {
    this.#state = DONE
    this.#clearDeadline()
    this.#answerError('refused', err, `doorman: ${err.message}`, this.#ownRequestId(), more)
  }

  /** doorman's error answer before any head went out (gRPC: trailers-only), and the exchange settled with it. */
  #answerError (kind: OutcomeKind, err: DoormanError, grpcMessage: string, requestId: string, more?: string[], cause: Error | null = null): void {
    const grpc = this.client.grpc
    const a = ownError(err, grpcMessage, requestId, this.policy.extra(this.client.h2))
    if (more !== undefined) a.headers.push(...more)
    this.client.answer(a)
    const o = this.#outcome(kind, grpc ? 200 : err.status, err, err.status === 504, grpc ? String(grpcStatusOf(err)) : null)
    o.cause = cause
    this.#settle(o)
  }

  /** Drain timeout: cut this exchange. */
  cut (): void {
    if (this.#state !== ACTIVE && this.#state !== DISCARD) return
    this.#abort('cut')
    this.client.reset()
  }

  #ownRequestId (): string {
    if (this.requestId !== '') return this.requestId
    const raw = this.client.rawHeaders()
    for (let i = 0; i < raw.length; i += 2) {
      if (raw[i].length === 12 && raw[i].toLowerCase() === 'x-request-id' && raw[i + 1] !== '') return raw[i + 1]
    }
    return globalThis.crypto.randomUUID()
  }

  #dispatch (): void {
    const client = this.client
    this.#state = ACTIVE
    if (client.gone) { this.#abort('client'); return }
    const h = requestHeaders(client.rawHeaders(), client.forwardInfo(this.policy.trusted))
    this.requestId = h.requestId
    if (h.refused !== null) { this.#failed(new BadRequestError(`doorman cannot forward this request as sent: ${h.refused}`), null); return }
    const host = this.#opts.host
    if (host !== undefined && host !== null) setHost(h.headers, host)
    this.#headers = h.headers
    if (client.hasBody(h.hasBody)) {
      const max = this.policy.maxRetryBody
      this.#body = max > 0 ? new ReplayBody(client.body(), max) : client.body()
    }
    const route = this.policy.route(this, false)
    if (route === null) { this.#noRoute(); return }
    client.proceed()
    this.#send(route)
  }

  #send (route: Route): void {
    this.#route = route
    this.#attemptOpen = true
    this.#status = 0
    this.#sent = performance.now()
    let headers = this.#headers
    if (this.#deadlineAt >= 0) {
      // The peer gets what is left of the deadline after the queue wait, as Envoy passes it on.
      headers = headers.slice()
      for (let i = 0; i < headers.length; i += 2) {
        if (headers[i].length === 12 && headers[i].toLowerCase() === 'grpc-timeout') headers[i + 1] = encodeGrpcTimeout(Math.max(1, this.#deadlineAt - this.#sent))
      }
    }
    if (this.#trace !== null) headers = this.#trace.attempt(this, headers === this.#headers ? headers.slice() : headers, this.#retryReason)
    const b = this.#body
    const body = b === null ? null : b instanceof ReplayBody ? (this.attempt === 0 ? b.body : b.again()) : b
    try {
      route.dispatch({ path: this.#opts.path ?? this.client.path, method: this.client.method, headers, body, idempotent: false, blocking: true }, this)
    } catch (err) {
      this.onResponseError(null, err as Error)
    }
  }

  #noRoute (): void {
    this.#state = DONE
    this.#clearDeadline()
    this.#stopBody()
    const err = this.policy.noRoute(this)
    this.#answerError('no-route', err, `doorman: ${err.message} (${err.code})`, this.requestId)
  }

  /** Another attempt is possible: the policy has another target, nothing went to the client, the body was kept. */
  #canRetry (): boolean {
    if (this.attempt > 0 || this.client.headSent || this.client.gone) return false
    const b = this.#body
    if (b !== null && !(b instanceof ReplayBody && b.replayable)) return false
    return this.policy.canRetry(this)
  }

  #retry (reason: string): boolean {
    const route = this.policy.route(this, true)
    if (route === null) return false
    this.attempt++
    this.#state = ACTIVE
    this.#retryReason = reason
    this.policy.retrying(this, reason)
    const delay = this.policy.retryDelay?.(this, reason) ?? 0
    if (delay > 0) {
      // The attempt counts as open from now: a client gone, a deadline or a cut during the backoff ends it.
      this.#attemptOpen = true
      this.#route = route
      setTimeout(Exchange.#sendLater, delay, this).unref()
      return true
    }
    this.#send(route)
    return true
  }

  static #sendLater (ex: Exchange): void {
    if (ex.#state === ACTIVE && ex.#route !== null) ex.#send(ex.#route)
  }

  /** The attempt in flight is over (once per attempt): its stall timer off, the policy told. */
  #endAttempt (failed: boolean | undefined): void {
    this.#ctl = null
    this.#stall = clearStall(this.#stall)
    if (!this.#attemptOpen) return
    this.#attemptOpen = false
    this.policy.attemptEnded(this, failed)
  }

  /** Gives the connection back once the route is done with the request (its onResponseEnd or onResponseError). */
  #freeConn (): void {
    const conn = this.conn
    if (conn === null) return
    this.conn = null
    this.#route?.free?.(conn)
  }

  #clearDeadline (): void {
    if (this.#deadline !== null) { clearTimeout(this.#deadline); this.#deadline = null }
  }

  #stopBody (): void {
    const b = this.#body
    if (b instanceof ReplayBody) b.stop()
  }

  #outcome (kind: OutcomeKind, status: number, err: DoormanError | null, timedOut: boolean, grpcStatus: string | null = null): Outcome {
    return { kind, status, err, timedOut, rtt: this.#rtt, grpcStatus, shed: null, why: null, cause: null }
  }

  /** The client went away: leave the queue, or abort the attempt. */
  #onClientClose = (): void => {
    if (this.#state === QUEUED) {
      this.#state = DONE
      this.#clearDeadline()
      if (this.#waiter !== null) this.policy.cancel(this.#waiter)
      this.#waiter = null
      this.#settle(this.#outcome('abandoned', 0, null, false))
      return
    }
    if (this.#state === ACTIVE || this.#state === DISCARD) this.#abort('client')
  }

  /** Ends an exchange the client abandoned (or a drain or write timeout cut): no response. */
  #abort (why: 'client' | 'stall' | 'cut'): void {
    const ctl = this.#ctl
    this.#state = DONE
    this.#clearDeadline()
    this.#endAttempt(undefined)
    this.#stopBody()
    // The peer's latency counts only if its response head arrived: the client's impatience says nothing about it.
    const o = this.#outcome('aborted', this.#status, null, false)
    o.why = why
    this.#settle(o)
    ctl?.abort(new Error(why === 'client' ? 'client gone' : why === 'stall' ? 'client stopped reading' : 'drain timeout'))
  }

  static #onDeadline (ex: Exchange): void { ex.#expired() }
  #expired (): void {
    this.#deadline = null
    const extra = this.policy.extra(this.client.h2)
    if (this.#state === QUEUED) {
      this.#state = DONE
      if (this.#waiter !== null) this.policy.cancel(this.#waiter)
      this.#waiter = null
      this.client.answer(ownError(new UpstreamTimeoutError(), 'doorman: deadline exceeded while queued', this.#ownRequestId(), extra))
      this.#settle(this.#outcome('expired', 200, null, false, String(GRPC_DEADLINE_EXCEEDED)))
      return
    }
    if (this.#state !== ACTIVE && this.#state !== DISCARD) return
    // The peer's stream is reset (it sees the cancellation) and the slot is free at once.
    const ctl = this.#ctl
    this.#state = DONE
    this.#endAttempt(undefined)
    this.#stopBody()
    const err = new UpstreamTimeoutError()
    if (this.client.headSent) this.client.failAfterHead(GRPC_DEADLINE_EXCEEDED, 'doorman: deadline exceeded')
    else this.client.answer(ownError(err, 'doorman: deadline exceeded', this.requestId, extra))
    const o = this.#outcome('error', 200, err, true, String(GRPC_DEADLINE_EXCEEDED))
    o.why = 'deadline'
    this.#settle(o)
    ctl?.abort(new Error('deadline exceeded'))
  }

  /** The client took what was written: let the peer's side be read again. */
  #onDrain = (): void => {
    this.#stall = clearStall(this.#stall)
    this.#ctl?.resume()
  }

  static #onStall (ex: Exchange): void { ex.#stalled() }
  /** The client read nothing for the write timeout: free the slot, cancel the peer's request, cut the client. */
  #stalled (): void {
    this.#stall = null
    if (this.#state !== ACTIVE) return
    this.#abort('stall')
    this.client.reset()
  }

  // --- undici's DispatchHandler (the HTTP/1.1 and the h2c routes both drive it) ---
  /** The whole request is written: the peer's own time starts now, not while a client uploads. */
  onRequestSent (): void {
    if (this.#rtt < 0) this.#sent = performance.now()
  }

  onRequestStart (controller: Dispatcher.DispatchController): void {
    if (this.#state !== ACTIVE) { controller.abort(new Error('client gone')); return }
    this.#ctl = controller
  }

  onResponseStart (controller: Dispatcher.DispatchController, statusCode: number, _headers: unknown, statusText?: string): void {
    if (this.#state !== ACTIVE || statusCode < 200) return
    const raw = controller.rawHeaders as Buffer[]
    if (statusCode === 204 && bodyOn204(raw)) {
      // undici 8 ends such a 204 at its head and drops the connection with what followed: the peer broke HTTP, so it
      // is answered 502 as any other malformed response.
      controller.abort(new UpstreamProtocolError(new Error('a 204 response announcing a body')))
      return
    }
    this.#status = statusCode
    if (this.policy.inspect(this, statusCode, raw) === 'retry' && this.#canRetry()) {
      // Shed before the app there saw it: drop this answer and try elsewhere once it is read.
      this.#state = DISCARD
      return
    }
    // The peer's latency: from the request fully sent to the response head.
    this.#rtt = Math.max(0, performance.now() - this.#sent)
    const b = this.#body
    if (b instanceof ReplayBody) b.commit()
    const head = responseHeaders(raw, this.requestId, this.policy.extra(this.client.h2), this.policy.stripOwn)
    this.client.head(statusCode, statusText ?? '', head.headers, head.contentLength)
  }

  onResponseData (controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.#state !== ACTIVE) return
    const client = this.client
    if (client.gone) { this.#abort('client'); return }
    // The client is slower than the peer: stop reading the peer until the client drains.
    if (!client.write(chunk) && !controller.paused && this.#state === ACTIVE) {
      controller.pause()
      client.onceDrain(this.#onDrain)
      this.#stall = setTimeout(Exchange.#onStall, this.policy.writeTimeout, this)
    }
  }

  onResponseEnd (controller: Dispatcher.DispatchController): void {
    this.#freeConn()
    if (this.#state === DISCARD) {
      closeStream(controller)
      this.#endAttempt(undefined)
      if (this.#canRetry() && this.#retry('shed')) return
      // Nowhere else to go after all: every instance shed it.
      this.#failed(new DoormanError('DOORMAN_ERR_NO_INSTANCE', 'every instance shed the request', 503), null, ['retry-after', '1'])
      return
    }
    if (this.#state !== ACTIVE) return
    this.#state = DONE
    this.#clearDeadline()
    const raw = controller.rawTrailers as Array<Buffer | string> | null | undefined
    const trailers = raw != null && raw.length > 0 ? raw : null
    const grpc = this.client.grpc ? grpcStatusIn(trailers) ?? grpcStatusIn(controller.rawHeaders as Buffer[] | null) ?? 'unknown' : null
    this.#endAttempt(undefined)
    this.#stopBody()
    this.client.end(trailers)
    this.#settle(this.#outcome('ok', this.#status, null, false, grpc))
  }

  /** Also called with no controller when the route refuses the request before it starts. */
  onResponseError (controller: Dispatcher.DispatchController | null, err: Error): void {
    this.#freeConn()
    if (this.#state !== ACTIVE && this.#state !== DISCARD) return
    const discarding = this.#state === DISCARD
    const mapped = classifyUpstreamError(err)
    const code = (err as { code?: string }).code ?? ''
    const refused = (controller as { stream?: { rstCode?: number } | null } | null)?.stream?.rstCode === REFUSED_STREAM
    // Only what the peer did counts against it: a request that could not be sent is the client's mistake.
    this.#endAttempt(mapped.status >= 500 && !refused ? true : undefined)
    if (discarding) {
      if (this.#canRetry() && this.#retry('shed')) return
    } else if (this.#status === 0 && mapped.status >= 500) {
      const nothingSent = NOTHING_SENT.has(code) || TLS_VERIFY_CODES.has(code)
      const connect = mapped.code === 'DOORMAN_ERR_UPSTREAM_CONNECT'
      if ((nothingSent || refused || (connect && IDEMPOTENT.has(this.client.method))) && this.#canRetry() && this.#retry(nothingSent ? 'connect' : 'reset')) return
    }
    this.#failed(mapped, err)
  }

  /** Ends the exchange with doorman's error answer (or, once a head went out, a cut or gRPC trailers). */
  #failed (mapped: DoormanError, cause: Error | null, more?: string[]): void {
    this.#state = DONE
    this.#clearDeadline()
    this.#stopBody()
    const message = `doorman: ${mapped.message} (${mapped.code})`
    if (!this.client.headSent) { this.#answerError('error', mapped, message, this.requestId, more, cause); return }
    this.client.failAfterHead(grpcStatusOf(mapped), message)
    const o = this.#outcome('error', this.#status, mapped, mapped.status === 504, this.client.grpc ? String(grpcStatusOf(mapped)) : null)
    o.cause = cause
    this.#settle(o)
  }
}

/** doorman's error answer: the error's status, x-doorman-error naming it, the request id and the lane's extras. */
export function ownError (err: DoormanError, grpcMessage: string, requestId: string, extra: readonly string[] | null): OwnAnswer {
  const headers = ['x-doorman-error', err.code]
  if (requestId !== '') headers.push('x-request-id', requestId)
  if (extra !== null) for (const h of extra) headers.push(h)
  return { status: err.status, message: err.message, grpcStatus: grpcStatusOf(err), grpcMessage, headers }
}

/** Replaces (or adds) the Host header in a flat list. */
function setHost (headers: string[], host: string): void {
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i].length === 4 && headers[i].toLowerCase() === 'host') { headers[i + 1] = host; return }
  }
  headers.push('host', host)
}

/** A 204 whose head announces a body: a transfer-encoding, or a content-length other than 0 (RFC 9110 §8.6, 9112 §6.1). */
function bodyOn204 (raw: Buffer[]): boolean {
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]
    if (name.length === 17 && name.toString('latin1').toLowerCase() === 'transfer-encoding') return true
    if (name.length === 14 && name.toString('latin1').toLowerCase() === 'content-length' && !/^\s*0*\s*$/.test(raw[i + 1].toString('latin1'))) return true
  }
  return false
}

/** The grpc-status in a raw header list, as a bounded label: `0`…`16`, else `unknown`; undefined when absent. */
function grpcStatusIn (raw: Array<Buffer | string> | null | undefined): string | undefined {
  if (raw == null) return undefined
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i].length === 11 && raw[i].toString().toLowerCase() === 'grpc-status') {
      const v = raw[i + 1].toString()
      return /^(?:\d|1[0-6])$/.test(v) ? v : 'unknown'
    }
  }
  return undefined
}

/** Closes the peer's HTTP/2 stream of a discarded answer, if the request body still flows into it. */
function closeStream (controller: Dispatcher.DispatchController): void {
  const stream = (controller as { stream?: { closed: boolean, destroyed: boolean, close: (code: number) => void } | null }).stream
  if (stream != null && !stream.closed && !stream.destroyed) stream.close(8 /* CANCEL */)
}
