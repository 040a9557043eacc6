// Limit algorithms behind one interface. Time and samples come in as arguments, so each is tested without waiting.

export interface LimitAlgorithm {
  /** The current limit, at least 1. */
  readonly limit: number
  /**
   * One completed request: `now` in milliseconds, the app's own latency `rttMs` (negative: no latency sample),
   * the in-flight count when it was sent, and whether the app failed it (5xx, timeout): a drop signal.
   */
  update (now: number, rttMs: number, inflight: number, dropped: boolean): void
}

/** A static limit (DOORMAN_LIMIT_MODE=static). */
export class FixedLimit implements LimitAlgorithm {
  #limit: number
  constructor (limit: number) { this.#limit = Math.max(1, Math.floor(limit)) }
  get limit (): number { return this.#limit }
  set (limit: number): void { this.#limit = Math.max(1, Math.floor(limit)) }
  update (): void {}
}
