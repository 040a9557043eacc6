// The outbound lane's retry budget, per service (Linkerd's retry budget, Envoy's `retry_budget`): a retry is allowed
// only while the retries of the last 10 s stay within DOORMAN_RETRY_BUDGET percent of the requests of the same 10 s,
// plus DOORMAN_RETRY_MIN_PER_SECOND for each second of it (so a service called rarely can still retry). When a whole
// service is overloaded, its callers' sidecars then add at most that share to its load, instead of doubling it.
//
// The window is a ring of one-second buckets of (requests, retries): O(1) per request, fixed memory. Time comes in
// through `now`, so the window is tested without waiting.

export interface RetryBudgetOptions {
  /** Retries allowed, in percent of the requests in the window. */
  percent: number
  /** Retries allowed per second of the window on top of the percentage. */
  minPerSecond: number
  /** The window, in milliseconds (default 10 s). */
  windowMs?: number
  /** Milliseconds, monotonic (default performance.now). */
  now?: () => number
}

const BUCKET_MS = 1000

export class RetryBudget {
  readonly #percent: number
  readonly #minPerSecond: number
  readonly #buckets: number
  readonly #requests: Float64Array
  readonly #retries: Float64Array
  readonly #now: () => number
  /** The bucket index (time / BUCKET_MS) last written. */
  #at: number
  /** When the budget started: the floor counts only the seconds the window has covered (at least one). */
  readonly #started: number
  #sumRequests = 0
  #sumRetries = 0
  /** Retries refused for the budget (read, never reset). */
  exhausted = 0

  constructor (opts: RetryBudgetOptions) {
    this.#percent = opts.percent
    this.#minPerSecond = opts.minPerSecond
    this.#buckets = Math.max(1, Math.round((opts.windowMs ?? 10_000) / BUCKET_MS))
    this.#requests = new Float64Array(this.#buckets)
    this.#retries = new Float64Array(this.#buckets)
    this.#now = opts.now ?? (() => performance.now())
    this.#started = this.#now()
    this.#at = Math.floor(this.#started / BUCKET_MS)
  }

  /** Counts a request (its first attempt). */
  request (): void {
    this.#advance()
    this.#requests[this.#at % this.#buckets]++
    this.#sumRequests++
  }

  /** Retries still allowed in the window now (may be fractional; a retry needs at least one). */
  get available (): number {
    const now = this.#now()
    this.#advance()
    const seconds = Math.min(this.#buckets, Math.max(1, (now - this.#started) / BUCKET_MS))
    return this.#sumRequests * this.#percent / 100 + this.#minPerSecond * seconds - this.#sumRetries
  }

  /** Takes a retry from the budget: true when allowed (and counted), false when the budget is spent. */
  tryRetry (): boolean {
    if (this.available < 1) { this.exhausted++; return false }
    this.#retries[this.#at % this.#buckets]++
    this.#sumRetries++
    return true
  }

  /** Moves the window to now: the buckets that fell out of it are emptied. */
  #advance (): void {
    const at = Math.floor(this.#now() / BUCKET_MS)
    if (at <= this.#at) return
    const steps = Math.min(at - this.#at, this.#buckets)
    for (let i = 1; i <= steps; i++) {
      const b = (this.#at + i) % this.#buckets
      this.#sumRequests -= this.#requests[b]
      this.#sumRetries -= this.#retries[b]
      this.#requests[b] = 0
      this.#retries[b] = 0
    }
    this.#at = at
  }
}
