// mTLS on the inbound port. detect.ts hands over the connections whose first byte is a TLS record (0x16, a
// ClientHello); here they get a TLS server side with the live key pair (rotated with setSecureContext: new handshakes
// take the new pair, established connections keep theirs), TLS 1.2 at least, a client certificate required and
// verified against ca.crt, and ALPN h2 / http/1.1. A verified caller's SPIFFE ID and x-forwarded-client-cert value
// are kept on the socket (peer.ts); the decrypted socket then goes to the same HTTP/1.1 or HTTP/2 hand-off as a
// plaintext one.
import tls, { type TLSSocket } from 'node:tls'
import type { Socket } from 'node:net'
import type { Logger } from '../core/log.js'
import type { Authorizer } from '../authz/index.js'
import { MIN_TLS_VERSION, type CertStore, type KeyPair } from './store.js'
import { spiffeIdOf, certHash } from './spiffe.js'
import { setPeer, type Peer } from './peer.js'
import { TlsStats } from './metrics.js'
import { RateLog } from './ratelog.js'

export type MtlsMode = 'off' | 'permissive' | 'strict'

export interface TlsFrontOptions {
  store: CertStore
  stats: TlsStats
  log: Logger
  authorizer: Authorizer
  /** Longest a TLS handshake may take. */
  handshakeTimeout: number
  /** The verified connection, decrypted, by the protocol ALPN chose. */
  onSecure: (socket: TLSSocket, protocol: 'h2' | 'http/1.1') => void
}

/** The reason label of a client certificate that failed verification (OpenSSL's code, as Node gives it). */
export function verifyReason (code: string | undefined): string {
  switch (code) {
    case 'CERT_HAS_EXPIRED': return 'expired'
    case 'CERT_NOT_YET_VALID': return 'not-yet-valid'
    default: return 'untrusted'
  }
}

export class TlsFront {
  readonly server: tls.Server
  readonly #opts: TlsFrontOptions
  readonly #stats: TlsStats
  readonly #rate: RateLog
  readonly #sockets = new Set<TLSSocket>()
  #generation = -1

  constructor (opts: TlsFrontOptions) {
    this.#opts = opts
    this.#stats = opts.stats
    this.#rate = new RateLog(opts.log)
    this.server = tls.createServer({
      requestCert: true,
      // Verified below, so that a refusal is counted and logged by its reason.
      rejectUnauthorized: false,
      ALPNProtocols: ['h2', 'http/1.1'],
      minVersion: MIN_TLS_VERSION,
      handshakeTimeout: opts.handshakeTimeout
    })
    this.server.on('secureConnection', (s: TLSSocket) => { this.#secure(s) })
    this.server.on('tlsClientError', (err: NodeJS.ErrnoException, s: TLSSocket) => {
      this.#refuse(s, 'handshake', { code: err.code, reason: err.message.slice(0, 200) })
    })
    const pair = opts.store.current
    if (pair !== null) this.#use(pair)
    opts.store.onChange((p) => { this.#use(p) })
  }

  #use (pair: KeyPair): void {
    if (pair.generation === this.#generation) return
    this.#generation = pair.generation
    this.server.setSecureContext({ cert: pair.pem.cert, key: pair.pem.key, ca: pair.pem.ca, minVersion: MIN_TLS_VERSION })
  }

  /** A socket whose first byte is a TLS handshake record. */
  accept (socket: Socket): void {
    const pair = this.#opts.store.current
    if (pair === null) {
      // No certificate to answer with: the handshake can't succeed (and a strict sidecar never falls back to plaintext).
      this.#fail('not-ready')
      this.#rate.warn('not-ready', { status: this.#opts.store.status() }, 'TLS connection refused: no usable certificate')
      socket.destroy()
      return
    }
    this.#use(pair)
    this.server.emit('connection', socket)
  }

  /** Open TLS connections. */
  get connections (): number { return this.#sockets.size }

  #secure (s: TLSSocket): void {
    const cert = s.getPeerX509Certificate()
    if (cert === undefined) { this.#refuse(s, 'no-client-cert', {}); return }
    if (!s.authorized) { this.#refuse(s, verifyReason(s.authorizationError as unknown as string), { code: s.authorizationError, subject: cert.subject.replace(/\n/g, ', ') }); return }
    const id = spiffeIdOf(cert)
    if (id === null) { this.#refuse(s, 'no-spiffe-id', { subject: cert.subject.replace(/\n/g, ', ') }); return }
    const own = this.#opts.store.current?.id ?? ''
    const peer: Peer = { id, xfcc: `By=${own};Hash=${certHash(cert)};URI=${id}` }
    const authz = this.#opts.authorizer
    if (authz.pathIndependent) peer.denied = authz.decide(id, '/')
    setPeer(s, peer)
    TlsStats.inc(this.#stats.connections, 'mtls')
    this.#sockets.add(s)
    s.once('close', () => { this.#sockets.delete(s) })
    this.#opts.onSecure(s, s.alpnProtocol === 'h2' ? 'h2' : 'http/1.1')
  }

  #fail (reason: string): void { TlsStats.inc(this.#stats.handshakeFailures, reason) }

  #refuse (s: TLSSocket, reason: string, detail: Record<string, unknown>): void {
    this.#fail(reason)
    this.#rate.warn(`refused:${reason}`, { reason, remote: s.remoteAddress, ...detail }, 'TLS connection refused')
    s.destroy()
  }
}
