// HTTP/2 clients on the inbound port (cleartext, prior knowledge; detect.ts hands the sockets over to the shared
// HTTP/2 listener, proxy/h2-server.ts, which bounds every session). Every stream is one request for the proxy core
// (an Exchange over an H2Client, under the same InboundPolicy as HTTP/1.1 requests): it takes a limiter slot, waits
// or is shed, and is proxied to the app whatever the app speaks (DOORMAN_APP_PROTOCOL). What doorman answers itself
// to a gRPC call is trailers-only (HTTP 200, grpc-status, grpc-message).
import type { Socket } from 'node:net'
import type { Logger } from '../core/log.js'
import { DoormanError } from '../core/errors.js'
import type { Metrics } from '../metrics/index.js'
import { Exchange } from '../proxy/exchange.js'
import type { H2Client } from '../proxy/client.js'
import { H2Server } from '../proxy/h2-server.js'
import type { InboundPolicy } from './policy.js'

/** What the HTTP/2 front needs from the inbound lane. */
export interface H2Host {
  readonly policy: InboundPolicy
  readonly log: Logger
  readonly metrics: Metrics
  closed: () => boolean
  readonly appProtocol: 'http1' | 'h2c'
}

export interface H2Bounds {
  maxHeaderSize: number
  maxHeaderCount: number
  headersTimeout: number
  idleTimeout: number
  lingerTimeout: number
}

export class H2Front {
  readonly #h2: H2Server
  readonly #host: H2Host
  #warnedProtocol = false

  constructor (host: H2Host, bounds: H2Bounds) {
    this.#host = host
    this.#h2 = new H2Server({ lane: 'inbound', metrics: host.metrics, ...bounds, onStream: (client) => { this.#stream(client) } })
  }

  /** A socket whose first bytes are the HTTP/2 preface. */
  accept (socket: Socket): void { this.#h2.accept(socket) }

  /** HTTP/2 sessions open now. */
  get sessions (): number { return this.#h2.sessions }
  get draining (): boolean { return this.#h2.draining }

  /** Responses carry x-doorman-draining from now on; every session (idle ones too) gets the two-phase GOAWAY. */
  startDraining (): void { this.#h2.startDraining() }

  /** Cuts the streams left (through the lane's exchange set) and destroys the sessions. */
  destroy (): void { this.#h2.destroy() }

  /** Closes every session once its streams are done; destroys those still open after `graceMs`. */
  close (graceMs?: number): void { this.#h2.close(graceMs) }

  #warnProtocolOnce (): void {
    if (this.#warnedProtocol) return
    this.#warnedProtocol = true
    this.#host.log.warn('a gRPC call arrived but DOORMAN_APP_PROTOCOL is http1: gRPC needs DOORMAN_APP_PROTOCOL=h2c; answering UNAVAILABLE')
  }

  #stream (client: H2Client): void {
    const host = this.#host
    const policy = host.policy
    const stats = policy.stats
    stats.arrived++
    const now = performance.now()
    stats.lastArrival = now
    if (client.grpc && host.appProtocol === 'http1') {
      this.#warnProtocolOnce()
      new Exchange(client, policy, now).refuse(new DoormanError('DOORMAN_ERR_UPSTREAM_PROTOCOL', 'the app is declared HTTP/1.1 (DOORMAN_APP_PROTOCOL=http1); gRPC needs DOORMAN_APP_PROTOCOL=h2c', 502))
      return
    }
    const ex = new Exchange(client, policy, now)
    if (host.closed()) ex.shed('draining-closed')
    else ex.start()
  }
}
