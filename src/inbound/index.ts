// The inbound listener: business traffic → drain gate → limiter → the app, over keep-alive undici connections.
// Bodies stream both ways with backpressure; WebSocket and other upgrades go through http-proxy under their own cap.
import type { IncomingMessage, ServerResponse, Server } from 'node:http'
import type { Duplex } from 'node:stream'
import type { Dispatcher } from 'undici'
import httpProxy from 'http-proxy'
import { http, clearStall } from '../core/http.js'
import { logProxyError, type Logger } from '../core/log.js'
import { classifyUpstreamError, BadRequestError, UpstreamProtocolError, UpgradeLimitError, type DoormanError } from '../core/errors.js'
import { respondError, respondShed, respondOnSocket, clientErrorStatus } from '../core/respond.js'
import { Limiter, classifier, type Priority, type ShedReason, type Waiter } from '../limiter/index.js'
import { Metrics } from '../metrics/index.js'
import { requestHeaders, responseHeaders, trailerPairs, upgradeHeaders, stripOwn, type ForwardInfo } from './headers.js'
import { Upstream, type Conn } from './upstream.js'
import { H2Upstream, type AppUpstream } from './h2-upstream.js'
import { H2Front } from './h2.js'
import { detectProtocol } from './detect.js'

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
  criticalPaths?: readonly string[]
  lowPaths?: readonly string[]
  /** Proxies in front of doorman trusted to set x-forwarded-proto, -host and -port (DOORMAN_TRUSTED_HOPS). */
  trustedHops?: number
}

const DRAIN_HEADERS = ['x-doorman-draining', '1', 'connection', 'close'] as const

/** Counts that drain and the lane read. */
export interface InboundStats {
  /** Requests that reached the limiter. */
  arrived: number
  /** Requests answered by the app (any status). */
  completed: number
  /** Requests that failed between doorman and the app. */
  failed: number
  /** Requests cut by destroy() (drain timeout). */
  cut: number
  /** performance.now() of the last request arrival. */
  lastArrival: number
}

export class Inbound {
  readonly server: Server
  readonly upstream: AppUpstream
  /** HTTP/2 clients (prior knowledge) on the same port. */
  readonly h2: H2Front
  readonly stats: InboundStats = { arrived: 0, completed: 0, failed: 0, cut: 0, lastArrival: 0 }
  #opts: InboundOptions
  #limiter: Limiter
  #metrics: Metrics
  #log: Logger
  #debug: boolean
  #classify: (path: string) => Priority
  #origin: string
  #wsProxy: httpProxy
  #upgrades = new Set<Duplex>()
  #exchanges = new Set<{ cut: () => void }>()
  #draining = false
  #closed = false
  #extra: readonly string[] | null = null
  #trusted: boolean

  constructor (opts: InboundOptions) {
    this.#opts = opts
    this.#limiter = opts.limiter
    this.#metrics = opts.metrics
    this.#log = opts.log
    this.#debug = opts.log.isLevelEnabled('debug')
    this.#classify = classifier(opts.criticalPaths ?? [], opts.lowPaths ?? [])
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
      keepAliveTimeout: 5_000,
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
    this.h2 = new H2Front(this, { maxHeaderSize: opts.maxHeaderSize })
    detectProtocol(this.server, { onH2: (socket) => { this.h2.accept(socket) }, timeoutMs: opts.headersTimeout })
  }

  async listen (): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(this.#opts.port, this.#opts.host, () => { this.server.off('error', reject); resolve() })
    })
    return (this.server.address() as { port: number }).port
  }

  get draining (): boolean { return this.#draining }
  get upgrades (): number { return this.#upgrades.size }

  /** Flags every response from now on (x-doorman-draining, connection: close) and closes idle keep-alive sockets. */
  startDraining (): void {
    if (this.#draining) return
    this.#draining = true
    this.#extra = DRAIN_HEADERS
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
    for (const ex of this.#exchanges) { ex.cut(); cut++ }
    for (const s of this.#upgrades) { s.destroy(); cut++ }
    this.stats.cut += cut
    this.h2.destroy()
    this.server.closeAllConnections()
    this.server.close()
    return cut
  }

  async close (): Promise<void> {
    this.#closed = true
    this.h2.close()
    await new Promise<void>((resolve) => { this.server.close(() => { resolve() }); this.server.closeIdleConnections() })
    this.#wsProxy.close()
    await this.upstream.close()
  }

  #handle (req: IncomingMessage, res: ServerResponse, expectContinue: boolean): void {
    const stats = this.stats
    stats.arrived++
    const now = performance.now()
    stats.lastArrival = now
    if (this.#closed) {
      this.shed(res, 'draining-closed')
      return
    }
    const url = req.url as string
    if (url.charCodeAt(0) !== 47 /* / */) {
      Metrics.inc(this.#metrics.clientErrors, 'bad-target')
      respondOnSocket(req.socket, 400, 'DOORMAN_ERR_BAD_REQUEST')
      return
    }
    const ex = new Exchange(this, req, res, expectContinue, now)
    const grant = this.#limiter.acquire(this.#classify(url), ex.onGrant)
    if (grant === true) ex.dispatch()
    else if (typeof grant === 'string') this.shed(res, grant)
    else ex.wait(grant)
  }

  /** @internal */ shed (res: ServerResponse, reason: ShedReason): void {
    Metrics.inc(this.#metrics.shed, reason)
    Metrics.inc(this.#metrics.requests, 503)
    respondShed(res, reason, this.#extra)
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
    if (this.#upgrades.size >= this.#opts.maxUpgrades) {
      const err = new UpgradeLimitError()
      Metrics.inc(this.#metrics.shed, 'upgrade-limit')
      respondOnSocket(socket, err.status, err.code)
      return
    }
    const h = upgradeHeaders(req.rawHeaders, this.forwardInfo(req))
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

  /** What the header policy needs to know of a request's connection. */
  forwardInfo (req: IncomingMessage): ForwardInfo {
    const socket = req.socket
    return { remoteAddress: socket.remoteAddress ?? '', proto: 'encrypted' in socket ? 'https' : 'http', port: socket.localPort ?? 0, trusted: this.#trusted }
  }

  // --- called by Exchange ---
  /** @internal */ get origin (): string { return this.#origin }
  /** @internal */ get trusted (): boolean { return this.#trusted }
  /** @internal */ get extraHeaders (): readonly string[] | null { return this.#extra }
  /** @internal */ track (ex: { cut: () => void }): void { this.#exchanges.add(ex) }
  /** @internal */ finish (ex: { cut: () => void }, status: number, startedAt: number, outcome: 'ok' | 'error' | 'aborted', err: DoormanError | null, timedOut: boolean): void {
    this.#exchanges.delete(ex)
    const now = performance.now()
    const m = this.#metrics
    if (outcome === 'ok') {
      this.stats.completed++
    } else if (outcome === 'error' && err !== null && err.status < 500) {
      // The client's mistake (refused before the app saw it): not the app's failure.
      Metrics.inc(m.clientErrors, 'malformed')
    } else if (outcome === 'error') {
      this.stats.failed++
      Metrics.inc(m.upstreamErrors, timedOut ? 'timeout' : err?.code === 'DOORMAN_ERR_UPSTREAM_CONNECT' ? 'connect' : err?.code === 'DOORMAN_ERR_UPSTREAM_PROTOCOL' ? 'protocol' : 'other')
    }
    if (status !== 0) Metrics.inc(m.requests, status)
    m.duration.observe((now - startedAt) / 1000)
    if (this.#debug) this.#log.debug({ status, ms: Math.round(now - startedAt), outcome, err: err?.code }, 'request')
  }

  /** @internal */ get writeTimeout (): number { return this.#opts.clientWriteTimeout ?? 30_000 }
  /** @internal */ get limiter (): Limiter { return this.#limiter }
  /** @internal */ get closed (): boolean { return this.#closed }
  /** @internal */ get appProtocol (): 'http1' | 'h2c' { return this.#opts.appProtocol ?? 'http1' }
  /** @internal */ classify (path: string): Priority { return this.#classify(path) }
  /** @internal */ get metrics (): Metrics { return this.#metrics }
  /** @internal */ get log (): Logger { return this.#log }
}

/** Sends a WebSocket close frame (1001, going away) and ends the socket. */
function closeFrame (s: Duplex): void {
  if (!s.writable) return
  // FIN + close opcode, payload length 2, status 1001; servers send unmasked frames.
  s.end(Buffer.from([0x88, 0x02, 0x03, 0xe9]))
}

const IDLE = 0
const QUEUED = 1
const ACTIVE = 2
const DONE = 3

/**
 * One proxied request: its slot, its undici dispatch. The response head is read from the controller's raw headers
 * (Buffers, as the parser gives them): undici 8 also hands a parsed object, which this never reads.
 */
class Exchange {
  #in: Inbound
  #req: IncomingMessage
  #res: ServerResponse
  #expectContinue: boolean
  #state = IDLE
  #waiter: Waiter | null = null
  /** undici's controller for this request (abort, pause, resume), from onRequestStart until it ends. */
  #ctl: Dispatcher.DispatchController | null = null
  /** The connection carrying this request, from dispatch until undici ends it (onResponseEnd or onResponseError). */
  conn: Conn | null = null
  #start: number
  /** When the request was fully sent to the app (its latency starts here), and the in-flight count then. */
  #sent = 0
  #sentInflight = 0
  #headersAt = -1
  #status = 0
  #requestId = ''
  #timedOut = false

  constructor (inbound: Inbound, req: IncomingMessage, res: ServerResponse, expectContinue: boolean, arrivedAt: number) {
    this.#in = inbound
    this.#req = req
    this.#res = res
    this.#expectContinue = expectContinue
    this.#start = arrivedAt
    // A response emits 'close' once; on() spares the wrapper once() allocates.
    res.on('close', this.#onClientClose)
  }

  /** Limiter callback for a queued request. */
  onGrant = (reason: ShedReason | null): void => {
    this.#waiter = null
    if (reason !== null) {
      this.#state = DONE
      this.#in.shed(this.#res, reason)
      return
    }
    if (this.#state === DONE) { this.#in.limiter.release(); return }
    this.dispatch()
  }

  wait (w: Waiter): void {
    this.#state = QUEUED
    this.#waiter = w
  }

  dispatch (): void {
    this.#state = ACTIVE
    this.#in.track(this)
    const req = this.#req
    const h = requestHeaders(req.rawHeaders, this.#in.forwardInfo(req))
    this.#requestId = h.requestId
    if (h.refused !== null) { this.onResponseError(null, new BadRequestError(`doorman cannot forward this request as sent: ${h.refused}`)); return }
    if (this.#expectContinue) this.#res.writeContinue()
    this.#sent = performance.now()
    this.#sentInflight = this.#in.limiter.inflight
    try {
      this.#in.upstream.dispatch({
        path: req.url as string,
        method: req.method as string,
        headers: h.headers,
        body: h.hasBody ? req : null,
        idempotent: false,
        blocking: true
      }, this)
    } catch (err) {
      this.onResponseError(null, err as Error)
    }
  }

  /** The client went away: leave the queue, or abort the upstream request. */
  #onClientClose = (): void => {
    if (this.#res.writableFinished) return
    if (this.#state === QUEUED) {
      this.#state = DONE
      if (this.#waiter !== null) this.#in.limiter.cancel(this.#waiter)
      Metrics.inc(this.#in.metrics.clientErrors, 'abort-queued')
      return
    }
    if (this.#state === ACTIVE) {
      Metrics.inc(this.#in.metrics.clientErrors, 'abort')
      this.#fail()
    }
  }

  /** Drain timeout: cut this request. */
  cut (): void {
    if (this.#state !== ACTIVE) return
    this.#fail()
    this.#res.destroy()
  }

  /** Ends an exchange the client abandoned (or drain cut): no response, no latency sample. */
  #fail (): void {
    if (this.#state !== ACTIVE) return
    this.#state = DONE
    this.#stall = clearStall(this.#stall)
    this.#headTimer = clearStall(this.#headTimer)
    const ctl = this.#ctl
    this.#ctl = null
    // The app's latency counts only if its response head arrived: the client's impatience says nothing about it.
    this.#in.limiter.release(this.#rtt, this.#rtt >= 0 && this.#status >= 500, this.#sentInflight)
    this.#in.finish(this, this.#status, this.#start, 'aborted', null, false)
    if (ctl !== null) ctl.abort(new Error('client gone'))
  }

  // --- undici DispatchHandler ---
  /** The whole request (head and body) is written: the app's own time starts now, not while a client uploads. */
  onRequestSent (): void {
    if (this.#headersAt < 0) this.#sent = performance.now()
  }

  onRequestStart (controller: Dispatcher.DispatchController): void {
    if (this.#state !== ACTIVE) { controller.abort(new Error('client gone')); return }
    this.#ctl = controller
  }

  onResponseStart (controller: Dispatcher.DispatchController, statusCode: number, _headers: unknown, statusText?: string): void {
    if (this.#state !== ACTIVE) return
    if (statusCode < 200) return
    // HTTP/1.1 (the only protocol to the app): the raw headers are the parser's Buffers, name/value in turn.
    const raw = controller.rawHeaders as Buffer[]
    if (statusCode === 204 && bodyOn204(raw)) {
      // undici 8 ends such a 204 at its head and drops the connection with what followed (undici 7 failed on those
      // bytes): the app broke HTTP either way, so it is answered 502 as any other malformed response.
      controller.abort(new UpstreamProtocolError(new Error('a 204 response announcing a body')))
      return
    }
    this.#status = statusCode
    const res = this.#res
    if (res.destroyed) { this.#fail(); return }
    const head = responseHeaders(raw, this.#requestId, this.#in.extraHeaders)
    this.#remaining = head.contentLength
    // The head is written with the first body bytes (as Node would send it anyway), so that a response that turns
    // out malformed right after its head (a 204 with a body, a bad chunk size) can still be answered 502.
    this.#head = head.headers
    this.#statusText = statusText ?? ''
    process.nextTick(Exchange.#headLater, this)
    // The app's own latency: from the request fully sent to the response head. 5xx counts as a drop signal.
    this.#headersAt = performance.now()
    this.#rtt = Math.max(0, this.#headersAt - this.#sent)
  }

  /** The response head not yet written, and its status text. */
  #head: string[] | null = null
  #statusText = ''
  #headTimer: NodeJS.Timeout | null = null
  #writeHead (): void {
    this.#headTimer = clearStall(this.#headTimer)
    const head = this.#head
    if (head === null) return
    this.#head = null
    if (!this.#res.destroyed) this.#res.writeHead(this.#status, this.#statusText, head)
  }

  /**
   * No body bytes came with the head: write it on its own once undici had its chance to report the connection broken
   * (it does from the socket's close callback, which runs before the next timers), for a response that streams later.
   */
  static #headLater (ex: Exchange): void {
    if (ex.#head !== null && ex.#headTimer === null && ex.#state === ACTIVE) ex.#headTimer = setTimeout(Exchange.#headNow, 0, ex)
  }

  static #headNow (ex: Exchange): void { ex.#writeHead() }
  #rtt = -1
  /** Body bytes still to come when the app sent a content-length (-1: not known). */
  #remaining = -1
  /** The response was ended with the body's last bytes. */
  #ended = false
  /** The client took what was written: let undici read the app's socket again. */
  #onDrain = (): void => {
    this.#stall = clearStall(this.#stall)
    this.#ctl?.resume()
  }

  #stall: NodeJS.Timeout | null = null
  /** The client read nothing for the write timeout: free the slot, cancel the app's request, close the client. */
  static #onStall (ex: Exchange): void { ex.#stalled() }
  #stalled (): void {
    this.#stall = null
    if (this.#state !== ACTIVE) return
    Metrics.inc(this.#in.metrics.clientErrors, 'write-timeout')
    this.#fail()
    this.#res.destroy()
  }

  onResponseData (controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.#state !== ACTIVE) return
    const res = this.#res
    if (res.destroyed) { this.#fail(); return }
    if (this.#head !== null) this.#writeHead()
    if (this.#remaining === chunk.length) {
      // The last bytes of a content-length body: end() sends head and body in one write, as soon as write() would.
      this.#remaining = 0
      this.#ended = true
      res.end(chunk)
      return
    }
    if (this.#remaining > 0) this.#remaining -= chunk.length
    // The client is slower than the app: stop reading the app until the client drains.
    if (!res.write(chunk) && !controller.paused) {
      controller.pause()
      res.once('drain', this.#onDrain)
      this.#stall = setTimeout(Exchange.#onStall, this.#in.writeTimeout, this)
    }
  }

  /** Gives the connection back once undici is done with this request. */
  #freeConn (): void {
    const conn = this.conn
    if (conn === null) return
    this.conn = null
    this.#in.upstream.free(conn)
  }

  onResponseEnd (controller: Dispatcher.DispatchController): void {
    if (this.#state !== ACTIVE) { this.#freeConn(); return }
    this.#state = DONE
    this.#stall = clearStall(this.#stall)
    this.#ctl = null
    const res = this.#res
    this.#writeHead()
    if (!this.#ended) {
      const trailers = controller.rawTrailers as Buffer[] | null | undefined
      if (trailers != null && trailers.length > 0) res.addTrailers(trailerPairs(trailers))
      res.end()
    }
    this.#in.limiter.release(this.#rtt, this.#status >= 500, this.#sentInflight)
    this.#in.finish(this, this.#status, this.#start, 'ok', null, false)
    this.#freeConn()
  }

  /** Also called with no controller when undici refuses the request before it starts. */
  onResponseError (_controller: Dispatcher.DispatchController | null, err: Error): void {
    this.#freeConn()
    if (this.#state !== ACTIVE) return
    const mapped = classifyUpstreamError(err)
    this.#timedOut = mapped.status === 504
    this.#state = DONE
    this.#stall = clearStall(this.#stall)
    this.#headTimer = clearStall(this.#headTimer)
    this.#head = null
    this.#ctl = null
    // A timeout is a drop signal without a latency sample; other failures (refused, reset) are neither.
    this.#in.limiter.release(-1, this.#timedOut, this.#sentInflight)
    this.#in.finish(this, this.#res.headersSent ? this.#status : mapped.status, this.#start, 'error', mapped, this.#timedOut)
    if (this.#res.headersSent) {
      this.#res.destroy()
    } else {
      const extra = this.#in.extraHeaders
      respondError(this.#res, mapped, extra === null ? ['x-request-id', this.#requestId] : ['x-request-id', this.#requestId, ...extra])
    }
    logProxyError(this.#in.log, mapped.code, err)
  }
}

/** A 204 whose head announces a body: a transfer-encoding, or a content-length other than 0 (RFC 9110 §8.6, 9112 §6.1). */
function bodyOn204 (raw: Buffer[]): boolean {
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]
    if (name.length === 17 && name.toString('latin1').toLowerCase() === 'transfer-encoding') return true
    if (name.length === 14 && name.toString('latin1').toLowerCase() === 'content-length' && !/^\s*0*\s*$/.test(raw[i + 1].toString('latin1'))) return true
  }
  return false
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
