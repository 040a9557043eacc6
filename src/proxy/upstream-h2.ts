// The upstream side over cleartext HTTP/2 (an h2c app, DOORMAN_APP_PROTOCOL=h2c; a provider's inbound port for the
// outbound lane's HTTP/2 calls): a few multiplexed node:http2 client sessions, driven through the same handler
// interface as the HTTP/1.1 side (undici's DispatchHandler and its controller), so the proxy core's Exchange sends to
// either without knowing which.
//
// Why node:http2 and not undici 8's HTTP/2 client: doorman needs each stream's own flow control (pause/resume of one
// stream, not the session), RST_STREAM with the code it chooses on cancellation, a trailers-only answer told apart
// from headers-then-empty-body (gRPC's error shape), and a session dropped at the provider's GOAWAY while its streams
// finish; node:http2 gives all of these directly (docs/grpc.md).
import http2, { type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2'
import { STATUS_CODES } from 'node:http'
import type { Readable } from 'node:stream'
import type { Dispatcher } from 'undici'
import type { Conn, UpstreamHandler } from './upstream-h1.js'

/** The app's side, whatever it speaks: Upstream (HTTP/1.1 over undici) or H2Upstream. */
export interface AppUpstream {
  readonly size: number
  dispatch: (opts: Dispatcher.DispatchOptions, handler: UpstreamHandler) => void
  free: (conn: Conn) => void
  close: () => Promise<void>
}

const { NGHTTP2_CANCEL, NGHTTP2_NO_ERROR, NGHTTP2_FLAG_END_STREAM } = http2.constants

/** Streams on one session before another session is opened (while fewer than the pool's size exist). */
const STREAMS_PER_SESSION = 100

/** Request headers an HTTP/2 request must not carry (RFC 9113 §8.2.2). */
const DROP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'host', 'te', 'http2-settings'])

/** undici calls onRequestSent on the handlers that have it (not in its types). */
type Sent = UpstreamHandler & { onRequestSent?: () => void }

interface Session {
  session: ClientHttp2Session
  active: number
  dead: boolean
}

export interface H2UpstreamOptions {
  /** Sessions to the app at most. */
  sessions: number
  /** Longest wait for the response head, in milliseconds. */
  headersTimeout: number
  /** Longest wait for the connection, in milliseconds. */
  connectTimeout: number
  /**
   * Longest the response body may go without a DATA frame once the head came, in milliseconds (default: the headers
   * timeout, at least 5 minutes, as the HTTP/1.1 upstream's bodyTimeout): a call the app never finishes, with no
   * grpc-timeout to end it, can't hold its slot for good.
   */
  bodyTimeout?: number
  /** With an https origin: the options of each new session (mTLS to a provider: its own TLS connection, made anew at every connect). */
  tls?: () => http2.SecureClientSessionOptions
}

function codedError (message: string, code: string, cause?: unknown): Error {
  return Object.assign(new Error(message, { cause }), { code })
}

/** A session or stream error as the codes classifyUpstreamError knows (refused stays refused; the rest: socket). */
function appError (err: unknown): Error {
  const e = err as { code?: string, cause?: unknown } | null
  const cause = e?.cause as { code?: string } | undefined
  if (typeof cause?.code === 'string' && !cause.code.startsWith('ERR_HTTP2')) return cause as Error
  if (typeof e?.code === 'string' && !e.code.startsWith('ERR_HTTP2')) return err as Error
  return codedError(`app HTTP/2 stream failed: ${(err as Error)?.message ?? String(err)}`, 'UND_ERR_SOCKET', err)
}

export class H2Upstream implements AppUpstream {
  readonly #origin: string
  readonly #opts: H2UpstreamOptions
  readonly #sessions: Session[] = []
  #next = 0
  #active = 0
  #emptied: (() => void) | null = null
  readonly #bodyTimeout: number

  constructor (origin: string, opts: H2UpstreamOptions) {
    this.#origin = origin
    this.#opts = opts
    this.#bodyTimeout = opts.bodyTimeout ?? Math.max(opts.headersTimeout, 300_000)
  }

  /** Sessions open or opening. */
  get size (): number { return this.#sessions.length }

  #session (): Session {
    let best: Session | undefined
    for (let i = 0; i < this.#sessions.length; i++) {
      const s = this.#sessions[(this.#next + i) % this.#sessions.length]
      if (best === undefined || s.active < best.active) best = s
    }
    this.#next++
    if (best !== undefined && (best.active < STREAMS_PER_SESSION || this.#sessions.length >= this.#opts.sessions)) return best
    const session = http2.connect(this.#origin, { peerMaxConcurrentStreams: 1000, ...this.#opts.tls?.() })
    const s: Session = { session, active: 0, dead: false }
    const drop = (): void => {
      if (s.dead) return
      s.dead = true
      const i = this.#sessions.indexOf(s)
      if (i >= 0) this.#sessions.splice(i, 1)
    }
    const timer = setTimeout(() => { session.destroy(codedError('connect timeout', 'UND_ERR_CONNECT_TIMEOUT')) }, this.#opts.connectTimeout)
    timer.unref()
    session.once('connect', () => { clearTimeout(timer) })
    session.on('error', drop)
    session.on('goaway', drop)
    session.on('close', () => { clearTimeout(timer); drop() })
    session.unref()
    this.#sessions.push(s)
    return s
  }

  /** Sends a request as an HTTP/2 stream; the handler's callbacks run as undici's would. */
  dispatch (opts: Dispatcher.DispatchOptions, handler: UpstreamHandler): void {
    handler.conn = null
    const raw = opts.headers as string[]
    const headers: OutgoingHttpHeaders = { ':method': opts.method, ':path': opts.path, ':scheme': this.#opts.tls !== undefined ? 'https' : 'http' }
    let authority = ''
    let grpc = false
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i].toLowerCase()
      if (name === 'host') { authority = raw[i + 1]; continue }
      if (DROP.has(name)) continue
      if (name === 'content-type' && raw[i + 1].startsWith('application/grpc')) grpc = true
      const prev = headers[name]
      headers[name] = prev === undefined ? raw[i + 1] : Array.isArray(prev) ? [...prev, raw[i + 1]] : [String(prev), raw[i + 1]]
    }
    headers[':authority'] = authority !== '' ? authority : new URL(this.#origin).host
    if (grpc) headers.te = 'trailers'
    const body = (opts.body ?? null) as Readable | null

    let s: Session
    let req: ClientHttp2Stream
    const ctl = new StreamController()
    try {
      s = this.#session()
      req = s.session.request(headers, { endStream: body === null })
    } catch (err) {
      handler.onResponseError?.(ctl, appError(err))
      return
    }
    ctl.stream = req
    s.active++
    this.#active++
    let done = false
    const finish = (): boolean => {
      if (done) return false
      done = true
      clearTimeout(timer)
      if (idle !== null) clearTimeout(idle)
      s.active--
      if (--this.#active === 0 && this.#emptied !== null) this.#emptied()
      return true
    }
    const fail = (err: unknown): void => {
      if (!finish()) return
      if (!req.destroyed) req.close(NGHTTP2_CANCEL)
      handler.onResponseError?.(ctl, appError(err))
    }
    ctl.onAbort = fail
    const timer = setTimeout(() => { fail(codedError('app response headers timeout', 'UND_ERR_HEADERS_TIMEOUT')) }, this.#opts.headersTimeout)
    handler.onRequestStart?.(ctl, {})
    if (done) return

    if (body !== null) {
      body.pipe(req)
      body.once('end', () => { if (!done) (handler as Sent).onRequestSent?.() })
    } else {
      (handler as Sent).onRequestSent?.()
    }
    let idle: NodeJS.Timeout | null = null
    req.on('response', (h: IncomingHttpHeaders, flags: number) => {
      if (done) return
      clearTimeout(timer)
      idle = setTimeout(() => { fail(codedError('app response body timeout', 'UND_ERR_BODY_TIMEOUT')) }, this.#bodyTimeout)
      const status = Number(h[':status'])
      ctl.rawHeaders = flatten(h)
      handler.onResponseStart?.(ctl, status, h, STATUS_CODES[status] ?? '')
      // Trailers-only (HEADERS with END_STREAM, as a gRPC error often is): complete at once, so the client side can
      // answer with the same single HEADERS frame.
      if ((flags & NGHTTP2_FLAG_END_STREAM) !== 0 && finish()) handler.onResponseEnd?.(ctl, {})
    })
    req.on('data', (chunk: Buffer) => {
      if (done) return
      idle?.refresh()
      handler.onResponseData?.(ctl, chunk)
    })
    req.on('trailers', (h: IncomingHttpHeaders) => { ctl.rawTrailers = flatten(h); ctl.trailers = h })
    req.on('end', () => {
      // A stream the app reset after its head also ends the readable side (node pushes the end at RST_STREAM): that
      // is a failure, not a complete response. A clean end has no reset code yet (NO_ERROR comes with 'close').
      const code = req.rstCode
      if (code !== undefined && code !== NGHTTP2_NO_ERROR) { fail(codedError(`app reset the stream (code ${code})`, 'UND_ERR_SOCKET')); return }
      if (finish()) handler.onResponseEnd?.(ctl, ctl.trailers)
    })
    req.on('error', fail)
    req.on('close', () => {
      if (done) return
      fail(codedError(`app reset the stream (code ${req.rstCode ?? '?'})`, 'UND_ERR_SOCKET'))
    })
  }

  /** Nothing to give back: streams end on their own. Present so both upstreams have one shape. */
  free (_conn: Conn): void {}

  /** Waits for the streams in flight, then closes every session. */
  async close (): Promise<void> {
    if (this.#active > 0) await new Promise<void>((resolve) => { this.#emptied = resolve })
    await Promise.all(this.#sessions.map(async (s) => { await new Promise<void>((resolve) => { s.session.close(() => { resolve() }) }) }))
  }

  /** Destroys every session now (the streams in flight fail). */
  destroy (): void {
    for (const s of [...this.#sessions]) s.session.destroy()
  }
}

/** Regular (non-pseudo) headers as a flat list of Buffers, the raw form undici hands its handlers. */
function flatten (h: IncomingHttpHeaders): Buffer[] {
  const out: Buffer[] = []
  for (const name of Object.keys(h)) {
    if (name.charCodeAt(0) === 58 /* : */) continue
    const v = h[name]
    if (v === undefined) continue
    if (Array.isArray(v)) for (const x of v) out.push(Buffer.from(name), Buffer.from(x))
    else out.push(Buffer.from(name), Buffer.from(String(v)))
  }
  return out
}

/** undici's DispatchController over one HTTP/2 stream: pause/resume are the stream's flow control, abort resets it. */
class StreamController implements Dispatcher.DispatchController {
  stream: ClientHttp2Stream | null = null
  onAbort: ((err: Error) => void) | null = null
  rawHeaders: Buffer[] | null = null
  rawTrailers: Buffer[] | null = null
  trailers: IncomingHttpHeaders = {}
  #paused = false
  #aborted = false
  #reason: Error | null = null
  get aborted (): boolean { return this.#aborted }
  get paused (): boolean { return this.#paused }
  get reason (): Error | null { return this.#reason }
  abort (reason: Error): void {
    if (this.#aborted) return
    this.#aborted = true
    this.#reason = reason
    this.onAbort?.(reason)
  }

  pause (): void { this.#paused = true; this.stream?.pause() }
  resume (): void { this.#paused = false; this.stream?.resume() }
}
