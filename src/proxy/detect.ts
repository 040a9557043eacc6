// Protocol detection on the inbound port: HTTP/1.1 and cleartext HTTP/2 with prior knowledge share one listener and
// are told apart by the HTTP/2 connection preface (RFC 9113 §3.4), as linkerd2-proxy's inbound detect does.
//
// The http.Server keeps listening itself (its headersTimeout checks, close() and closeIdleConnections() work as
// before); only its 'connection' listener is wrapped: the first bytes of each connection are read, put back with
// unshift(), and the socket goes either to Node's own HTTP/1.1 connection handling or to the HTTP/2 server.
import type { Server } from 'node:http'
import type { Socket } from 'node:net'

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1')

/** 'h2' when `buf` starts with the whole preface, 'h1' when it can't, null while it is still a prefix of it. */
export function classify (buf: Buffer): 'h1' | 'h2' | null {
  const n = Math.min(buf.length, PREFACE.length)
  if (buf.compare(PREFACE, 0, n, 0, n) !== 0) return 'h1'
  return n === PREFACE.length ? 'h2' : null
}

export interface DetectOptions {
  /** Sockets whose first bytes are the HTTP/2 preface. */
  onH2: (socket: Socket) => void
  /** Longest wait for the first bytes: then the socket is refused as a slow request head (408), as Node would. */
  timeoutMs: number
  /** Most connections open at once (0: no cap); beyond it new ones are closed at accept and `onDrop` is told. */
  maxConnections?: number
  onDrop?: () => void
  /** Sockets whose first byte starts a TLS handshake record (0x16); without it they go to HTTP/1.1 as before. */
  onTls?: (socket: Socket) => void
  /** Asked of every plaintext connection once its protocol is known: false refuses it (DOORMAN_MTLS=strict). */
  admitPlain?: (socket: Socket) => boolean
}

/** The listener's connections, as detection sees them. */
export interface Connections {
  /** Connections open now, HTTP/1.1 and HTTP/2 alike. */
  readonly open: number
}

/** Where a socket goes after detection: Node's own HTTP/1.1 handling (for sockets decrypted elsewhere, too). */
export interface Handoff {
  toH1: (socket: Socket) => void
}

const TLS_HANDSHAKE = 0x16

/** Wraps `server`'s connection handling with preface detection. Call once, before listen(). */
export function detectProtocol (server: Server, opts: DetectOptions): Connections & Handoff {
  const h1 = server.listeners('connection') as Array<(socket: Socket) => void>
  server.removeAllListeners('connection')
  const toH1 = (socket: Socket): void => { for (const fn of h1) fn.call(server, socket) }
  const conns = { open: 0 }
  const closed = (): void => { conns.open-- }
  if (opts.maxConnections !== undefined && opts.maxConnections > 0) {
    // net.Server closes a connection over the cap at accept, before any byte is read, and says so with 'drop'.
    server.maxConnections = opts.maxConnections
    server.on('drop', () => { opts.onDrop?.() })
  }
  server.on('connection', (socket: Socket) => {
    conns.open++
    socket.once('close', closed)
    let buf: Buffer | null = null
    const done = (): void => {
      clearTimeout(timer)
      socket.removeListener('data', onData)
      socket.removeListener('error', onError)
      socket.removeListener('end', onEnd)
      socket.pause()
    }
    const onData = (chunk: Buffer): void => {
      buf = buf === null ? chunk : Buffer.concat([buf, chunk])
      if (opts.onTls !== undefined && buf[0] === TLS_HANDSHAKE) {
        done()
        socket.unshift(buf)
        opts.onTls(socket)
        return
      }
      const kind = classify(buf)
      if (kind === null) return
      done()
      if (opts.admitPlain !== undefined && !opts.admitPlain(socket)) { socket.destroy(); return }
      socket.unshift(buf)
      if (kind === 'h2') {
        opts.onH2(socket)
      } else {
        toH1(socket)
        // Node's parser reads from the handle; the bytes put back reach it once the stream flows again.
        process.nextTick(() => { socket.resume() })
      }
    }
    const onError = (): void => { done(); socket.destroy() }
    // A client that closes its side within the preface's first bytes sent no request to answer.
    const onEnd = (): void => { done(); socket.destroy() }
    const timer = setTimeout(() => {
      done()
      if (buf !== null) socket.unshift(buf)
      server.emit('clientError', Object.assign(new Error('no request head in time'), { code: 'ERR_HTTP_REQUEST_TIMEOUT' }), socket)
    }, opts.timeoutMs)
    socket.on('data', onData)
    socket.on('error', onError)
    socket.on('end', onEnd)
  })
  return Object.assign(conns, { toH1 })
}
