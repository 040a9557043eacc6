// Check types: one module per type behind one interface. The Prober hands a target with a check definition (spec.ts)
// to the module of its type; a target without one keeps the default (the lane's /readyz, or a TCP connect).
//
// Adding a type (say `thrift`) is: its definition in spec.ts (type name, fields, short form), one module here that
// implements CheckModule, and one line in checkModules() below. Nothing else in the checker knows the types.
import type { CheckSpec, CheckType } from '../spec.js'
import type { ProbeOutcome } from '../prober.js'
import { HttpCheckModule } from './http.js'
import { TcpCheckModule } from './tcp.js'
import { GrpcCheckModule } from './grpc.js'

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

export interface CheckModulesOptions {
  /** How long an idle connection is kept for the next round, ms. */
  keepAlive: number
}

/** The built-in check types, by name. */
export function checkModules (opts: CheckModulesOptions): Map<CheckType, CheckModule> {
  // Each module is only ever handed definitions of its own type (the Prober looks them up by `type`).
  const mods = [
    new HttpCheckModule(opts),
    new TcpCheckModule(),
    new GrpcCheckModule(opts)
  ] as unknown as CheckModule[]
  return new Map(mods.map((m) => [m.type, m]))
}

/** An error's code (undici wraps the socket's in `cause`). */
export function errorCode (err: unknown): string {
  const e = err as { code?: string, cause?: { code?: string }, name?: string }
  return e?.cause?.code ?? e?.code ?? e?.name ?? 'error'
}
