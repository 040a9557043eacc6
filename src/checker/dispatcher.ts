// The Dispatcher: lists the registry's services, keeps the ones this replica owns through a chain of service
// filters (excluded globs, canary group, rendezvous owner, degrade switch), keeps a live view of each owned service
// (the registry's watch: pushed changes plus a periodic resync), and turns its instances into probe targets through a
// chain of instance filters (not starting or draining, an address to probe, the cluster's mode not off).
// Filters are plain objects in arrays: adding or removing a rule is one line where the chain is built.
import type { Logger } from '../core/log.js'
import type { Instance, InstanceState, Registry, Watch } from '../registry/types.js'
import { globMatcher, owner, type ModeTable } from './policy.js'
import type { Target } from './prober.js'

/** What a round knows when it dispatches. */
export interface RoundContext {
  /** This replica's id. */
  self: string
  /** The live replicas of this replica's group, sorted. */
  replicas: readonly string[]
  modes: ModeTable
}

export interface ServiceFilter { name: string, keep: (service: string, ctx: RoundContext) => boolean }
export interface InstanceFilter { name: string, keep: (inst: Instance, ctx: RoundContext) => boolean }

/** Never checks services matching these globs (basic services such as databases, say). */
export function excludeFilter (globs: readonly string[]): ServiceFilter {
  const match = globMatcher(globs)
  return { name: 'excluded', keep: (s) => !match(s) }
}

/** The canary group checks only the canary services; the main group checks everything else. */
export function groupFilter (group: 'main' | 'canary', canary: readonly string[]): ServiceFilter {
  const match = globMatcher(canary)
  return { name: 'group', keep: (s) => group === 'canary' ? match(s) : !match(s) }
}

/** The services rendezvous hashing gives this replica among its group's live replicas. */
export function ownerFilter (): ServiceFilter {
  return { name: 'owner', keep: (s, ctx) => owner(s, ctx.replicas) === ctx.self }
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
  return { name: 'address', keep: (i) => i.address !== '' && (i.adminPort > 0 || /:\d+$/.test(i.address)) }
}

export function modeInstanceFilter (): InstanceFilter {
  return { name: 'mode', keep: (i, ctx) => ctx.modes.for(i.service, i.cluster) !== 'off' }
}

export interface DispatcherOptions {
  registry: Registry
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
  readonly #serviceFilters: ServiceFilter[]
  readonly #instanceFilters: InstanceFilter[]
  readonly #log: Logger
  readonly #syncTimeout: number
  readonly #watches = new Map<string, Watch>()

  constructor (opts: DispatcherOptions) {
    this.#registry = opts.registry
    this.#serviceFilters = opts.serviceFilters
    this.#instanceFilters = opts.instanceFilters
    this.#log = opts.log
    this.#syncTimeout = opts.syncTimeout ?? 2000
  }

  /** The services kept by every service filter. */
  select (services: readonly string[], ctx: RoundContext): string[] {
    return services.filter((s) => this.#serviceFilters.every((f) => f.keep(s, ctx)))
  }

  /** Lists the services, updates the watches to the owned ones, and returns this round's targets. */
  async dispatch (ctx: RoundContext): Promise<Dispatch> {
    const services = this.select(await this.#registry.services(), ctx)
    const owned = new Set(services)
    for (const [s, w] of this.#watches) {
      if (!owned.has(s)) { w.close(); this.#watches.delete(s); this.#log.info({ service: s }, 'service left this replica\'s shard') }
    }
    const fresh: Watch[] = []
    for (const s of services) {
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
    const instances: Instance[] = []
    const targets: Target[] = []
    for (const s of services) {
      for (const inst of this.#watches.get(s)?.view.values() ?? []) {
        instances.push(inst)
        if (!this.#instanceFilters.every((f) => f.keep(inst, ctx))) continue
        targets.push({ service: inst.service, cluster: inst.cluster, id: inst.id, address: inst.address, adminPort: inst.adminPort, ejected: inst.ejected, instance: inst })
      }
    }
    return { services, instances, targets }
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
