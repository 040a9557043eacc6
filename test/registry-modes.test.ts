// The Redis registry against a real Sentinel and a real three-node Cluster, both started from the redis-server here.
import t from 'tap'
import { RedisRegistry, parseRegistryUrl, type Instance, type RedisTarget } from '../src/registry/index.js'
import { waitFor } from './helpers/index.js'
import { startSentinel, startCluster, redisCommand } from './helpers/redis.js'

function instance (service: string, id: string): Instance {
  const now = Date.now()
  return { id, service, cluster: 'default', zone: '', address: '127.0.0.1:1', adminPort: 2, startedAt: now, registeredAt: now, warmup: { window: 0, aggression: 1, minWeight: 10, progress: 1 }, weight: 100, state: 'up', ejected: false, updatedAt: now, rev: 0 }
}

async function exercise (t: Tap.Test, url: string): Promise<RedisRegistry> {
  const reg = new RedisRegistry({ target: parseRegistryUrl(url) as RedisTarget, checkMs: 1000 })
  t.teardown(async () => { await reg.close() })
  t.ok(await reg.waitUp(10_000), 'connected')
  const services = ['orders', 'payments', 'users', 'search', 'cart']
  const views = services.map((s) => reg.watch(s))
  t.teardown(() => { for (const v of views) v.close() })
  await Promise.all(views.map(async (v) => { await v.ready }))
  for (const s of services) await reg.register(instance(s, `${s}-1`), 10_000)
  for (let i = 0; i < services.length; i++) {
    await waitFor(`watch ${services[i]}`, () => views[i].view.has(`${services[i]}-1`), 5000)
  }
  t.same(await reg.services(), [...services].sort())
  t.equal(await reg.heartbeat('orders', 'orders-1', 10_000, { state: 'draining' }), true)
  await waitFor('draining pushed', () => views[0].view.get('orders-1')?.state === 'draining', 5000)
  t.equal(await reg.setEjected('cart', 'cart-1', true), true)
  await waitFor('ejection pushed', () => views[4].view.get('cart-1')?.state === 'ejected', 5000)
  await reg.deregister('users', 'users-1')
  await waitFor('deregistration pushed', () => !views[2].view.has('users-1'), 5000)
  t.same(await reg.list('users'), [])
  return reg
}

t.test('Sentinel: the registry finds the master through the sentinel', async (t) => {
  const { master, url } = await startSentinel(t)
  await exercise(t, url)
  t.match(await redisCommand(master.port, 'EXISTS', 'doorman:{orders}:i:orders-1'), /^:1/, 'the records live on the master the sentinel names')
})

t.test('Cluster: every service keeps its keys in one slot; services spread over the nodes', async (t) => {
  const { ports, url } = await startCluster(t)
  await exercise(t, url)
  // Each service's keys sit on exactly one node (the hash tag), and the five services use more than one node.
  const owners = new Set<number>()
  for (const s of ['orders', 'payments', 'search', 'cart']) {
    const holders: number[] = []
    for (const p of ports) if ((await redisCommand(p, 'SISMEMBER', `doorman:{${s}}:ids`, `${s}-1`)).startsWith(':1')) holders.push(p)
    t.equal(holders.length, 1, `${s}'s id set lives on one node`)
    const slotInfo = await redisCommand(ports[0], 'CLUSTER', 'KEYSLOT', `doorman:{${s}}:ids`)
    const slotInst = await redisCommand(ports[0], 'CLUSTER', 'KEYSLOT', `doorman:{${s}}:i:${s}-1`)
    t.equal(slotInfo, slotInst, `${s}: ids and records share a slot`)
    owners.add(holders[0])
  }
  t.ok(owners.size > 1, `services spread over ${owners.size} nodes`)
})

/** The bulk strings of a RESP reply (arrays flattened), in order. */
function bulks (reply: string): string[] {
  const out: string[] = []
  const lines = reply.split('\r\n')
  for (let i = 0; i < lines.length; i++) if (lines[i].startsWith('$') && lines[i] !== '$-1') out.push(lines[++i])
  return out
}

t.test('Cluster: a watched service\'s slot migrates to another node: nothing lost, pushes follow it', async (t) => {
  const { ports, url } = await startCluster(t)
  const reg = new RedisRegistry({ target: parseRegistryUrl(url) as RedisTarget, checkMs: 500 })
  t.teardown(async () => { await reg.close() })
  t.ok(await reg.waitUp(10_000), 'connected')
  // The watcher's periodic check is far off: what makes its subscription follow the slot is the node ending it.
  const watcher = new RedisRegistry({ target: parseRegistryUrl(url) as RedisTarget, checkMs: 600_000 })
  t.teardown(async () => { await watcher.close() })
  const w = watcher.watch('orders')
  t.teardown(() => { w.close() })
  await w.ready
  for (let i = 0; i < 5; i++) await reg.register(instance('orders', `orders-${i}`), 60_000)
  await waitFor('all five seen', () => w.view.size === 5, 5000)

  const slot = (await redisCommand(ports[0], 'CLUSTER', 'KEYSLOT', '{orders}')).slice(1).trim()
  const ids = await Promise.all(ports.map(async (p) => bulks(await redisCommand(p, 'CLUSTER', 'MYID'))[0]))
  let from = -1
  for (let i = 0; i < 3; i++) if ((await redisCommand(ports[i], 'CLUSTER', 'COUNTKEYSINSLOT', slot)).startsWith(':') && !(await redisCommand(ports[i], 'CLUSTER', 'COUNTKEYSINSLOT', slot)).startsWith(':0')) from = i
  t.ok(from >= 0, 'found the node holding the slot')
  const to = (from + 1) % 3
  t.match(await redisCommand(ports[to], 'CLUSTER', 'SETSLOT', slot, 'IMPORTING', ids[from]), /^\+OK/)
  t.match(await redisCommand(ports[from], 'CLUSTER', 'SETSLOT', slot, 'MIGRATING', ids[to]), /^\+OK/)
  const keys = bulks(await redisCommand(ports[from], 'CLUSTER', 'GETKEYSINSLOT', slot, '1000'))
  t.ok(keys.length >= 8, `${keys.length} keys to move`)
  t.match(await redisCommand(ports[from], 'MIGRATE', '127.0.0.1', String(ports[to]), '', '0', '5000', 'KEYS', ...keys), /^\+OK/)
  for (const p of [ports[to], ports[from], ports[(from + 2) % 3]]) t.match(await redisCommand(p, 'CLUSTER', 'SETSLOT', slot, 'NODE', ids[to]), /^\+OK/)
  t.match(await redisCommand(ports[to], 'CLUSTER', 'COUNTKEYSINSLOT', slot), new RegExp(`^:${keys.length}`), 'the keys live on the new node')

  // Writes follow the slot (MOVED); the watcher's view loses nothing and learns of the writes after the move.
  t.equal(await reg.heartbeat('orders', 'orders-0', 60_000, { state: 'draining' }), true)
  await reg.deregister('orders', 'orders-1')
  await reg.register(instance('orders', 'orders-9'), 60_000)
  await waitFor('the writes after the move reach the watcher', () => w.view.get('orders-0')?.state === 'draining' && !w.view.has('orders-1') && w.view.has('orders-9'), 10_000)
  t.same([...w.view.keys()].sort(), ['orders-0', 'orders-2', 'orders-3', 'orders-4', 'orders-9'])
  // And pushes resume on the new node: a change arrives well before a check would list it.
  const listings = watcher.stats.listings
  await waitFor('subscribed on the new node', async () => (await redisCommand(ports[to], 'PUBSUB', 'SHARDNUMSUB', 'doorman:{orders}:events')).includes(':1'), 10_000)
  await reg.update('orders', 'orders-2', { state: 'draining' })
  await waitFor('pushed from the new node', () => w.view.get('orders-2')?.state === 'draining', 5000)
  t.equal(watcher.stats.listings, listings, 'pushed, not listed')
})
