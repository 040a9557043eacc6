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
  /** 1 when the app registers itself in a registry of its own (DOORMAN_APP_REGISTRY): readiness waits for it. */
  APP_REGISTRY_REQUIRED: 26,
  /** 1 once the app has registered what it must there (a latch: it never turns back to 0). */
  APP_REGISTERED: 27,
  /** Connections to the registry's store: for commands, and for subscriptions. */
  REGISTRY_CONNECTIONS: 28,
  REGISTRY_SUBSCRIBER_CONNECTIONS: 29,
  /** 1 while the app's registry is reachable. */
  APP_REGISTRY_UP: 30,
  /** With mTLS on: 0 while doorman holds a usable certificate, else 1 + the problem's index in TLS_PROBLEMS. */
  TLS: 31,
  /** The heaviest flows' text (see setFlows): a sequence number, odd while it is written, and its length in bytes. */
  FLOWS_SEQ: 32,
  FLOWS_LEN: 33
} as const

const INT_SLOTS = 40
/** BigInt64 slots (microseconds since the epoch, from performance.timeOrigin + performance.now()). */
export const T = {
  HEARTBEAT: 0,
  DRAIN_STARTED: 1,
  REGISTERED_AT: 2,
  /** When the app's liveness check started failing (0 = not failing). */
  APP_LIVE_FAILING_SINCE: 3,
  /** When the app's own registration was first complete (DOORMAN_APP_REGISTRY). */
  APP_REGISTERED_AT: 4
} as const
const TIME_SLOTS = 8
/** Bytes for the heaviest flows, as JSON (/state `flows`): ten flows with keys of at most 128 characters fit. */
export const FLOWS_BYTES = 4096

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
  readonly #flows: Uint8Array

  constructor (buffer?: SharedArrayBuffer) {
    this.buffer = buffer ?? new SharedArrayBuffer(INT_SLOTS * 4 + TIME_SLOTS * 8 + FLOWS_BYTES)
    this.#t64 = new BigInt64Array(this.buffer, 0, TIME_SLOTS)
    this.#i32 = new Int32Array(this.buffer, TIME_SLOTS * 8, INT_SLOTS)
    this.#flows = new Uint8Array(this.buffer, TIME_SLOTS * 8 + INT_SLOTS * 4, FLOWS_BYTES)
  }

  /**
   * The heaviest flows as JSON text (main thread). A sequence number odd while the bytes are written lets the lane
   * thread tell a torn read and try again. Text longer than the region is not written (false).
   */
  setFlows (json: string): boolean {
    const bytes = Buffer.from(json)
    if (bytes.length > FLOWS_BYTES) return false
    Atomics.add(this.#i32, S.FLOWS_SEQ, 1)
    this.#flows.set(bytes)
    Atomics.store(this.#i32, S.FLOWS_LEN, bytes.length)
    Atomics.add(this.#i32, S.FLOWS_SEQ, 1)
    return true
  }

  /** The heaviest flows' JSON text (lane thread); '' when none was written or no steady copy could be read. */
  flows (): string {
    for (let i = 0; i < 8; i++) {
      const seq = Atomics.load(this.#i32, S.FLOWS_SEQ)
      if ((seq & 1) === 1) continue
      const len = Math.min(FLOWS_BYTES, Atomics.load(this.#i32, S.FLOWS_LEN))
      const copy = this.#flows.slice(0, len)
      if (Atomics.load(this.#i32, S.FLOWS_SEQ) === seq) return Buffer.from(copy.buffer, 0, len).toString()
    }
    return ''
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

