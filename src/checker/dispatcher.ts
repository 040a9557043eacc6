// The Dispatcher: reads the names in the registry's service set, keeps the ones this replica owns through a chain of
// service filters (excluded globs, canary group, rendezvous owner, degrade switch), keeps a live view of each owned
// service (the registry's watch: pushed changes plus a periodic resync), and turns its instances into probe targets
// through a chain of instance filters (not starting or draining, an address to probe, the cluster's mode not off).
// Filters are plain objects in arrays: adding or removing a rule is one line where the chain is built.
//
// A round costs the store one read of the names, whatever their number: owners are computed once per ring (not per
// round), the count of each owned service is its live view's size (kept up by pushed changes, not asked for), and
// names whose last instance is gone are taken out of the set by their owner, so the set does not grow for ever.
import type { Logger } from '../core/log.js'
import type { Instance, InstanceState, Registry, Watch } from '../registry/types.js'
import { owner, serviceSelector, type Labels, type ModeTable } from './policy.js'
import type { Target } from './prober.js'

/** What a round knows when it dispatches. */
export interface RoundContext {
  /** This replica's id. */
  self: string
  /** The live replicas of this replica's group, sorted. */
  replicas: readonly string[]
  modes: ModeTable
  /** Services' org and env, for selectors by org (read only when a selector has org: or env: entries). */
  labels?: ReadonlyMap<string, Labels>
}

export interface ServiceFilter {
  name: string
  keep: (service: string, ctx: RoundContext) => boolean
  /** Called once a round with every name listed: a filter that caches per name forgets the others. */
  retain?: (services: readonly string[]) => void
}
export interface InstanceFilter { name: string, keep: (inst: Instance, ctx: RoundContext) => boolean }

/** Never checks services matching these globs (basic services such as databases, say), or these orgs (`org:…`). */
export function excludeFilter (globs: readonly string[]): ServiceFilter {
  const match = serviceSelector(globs)
  return { name: 'excluded', keep: (s, ctx) => !match(s, ctx.labels?.get(s)) }
}

/** The canary group checks only the canary services (by name, or by org: `org:finance`); the main group the rest. */
export function groupFilter (group: 'main' | 'canary', canary: readonly string[]): ServiceFilter {
  const match = serviceSelector(canary)
  return { name: 'group', keep: (s, ctx) => group === 'canary' ? match(s, ctx.labels?.get(s)) : !match(s, ctx.labels?.get(s)) }
}

/**
 * The services rendezvous hashing gives this replica among its group's live replicas. Each service's owner is
 * computed once and kept until the ring changes (a hash per replica per service: 10,000 services × 20 replicas is
 * 200,000 SHA-1s, too many to redo every round). `ownerOf` is for tests.
 */
export function ownerFilter (ownerOf: (service: string, replicas: readonly string[]) => string | undefined = owner): ServiceFilter {
  let ring: readonly string[] | null = null
  let ringKey = ''
  let self = ''
  const mine = new Map<string, boolean>()
  return {
    name: 'owner',
    keep: (s, ctx) => {
      if (ctx.replicas !== ring || ctx.self !== self) {
        const key = ctx.replicas.join('\n')
        if (key !== ringKey || ctx.self !== self) { mine.clear(); ringKey = key; self = ctx.self }
        ring = ctx.replicas
      }
      let m = mine.get(s)
      if (m === undefined) { m = ownerOf(s, ctx.replicas) === ctx.self; mine.set(s, m) }
      return m
    },
    retain: (services) => {
      if (mine.size <= services.length) return
      const keep = new Set(services)
      for (const s of mine.keys()) if (!keep.has(s)) mine.delete(s)
    }
  }
}

/** Services switched off (and all of whose clusters are off) are not watched at all. */
export function modeServiceFilter (): ServiceFilter {
  return { name: 'mode', keep: (s, ctx) => ctx.modes.anyOn(s) }
}

/**
 * Instances nobody sends traffic to are not worth a probe (the seed's first optimisation: skip disabled ones):
 * `starting` and `draining` are skipped; `ejected` ones are probed, to recover them.
 */
export function servingFilter (): InstanceFilter {
  const keep = new Set<InstanceState>(['up', 'warming', 'ejected'])
  return { name: 'serving', keep: (i) => keep.has(i.state) }
}

export function addressFilter (): InstanceFilter {
  return { name: 'address', keep: (i) => i.address !== '' && (i.adminPort > 0 || /:\d+$/.test(i.address) || i.check?.port !== undefined) }
}

export function modeInstanceFilter (): InstanceFilter {
  return { name: 'mode', keep: (i, ctx) => ctx.modes.for(i.service, i.cluster, i.org, i.env) !== 'off' }
}

/** Where the service names come from, and how a name with no instance left is taken out. */
export interface ServiceCatalog {
  serviceNames: () => Promise<string[]>
  pruneService: (service: string) => Promise<boolean>
}

export interface DispatcherOptions {
  registry: Registry
  /** Default: the registry's services (those with an instance), never pruned. */
  catalog?: ServiceCatalog
  serviceFilters: ServiceFilter[]
  instanceFilters: InstanceFilter[]
  log: Logger
  /** Longest wait for a new watch's first listing (default 2 s). */
  syncTimeout?: number
}

export interface Dispatch {
  /** The services this replica owns this round, sorted. */
  services: string[]
  /** Every instance of those services, filtered or not (for the instances-by-state gauge). */
  instances: Instance[]
  targets: Target[]
}

export class Dispatcher {
  readonly #registry: Registry
  readonly #catalog: ServiceCatalog
  readonly #serviceFilters: ServiceFilter[]
  readonly #instanceFilters: InstanceFilter[]
  readonly #log: Logger
  readonly #syncTimeout: number
  readonly #watches = new Map<string, Watch>()

  constructor (opts: DispatcherOptions) {
    this.#registry = opts.registry
    this.#catalog = opts.catalog ?? { serviceNames: async () => await opts.registry.services(), pruneService: async () => false }
    this.#serviceFilters = opts.serviceFilters
    this.#instanceFilters = opts.instanceFilters
    this.#log = opts.log
    this.#syncTimeout = opts.syncTimeout ?? 2000
  }

  /** The services kept by every service filter. */
  select (services: readonly string[], ctx: RoundContext): string[] {
    return services.filter((s) => this.#serviceFilters.every((f) => f.keep(s, ctx)))
  }

  /**
   * Reads the service names, updates the watches to the owned ones, takes out the owned ones with no instance left,
   * and returns this round's targets.
   */
  async dispatch (ctx: RoundContext, written?: ReadonlyMap<string, readonly Instance[]>): Promise<Dispatch> {
    const names = await this.#catalog.serviceNames()
    const ownedNames = this.select(names, ctx)
    for (const f of this.#serviceFilters) f.retain?.(names)
    const owned = new Set(ownedNames)
    for (const [s, w] of this.#watches) {
      if (!owned.has(s)) { w.close(); this.#watches.delete(s); this.#log.info({ service: s }, 'service left this replica\'s shard') }
    }
    const fresh: Watch[] = []
    for (const s of ownedNames) {
      if (this.#watches.has(s)) continue
      const w = this.#registry.watch(s)
      this.#watches.set(s, w)
      fresh.push(w)
      this.#log.info({ service: s }, 'service joined this replica\'s shard')
    }
    if (fresh.length > 0) {
      let timer: NodeJS.Timeout | undefined
      await Promise.race([
        Promise.all(fresh.map(async (w) => await w.ready)),
        new Promise((resolve) => { timer = setTimeout(resolve, this.#syncTimeout) })
      ])
      clearTimeout(timer)
    }
    const services: string[] = []
    const empty: string[] = []
    const instances: Instance[] = []
    const targets: Target[] = []
    for (const s of ownedNames) {
      const w = this.#watches.get(s)
      // Records written this round (static targets, publisher.ts): newer than what the view may have been told yet.
      const fresh = written?.get(s)
      // Listed and empty: the last instance is gone (a name not listed yet is kept: it is not known to be empty).
      if (w !== undefined && w.synced && w.view.size === 0 && fresh === undefined) { empty.push(s); continue }
      services.push(s)
      let all: Iterable<Instance> = w?.view.values() ?? []
      if (fresh !== undefined) {
        const ids = new Set(fresh.map((f) => f.id))
        all = [...[...all].filter((i) => !ids.has(i.id)), ...fresh]
      }
      for (const inst of all) {
        instances.push(inst)
        if (!this.#instanceFilters.every((f) => f.keep(inst, ctx))) continue
        targets.push({ service: inst.service, cluster: inst.cluster, id: inst.id, address: inst.address, adminPort: inst.adminPort, ejected: inst.ejected, instance: inst, ...(inst.check !== undefined ? { check: inst.check } : {}) })
      }
    }
    await Promise.all(empty.map(async (s) => { await this.#prune(s) }))
    return { services, instances, targets }
  }

  /** Takes an owned service with no instance left out of the service set, and stops watching it. */
  async #prune (service: string): Promise<void> {
    try {
      if (!await this.#catalog.pruneService(service)) return
    } catch (err) {
      this.#log.debug({ err, service }, 'could not prune an empty service; tried again next round')
      return
    }
    this.#watches.get(service)?.close()
    this.#watches.delete(service)
    this.#log.info({ service }, 'service has no instance left: taken out of the registry\'s service set')
  }

  /** The live view of an owned service once its first listing is in (undefined when not owned or not listed yet). */
  syncedView (service: string): ReadonlyMap<string, Instance> | undefined {
    const w = this.#watches.get(service)
    return w?.synced === true ? w.view : undefined
  }

  /** The live view of an owned service (undefined when not owned). */
  view (service: string): ReadonlyMap<string, Instance> | undefined {
    return this.#watches.get(service)?.view
  }

  close (): void {
    for (const w of this.#watches.values()) w.close()
    this.#watches.clear()
  }
}
