// The registry in Redis through ioredis: standalone, Sentinel or Cluster. See docs/registry.md for the key layout.
//
// Every write is one Lua script that changes the instance's hash, bumps the service's version and publishes the
// change (with that version) on the service's channel in the same step, so watchers learn of it within
// milliseconds. A watcher lists the service in full only when it must: at the start, on a gap in the versions it was
// pushed, or when its periodic check (rare, every 30–60 s by default: a safety net for lost messages; two plain
// read-only commands, the version and the ids past their expiry) finds the version moved without it.
//
// Expired instances are swept by the heartbeats of their own service: each heartbeat also asks (in the same round
// trip) for ids past their expiry, and the instance that finds one removes it and publishes its deletion, once. A
// busy service is so swept several times a second at no extra round trip; a service whose every instance died is
// swept by its watchers' checks (and by any listing). All keys of a service share the hash tag `{service}`, and every
// script names all its keys, so each call touches one Cluster slot.
//
// Commands never queue while Redis is unreachable (enableOfflineQueue: false): they fail at once, and callers
// (the registration loop, the outbound lane's watches) keep what they had and retry with backoff.
import { Redis, Cluster, type RedisOptions, type ClusterOptions } from 'ioredis'
import type { Logger } from '../core/log.js'
import type { Instance, InstancePatch, OwnState, Registry, Watch, WatchListener } from './types.js'
import { STATES, backoff, byId, checkService, effectiveState } from './types.js'
import { factor, interpolate } from '../warmup/index.js'
import type { RedisTarget } from './url.js'
import { ServiceView } from './view.js'
import { checkFromObject } from '../check/spec.js'

// Every script names each key it touches in KEYS (all in the service's slot: the `{service}` hash tag), so each
// call is one slot on a Cluster. Writes bump the service's version (`:ver`, a hash: `n` counts, `e` is the epoch,
// the store's clock when `n` was 1) once per published message and put it in the message as `v`: a watcher that
// sees the version it expects next has missed nothing, and one that sees a gap (or a version or epoch that moved
// without it) lists again. A new epoch means the store lost the service's keys (restarted empty).
//
// `:exp` is a sorted set of each id's deadline, so finding expired instances is one range read instead of a listing.
// Deadlines are on the writer's clock (a bare heartbeat is then plain commands in one round trip, no script): they
// only nominate candidates, and the sweep removes a candidate only when its record's TTL, kept on the store's clock,
// has run out.
// Clock skew costs at most a later notice or a sweep that finds nothing to do. On a Cluster the scripts publish with
// SPUBLISH (sharded pub/sub: the message stays on the shard that owns the service's slot, instead of crossing the
// cluster bus to every node); the channel carries the same hash tag, so it is in the script's slot too.
//
// REGISTER KEYS: instance, ids, ver, exp. ARGV: ttl, id, channel, deadline, field, value, …
const REGISTER = `
local t = redis.call('TIME')
local rev = t[1] .. string.format('%06d', tonumber(t[2]))
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'rev', rev, unpack(ARGV, 5))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[2])
local v = redis.call('HINCRBY', KEYS[3], 'n', 1)
if v == 1 then redis.call('HSET', KEYS[3], 'e', rev) end
redis.call('PUBLISH', ARGV[3], cjson.encode({t = 'put', v = v, h = redis.call('HGETALL', KEYS[1])}))
return rev`

// UPDATE KEYS: instance, ver, exp. ARGV: ttl ('' = unchanged), channel, id, deadline, field, value, …
// (A bare heartbeat doesn't come here: it is PEXPIRE, every other beat ZADD XX, and the sweep's probe, pipelined.)
const UPDATE = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if #ARGV > 4 then
  local t = redis.call('TIME')
  local rev = t[1] .. string.format('%06d', tonumber(t[2]))
  redis.call('HSET', KEYS[1], 'rev', rev, unpack(ARGV, 5))
  local v = redis.call('HINCRBY', KEYS[2], 'n', 1)
  if v == 1 then redis.call('HSET', KEYS[2], 'e', rev) end
  redis.call('PUBLISH', ARGV[2], cjson.encode({t = 'put', v = v, h = redis.call('HGETALL', KEYS[1])}))
end
if ARGV[1] ~= '' then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
end
return 1`

// DEREGISTER KEYS: instance, ids, ver, exp. ARGV: id, channel.
const DEREGISTER = `
local t = redis.call('TIME')
local rev = t[1] .. string.format('%06d', tonumber(t[2]))
local n = redis.call('DEL', KEYS[1])
local m = redis.call('SREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
if n > 0 or m > 0 then
  local v = redis.call('HINCRBY', KEYS[3], 'n', 1)
  if v == 1 then redis.call('HSET', KEYS[3], 'e', rev) end
  redis.call('PUBLISH', ARGV[2], cjson.encode({t = 'del', v = v, id = ARGV[1], rev = rev}))
end
return n`

// SWEEP KEYS: ids, ver, exp, instance of each candidate. ARGV: channel, candidate ids (in KEYS order).
// Removes the candidates whose record is gone (expired) and publishes each removal once: whoever sweeps first does
// it, later sweeps of the same ids find nothing to do.
const SWEEP = `
local t = redis.call('TIME')
local rev = t[1] .. string.format('%06d', tonumber(t[2]))
local n = 0
for i = 4, #KEYS do
  local id = ARGV[i - 2]
  if redis.call('EXISTS', KEYS[i]) == 0 then
    redis.call('ZREM', KEYS[3], id)
    if redis.call('SREM', KEYS[1], id) > 0 then
      n = n + 1
      local v = redis.call('HINCRBY', KEYS[2], 'n', 1)
      if v == 1 then redis.call('HSET', KEYS[2], 'e', rev) end
      redis.call('PUBLISH', ARGV[1], cjson.encode({t = 'del', v = v, id = id, rev = rev}))
    end
  end
end
return n`

// IDS KEYS: ids, ver. First half of a listing (read-only): the store's clock, the version and its epoch, the ids.
const IDS = `#!lua flags=no-writes
local t = redis.call('TIME')
local h = redis.call('HMGET', KEYS[2], 'n', 'e')
return {t[1] .. string.format('%06d', tonumber(t[2])), h[1] or '0', h[2] or '', redis.call('SMEMBERS', KEYS[1])}`

// READ KEYS: instances. Second half (read-only): each record, empty for one that is gone.
const READ = `#!lua flags=no-writes
local out = {}
for i = 1, #KEYS do out[i] = redis.call('HGETALL', KEYS[i]) end
return out`

/** How far past its deadline (writer's clock) an id must be, on the sweeper's clock, to be swept: allows for skew. */
const CLOCK_SLACK_MS = 1000
/** How long a check that saw the version ahead of the pushed messages waits for them before listing in full. */
const PUSH_GRACE_MS = 250
/** How long after a node ended sharded subscriptions (a slot moved) they are renewed and the services checked. */
const MOVE_SETTLE_MS = 1000

/** Ids past their deadline that one heartbeat's probe or one watch check fetches (and sweeps) at most. */
const PROBE_LIMIT = 16

/** Default period of each watch's check, in milliseconds (jittered to 2/3–4/3 of it: 30–60 s). */
const CHECK_MS = 45_000

/** Records read per READ call: bounds the time one call holds Redis's thread. */
const READ_BATCH = 200

type Client = Redis | Cluster
interface Scripts {
  dmRegister: (instKey: string, idsKey: string, verKey: string, expKey: string, ...args: string[]) => Promise<string>
  dmUpdate: (instKey: string, verKey: string, expKey: string, ...args: string[]) => Promise<number>
  dmDeregister: (instKey: string, idsKey: string, verKey: string, expKey: string, ...args: string[]) => Promise<number>
  dmSweep: (numKeys: number, ...keysAndArgs: string[]) => Promise<number>
  dmIds: (idsKey: string, verKey: string) => Promise<[string, string, string, string[]]>
  dmRead: (numKeys: number, ...keys: string[]) => Promise<string[][]>
}

export interface RedisRegistryOptions {
  target: RedisTarget
  log?: Logger
  /**
   * Period of each watch's check, in milliseconds (default 45 s), jittered to 2/3–4/3 of it per service: a read of
   * the service's version and of ids past their expiry, in one round trip of plain read-only commands. A full listing
   * follows only when the version moved unseen. Pushed messages carry the version, so a lost one is noticed with the
   * next message; a reconnect checks at once (within reconnectJitterMs); the check is the safety net behind both, and
   * sweeps a service none of whose instances is left to heartbeat.
   */
  checkMs?: number
  /** Longest wait for one command, in milliseconds (default 2 s). */
  commandTimeout?: number
  /**
   * After a reconnect, how long listings only add and update, never remove (default 15 s; use the registry TTL):
   * a Redis that restarted empty lists nothing until the instances have registered again, and a watcher must not
   * drop every instance meanwhile. Pushed deletions still apply at once.
   */
  reconnectGraceMs?: number
  /** After a reconnect, each watched service is checked at a random moment within this window (default 2 s). */
  reconnectJitterMs?: number
}

/** Connections to Redis a registry holds now: commands, and subscriptions (see docs/registry.md). */
export interface Connections { commands: number, subscriber: number }

/** ioredis options for a target; `subscriber` connections queue their (re)subscriptions until connected. */
export function clientOptions (t: RedisTarget, commandTimeout: number, subscriber: boolean): { redis?: RedisOptions, nodes?: Array<{ host: string, port: number }>, cluster?: ClusterOptions } {
  const common: RedisOptions = {
    username: t.username,
    password: t.password,
    connectTimeout: Math.max(commandTimeout, 1000),
    commandTimeout: subscriber ? undefined : commandTimeout,
    maxRetriesPerRequest: subscriber ? null : 0,
    enableOfflineQueue: subscriber,
    autoResubscribe: true,
    // The subscriber connects with the first watch: a sidecar that only registers holds one connection.
    lazyConnect: subscriber,
    connectionName: subscriber ? 'doorman-registry-watch' : 'doorman-registry'
  }
  switch (t.mode) {
    case 'standalone':
      return { redis: { ...common, host: t.host, port: t.port, db: t.db, tls: t.tls ? { servername: t.host } : undefined, retryStrategy: backoff } }
    case 'sentinel':
      return {
        redis: {
          ...common,
          sentinels: t.sentinels,
          name: t.name,
          db: t.db,
          sentinelUsername: t.sentinelUsername,
          sentinelPassword: t.sentinelPassword,
          enableTLSForSentinelMode: t.sentinelTls,
          tls: t.tls ? {} : undefined,
          retryStrategy: backoff,
          sentinelRetryStrategy: backoff
        }
      }
    case 'cluster': {
      // One Cluster client does both: commands to each master, and sharded subscriptions (SSUBSCRIBE) on the master
      // owning each watched service's slot.
      const { enableOfflineQueue: _q, lazyConnect: _l, ...redisOptions } = common
      return {
        nodes: t.nodes,
        cluster: {
          enableOfflineQueue: false,
          enableReadyCheck: true,
          shardedSubscribers: true,
          clusterRetryStrategy: backoff,
          slotsRefreshTimeout: Math.max(commandTimeout, 1000),
          redisOptions: { ...redisOptions, connectionName: 'doorman-registry', tls: t.tls ? {} : undefined }
        }
      }
    }
  }
}

function createClient (t: RedisTarget, commandTimeout: number, subscriber: boolean): Client {
  const o = clientOptions(t, commandTimeout, subscriber)
  const client: Client = t.mode === 'cluster' ? new Cluster(o.nodes ?? [], o.cluster) : new Redis(o.redis as RedisOptions)
  if (!subscriber) {
    const c = client as unknown as { defineCommand: (name: string, def: { numberOfKeys?: number, lua: string }) => void }
    const pub = (lua: string): string => t.mode === 'cluster' ? lua.replaceAll("'PUBLISH'", "'SPUBLISH'") : lua
    c.defineCommand('dmRegister', { numberOfKeys: 4, lua: pub(REGISTER) })
    c.defineCommand('dmUpdate', { numberOfKeys: 3, lua: pub(UPDATE) })
    c.defineCommand('dmDeregister', { numberOfKeys: 4, lua: pub(DEREGISTER) })
    c.defineCommand('dmSweep', { lua: pub(SWEEP) })
    c.defineCommand('dmIds', { numberOfKeys: 2, lua: IDS })
    c.defineCommand('dmRead', { lua: READ })
  }
  return client
}

/** A uniformly random delay in [lo, hi) milliseconds. */
function between (lo: number, hi: number): number { return lo + Math.random() * (hi - lo) }

/** An instance as hash field/value pairs (the instance's own state; `ejected` starts false). */
export function toFields (inst: Instance): string[] {
  return [
    'id', inst.id,
    'service', inst.service,
    'cluster', inst.cluster,
    'zone', inst.zone,
    'address', inst.address,
    'adminPort', String(inst.adminPort),
    'startedAt', String(inst.startedAt),
    'registeredAt', String(inst.registeredAt),
    'window', String(inst.warmup.window),
    'aggression', String(inst.warmup.aggression),
    'minWeight', String(inst.warmup.minWeight),
    'progress', String(inst.warmup.progress),
    'weight', String(inst.weight),
    'state', inst.state,
    'ejected', '0',
    'livenessFailing', inst.livenessFailing === true ? '1' : '0',
    'updatedAt', String(inst.updatedAt),
    'identity', inst.identity ?? '',
    'mtls', inst.mtls === true ? '1' : '0',
    ...checkerFields(inst)
  ]
}

/** The central checker's fields of a record, only those set (a sidecar without them writes none). */
function checkerFields (inst: Instance): string[] {
  const out: string[] = []
  if (inst.source !== undefined) out.push('source', inst.source)
  if (inst.org !== undefined && inst.org !== '') out.push('org', inst.org)
  if (inst.env !== undefined && inst.env !== '') out.push('env', inst.env)
  if (inst.check !== undefined) out.push('check', JSON.stringify(inst.check))
  return out
}

/** The checker's fields back from a hash; a check that does not parse is left out (the default check applies). */
function readCheckerFields (h: Record<string, string>): Pick<Instance, 'source' | 'org' | 'env' | 'check'> {
  const out: Pick<Instance, 'source' | 'org' | 'env' | 'check'> = {}
  if (h.source === 'static') out.source = 'static'
  if (h.org !== undefined && h.org !== '') out.org = h.org
  if (h.env !== undefined && h.env !== '') out.env = h.env
  if (h.check !== undefined && h.check !== '') {
    try { out.check = checkFromObject(JSON.parse(h.check)) } catch {}
  }
  return out
}

function patchFields (patch: InstancePatch): string[] {
  const out: string[] = []
  if (patch.state !== undefined) out.push('state', patch.state)
  if (patch.weight !== undefined) out.push('weight', String(patch.weight))
  if (patch.progress !== undefined) out.push('progress', String(patch.progress))
  if (patch.updatedAt !== undefined) out.push('updatedAt', String(patch.updatedAt))
  if (patch.livenessFailing !== undefined) out.push('livenessFailing', patch.livenessFailing ? '1' : '0')
  return out
}

const OWN_STATES = new Set<string>(STATES.filter((s) => s !== 'ejected'))

/** A hash's flat field/value list back into an instance; undefined when it is not a well-formed record. */
export function fromFields (flat: string[]): Instance | undefined {
  const h: Record<string, string> = {}
  for (let i = 0; i + 1 < flat.length; i += 2) h[flat[i]] = flat[i + 1]
  if (h.id === undefined || h.service === undefined || h.address === undefined) return undefined
  const num = (k: string, d = 0): number => { const v = Number(h[k]); return Number.isFinite(v) ? v : d }
  const own = (OWN_STATES.has(h.state) ? h.state : 'starting') as OwnState
  const ejected = h.ejected === '1'
  return {
    id: h.id,
    service: h.service,
    cluster: h.cluster ?? 'default',
    zone: h.zone ?? '',
    address: h.address,
    adminPort: num('adminPort'),
    startedAt: num('startedAt'),
    registeredAt: num('registeredAt'),
    warmup: { window: num('window'), aggression: num('aggression', 1), minWeight: num('minWeight', 10), progress: num('progress', 1) },
    weight: num('weight', 100),
    state: effectiveState(own, ejected),
    ejected,
    ...(h.livenessFailing === '1' ? { livenessFailing: true } : {}),
    updatedAt: num('updatedAt'),
    rev: num('rev'),
    ...(h.identity !== undefined && h.identity !== '' ? { identity: h.identity } : {}),
    ...(h.mtls === '1' ? { mtls: true } : {}),
    ...readCheckerFields(h)
  }
}

/**
 * A listed record's warmup progress as of the listing: the record says how far its window was when it was written
 * (its `rev`, the store's clock), and the listing read the store's clock too, so the time between is measured on one
 * clock. Consumers interpolate from there (src/warmup): instances publish their warmup once, not as a stream of steps.
 */
export function asOf (inst: Instance, listedAt: number): Instance {
  const w = inst.warmup
  if (inst.state !== 'warming' || w.window <= 0 || w.progress >= 1 || inst.rev <= 0) return inst
  const p = interpolate(w.progress, inst.rev / 1000, listedAt / 1000, w.window)
  return { ...inst, warmup: { ...w, progress: p }, weight: Math.round(factor(p, w) * 10000) / 100 }
}

/** One watched service: its views and how far this client has followed the service's versions. */
interface Watched {
  service: string
  views: Set<ServiceView>
  /** The service's version as of the last listing and the messages since (null before the first listing). */
  known: number | null
  /** The version's epoch as of the last listing. */
  epoch: string
  /** A full listing is under way; `seen` is the highest version pushed meanwhile. */
  listing: Promise<void> | null
  seen: number
  /** Another listing is wanted once this one is done (a gap was seen while listing). */
  again: boolean
  timer: NodeJS.Timeout | null
  /** The listing again at the end of a reconnect's grace. */
  graceTimer: NodeJS.Timeout | null
  /** Settles once the subscription is in place (or failed): the first listing waits for it, so nothing falls between. */
  subscribed: Promise<void>
  /**
   * A version a check saw ahead of `known` (0: none): the check looks again a moment later and lists only if the
   * pushed messages have not caught up with it by then.
   */
  behind: number
}

export class RedisRegistry implements Registry {
  readonly kind = 'redis' as const
  readonly target: RedisTarget
  readonly client: Client
  readonly #sub: Client
  #scripts: Scripts
  #log: Logger | undefined
  #prefix: string
  #checkMs: number
  #jitterMs: number
  #up = false
  #statusFns = new Set<(up: boolean) => void>()
  /** Watched services. */
  #watched = new Map<string, Watched>()
  #channels = new Map<string, string>()
  #closed = false
  #connectedOnce = { main: false, sub: false }
  #graceUntil = 0
  #graceMs: number
  #timeout: number
  #shardedSubscribers = 0
  /** Sharded subscriber connections already watched for a slot's migration (see #watchSubscribers). */
  #hooked = new WeakSet<object>()
  /** A subscription check pending after a slot moved (see #afterMove). */
  #moveTimer: NodeJS.Timeout | null = null
  /** The deadline last written to the expiry set for each instance this client heartbeats. */
  #deadlines = new Map<string, number>()
  /** What this client asked of Redis, for the bench and tests: full listings, version checks, sweeps. */
  readonly stats = { listings: 0, checks: 0, sweeps: 0, swept: 0, gaps: 0 }

  constructor (opts: RedisRegistryOptions) {
    this.target = opts.target
    this.#log = opts.log
    this.#prefix = opts.target.prefix
    this.#checkMs = Math.max(1, opts.checkMs ?? CHECK_MS)
    this.#graceMs = opts.reconnectGraceMs ?? 15_000
    this.#jitterMs = opts.reconnectJitterMs ?? 2000
    const timeout = opts.commandTimeout ?? 2000
    this.#timeout = timeout
    this.client = createClient(opts.target, timeout, false)
    this.#scripts = this.client as unknown as Scripts
    const cluster = opts.target.mode === 'cluster'
    this.#sub = cluster ? this.client : createClient(opts.target, timeout, true)
    this.client.on('ready', () => { this.#reconnected('main'); this.#setUp(true) })
    this.client.on('close', () => { this.#setUp(false) })
    this.client.on('end', () => { this.#setUp(false) })
    // Errors surface through status changes and failed commands; an 'error' listener keeps them from throwing.
    this.client.on('error', () => {})
    if (cluster) {
      this.client.on('+subscriber', () => { this.#shardedSubscribers++; this.#watchSubscribers() })
      this.client.on('-subscriber', () => { this.#shardedSubscribers = Math.max(0, this.#shardedSubscribers - 1) })
      this.client.on('subscribersReady', () => { this.#watchSubscribers(); this.#onSubscriberReady() })
      this.client.on('smessage', (channel: string, message: string) => { this.#onMessage(channel, message) })
    } else {
      this.#sub.on('error', () => {})
      this.#sub.on('ready', () => { this.#onSubscriberReady() })
      this.#sub.on('message', (channel: string, message: string) => { this.#onMessage(channel, message) })
    }
  }

  get up (): boolean { return this.#up }

  /**
   * Cluster: when a watched service's slot migrates, the node that held it ends the sharded subscriptions to its
   * channels (a server-sent `sunsubscribe`). ioredis takes that for a reply without a command and only reports it as
   * an error of the subscriber connection, so nothing would follow the slot until this client's next command to it
   * or the next check (30–60 s). Each sharded subscriber connection is watched for it here: on one, the slot map is
   * refreshed (ioredis then moves the subscriptions to the new owners and reports them ready: the checks follow).
   */
  #watchSubscribers (): void {
    type Sub = { getInstance?: () => Redis | null }
    const c = this.client as unknown as { shardedSubscribers?: { shardedSubscribers?: Map<string, Sub> }, subscriberGroupEmitter?: { emit: (e: string) => void } }
    const subs = c.shardedSubscribers?.shardedSubscribers
    if (!(subs instanceof Map)) return
    for (const s of subs.values()) {
      const redis = s.getInstance?.()
      if (redis == null || this.#hooked.has(redis)) continue
      this.#hooked.add(redis)
      redis.on('error', (err: unknown) => {
        if (this.#closed || !(err instanceof Error) || !/Last reply: sunsubscribe,/.test(err.message)) return
        this.#log?.debug({ err }, 'a sharded subscription was ended by its node (a slot moved): refreshing the slot map')
        c.subscriberGroupEmitter?.emit('moved')
        this.#afterMove()
      })
    }
  }

  /**
   * A moment after a node ended sharded subscriptions: each watched service subscribes again (to the slot's owner by
   * then; a channel already subscribed stays as it is) and is checked. The refreshed slot map alone can lag a
   * migration still going on — a map read from a node not yet told of the new owner sends the subscription back to
   * the old one, which refuses it — and nothing else would notice until the next periodic check.
   */
  #afterMove (): void {
    if (this.#moveTimer !== null) return
    this.#moveTimer = setTimeout(() => {
      this.#moveTimer = null
      if (this.#closed) return
      for (const w of this.#watched.values()) {
        (this.client as Cluster).ssubscribe(this.#channel(w.service)).catch(() => {})
        this.#scheduleCheck(w, between(0, MOVE_SETTLE_MS))
      }
    }, MOVE_SETTLE_MS)
    this.#moveTimer.unref()
  }

  /**
   * Connections held now. Standalone and Sentinel: one for commands, plus one for subscriptions once something is
   * watched (a RESP2 connection in subscribe mode can run no other command, and ioredis speaks RESP2 only). Cluster:
   * one per master for commands, and one sharded subscriber per master.
   */
  connections (): Connections {
    if (this.client instanceof Cluster) {
      return { commands: this.client.nodes('all').filter((n) => n.status === 'ready').length, subscriber: this.#shardedSubscribers }
    }
    return { commands: this.client.status === 'ready' ? 1 : 0, subscriber: (this.#sub as Redis).status === 'ready' ? 1 : 0 }
  }

  onStatus (fn: (up: boolean) => void): () => void {
    this.#statusFns.add(fn)
    return () => { this.#statusFns.delete(fn) }
  }

  /** Resolves true once connected, false after `timeoutMs`. */
  async waitUp (timeoutMs: number): Promise<boolean> {
    if (this.#up) return true
    return await new Promise((resolve) => {
      const timer = setTimeout(() => { off(); resolve(false) }, timeoutMs)
      const off = this.onStatus((up) => { if (up) { clearTimeout(timer); off(); resolve(true) } })
    })
  }

  #setUp (up: boolean): void {
    if (this.#up === up || this.#closed) return
    this.#up = up
    for (const fn of this.#statusFns) {
      try { fn(up) } catch (err) { this.#log?.warn({ err }, 'registry status listener failed') }
    }
  }

  // --- keys ---
  #tag (service: string): string { return `${this.#prefix}:{${service}}` }
  #instKey (service: string, id: string): string { return `${this.#tag(service)}:i:${id}` }
  #idsKey (service: string): string { return `${this.#tag(service)}:ids` }
  #verKey (service: string): string { return `${this.#tag(service)}:ver` }
  #expKey (service: string): string { return `${this.#tag(service)}:exp` }
  #channel (service: string): string { return `${this.#tag(service)}:events` }
  #servicesKey (): string { return `${this.#prefix}:services` }

  // --- writes ---
  async register (inst: Instance, ttl: number): Promise<void> {
    this.#check()
    checkService(inst.service)
    if (inst.state === 'ejected') throw new Error('an instance cannot register itself as ejected')
    const s = inst.service
    const ms = Math.max(1, Math.round(ttl))
    this.#deadlines.delete(`${s}\n${inst.id}`)
    await this.#scripts.dmRegister(this.#instKey(s, inst.id), this.#idsKey(s), this.#verKey(s), this.#expKey(s), String(ms), inst.id, this.#channel(s), String(Date.now() + ms), ...toFields(inst))
    await this.client.sadd(this.#servicesKey(), s)
    // The service's org and env, for the checker's selectors by org (a canary group by org): one hash of every
    // labelled service, read once a round, written at registration only (not by heartbeats).
    if ((inst.org ?? '') !== '' || (inst.env ?? '') !== '') await this.client.hset(this.labelsKey(), s, JSON.stringify({ org: inst.org ?? '', env: inst.env ?? '' }))
  }

  /** `<prefix>:labels`: service → {"org","env"} of its labelled instances' last registration. */
  labelsKey (): string { return `${this.#prefix}:labels` }

  async #update (service: string, id: string, ttl: number | null, fields: string[]): Promise<boolean> {
    const deadline = ttl === null ? '' : String(Date.now() + ttl)
    return (await this.#scripts.dmUpdate(this.#instKey(service, id), this.#verKey(service), this.#expKey(service), ttl === null ? '' : String(ttl), this.#channel(service), id, deadline, ...fields)) === 1
  }

  async heartbeat (service: string, id: string, ttl: number, patch?: InstancePatch): Promise<boolean> {
    this.#check()
    const ms = Math.max(1, Math.round(ttl))
    const fields = patch !== undefined ? patchFields(patch) : []
    if (fields.length > 0) return await this.#update(service, id, ms, fields)
    // The common case, every few seconds per instance, without a script and in one round trip: a PEXPIRE; every
    // other beat or so the deadline too (ZADD XX), written a third of a TTL ahead so that it covers the beat in
    // between; and the sweep's probe, the first ids of the service past their deadline (nearly always none). A busy
    // service's heartbeats so find an expired instance within moments; the instance that finds it sweeps it.
    const key = `${service}\n${id}`
    const now = Date.now()
    const written = this.#deadlines.get(key) ?? 0
    const instKey = this.#instKey(service, id)
    const expKey = this.#expKey(service)
    const p = this.client.pipeline().pexpire(instKey, ms)
    const deadline = written >= now + ms ? 0 : now + Math.round(ms * 4 / 3)
    if (deadline !== 0) p.zadd(expKey, 'XX', deadline, id)
    p.zrangebyscore(expKey, '-inf', now - CLOCK_SLACK_MS, 'LIMIT', 0, PROBE_LIMIT)
    const r = await p.exec()
    if (r === null) throw new Error('heartbeat pipeline aborted')
    for (const [err] of r) if (err !== null) throw err
    const present = r[0][1] === 1
    if (deadline !== 0) {
      if (present) this.#deadlines.set(key, deadline)
      else this.#deadlines.delete(key)
    }
    const overdue = (r[r.length - 1][1] as string[]).filter((o) => o !== id)
    if (overdue.length > 0) this.sweep(service, overdue).catch(() => {})
    return present
  }

  async update (service: string, id: string, patch: InstancePatch): Promise<boolean> {
    this.#check()
    const fields = patchFields(patch)
    if (fields.length === 0) return (await this.client.exists(this.#instKey(service, id))) === 1
    return await this.#update(service, id, null, fields)
  }

  async setEjected (service: string, id: string, ejected: boolean): Promise<boolean> {
    this.#check()
    return await this.#update(service, id, null, ['ejected', ejected ? '1' : '0'])
  }

  async deregister (service: string, id: string): Promise<void> {
    this.#check()
    this.#deadlines.delete(`${service}\n${id}`)
    await this.#scripts.dmDeregister(this.#instKey(service, id), this.#idsKey(service), this.#verKey(service), this.#expKey(service), id, this.#channel(service))
  }

  /** Removes the given ids whose records have expired, publishing each removal; resolves with how many it removed. */
  async sweep (service: string, ids: readonly string[]): Promise<number> {
    this.#check()
    if (ids.length === 0) return 0
    const keys = [this.#idsKey(service), this.#verKey(service), this.#expKey(service), ...ids.map((id) => this.#instKey(service, id))]
    this.stats.sweeps++
    const n = await this.#scripts.dmSweep(keys.length, ...keys, this.#channel(service), ...ids)
    this.stats.swept += n
    return n
  }

  // --- reads ---
  async services (): Promise<string[]> {
    this.#check()
    const all = await this.client.smembers(this.#servicesKey())
    const counts = await Promise.all(all.map(async (s) => await this.client.scard(this.#idsKey(s))))
    return all.filter((_, i) => counts[i] > 0).sort()
  }

  /** A full listing in read-only steps (the ids with the version and the clock, then the records in batches). */
  async #listRaw (service: string): Promise<{ listedAt: number, version: number, epoch: string, instances: Instance[] }> {
    this.stats.listings++
    const [clock, ver, epoch, ids] = await this.#scripts.dmIds(this.#idsKey(service), this.#verKey(service))
    const listedAt = Number(clock)
    const instances: Instance[] = []
    const gone: string[] = []
    for (let i = 0; i < ids.length; i += READ_BATCH) {
      const batch = ids.slice(i, i + READ_BATCH)
      const rows = await this.#scripts.dmRead(batch.length, ...batch.map((id) => this.#instKey(service, id)))
      for (let j = 0; j < batch.length; j++) {
        const inst = rows[j].length === 0 ? undefined : fromFields(rows[j])
        if (inst !== undefined) instances.push(inst)
        else if (rows[j].length === 0) gone.push(batch[j])
      }
    }
    // Ids whose record is gone: expired (or deleted since the ids were read); the sweep tells everyone once.
    if (gone.length > 0) this.sweep(service, gone).catch(() => {})
    instances.sort(byId)
    return { listedAt, version: Number(ver), epoch, instances }
  }

  async list (service: string): Promise<Instance[]> {
    this.#check()
    return (await this.#listRaw(service)).instances
  }

  /** A listing for views: warmup progress as of the listing (the records as written are what list() returns). */
  async #listForViews (service: string): Promise<{ listedAt: number, version: number, epoch: string, instances: Instance[] }> {
    const r = await this.#listRaw(service)
    return { ...r, instances: r.instances.map((i) => asOf(i, r.listedAt)) }
  }

  // --- watches ---
  watch (service: string, fn?: WatchListener): Watch {
    this.#check()
    let w = this.#watched.get(service)
    if (w === undefined) {
      const channel = this.#channel(service)
      this.#channels.set(channel, service)
      const sub = this.#sub as Redis
      const subscribing = this.target.mode === 'cluster' ? sub.ssubscribe(channel) : sub.subscribe(channel)
      // Bounded: a subscriber that can't connect yet doesn't hold the first listing back (the checks cover it).
      const subscribed = Promise.race([
        subscribing.then(() => {}, (err: unknown) => { this.#log?.debug({ err, service }, 'subscribe failed; the version check covers it') }),
        new Promise<void>((resolve) => { setTimeout(resolve, this.#timeout).unref() })
      ])
      w = { service, views: new Set(), known: null, epoch: '', listing: null, seen: 0, again: false, timer: null, graceTimer: null, subscribed, behind: 0 }
      this.#watched.set(service, w)
      // The first check at a random moment of the period: watches begun together (a sidecar starting) don't check
      // together.
      this.#scheduleCheck(w, Math.random() * this.#checkMs)
    }
    const watched = w
    const view = new ServiceView(service, () => {
      watched.views.delete(view)
      if (watched.views.size === 0 && this.#watched.get(service) === watched) {
        this.#watched.delete(service)
        if (watched.timer !== null) clearTimeout(watched.timer)
        if (watched.graceTimer !== null) clearTimeout(watched.graceTimer)
        const channel = this.#channel(service)
        this.#channels.delete(channel)
        if (!this.#closed) {
          const sub = this.#sub as Redis
          const leaving = this.target.mode === 'cluster' ? sub.sunsubscribe(channel) : sub.unsubscribe(channel)
          leaving.catch(() => {})
        }
      }
    }, fn)
    watched.views.add(view)
    void this.#firstListing(watched, view)
    return view
  }

  /** A new view starts from a listing of its own (retried soon when it fails: a new watch must not wait long). */
  async #firstListing (w: Watched, view: ServiceView): Promise<void> {
    await w.subscribed
    if (this.#closed || view.closed) return
    if (w.known === null) {
      await this.#relist(w)
      if (view.synced || view.closed || this.#closed) return
    }
    try {
      const { listedAt, instances } = await this.#listForViews(w.service)
      view.snapshot(instances, listedAt, Date.now(), Date.now() < this.#graceUntil)
    } catch (err) {
      this.#log?.debug({ err, service: w.service }, 'registry listing failed; retrying')
      if (!this.#closed && !view.closed) setTimeout(() => { void this.#firstListing(w, view) }, 250).unref()
    }
  }

  /** Lists the service again for all its views (one listing at a time; a gap seen meanwhile asks for another). */
  async #relist (w: Watched): Promise<void> {
    if (this.#closed) return
    if (w.listing !== null) { w.again = true; return await w.listing }
    w.seen = 0
    w.listing = (async () => {
      try {
        const { listedAt, version, epoch, instances } = await this.#listForViews(w.service)
        const keepMissing = Date.now() < this.#graceUntil
        for (const v of w.views) v.snapshot(instances, listedAt, Date.now(), keepMissing)
        w.known = Math.max(version, w.seen)
        w.epoch = epoch
        // Listed within the grace after a reconnect: what it kept only for the grace is listed again once it ends.
        if (keepMissing && w.graceTimer === null && [...w.views].some((v) => v.view.size > instances.length)) {
          w.graceTimer = setTimeout(() => { w.graceTimer = null; if (this.#watched.get(w.service) === w) void this.#relist(w) }, this.#graceUntil - Date.now() + 10)
          w.graceTimer.unref()
        }
      } catch (err) {
        this.#log?.debug({ err, service: w.service }, 'registry listing failed; keeping the last view')
        // A view still waiting for its first listing retries soon, not at the next check.
        if ([...w.views].some((v) => !v.synced) && !this.#closed) this.#scheduleCheck(w, 250, true)
      } finally {
        w.listing = null
      }
    })()
    await w.listing
    if (w.again && !this.#closed && this.#watched.get(w.service) === w) { w.again = false; await this.#relist(w) }
  }

  /** The delay to a watch's next periodic check: 2/3–4/3 of the period, at random. */
  #nextCheck (): number { return between(2 / 3, 4 / 3) * this.#checkMs }

  #scheduleCheck (w: Watched, ms: number, force = false): void {
    if (this.#closed) return
    if (w.timer !== null) clearTimeout(w.timer)
    w.timer = setTimeout(() => { w.timer = null; void this.#versionCheck(w, force) }, ms)
    w.timer.unref()
  }

  /**
   * The periodic check of one service, jittered: the version and the ids past their expiry (plain read-only
   * commands, one round trip). Lists again only when the version moved without this client seeing the messages;
   * sweeps expired ids (the heartbeats of the service's live instances sweep first; this covers a service with none).
   */
  async #versionCheck (w: Watched, force: boolean): Promise<void> {
    if (this.#closed || this.#watched.get(w.service) !== w) return
    try {
      if (w.known === null && w.listing !== null && !force) {
        // The first listing is under way (a check drawn early in its period): it is what this check would do.
        await w.listing
      } else if (force || w.known === null) {
        await this.#relist(w)
      } else {
        this.stats.checks++
        const [ver, epoch, overdue] = await this.#versionAndOverdue(w.service)
        if (overdue.length > 0) await this.#sweepOverdue(w.service, overdue)
        const version = Number(ver)
        // A new epoch or a version gone backwards: the store lost data (restarted empty, or failed over to a replica
        // that lagged). What it lost is probably alive and about to register again: the listing keeps it for the grace.
        // (An epoch first set since the last listing is the service's first write, not a loss.)
        if (w.epoch === '' && version === w.known) w.epoch = epoch
        const lost = (w.epoch !== '' && epoch !== w.epoch) || version < w.known
        if (lost) this.#graceUntil = Math.max(this.#graceUntil, Date.now() + this.#graceMs)
        const known = w.known
        if (!lost && epoch === w.epoch && version > known && w.listing === null && (w.behind === 0 || known >= w.behind)) {
          // Ahead of what was pushed: a write's message may still be on its way (it comes over the subscriber
          // connection, this reply over another). Look again in a moment; list only if the messages are still behind.
          w.behind = version
          this.#scheduleCheck(w, PUSH_GRACE_MS)
        } else if ((version !== known || epoch !== w.epoch) && w.listing === null) {
          w.behind = 0
          // Messages were missed; on a Cluster a subscription can also lapse when a slot moves: subscribe again.
          if (this.target.mode === 'cluster') (this.client as Cluster).ssubscribe(this.#channel(w.service)).catch(() => {})
          await this.#relist(w)
        } else {
          w.behind = 0
        }
      }
    } catch (err) {
      this.#log?.debug({ err, service: w.service }, 'registry check failed; keeping the last view')
    } finally {
      if (w.timer === null) this.#scheduleCheck(w, this.#nextCheck())
    }
  }

  /**
   * The check's reads, two plain read-only commands in one round trip (a replica can serve them): the version with
   * its epoch, and the first ids more than CLOCK_SLACK_MS past their deadline on this watcher's clock.
   */
  async #versionAndOverdue (service: string): Promise<[string, string, string[]]> {
    const r = await this.client.pipeline().hmget(this.#verKey(service), 'n', 'e').zrangebyscore(this.#expKey(service), '-inf', Date.now() - CLOCK_SLACK_MS, 'LIMIT', 0, PROBE_LIMIT).exec()
    if (r === null) throw new Error('check pipeline aborted')
    for (const [err] of r) if (err !== null) throw err
    const [n, e] = r[0][1] as Array<string | null>
    return [n ?? '0', e ?? '', r[1][1] as string[]]
  }

  /** Sweeps the overdue ids a check found, and while it found a full batch, the next ones (a whole service died). */
  async #sweepOverdue (service: string, overdue: string[]): Promise<void> {
    for (let ids = overdue, rounds = 0; ids.length > 0 && rounds < 100; rounds++) {
      const n = await this.sweep(service, ids).catch(() => -1)
      if (n <= 0 || ids.length < PROBE_LIMIT) return
      ids = await this.client.zrangebyscore(this.#expKey(service), '-inf', Date.now() - CLOCK_SLACK_MS, 'LIMIT', 0, PROBE_LIMIT)
    }
  }

  /** A connection came (back) up: after the first time, the store may have lost data. */
  #reconnected (which: 'main' | 'sub'): void {
    if (this.#connectedOnce[which]) this.#graceUntil = Date.now() + this.#graceMs
    this.#connectedOnce[which] = true
  }

  #onSubscriberReady (): void {
    const again = this.#connectedOnce.sub
    // On a Cluster the subscribers also come back after a slot moved (no data lost): the grace is for reconnects of
    // the command connection, and for a version seen going backwards (see #versionCheck).
    if (this.target.mode === 'cluster') this.#connectedOnce.sub = true
    else this.#reconnected('sub')
    if (!again) return
    // Messages may have been missed while disconnected: each service's version says whether any were. The checks
    // spread over the jitter window, so that a failover doesn't bring every watcher of the fleet back at once.
    for (const w of this.#watched.values()) this.#scheduleCheck(w, between(0, this.#jitterMs))
  }

  #onMessage (channel: string, message: string): void {
    const service = this.#channels.get(channel)
    if (service === undefined) return
    const w = this.#watched.get(service)
    if (w === undefined) return
    let msg: { t?: string, v?: number, h?: string[], id?: string, rev?: string }
    try { msg = JSON.parse(message) } catch { return }
    if (msg.t === 'put' && Array.isArray(msg.h)) {
      const inst = fromFields(msg.h)
      if (inst === undefined || inst.service !== service) return
      for (const v of w.views) v.put(inst)
    } else if (msg.t === 'del' && typeof msg.id === 'string') {
      const rev = Number(msg.rev ?? 0)
      for (const v of w.views) v.delete(msg.id, Number.isFinite(rev) ? rev : 0)
    } else {
      return
    }
    // Versions: the next one in line moves `known` on; a jump means messages were lost: list again. (Messages
    // without a version come from writers that don't keep one; they are applied, the periodic check covers them.)
    const v = msg.v
    if (typeof v !== 'number') return
    if (w.listing !== null) { w.seen = Math.max(w.seen, v); return }
    if (w.known === null || v <= w.known) return
    if (v === w.known + 1) { w.known = v; return }
    this.stats.gaps++
    void this.#relist(w)
  }

  async close (): Promise<void> {
    if (this.#closed) return
    if (this.#moveTimer !== null) { clearTimeout(this.#moveTimer); this.#moveTimer = null }
    for (const w of this.#watched.values()) {
      if (w.timer !== null) clearTimeout(w.timer)
      if (w.graceTimer !== null) clearTimeout(w.graceTimer)
      for (const v of [...w.views]) v.close()
    }
    this.#closed = true
    this.#watched.clear()
    this.#statusFns.clear()
    this.#up = false
    const clients = this.#sub === this.client ? [this.client] : [this.client, this.#sub]
    // A subscriber that never connected (nothing was watched) has nothing to quit.
    await Promise.allSettled(clients.filter((c) => c.status !== 'wait').map(async (c) => await c.quit()))
    for (const c of clients) c.disconnect()
  }

  #check (): void {
    if (this.#closed) throw new Error('the registry is closed')
  }
}
