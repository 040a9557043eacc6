// The HTTP/2 side of a lane's listener (cleartext, prior knowledge: detect.ts hands the sockets over), shared by the
// inbound and the outbound lane: the node:http2 server, its sessions, and the bounds every session lives under,
// whatever its peer does:
//   headers timeout   a session whose first request doesn't complete its HEADERS in time (a preface alone, a header
//                     block whose CONTINUATION never comes) is closed, as an HTTP/1.1 connection gets 408;
//   idle timeout      a session with no open stream for this long gets a GOAWAY and is closed;
//   header limits     every stream's header block is measured by doorman itself (RFC 9113 §6.5.2: names, values and
//                     32 bytes per field), whatever the SETTINGS state, and answered 431 (gRPC: RESOURCE_EXHAUSTED)
//                     before it becomes a request;
//   linger            a response whose end is written but not taken (a client that stopped reading, a zero window)
//                     is cut after the write timeout, so small responses can't pin their buffers either;
//   drain             a two-phase GOAWAY; at close, sessions still open after a grace are destroyed, whatever state
//                     their peer is in;
//   rapid reset       node:http2's own bound on streams reset by the peer (streamResetBurst/-Rate) kept tight, and a
//                     stream is dispatched only after the rest of its read: one reset right away never becomes work.
// A client's FIN closes its session (accept() makes the socket not half-open), which cancels every stream on it.
import http2, { type Http2Server, type ServerHttp2Session, type ServerHttp2Stream, type IncomingHttpHeaders } from 'node:http2'
import type { Socket } from 'node:net'
import { DoormanError } from '../core/errors.js'
import { Metrics } from '../metrics/index.js'
import { H2Client } from './client.js'
import { ownError } from './exchange.js'

const { NGHTTP2_NO_ERROR, NGHTTP2_FLAG_END_STREAM } = http2.constants
const MAX_STREAM_ID = 2 ** 31 - 1
/** Most header fields in one HTTP/2 request (node:http2's own default); more are answered 431. */
export const H2_MAX_HEADER_COUNT = 128
/** RFC 9113 §6.5.2: each field counts its name, its value and 32 bytes of overhead. */
const FIELD_OVERHEAD = 32

export interface H2ServerOptions {
  /** `inbound` or `outbound`: the lane, for metrics. */
  lane: string
  metrics: Metrics
  /** Largest request header block, in bytes (RFC 9113 §6.5.2 size); larger ones are answered 431. */
  maxHeaderSize: number
  /** Most header fields in one request (pseudo-headers included); more are answered 431. */
  maxHeaderCount: number
  /** Longest wait for a session's first complete request head. */
  headersTimeout: number
  /** Longest a session may stay with no open stream. */
  idleTimeout: number
  /** Longest a stream's ended response may wait for the client to take it. */
  lingerTimeout: number
  /** A stream whose header block is within the limits: the lane's exchange starts here. */
  onStream: (client: H2Client) => void
}

interface SessionState {
  /** Streams open now. */
  open: number
  /** A stream came: the headers timeout no longer applies. */
  started: boolean
  timer: NodeJS.Timeout | null
}

export class H2Server {
  readonly server: Http2Server
  readonly #opts: H2ServerOptions
  readonly #sessions = new Map<ServerHttp2Session, SessionState>()
  #draining = false

  constructor (opts: H2ServerOptions) {
    this.#opts = opts
    this.server = http2.createServer({
      maxSendHeaderBlockLength: 65536,
      // What nghttp2 itself enforces is set above doorman's own limits, so a request over them reaches the 'stream'
      // handler and is answered 431 there instead of being reset (once the client ACKs these SETTINGS) or passed on
      // (before it does).
      maxHeaderListPairs: opts.maxHeaderCount * 2,
      settings: { maxHeaderListSize: Math.max(65536, opts.maxHeaderSize * 4), maxConcurrentStreams: 1000 },
      // CVE-2023-44487: a session whose peer resets more than this many streams (burst, then per second) is closed
      // with ENHANCE_YOUR_CALM; what doorman does per stream reset before dispatch stays bounded with it.
      streamResetBurst: 200,
      streamResetRate: 100
    } as http2.ServerOptions)
    this.server.on('session', (session: ServerHttp2Session) => { this.#session(session) })
    this.server.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number, raw: string[]) => { this.#stream(stream, headers, flags, raw) })
    this.server.on('sessionError', () => {})
  }

  /** A socket whose first bytes are the HTTP/2 preface (plaintext, or a TLS socket that negotiated h2). */
  accept (socket: Socket): void {
    // An http.Server's sockets are half-open (the HTTP/1.1 parser ends its side itself); node:http2 never looks at a
    // client's FIN, so a half-open socket would keep the session, its streams and their slots for good. Without it,
    // the FIN ends our side too, the session closes, and every stream on it is cancelled.
    socket.allowHalfOpen = false
    this.server.emit('connection', socket)
  }

  /** HTTP/2 sessions open now. */
  get sessions (): number { return this.#sessions.size }
  get draining (): boolean { return this.#draining }

  #session (session: ServerHttp2Session): void {
    const st: SessionState = { open: 0, started: false, timer: null }
    this.#sessions.set(session, st)
    st.timer = setTimeout(H2Server.#headersTimedOut, this.#opts.headersTimeout, this, session)
    session.once('close', () => {
      if (st.timer !== null) clearTimeout(st.timer)
      this.#sessions.delete(session)
    })
    session.on('error', () => {})
    // A session opened while draining is served, then told to go away after its first stream: a client that
    // reconnects is not sent away in a loop.
    if (this.#draining) session.once('stream', () => { goaway(session) })
  }

  static #headersTimedOut (self: H2Server, session: ServerHttp2Session): void {
    const st = self.#sessions.get(session)
    if (st === undefined || st.started) return
    st.timer = null
    Metrics.inc(self.#opts.metrics.connectionsClosed, `${self.#opts.lane}\theaders-timeout`)
    shut(session)
  }

  static #idleTimedOut (self: H2Server, session: ServerHttp2Session): void {
    const st = self.#sessions.get(session)
    if (st === undefined || st.open > 0) return
    st.timer = null
    Metrics.inc(self.#opts.metrics.connectionsClosed, `${self.#opts.lane}\tidle-timeout`)
    shut(session)
  }

  #stream (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number, raw: string[]): void {
    stream.on('error', () => {})
    const session = stream.session as ServerHttp2Session | undefined
    const st = session === undefined ? undefined : this.#sessions.get(session)
    if (st !== undefined && session !== undefined) {
      st.started = true
      st.open++
      if (st.timer !== null) { clearTimeout(st.timer); st.timer = null }
      stream.once('close', () => {
        if (--st.open === 0 && !session.closed && !session.destroyed) {
          st.timer = setTimeout(H2Server.#idleTimedOut, this.#opts.idleTimeout, this, session)
        }
      })
    }
    const client = new H2Client(stream, headers, (flags & NGHTTP2_FLAG_END_STREAM) !== 0, this.#opts.lingerTimeout)
    if (headers[':method'] === 'CONNECT') {
      // No tunnels on a business port (nor RFC 8441's extended CONNECT, never advertised): 405, as on HTTP/1.1.
      Metrics.inc(this.#opts.metrics.clientErrors, 'connect')
      client.answer(ownError(new DoormanError('DOORMAN_ERR_BAD_REQUEST', 'CONNECT is not served here', 405), 'doorman: CONNECT is not served here', '', ['allow', 'GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE']))
      return
    }
    const over = this.#overLimit(raw)
    if (over !== null) {
      Metrics.inc(this.#opts.metrics.clientErrors, 'header-overflow')
      const err = new DoormanError('DOORMAN_ERR_HEADER_OVERFLOW', over, 431)
      client.answer(ownError(err, `doorman: ${over}`, '', null))
      return
    }
    // Dispatched once the rest of what arrived with it is read: a stream its peer reset in the same read (rapid
    // reset) is dropped here, before it takes a slot or reaches the app.
    setImmediate(H2Server.#dispatch, this, client)
  }

  static #dispatch (self: H2Server, client: H2Client): void {
    if (client.gone) { Metrics.inc(self.#opts.metrics.clientErrors, 'reset-before-dispatch'); return }
    self.#opts.onStream(client)
  }

  /** Why the header block is over doorman's limits, or null. */
  #overLimit (raw: string[] | undefined): string | null {
    if (raw === undefined) return null
    if (raw.length / 2 > this.#opts.maxHeaderCount) return `request header fields too many (over ${this.#opts.maxHeaderCount})`
    let size = 0
    for (let i = 0; i < raw.length; i += 2) size += raw[i].length + raw[i + 1].length + FIELD_OVERHEAD
    return size > this.#opts.maxHeaderSize ? `request header fields too large (over ${this.#opts.maxHeaderSize} bytes)` : null
  }

  /** Every session (idle ones too) gets the two-phase GOAWAY; later sessions get it after their first stream. */
  startDraining (): void {
    if (this.#draining) return
    this.#draining = true
    for (const s of this.#sessions.keys()) goaway(s)
  }

  /**
   * Closes every session once its streams are done; after `graceMs`, destroys what is still open (an idle peer that
   * ignores the GOAWAY, a header block never finished, a zero window): the process never waits on a peer.
   */
  close (graceMs = 1000): void {
    for (const s of this.#sessions.keys()) if (!s.closed) s.close()
    if (this.#sessions.size === 0) return
    const t = setTimeout(() => {
      if (this.#sessions.size > 0) Metrics.inc(this.#opts.metrics.connectionsClosed, `${this.#opts.lane}\tclose-timeout`, this.#sessions.size)
      this.destroy()
    }, graceMs)
    t.unref()
  }

  destroy (): void {
    for (const s of this.#sessions.keys()) s.destroy()
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

/** A session that timed out: GOAWAY and close, destroyed a moment later if the peer holds it open. */
function shut (session: ServerHttp2Session): void {
  if (session.closed || session.destroyed) return
  try { session.goaway(NGHTTP2_NO_ERROR) } catch {}
  session.close()
  const t = setTimeout(() => { if (!session.destroyed) session.destroy() }, 1000)
  t.unref()
}
