// The app's HTTP/2 calls on the outbound lane (cleartext, prior knowledge; detect.ts hands the sockets over). Every
// stream is one call, balanced on its own: the service is the `:authority` name (port stripped), the instance is
// picked per call by the service's Balancer (warmup weights, ejection, drain flag, panic mode, as for HTTP/1.1), so
// one long-lived gRPC channel spreads its calls over every instance. Toward the provider the call goes over h2c to
// its inbound port (a few multiplexed sessions per instance: Endpoint.h2).
//   - A provider's shed answer (trailers-only UNAVAILABLE, or 503, with x-doorman-shed: the app there never saw it)
//     is retried once on another instance, as is a call the provider refused before reading it (connection refused,
//     or a stream refused by its GOAWAY). The request body is kept for that (up to maxRetryBody) until the answer
//     that is passed on starts.
//   - A response with x-doorman-draining drops its instance for new calls at once (the lane's drain memory); a
//     provider session's GOAWAY drops the session (H2Upstream).
//   - Trailers, flow control both ways, cancellation (the app resets its stream: the provider's is reset), and
//     grpc-timeout (passed on as what is left of it).
//   - What doorman answers itself to a gRPC call is trailers-only (grpc-status 14, naming the service).
import http2, { type Http2Server, type ServerHttp2Session, type ServerHttp2Stream, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2'
import type { Socket } from 'node:net'
import { PassThrough, type Readable } from 'node:stream'
import type { Dispatcher } from 'undici'
import { logProxyError } from '../core/log.js'
import { classifyUpstreamError, BadRequestError, NoInstanceError, NoServiceError, DoormanError } from '../core/errors.js'
import { isGrpc, grpcTimeoutMs, grpcStatusOf, trailersOnly, GRPC_UNAVAILABLE } from '../core/grpc.js'
import { h2Head, respondWithTrailers } from '../core/h2.js'
import { Metrics } from '../metrics/index.js'
import { requestHeaders, responseHeaders, isOwnHeader } from '../inbound/headers.js'
import { SERVICE_NAME } from '../registry/types.js'
import type { Conn } from '../inbound/upstream.js'
import type { Endpoint } from './endpoint.js'
import type { Outbound, Upstream } from './index.js'

const { NGHTTP2_CANCEL, NGHTTP2_REFUSED_STREAM, NGHTTP2_FLAG_END_STREAM } = http2.constants
/** Errors that mean the call never reached the provider. */
const NOTHING_SENT = new Set(['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'ENOTFOUND'])

export class OutboundH2 {
  readonly server: Http2Server
  readonly #out: Outbound
  readonly #sessions = new Set<ServerHttp2Session>()

  constructor (out: Outbound) {
    this.#out = out
    this.server = http2.createServer({ maxSendHeaderBlockLength: 65536, settings: { maxConcurrentStreams: 1000 } })
    this.server.on('session', (session: ServerHttp2Session) => {
      this.#sessions.add(session)
      session.once('close', () => { this.#sessions.delete(session) })
      session.on('error', () => {})
    })
    this.server.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number) => { this.#stream(stream, headers, flags) })
    this.server.on('sessionError', () => {})
  }

  /** A socket whose first bytes are the HTTP/2 preface. */
  accept (socket: Socket): void {
    this.server.emit('connection', socket)
  }

  /** Closes every session once its streams are done. */
  close (): void {
    for (const s of this.#sessions) if (!s.closed) s.close()
  }

  destroy (): void {
    for (const s of this.#sessions) s.destroy()
  }

  #stream (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number): void {
    stream.on('error', () => {})
    const out = this.#out
    const grpc = isGrpc(headers['content-type'])
    if (out.closed) { ownAnswer(stream, grpc, new NoInstanceError('(closing)'), null); return }
    const authority = headers[':authority'] ?? headers.host
    const service = typeof authority === 'string' ? authority.replace(/:\d+$/, '').toLowerCase() : ''
    if (!SERVICE_NAME.test(service)) {
      Metrics.inc(out.metrics.outbound, '-\tbad-request')
      ownAnswer(stream, grpc, new NoServiceError(), null)
      return
    }
    const up = out.upstream(service)
    if (up === undefined) { noInstance(out, stream, grpc, service); return }
    const call = new H2Call(out, up, stream, headers, (flags & NGHTTP2_FLAG_END_STREAM) !== 0, grpc)
    if (up.watch.synced) { call.start(); return }
    // The first call for a service waits (briefly) for the registry's first listing.
    const wait = out.registry.up ? 2000 : 250
    let timer: NodeJS.Timeout | undefined
    void Promise.race([up.watch.ready, new Promise<void>((resolve) => { timer = setTimeout(resolve, wait) })]).then(() => {
      clearTimeout(timer)
      call.start()
    })
  }
}

function noInstance (out: Outbound, stream: ServerHttp2Stream, grpc: boolean, service: string): void {
  Metrics.inc(out.metrics.outbound, `${service}\tno-instance`)
  ownAnswer(stream, grpc, new NoInstanceError(service), null)
}

/** doorman's own answer: trailers-only for a gRPC call, else the error's status with x-doorman-error and a line. */
function ownAnswer (stream: ServerHttp2Stream, grpc: boolean, err: DoormanError, requestId: string | null, extra: readonly string[] = []): void {
  if (stream.destroyed || stream.closed) return
  if (stream.headersSent) { stream.close(NGHTTP2_CANCEL); return }
  const more = ['x-doorman-error', err.code, ...(requestId !== null ? ['x-request-id', requestId] : []), ...extra]
  try {
    if (grpc) {
      stream.respond(trailersOnly(grpcStatusOf(err), `doorman: ${err.message} (${err.code})`, more), { endStream: true })
      return
    }
    const body = `${err.message}\n`
    const h: OutgoingHttpHeaders = { ':status': err.status, 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body) }
    for (let i = 0; i < more.length; i += 2) h[more[i]] = more[i + 1]
    stream.respond(h)
    stream.end(body)
  } catch {
    stream.close(NGHTTP2_CANCEL)
  }
}

/**
 * The request body, kept so that a second attempt can send it again: each attempt gets a fresh stream holding the
 * bytes read so far, then the rest as it comes. Once more than `max` bytes passed, or the attempt is committed, the
 * bytes are no longer kept.
 */
class ReplayBody {
  #src: Readable
  #max: number
  #chunks: Buffer[] | null = []
  #size = 0
  #ended = false
  #out: PassThrough

  constructor (src: Readable, max: number) {
    this.#src = src
    this.#max = max
    this.#out = new PassThrough()
    src.on('data', this.#onData)
    src.once('end', this.#onEnd)
  }

  get body (): PassThrough { return this.#out }
  get replayable (): boolean { return this.#chunks !== null }

  #onData = (c: Buffer): void => {
    if (this.#chunks !== null) {
      this.#size += c.length
      if (this.#size > this.#max) this.#chunks = null
      else this.#chunks.push(c)
    }
    if (!this.#out.write(c)) {
      this.#src.pause()
      this.#out.once('drain', this.#resume)
    }
  }

  #resume = (): void => { this.#src.resume() }
  #onEnd = (): void => { this.#ended = true; this.#out.end() }

  /** A fresh body for another attempt (null when the bytes are no longer kept). */
  again (): PassThrough | null {
    if (this.#chunks === null) return null
    const old = this.#out
    old.removeListener('drain', this.#resume)
    old.unpipe()
    old.destroy()
    const p = new PassThrough()
    for (const c of this.#chunks) p.write(c)
    if (this.#ended) p.end()
    this.#out = p
    this.#src.resume()
    return p
  }

  /** The attempt whose answer is passed on: nothing more to keep. */
  commit (): void { this.#chunks = null }

  /** Stops reading the app's request (the call is over): what more it sends is dropped. */
  stop (): void {
    this.#src.removeListener('data', this.#onData)
    this.#src.resume()
    this.#out.removeListener('drain', this.#resume)
    this.#out.destroy()
  }
}

const IDLE = 0
const ACTIVE = 1
const DISCARD = 2
const DONE = 3

/** One HTTP/2 call from the app: at most two attempts on two instances (the handler interface H2Upstream drives). */
class H2Call {
  conn: Conn | null = null
  #out: Outbound
  #up: Upstream
  #stream: ServerHttp2Stream
  #headers: IncomingHttpHeaders
  #grpc: boolean
  #body: ReplayBody | null
  #raw: string[] = []
  #requestId = ''
  #deadlineAt = -1
  #started = performance.now()
  /** The instance of the attempt in flight, or of the last one. */
  #ep: Endpoint | null = null
  /** Whether the attempt in flight still counts in its instance's inflight. */
  #holding = false
  #attempt = 0
  #state = IDLE
  #status = 0
  #tracked = false
  #ctl: Dispatcher.DispatchController | null = null
  /** The response head, held until the first body bytes or the end (so a trailers-only answer stays one frame). */
  #head: OutgoingHttpHeaders | null = null
  #trailers: OutgoingHttpHeaders | null = null
  #stall: NodeJS.Timeout | null = null
  #paused = false

  constructor (out: Outbound, up: Upstream, stream: ServerHttp2Stream, headers: IncomingHttpHeaders, endStream: boolean, grpc: boolean) {
    this.#out = out
    this.#up = up
    this.#stream = stream
    this.#headers = headers
    this.#grpc = grpc
    this.#body = endStream ? null : new ReplayBody(stream, out.maxRetryBody)
    const ms = grpc ? grpcTimeoutMs(headers['grpc-timeout']) : -1
    if (ms >= 0) this.#deadlineAt = this.#started + ms
    stream.once('close', this.#onClientClose)
  }

  start (): void {
    const s = this.#stream
    if (s.destroyed || s.closed || this.#state !== IDLE) { this.#body?.stop(); this.#state = DONE; return }
    const h = this.#headers
    const raw: string[] = []
    for (const name of Object.keys(h)) {
      if (name.charCodeAt(0) === 58 /* : */) continue
      if (name === 'host' && typeof h[':authority'] === 'string') continue
      const v = h[name]
      if (v === undefined) continue
      if (Array.isArray(v)) for (const x of v) raw.push(name, x)
      else raw.push(name, v)
    }
    const authority = h[':authority']
    if (typeof authority === 'string') raw.push('host', authority)
    const fwd = requestHeaders(raw, { remoteAddress: s.session?.socket?.remoteAddress ?? '127.0.0.1', proto: 'http', port: 0, trusted: true })
    this.#requestId = fwd.requestId
    if (fwd.refused !== null) {
      Metrics.inc(this.#out.metrics.clientErrors, 'malformed')
      this.#state = DONE
      this.#body?.stop()
      ownAnswer(s, this.#grpc, new BadRequestError(`doorman cannot forward this request as sent: ${fwd.refused}`), this.#requestId)
      return
    }
    this.#raw = fwd.headers
    const ep = this.#up.balancer.pick(performance.now())
    if (ep === undefined) { this.#state = DONE; this.#body?.stop(); noInstance(this.#out, s, this.#grpc, this.#up.service); return }
    const m = this.#out.metrics
    const service = this.#up.service
    m.outboundInflight.set(service, (m.outboundInflight.get(service) ?? 0) + 1)
    this.#tracked = true
    this.#dispatch(ep, this.#body?.body ?? null)
  }

  #dispatch (ep: Endpoint, body: Readable | null): void {
    this.#ep = ep
    this.#state = ACTIVE
    this.#status = 0
    ep.inflight++
    this.#holding = true
    let headers = this.#raw
    if (this.#deadlineAt >= 0) {
      // The provider gets what is left of the deadline.
      headers = headers.slice()
      for (let i = 0; i < headers.length; i += 2) {
        if (headers[i] === 'grpc-timeout') headers[i + 1] = `${Math.max(1, Math.floor(this.#deadlineAt - performance.now()))}m`
      }
    }
    try {
      ep.h2.dispatch({ path: this.#headers[':path'] ?? '/', method: this.#headers[':method'] ?? 'GET', headers, body, idempotent: false, blocking: true }, this)
    } catch (err) {
      this.onResponseError(null, err as Error)
    }
  }

  /** Another instance for a retry, or null when a retry isn't possible. */
  #retryTarget (): Endpoint | null {
    if (this.#attempt > 0 || this.#stream.headersSent || this.#stream.destroyed || this.#stream.closed) return null
    if (this.#body !== null && !this.#body.replayable) return null
    return this.#up.balancer.pick(performance.now(), this.#ep ?? undefined) ?? null
  }

  #retry (next: Endpoint, reason: string): void {
    this.#attempt++
    Metrics.inc(this.#out.metrics.outboundRetries, `${this.#up.service}\t${reason}`)
    const body = this.#body === null ? null : this.#body.again()
    this.#dispatch(next, body)
  }

  #finishAttempt (): Endpoint | null {
    const ep = this.#ep
    this.#ctl = null
    if (this.#stall !== null) { clearTimeout(this.#stall); this.#stall = null }
    if (ep !== null && this.#holding) { this.#holding = false; this.#up.release(ep) }
    return ep
  }

  /** The call is over: metrics, and the request body no longer read. */
  #settle (outcome: string, kind: string | null): void {
    this.#state = DONE
    this.#body?.stop()
    const m = this.#out.metrics
    const service = this.#up.service
    Metrics.inc(m.outbound, `${service}\t${outcome}`)
    if (!this.#tracked) return
    this.#tracked = false
    m.outboundInflight.set(service, (m.outboundInflight.get(service) ?? 1) - 1)
    m.outboundDuration.observe({ service }, (performance.now() - this.#started) / 1000)
    if (kind !== null) Metrics.inc(m.outboundErrors, `${service}\t${kind}`)
  }

  /** The app reset its stream (or went away): reset the provider's. */
  #onClientClose = (): void => {
    if (this.#state === DONE) return
    const inFlight = this.#state === ACTIVE || this.#state === DISCARD
    const ctl = this.#ctl
    if (inFlight) this.#finishAttempt()
    this.#settle('aborted', 'incomplete')
    ctl?.abort(new Error('client gone'))
  }

  // --- the handler H2Upstream drives (undici's DispatchHandler, over its controller) ---
  onRequestStart (controller: Dispatcher.DispatchController): void {
    if (this.#state === DONE) { controller.abort(new Error('client gone')); return }
    this.#ctl = controller
  }

  onResponseStart (controller: Dispatcher.DispatchController, statusCode: number): void {
    if (this.#state !== ACTIVE || statusCode < 200) return
    this.#status = statusCode
    const ep = this.#ep as Endpoint
    const rawHeaders = controller.rawHeaders as Buffer[]
    let shed = false
    let doormanError = false
    let grpcStatus = ''
    for (let i = 0; i < rawHeaders.length; i += 2) {
      const name = rawHeaders[i].toString('latin1')
      if (name === 'x-doorman-draining') {
        // The instance drains: no new calls to it from now on, before the registry event even arrives.
        if (ep.sawDraining(performance.now())) this.#up.balancer.invalidate()
      } else if (name === 'x-doorman-shed') shed = true
      else if (name === 'x-doorman-error') doormanError = true
      else if (name === 'grpc-status') grpcStatus = rawHeaders[i + 1].toString('latin1')
    }
    const shedAnswer = shed && (statusCode === 503 || (statusCode === 200 && grpcStatus === String(GRPC_UNAVAILABLE)))
    if (shedAnswer && this.#retryTarget() !== null) {
      // Shed before the app there saw it: drop this answer and try another instance once it is read.
      this.#state = DISCARD
      return
    }
    const gatewayFailure = !shed && ((statusCode >= 502 && statusCode <= 504) || (doormanError && grpcStatus !== ''))
    this.#up.outcome(ep, gatewayFailure)
    this.#body?.commit()
    const head = responseHeaders(rawHeaders, this.#requestId, null, false)
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
    if (this.#stall !== null) { clearTimeout(this.#stall); this.#stall = null }
    this.#ctl?.resume()
  }

  /** The app read nothing for the write timeout: reset its stream (which cancels the provider's). */
  #stalled = (): void => {
    this.#stall = null
    if (this.#state !== ACTIVE) return
    Metrics.inc(this.#out.metrics.clientErrors, 'write-timeout')
    if (!this.#stream.destroyed) this.#stream.close(NGHTTP2_CANCEL)
  }

  onResponseData (controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.#state !== ACTIVE) return
    const s = this.#stream
    if (s.destroyed || s.closed) return
    this.#flushHead()
    if (!s.write(chunk) && !this.#paused) {
      this.#paused = true
      controller.pause()
      s.once('drain', this.#onDrain)
      this.#stall = setTimeout(this.#stalled, this.#out.clientWriteTimeout)
    }
  }

  onResponseEnd (controller: Dispatcher.DispatchController): void {
    if (this.#state === DISCARD) {
      closeStream(controller)
      this.#finishAttempt()
      const next = this.#retryTarget()
      if (next !== null) { this.#retry(next, 'shed'); return }
      this.#settle('ok', '503')
      ownAnswer(this.#stream, this.#grpc, new DoormanError('DOORMAN_ERR_NO_INSTANCE', 'every instance shed the request', 503), this.#requestId, ['retry-after', '1'])
      return
    }
    if (this.#state !== ACTIVE) return
    this.#finishAttempt()
    const raw = controller.rawTrailers
    const trailers = Array.isArray(raw) && raw.length > 0 ? raw as Array<Buffer | string> : null
    const s = this.#stream
    const status = this.#status
    this.#settle('ok', status >= 502 && status <= 504 ? String(status) : status >= 500 ? '5xx' : null)
    if (this.#head !== null) {
      // No body: one HEADERS frame ending the stream (gRPC's trailers-only), with any trailers folded in.
      const head = this.#head
      this.#head = null
      if (trailers !== null) for (let i = 0; i < trailers.length; i += 2) head[trailers[i].toString().toLowerCase()] = trailers[i + 1].toString()
      if (!s.destroyed && !s.closed) try { s.respond(head, { endStream: true }) } catch {}
    } else if (!s.destroyed) {
      if (trailers !== null) {
        const t: OutgoingHttpHeaders = {}
        for (let i = 0; i < trailers.length; i += 2) {
          const name = trailers[i].toString().toLowerCase()
          if (!isOwnHeader(name)) t[name] = trailers[i + 1].toString()
        }
        this.#trailers = t
      }
      s.end()
    }
  }

  /** Also called with no controller when the request could not start. */
  onResponseError (controller: Dispatcher.DispatchController | null, err: Error): void {
    if (this.#state !== ACTIVE && this.#state !== DISCARD) return
    const discarding = this.#state === DISCARD
    const ep = this.#finishAttempt()
    const mapped = classifyUpstreamError(err)
    const code = (err as { code?: string }).code ?? ''
    const refused = (controller as { stream?: { rstCode?: number } } | null)?.stream?.rstCode === NGHTTP2_REFUSED_STREAM
    if (ep !== null && mapped.status >= 500 && !refused) this.#up.outcome(ep, true)
    if (discarding || (this.#status === 0 && (NOTHING_SENT.has(code) || refused))) {
      const next = this.#retryTarget()
      if (next !== null) { this.#retry(next, discarding ? 'shed' : refused ? 'reset' : 'connect'); return }
    }
    const s = this.#stream
    this.#settle('error', s.headersSent ? 'incomplete' : String(mapped.status))
    this.#head = null
    if (s.headersSent) {
      if (this.#grpc && !s.destroyed && !s.closed) {
        this.#trailers = { 'grpc-status': String(grpcStatusOf(mapped)), 'grpc-message': `doorman: ${mapped.message} (${mapped.code})` }
        s.end()
      } else if (!s.destroyed) s.close(NGHTTP2_CANCEL)
    } else {
      ownAnswer(s, this.#grpc, mapped, this.#requestId)
    }
    logProxyError(this.#out.log, mapped.code, err)
  }
}

/** Closes the provider's stream of a discarded answer, if the app's request body still flows into it. */
function closeStream (controller: Dispatcher.DispatchController): void {
  const stream = (controller as { stream?: http2.ClientHttp2Stream | null }).stream
  if (stream != null && !stream.closed && !stream.destroyed) stream.close(NGHTTP2_CANCEL)
}
