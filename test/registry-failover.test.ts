// The Redis primary killed and restarted (empty) under 2,000 simulated instances (20 services × 100, the real
// Registration loop each, sharing one client) and three consumers watching every service: no consumer's view drops
// an instance at any moment, and the instances come back spread over the jitter window (TTL / 6: 1.5 s for the 9 s
// TTL here, wide enough for this process's own event-loop lag under the load) instead of in one burst.
import t from 'tap'
import { RedisRegistry, parseRegistryUrl, type Registry, type RedisTarget, type Instance, type InstancePatch } from '../src/registry/index.js'
import { Registration } from '../src/registry/registration.js'
import { createLogger } from '../src/core/log.js'
import { waitFor } from './helpers/index.js'
import { startRedis } from './helpers/redis.js'

const SERVICES = 20
const PER_SERVICE = 100
const TTL = 9000

/** The registry as the instances see it, noting when each one talks to Redis (its first command after the outage). */
function noting (reg: RedisRegistry, calls: Array<{ at: number, id: string }>): Registry {
  return {
    kind: 'redis',
    get up () { return reg.up },
    onStatus: (fn) => reg.onStatus(fn),
    waitUp: async (ms) => await reg.waitUp(ms),
    register: async (inst: Instance, ttl: number) => { calls.push({ at: Date.now(), id: inst.id }); await reg.register(inst, ttl) },
    heartbeat: async (service: string, id: string, ttl: number, patch?: InstancePatch) => { calls.push({ at: Date.now(), id }); return await reg.heartbeat(service, id, ttl, patch) },
    update: async (service, id, patch) => await reg.update(service, id, patch),
    setEjected: async (service, id, e) => await reg.setEjected(service, id, e),
    deregister: async (service, id) => { await reg.deregister(service, id) },
    services: async () => await reg.services(),
    list: async (service) => await reg.list(service),
    watch: (service, fn) => reg.watch(service, fn),
    close: async () => { await reg.close() }
  }
}

t.test('Redis killed and restarted empty under 2,000 instances: no view drops anything, the return is spread', async (t) => {
  const redis = await startRedis(t)
  const target = parseRegistryUrl(redis.url) as RedisTarget
  const log = createLogger('error', { write: () => {} })
  const shared = new RedisRegistry({ target, commandTimeout: 2000 })
  t.teardown(async () => { await shared.close() })
  t.ok(await shared.waitUp(5000), 'connected')
  const calls: Array<{ at: number, id: string }> = []
  const reg = noting(shared, calls)
  const services = Array.from({ length: SERVICES }, (_, i) => `fleet-${i}`)
  const regs: Registration[] = []
  t.teardown(async () => { for (const r of regs) await r.close() })
  for (const service of services) {
    for (let i = 0; i < PER_SERVICE; i++) {
      const r = new Registration({ registry: reg, id: `${service}-${i}`, service, cluster: 'default', zone: 'z1', warmup: { window: 0, aggression: 1, minWeight: 10 }, ttl: TTL, delay: 0, log })
      r.setEndpoint(`127.0.0.1:${10_000 + i}`, 20_000 + i)
      r.setAppReady(true)
      regs.push(r)
    }
  }

  // Three consumers, as sidecars configure them: checks every TTL/3, listings keep all for max(TTL, 5 s) after a loss.
  const dropped: string[] = []
  const consumers = [0, 1, 2].map(() => new RedisRegistry({ target, checkMs: TTL / 3, reconnectGraceMs: Math.max(TTL, 5000) }))
  t.teardown(async () => { for (const c of consumers) await c.close() })
  const views = consumers.flatMap((c, n) => services.map((s) => c.watch(s, (_view, change) => { if (change.type === 'delete') dropped.push(`${n}:${change.id}`) })))
  await waitFor('every consumer sees all 2,000', () => views.every((v) => v.view.size === PER_SERVICE), 30_000, 100)

  await redis.kill()
  await waitFor('the instances see Redis down', () => !shared.up, 10_000)
  // Commands fail at once while it is down (no queueing); the views keep everything.
  await new Promise((resolve) => setTimeout(resolve, TTL / 3))
  t.same(dropped, [], 'nothing dropped while Redis is down')

  const before = calls.length
  await redis.restart()
  const upAt = await waitFor('the instances see Redis back', () => shared.up ? Date.now() : undefined, 10_000, 5)
  await waitFor('all 2,000 registered again', async () => {
    for (const s of services) if ((await shared.list(s)).length !== PER_SERVICE) return false
    return true
  }, 20_000, 200)
  // Through the grace after the loss and the listings that follow it, every consumer keeps all 2,000.
  const grace = Math.max(TTL, 5000)
  await waitFor('the grace has passed, and two checks more', () => Date.now() > upAt + grace + 2 * 1.5 * TTL / 3, 20_000, 100)
  t.ok(views.every((v) => v.view.size === PER_SERVICE), 'every view still holds all 2,000')
  t.same(dropped, [], 'no consumer dropped any instance at any moment')

  // The first command of each instance after Redis came back: spread over the jitter window (TTL / 6), not a burst.
  const first = new Map<string, number>()
  for (const c of calls.slice(before)) if (c.at >= upAt && !first.has(c.id)) first.set(c.id, c.at - upAt)
  t.equal(first.size, SERVICES * PER_SERVICE, 'every instance talked to Redis again')
  const window = TTL / 6
  const buckets = new Array(10).fill(0)
  for (const d of first.values()) buckets[Math.min(9, Math.floor(d / (window / 10)))]++
  t.comment(`first command after the restart, per tenth of the ${window} ms window: ${buckets.join(' ')}`)
  // Measured when each call was made, so this process's own event-loop stalls under the load bunch them somewhat;
  // a burst (no jitter) puts every one of them in the first tenth.
  const n = first.size
  const sorted = [...first.values()].sort((a, b) => a - b)
  t.ok(buckets[0] <= n * 0.25, `the first tenth of the window takes at most a quarter of them (${buckets[0]} of ${n})`)
  t.ok(Math.max(...buckets) <= n * 0.5, `no tenth takes more than half (most: ${Math.max(...buckets)})`)
  const spread = sorted[Math.floor(n * 0.9)] - sorted[Math.floor(n * 0.1)]
  t.ok(spread >= window * 0.4, `the middle 80 % of them spread over ${spread} ms (≥ 40 % of the window)`)
  // And the consumers didn't all list at once: each service was checked first, and listed only because it changed.
  for (const c of consumers) t.ok(c.stats.gaps + c.stats.listings < 10 * SERVICES, `a consumer's listings stay bounded (${c.stats.listings})`)
})
