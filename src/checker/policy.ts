// What the checker may do where: the degrade switch (full, recover-only, off) scoped by service and cluster, the
// service globs of the exclude and canary lists, the protection threshold's budget, and rendezvous (highest random
// weight) hashing of services over the live replicas. Pure functions; no I/O.
import { createHash } from 'node:crypto'
import { SERVICE_NAME } from '../registry/types.js'

/** `full`: eject and recover; `recover-only` (half-degraded): recover, never eject; `off`: do nothing. */
export type Mode = 'full' | 'recover-only' | 'off'
export const MODES: readonly Mode[] = ['full', 'recover-only', 'off']

export function isMode (v: string): v is Mode {
  return (MODES as readonly string[]).includes(v)
}

/** The scope that sets the mode everywhere, in the run-time mode table. */
export const GLOBAL_SCOPE = '*'

/** Scope names: `*`, a service (SERVICE_NAME without its anchors), or `service/cluster`. */
export const SCOPE = new RegExp(`^(\\*|${SERVICE_NAME.source.slice(1, -1)}(\\/[^\\s/]{1,253})?)$`)

/**
 * The run-time switch: scope → mode, as stored in the registry's Redis. The most specific scope wins
 * (`service/cluster`, then `service`, then `*`), then the configured default.
 */
export class ModeTable {
  readonly fallback: Mode
  readonly entries: ReadonlyMap<string, Mode>

  constructor (fallback: Mode, entries: ReadonlyMap<string, Mode> = new Map()) {
    this.fallback = fallback
    this.entries = entries
  }

  /** A table from a raw field → value map; values that are not modes are skipped and returned in `bad`. */
  static parse (fallback: Mode, raw: Record<string, string>): { table: ModeTable, bad: string[] } {
    const entries = new Map<string, Mode>()
    const bad: string[] = []
    for (const [scope, value] of Object.entries(raw)) {
      if (isMode(value) && SCOPE.test(scope)) entries.set(scope, value)
      else bad.push(`${scope}=${value}`)
    }
    return { table: new ModeTable(fallback, entries), bad }
  }

  /** The mode everywhere unless a service or cluster says otherwise. */
  get global (): Mode { return this.entries.get(GLOBAL_SCOPE) ?? this.fallback }

  /** The mode for a service's cluster. */
  for (service: string, cluster: string): Mode {
    return this.entries.get(`${service}/${cluster}`) ?? this.entries.get(service) ?? this.global
  }

  /** True when some cluster of the service may be checked (the service or one of its clusters is not off). */
  anyOn (service: string): boolean {
    if (this.entries.get(service) !== undefined ? this.entries.get(service) !== 'off' : this.global !== 'off') return true
    for (const [scope, mode] of this.entries) if (mode !== 'off' && scope.startsWith(`${service}/`)) return true
    return false
  }
}

/** A service-name glob (`*` any run of characters, `?` one) as a matcher. */
export function globMatcher (globs: readonly string[]): (name: string) => boolean {
  if (globs.length === 0) return () => false
  const source = globs.map((g) => g.split('').map((c) => c === '*' ? '.*' : c === '?' ? '.' : c.replace(/[.+^${}()|[\]\\-]/g, '\\$&')).join('')).join('|')
  const re = new RegExp(`^(?:${source})$`)
  return (name) => re.test(name)
}

/** The protection threshold's budget, shared with the data path: src/protection. */
export { ejectBudget } from '../protection/index.js'

/** A replica's weight for a service in rendezvous hashing: 48 bits of SHA-1 over both names. */
export function weight (replica: string, service: string): number {
  return createHash('sha1').update(replica).update('\n').update(service).digest().readUIntBE(0, 6)
}

/**
 * The replica that owns a service: the one with the highest weight (ties broken by name). When a replica joins or
 * leaves, only the services it wins or held move; everything else stays where it was.
 */
export function owner (service: string, replicas: readonly string[]): string | undefined {
  let best: string | undefined
  let bestWeight = -1
  for (const r of replicas) {
    const w = weight(r, service)
    if (w > bestWeight || (w === bestWeight && best !== undefined && r < best)) { best = r; bestWeight = w }
  }
  return best
}
