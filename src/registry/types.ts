// The registry's data model and its one interface. Two implementations: memory (one process) and Redis.
// The registry is never on the request path: consumers keep a local view fed by watch().
import type { CheckSpec } from '../check/spec.js'
import { SERVICE_NAME } from '../config/table.js'

/**
 * `starting`: registered but the app is not ready (not routable); `warming`: routable, ramping its weight;
 * `up`: routable at full weight; `draining`: leaving, consumers stop sending new requests at once;
 * `ejected`: a health checker took it out (the instance's own state is kept underneath and returns on recovery).
 */
export type InstanceState = 'starting' | 'up' | 'warming' | 'draining' | 'ejected'
/** The states an instance sets for itself (`ejected` is set by a checker, through setEjected). */
export type OwnState = Exclude<InstanceState, 'ejected'>

export const STATES: readonly InstanceState[] = ['starting', 'up', 'warming', 'draining', 'ejected']

/** Orders instances by id (listings are sorted so that every reader sees the same order). */
export function byId (a: Instance, b: Instance): number { return a.id < b.id ? -1 : a.id > b.id ? 1 : 0 }

export interface Warmup {
  /** Slow-start window in milliseconds (0 = no warmup). */
  window: number
  /** Curve exponent (1 = linear). */
  aggression: number
  /** Weight floor during warmup, in percent. */
  minWeight: number
  /** Progress through the window, 0..1, computed by the instance on its own clock when it last wrote. */
  progress: number
}

export interface Instance {
  /** Unique per process run. */
  id: string
  service: string
  cluster: string
  zone: string
  /** `host:port` of the instance's inbound port (IPv6 hosts in brackets). */
  address: string
  adminPort: number
  /** Epoch milliseconds when the instance's doorman started (its own clock). */
  startedAt: number
  /** Epoch milliseconds when it registered (its own clock): the warmup window starts here. */
  registeredAt: number
  warmup: Warmup
  /** The weight the instance publishes now, in percent (100 = fully warm). */
  weight: number
  /** The effective state: `ejected` when a checker ejected it, unless it is draining. */
  state: InstanceState
  /** True while a checker holds it ejected. */
  ejected: boolean
  /** True while the instance's app liveness check fails (the restart budget counts it; absent = false). */
  livenessFailing?: boolean
  /** Epoch milliseconds of the instance's last write (its own clock; for display only). */
  updatedAt: number
  // Identity (mTLS): what a consumer's outbound lane needs to originate mTLS and to know it reached this instance.
  /** The instance's SPIFFE ID (its certificate's URI SAN); absent without mTLS. */
  identity?: string
  /** True when the instance's inbound port takes mTLS (DOORMAN_MTLS permissive or strict). */
  mtls?: boolean
  /** Revision: grows with every write (the store's clock), so a watcher keeps the newest of two reports. */
  rev: number

  // --- Central checker: where the record comes from, its scopes and its check (absent = not set) ---
  /** `static`: written by `doorman checker` for a target of DOORMAN_CHECK_TARGETS; absent: a sidecar's own record. */
  source?: 'static'
  /** Organisation and environment (DOORMAN_ORG / DOORMAN_ENV): scopes of the checker's mode switch and canary. */
  org?: string
  env?: string
  /** The check the central checker runs (absent: the lane's /readyz, or a TCP connect without a lane). */
  check?: CheckSpec
}

export { LABEL } from '../config/table.js'

/** The fields an instance (or a checker) may change after registering. */
export interface InstancePatch {
  state?: OwnState
  weight?: number
  progress?: number
  updatedAt?: number
  livenessFailing?: boolean
}

/** What a watcher is told: the whole current view of the service, and what changed. */
export type Change =
  | { type: 'snapshot' }
  | { type: 'put', instance: Instance, previous: Instance | undefined }
  | { type: 'delete', id: string, previous: Instance | undefined }

export type WatchListener = (view: ReadonlyMap<string, Instance>, change: Change) => void

export interface Watch {
  readonly service: string
  /** The current view (id → instance). */
  readonly view: ReadonlyMap<string, Instance>
  /** Resolves once the first full listing has been applied. */
  readonly ready: Promise<void>
  /** True once the first full listing has been applied. */
  readonly synced: boolean
  /** Stops watching (idempotent). */
  close: () => void
}

export interface Registry {
  readonly kind: 'memory' | 'redis' | 'file'
  /** True while the backing store is reachable (always true for memory). */
  readonly up: boolean
  /** Called on every reachability change; returns an unsubscribe function. */
  onStatus: (fn: (up: boolean) => void) => () => void
  /** Resolves true once the store is reachable, false after `timeoutMs`. */
  waitUp: (timeoutMs: number) => Promise<boolean>
  /** Writes the whole instance (replacing any earlier record of its id) with a TTL, and tells watchers. */
  register: (inst: Instance, ttl: number) => Promise<void>
  /**
   * Extends the instance's TTL; with a non-empty patch, also writes it and tells watchers. Resolves false when the
   * instance is not in the registry (it expired, or the store lost it): the caller registers it again.
   */
  heartbeat: (service: string, id: string, ttl: number, patch?: InstancePatch) => Promise<boolean>
  /** Writes the patch and tells watchers at once (TTL unchanged). False when the instance is not registered. */
  update: (service: string, id: string, patch: InstancePatch) => Promise<boolean>
  /** A checker's verdict: holds the instance `ejected`, or releases it. False when it is not registered. */
  setEjected: (service: string, id: string, ejected: boolean) => Promise<boolean>
  /** Removes the instance and tells watchers at once. */
  deregister: (service: string, id: string) => Promise<void>
  /** Services with at least one registered instance (sorted). */
  services: () => Promise<string[]>
  /** The service's instances now (sorted by id). */
  list: (service: string) => Promise<Instance[]>
  /** Keeps a live view of the service: pushed changes, plus a periodic full resync. */
  watch: (service: string, fn?: WatchListener) => Watch
  /** Closes connections and watches. */
  close: () => Promise<void>
  /** Connections to the store held now, for commands and for subscriptions (stores reached over the network). */
  connections?: () => { commands: number, subscriber: number }
}

/**
 * Reconnect and retry backoff with full jitter: a random delay up to a cap of 100 ms doubling to 2 s. A fleet that
 * lost its Redis at the same moment comes back spread over the window, not in one burst.
 */
export function backoff (attempt: number): number {
  return Math.max(1, Math.floor(Math.random() * backoffCap(attempt)))
}

/** The cap of the backoff's window for an attempt: 100 ms doubling to 2 s. */
export function backoffCap (attempt: number): number {
  return Math.min(2000, 50 * 2 ** Math.min(Math.max(attempt, 1), 6))
}

/** Effective state from the instance's own state and a checker's ejection: draining wins, then ejection. */
export function effectiveState (own: OwnState, ejected: boolean): InstanceState {
  if (own === 'draining') return 'draining'
  return ejected ? 'ejected' : own
}

/** True for states that take new requests. */
export function routable (state: InstanceState): boolean {
  return state === 'up' || state === 'warming'
}

/** Service names: defined beside the settings that take one (DOORMAN_SERVICE), which sit below the registry. */
export { SERVICE_NAME }

export function checkService (service: string): void {
  if (!SERVICE_NAME.test(service)) throw new Error(`bad service name ${JSON.stringify(service)}: expected lower-case letters, digits, '.', '-' or '_'`)
}
