// A discrete-event model of seed 001's app for the adaptive limit, run in simulated time: closed-loop clients →
// a limiter → an app whose hidden executor has `capacity` slots (it may change over time); requests beyond it wait
// in the app's FIFO, so the app's latency grows once its capacity is exceeded. Used by the simulation tests and by
// `bench/adaptive.ts --sim`. It drives any limiter with the Limiter's shape and knows nothing of its algorithm.

/** The limiter's timers, driven by the simulated clock. */
export interface Timers {
  now: () => number
  setTimeout: (fn: () => void, ms: number) => unknown
  clearTimeout: (handle: unknown) => void
}

/** What the model needs of a limiter (src/limiter's Limiter has this shape). */
export interface SimLimiter {
  readonly inflight: number
  readonly limit: number
  acquire: (priority: 0 | 1 | 2, cb: (reason: string | null) => void) => unknown
  release: (rttMs?: number, dropped?: boolean, sentInflight?: number) => void
}

interface Event { at: number, seq: number, fn: () => void, dead: boolean }

/** A clock with a binary-heap event queue: time jumps from event to event. */
export class SimClock implements Timers {
  #t = 0
  #seq = 0
  readonly #heap: Event[] = []
  now = (): number => this.#t
  setTimeout = (fn: () => void, ms: number): unknown => {
    const e = { at: this.#t + Math.max(0, ms), seq: this.#seq++, fn, dead: false }
    this.#push(e)
    return e
  }

  clearTimeout = (h: unknown): void => { (h as Event).dead = true }

  /** Runs every event due up to `until`, then sets the time to it. */
  run (until: number): void {
    while (this.#heap.length > 0 && this.#heap[0].at <= until) {
      const e = this.#pop()
      if (e.dead) continue
      this.#t = e.at
      e.fn()
    }
    this.#t = until
  }

  #push (e: Event): void {
    const h = this.#heap
    h.push(e)
    for (let i = h.length - 1; i > 0;) {
      const p = (i - 1) >> 1
      if (before(h[p], h[i])) break
      ;[h[p], h[i]] = [h[i], h[p]]
      i = p
    }
  }

  #pop (): Event {
    const h = this.#heap
    const top = h[0]
    const last = h.pop() as Event
    if (h.length > 0) {
      h[0] = last
      for (let i = 0; ;) {
        const l = 2 * i + 1
        const r = l + 1
        let m = i
        if (l < h.length && before(h[l], h[m])) m = l
        if (r < h.length && before(h[r], h[m])) m = r
        if (m === i) break
        ;[h[m], h[i]] = [h[i], h[m]]
        i = m
      }
    }
    return top
  }
}

function before (a: Event, b: Event): boolean { return a.at < b.at || (a.at === b.at && a.seq < b.seq) }

/** A seeded PRNG (mulberry32): the same seed, the same run. */
export function seeded (seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s + 0x6D2B79F5) >>> 0
    let x = s
    x = Math.imul(x ^ (x >>> 15), x | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

export interface AppModel {
  /** Executor slots at simulated time t (ms). */
  capacity: (t: number) => number
  /** Mean time a request holds a slot, ms (at simulated time t when a function). */
  serviceMs: number | ((t: number) => number)
  /** Spread of the service time: uniform ±spread/2 of the mean; 'exp' for exponential (coefficient of variation 1). */
  spread: number | 'exp'
  /** When set, the app answers 503 at once while this many requests already wait for a slot (a bounded queue). */
  rejectAbove?: number
  /** Share of requests answered 500 whatever the load (a bug, not overload). */
  errorRate?: number
}

export interface SimOptions {
  clock: SimClock
  limiter: SimLimiter
  app: AppModel
  /** Closed-loop clients: each sends its next request when the last one is answered (or 50 ms after a shed). */
  clients: number | ((t: number) => number)
  seconds: number
  /** Sampling period of the trace, ms. */
  every?: number
  seed?: number
  /** Extra state to record with each trace point (e.g. whether the algorithm is measuring its baseline). */
  probing?: () => boolean
  /** Called at each trace point, before it is recorded (e.g. to move a warmup ramp). */
  onTick?: (t: number) => void
}

/** One sample of the run; served, failed and shed are running totals. */
export interface TracePoint { t: number, limit: number, inflight: number, probing: boolean, served: number, failed: number, shed: number }

export interface SimResult {
  trace: TracePoint[]
  /** Requests answered by the app (ok and failed), shed by the limiter, and the app's own queue waits (ms). */
  served: number
  failed: number
  shed: number
  waits: number[]
}

/** Runs the model for `seconds` of simulated time. */
export function simulate (o: SimOptions): SimResult {
  const { clock, limiter, app } = o
  const rand = seeded(o.seed ?? 1)
  const queue: Array<() => void> = []
  const result: SimResult = { trace: [], served: 0, failed: 0, shed: 0, waits: [] }
  let busy = 0
  let active = 0

  const mean = typeof app.serviceMs === 'number' ? () => app.serviceMs as number : app.serviceMs
  const service = (): number => app.spread === 'exp'
    ? -mean(clock.now()) * Math.log(1 - rand())
    : mean(clock.now()) * (1 - app.spread / 2 + app.spread * rand())
  const pump = (): void => {
    while (busy < app.capacity(clock.now()) && queue.length > 0) (queue.shift() as () => void)()
  }
  const submit = (done: (status: number) => void): void => {
    if (app.rejectAbove !== undefined && queue.length >= app.rejectAbove) { clock.setTimeout(() => { done(503) }, 1); return }
    const enqueued = clock.now()
    queue.push(() => {
      busy++
      result.waits.push(clock.now() - enqueued)
      clock.setTimeout(() => {
        busy--
        done(app.errorRate !== undefined && rand() < app.errorRate ? 500 : 200)
        pump()
      }, service())
    })
    pump()
  }
  const clients = typeof o.clients === 'number' ? () => o.clients as number : o.clients
  const client = (): void => {
    if (active > clients(clock.now())) { active--; return }
    const go = (): void => {
      const sentInflight = limiter.inflight
      const sent = clock.now()
      submit((status) => {
        if (status >= 500) result.failed++
        else result.served++
        limiter.release(clock.now() - sent, status >= 500, sentInflight)
        clock.setTimeout(client, 0)
      })
    }
    const retry = (): void => { result.shed++; clock.setTimeout(client, 50) }
    const g = limiter.acquire(1, (reason) => { if (reason === null) go(); else retry() })
    if (g === true) go()
    else if (typeof g === 'string') retry()
  }
  const spawn = (): void => {
    while (active < clients(clock.now())) { active++; clock.setTimeout(client, rand() * 10) }
  }
  const every = o.every ?? 100
  for (let t = 0; t <= o.seconds * 1000; t += every) {
    spawn()
    clock.run(t)
    o.onTick?.(t)
    result.trace.push({ t, limit: limiter.limit, inflight: limiter.inflight, probing: o.probing?.() ?? false, served: result.served, failed: result.failed, shed: result.shed })
  }
  return result
}

/**
 * Whether the limit settled near `capacity` over [from, to] ms: the mean of every 5 s span ending in that interval
 * (baseline measurements left out) stays within `within` (0.2 = ±20%). Returns the worst span means seen.
 */
export function settled (trace: TracePoint[], capacity: number, from: number, to: number, within = 0.2): { ok: boolean, lo: number, hi: number } {
  const pts = trace.filter((p) => !p.probing && p.t <= to)
  let lo = Infinity
  let hi = -Infinity
  for (const p of pts) {
    if (p.t < from) continue
    const span = pts.filter((q) => q.t > p.t - 5000 && q.t <= p.t)
    const mean = span.reduce((a, q) => a + q.limit, 0) / span.length / capacity
    lo = Math.min(lo, mean)
    hi = Math.max(hi, mean)
  }
  return { ok: lo >= 1 - within && hi <= 1 + within, lo, hi }
}
