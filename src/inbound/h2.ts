// HTTP/2 clients on the inbound port (cleartext, prior knowledge; detect.ts hands the sockets over): the sessions,
// and their two-phase GOAWAY on drain. Every stream is one request for the proxy core (an Exchange over an H2Client,
// under the same InboundPolicy as HTTP/1.1 requests): it takes a limiter slot, waits or is shed, and is proxied to the
// app whatever the app speaks (DOORMAN_APP_PROTOCOL). What doorman answers itself to a gRPC call is trailers-only
// (HTTP 200, grpc-status, grpc-message).
import http2, { type Http2Server, type ServerHttp2Session, type ServerHttp2Stream, type IncomingHttpHeaders } from 'node:http2'
import type { Socket } from 'node:net'
import type { Logger } from '../core/log.js'
import { DoormanError } from '../core/errors.js'
import { Exchange } from '../proxy/exchange.js'
import { H2Client } from '../proxy/client.js'
import type { InboundPolicy } from './policy.js'

const { NGHTTP2_NO_ERROR } = http2.constants
const MAX_STREAM_ID = 2 ** 31 - 1

/** What the HTTP/2 front needs from the inbound lane. */
export interface H2Host {
  readonly policy: InboundPolicy
  readonly log: Logger
  closed: () => boolean
  readonly appProtocol: 'http1' | 'h2c'
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
    const policy = host.policy
    const stats = policy.stats
    stats.arrived++
    const now = performance.now()
    stats.lastArrival = now
    stream.on('error', () => {})
    const client = new H2Client(stream, headers, (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0)
    if (client.grpc && host.appProtocol === 'http1') {
      this.warnProtocolOnce()
      new Exchange(client, policy, now).refuse(new DoormanError('DOORMAN_ERR_UPSTREAM_PROTOCOL', 'the app is declared HTTP/1.1 (DOORMAN_APP_PROTOCOL=http1); gRPC needs DOORMAN_APP_PROTOCOL=h2c', 502))
      return
    }
    const ex = new Exchange(client, policy, now)
    if (host.closed()) ex.shed('draining-closed')
    else ex.start()
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

