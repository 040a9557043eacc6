// The concurrency limiter: an in-flight count under a limit, then bounded FIFO queues (one per priority class)
// with a shared wait timeout. It knows nothing of HTTP: callers acquire, and release when the app has answered.
import { FixedLimit, type LimitAlgorithm } from './algorithm.js'
import { FairQueue, Fifo, ShedTally, type FlowWaiter } from './fair.js'

export { FairQueue, Fifo, ShedTally } from './fair.js'

export { FixedLimit, type LimitAlgorithm } from './algorithm.js'

export const CRITICAL = 0
export const NORMAL = 1
export const LOW = 2
export type Priority = typeof CRITICAL | typeof NORMAL | typeof LOW

export type ShedReason = 'queue-full' | 'queue-timeout' | 'low-priority' | 'draining-closed' | 'warmup' | 'flow-share'

/** Called once a queued request is granted a slot (null) or shed (the reason). */
export type GrantCallback = (reason: ShedReason | null) => void

export interface Timers {
  now: () => number
  setTimeout: (fn: () => void, ms: number) => unknown
  clearTimeout: (handle: unknown) => void
}

const realTimers: Timers = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => { const t = setTimeout(fn, ms); t.unref(); return t },
  clearTimeout: (h) => { clearTimeout(h as NodeJS.Timeout) }
}

export interface LimiterOptions {
  /** The limit algorithm; a FixedLimit of `limit` when absent. */
  algorithm?: LimitAlgorithm
  limit?: number
  maxQueue: number
  /** Longest wait in the queue, in milliseconds. */
  queueTimeout: number
  /** Percent of the limit that only critical requests may use (0 = none reserved). */
  criticalReserve?: number
  timers?: Timers
  /** Told how long each queued request waited, in milliseconds, when it is granted a slot or shed. */
  onQueueWait?: (ms: number) => void
  /**
   * Fair queuing across flows (DOORMAN_FAIRNESS=flow): within each priority class, queued requests are served
   * round-robin across their flows, and a full queue sheds the newest request of the flow holding the most of it
   * (fair.ts). False: one FIFO per class, a full queue sheds the newcomer.
   */
  fairness?: boolean
}

/** A class's queue: FIFO, or fair across flows. */
type WaitQueue = Fifo<Waiter> | FairQueue<Waiter>

const QUEUED = 0
const GRANTED = 1
const SHED = 2
const CANCELLED = 3

const SETTLED: GrantCallback = () => {}

export class Waiter implements FlowWaiter {
  state = QUEUED
  #cb: GrantCallback
  constructor (readonly priority: Priority, readonly deadline: number, cb: GrantCallback, readonly flow = '') { this.#cb = cb }
  get waiting (): boolean { return this.state === QUEUED }
  /**
   * Runs the callback once and lets go of it: a waiter that left one queue may stay a while in another's lazily
   * dropped entries (fair queuing's arrival order), and must not keep its request alive there.
   */
  settle (reason: ShedReason | null): void {
    const cb = this.#cb
    this.#cb = SETTLED
    cb(reason)
  }

  /** Lets go of the callback without running it (a cancelled waiter). */
  forget (): void { this.#cb = SETTLED }
}

export class Limiter {
  #algorithm: LimitAlgorithm
  #scale = 1
  #effective = 1
  #nonCritical = 1
  #reserve: number
  #inflight = 0
  #queued = 0
  #queuedByPriority = [0, 0, 0]
  /** The order queued requests are served in, per class. */
  readonly #queues: [WaitQueue, WaitQueue, WaitQueue]
  /** Queued requests in arrival order (= deadline order), per class: the same FIFO when fairness is off. */
  readonly #arrivals: [Fifo<Waiter>, Fifo<Waiter>, Fifo<Waiter>]
  readonly #fair: boolean
  /** Sheds by flow, for the heaviest flows in /state (bounded). */
  readonly #shedByFlow = new ShedTally(32)
  readonly #maxQueue: number
  readonly #queueTimeout: number
  readonly #timers: Timers
  readonly #onQueueWait: ((ms: number) => void) | undefined
  #timer: unknown = null
  #timerAt = Infinity
  /** Counters for metrics; read, never reset. */
  readonly stats = { shed: { 'queue-full': 0, 'queue-timeout': 0, 'low-priority': 0, warmup: 0, 'flow-share': 0 } as Record<string, number>, limitChanges: 0 }
  /** Called whenever the effective limit changes. */
  onLimitChange: ((limit: number) => void) | null = null

  constructor (opts: LimiterOptions) {
    this.#algorithm = opts.algorithm ?? new FixedLimit(opts.limit ?? 100)
    this.#maxQueue = opts.maxQueue
    this.#queueTimeout = opts.queueTimeout
    this.#reserve = opts.criticalReserve ?? 0
    this.#timers = opts.timers ?? realTimers
    this.#onQueueWait = opts.onQueueWait
    this.#fair = opts.fairness === true
    if (this.#fair) {
      this.#queues = [new FairQueue(), new FairQueue(), new FairQueue()]
      this.#arrivals = [new Fifo(), new Fifo(), new Fifo()]
    } else {
      const fifos: [Fifo<Waiter>, Fifo<Waiter>, Fifo<Waiter>] = [new Fifo(), new Fifo(), new Fifo()]
      this.#queues = fifos
      this.#arrivals = fifos
    }
    this.#recompute()
  }

  get inflight (): number { return this.#inflight }
  get queued (): number { return this.#queued }
  /** The limit in force now (the algorithm's limit scaled by the warmup/drain factor). */
  get limit (): number { return this.#effective }
  /** The algorithm's own limit, before scaling. */
  get baseLimit (): number { return this.#algorithm.limit }
  get algorithm (): LimitAlgorithm { return this.#algorithm }
  get scale (): number { return this.#scale }
  /** Whether queued requests are served fairly across flows. */
  get fair (): boolean { return this.#fair }

  /**
   * The flows holding the most of the queue, heaviest first, with their sheds (the most-shed flows follow when fewer
   * than `n` wait). Bounded: at most `n` entries, from structures bounded by the queue and a fixed-size tally.
   */
  topFlows (n = 10): Array<{ flow: string, queued: number, shed: number }> {
    const queued = new Map<string, number>()
    for (const q of this.#queues) {
      if (q instanceof FairQueue) for (const f of q.top(n)) queued.set(f.flow, (queued.get(f.flow) ?? 0) + f.queued)
    }
    const shed = this.#shedByFlow.top(n)
    const sheds = new Map(shed.map((f) => [f.flow, f.count]))
    const out = [...queued].map(([flow, q]) => ({ flow, queued: q, shed: sheds.get(flow) ?? 0 }))
    out.sort((a, b) => b.queued - a.queued || b.shed - a.shed)
    for (const f of shed) {
      if (out.length >= n) break
      if (!queued.has(f.flow)) out.push({ flow: f.flow, queued: 0, shed: f.count })
    }
    return out.slice(0, n)
  }

  /** Sets a static limit (replaces the algorithm's value when it is a FixedLimit). */
  setLimit (limit: number): void {
    if (this.#algorithm instanceof FixedLimit) this.#algorithm.set(limit)
    else this.#algorithm = new FixedLimit(limit)
    this.#recompute()
  }

  /** Scales the limit by a factor in (0, 1] (warmup ramp); the result is never below 1. */
  setScale (factor: number): void {
    this.#scale = Math.min(1, Math.max(0, factor))
    this.#recompute()
  }

  #recompute (): void {
    const before = this.#effective
    const eff = Math.max(1, Math.floor(this.#algorithm.limit * this.#scale))
    this.#effective = eff
    this.#nonCritical = this.#reserve > 0 ? Math.max(1, eff - Math.ceil(eff * this.#reserve / 100)) : eff
    if (eff !== before) {
      this.stats.limitChanges++
      this.onLimitChange?.(eff)
    }
    if (eff > before) this.#grant()
  }

  #cap (p: Priority): number { return p === CRITICAL ? this.#effective : this.#nonCritical }

  /**
   * The reason a shed gives. While the warmup ramp holds the limit below the algorithm's own, a shed the unscaled
   * limit would have had a free slot for (in flight below the request's cap at the base limit) was caused by the
   * ramp, not by the app's load: it says `warmup`. `draining-closed` is never the ramp's.
   */
  #reason (reason: ShedReason, p: Priority): ShedReason {
    if (reason === 'draining-closed' || this.#effective >= this.#algorithm.limit) return reason
    const base = this.#algorithm.limit
    const cap = p !== CRITICAL && this.#reserve > 0 ? Math.max(1, base - Math.ceil(base * this.#reserve / 100)) : base
    return this.#inflight < cap ? 'warmup' : reason
  }

  /** Counts a shed returned from acquire(), under the reason it gives. */
  #shedNow (reason: ShedReason, p: Priority, flow: string): ShedReason {
    const r = this.#reason(reason, p)
    this.stats.shed[r] = (this.stats.shed[r] ?? 0) + 1
    if (this.#fair) this.#shedByFlow.add(flow)
    return r
  }

  /**
   * Asks for a slot. Returns true when granted at once (the caller must call release()), a ShedReason when the
   * request is shed at once, or a Waiter whose callback runs later with null (granted) or a reason (shed).
   */
  acquire (priority: Priority, cb: GrantCallback, flow = ''): true | ShedReason | Waiter {
    if (this.#inflight < this.#cap(priority) && this.#noneWaitingAtOrAbove(priority)) {
      this.#inflight++
      return true
    }
    if (priority === LOW && (this.#queuedByPriority[CRITICAL] + this.#queuedByPriority[NORMAL] > 0 || this.#queued >= this.#maxQueue)) {
      return this.#shedNow('low-priority', LOW, flow)
    }
    if (this.#queued >= this.#maxQueue) {
      // Make room by shedding the newest low-priority waiter: low requests go first under pressure. A critical
      // request may also displace the newest normal one: core business is served before the rest. With fairness,
      // the newest of the heaviest flow's.
      let victim = this.#queues[LOW].evict()
      let reason: ShedReason = 'low-priority'
      if (victim === undefined && priority === CRITICAL) {
        victim = this.#queues[NORMAL].evict()
        reason = 'queue-full'
      }
      if (victim === undefined) {
        const q = this.#queues[priority]
        if (!(q instanceof FairQueue)) return this.#shedNow('queue-full', priority, flow)
        // Within the class: a flow holding more of the queue than the newcomer's gives up its newest request; when
        // the newcomer's own flow is the heaviest, the newcomer is shed (over its share, if other flows wait).
        const own = q.countOf(flow)
        if (q.heaviestCount <= own) return this.#shedNow(q.flows > (own > 0 ? 1 : 0) ? 'flow-share' : 'queue-full', priority, flow)
        victim = q.evict()
        reason = 'flow-share'
      }
      if (victim === undefined) return this.#shedNow('queue-full', priority, flow)
      this.#shed(victim, reason)
    }
    const w = new Waiter(priority, this.#timers.now() + this.#queueTimeout, cb, flow)
    this.#queues[priority].push(w)
    if (this.#fair) this.#arrivals[priority].push(w)
    this.#queued++
    this.#queuedByPriority[priority]++
    if (w.deadline < this.#timerAt) this.#arm(w.deadline)
    return w
  }

  /** Removes a waiter that no longer wants its slot (its client went away). No callback runs. */
  cancel (w: Waiter): void {
    if (w.state !== QUEUED) return
    w.state = CANCELLED
    w.forget()
    this.#queued--
    this.#queuedByPriority[w.priority]--
    this.#queues[w.priority].left(w)
  }

  /**
   * Frees a slot. `rttMs` is the app's own latency for the request (negative when there is no sample: a client
   * abort); `dropped` marks an app failure (5xx, timeout), a congestion signal for adaptive limits; `sentInflight`
   * is the in-flight count when the request was sent (this one included), the current count when absent.
   */
  release (rttMs = -1, dropped = false, sentInflight = this.#inflight): void {
    this.#inflight--
    if (rttMs >= 0 || dropped) {
      const before = this.#algorithm.limit
      // The algorithm reasons about its own, unscaled limit: a warmup ramp at 50% running full is a full limit.
      const inflight = this.#scale > 0 && this.#scale < 1 ? sentInflight / this.#scale : sentInflight
      this.#algorithm.update(this.#timers.now(), rttMs, inflight, dropped)
      if (this.#algorithm.limit !== before) this.#recompute()
    }
    this.#grant()
  }

  #noneWaitingAtOrAbove (p: Priority): boolean {
    const q = this.#queuedByPriority
    return p === CRITICAL ? q[CRITICAL] === 0 : p === NORMAL ? q[CRITICAL] + q[NORMAL] === 0 : this.#queued === 0
  }

  #grant (): void {
    while (this.#queued > 0) {
      let w = this.#queues[CRITICAL].peek()
      if (w === undefined || this.#inflight >= this.#effective) {
        if (this.#inflight >= this.#nonCritical) return
        w = this.#queues[NORMAL].peek() ?? this.#queues[LOW].peek()
        if (w === undefined) return
      }
      this.#queues[w.priority].shift()
      this.#queued--
      this.#queuedByPriority[w.priority]--
      w.state = GRANTED
      this.#inflight++
      this.#waited(w)
      w.settle(null)
    }
  }

  #shed (w: Waiter, reason: ShedReason): void {
    w.state = SHED
    this.#queued--
    this.#queuedByPriority[w.priority]--
    this.#waited(w)
    const r = this.#reason(reason, w.priority)
    this.stats.shed[r] = (this.stats.shed[r] ?? 0) + 1
    if (this.#fair) this.#shedByFlow.add(w.flow)
    w.settle(r)
  }

  #waited (w: Waiter): void {
    this.#onQueueWait?.(this.#timers.now() - (w.deadline - this.#queueTimeout))
  }

  #arm (at: number): void {
    if (this.#timer !== null) this.#timers.clearTimeout(this.#timer)
    this.#timerAt = at
    this.#timer = this.#timers.setTimeout(() => { this.#expire() }, Math.max(0, at - this.#timers.now()) + 1)
  }

  #expire (): void {
    this.#timer = null
    this.#timerAt = Infinity
    const now = this.#timers.now()
    let next = Infinity
    for (let p = CRITICAL; p <= LOW; p++) {
      const a = this.#arrivals[p]
      const q = this.#queues[p]
      for (let w = a.peek(); w !== undefined; w = a.peek()) {
        if (w.deadline > now) { if (w.deadline < next) next = w.deadline; break }
        a.shift()
        if (a !== q) q.left(w)
        this.#shed(w, 'queue-timeout')
      }
    }
    if (next !== Infinity) this.#arm(next)
  }

  /** Sheds every queued request (drain's closing phase). */
  shedAll (reason: ShedReason): void {
    for (const q of this.#queues) {
      for (let w = q.shift(); w !== undefined; w = q.shift()) this.#shed(w, reason)
    }
  }
}

/** Compiles comma-separated path globs (`*` matches any run of characters) into one matcher. */
export function compileGlobs (globs: readonly string[]): ((path: string) => boolean) | null {
  if (globs.length === 0) return null
  const src = globs.map((g) => '^' + g.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*') + '$').join('|')
  const re = new RegExp(src)
  return (path) => re.test(path)
}

/** Sorts a request path into a priority class. */
export function classifier (critical: readonly string[], low: readonly string[]): (path: string) => Priority {
  const isCritical = compileGlobs(critical)
  const isLow = compileGlobs(low)
  if (isCritical === null && isLow === null) return () => NORMAL
  return (url) => {
    const q = url.indexOf('?')
    const path = q === -1 ? url : url.slice(0, q)
    if (isCritical?.(path) === true) return CRITICAL
    if (isLow?.(path) === true) return LOW
    return NORMAL
  }
}
