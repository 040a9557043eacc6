// One instance of a service as the outbound lane sees it: its pool, its load, its warmup weight (interpolated on
// this lane's clock), and its passive outlier state.
import { Pool } from '../core/undici.js'
import type { Instance } from '../registry/index.js'
import { factor, interpolate } from '../warmup/index.js'
import type { Balanceable } from './balancer.js'

export interface PoolSettings {
  /** Most connections to one instance. */
  connections: number
  /** Longest wait for response headers. */
  headersTimeout: number
}

export class Endpoint implements Balanceable {
  readonly id: string
  readonly pool: Pool
  inst: Instance
  /** This lane's clock (performance.now) when the current record arrived. */
  receivedAt: number
  inflight = 0
  /** A response said x-doorman-draining: no new requests, whatever the registry says yet. */
  drainingSeen = false
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
    this.pool = new Pool(`http://${inst.address}`, {
      connections: pool.connections,
      pipelining: 1,
      headersTimeout: pool.headersTimeout,
      bodyTimeout: Math.max(pool.headersTimeout, 300_000),
      keepAliveTimeout: 4_000,
      connect: { timeout: Math.min(pool.headersTimeout, 5_000) }
    })
  }

  get address (): string { return this.inst.address }

  /** A new record from the registry (same id). */
  update (inst: Instance, now: number): void {
    this.inst = inst
    this.receivedAt = now
  }

  progress (now: number): number {
    const w = this.inst.warmup
    return this.inst.state === 'warming' ? interpolate(w.progress, this.receivedAt, now, w.window) : 1
  }

  tier (now: number): number {
    const s = this.inst.state
    if (this.drainingSeen || s === 'draining') return 2
    if (s === 'starting') return -1
    if (s === 'ejected' || now < this.ejectedUntil) return 1
    return 0
  }

  weight (now: number): number {
    if (this.inst.state !== 'warming') return 1
    return factor(this.progress(now), this.inst.warmup)
  }

  changing (now: number): boolean {
    return this.inst.state === 'warming' && this.progress(now) < 1
  }

  tierChangesAt (now: number): number {
    return this.ejectedUntil > now ? this.ejectedUntil : Infinity
  }

  /** Ejected by this lane right now. */
  ejected (now: number): boolean { return now < this.ejectedUntil }
}
