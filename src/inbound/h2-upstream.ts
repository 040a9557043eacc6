// The app's side when it speaks cleartext HTTP/2 (DOORMAN_APP_PROTOCOL=h2c): a few multiplexed node:http2 client
// sessions, driven through the same handler interface as the HTTP/1.1 Upstream (undici's DispatchHandler, with a
// controller of the same shape), so an Exchange or an HTTP/2 stream proxies to either app without knowing which.
//
// Why node:http2 and not undici: this was written on undici 7.x, whose HTTP/2 client lacks the h2c pooling,
// multiplexed request bodies and GOAWAY handling that landed in 8.x (now in use, so its client could take this over);
// node:http2 gives direct control of streams, flow control (pause/resume), RST_STREAM on cancellation and trailers,
// which gRPC needs.
import http2, { type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2'
import { STATUS_CODES } from 'node:http'
import type { Readable } from 'node:stream'
import type { Dispatcher } from 'undici'
import type { Conn, UpstreamHandler } from './upstream.js'

/** The app's side, whatever it speaks: Upstream (HTTP/1.1 over undici) or H2Upstream. */
export interface AppUpstream {
  readonly size: number
  dispatch: (opts: Dispatcher.DispatchOptions, handler: UpstreamHandler) => void
  free: (conn: Conn) => void
  close: () => Promise<void>
}

const { NGHTTP2_CANCEL, NGHTTP2_FLAG_END_STREAM } = http2.constants

/** Streams on one session before another session is opened (while fewer than the pool's size exist). */
const STREAMS_PER_SESSION = 100

/** Request headers an HTTP/2 request must not carry (RFC 9113 §8.2.2). */
const DROP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'host', 'te', 'http2-settings'])

/** undici calls onRequestSent on the handlers that have it. */
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
}

/** What undici hands a handler, for one app stream: pause and resume its reading, abort it, its raw head and trailers. */
class StreamController implements Dispatcher.DispatchController {
  #paused = false
  #aborted = false
  #reason: Error | null = null
  rawHeaders: Buffer[] | null = null
  rawTrailers: Buffer[] | null = null
  constructor (private readonly req: ClientHttp2Stream | null, private readonly onAbort: (err: Error) => void) {}
  get aborted (): boolean { return this.#aborted }
  get paused (): boolean { return this.#paused }
  get reason (): Error | null { return this.#reason }
  pause (): void { if (!this.#paused) { this.#paused = true; this.req?.pause() } }
  resume (): void { if (this.#paused) { this.#paused = false; this.req?.resume() } }
  abort (reason: Error): void {
    if (this.#aborted) return
    this.#aborted = true
    this.#reason = reason
    this.onAbort(reason)
  }
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

  constructor (origin: string, opts: H2UpstreamOptions) {
    this.#origin = origin
    this.#opts = opts
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
    const session = http2.connect(this.#origin, { peerMaxConcurrentStreams: 1000 })
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
    const headers: OutgoingHttpHeaders = { ':method': opts.method, ':path': opts.path, ':scheme': 'http' }
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
    try {
      s = this.#session()
      req = s.session.request(headers, { endStream: body === null })
    } catch (err) {
      handler.onResponseError?.(new StreamController(null, () => {}), appError(err))
      return
    }
    s.active++
    this.#active++
    let done = false
    let trailers: Buffer[] | null = null
    const finish = (): boolean => {
      if (done) return false
      done = true
      clearTimeout(timer)
      s.active--
      if (--this.#active === 0 && this.#emptied !== null) this.#emptied()
      return true
    }
    const fail = (err: unknown): void => {
      if (!finish()) return
      if (!req.destroyed) req.close(NGHTTP2_CANCEL)
      handler.onResponseError?.(ctl, appError(err))
    }
    const ctl = new StreamController(req, (err) => { fail(err) })
    const timer = setTimeout(() => { fail(codedError('app response headers timeout', 'UND_ERR_HEADERS_TIMEOUT')) }, this.#opts.headersTimeout)
    handler.onRequestStart?.(ctl, null)
    if (done) return

    if (body !== null) {
      body.pipe(req)
      body.once('end', () => { if (!done) (handler as Sent).onRequestSent?.() })
    } else {
      (handler as Sent).onRequestSent?.()
    }
    req.on('response', (h: IncomingHttpHeaders, flags: number) => {
      if (done) return
      clearTimeout(timer)
      const status = Number(h[':status'])
      ctl.rawHeaders = flatten(h)
      handler.onResponseStart?.(ctl, status, h as Record<string, string | string[] | undefined>, STATUS_CODES[status] ?? '')
      // Trailers-only (HEADERS with END_STREAM, as a gRPC error often is): complete at once, so the client side can
      // answer with the same single HEADERS frame.
      if ((flags & NGHTTP2_FLAG_END_STREAM) !== 0 && finish()) handler.onResponseEnd?.(ctl, {})
    })
    req.on('data', (chunk: Buffer) => {
      if (done) return
      // The handler pauses the stream through the controller when its client is slower.
      handler.onResponseData?.(ctl, chunk)
    })
    req.on('trailers', (h: IncomingHttpHeaders) => { trailers = flatten(h) })
    req.on('end', () => {
      if (!finish()) return
      ctl.rawTrailers = trailers
      handler.onResponseEnd?.(ctl, {})
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
}

/** Regular (non-pseudo) headers as a flat list of Buffers, the raw form undici's controller holds. */
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
