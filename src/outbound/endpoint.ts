// One instance of a service as the outbound lane sees it: its pool, its load, its warmup weight (interpolated on
// this lane's clock), and its passive outlier state.
import { Pool } from '../core/undici.js'
import { H2Upstream } from '../proxy/upstream-h2.js'
import type { Instance } from '../registry/index.js'
import { factor, interpolate } from '../warmup/index.js'
import { Tier, type Balanceable } from './balancer.js'
import type { OutboundTls } from '../tls/outbound.js'

export interface PoolSettings {
  /** Most connections to one instance. */
  connections: number
  /** Longest wait for response headers. */
  headersTimeout: number
  /** How long a response's drain flag is remembered at most, in milliseconds (default 10 s). */
  drainMemoryMs?: number
  /** With DOORMAN_MTLS on: mTLS to the instances that take it. */
  tls?: OutboundTls
}

/** How long a drain flag seen on a response keeps an instance out at most, unless the registry says otherwise. */
export const DRAIN_MEMORY_MS = 10_000

export class Endpoint implements Balanceable {
  readonly id: string
  readonly pool: Pool
  inst: Instance
  /** This lane's clock (performance.now) when the current record arrived. */
  receivedAt: number
  inflight = 0
  /**
   * Until when a response's x-doorman-draining keeps this instance out (this lane's clock; 0: no flag seen). The
   * flag ends sooner when the registry reports the instance routable in a record written after the flag was seen,
   * or registered anew: what is learnt from responses never outlives what the registry says next.
   */
  drainingUntil = 0
  /** The registry revision current when the drain flag was seen. */
  #drainingRev = 0
  readonly #drainMemoryMs: number
  readonly #headersTimeout: number
  #h2: H2Upstream | null = null
  /** Connections to this instance are mTLS (it takes mTLS and this sidecar originates it). */
  readonly mtls: boolean
  readonly #tls: OutboundTls | undefined
  /** Consecutive gateway failures (connect errors, resets, timeouts, 502/503/504 that were not sheds). */
  failures = 0
  ejectedUntil = 0
  ejections = 0
  lastEjectedAt = 0
  /** Set once removed from the service: the pool closes when the last request is done. */
  removed = false

  constructor (inst: Instance, now: number, pool: PoolSettings) {
    this.id = inst.id
    this.inst = inst
    this.receivedAt = now
    this.#drainMemoryMs = pool.drainMemoryMs ?? DRAIN_MEMORY_MS
    this.#headersTimeout = pool.headersTimeout
    this.#tls = pool.tls
    this.mtls = pool.tls !== undefined && inst.mtls === true
    const connectTimeout = Math.min(pool.headersTimeout, 5_000)
    this.pool = new Pool(`${this.mtls ? 'https' : 'http'}://${inst.address}`, {
      connections: pool.connections,
      pipelining: 1,
      headersTimeout: pool.headersTimeout,
      bodyTimeout: Math.max(pool.headersTimeout, 300_000),
      keepAliveTimeout: 4_000,
      connect: this.mtls && pool.tls !== undefined ? pool.tls.connector(inst.service, inst.identity ?? '', connectTimeout) : { timeout: connectTimeout }
    })
  }

  get address (): string { return this.inst.address }

  /** The instance's inbound port over h2c, for the app's HTTP/2 calls: a few multiplexed sessions, opened on first use. */
  get h2 (): H2Upstream {
    const tls = this.mtls ? this.#tls : undefined
    const { service, identity } = this.inst
    this.#h2 ??= new H2Upstream(`${tls !== undefined ? 'https' : 'http'}://${this.inst.address}`, {
      sessions: 4,
      headersTimeout: this.#headersTimeout,
      connectTimeout: Math.min(this.#headersTimeout, 5_000),
      tls: tls === undefined ? undefined : () => tls.h2Options(service, identity ?? '')
    })
    return this.#h2
  }

  /** Closes the pool and the HTTP/2 sessions once their requests are done. */
  async close (): Promise<void> {
    await Promise.all([this.pool.close(), this.#h2?.close()])
  }

  destroy (): void {
    void this.pool.destroy().catch(() => {})
    this.#h2?.destroy()
  }

  /** A response said x-doorman-draining. True when this is news (the balancer must re-read tiers). */
  sawDraining (now: number): boolean {
    const news = now >= this.drainingUntil
    this.drainingUntil = now + this.#drainMemoryMs
    this.#drainingRev = this.inst.rev
    return news
  }

  /** A new record from the registry (same id). */
  update (inst: Instance, now: number): void {
    if (this.drainingUntil !== 0) {
      const anew = inst.registeredAt !== this.inst.registeredAt
      const routable = (inst.state === 'up' || inst.state === 'warming') && inst.rev > this.#drainingRev
      if (anew || routable) this.drainingUntil = 0
    }
    if (inst.registeredAt !== this.inst.registeredAt) {
      // Registered anew (the registry lost it, or a new run under the same id): nothing learnt before applies.
      this.failures = 0
      this.ejectedUntil = 0
    }
    this.inst = inst
    this.receivedAt = now
  }

  progress (now: number): number {
    const w = this.inst.warmup
    return this.inst.state === 'warming' ? interpolate(w.progress, this.receivedAt, now, w.window) : 1
  }

  tier (now: number): Tier {
    const s = this.inst.state
    if (s === 'draining' || now < this.drainingUntil) return Tier.DRAINING
    if (s === 'starting') return Tier.NEVER
    if (s === 'ejected' || now < this.ejectedUntil) return Tier.EJECTED
    return Tier.USE
  }

  weight (now: number): number {
    if (this.inst.state !== 'warming') return 1
    return factor(this.progress(now), this.inst.warmup)
  }

  changing (now: number): boolean {
    return this.inst.state === 'warming' && this.progress(now) < 1
  }

  tierChangesAt (now: number): number {
    const ejectedEnd = this.ejectedUntil > now ? this.ejectedUntil : Infinity
    const flagEnd = this.drainingUntil > now ? this.drainingUntil : Infinity
    return Math.min(ejectedEnd, flagEnd)
  }

  /** Ejected by this lane right now. */
  ejected (now: number): boolean { return now < this.ejectedUntil }
}
