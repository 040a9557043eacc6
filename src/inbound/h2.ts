// HTTP/2 clients on the inbound port (cleartext, prior knowledge; detect.ts hands the sockets over). Every stream is
// one request: it takes a limiter slot (or waits, or is shed), is proxied to the app through the same upstream as
// HTTP/1.1 requests (undici to an http1 app, node:http2 sessions to an h2c app), and settles once. What doorman
// answers itself to a gRPC call is trailers-only (HTTP 200, grpc-status, grpc-message). On drain every session gets
// a two-phase GOAWAY.
import http2, { type Http2Server, type ServerHttp2Session, type ServerHttp2Stream, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2'
import type { Socket } from 'node:net'
import { PassThrough } from 'node:stream'
import type { Logger } from '../core/log.js'
import { BadRequestError, classifyUpstreamError, UpstreamTimeoutError, type DoormanError } from '../core/errors.js'
import { isGrpc, grpcTimeoutMs, grpcStatusOf, trailersOnly, GRPC_DEADLINE_EXCEEDED, GRPC_UNAVAILABLE } from '../core/grpc.js'
import { h2Head, respondWithTrailers } from '../core/h2.js'
import { type Limiter, type Priority, type ShedReason, type Waiter } from '../limiter/index.js'
import { Metrics } from '../metrics/index.js'
import { requestHeaders, responseHeaders } from './headers.js'
import type { InboundStats } from './index.js'
import type { Conn, UpstreamHandler } from './upstream.js'
import type { Dispatcher } from 'undici'

const { NGHTTP2_CANCEL, NGHTTP2_NO_ERROR } = http2.constants
const MAX_STREAM_ID = 2 ** 31 - 1
const DRAIN_H2 = ['x-doorman-draining', '1'] as const

/** What the HTTP/2 front needs from the inbound lane. */
export interface H2Host {
  readonly limiter: Limiter
  readonly metrics: Metrics
  readonly log: Logger
  readonly stats: InboundStats
  readonly closed: boolean
  readonly appProtocol: 'http1' | 'h2c'
  /** Whether x-forwarded-proto/-host/-port from clients are trusted (DOORMAN_TRUSTED_HOPS). */
  readonly trusted: boolean
  readonly upstream: { dispatch: (opts: Dispatcher.DispatchOptions, handler: UpstreamHandler) => void, free: (conn: Conn) => void }
  classify: (path: string) => Priority
  track: (ex: { cut: () => void }) => void
  finish: (ex: { cut: () => void }, status: number, startedAt: number, outcome: 'ok' | 'error' | 'aborted', err: DoormanError | null, timedOut: boolean, h2: boolean) => void
}

export class H2Front {
  readonly server: Http2Server
  readonly #host: H2Host
  readonly #sessions = new Set<ServerHttp2Session>()
  #draining = false
  #warnedProtocol = false

  constructor (host: H2Host, opts: { maxHeaderSize: number }) {
    this.#host = host
    this.server = http2.createServer({ maxSendHeaderBlockLength: 65536, settings: { maxHeaderListSize: opts.maxHeaderSize, maxConcurrentStreams: 1000 } })
    this.server.on('session', (session: ServerHttp2Session) => { this.#session(session) })
    this.server.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number) => { this.#stream(stream, headers, flags) })
    this.server.on('sessionError', () => {})
  }

  /** A socket whose first bytes are the HTTP/2 preface. */
  accept (socket: Socket): void {
    this.server.emit('connection', socket)
  }

  /** HTTP/2 sessions open now. */
  get sessions (): number { return this.#sessions.size }
  get draining (): boolean { return this.#draining }

  #session (session: ServerHttp2Session): void {
    this.#sessions.add(session)
    session.once('close', () => { this.#sessions.delete(session) })
    session.on('error', () => {})
    // A session opened while draining is served, then told to go away after its first stream: a client that
    // reconnects is not sent away in a loop.
    if (this.#draining) session.once('stream', () => { goaway(session) })
  }

  /** Responses carry x-doorman-draining from now on; every session (idle ones too) gets the two-phase GOAWAY. */
  startDraining (): void {
    if (this.#draining) return
    this.#draining = true
    for (const s of this.#sessions) goaway(s)
  }

  /** Cuts the streams left (through the lane's exchange set) and destroys the sessions. */
  destroy (): void {
    for (const s of this.#sessions) s.destroy()
  }

  /** Closes every session once its streams are done. */
  close (): void {
    for (const s of this.#sessions) if (!s.closed) s.close()
  }

  /** @internal */ warnProtocolOnce (): void {
    if (this.#warnedProtocol) return
    this.#warnedProtocol = true
    this.#host.log.warn('a gRPC call arrived but DOORMAN_APP_PROTOCOL is http1: gRPC needs DOORMAN_APP_PROTOCOL=h2c; answering UNAVAILABLE')
  }

  #stream (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number): void {
    const host = this.#host
    const stats = host.stats
    stats.arrived++
    const now = performance.now()
    stats.lastArrival = now
    stream.on('error', () => {})
    const grpc = isGrpc(headers['content-type'])
    if (host.closed) { this.shed(stream, grpc, 'draining-closed'); return }
    if (grpc && host.appProtocol === 'http1') {
      this.warnProtocolOnce()
      Metrics.inc(host.metrics.requestsH2, 200)
      Metrics.inc(host.metrics.grpcStatus, String(GRPC_UNAVAILABLE))
      answer(stream, trailersOnly(GRPC_UNAVAILABLE, 'doorman: the app is declared HTTP/1.1 (DOORMAN_APP_PROTOCOL=http1); gRPC needs DOORMAN_APP_PROTOCOL=h2c', this.#extra()))
      return
    }
    const path = headers[':path'] ?? '/'
    const ex = new StreamExchange(this, host, stream, headers, (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0, grpc, now)
    const grant = host.limiter.acquire(host.classify(path), ex.onGrant)
    if (grant === true) ex.dispatch()
    else if (typeof grant === 'string') ex.shed(grant)
    else ex.wait(grant)
  }

  #extra (): readonly string[] | null { return this.#draining ? DRAIN_H2 : null }
  /** Headers every response carries now (x-doorman-draining while draining). */
  get extra (): readonly string[] | null { return this.#extra() }

  /** 503 with x-doorman-shed, or for a gRPC call UNAVAILABLE (trailers-only) with x-doorman-shed. */
  shed (stream: ServerHttp2Stream, grpc: boolean, reason: ShedReason): void {
    const m = this.#host.metrics
    Metrics.inc(m.shed, reason)
    const extra = ['x-doorman-shed', reason, 'retry-after', '1', ...(this.#extra() ?? [])]
    if (grpc) {
      Metrics.inc(m.requestsH2, 200)
      Metrics.inc(m.grpcStatus, String(GRPC_UNAVAILABLE))
      answer(stream, trailersOnly(GRPC_UNAVAILABLE, `doorman: shed (${reason})`, extra))
      return
    }
    Metrics.inc(m.requestsH2, 503)
    answer(stream, pairs(503, extra, { 'content-type': 'text/plain; charset=utf-8' }), `shed: ${reason}\n`)
  }
}

/** Two-phase GOAWAY (as Envoy and hyper do): first the largest stream id, so streams already on the wire are still
 * served; after a ping round trip, the real last stream id (session.close() sends it and waits for the streams). */
function goaway (session: ServerHttp2Session): void {
  if (session.closed || session.destroyed) return
  try {
    session.goaway(NGHTTP2_NO_ERROR, MAX_STREAM_ID)
    const ok = session.ping((): void => { if (!session.closed) session.close() })
    if (!ok) session.close()
  } catch {
    session.close()
  }
}

/** Headers object from a status, flat pairs and more. */
function pairs (status: number, flat: readonly string[], more: OutgoingHttpHeaders = {}): OutgoingHttpHeaders {
  const h: OutgoingHttpHeaders = { ':status': status, ...more }
  for (let i = 0; i < flat.length; i += 2) h[flat[i]] = flat[i + 1]
  return h
}

/** Answers a stream with doorman's own response (headers only, or with a short body). */
function answer (stream: ServerHttp2Stream, headers: OutgoingHttpHeaders, body?: string): void {
  if (stream.destroyed || stream.closed) return
  if (stream.headersSent) { stream.close(NGHTTP2_CANCEL); return }
  try {
    if (body === undefined) {
      stream.respond(headers, { endStream: true })
    } else {
      headers['content-length'] = Buffer.byteLength(body)
      stream.respond(headers)
      stream.end(body)
    }
  } catch {
    stream.close(NGHTTP2_CANCEL)
  }
}

const IDLE = 0
const QUEUED = 1
const ACTIVE = 2
const DONE = 3

/** One HTTP/2 stream proxied to the app: its slot, its deadline, its dispatch (the same handler interface as Exchange). */
class StreamExchange implements UpstreamHandler {
  #front: H2Front
  #host: H2Host
  #stream: ServerHttp2Stream
  #headers: IncomingHttpHeaders
  #endStream: boolean
  #grpc: boolean
  #start: number
  #state = IDLE
  #waiter: Waiter | null = null
  #abort: ((err?: Error) => void) | null = null
  #deadline: NodeJS.Timeout | null = null
  /** performance.now() when grpc-timeout passes (-1: none). */
  #deadlineAt = -1
  conn: Conn | null = null
  #sent = 0
  #sentInflight = 0
  #rtt = -1
  #status = 0
  #requestId = ''
  /** The response head, held until the first body bytes or the end (so a trailers-only answer stays one frame). */
  #head: OutgoingHttpHeaders | null = null
  #trailers: OutgoingHttpHeaders | null = null
  #ctl: Dispatcher.DispatchController | null = null
  #paused = false

  constructor (front: H2Front, host: H2Host, stream: ServerHttp2Stream, headers: IncomingHttpHeaders, endStream: boolean, grpc: boolean, arrivedAt: number) {
    this.#front = front
    this.#host = host
    this.#stream = stream
    this.#headers = headers
    this.#endStream = endStream
    this.#grpc = grpc
    this.#start = arrivedAt
    stream.on('close', this.#onClientClose)
    // grpc-timeout bounds the wait for a slot and for the app together.
    const ms = grpc ? grpcTimeoutMs(headers['grpc-timeout']) : -1
    if (ms >= 0) {
      this.#deadlineAt = arrivedAt + ms
      this.#deadline = setTimeout(this.#onDeadline, Math.max(1, Math.ceil(ms)))
      this.#deadline.unref()
    }
  }

  onGrant = (reason: ShedReason | null): void => {
    this.#waiter = null
    if (reason !== null) {
      this.#state = DONE
      this.#clearDeadline()
      this.#front.shed(this.#stream, this.#grpc, reason)
      return
    }
    if (this.#state === DONE) { this.#host.limiter.release(); return }
    this.dispatch()
  }

  wait (w: Waiter): void {
    this.#state = QUEUED
    this.#waiter = w
  }

  shed (reason: ShedReason): void {
    this.#state = DONE
    this.#clearDeadline()
    this.#front.shed(this.#stream, this.#grpc, reason)
  }

  dispatch (): void {
    if (this.#state === DONE) { this.#host.limiter.release(); return }
    this.#state = ACTIVE
    this.#host.track(this)
    const h = this.#headers
    const raw: string[] = []
    for (const name of Object.keys(h)) {
      if (name.charCodeAt(0) === 58 /* : */) continue
      // :authority is the Host (RFC 9113 §8.3.1); a Host header beside it would make two.
      if (name === 'host' && typeof h[':authority'] === 'string') continue
      const v = h[name]
      if (v === undefined) continue
      if (Array.isArray(v)) for (const x of v) raw.push(name, x)
      // The app gets what is left of the deadline after the queue wait, as Envoy passes it on.
      else if (name === 'grpc-timeout' && this.#deadlineAt >= 0) raw.push(name, `${Math.max(1, Math.floor(this.#deadlineAt - performance.now()))}m`)
      else raw.push(name, v)
    }
    const authority = h[':authority']
    if (typeof authority === 'string') raw.push('host', authority)
    const socket = this.#stream.session?.socket
    const fwd = requestHeaders(raw, { remoteAddress: socket?.remoteAddress ?? '', proto: 'http', port: socket?.localPort ?? 0, trusted: this.#host.trusted })
    this.#requestId = fwd.requestId
    if (fwd.refused !== null) { this.onResponseError(null, new BadRequestError(fwd.refused)); return }
    // An HTTP/2 request has a body unless its HEADERS ended the stream (content-length is optional).
    const hasBody = !this.#endStream
    this.#sent = performance.now()
    this.#sentInflight = this.#host.limiter.inflight
    try {
      this.#host.upstream.dispatch({
        path: h[':path'] ?? '/',
        method: h[':method'] ?? 'GET',
        headers: fwd.headers,
        // undici destroys a request body once sent: through a PassThrough, so the client's stream stays open.
        body: !hasBody ? null : this.#host.appProtocol === 'http1' ? this.#stream.pipe(new PassThrough()) : this.#stream,
        idempotent: false,
        blocking: true
      }, this)
    } catch (err) {
      this.onResponseError(null, err as Error)
    }
  }

  #clearDeadline (): void {
    if (this.#deadline !== null) { clearTimeout(this.#deadline); this.#deadline = null }
  }

  #onDeadline = (): void => {
    this.#deadline = null
    const m = this.#host.metrics
    if (this.#state === QUEUED) {
      this.#state = DONE
      if (this.#waiter !== null) this.#host.limiter.cancel(this.#waiter)
      this.#waiter = null
      Metrics.inc(m.requestsH2, 200)
      Metrics.inc(m.grpcStatus, String(GRPC_DEADLINE_EXCEEDED))
      answer(this.#stream, trailersOnly(GRPC_DEADLINE_EXCEEDED, 'doorman: deadline exceeded while queued', this.#front.extra))
      return
    }
    if (this.#state !== ACTIVE) return
    // The app's stream is reset (it sees the cancellation) and the slot is free at once.
    this.#state = DONE
    const abort = this.#abort
    this.#abort = null
    this.#host.limiter.release(-1, false, this.#sentInflight)
    this.#host.finish(this, 200, this.#start, 'error', new UpstreamTimeoutError(), true, true)
    if (abort !== null) abort(new Error('deadline exceeded'))
    this.#respondError(GRPC_DEADLINE_EXCEEDED, 'doorman: deadline exceeded', null)
  }

  #onClientClose = (): void => {
    this.#clearDeadline()
    if (this.#state === QUEUED) {
      this.#state = DONE
      if (this.#waiter !== null) this.#host.limiter.cancel(this.#waiter)
      Metrics.inc(this.#host.metrics.clientErrors, 'abort-queued')
      return
    }
    if (this.#state === ACTIVE) {
      Metrics.inc(this.#host.metrics.clientErrors, 'abort')
      this.#fail()
    }
  }

  cut (): void {
    if (this.#state !== ACTIVE) return
    this.#fail()
    if (!this.#stream.destroyed) this.#stream.close(NGHTTP2_CANCEL)
  }

  #fail (): void {
    if (this.#state !== ACTIVE) return
    this.#state = DONE
    this.#clearDeadline()
    const abort = this.#abort
    this.#abort = null
    this.#host.limiter.release(this.#rtt, this.#rtt >= 0 && this.#status >= 500, this.#sentInflight)
    this.#host.finish(this, this.#status, this.#start, 'aborted', null, false, true)
    if (abort !== null) abort(new Error('client gone'))
  }

  // --- the upstream handler (undici's DispatchHandler, over its controller) ---
  onRequestSent (): void {
    if (this.#rtt < 0) this.#sent = performance.now()
  }

  onRequestStart (controller: Dispatcher.DispatchController): void {
    if (this.#state !== ACTIVE) { controller.abort(new Error('client gone')); return }
    this.#ctl = controller
    this.#abort = (err?: Error) => { controller.abort(err ?? new Error('aborted')) }
  }

  onResponseStart (controller: Dispatcher.DispatchController, statusCode: number): void {
    if (this.#state !== ACTIVE || statusCode < 200) return
    const rawHeaders = controller.rawHeaders as Buffer[]
    this.#status = statusCode
    this.#rtt = Math.max(0, performance.now() - this.#sent)
    const head = responseHeaders(rawHeaders, this.#requestId, this.#front.extra)
    this.#head = h2Head(statusCode, head.headers)
    // Sent with the first body bytes or at the end; a streaming response whose body is slow still gets its head soon.
    queueMicrotask(this.#flushHead)
  }

  #flushHead = (): void => {
    const head = this.#head
    if (head === null) return
    this.#head = null
    respondWithTrailers(this.#stream, head, this.#trailersNow)
  }

  #trailersNow = (): OutgoingHttpHeaders | null => this.#trailers

  #onDrain = (): void => {
    this.#paused = false
    this.#ctl?.resume()
  }

  onResponseData (controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.#state !== ACTIVE) return
    const s = this.#stream
    if (s.destroyed) { this.#fail(); return }
    this.#flushHead()
    if (!s.write(chunk) && !this.#paused) {
      this.#paused = true
      controller.pause()
      s.once('drain', this.#onDrain)
    }
  }

  onResponseEnd (controller: Dispatcher.DispatchController): void {
    if (this.#state !== ACTIVE) { this.#freeConn(); return }
    const raw = controller.rawTrailers
    const trailers = Array.isArray(raw) && raw.length > 0 ? raw as Array<Buffer | string> : null
    this.#ctl = null
    this.#state = DONE
    this.#clearDeadline()
    this.#abort = null
    if (this.#grpc) Metrics.inc(this.#host.metrics.grpcStatus, grpcStatusIn(trailers) ?? grpcStatusIn(controller.rawHeaders as Buffer[] | null) ?? 'unknown')
    const s = this.#stream
    if (this.#head !== null) {
      // No body: one HEADERS frame ending the stream (gRPC's trailers-only), with any trailers folded in.
      const head = this.#head
      this.#head = null
      if (trailers !== null) for (let i = 0; i < trailers.length; i += 2) head[trailers[i].toString().toLowerCase()] = trailers[i + 1].toString()
      if (!s.destroyed && !s.closed) try { s.respond(head, { endStream: true }) } catch {}
    } else if (!s.destroyed) {
      if (trailers !== null && trailers.length > 0) {
        const t: OutgoingHttpHeaders = {}
        for (let i = 0; i < trailers.length; i += 2) t[trailers[i].toString().toLowerCase()] = trailers[i + 1].toString()
        this.#trailers = t
      }
      s.end()
    }
    this.#host.limiter.release(this.#rtt, this.#status >= 500, this.#sentInflight)
    this.#host.finish(this, this.#status, this.#start, 'ok', null, false, true)
    this.#freeConn()
  }

  #freeConn (): void {
    const conn = this.conn
    if (conn === null) return
    this.conn = null
    this.#host.upstream.free(conn)
  }

  onResponseError (_controller: Dispatcher.DispatchController | null, err: Error): void {
    this.#ctl = null
    this.#freeConn()
    if (this.#state !== ACTIVE) return
    const mapped = classifyUpstreamError(err)
    const timedOut = mapped.status === 504
    this.#state = DONE
    this.#clearDeadline()
    this.#abort = null
    this.#host.limiter.release(-1, timedOut, this.#sentInflight)
    const sent = this.#stream.headersSent
    this.#host.finish(this, sent ? this.#status : this.#grpc ? 200 : mapped.status, this.#start, 'error', mapped, timedOut, true)
    if (this.#grpc) this.#respondError(grpcStatusOf(mapped), `doorman: ${mapped.message} (${mapped.code})`, mapped)
    else if (sent) this.#stream.close(NGHTTP2_CANCEL)
    else {
      this.#head = null
      answer(this.#stream, pairs(mapped.status, ['x-doorman-error', mapped.code, 'x-request-id', this.#requestId, ...(this.#front.extra ?? [])], { 'content-type': 'text/plain; charset=utf-8' }), `${mapped.message}\n`)
    }
    if (mapped.code === 'DOORMAN_ERR_INTERNAL') this.#host.log.error({ err }, 'proxy error')
  }

  /** A gRPC error from doorman: trailers-only before the head went out, else as the trailers of what was sent. */
  #respondError (status: number, message: string, err: DoormanError | null): void {
    const s = this.#stream
    this.#head = null
    if (s.destroyed || s.closed) return
    Metrics.inc(this.#host.metrics.grpcStatus, String(status))
    const extra = err !== null ? ['x-doorman-error', err.code, ...(this.#front.extra ?? [])] : this.#front.extra
    if (!s.headersSent) { answer(s, trailersOnly(status, message, extra)); return }
    this.#trailers = { 'grpc-status': String(status), 'grpc-message': message }
    s.end()
  }
}

/** The grpc-status in a raw header list, as a bounded label: `0`…`16`, else `unknown`; undefined when absent. */
function grpcStatusIn (raw: Array<Buffer | string> | null): string | undefined {
  if (raw === null) return undefined
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i].length === 11 && raw[i].toString().toLowerCase() === 'grpc-status') {
      const v = raw[i + 1].toString()
      return /^(?:\d|1[0-6])$/.test(v) ? v : 'unknown'
    }
  }
  return undefined
}
