// The app's HTTP/2 calls on the outbound lane (cleartext, prior knowledge; detect.ts hands the sockets over). Every
// stream is one call for the proxy core (an Exchange over an H2Client), balanced on its own under the service's
// policy (Upstream: warmup weights, ejection, drain flag, panic mode, as for HTTP/1.1): the service is the
// `:authority` name (port stripped), so one long-lived gRPC channel spreads its calls over every instance. Toward the
// provider the call goes over h2c to its inbound port (a few multiplexed sessions per instance: Endpoint.h2). A
// provider's shed answer (trailers-only UNAVAILABLE, or 503, with x-doorman-shed) or a stream its GOAWAY refused is
// retried once on another instance; grpc-timeout bounds the call here too, and the provider gets what is left.
import http2, { type Http2Server, type ServerHttp2Session, type ServerHttp2Stream, type IncomingHttpHeaders } from 'node:http2'
import type { Socket } from 'node:net'
import { NoInstanceError, NoServiceError, type DoormanError } from '../core/errors.js'
import { Metrics } from '../metrics/index.js'
import { SERVICE_NAME } from '../registry/types.js'
import { ownError } from '../proxy/exchange.js'
import { H2Client } from '../proxy/client.js'
import type { Client, Policy } from '../proxy/exchange.js'

/** What the HTTP/2 side needs of the outbound lane. */
export interface OutboundHost<U extends Policy> {
  readonly closed: boolean
  readonly metrics: Metrics
  /** The service's policy (created on first use); undefined when too many services are watched. */
  upstream: (service: string) => U | undefined
  /** Starts a call to the service (after its first listing). */
  begin: (up: U, client: Client) => void
}

const { NGHTTP2_FLAG_END_STREAM } = http2.constants

export class OutboundH2<U extends Policy> {
  readonly server: Http2Server
  readonly #out: OutboundHost<U>
  readonly #sessions = new Set<ServerHttp2Session>()

  constructor (out: OutboundHost<U>) {
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
    const client = new H2Client(stream, headers, (flags & NGHTTP2_FLAG_END_STREAM) !== 0)
    if (out.closed) { refuse(client, new NoInstanceError('(closing)')); return }
    const authority = headers[':authority'] ?? headers.host
    const service = typeof authority === 'string' ? authority.replace(/:\d+$/, '').toLowerCase() : ''
    if (!SERVICE_NAME.test(service)) {
      Metrics.inc(out.metrics.outbound, '-\tbad-request')
      refuse(client, new NoServiceError())
      return
    }
    const up = out.upstream(service)
    if (up === undefined) {
      Metrics.inc(out.metrics.outbound, `${service}\tno-instance`)
      refuse(client, new NoInstanceError(service))
      return
    }
    out.begin(up, client)
  }
}


/** doorman's own answer before a call starts (trailers-only for a gRPC call). */
function refuse (client: H2Client, err: DoormanError): void {
  client.answer(ownError(err, `doorman: ${err.message} (${err.code})`, '', null))
}
