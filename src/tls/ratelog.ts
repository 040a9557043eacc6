// A log line at a bounded rate: the first of a kind at once, then at most one per window with how many were not logged.
import type { Logger } from '../core/log.js'

export class RateLog {
  readonly #log: Logger
  readonly #windowMs: number
  readonly #last = new Map<string, { at: number, skipped: number }>()

  constructor (log: Logger, windowMs = 10_000) {
    this.#log = log
    this.#windowMs = windowMs
  }

  warn (kind: string, obj: Record<string, unknown>, msg: string): void {
    const now = performance.now()
    const e = this.#last.get(kind)
    if (e !== undefined && now - e.at < this.#windowMs) { e.skipped++; return }
    this.#log.warn({ ...obj, kind, suppressed: e?.skipped ?? 0 }, msg)
    this.#last.set(kind, { at: now, skipped: 0 })
  }
}
