// `doorman instances SERVICE [--json]` against a private redis-server, through the built CLI.
import t from 'tap'
import { RedisRegistry, parseRegistryUrl, type Instance, type RedisTarget } from '../src/registry/index.js'
import { CLI, spawnNode, freePort } from './helpers/index.js'
import { startRedis } from './helpers/redis.js'

function instance (id: string, over: Partial<Instance> = {}): Instance {
  const now = Date.now()
  return { id, service: 'orders', cluster: 'default', zone: 'z1', address: `10.0.0.${id.length}:7080`, adminPort: 7090, startedAt: now - 5000, registeredAt: now - 3000, warmup: { window: 60_000, aggression: 1, minWeight: 10, progress: 0.05 }, weight: 10, state: 'warming', ejected: false, updatedAt: now, rev: 0, ...over }
}

async function run (t: Tap.Test, args: string[], env: Record<string, string>): Promise<{ code: number | null, out: string }> {
  const c = spawnNode(t, [CLI, 'instances', ...args], env)
  const { code } = await c.exited
  return { code, out: c.output() }
}

t.test('lists what the registry holds', async (t) => {
  const server = await startRedis(t)
  const reg = new RedisRegistry({ target: parseRegistryUrl(server.url) as RedisTarget })
  t.teardown(async () => { await reg.close() })
  await reg.waitUp(5000)
  await reg.register(instance('a1'), 30_000)
  await reg.register(instance('b22', { zone: '', state: 'up', weight: 100, warmup: { window: 0, aggression: 1, minWeight: 10, progress: 1 } }), 30_000)
  await reg.setEjected('orders', 'b22', true)
  const env = { DOORMAN_REGISTRY: server.url }

  const json = await run(t, ['orders', '--json'], env)
  t.equal(json.code, 0, json.out)
  const list = JSON.parse(json.out) as Array<Record<string, unknown>>
  t.equal(list.length, 2)
  t.match(list[0], { id: 'a1', address: '10.0.0.2:7080', zone: 'z1', cluster: 'default', state: 'warming', weight: 10, warmup: { progress: 0.05, window: 60_000, aggression: 1, minWeight: 10 } })
  t.match(list[1], { id: 'b22', zone: '', state: 'ejected', weight: 100 })

  const table = await run(t, ['ORDERS'], env)
  t.equal(table.code, 0)
  const lines = table.out.trim().split('\n')
  t.match(lines[0], /^ID\s+ADDRESS\s+ZONE\s+CLUSTER\s+STATE\s+WEIGHT\s+WARMUP\s+AGE\s+CHECK$/)
  t.match(lines[1], /^a1\s+10\.0\.0\.2:7080\s+z1\s+default\s+warming\s+10%\s+5%\s+\d+s\s+(lane|connect)$/)
  t.match(lines[2], /^b22\s+10\.0\.0\.3:7080\s+-\s+default\s+ejected\s+100%\s+off/)

  const none = await run(t, ['nobody', '--json'], env)
  t.equal(none.code, 0)
  t.same(JSON.parse(none.out), [])
})

t.test('usage, unreachable registry, bad configuration', async (t) => {
  t.equal((await run(t, [], {})).code, 1)
  t.equal((await run(t, ['a', 'b'], {})).code, 1)
  t.equal((await run(t, ['orders', '--frob'], {})).code, 1)
  t.equal((await run(t, ['Bad Name'], {})).code, 1)
  const port = await freePort()
  const down = await run(t, ['orders'], { DOORMAN_REGISTRY: `redis://127.0.0.1:${port}` })
  t.equal(down.code, 1)
  t.match(down.out, /unreachable/)
  const bad = await run(t, ['orders'], { DOORMAN_REGISTRY: 'redis://h?frob=1' })
  t.equal(bad.code, 78)
  t.match(bad.out, /DOORMAN_REGISTRY/)
  const mem = await run(t, ['orders', '--json'], {})
  t.equal(mem.code, 0)
  t.match(mem.out, /memory/)
})
