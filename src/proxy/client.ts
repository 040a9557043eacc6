// The client side of the proxy core, one adapter per protocol: an HTTP/1.1 request and its ServerResponse, or one
// HTTP/2 stream. Each holds the response head until its first body bytes (HTTP/1.1: until undici had its chance to
// report the response broken; HTTP/2: so that a gRPC trailers-only answer stays one HEADERS frame), writes the body,
// passes trailers on, and gives doorman's own answers their protocol's shape.
import type { IncomingMessage, ServerResponse } from 'node:http'
import http2, { type IncomingHttpHeaders, type OutgoingHttpHeaders, type ServerHttp2Stream } from 'node:http2'
import { PassThrough, type Readable } from 'node:stream'
import { clearStall } from '../core/http.js'
import { encodeGrpcMessage, isGrpc, trailersOnly } from '../core/grpc.js'
import { h2Head, respondWithTrailers } from '../core/h2.js'
import { isOwnHeader, trailerPairs, type ForwardInfo } from './headers.js'
import type { Client, OwnAnswer } from './exchange.js'
import { peerOf } from '../tls/peer.js'

const { NGHTTP2_CANCEL } = http2.constants

/** What the header policy needs to know of an HTTP/1.1 request's connection (requests and upgrades alike). */
export function h1ForwardInfo (req: IncomingMessage, trusted: boolean): ForwardInfo {
  // Node sets req.socket to null once the connection is closed, before the exchange hears of it.
  const socket = req.socket as IncomingMessage['socket'] | null
  if (socket === null) return { remoteAddress: '', proto: 'http', port: 0, trusted }
  return { remoteAddress: socket.remoteAddress ?? '', proto: 'encrypted' in socket ? 'https' : 'http', port: socket.localPort ?? 0, trusted, clientCert: peerOf(socket)?.xfcc }
}

/** An HTTP/1.1 request and its response. */
export class H1Client implements Client {
  readonly h2 = false
  readonly grpc = false
  readonly grpcTimeout = undefined
  readonly req: IncomingMessage
  readonly res: ServerResponse
  #expectContinue: boolean
  /** The response head not yet written, its status and status text. */
  #head: string[] | null = null
  #status = 0
  #statusText = ''
  #headTimer: NodeJS.Timeout | null = null
  /** Body bytes still to come when the peer sent a content-length (-1: not known). */
  #remaining = -1
  /** The response was ended with the body's last bytes. */
  #ended = false

  constructor (req: IncomingMessage, res: ServerResponse, expectContinue: boolean) {
    this.req = req
    this.res = res
    this.#expectContinue = expectContinue
  }

  get method (): string { return this.req.method as string }
  get path (): string { return this.req.url as string }
  rawHeaders (): string[] { return this.req.rawHeaders }

  forwardInfo (trusted: boolean): ForwardInfo { return h1ForwardInfo(this.req, trusted) }
  connection (): object { return this.req.socket }

  hasBody (framed: boolean): boolean { return framed }
  body (): Readable { return this.req }
  get gone (): boolean { return this.res.destroyed }
  get headSent (): boolean { return this.res.headersSent }
  // A response emits 'close' once; on() spares the wrapper once() allocates.
  onClose (fn: () => void): void { this.res.on('close', fn) }

  proceed (): void {
    if (this.#expectContinue) { this.#expectContinue = false; this.res.writeContinue() }
  }

  head (status: number, statusText: string, headers: string[], contentLength: number): void {
    this.#status = status
    this.#statusText = statusText
    this.#head = headers
    this.#remaining = contentLength
    // Written with the first body bytes (as Node would send it anyway), so that a response that turns out malformed
    // right after its head (a 204 with a body, a bad chunk size) can still be answered 502.
    process.nextTick(H1Client.#headLater, this)
  }

  /**
   * No body bytes came with the head: write it on its own once undici had its chance to report the connection broken
   * (it does from the socket's close callback, which runs before the next timers), for a response that streams later.
   */
  static #headLater (c: H1Client): void {
    if (c.#head !== null && c.#headTimer === null) c.#headTimer = setTimeout(H1Client.#headNow, 0, c)
  }

  static #headNow (c: H1Client): void { c.#writeHead() }

  #writeHead (): void {
    this.#headTimer = clearStall(this.#headTimer)
    const head = this.#head
    if (head === null) return
    this.#head = null
    if (!this.res.destroyed) this.res.writeHead(this.#status, this.#statusText, head)
  }

  #dropHead (): void {
    this.#headTimer = clearStall(this.#headTimer)
    this.#head = null
  }

  write (chunk: Buffer): boolean {
    const res = this.res
    if (this.#head !== null) this.#writeHead()
    if (this.#remaining === chunk.length) {
      // The last bytes of a content-length body: end() sends head and body in one write, as soon as write() would.
      this.#remaining = 0
      this.#ended = true
      res.end(chunk)
      return true
    }
    if (this.#remaining > 0) this.#remaining -= chunk.length
    return res.write(chunk)
  }

  onceDrain (fn: () => void): void { this.res.once('drain', fn) }

  end (trailers: Array<Buffer | string> | null): void {
    this.#writeHead()
    if (this.#ended) return
    if (trailers !== null) this.res.addTrailers(trailerPairs(trailers))
    this.res.end()
  }

  answer (a: OwnAnswer): void {
    this.#dropHead()
    const res = this.res
    if (res.headersSent) { res.destroy(); return }
    if (res.destroyed) return
    const body = `${a.message}\n`
    res.writeHead(a.status, ['content-type', 'text/plain; charset=utf-8', 'content-length', String(Buffer.byteLength(body)), ...a.headers])
    res.end(body)
  }

  failAfterHead (): void { this.reset() }

  reset (): void {
    this.#dropHead()
    this.res.destroy()
  }
}

/** One HTTP/2 stream. */
export class H2Client implements Client {
  readonly h2 = true
  readonly grpc: boolean
  readonly stream: ServerHttp2Stream
  readonly headers: IncomingHttpHeaders
  #endStream: boolean
  #raw: string[] | null = null
  /** The response head, held until the first body bytes or the end (so a trailers-only answer stays one frame). */
  #head: OutgoingHttpHeaders | null = null
  #trailers: OutgoingHttpHeaders | null = null
  /** Longest an ended response may wait for the client to take it (0: no bound). */
  #lingerMs: number

  constructor (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, endStream: boolean, lingerMs = 0) {
    this.stream = stream
    this.headers = headers
    this.#endStream = endStream
    this.#lingerMs = lingerMs
    this.grpc = isGrpc(headers['content-type'])
  }

  /**
   * The response is ended but may still sit in doorman's buffers (a client that stopped reading, a window of zero):
   * the write timeout's backpressure never saw it, since every write fitted. Cut the stream if it isn't taken in time.
   */
  #linger (): void {
    const s = this.stream
    if (this.#lingerMs <= 0 || s.closed || s.destroyed) return
    const t = setTimeout(H2Client.#lingered, this.#lingerMs, s)
    t.unref()
    s.once('close', () => { clearTimeout(t) })
  }

  static #lingered (s: ServerHttp2Stream): void {
    if (!s.closed && !s.destroyed) s.close(NGHTTP2_CANCEL)
  }

  get method (): string { return this.headers[':method'] ?? 'GET' }
  get path (): string { return this.headers[':path'] ?? '/' }
  get grpcTimeout (): string | string[] | undefined { return this.headers['grpc-timeout'] }

  rawHeaders (): string[] {
    if (this.#raw !== null) return this.#raw
    const h = this.headers
    const raw: string[] = []
    for (const name of Object.keys(h)) {
      if (name.charCodeAt(0) === 58 /* : */) continue
      // :authority is the Host (RFC 9113 §8.3.1); a Host header beside it would make two.
      if (name === 'host' && typeof h[':authority'] === 'string') continue
      const v = h[name]
      if (v === undefined) continue
      if (Array.isArray(v)) for (const x of v) raw.push(name, x)
      else raw.push(name, v)
    }
    const authority = h[':authority']
    if (typeof authority === 'string') raw.push('host', authority)
    this.#raw = raw
    return raw
  }

  forwardInfo (trusted: boolean): ForwardInfo {
    const socket = this.stream.session?.socket
    return { remoteAddress: socket?.remoteAddress ?? '', proto: socket !== undefined && 'encrypted' in socket ? 'https' : 'http', port: socket?.localPort ?? 0, trusted, clientCert: peerOf(socket)?.xfcc }
  }

  connection (): object | undefined { return this.stream.session?.socket }

  /** An HTTP/2 request has a body unless its HEADERS ended the stream (content-length is optional). */
  hasBody (): boolean { return !this.#endStream }
  /** Through a PassThrough: undici destroys a request body once sent, and the client's stream must stay open. */
  body (): Readable { return this.stream.pipe(new PassThrough()) }
  get gone (): boolean { return this.stream.destroyed || this.stream.closed }
  get headSent (): boolean { return this.stream.headersSent }
  onClose (fn: () => void): void { this.stream.on('close', fn) }
  proceed (): void {}

  head (status: number, _statusText: string, headers: string[]): void {
    this.#head = h2Head(status, headers)
    // Sent with the first body bytes or at the end; a streaming response whose body is slow still gets its head soon.
    queueMicrotask(this.#flushHead)
  }

  #flushHead = (): void => {
    const head = this.#head
    if (head === null) return
    this.#head = null
    respondWithTrailers(this.stream, head, this.#trailersNow)
  }

  #trailersNow = (): OutgoingHttpHeaders | null => this.#trailers

  write (chunk: Buffer): boolean {
    this.#flushHead()
    return this.stream.write(chunk)
  }

  onceDrain (fn: () => void): void { this.stream.once('drain', fn) }

  end (trailers: Array<Buffer | string> | null): void {
    const s = this.stream
    if (this.#head !== null) {
      // No body: one HEADERS frame ending the stream (gRPC's trailers-only), with any trailers folded in.
      const head = this.#head
      this.#head = null
      if (trailers !== null) fold(head, trailers)
      if (!s.destroyed && !s.closed) try { s.respond(head, { endStream: true }) } catch {}
      this.#linger()
      return
    }
    if (s.destroyed) return
    if (trailers !== null) this.#trailers = fold({}, trailers)
    s.end()
    this.#linger()
  }

  answer (a: OwnAnswer): void {
    this.#head = null
    const s = this.stream
    if (s.destroyed || s.closed) return
    if (s.headersSent) { s.close(NGHTTP2_CANCEL); return }
    try {
      if (this.grpc) {
        s.respond(trailersOnly(a.grpcStatus, a.grpcMessage, a.headers), { endStream: true })
        return
      }
      const body = `${a.message}\n`
      const h: OutgoingHttpHeaders = { ':status': a.status, 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body) }
      for (let i = 0; i < a.headers.length; i += 2) h[a.headers[i]] = a.headers[i + 1]
      s.respond(h)
      s.end(body)
      this.#linger()
    } catch {
      s.close(NGHTTP2_CANCEL)
    }
  }

  failAfterHead (grpcStatus: number, grpcMessage: string): void {
    const s = this.stream
    this.#head = null
    if (s.destroyed || s.closed) return
    if (!this.grpc) { s.close(NGHTTP2_CANCEL); return }
    this.#trailers = { 'grpc-status': String(grpcStatus), 'grpc-message': encodeGrpcMessage(grpcMessage) }
    s.end()
  }

  reset (): void {
    this.#head = null
    if (!this.stream.destroyed) this.stream.close(NGHTTP2_CANCEL)
  }
}

/** Adds raw trailers (flat, name/value) to a header object, x-doorman-* dropped. */
function fold (into: OutgoingHttpHeaders, raw: Array<Buffer | string>): OutgoingHttpHeaders {
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i].toString().toLowerCase()
    if (!isOwnHeader(name)) into[name] = raw[i + 1].toString()
  }
  return into
}
