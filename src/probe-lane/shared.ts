// The state the main thread publishes for the lane thread, in shared memory: the lane answers probes from it
// without asking the main thread anything, so a busy or blocked main loop can't delay a probe.

/** Int32 slots. */
export const S = {
  INFLIGHT: 0,
  QUEUED: 1,
  LIMIT: 2,
  /** Requests the app completed (wraps; compare for change only). */
  COMPLETED: 3,
  ARRIVED: 4,
  SHED: 5,
  /** 0 serving, 1 draining, 2 closing, 3 closed (see PHASES). */
  PHASE: 6,
  /** 1 once doorman's business listeners are up. */
  LISTENING: 7,
  /** Written by the lane: 1 once the app passed its startup check. */
  APP_STARTED: 8,
  /** Written by the lane: 1 while the app passes its readiness check. */
  APP_READY: 9,
  /** 1 when the instance must be registered before it is ready (a registry is configured). */
  REGISTRY_REQUIRED: 10,
  /** 1 while registered. */
  REGISTERED: 11,
  /** 1 while the registry is reachable. */
  REGISTRY_UP: 12,
  /** Published weight in hundredths of a percent (10000 = fully warm). */
  WEIGHT: 13,
  /** Warmup progress in hundredths of a percent. */
  WARMUP_PROGRESS: 14,
  UPGRADES: 15,
  FAILED: 16,
  BASE_LIMIT: 17,
  /** Requests in flight when drain started, served during the drain, cut at its end. */
  DRAIN_INFLIGHT_AT_START: 18,
  DRAIN_SERVED: 19,
  DRAIN_CUT: 20,
  /** Written by the lane: 1 once the lane's listener is up. */
  LANE_UP: 21,
  /** Written by the lane: 1 while the app's liveness check fails (before the restart budget is applied). */
  APP_LIVE_FAILING: 22,
  /** 1 while the main thread has a view of the service's other instances (a shared registry, synced and up). */
  FLEET_VIEW: 23,
  /** The service's other instances (not draining) in that view. */
  FLEET_OTHERS: 24,
  /** ...of which failing their app liveness, or restarting (`starting`). */
  FLEET_OTHERS_FAILING: 25,
  /** Connections to the registry's store: for commands, and for subscriptions. */
  REGISTRY_CONNECTIONS: 28,
  REGISTRY_SUBSCRIBER_CONNECTIONS: 29
} as const

const INT_SLOTS = 32
/** BigInt64 slots (microseconds since the epoch, from performance.timeOrigin + performance.now()). */
export const T = {
  HEARTBEAT: 0,
  DRAIN_STARTED: 1,
  REGISTERED_AT: 2,
  /** When the app's liveness check started failing (0 = not failing). */
  APP_LIVE_FAILING_SINCE: 3
} as const
const TIME_SLOTS = 8

export const PHASES = ['serving', 'draining', 'closing', 'closed'] as const
export type Phase = typeof PHASES[number]
const SERVING = PHASES.indexOf('serving')
const DRAINING = PHASES.indexOf('draining')

/** Wall-clock-anchored monotonic milliseconds, comparable across threads. */
export function nowMs (): number {
  return performance.timeOrigin + performance.now()
}

export class SharedState {
  readonly buffer: SharedArrayBuffer
  readonly #i32: Int32Array
  readonly #t64: BigInt64Array

  constructor (buffer?: SharedArrayBuffer) {
    this.buffer = buffer ?? new SharedArrayBuffer(INT_SLOTS * 4 + TIME_SLOTS * 8)
    this.#t64 = new BigInt64Array(this.buffer, 0, TIME_SLOTS)
    this.#i32 = new Int32Array(this.buffer, TIME_SLOTS * 8, INT_SLOTS)
  }

  get (slot: number): number { return Atomics.load(this.#i32, slot) }
  set (slot: number, value: number): void { Atomics.store(this.#i32, slot, value | 0) }
  flag (slot: number): boolean { return Atomics.load(this.#i32, slot) !== 0 }

  /** A time slot in milliseconds (0 = never). */
  time (slot: number): number { return Number(Atomics.load(this.#t64, slot)) / 1000 }
  setTime (slot: number, ms: number): void { Atomics.store(this.#t64, slot, BigInt(Math.round(ms * 1000))) }

  beat (): void { this.setTime(T.HEARTBEAT, nowMs()) }
  /** Milliseconds since the main thread's last heartbeat. */
  heartbeatAge (now = nowMs()): number { return now - this.time(T.HEARTBEAT) }

  get phase (): Phase { return PHASES[this.get(S.PHASE)] ?? 'serving' }

  /**
   * Serving → draining, from the lane the moment it accepts a drain request: readiness fails at once, before the
   * main thread has even read the request. A phase the drain has already moved past is kept.
   */
  drainAccepted (now = nowMs()): void {
    if (Atomics.compareExchange(this.#i32, S.PHASE, SERVING, DRAINING) === SERVING && this.time(T.DRAIN_STARTED) === 0) this.setTime(T.DRAIN_STARTED, now)
  }
}

