// What every check module shares: a probe's outcome, where it probes, the module interface (index.ts holds the
// table of modules; each module imports only this, so the table and its modules import no cycle).
import type { CheckSpec } from '../../check/spec.js'

/** `ok`; `timeout`: no answer in time; `refused`: connection refused; `status`: a non-2xx answer; `error`: anything else. */
export type ProbeOutcome = 'ok' | 'timeout' | 'refused' | 'status' | 'error'
export const OUTCOMES: readonly ProbeOutcome[] = ['ok', 'timeout', 'refused', 'status', 'error']

/** One probe's verdict: `ok`, or why not (`timeout`, `refused`, `status`: the check answered unhealthy, `error`). */
export interface CheckOutcome { outcome: ProbeOutcome, detail: string }

/** Where to probe, and for how long at most (connect included). */
export interface CheckCall { host: string, port: number, timeout: number }

export interface CheckModule<S extends CheckSpec = CheckSpec> {
  readonly type: S['type']
  /** One probe; never throws. */
  probe: (spec: S, call: CheckCall) => Promise<CheckOutcome>
  /** Closes connections kept between rounds. */
  close: () => Promise<void>
}

/** An error's code (undici wraps the socket's in `cause`). */
export function errorCode (err: unknown): string {
  const e = err as { code?: string, cause?: { code?: string }, name?: string }
  return e?.cause?.code ?? e?.code ?? e?.name ?? 'error'
}
