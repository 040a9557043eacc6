// Coordination between checker replicas, kept in the registry's store: replica membership (TTL heartbeats, for
// rendezvous sharding), the run-time mode table, and the ejection budget of the protection threshold, taken
// atomically so that several replicas deciding at the same moment can never eject more than the threshold allows.
//
// Two implementations: Redis (the one `doorman checker` runs with: Lua scripts over the registry's own connection
// and key layout, see docs/checker.md) and memory (one process; for tests and library use).
import type { Instance, Registry } from '../registry/types.js'
import { routable } from '../registry/types.js'
import type { RedisRegistry } from '../registry/redis.js'
import { ejectBudget } from '../protection/index.js'
import { ModeTable, type Labels, type Mode } from './policy.js'

/**
 * `ejected`: done; `threshold`: the cluster is at its budget; `already`: another decision ejected it first;
 * `not-routable`: it is starting or draining now (nothing to take out); `gone`: no longer registered.
 */
export type EjectOutcome = 'ejected' | 'threshold' | 'already' | 'not-routable' | 'gone'

export interface EjectResult {
  outcome: EjectOutcome
  /** Instances of the cluster ejected after the decision (including this one when `ejected`). */
  ejected: number
  /** Instances of the cluster that count: routable or ejected. */
  total: number
  /** How many of them may be ejected at once. */
  budget: number
}

/** A group's membership as one heartbeat found it. */
export interface Membership {
  /** The group's live replicas, sorted. */
  replicas: string[]
  /**
   * Milliseconds until the first of the other replicas expires unless it heartbeats again (Infinity when alone):
   * when a replica dies, the others look again at that moment and take its share over at once.
   */
  nextExpiry: number
}

export interface Coordinator {
  /** Renews this replica's membership of its group; resolves with the group's live replicas and their expiries. */
  heartbeat: (group: string, id: string, ttlMs: number) => Promise<Membership>
  /** Leaves the group at once (on a clean stop), so the others take over at their next round. */
  leave: (group: string, id: string) => Promise<void>
  /** The run-time mode table over `fallback` (values that are not modes come back in `bad`). */
  modes: (fallback: Mode) => Promise<{ table: ModeTable, bad: string[] }>
  /** Sets a scope's mode (`*`, `service`, `service/cluster`), or clears it with null. */
  setMode: (scope: string, mode: Mode | null) => Promise<void>
  /**
   * Ejects the service's instances `ids`, in order, as far as each one's cluster budget allows, re-reading every
   * current state first; atomic against every other ejection of the same service. One result per id.
   */
  eject: (service: string, ids: readonly string[], maxPercent: number) => Promise<EjectResult[]>
  /** Releases an ejection. False when the instance is no longer registered. */
  recover: (service: string, id: string) => Promise<boolean>
  /**
   * The names in the registry's service set, as stored: one read, no per-service count (the owner of each service
   * keeps a live view of it, which is the count it needs). A name may have no instance left (see pruneService).
   */
  serviceNames: () => Promise<string[]>
  /**
   * Takes a service with no instance left out of the registry's service set (its owner does, once its view is empty).
   * False, with the set as it was, when the service has an instance again.
   */
  pruneService: (service: string) => Promise<boolean>
  /** Every labelled service's org and env (for selectors by org: a canary group by org). */
  serviceLabels?: () => Promise<Map<string, Labels>>
}

/** Counts each cluster for the threshold: instances that are routable or ejected (draining ones are leaving). */
export function countClusters (instances: Iterable<Instance>): Map<string, { total: number, ejected: number }> {
  const out = new Map<string, { total: number, ejected: number }>()
  for (const o of instances) {
    if (o.state === 'draining') continue
    let c = out.get(o.cluster)
    if (c === undefined) { c = { total: 0, ejected: 0 }; out.set(o.cluster, c) }
    if (o.ejected) { c.total++; c.ejected++ } else if (routable(o.state)) c.total++
  }
  return out
}

/** Membership, modes and ejections inside one process, over any Registry. */
export class MemoryCoordinator implements Coordinator {
  readonly #registry: Registry
  readonly #groups = new Map<string, Map<string, number>>()
  readonly #modes = new Map<string, string>()
  /** Per service: the tail of its chain of ejections, so each reads the states the previous one left. */
  readonly #locks = new Map<string, Promise<unknown>>()
  readonly #now: () => number

  constructor (registry: Registry, now: () => number = Date.now) {
    this.#registry = registry
    this.#now = now
  }

  async heartbeat (group: string, id: string, ttlMs: number): Promise<Membership> {
    let g = this.#groups.get(group)
    if (g === undefined) { g = new Map(); this.#groups.set(group, g) }
    const now = this.#now()
    for (const [r, until] of g) if (until <= now) g.delete(r)
    g.set(id, now + ttlMs)
    let next = Infinity
    for (const [r, until] of g) if (r !== id) next = Math.min(next, until - now)
    return { replicas: [...g.keys()].sort(), nextExpiry: next }
  }

  async leave (group: string, id: string): Promise<void> {
    this.#groups.get(group)?.delete(id)
  }

  async modes (fallback: Mode): Promise<{ table: ModeTable, bad: string[] }> {
    return ModeTable.parse(fallback, Object.fromEntries(this.#modes))
  }

  async setMode (scope: string, mode: Mode | null): Promise<void> {
    if (mode === null) this.#modes.delete(scope)
    else this.#modes.set(scope, mode)
  }

  async eject (service: string, ids: readonly string[], maxPercent: number): Promise<EjectResult[]> {
    const before = this.#locks.get(service) ?? Promise.resolve()
    const run = before.then(async () => await this.#eject(service, ids, maxPercent))
    const tail = run.catch(() => {})
    this.#locks.set(service, tail)
    void tail.then(() => { if (this.#locks.get(service) === tail) this.#locks.delete(service) })
    return await run
  }

  async #eject (service: string, ids: readonly string[], maxPercent: number): Promise<EjectResult[]> {
    const list = await this.#registry.list(service)
    const byId = new Map(list.map((i) => [i.id, i]))
    const counts = countClusters(list)
    const out: EjectResult[] = []
    for (const id of ids) {
      const me = byId.get(id)
      if (me === undefined) { out.push({ outcome: 'gone', ejected: 0, total: 0, budget: 0 }); continue }
      const c = counts.get(me.cluster) ?? { total: 0, ejected: 0 }
      const budget = ejectBudget(c.total, maxPercent)
      const result = (outcome: EjectOutcome): EjectResult => ({ outcome, ejected: c.ejected, total: c.total, budget })
      if (me.ejected) { out.push(result('already')); continue }
      if (!routable(me.state)) { out.push(result('not-routable')); continue }
      if (c.ejected + 1 > budget) { out.push(result('threshold')); continue }
      if (!await this.#registry.setEjected(service, id, true)) { out.push(result('gone')); continue }
      byId.set(id, { ...me, ejected: true })
      c.ejected++
      out.push(result('ejected'))
    }
    return out
  }

  async recover (service: string, id: string): Promise<boolean> {
    return await this.#registry.setEjected(service, id, false)
  }

  async serviceNames (): Promise<string[]> {
    return await this.#registry.services()
  }

  async serviceLabels (): Promise<Map<string, Labels>> {
    const out = new Map<string, Labels>()
    for (const s of await this.#registry.services()) {
      const i = (await this.#registry.list(s)).find((x) => (x.org ?? '') !== '' || (x.env ?? '') !== '')
      if (i !== undefined) out.set(s, { org: i.org ?? '', env: i.env ?? '' })
    }
    return out
  }

  /** The memory registry forgets a service with its last instance: nothing to prune. */
  async pruneService (service: string): Promise<boolean> {
    return (await this.#registry.list(service)).length === 0
  }
}

// The replicas of a group: a sorted set of replica → expiry (the store's clock, ms). Expired members are pruned on
// every heartbeat; the set itself expires when every replica is gone. Returns the members and, for each, the
// milliseconds left before it expires (by the store's clock, so the replicas' clocks don't matter).
const HEARTBEAT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl * 2)
local out = {}
local all = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #all, 2 do
  out[#out + 1] = all[i]
  out[#out + 1] = tostring(tonumber(all[i + 1]) - now)
end
return out`

// The protection threshold, atomically: reads every instance of the service once (all in the service's slot, see
// docs/registry.md) and counts each cluster, then takes the asked-for ids in order and sets `ejected` on each only
// within its cluster's budget. Each write bumps `rev` and the service's version (`:ver`) and publishes the record on
// the service's channel exactly as the registry's own writes do (SPUBLISH on a Cluster), so every watcher sees it and
// a version check notices it. One call decides a whole batch: O(service + batch).
// ARGV: instance key prefix, max percent, channel, ids…; returns outcome, ejected, total, budget per id.
const EJECT = `
local counts = {}
for _, other in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local h = redis.call('HMGET', ARGV[1] .. other, 'cluster', 'state', 'ejected')
  if h[2] and h[2] ~= 'draining' then
    local c = counts[h[1]]
    if not c then
      c = {0, 0}
      counts[h[1]] = c
    end
    if h[3] == '1' then
      c[1] = c[1] + 1
      c[2] = c[2] + 1
    elseif h[2] == 'up' or h[2] == 'warming' then
      c[1] = c[1] + 1
    end
  end
end
local pct = tonumber(ARGV[2])
local out = {}
local rev = nil
for i = 4, #ARGV do
  local key = ARGV[1] .. ARGV[i]
  local me = redis.call('HMGET', key, 'cluster', 'state', 'ejected')
  if not me[2] then
    out[#out + 1] = {'gone', 0, 0, 0}
  else
    local c = counts[me[1]] or {0, 0}
    local budget = math.max(0, math.ceil(c[1] * pct / 100 - 0.5 - 1e-9))
    if pct < 100 and budget >= c[1] then budget = math.max(0, c[1] - 1) end
    if me[3] == '1' then
      out[#out + 1] = {'already', c[2], c[1], budget}
    elseif me[2] ~= 'up' and me[2] ~= 'warming' then
      out[#out + 1] = {'not-routable', c[2], c[1], budget}
    elseif c[2] + 1 > budget then
      out[#out + 1] = {'threshold', c[2], c[1], budget}
    else
      if not rev then
        local t = redis.call('TIME')
        rev = t[1] .. string.format('%06d', tonumber(t[2]))
      end
      redis.call('HSET', key, 'ejected', '1', 'rev', rev)
      local v = redis.call('HINCRBY', KEYS[2], 'n', 1)
      if v == 1 then redis.call('HSET', KEYS[2], 'e', rev) end
      redis.call('PUBLISH', ARGV[3], cjson.encode({t = 'put', v = v, h = redis.call('HGETALL', key)}))
      c[2] = c[2] + 1
      out[#out + 1] = {'ejected', c[2], c[1], budget}
    end
  end
end
return out`

interface Scripts {
  dmCheckerHeartbeat: (key: string, id: string, ttl: string) => Promise<string[]>
  dmCheckerEject: (idsKey: string, verKey: string, instPrefix: string, maxPercent: string, channel: string, ...ids: string[]) => Promise<Array<[string, number, number, number]>>
}

/** Coordination in the registry's Redis (standalone, Sentinel or Cluster), over the registry's connection. */
export class RedisCoordinator implements Coordinator {
  readonly #registry: RedisRegistry
  readonly #scripts: Scripts
  readonly #prefix: string

  constructor (registry: RedisRegistry) {
    this.#registry = registry
    this.#prefix = registry.target.prefix
    const c = registry.client as unknown as { defineCommand: (name: string, def: { numberOfKeys: number, lua: string }) => void }
    c.defineCommand('dmCheckerHeartbeat', { numberOfKeys: 1, lua: HEARTBEAT })
    c.defineCommand('dmCheckerEject', { numberOfKeys: 2, lua: registry.target.mode === 'cluster' ? EJECT.replaceAll("'PUBLISH'", "'SPUBLISH'") : EJECT })
    this.#scripts = registry.client as unknown as Scripts
  }

  /** `<prefix>:checker:<group>:replicas`. */
  replicasKey (group: string): string { return `${this.#prefix}:checker:${group}:replicas` }
  /** `<prefix>:checker:mode`. */
  modeKey (): string { return `${this.#prefix}:checker:mode` }
  #tag (service: string): string { return `${this.#prefix}:{${service}}` }

  async heartbeat (group: string, id: string, ttlMs: number): Promise<Membership> {
    const flat = await this.#scripts.dmCheckerHeartbeat(this.replicasKey(group), id, String(Math.max(1, Math.round(ttlMs))))
    const replicas: string[] = []
    let next = Infinity
    for (let i = 0; i + 1 < flat.length; i += 2) {
      replicas.push(flat[i])
      if (flat[i] !== id) next = Math.min(next, Number(flat[i + 1]))
    }
    return { replicas: replicas.sort(), nextExpiry: next }
  }

  async leave (group: string, id: string): Promise<void> {
    await this.#registry.client.zrem(this.replicasKey(group), id)
  }

  async modes (fallback: Mode): Promise<{ table: ModeTable, bad: string[] }> {
    return ModeTable.parse(fallback, await this.#registry.client.hgetall(this.modeKey()))
  }

  async setMode (scope: string, mode: Mode | null): Promise<void> {
    if (mode === null) await this.#registry.client.hdel(this.modeKey(), scope)
    else await this.#registry.client.hset(this.modeKey(), scope, mode)
  }

  async eject (service: string, ids: readonly string[], maxPercent: number): Promise<EjectResult[]> {
    if (ids.length === 0) return []
    const tag = this.#tag(service)
    const rows = await this.#scripts.dmCheckerEject(`${tag}:ids`, `${tag}:ver`, `${tag}:i:`, String(maxPercent), `${tag}:events`, ...ids)
    return rows.map(([outcome, ejected, total, budget]) => ({ outcome: outcome as EjectOutcome, ejected: Number(ejected), total: Number(total), budget: Number(budget) }))
  }

  async recover (service: string, id: string): Promise<boolean> {
    return await this.#registry.setEjected(service, id, false)
  }

  async serviceLabels (): Promise<Map<string, Labels>> {
    const out = new Map<string, Labels>()
    for (const [s, v] of Object.entries(await this.#registry.client.hgetall(this.#registry.labelsKey()))) {
      try {
        const l = JSON.parse(v) as Partial<Labels>
        out.set(s, { org: typeof l.org === 'string' ? l.org : '', env: typeof l.env === 'string' ? l.env : '' })
      } catch {}
    }
    return out
  }

  /** `<prefix>:services`, the registry's service set (see docs/registry.md). */
  servicesKey (): string { return `${this.#prefix}:services` }

  async serviceNames (): Promise<string[]> {
    return (await this.#registry.client.smembers(this.servicesKey())).sort()
  }

  // The service set and a service's ids are in different slots on a Cluster, so this can't be one script. Three steps
  // instead, safe against a registration at any moment: a registration writes its id first, then adds the service to
  // the set. An id written before the second look is seen there and the name goes back; an id written after it comes
  // with its own addition, which lands after the removal. Either way a service with an instance stays in the set.
  async pruneService (service: string): Promise<boolean> {
    const c = this.#registry.client
    const ids = `${this.#tag(service)}:ids`
    if (await c.scard(ids) > 0) return false
    await c.srem(this.servicesKey(), service)
    if (await c.scard(ids) === 0) return true
    await c.sadd(this.servicesKey(), service)
    return false
  }
}
