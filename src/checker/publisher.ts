// Publication of a read source's targets (targets.ts) into the registry: the replica that owns a file service writes
// one record per instance (`source: static`, state `up`, its cluster, org, env and check), keeps it alive with the
// registry's TTL, and removes the records of instances gone from the file. From then on the checker probes, ejects and
// recovers them like sidecars (the verdict is the record's `ejected`, as for any instance), and consumers balance over
// them. A record whose definition changed is written again; a held ejection is kept across the rewrite.
//
// If no replica publishes a service any more (the checker is gone, or the service left the file while its owner was
// down), its static records expire after DOORMAN_REGISTRY_TTL like a dead sidecar's.
import type { Logger } from '../core/log.js'
import type { Instance, Registry } from '../registry/types.js'
import { checkKey } from './spec.js'
import type { SourceService } from './targets.js'

/** The registry id of a static target: readable, stable across replicas and restarts. */
export function staticId (address: string, cluster: string): string {
  const id = `static-${address.replace(/[[\]]/g, '').replace(/[^A-Za-z0-9.-]/g, '-')}`
  return cluster === 'default' ? id : `${id}-${cluster.replace(/[^A-Za-z0-9.-]/g, '-')}`
}

/** A definition's key, computed once per object (a service's instances share their source's definition). */
const keys = new WeakMap<object, string>()
function keyOf (c: Instance['check']): string {
  if (c === undefined) return ''
  let k = keys.get(c)
  if (k === undefined) { k = checkKey(c); keys.set(c, k) }
  return k
}

/** What makes a static record current: a change of any of these writes it again. */
function fingerprint (i: Pick<Instance, 'address' | 'cluster' | 'org' | 'env' | 'check'>): string {
  return `${i.address}\n${i.cluster}\n${i.org ?? ''}\n${i.env ?? ''}\n${keyOf(i.check)}`
}

export interface PublisherOptions {
  registry: Registry
  /** The records' TTL, ms (DOORMAN_REGISTRY_TTL); refreshed every third of it. */
  ttl: number
  log: Logger
  /** Epoch ms (Date.now unless given). */
  now?: () => number
}

export interface Publication {
  /** Records written this round (new or changed), by service: the round's targets include them at once. */
  written: Map<string, Instance[]>
  registered: number
  removed: number
  refreshed: number
  errors: number
}

export class Publisher {
  readonly #o: PublisherOptions
  readonly #now: () => number
  /** service → id → [fingerprint, when this replica last wrote or refreshed it (performance.now)]. */
  readonly #mine = new Map<string, Map<string, [string, number]>>()

  constructor (opts: PublisherOptions) {
    this.#o = opts
    this.#now = opts.now ?? Date.now
  }

  /** The services this replica publishes now. */
  get services (): string[] { return [...this.#mine.keys()].sort() }

  #record (s: SourceService, address: string, now: number): Instance {
    return {
      id: staticId(address, s.cluster),
      service: s.name,
      cluster: s.cluster,
      zone: '',
      address,
      adminPort: 0,
      startedAt: now,
      registeredAt: now,
      warmup: { window: 0, aggression: 1, minWeight: 100, progress: 1 },
      weight: 100,
      state: 'up',
      ejected: false,
      updatedAt: now,
      rev: 0,
      source: 'static',
      ...(s.org !== '' ? { org: s.org } : {}),
      ...(s.env !== '' ? { env: s.env } : {}),
      check: s.check
    }
  }

  /**
   * One round's publication. `owned`: the source's services (all clusters) this replica owns; `listed`: every service
   * name the source lists (a service no longer listed at all loses its static records at once; one merely owned by
   * another replica now is left to that replica). `current` gives the registry's records of a service.
   */
  async publish (owned: readonly SourceService[], listed: ReadonlySet<string>, current: (service: string) => Promise<ReadonlyMap<string, Instance>>): Promise<Publication> {
    const out: Publication = { written: new Map(), registered: 0, removed: 0, refreshed: 0, errors: 0 }
    const byService = new Map<string, SourceService[]>()
    for (const s of owned) {
      let l = byService.get(s.name)
      if (l === undefined) { l = []; byService.set(s.name, l) }
      l.push(s)
    }
    const now = this.#now()
    const refreshEvery = this.#o.ttl / 3
    const { registry, log } = this.#o
    // Services published before that this replica no longer owns: another replica (or nobody) keeps them now.
    for (const service of [...this.#mine.keys()]) {
      if (byService.has(service)) continue
      if (listed.has(service)) { this.#mine.delete(service); continue }
      byService.set(service, [])
    }
    await Promise.all([...byService].map(async ([service, entries]) => {
      let mine = this.#mine.get(service)
      if (mine === undefined) { mine = new Map(); this.#mine.set(service, mine) }
      let records: ReadonlyMap<string, Instance>
      try {
        records = await current(service)
      } catch (err) {
        out.errors++
        log.debug({ err, service }, 'could not read a published service; tried again next round')
        return
      }
      const want = new Map<string, Instance>()
      for (const s of entries) for (const a of s.instances) { const r = this.#record(s, a, now); want.set(r.id, r) }
      const t = performance.now()
      await Promise.all([...want.values()].map(async (rec) => {
        const fp = fingerprint(rec)
        const have = records.get(rec.id)
        const held = mine.get(rec.id)
        try {
          // What this replica wrote itself is compared first: the registry's copy only after an owner change.
          if ((held !== undefined && held[0] === fp) || (have !== undefined && have.source === 'static' && fingerprint(have) === fp)) {
            if (held !== undefined && held[0] === fp && t - held[1] < refreshEvery) return
            if (await registry.heartbeat(service, rec.id, this.#o.ttl)) {
              mine.set(rec.id, [fp, t])
              out.refreshed++
              return
            }
          }
          await registry.register(rec, this.#o.ttl)
          // A target held ejected stays so while its new definition is tried: the next successes release it.
          if (have?.ejected === true) await registry.setEjected(service, rec.id, true)
          mine.set(rec.id, [fp, t])
          out.registered++
          let w = out.written.get(service)
          if (w === undefined) { w = []; out.written.set(service, w) }
          w.push({ ...rec, ejected: have?.ejected === true, state: have?.ejected === true ? 'ejected' : 'up' })
          log.info({ service, id: rec.id, address: rec.address, check: rec.check?.type }, have === undefined ? 'static target published' : 'static target updated')
        } catch (err) {
          out.errors++
          log.warn({ err, service, id: rec.id }, 'could not publish a static target; tried again next round')
        }
      }))
      const gone = new Set<string>()
      for (const [id, r] of records) if (r.source === 'static' && !want.has(id)) gone.add(id)
      for (const id of mine.keys()) if (!want.has(id)) gone.add(id)
      await Promise.all([...gone].map(async (id) => {
        try {
          await registry.deregister(service, id)
          mine.delete(id)
          out.removed++
          log.info({ service, id }, 'static target removed (no longer in the targets file)')
        } catch (err) {
          out.errors++
          log.warn({ err, service, id }, 'could not remove a static target; tried again next round')
        }
      }))
      if (mine.size === 0) this.#mine.delete(service)
    }))
    return out
  }
}
