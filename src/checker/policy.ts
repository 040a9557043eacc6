// What the checker may do where: the degrade switch (full, recover-only, off) scoped by service, cluster,
// organisation and environment, the
// service globs of the exclude and canary lists, the protection threshold's budget, and rendezvous (highest random
// weight) hashing of services over the live replicas. Pure functions; no I/O.
import { createHash } from 'node:crypto'
import { LABEL, SERVICE_NAME } from '../registry/types.js'

/** `full`: eject and recover; `recover-only` (half-degraded): recover, never eject; `off`: do nothing. */
export type Mode = 'full' | 'recover-only' | 'off'
export const MODES: readonly Mode[] = ['full', 'recover-only', 'off']

export function isMode (v: string): v is Mode {
  return (MODES as readonly string[]).includes(v)
}

/** The scope that sets the mode everywhere, in the run-time mode table. */
export const GLOBAL_SCOPE = '*'

/** Scope names: `*`, a service (SERVICE_NAME without its anchors), `service/cluster`, `org:NAME` or `env:NAME`. */
export const SCOPE = new RegExp(`^(\\*|${SERVICE_NAME.source.slice(1, -1)}(\\/[^\\s/]{1,253})?|(org|env):${LABEL.source.slice(1, -1)})$`)

/** The scope name of an organisation or an environment in the mode table. */
export function orgScope (org: string): string { return `org:${org}` }
export function envScope (env: string): string { return `env:${env}` }

/** The mode for a place, and the entry that decided it (`default`: DOORMAN_CHECK_MODE, no entry applies). */
export interface Decision { mode: Mode, scope: string }

/**
 * The run-time switch: scope → mode, as stored in the registry's Redis. The most specific scope wins
 * (`service/cluster`, then `service`, then the instance's `org:`, then its `env:`, then `*`), then the configured
 * default. An organisation is narrower than an environment: an org's services span its environments, while an
 * environment (prod, staging) spans every organisation.
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

  /** The mode for a service's cluster (of instances in `org` and `env`, empty when unlabelled). */
  for (service: string, cluster: string, org = '', env = ''): Mode {
    return this.decide(service, cluster, org, env).mode
  }

  /** The mode for a service's cluster and the entry that decided it. */
  decide (service: string, cluster: string, org = '', env = ''): Decision {
    const e = this.entries
    for (const scope of [`${service}/${cluster}`, service, org !== '' ? orgScope(org) : '', env !== '' ? envScope(env) : '', GLOBAL_SCOPE]) {
      if (scope === '') continue
      const m = e.get(scope)
      if (m !== undefined) return { mode: m, scope }
    }
    return { mode: this.fallback, scope: 'default' }
  }

  /**
   * True when some cluster of the service may be checked (the service or one of its clusters is not off). Without a
   * service entry, an org or env entry that is not off may apply to its instances: those are looked at one by one.
   */
  anyOn (service: string): boolean {
    const own = this.entries.get(service)
    if (own !== undefined ? own !== 'off' : this.global !== 'off') return true
    for (const [scope, mode] of this.entries) {
      if (mode === 'off') continue
      if (scope.startsWith(`${service}/`)) return true
      if (own === undefined && (scope.startsWith('org:') || scope.startsWith('env:'))) return true
    }
    return false
  }
}

/** A service's labels, as a selector by org or env sees them. */
export interface Labels { org: string, env: string }

/**
 * A selector of services: service-name globs (`pay-*`) and, with an `org:` or `env:` prefix, globs of the service's
 * organisation or environment (`org:finance`). A service matches when any entry does.
 */
export function serviceSelector (entries: readonly string[]): (service: string, labels?: Labels) => boolean {
  const names = globMatcher(entries.filter((e) => !e.includes(':')))
  const orgs = globMatcher(entries.filter((e) => e.startsWith('org:')).map((e) => e.slice(4)))
  const envs = globMatcher(entries.filter((e) => e.startsWith('env:')).map((e) => e.slice(4)))
  return (service, labels) => names(service) || (labels !== undefined && ((labels.org !== '' && orgs(labels.org)) || (labels.env !== '' && envs(labels.env))))
}

/** True when a selector has org: or env: entries (it needs the services' labels). */
export function needsLabels (entries: readonly string[]): boolean {
  return entries.some((e) => e.startsWith('org:') || e.startsWith('env:'))
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
