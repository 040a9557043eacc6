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
   * Ejects the instance if its cluster's budget allows, re-reading every current state first; atomic against every
   * other ejection of the same service.
   */
  eject: (service: string, id: string, maxPercent: number) => Promise<EjectResult>
  /** Releases an ejection. False when the instance is no longer registered. */
  recover: (service: string, id: string) => Promise<boolean>
}

/** Counts a cluster for the threshold: instances that are routable or ejected (draining ones are leaving). */
export function countCluster (instances: Iterable<Instance>, cluster: string): { total: number, ejected: number } {
  let total = 0
  let ejected = 0
  for (const o of instances) {
    if (o.cluster !== cluster || o.state === 'draining') continue
    if (o.ejected) { total++; ejected++ } else if (routable(o.state)) total++
  }
  return { total, ejected }
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

  async eject (service: string, id: string, maxPercent: number): Promise<EjectResult> {
    const before = this.#locks.get(service) ?? Promise.resolve()
    const run = before.then(async () => await this.#eject(service, id, maxPercent))
    const tail = run.catch(() => {})
    this.#locks.set(service, tail)
    void tail.then(() => { if (this.#locks.get(service) === tail) this.#locks.delete(service) })
    return await run
  }

  async #eject (service: string, id: string, maxPercent: number): Promise<EjectResult> {
    const list = await this.#registry.list(service)
    const me = list.find((i) => i.id === id)
    if (me === undefined) return { outcome: 'gone', ejected: 0, total: 0, budget: 0 }
    const { total, ejected } = countCluster(list, me.cluster)
    const budget = ejectBudget(total, maxPercent)
    if (me.ejected) return { outcome: 'already', ejected, total, budget }
    if (!routable(me.state)) return { outcome: 'not-routable', ejected, total, budget }
    if (ejected + 1 > budget) return { outcome: 'threshold', ejected, total, budget }
    if (!await this.#registry.setEjected(service, id, true)) return { outcome: 'gone', ejected, total, budget }
    return { outcome: 'ejected', ejected: ejected + 1, total, budget }
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

// The protection threshold, atomically: re-reads the instance and every instance of its cluster (all in the
// service's slot, see docs/registry.md), and sets `ejected` only within the budget. The write bumps `rev` and
// publishes the record on the service's channel exactly as the registry's own writes do, so every watcher sees it.
const EJECT = `
local key = ARGV[1] .. ARGV[2]
local me = redis.call('HMGET', key, 'cluster', 'state', 'ejected')
if not me[2] then return {'gone', 0, 0, 0} end
local total, ejected = 0, 0
for _, other in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local h = redis.call('HMGET', ARGV[1] .. other, 'cluster', 'state', 'ejected')
  if h[2] and h[2] ~= 'draining' and h[1] == me[1] then
    if h[3] == '1' then
      total = total + 1
      ejected = ejected + 1
    elseif h[2] == 'up' or h[2] == 'warming' then
      total = total + 1
    end
  end
end
local budget = math.floor(total * tonumber(ARGV[3]) / 100 + 1e-9)
if me[3] == '1' then return {'already', ejected, total, budget} end
if me[2] ~= 'up' and me[2] ~= 'warming' then return {'not-routable', ejected, total, budget} end
if ejected + 1 > budget then return {'threshold', ejected, total, budget} end
local t = redis.call('TIME')
redis.call('HSET', key, 'ejected', '1', 'rev', t[1] .. string.format('%06d', tonumber(t[2])))
redis.call('PUBLISH', ARGV[4], cjson.encode({t = 'put', h = redis.call('HGETALL', key)}))
return {'ejected', ejected + 1, total, budget}`

interface Scripts {
  dmCheckerHeartbeat: (key: string, id: string, ttl: string) => Promise<string[]>
  dmCheckerEject: (idsKey: string, instPrefix: string, id: string, maxPercent: string, channel: string) => Promise<[string, number, number, number]>
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

  async eject (service: string, id: string, maxPercent: number): Promise<EjectResult> {
    const tag = this.#tag(service)
    const [outcome, ejected, total, budget] = await this.#scripts.dmCheckerEject(`${tag}:ids`, `${tag}:i:`, id, String(maxPercent), `${tag}:events`)
    return { outcome: outcome as EjectOutcome, ejected: Number(ejected), total: Number(total), budget: Number(budget) }
  }

  async recover (service: string, id: string): Promise<boolean> {
    return await this.#registry.setEjected(service, id, false)
  }
}
