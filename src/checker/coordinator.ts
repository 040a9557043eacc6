// Coordination between checker replicas, kept in the registry's store: replica membership (TTL heartbeats, for
// rendezvous sharding), the run-time mode table, and the ejection budget of the protection threshold, taken
// atomically so that several replicas deciding at the same moment can never eject more than the threshold allows.
//
// Two implementations: Redis (the one `doorman checker` runs with: Lua scripts over the registry's own connection
// and key layout, see docs/checker.md) and memory (one process; for tests and library use).
import type { Instance, Registry } from '../registry/types.js'
import { routable } from '../registry/types.js'
import type { RedisRegistry } from '../registry/redis.js'
import { ejectBudget, ModeTable, type Mode } from './policy.js'

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

export interface Coordinator {
  /** Renews this replica's membership of its group; resolves with the group's live replicas, sorted. */
  heartbeat: (group: string, id: string, ttlMs: number) => Promise<string[]>
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

  async heartbeat (group: string, id: string, ttlMs: number): Promise<string[]> {
    let g = this.#groups.get(group)
    if (g === undefined) { g = new Map(); this.#groups.set(group, g) }
    const now = this.#now()
    for (const [r, until] of g) if (until <= now) g.delete(r)
    g.set(id, now + ttlMs)
    return [...g.keys()].sort()
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
}

// The replicas of a group: a sorted set of replica → expiry (the store's clock, ms). Expired members are pruned on
// every heartbeat; the set itself expires when every replica is gone.
const HEARTBEAT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl * 2)
return redis.call('ZRANGE', KEYS[1], 0, -1)`

// The protection threshold, atomically: reads every instance of the service once (all in the service's slot, see
// docs/registry.md) and counts each cluster, then takes the asked-for ids in order and sets `ejected` on each only
// within its cluster's budget. Each write bumps `rev` and publishes the record on the service's channel exactly as
// the registry's own writes do, so every watcher sees it. One call decides a whole batch: O(service + batch).
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
      redis.call('PUBLISH', ARGV[3], cjson.encode({t = 'put', h = redis.call('HGETALL', key)}))
      c[2] = c[2] + 1
      out[#out + 1] = {'ejected', c[2], c[1], budget}
    end
  end
end
return out`

interface Scripts {
  dmCheckerHeartbeat: (key: string, id: string, ttl: string) => Promise<string[]>
  dmCheckerEject: (idsKey: string, instPrefix: string, maxPercent: string, channel: string, ...ids: string[]) => Promise<Array<[string, number, number, number]>>
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
    c.defineCommand('dmCheckerEject', { numberOfKeys: 1, lua: EJECT })
    this.#scripts = registry.client as unknown as Scripts
  }

  /** `<prefix>:checker:<group>:replicas`. */
  replicasKey (group: string): string { return `${this.#prefix}:checker:${group}:replicas` }
  /** `<prefix>:checker:mode`. */
  modeKey (): string { return `${this.#prefix}:checker:mode` }
  #tag (service: string): string { return `${this.#prefix}:{${service}}` }

  async heartbeat (group: string, id: string, ttlMs: number): Promise<string[]> {
    const members = await this.#scripts.dmCheckerHeartbeat(this.replicasKey(group), id, String(Math.max(1, Math.round(ttlMs))))
    return [...members].sort()
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
    const rows = await this.#scripts.dmCheckerEject(`${tag}:ids`, `${tag}:i:`, String(maxPercent), `${tag}:events`, ...ids)
    return rows.map(([outcome, ejected, total, budget]) => ({ outcome: outcome as EjectOutcome, ejected: Number(ejected), total: Number(total), budget: Number(budget) }))
  }

  async recover (service: string, id: string): Promise<boolean> {
    return await this.#registry.setEjected(service, id, false)
  }
}
