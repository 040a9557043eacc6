// The app's HTTP/2 calls on the outbound lane (cleartext, prior knowledge; detect.ts hands the sockets over). Every
// stream is one call for the proxy core (an Exchange over an H2Client), balanced on its own under the service's
// policy (Upstream: warmup weights, ejection, drain flag, panic mode, as for HTTP/1.1): the service is the
// `:authority` name (port stripped), so one long-lived gRPC channel spreads its calls over every instance. Toward the
// provider the call goes over h2c to its inbound port (a few multiplexed sessions per instance: Endpoint.h2). A
// provider's shed answer (trailers-only UNAVAILABLE, or 503, with x-doorman-shed) or a stream its GOAWAY refused is
// retried once on another instance; grpc-timeout bounds the call here too, and the provider gets what is left.
import type { Socket } from 'node:net'
import { NoInstanceError, NoServiceError, type DoormanError } from '../core/errors.js'
import { Metrics } from '../metrics/index.js'
import { SERVICE_NAME } from '../registry/types.js'
import { ownError } from '../proxy/exchange.js'
import type { H2Client } from '../proxy/client.js'
import { H2Server, type H2ServerOptions } from '../proxy/h2-server.js'
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

export class OutboundH2<U extends Policy> {
  readonly #h2: H2Server
  readonly #out: OutboundHost<U>

  constructor (out: OutboundHost<U>, bounds: Omit<H2ServerOptions, 'lane' | 'metrics' | 'onStream'>) {
    this.#out = out
    this.#h2 = new H2Server({ lane: 'outbound', metrics: out.metrics, ...bounds, onStream: (client) => { this.#stream(client) } })
  }

  /** A socket whose first bytes are the HTTP/2 preface. */
  accept (socket: Socket): void { this.#h2.accept(socket) }

  /** Closes every session once its streams are done; destroys those still open after `graceMs`. */
  close (graceMs?: number): void { this.#h2.close(graceMs) }

  destroy (): void { this.#h2.destroy() }

  #stream (client: H2Client): void {
    const out = this.#out
    const headers = client.headers
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
