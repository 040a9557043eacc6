// The checker's coordination in a real Redis (private redis-server per suite): the ejection budget taken atomically
// by several replicas at once, replica membership with TTLs, the mode table, ejections reaching watchers, the same
// scripts on a Redis Cluster; and the command line's exit codes.
import t from 'tap'
import { RedisRegistry, parseRegistryUrl, type RedisTarget, type Instance } from '../src/registry/index.js'
import { Checker, CheckerMetrics, RedisCoordinator, type EjectResult } from '../src/checker/index.js'
import { silentLogger } from '../src/core/log.js'
import { CLI, freePort, spawnNode, startServer, waitFor } from './helpers/index.js'
import { startRedis, startCluster, redisCommand } from './helpers/redis.js'
import { instance } from './checker-helpers.js'

/** One instance's ejection. */
async function one (c: RedisCoordinator, service: string, id: string, maxPercent: number): Promise<EjectResult> {
  return (await c.eject(service, [id], maxPercent))[0]
}

function open (t: Tap.Test, url: string): RedisRegistry {
  const r = new RedisRegistry({ target: parseRegistryUrl(url) as RedisTarget, checkMs: 1000 })
  t.teardown(async () => { await r.close() })
  return r
}

t.test('several replicas ejecting at the same moment stay within the threshold', async (t) => {
  const redis = await startRedis(t)
  // Three replicas, each with its own connection.
  const regs = [open(t, redis.url), open(t, redis.url), open(t, redis.url)]
  for (const r of regs) t.ok(await r.waitUp(5000))
  const coords = regs.map((r) => new RedisCoordinator(r))
  for (let i = 0; i < 6; i++) await regs[0].register(instance('orders', `a${i}`, 1000 + i, 0), 60_000)
  for (let i = 0; i < 2; i++) await regs[0].register(instance('orders', `b${i}`, 2000 + i, 0, { cluster: 'b' }), 60_000)

  // Every replica tries to eject every instance of cluster `default` one by one, and also all of them in one batch,
  // all at the same moment.
  const singles = coords.flatMap((c) => [0, 1, 2, 3, 4, 5].map(async (i) => await one(c, 'orders', `a${i}`, 34)))
  const batches = coords.map(async (c) => await c.eject('orders', ['a5', 'a4', 'a3', 'a2', 'a1', 'a0'], 34))
  const [one1, many] = await Promise.all([Promise.all(singles), Promise.all(batches)])
  const results = [...one1, ...many.flat()]
  const done = results.filter((r) => r.outcome === 'ejected')
  t.equal(done.length, 2, '6 × 34% = 2.04 → 2 ejections in all')
  t.ok(results.every((r) => ['ejected', 'threshold', 'already'].includes(r.outcome)), 'the rest refused by the budget, or already ejected')
  t.ok(results.every((r) => r.total === 6 && r.budget === 2))
  const stored = (await regs[1].list('orders')).filter((i) => i.ejected)
  t.equal(stored.length, 2, 'the store holds 2')
  t.ok(stored.every((i) => i.cluster === 'default' && i.state === 'ejected'))

  // Clusters have budgets of their own, computed as ejectBudget does: 2 × 20% rounds to 0, 2 × 34% to 1, and 2 × 90%
  // is never both.
  t.match(await one(coords[0], 'orders', 'b0', 20), { outcome: 'threshold', total: 2, budget: 0 })
  t.match(await one(coords[0], 'orders', 'b0', 34), { outcome: 'ejected', ejected: 1, total: 2, budget: 1 })
  t.match(await one(coords[0], 'orders', 'b1', 90), { outcome: 'threshold', ejected: 1, total: 2, budget: 1 })
  t.ok(await coords[0].recover('orders', 'b0'))

  // Already-ejected instances count: releasing one frees exactly one slot.
  t.ok(await coords[1].recover('orders', stored[0].id))
  const again = await Promise.all([0, 1, 2, 3, 4, 5].map(async (i) => await one(coords[i % 3], 'orders', `a${i}`, 34)))
  t.equal(again.filter((r) => r.outcome === 'ejected').length, 1, 'one more, back to 2')
  t.equal((await regs[2].list('orders')).filter((i) => i.ejected && i.cluster === 'default').length, 2)
})

t.test('one call ejects a batch in order, each within its own cluster\'s budget', async (t) => {
  const redis = await startRedis(t)
  const reg = open(t, redis.url)
  t.ok(await reg.waitUp(5000))
  const c = new RedisCoordinator(reg)
  for (let i = 0; i < 6; i++) await reg.register(instance('orders', `a${i}`, 1000 + i, 0), 60_000)
  for (let i = 0; i < 4; i++) await reg.register(instance('orders', `b${i}`, 2000 + i, 0, { cluster: 'b' }), 60_000)
  await reg.register(instance('orders', 'starting', 3000, 0, { state: 'starting' }), 60_000)
  const ids = ['a0', 'b0', 'a1', 'nobody', 'a2', 'b1', 'starting', 'a3', 'b2']
  const r = await c.eject('orders', ids, 50)
  t.same(r.map((x, i) => `${ids[i]}:${x.outcome}`), [
    'a0:ejected', 'b0:ejected', 'a1:ejected', 'nobody:gone', 'a2:ejected', 'b1:ejected', 'starting:not-routable', 'a3:threshold', 'b2:threshold'
  ], 'floor(6 × 50%) = 3 of a, floor(4 × 50%) = 2 of b, in the order asked')
  t.match(r[4], { ejected: 3, total: 6, budget: 3 })
  t.match(r[5], { ejected: 2, total: 4, budget: 2 })
  t.equal((await reg.list('orders')).filter((i) => i.ejected).length, 5, 'the store agrees')
  t.same(await c.eject('orders', [], 50), [], 'an empty batch asks nothing')
})

t.test('what counts toward the budget, and what cannot be ejected', async (t) => {
  const redis = await startRedis(t)
  const reg = open(t, redis.url)
  t.ok(await reg.waitUp(5000))
  const c = new RedisCoordinator(reg)
  const add = async (id: string, over: Partial<Instance> = {}): Promise<void> => { await reg.register(instance('svc', id, 1, 0, over), 60_000) }
  await add('up1')
  await add('up2')
  await add('warm', { state: 'warming' })
  await add('start', { state: 'starting' })
  await add('drain', { state: 'draining' })
  t.match(await one(c, 'svc', 'start', 100), { outcome: 'not-routable', total: 3 }, 'starting and draining instances are not counted, nor ejected')
  t.match(await one(c, 'svc', 'drain', 100), { outcome: 'not-routable' })
  t.match(await one(c, 'svc', 'nobody', 100), { outcome: 'gone' })
  t.match(await one(c, 'svc', 'warm', 33), { outcome: 'ejected', ejected: 1, total: 3, budget: 1 }, 'warming instances count and can be ejected; 3 × 33% → 1')
  t.match(await one(c, 'svc', 'warm', 34), { outcome: 'already' })
  // A draining instance that was ejected leaves the count: it is on its way out.
  await reg.update('svc', 'warm', { state: 'draining' })
  t.match(await one(c, 'svc', 'up1', 20), { outcome: 'threshold', ejected: 0, total: 2, budget: 0 })
  t.notOk(await c.recover('svc', 'nobody'), 'recovering a departed instance says so')
})

t.test('an ejection reaches every watcher at once, as the registry\'s own writes do', async (t) => {
  const redis = await startRedis(t)
  const writer = open(t, redis.url)
  const watcher = open(t, redis.url)
  t.ok(await writer.waitUp(5000))
  t.ok(await watcher.waitUp(5000))
  await writer.register(instance('pay', 'p0', 1, 0), 60_000)
  await writer.register(instance('pay', 'p1', 1, 0), 60_000)
  const w = watcher.watch('pay')
  t.teardown(() => { w.close() })
  await w.ready
  const revBefore = w.view.get('p0')?.rev ?? 0
  const c = new RedisCoordinator(writer)
  t.match(await one(c, 'pay', 'p0', 50), { outcome: 'ejected' })
  const seen = await waitFor('the watcher sees the ejection', () => w.view.get('p0')?.ejected === true ? w.view.get('p0') : undefined, 2000, 5)
  t.equal(seen.state, 'ejected')
  t.ok(seen.rev > revBefore, 'with a newer revision')
  // The instance's own heartbeats keep the ejection; its state returns on recovery.
  t.ok(await writer.heartbeat('pay', 'p0', 60_000, { weight: 50 }))
  t.equal((await writer.list('pay')).find((i) => i.id === 'p0')?.state, 'ejected')
  t.ok(await c.recover('pay', 'p0'))
  await waitFor('the watcher sees the recovery', () => w.view.get('p0')?.ejected === false, 2000, 5)
  t.equal(w.view.get('p0')?.state, 'up')
})

t.test('replica membership: heartbeats with a TTL, leaving, groups apart', async (t) => {
  const redis = await startRedis(t)
  const reg = open(t, redis.url)
  t.ok(await reg.waitUp(5000))
  const c = new RedisCoordinator(reg)
  t.same(await c.heartbeat('main', 'r-a', 400), { replicas: ['r-a'], nextExpiry: Infinity }, 'alone: no other replica to expire')
  const two = await c.heartbeat('main', 'r-b', 60_000)
  t.same(two.replicas, ['r-a', 'r-b'])
  t.ok(two.nextExpiry > 0 && two.nextExpiry <= 400, `r-a expires within its 400 ms TTL (${two.nextExpiry} ms)`)
  t.same((await c.heartbeat('canary', 'r-c', 60_000)).replicas, ['r-c'], 'each group has its own ring')
  t.ok((await c.heartbeat('main', 'r-a', 400)).nextExpiry > 59_000, 'r-a sees r-b\'s expiry a minute ahead')
  // r-a stops heartbeating: it drops out once its TTL passes.
  await waitFor('r-a expired', async () => (await c.heartbeat('main', 'r-b', 60_000)).replicas.join() === 'r-b', 5000, 50)
  t.pass('r-a expired')
  await c.leave('main', 'r-b')
  t.same((await c.heartbeat('main', 'r-d', 60_000)).replicas, ['r-d'], 'r-b left at once')
  t.match(await redisCommand(redis.port, 'ZRANGE', 'doorman:checker:main:replicas', '0', '-1'), /r-d/, 'the documented key')
})

/** How many times the server has run `command` since its stats were last reset. */
async function calls (port: number, command: string): Promise<number> {
  const info = await redisCommand(port, 'INFO', 'commandstats')
  const m = new RegExp(`cmdstat_${command}:calls=(\\d+)`).exec(info)
  return m === null ? 0 : Number(m[1])
}

t.test('a round reads the service names once, with no count per service; an owner takes out a service left empty', async (t) => {
  const redis = await startRedis(t)
  const reg = open(t, redis.url)
  t.ok(await reg.waitUp(5000))
  const lane = await startServer(t, (_req, res) => { res.end('ok') })
  const services = Array.from({ length: 20 }, (_, i) => `svc-${i}`)
  for (const s of services) await reg.register(instance(s, `${s}-0`, 1, lane.port), 60_000)
  const checker = new Checker({
    registry: reg, coordinator: new RedisCoordinator(reg), id: 'r1', interval: 60_000, timeout: 1000, failures: 2, successes: 2, maxEject: 50, mode: 'full', concurrency: 10, replicaTtl: 60_000,
    log: silentLogger(), metrics: new CheckerMetrics({ defaults: false })
  })
  t.teardown(async () => { await checker.stop() })
  t.match(await checker.round(), { services: 20, targets: 20, failed: 0 })
  await redisCommand(redis.port, 'CONFIG', 'RESETSTAT')
  for (let i = 0; i < 3; i++) t.match(await checker.round(), { services: 20, targets: 20 })
  t.equal(await calls(redis.port, 'scard'), 0, 'no SCARD in three rounds over 20 services')
  t.equal(await calls(redis.port, 'smembers'), 3, 'one SMEMBERS of the service set a round')

  // svc-3 loses its last instance: its name stays in the set until its owner, seeing its view empty, takes it out.
  await reg.deregister('svc-3', 'svc-3-0')
  t.equal(await redisCommand(redis.port, 'SISMEMBER', 'doorman:services', 'svc-3'), ':1\r\n', 'the registry leaves the name behind')
  await waitFor('the checker\'s view of svc-3 empty', () => checker.dispatcher.view('svc-3')?.size === 0, 5000)
  t.match(await checker.round(), { services: 19, targets: 19 })
  t.equal(await redisCommand(redis.port, 'SISMEMBER', 'doorman:services', 'svc-3'), ':0\r\n', 'taken out of the service set')
  t.equal(checker.dispatcher.view('svc-3'), undefined, 'and no longer watched')
  // An instance registers again: the service is back, and checked.
  await reg.register(instance('svc-3', 'svc-3-1', 1, lane.port), 60_000)
  t.match(await checker.round(), { services: 20, targets: 20 })
})

t.test('pruning a service never takes out one that has an instance, even one registering at that moment', async (t) => {
  const redis = await startRedis(t)
  const reg = open(t, redis.url)
  const writer = open(t, redis.url)
  t.ok(await reg.waitUp(5000))
  t.ok(await writer.waitUp(5000))
  const c = new RedisCoordinator(reg)
  await writer.register(instance('busy', 'b0', 1, 0), 60_000)
  t.equal(await c.pruneService('busy'), false, 'a service with an instance stays')
  t.same(await c.serviceNames(), ['busy'])
  await writer.register(instance('gone', 'g0', 1, 0), 60_000)
  await writer.deregister('gone', 'g0')
  t.same(await c.serviceNames(), ['busy', 'gone'], 'the registry leaves an empty name behind')
  t.equal(await c.pruneService('gone'), true)
  t.same(await c.serviceNames(), ['busy'])
  // A registration that lands between the pruner's first look (no instance) and its removal of the name: the name
  // must come back.
  const client = reg.client as unknown as { srem: (...a: string[]) => Promise<number> }
  const srem = client.srem.bind(client)
  client.srem = async (...a: string[]) => {
    await writer.register(instance('late', 'l0', 1, 0), 60_000)
    return await srem(...a)
  }
  await writer.register(instance('late', 'l-old', 1, 0), 60_000)
  await writer.deregister('late', 'l-old')
  t.equal(await c.pruneService('late'), false, 'the registration is seen')
  t.same(await c.serviceNames(), ['busy', 'late'], 'and the name is in the set')
})

t.test('the run-time mode table', async (t) => {
  const redis = await startRedis(t)
  const reg = open(t, redis.url)
  t.ok(await reg.waitUp(5000))
  const c = new RedisCoordinator(reg)
  t.equal((await c.modes('full')).table.global, 'full', 'the configured default when nothing is set')
  await c.setMode('*', 'recover-only')
  await c.setMode('orders/eu', 'off')
  await redisCommand(redis.port, 'HSET', 'doorman:checker:mode', 'users', 'maybe')
  const { table, bad } = await c.modes('full')
  t.equal(table.global, 'recover-only')
  t.equal(table.for('orders', 'eu'), 'off')
  t.equal(table.for('orders', 'us'), 'recover-only')
  t.same(bad, ['users=maybe'], 'bad entries are reported, not applied')
  await c.setMode('*', null)
  t.equal((await c.modes('off')).table.global, 'off')
})

t.test('the same scripts on a Redis Cluster', async (t) => {
  const cluster = await startCluster(t)
  const reg = new RedisRegistry({ target: parseRegistryUrl(cluster.url) as RedisTarget, checkMs: 1000 })
  t.teardown(async () => { await reg.close() })
  t.ok(await reg.waitUp(10_000), 'cluster reachable')
  const c = new RedisCoordinator(reg)
  for (let i = 0; i < 3; i++) await reg.register(instance('orders', `o${i}`, 1, 0), 60_000)
  for (let i = 0; i < 3; i++) await reg.register(instance('users', `u${i}`, 1, 0), 60_000)
  const r = await Promise.all([one(c, 'orders', 'o0', 34), one(c, 'orders', 'o1', 34), one(c, 'users', 'u0', 34)])
  t.same(r.map((x) => x.outcome).sort(), ['ejected', 'ejected', 'threshold'])
  t.same((await c.heartbeat('main', 'r1', 60_000)).replicas, ['r1'])
  await c.setMode('orders', 'recover-only')
  t.equal((await c.modes('full')).table.for('orders', 'x'), 'recover-only')
})

t.test('the command line: bad settings exit 78, bad usage and an unreachable registry 1', async (t) => {
  const run = async (args: string[], env: Record<string, string>): Promise<{ code: number | null, out: string }> => {
    const c = spawnNode(t, [CLI, 'checker', ...args], env)
    const { code } = await c.exited
    return { code, out: c.output() }
  }
  const closed = `redis://127.0.0.1:${await freePort()}`
  // All at once: each is its own process.
  const [mode, memory, extra, badMode, unreachable, help] = await Promise.all([
    run([], { DOORMAN_REGISTRY: closed, DOORMAN_CHECK_MODE: 'sometimes' }),
    run([], { DOORMAN_REGISTRY: 'memory' }),
    run(['extra'], { DOORMAN_REGISTRY: closed }),
    run(['mode', 'sometimes'], { DOORMAN_REGISTRY: closed }),
    run(['mode', 'off'], { DOORMAN_REGISTRY: closed }),
    run(['--help'], {})
  ])
  t.equal(mode.code, 78, 'a bad DOORMAN_CHECK_MODE')
  t.match(mode.out, /DOORMAN_CHECK_MODE: got "sometimes"; expected one of full, recover-only, off/)
  t.equal(memory.code, 78, 'a memory registry')
  t.match(memory.out, /DOORMAN_REGISTRY: doorman checker needs the registry the sidecars share/)
  t.equal(extra.code, 1)
  t.equal(badMode.code, 1)
  t.match(badMode.out, /bad mode "sometimes": expected one of full, recover-only, off/)
  t.equal(unreachable.code, 1, 'the registry is unreachable')
  t.match(unreachable.out, /unreachable/)
  t.equal(help.code, 0)
  t.match(help.out, /doorman checker mode SCOPE MODE/)
})
