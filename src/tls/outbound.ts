// mTLS origination for the outbound lane: the TLS options an instance's connections use (this workload's live key
// pair, the trust bundle, TLS 1.2 at least) and the check that the provider is who the registry says — its
// certificate, valid under the bundle, must carry exactly the SPIFFE ID the registry lists for that instance. A valid
// certificate of another workload is an impostor: the attempt fails before any request byte is sent (so it may go
// elsewhere whatever the method), and is counted and logged.
import { createRequire } from 'node:module'
import tls from 'node:tls'
import { X509Certificate } from 'node:crypto'
import type { Logger } from '../core/log.js'
import { isTlsFailure } from '../core/errors.js'
import { spiffeIdOf } from './spiffe.js'
import { MIN_TLS_VERSION, type CertStore, type KeyPair } from './store.js'
import { TlsStats } from './metrics.js'
import { RateLog } from './ratelog.js'

import type { buildConnector as BuildConnector } from 'undici'

const require = createRequire(import.meta.url)
type Connect = BuildConnector.connector
type Cb = BuildConnector.Callback
/** undici's own connector (its TLS session cache among it), loaded as src/core/undici.ts loads Client and Pool. */
const buildConnector = require('undici/lib/core/connect.js') as (opts: Record<string, unknown>) => Connect

/** The error code of a provider whose certificate names another identity than the registry's. */
export const IMPOSTOR = 'DOORMAN_MTLS_IMPOSTOR'
/** The error code of an attempt with no usable certificate of our own. */
export const NO_CERT = 'DOORMAN_MTLS_NO_CERT'

export interface OutboundTlsOptions {
  mode: 'permissive' | 'strict'
  store: CertStore
  stats: TlsStats
  log: Logger
}

export class OutboundTls {
  readonly mode: 'permissive' | 'strict'
  readonly #store: CertStore
  readonly #stats: TlsStats
  readonly #rate: RateLog

  constructor (opts: OutboundTlsOptions) {
    this.mode = opts.mode
    this.#store = opts.store
    this.#stats = opts.stats
    this.#rate = new RateLog(opts.log)
  }

  /** Counts an outbound failure for `service` by reason, and logs it at a bounded rate. */
  failed (service: string, reason: string, detail: Record<string, unknown>): void {
    TlsStats.inc(this.#stats.outboundFailures, `${service}\t${reason}`)
    this.#rate.warn(`outbound:${reason}`, { service, reason, ...detail }, reason === 'impostor'
      ? 'outbound mTLS: the instance presented a valid certificate of another identity than the registry lists; refused'
      : reason === 'plaintext-refused'
        ? 'outbound mTLS: the instance takes no mTLS and DOORMAN_MTLS is strict; refused'
        : 'outbound mTLS: the connection failed')
  }

  /** checkServerIdentity for an instance registered as `identity` of `service`. */
  verifier (service: string, identity: string): (host: string, cert: tls.PeerCertificate) => Error | undefined {
    return (_host, cert) => {
      let id: string | null = null
      try { id = cert.raw !== undefined ? spiffeIdOf(new X509Certificate(cert.raw)) : null } catch {}
      if (id !== null && id === identity) return undefined
      this.failed(service, 'impostor', { expected: identity, presented: id ?? '(no SPIFFE ID)' })
      return Object.assign(new Error(`the instance of ${service} presented ${id ?? 'no SPIFFE ID'}, not ${identity === '' ? 'an identity (the registry lists none)' : identity}`), { code: IMPOSTOR })
    }
  }

  /**
   * The secure context of the pair in use, made once per pair: given PEMs, every tls.connect would parse the key pair
   * and load the trust bundle again.
   */
  #context: { generation: number, context: tls.SecureContext } | null = null

  #contextOf (pair: KeyPair): tls.SecureContext {
    if (this.#context?.generation !== pair.generation) {
      this.#context = { generation: pair.generation, context: tls.createSecureContext({ cert: pair.pem.cert, key: pair.pem.key, ca: pair.pem.ca, minVersion: MIN_TLS_VERSION }) }
    }
    return this.#context.context
  }

  /** The TLS options of a connection to an instance of `service` registered as `identity`, with the pair in use. */
  options (pair: KeyPair, service: string, identity: string, alpn: string[]): tls.ConnectionOptions {
    return {
      // The context carries the pair, the bundle and the minimum version (options beside it would be ignored).
      secureContext: this.#contextOf(pair),
      // The server name is the service's: workload certificates name no host, and an IP may not be sent as SNI.
      servername: service,
      ALPNProtocols: alpn,
      checkServerIdentity: this.verifier(service, identity)
    }
  }

  /** TLS sessions of HTTP/2 connections, by instance address and identity: the next session to it resumes one. */
  readonly #h2Sessions = new Map<string, { generation: number, session: Buffer }>()

  /**
   * The options of a new HTTP/2 session (ALPN h2) to an instance: a TLS connection made here, with the live pair,
   * resuming the last TLS session with that instance when the pair is the same. Without a usable pair, none of ours
   * (the provider refuses it).
   */
  h2Options (service: string, identity: string): { createConnection: (authority: URL) => tls.TLSSocket } {
    return {
      createConnection: (authority: URL) => {
        const key = `${authority.host}\t${identity}`
        const pair = this.pair()
        const opts: tls.ConnectionOptions = pair instanceof Error
          ? { minVersion: MIN_TLS_VERSION, servername: service, ALPNProtocols: ['h2'], checkServerIdentity: this.verifier(service, identity) }
          : this.options(pair, service, identity, ['h2'])
        if (pair instanceof Error) this.failed(service, 'no-certificate', {})
        const generation = pair instanceof Error ? -1 : pair.generation
        const last = this.#h2Sessions.get(key)
        const socket = tls.connect({ ...opts, host: authority.hostname.replace(/^\[|\]$/g, ''), port: Number(authority.port), session: last?.generation === generation ? last.session : undefined })
        socket.on('session', (session: Buffer) => {
          if (this.#h2Sessions.size >= 1024 && !this.#h2Sessions.has(key)) this.#h2Sessions.delete(this.#h2Sessions.keys().next().value as string)
          this.#h2Sessions.set(key, { generation, session })
        })
        return socket
      }
    }
  }

  /** The pair to connect with, or the error that says there is none. */
  pair (): KeyPair | Error {
    const pair = this.#store.current
    const status = this.#store.status()
    if (pair === null || status.problem !== null) return Object.assign(new Error(`no usable certificate of our own (${status.problem ?? 'missing'}): ${status.detail}`), { code: NO_CERT })
    return pair
  }

  /**
   * An undici connector (the `connect` option of a Client or Pool) for one instance: TLS with the live pair (a new
   * connector, and so a new session cache, when the pair rotates), sessions resumed across connections.
   */
  connector (service: string, identity: string, timeout: number): Connect {
    let gen = -1
    let base: Connect | null = null
    return (opts, cb: Cb) => {
      const pair = this.pair()
      if (pair instanceof Error) { this.failed(service, 'no-certificate', {}); cb(pair, null); return }
      if (base === null || gen !== pair.generation) {
        gen = pair.generation
        // allowH2 off: undici's connector otherwise offers h2 beside http/1.1 whatever ALPNProtocols says, and a
        // provider's doorman (which offers h2 first) would take this HTTP/1.1 pool's connections as HTTP/2.
        base = buildConnector({ ...this.options(pair, service, identity, ['http/1.1']), allowH2: false, timeout, maxCachedSessions: 16 })
      }
      base(opts, (...args) => {
        const err = args[0]
        const code = (err as { code?: string } | null)?.code
        if (err !== null && code !== IMPOSTOR && isTlsFailure(code)) this.failed(service, 'handshake', { code, reason: err.message.slice(0, 200) })
        cb(...args)
      })
    }
  }
}
