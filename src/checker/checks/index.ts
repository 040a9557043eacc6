// Check types: one module per type behind one interface. The Prober hands a target with a check definition (spec.ts)
// to the module of its type; a target without one keeps the default (the lane's /readyz, or a TCP connect).
//
// Adding a type (say `thrift`) is: its definition in spec.ts (type name, fields, short form), one module here that
// implements CheckModule, and one line in checkModules() below. Nothing else in the checker knows the types.
import type { CheckType } from '../spec.js'
import { HttpCheckModule } from './http.js'
import { TcpCheckModule } from './tcp.js'
import { GrpcCheckModule } from './grpc.js'
import type { CheckModule } from './types.js'

export { errorCode, OUTCOMES, type CheckCall, type CheckModule, type CheckOutcome, type ProbeOutcome } from './types.js'

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

