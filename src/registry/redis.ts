// The registry in Redis through ioredis: standalone, Sentinel or Cluster. See docs/registry.md for the key layout.
//
// Every write is one Lua script that changes the instance's hash and publishes the new record on the service's
// channel in the same step, so watchers learn of it within milliseconds; a periodic full listing per watched
// service is the safety net (lost messages, reconnects, TTL expiries when keyspace events are off). All keys of a
// service share the hash tag `{service}`, so each script touches one Cluster slot.
//
// Commands never queue while Redis is unreachable (enableOfflineQueue: false): they fail at once, and callers
// (the registration loop, the outbound lane's watches) keep what they had and retry with backoff.
import { Redis, Cluster, type RedisOptions, type ClusterOptions } from 'ioredis'
import type { Logger } from '../core/log.js'
import type { Instance, InstancePatch, OwnState, Registry, Watch, WatchListener } from './types.js'
import { STATES, backoff, byId, checkService, effectiveState } from './types.js'
import type { RedisTarget } from './url.js'
import { ServiceView } from './view.js'

const REGISTER = `
local t = redis.call('TIME')
local rev = t[1] .. string.format('%06d', tonumber(t[2]))
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'rev', rev, unpack(ARGV, 4))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('PUBLISH', ARGV[3], cjson.encode({t = 'put', h = redis.call('HGETALL', KEYS[1])}))
return rev`

const UPDATE = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if #ARGV > 2 then
  local t = redis.call('TIME')
  redis.call('HSET', KEYS[1], 'rev', t[1] .. string.format('%06d', tonumber(t[2])), unpack(ARGV, 3))
  redis.call('PUBLISH', ARGV[2], cjson.encode({t = 'put', h = redis.call('HGETALL', KEYS[1])}))
end
if ARGV[1] ~= '' then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 1`

const DEREGISTER = `
local t = redis.call('TIME')
local rev = t[1] .. string.format('%06d', tonumber(t[2]))
local n = redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
if n > 0 then redis.call('PUBLISH', ARGV[2], cjson.encode({t = 'del', id = ARGV[1], rev = rev})) end
return n`

// Lists a service's instances in one step (one slot): the store's clock first, then each record; ids whose record
// has expired are dropped from the id set on the way.
const LIST = `
local t = redis.call('TIME')
local out = {t[1] .. string.format('%06d', tonumber(t[2]))}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local h = redis.call('HGETALL', ARGV[1] .. id)
  if #h == 0 then redis.call('SREM', KEYS[1], id) else out[#out + 1] = h end
end
return out`

type Client = Redis | Cluster
interface Scripts {
  dmRegister: (instKey: string, idsKey: string, ...args: string[]) => Promise<string>
  dmUpdate: (instKey: string, ...args: string[]) => Promise<number>
  dmDeregister: (instKey: string, idsKey: string, ...args: string[]) => Promise<number>
  dmList: (idsKey: string, instPrefix: string) => Promise<Array<string | string[]>>
}

export interface RedisRegistryOptions {
  target: RedisTarget
  log?: Logger
  /** Full resync period of each watch, in milliseconds (default 5 s). */
  resyncMs?: number
  /** Longest wait for one command, in milliseconds (default 2 s). */
  commandTimeout?: number
  /**
   * After a reconnect, how long listings only add and update, never remove (default 15 s; use the registry TTL):
   * a Redis that restarted empty lists nothing until the instances have registered again, and a watcher must not
   * drop every instance meanwhile. Pushed deletions still apply at once.
   */
  reconnectGraceMs?: number
}

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
      const { enableOfflineQueue: _q, ...redisOptions } = common
      return {
        nodes: t.nodes,
        cluster: {
          enableOfflineQueue: subscriber,
          enableReadyCheck: true,
          clusterRetryStrategy: backoff,
          slotsRefreshTimeout: Math.max(commandTimeout, 1000),
          redisOptions: { ...redisOptions, tls: t.tls ? {} : undefined }
        }
      }
    }
  }
}

function createClient (t: RedisTarget, commandTimeout: number, subscriber: boolean): Client {
  const o = clientOptions(t, commandTimeout, subscriber)
  const client: Client = t.mode === 'cluster' ? new Cluster(o.nodes ?? [], o.cluster) : new Redis(o.redis as RedisOptions)
  if (!subscriber) {
    const c = client as unknown as { defineCommand: (name: string, def: { numberOfKeys: number, lua: string }) => void }
    c.defineCommand('dmRegister', { numberOfKeys: 2, lua: REGISTER })
    c.defineCommand('dmUpdate', { numberOfKeys: 1, lua: UPDATE })
    c.defineCommand('dmDeregister', { numberOfKeys: 2, lua: DEREGISTER })
    c.defineCommand('dmList', { numberOfKeys: 1, lua: LIST })
  }
  return client
}

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
    'updatedAt', String(inst.updatedAt)
  ]
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
    rev: num('rev')
  }
}

export class RedisRegistry implements Registry {
  readonly kind = 'redis' as const
  readonly target: RedisTarget
  readonly client: Client
  readonly #sub: Client
  #scripts: Scripts
  #log: Logger | undefined
  #prefix: string
  #resyncMs: number
  #up = false
  #statusFns = new Set<(up: boolean) => void>()
  /** Watched services → their views. */
  #views = new Map<string, Set<ServiceView>>()
  #channels = new Map<string, string>()
  #resyncTimer: NodeJS.Timeout
  #closed = false
  #expiryPattern: string | null = null
  #connectedOnce = { main: false, sub: false }
  #graceUntil = 0
  #graceMs: number

  constructor (opts: RedisRegistryOptions) {
    this.target = opts.target
    this.#log = opts.log
    this.#prefix = opts.target.prefix
    this.#resyncMs = opts.resyncMs ?? 5000
    this.#graceMs = opts.reconnectGraceMs ?? 15_000
    const timeout = opts.commandTimeout ?? 2000
    this.client = createClient(opts.target, timeout, false)
    this.#scripts = this.client as unknown as Scripts
    this.#sub = createClient(opts.target, timeout, true)
    this.client.on('ready', () => { this.#reconnected('main'); this.#setUp(true); void this.#watchExpiries() })
    this.client.on('close', () => { this.#setUp(false) })
    this.client.on('end', () => { this.#setUp(false) })
    // Errors surface through status changes and failed commands; an 'error' listener keeps them from throwing.
    this.client.on('error', () => {})
    this.#sub.on('error', () => {})
    this.#sub.on('ready', () => { void this.#onSubscriberReady() })
    this.#sub.on('message', (channel: string, message: string) => { this.#onMessage(channel, message) })
    this.#sub.on('pmessage', (_pattern: string, _channel: string, key: string) => { this.#onExpired(key) })
    this.#resyncTimer = setInterval(() => { this.#resyncAll() }, this.#resyncMs)
    this.#resyncTimer.unref()
  }

  get up (): boolean { return this.#up }

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
  #channel (service: string): string { return `${this.#tag(service)}:events` }
  #servicesKey (): string { return `${this.#prefix}:services` }

  // --- writes ---
  async register (inst: Instance, ttl: number): Promise<void> {
    this.#check()
    checkService(inst.service)
    if (inst.state === 'ejected') throw new Error('an instance cannot register itself as ejected')
    await this.#scripts.dmRegister(this.#instKey(inst.service, inst.id), this.#idsKey(inst.service), String(Math.max(1, Math.round(ttl))), inst.id, this.#channel(inst.service), ...toFields(inst))
    await this.client.sadd(this.#servicesKey(), inst.service)
  }

  async heartbeat (service: string, id: string, ttl: number, patch?: InstancePatch): Promise<boolean> {
    this.#check()
    const r = await this.#scripts.dmUpdate(this.#instKey(service, id), String(Math.max(1, Math.round(ttl))), this.#channel(service), ...(patch !== undefined ? patchFields(patch) : []))
    return r === 1
  }

  async update (service: string, id: string, patch: InstancePatch): Promise<boolean> {
    this.#check()
    const fields = patchFields(patch)
    if (fields.length === 0) return (await this.client.exists(this.#instKey(service, id))) === 1
    return (await this.#scripts.dmUpdate(this.#instKey(service, id), '', this.#channel(service), ...fields)) === 1
  }

  async setEjected (service: string, id: string, ejected: boolean): Promise<boolean> {
    this.#check()
    return (await this.#scripts.dmUpdate(this.#instKey(service, id), '', this.#channel(service), 'ejected', ejected ? '1' : '0')) === 1
  }

  async deregister (service: string, id: string): Promise<void> {
    this.#check()
    await this.#scripts.dmDeregister(this.#instKey(service, id), this.#idsKey(service), id, this.#channel(service))
  }

  // --- reads ---
  async services (): Promise<string[]> {
    this.#check()
    const all = await this.client.smembers(this.#servicesKey())
    const counts = await Promise.all(all.map(async (s) => await this.client.scard(this.#idsKey(s))))
    return all.filter((_, i) => counts[i] > 0).sort()
  }

  async #listRaw (service: string): Promise<{ listedAt: number, instances: Instance[] }> {
    const raw = await this.#scripts.dmList(this.#idsKey(service), `${this.#tag(service)}:i:`)
    const listedAt = Number(raw[0])
    const instances: Instance[] = []
    for (let i = 1; i < raw.length; i++) {
      const inst = fromFields(raw[i] as string[])
      if (inst !== undefined) instances.push(inst)
    }
    instances.sort(byId)
    return { listedAt, instances }
  }

  async list (service: string): Promise<Instance[]> {
    this.#check()
    return (await this.#listRaw(service)).instances
  }

  // --- watches ---
  watch (service: string, fn?: WatchListener): Watch {
    this.#check()
    let set = this.#views.get(service)
    if (set === undefined) {
      set = new Set()
      this.#views.set(service, set)
      const channel = this.#channel(service)
      this.#channels.set(channel, service)
      this.#sub.subscribe(channel).catch((err: unknown) => { this.#log?.debug({ err, service }, 'subscribe failed; the resync covers it') })
    }
    const views = set
    const view = new ServiceView(service, () => {
      views.delete(view)
      if (views.size === 0 && this.#views.get(service) === views) {
        this.#views.delete(service)
        const channel = this.#channel(service)
        this.#channels.delete(channel)
        if (!this.#closed) this.#sub.unsubscribe(channel).catch(() => {})
      }
    }, fn)
    views.add(view)
    void this.#resync(service, [view])
    return view
  }

  async #resync (service: string, only?: ServiceView[]): Promise<void> {
    if (this.#closed) return
    try {
      const { listedAt, instances } = await this.#listRaw(service)
      const keepMissing = Date.now() < this.#graceUntil
      for (const v of only ?? [...(this.#views.get(service) ?? [])]) v.snapshot(instances, listedAt, Date.now(), keepMissing)
    } catch (err) {
      this.#log?.debug({ err, service }, 'registry resync failed; keeping the last view')
      // A first listing that failed is retried soon, not at the next period: a new watch must not wait long.
      const pending = (only ?? [...(this.#views.get(service) ?? [])]).filter((v) => !v.synced && !v.closed)
      if (pending.length > 0 && !this.#closed) setTimeout(() => { void this.#resync(service, pending) }, 250).unref()
    }
  }

  #resyncAll (): void {
    for (const service of this.#views.keys()) void this.#resync(service)
  }

  /** A connection came (back) up: after the first time, the store may have lost data. */
  #reconnected (which: 'main' | 'sub'): void {
    if (this.#connectedOnce[which]) this.#graceUntil = Date.now() + this.#graceMs
    this.#connectedOnce[which] = true
  }

  async #onSubscriberReady (): Promise<void> {
    this.#reconnected('sub')
    // After a (re)connect: messages may have been missed, so list everything again; and look for expiry events.
    this.#resyncAll()
    await this.#watchExpiries()
  }

  /** Subscribes to expiry events when the server publishes them (needs both connections up; runs once). */
  async #watchExpiries (): Promise<void> {
    if (this.target.mode === 'cluster' || this.#expiryPattern !== null || this.#closed) return
    if (this.client.status !== 'ready' || this.#sub.status !== 'ready') return
    try {
      const cfg = await this.client.config('GET', 'notify-keyspace-events') as string[]
      const flags = cfg[1] ?? ''
      if ((flags.includes('E') && (flags.includes('x') || flags.includes('A'))) && !this.#closed && this.#expiryPattern === null) {
        this.#expiryPattern = `__keyevent@${this.target.db}__:expired`
        await this.#sub.psubscribe(this.#expiryPattern)
      }
    } catch {
      // CONFIG may be disabled (managed Redis): the periodic resync catches expiries.
    }
  }

  #onMessage (channel: string, message: string): void {
    const service = this.#channels.get(channel)
    if (service === undefined) return
    const views = this.#views.get(service)
    if (views === undefined) return
    let msg: { t?: string, h?: string[], id?: string, rev?: string }
    try { msg = JSON.parse(message) } catch { return }
    if (msg.t === 'put' && Array.isArray(msg.h)) {
      const inst = fromFields(msg.h)
      if (inst === undefined || inst.service !== service) return
      for (const v of views) v.put(inst)
    } else if (msg.t === 'del' && typeof msg.id === 'string') {
      const rev = Number(msg.rev ?? 0)
      for (const v of views) v.delete(msg.id, Number.isFinite(rev) ? rev : 0)
    }
  }

  #onExpired (key: string): void {
    // <prefix>:{<service>}:i:<id>
    const head = `${this.#prefix}:{`
    if (!key.startsWith(head)) return
    const close = key.indexOf('}:i:', head.length)
    if (close === -1) return
    const service = key.slice(head.length, close)
    const id = key.slice(close + 4)
    for (const v of this.#views.get(service) ?? []) v.delete(id, 0)
  }

  async close (): Promise<void> {
    if (this.#closed) return
    clearInterval(this.#resyncTimer)
    for (const set of this.#views.values()) for (const v of [...set]) v.close()
    this.#closed = true
    this.#views.clear()
    this.#statusFns.clear()
    this.#up = false
    await Promise.allSettled([this.client.quit(), this.#sub.quit()])
    this.client.disconnect()
    this.#sub.disconnect()
  }

  #check (): void {
    if (this.#closed) throw new Error('the registry is closed')
  }
}
