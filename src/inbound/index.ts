// The inbound listener: business traffic → drain gate → limiter → the app, over keep-alive undici connections.
// Bodies stream both ways with backpressure; WebSocket and other upgrades go through http-proxy under their own cap.
import type { IncomingMessage, ServerResponse, Server } from 'node:http'
import type { Duplex } from 'node:stream'
import httpProxy from 'http-proxy'
import { http } from '../core/http.js'
import type { Logger } from '../core/log.js'
import { classifyUpstreamError, UpgradeLimitError } from '../core/errors.js'
import { respondError, respondOnSocket, clientErrorStatus } from '../core/respond.js'
import { Limiter, classifier } from '../limiter/index.js'
import { Metrics } from '../metrics/index.js'
import { upgradeHeaders, stripOwn } from '../proxy/headers.js'
import { Upstream } from '../proxy/upstream-h1.js'
import { H2Upstream, type AppUpstream } from '../proxy/upstream-h2.js'
import { detectProtocol, type Connections } from '../proxy/detect.js'
import { H2_MAX_HEADER_COUNT } from '../proxy/h2-server.js'
import { Exchange } from '../proxy/exchange.js'
import { H1Client, h1ForwardInfo } from '../proxy/client.js'
import { H2Front } from './h2.js'
import { TlsFront } from '../tls/inbound.js'
import { TlsStats } from '../tls/metrics.js'
import { RateLog } from '../tls/ratelog.js'
import type { CertStore } from '../tls/store.js'
import type { Authorizer } from '../authz/index.js'
import { InboundPolicy, type InboundStats } from './policy.js'
import type { Observer } from '../observe/index.js'
import { flowResolver } from './flow.js'

export type { InboundStats } from './policy.js'

export interface InboundOptions {
  appHost: string
  appPort: number
  port: number
  host: string
  limiter: Limiter
  metrics: Metrics
  log: Logger
  upstreamTimeout: number
  /** Longest a response write may wait on a client that reads nothing (default 30 s). */
  clientWriteTimeout?: number
  /** Connections to the app: the most requests that can ever be in flight (the limit's ceiling). */
  connections: number
  maxUpgrades: number
  /** How doorman talks to the app (DOORMAN_APP_PROTOCOL): HTTP/1.1, or cleartext HTTP/2. */
  appProtocol?: 'http1' | 'h2c'
  maxHeaderSize: number
  headersTimeout: number
  /** HTTP/2 sessions with no open stream are closed after this (default 60 s). */
  idleTimeout?: number
  /** Most client connections open at once (0: no cap). */
  maxConnections?: number
  criticalPaths?: readonly string[]
  lowPaths?: readonly string[]
  /** Proxies in front of doorman trusted to set x-forwarded-proto, -host and -port (DOORMAN_TRUSTED_HOPS). */
  trustedHops?: number
  /** Spans and the access log (null: neither on). */
  observer?: Observer | null
  /** mTLS on the port (DOORMAN_MTLS permissive or strict): the certificate store, who may call, the counts. */
  mtls?: { mode: 'permissive' | 'strict', store: CertStore, authorizer: Authorizer, stats: TlsStats }
  /** Fair queuing across flows (DOORMAN_FAIRNESS=flow): the header naming the caller from a trusted hop, '' for none. */
  fairness?: { flowHeader: string }
}

export class Inbound {
  readonly server: Server
  readonly upstream: AppUpstream
  /** HTTP/2 clients (prior knowledge) on the same port. */
  readonly h2: H2Front
  /** TLS clients on the same port (null with DOORMAN_MTLS=off). */
  readonly tls: TlsFront | null
  readonly stats: InboundStats
  /** The lane's policy for the proxy core: the limiter, the app, the drain flag, the metrics. */
  readonly policy: InboundPolicy
  #opts: InboundOptions
  #limiter: Limiter
  #metrics: Metrics
  #log: Logger
  #debug: boolean
  #origin: string
  #wsProxy: httpProxy
  #upgrades = new Set<Duplex>()
  #closed = false
  #trusted: boolean
  #conns: Connections

  constructor (opts: InboundOptions) {
    this.#opts = opts
    this.#limiter = opts.limiter
    this.#metrics = opts.metrics
    this.#log = opts.log
    this.#debug = opts.log.isLevelEnabled('debug')
    this.#trusted = (opts.trustedHops ?? 0) > 0
    this.#origin = `http://${opts.appHost.includes(':') ? `[${opts.appHost}]` : opts.appHost}:${opts.appPort}`
    this.upstream = opts.appProtocol === 'h2c'
      ? new H2Upstream(this.#origin, { sessions: 4, headersTimeout: opts.upstreamTimeout, connectTimeout: Math.min(opts.upstreamTimeout, 10_000) })
      : new Upstream(this.#origin, opts.connections, {
        headersTimeout: opts.upstreamTimeout,
        bodyTimeout: Math.max(opts.upstreamTimeout, 300_000),
        keepAliveTimeout: 4_000,
        connect: { timeout: Math.min(opts.upstreamTimeout, 10_000) }
      })
    this.policy = new InboundPolicy({
      limiter: opts.limiter,
      metrics: opts.metrics,
      log: opts.log,
      app: this.upstream,
      classify: classifier(opts.criticalPaths ?? [], opts.lowPaths ?? []),
      trusted: this.#trusted,
      writeTimeout: opts.clientWriteTimeout ?? 30_000,
      observer: opts.observer,
      access: opts.mtls !== undefined ? { authorizer: opts.mtls.authorizer, stats: opts.mtls.stats } : undefined,
      flow: opts.fairness !== undefined ? flowResolver(opts.fairness.flowHeader) : null
    })
    this.stats = this.policy.stats
    // Upgrades follow the same header policy as requests (upgradeHeaders), not http-proxy's own x-forwarded-*.
    this.#wsProxy = httpProxy.createProxyServer({ target: this.#origin, ws: true, xfwd: false })
    this.#wsProxy.on('proxyReqWs', (proxyReq) => {
      proxyReq.prependListener('response', (r: IncomingMessage) => { stripOwn(r.headers) })
      proxyReq.prependListener('upgrade', (r: IncomingMessage) => { stripOwn(r.headers) })
    })
    this.#wsProxy.on('error', (err, _req, resOrSocket) => {
      Metrics.inc(this.#metrics.upstreamErrors, 'upgrade')
      this.#log.warn({ err }, 'upgrade proxy error')
      const s = resOrSocket as Duplex | ServerResponse | undefined
      if (s !== undefined && 'writeHead' in s) respondError(s, classifyUpstreamError(err))
      else if (s !== undefined) respondOnSocket(s, 502, 'DOORMAN_ERR_UPSTREAM_CONNECT')
    })
    this.server = http.createServer({
      maxHeaderSize: opts.maxHeaderSize,
      headersTimeout: opts.headersTimeout,
      requestTimeout: 0,
      // The same idle timeout as HTTP/2 (DOORMAN_IDLE_TIMEOUT): a consumer's sidecar keeps its connections (and their
      // TLS sessions) through pauses in traffic, and a load balancer whose own idle timeout is shorter closes first.
      keepAliveTimeout: opts.idleTimeout ?? 60_000,
      connectionsCheckingInterval: Math.min(1_000, opts.headersTimeout),
      requireHostHeader: true,
      insecureHTTPParser: false,
      // Upgrade: h2c (curl --http2, the JDK's HttpClient) is ignored and the request answered over HTTP/1.1, as
      // RFC 9110 §7.8 allows and RFC 9113 asks; every other token goes to #upgrade (WebSocket proxied, the rest 400).
      shouldUpgradeCallback: (req: IncomingMessage) => !onlyH2cUpgrade(req.headers.upgrade)
    })
    this.server.on('request', (req: IncomingMessage, res: ServerResponse) => { this.#handle(req, res, false) })
    this.server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => { this.#handle(req, res, true) })
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => { this.#clientError(err, socket) })
    this.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => { this.#upgrade(req, socket, head) })
    // The inbound port opens no tunnels: a CONNECT gets an answer rather than a silent close.
    this.server.on('connect', (_req: IncomingMessage, socket: Duplex) => {
      Metrics.inc(this.#metrics.clientErrors, 'connect')
      respondOnSocket(socket, 405, 'DOORMAN_ERR_BAD_REQUEST', 'allow: GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE\r\n')
    })
    opts.metrics.readings.upgrades = () => this.#upgrades.size
    this.h2 = new H2Front({ policy: this.policy, log: opts.log, metrics: opts.metrics, closed: () => this.#closed, appProtocol: opts.appProtocol ?? 'http1' }, {
      maxHeaderSize: opts.maxHeaderSize,
      maxHeaderCount: H2_MAX_HEADER_COUNT,
      headersTimeout: opts.headersTimeout,
      idleTimeout: opts.idleTimeout ?? 60_000,
      lingerTimeout: opts.clientWriteTimeout ?? 30_000
    })
    const mtls = opts.mtls
    // mTLS: a ClientHello goes to the TLS front, whose verified, decrypted sockets come back to the same hand-off.
    this.tls = mtls === undefined
      ? null
      : new TlsFront({
        store: mtls.store,
        stats: mtls.stats,
        log: opts.log,
        authorizer: mtls.authorizer,
        handshakeTimeout: opts.headersTimeout,
        onSecure: (socket, protocol) => { if (protocol === 'h2') this.h2.accept(socket); else handoff.toH1(socket) }
      })
    const front = this.tls
    const rate = new RateLog(opts.log)
    const handoff = detectProtocol(this.server, {
      onH2: (socket) => { this.h2.accept(socket) },
      timeoutMs: opts.headersTimeout,
      maxConnections: opts.maxConnections,
      onDrop: () => { Metrics.inc(this.#metrics.connectionsClosed, 'inbound\tlimit') },
      onTls: front === null ? undefined : (socket) => { front.accept(socket) },
      admitPlain: mtls === undefined
        ? undefined
        : (socket) => {
            if (mtls.mode === 'strict') {
              mtls.stats.plaintextRefused++
              rate.warn('plaintext', { remote: socket.remoteAddress }, 'plaintext connection refused (DOORMAN_MTLS=strict)')
              return false
            }
            TlsStats.inc(mtls.stats.connections, 'plaintext')
            return true
          }
    })
    this.#conns = handoff
  }

  /** Client connections open now (HTTP/1.1 and HTTP/2). */
  get connections (): number { return this.#conns.open }

  async listen (): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(this.#opts.port, this.#opts.host, () => { this.server.off('error', reject); resolve() })
    })
    return (this.server.address() as { port: number }).port
  }

  get draining (): boolean { return this.policy.draining }
  get upgrades (): number { return this.#upgrades.size }

  /** Flags every response from now on (x-doorman-draining, connection: close) and closes idle keep-alive sockets. */
  startDraining (): void {
    if (this.policy.draining) return
    this.policy.startDraining()
    this.server.closeIdleConnections()
    this.h2.startDraining()
  }

  /** Stops accepting connections; requests arriving later on open connections are shed `draining-closed`. */
  stopAccepting (): void {
    this.startDraining()
    this.#closed = true
    this.server.close()
    this.server.closeIdleConnections()
    this.h2.close()
    this.#limiter.shedAll('draining-closed')
  }

  /** Asks every upgraded connection to close: a WebSocket close frame (1001 going away) where it is one. */
  closeUpgrades (): void {
    for (const s of this.#upgrades) closeFrame(s)
  }

  /** Cuts what is left: in-flight exchanges and upgraded sockets. Returns how many were cut. */
  destroy (): number {
    let cut = 0
    for (const ex of [...this.policy.exchanges]) { ex.cut(); cut++ }
    for (const s of this.#upgrades) { s.destroy(); cut++ }
    this.stats.cut += cut
    this.h2.destroy()
    this.server.closeAllConnections()
    this.server.close()
    return cut
  }

  /**
   * Stops listening and closes every connection: HTTP/2 sessions get a GOAWAY and are destroyed after `graceMs` if
   * their peer holds them open (idle, a header block never finished, a zero window), HTTP/1.1 ones too.
   */
  async close (graceMs = 1000): Promise<void> {
    this.#closed = true
    this.h2.close(graceMs)
    const hard = setTimeout(() => { this.server.closeAllConnections() }, graceMs)
    hard.unref()
    await new Promise<void>((resolve) => { this.server.close(() => { resolve() }); this.server.closeIdleConnections() })
    clearTimeout(hard)
    this.#wsProxy.close()
    await this.upstream.close()
  }

  #handle (req: IncomingMessage, res: ServerResponse, expectContinue: boolean): void {
    const stats = this.stats
    stats.arrived++
    const now = performance.now()
    stats.lastArrival = now
    if ((req.url as string).charCodeAt(0) !== 47 /* / */) {
      Metrics.inc(this.#metrics.clientErrors, 'bad-target')
      respondOnSocket(req.socket, 400, 'DOORMAN_ERR_BAD_REQUEST')
      return
    }
    const ex = new Exchange(new H1Client(req, res, expectContinue), this.policy, now)
    if (this.#closed) ex.shed('draining-closed')
    else ex.start()
  }

  #clientError (err: NodeJS.ErrnoException, socket: Duplex): void {
    if (err.code === 'ECONNRESET' || !socket.writable) { socket.destroy(); return }
    const status = clientErrorStatus(err.code)
    Metrics.inc(this.#metrics.clientErrors, status === 431 ? 'header-overflow' : status === 408 ? 'headers-timeout' : 'malformed')
    if (this.#debug) this.#log.debug({ code: err.code, status }, 'malformed request refused')
    respondOnSocket(socket, status, status === 431 ? 'DOORMAN_ERR_HEADER_OVERFLOW' : status === 408 ? 'DOORMAN_ERR_HEADERS_TIMEOUT' : 'DOORMAN_ERR_BAD_REQUEST')
  }

  #upgrade (req: IncomingMessage, socket: Duplex, head: Buffer): void {
    if (!isWebSocketUpgrade(req.headers.upgrade)) {
      Metrics.inc(this.#metrics.clientErrors, 'bad-upgrade')
      respondOnSocket(socket, 400, 'DOORMAN_ERR_UPGRADE_UNSUPPORTED')
      return
    }
    if (this.#closed) { respondOnSocket(socket, 503, 'DOORMAN_ERR_DRAINING'); return }
    const denied = this.policy.denied?.(req.socket, req.url as string) ?? null
    if (denied !== null) { respondOnSocket(socket, 403, 'DOORMAN_ERR_DENIED', `x-doorman-denied: ${denied}\r\n`); return }
    if (this.#upgrades.size >= this.#opts.maxUpgrades) {
      const err = new UpgradeLimitError()
      Metrics.inc(this.#metrics.shed, 'upgrade-limit')
      respondOnSocket(socket, err.status, err.code)
      return
    }
    const h = upgradeHeaders(req.rawHeaders, h1ForwardInfo(req, this.#trusted))
    if (h.refused !== null) {
      Metrics.inc(this.#metrics.clientErrors, 'malformed')
      respondOnSocket(socket, 400, 'DOORMAN_ERR_BAD_REQUEST')
      return
    }
    req.headers = h.headers
    this.#upgrades.add(socket)
    socket.once('close', () => { this.#upgrades.delete(socket) })
    this.#wsProxy.ws(req, socket, head)
  }
}

/** Sends a WebSocket close frame (1001, going away) and ends the socket. */
function closeFrame (s: Duplex): void {
  if (!s.writable) return
  // FIN + close opcode, payload length 2, status 1001; servers send unmasked frames.
  s.end(Buffer.from([0x88, 0x02, 0x03, 0xe9]))
}

/** The protocols an Upgrade header offers, lower-cased, without versions (`websocket`, `h2c`). */
function upgradeTokens (value: string | undefined): string[] {
  return (value ?? '').split(',').map((t) => t.trim().split('/')[0].toLowerCase()).filter((t) => t !== '')
}
function onlyH2cUpgrade (value: string | undefined): boolean {
  const tokens = upgradeTokens(value)
  return tokens.length > 0 && tokens.every((t) => t === 'h2c')
}
function isWebSocketUpgrade (value: string | undefined): boolean {
  return upgradeTokens(value).includes('websocket')
}
