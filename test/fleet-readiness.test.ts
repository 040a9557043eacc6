// Readiness blips across a service (issue 16 §2): three `doorman run` instances of one service over a private
// redis-server, each app with a readiness probe of period 0.2 s and failureThreshold 3 (DOORMAN_APP_PROBES, as the
// injector writes it), and a consumer doorman calling the service through its outbound lane.
//   - every app fails 2 readiness checks in a row (a GC pause, a dependency's brief error): no registry state changes;
//   - every app fails for good: all instances turn `starting`, and the consumer's panic mode still reaches them.
import t from 'tap'
import { RedisRegistry, parseRegistryUrl, type RedisTarget } from '../src/registry/index.js'
import { freePort, request, startDoorman, startServer, waitFor, type Doorman } from './helpers/index.js'
import { startRedis } from './helpers/redis.js'

t.test('a blip shorter than the failure threshold changes nothing; all unready stays reachable through panic mode', async (t) => {
  const redis = await startRedis(t)
  // How many of the next readiness checks each app fails, and the checks seen.
  const apps = await Promise.all([0, 1, 2].map(async (i) => {
    const a = { failNext: 0, failAll: false, checks: 0, port: 0 }
    const s = await startServer(t, (req, res) => {
      if (req.url === '/ready') {
        a.checks++
        const fail = a.failAll || a.failNext > 0
        if (a.failNext > 0) a.failNext--
        res.statusCode = fail ? 503 : 200
        res.end()
        return
      }
      res.end(`app${i}`)
    })
    a.port = s.port
    return a
  }))
  const doormans: Doorman[] = await Promise.all(apps.map(async (a) => await startDoorman(t, {
    DOORMAN_APP_PORT: String(a.port),
    DOORMAN_REGISTRY: redis.url,
    DOORMAN_SERVICE: 'orders',
    DOORMAN_APP_PROBES: JSON.stringify({ '/app-health/app/readyz': { httpGet: { path: '/ready', port: a.port }, timeoutSeconds: 1, periodSeconds: 0.2, failureThreshold: 3, successThreshold: 1 } })
  })))
  const web = await startServer(t, (_req, res) => { res.end('web') })
  const consumer = await startDoorman(t, { DOORMAN_LOG_LEVEL: 'info', DOORMAN_REGISTRY: redis.url, DOORMAN_SERVICE: 'web', DOORMAN_APP_PORT: String(web.port), DOORMAN_OUTBOUND_PORT: String(await freePort()) })
  t.ok(doormans.length === 3)

  const registry = new RedisRegistry({ target: parseRegistryUrl(redis.url) as RedisTarget, checkMs: 1000 })
  t.teardown(async () => { await registry.close() })
  if (!await registry.waitUp(5000)) throw new Error('registry unreachable')
  const changes: string[] = []
  const watch = registry.watch('orders', (_view, change) => {
    if (change.type === 'put' && change.previous !== undefined && change.previous.state !== change.instance.state) changes.push(`${change.instance.id}: ${change.previous.state} → ${change.instance.state}`)
  })
  t.teardown(() => { watch.close() })
  await watch.ready
  await waitFor('three instances up', () => [...watch.view.values()].filter((i) => i.state === 'up').length === 3, 15_000)
  const call = async (): Promise<{ status: number, body: string }> => await request(consumer.outbound, { path: '/', headers: { host: 'orders' }, timeout: 5000 })
  await waitFor('the consumer reaches orders', async () => (await call()).status === 200, 10_000)
  changes.length = 0

  // The blip: the next 2 checks of every app fail (fewer than failureThreshold 3), on every replica at once.
  const before = apps.map((a) => a.checks)
  for (const a of apps) a.failNext = 2
  await waitFor('every app checked 4 more times (2 failed, 2 passed)', () => apps.every((a, i) => a.checks >= before[i] + 4), 10_000)
  // A registry change reaches this watch in milliseconds; give it a few more checks' time anyway.
  const after = apps.map((a) => a.checks)
  await waitFor('3 more checks each', () => apps.every((a, i) => a.checks >= after[i] + 3), 10_000)
  t.same(changes, [], 'no registry state changed')
  t.equal([...watch.view.values()].filter((i) => i.state === 'up').length, 3)

  // For good: after 3 failures every instance turns `starting` (unready); the consumer's balancer panics and still
  // reaches them (their apps serve; only readiness fails).
  for (const a of apps) a.failAll = true
  await waitFor('every instance starting', () => [...watch.view.values()].filter((i) => i.state === 'starting').length === 3, 10_000)
  await waitFor('the consumer sees all three unready', async () => /doorman_registry_instances\{service="orders",state="starting"\} 3/.test((await request(consumer.admin, { path: '/metrics' })).body), 10_000)
  const bodies = new Set<string>()
  for (let i = 0; i < 30; i++) {
    const r = await call()
    t.equal(r.status, 200, 'reachable in panic mode')
    bodies.add(r.body)
  }
  t.ok(bodies.size >= 2, `balanced over the instances (${[...bodies].join(', ')})`)
  const metrics = (await request(consumer.admin, { path: '/metrics' })).body
  t.match(metrics, /doorman_outbound_panic\{service="orders"\} 1/)
  t.match(metrics, /doorman_outbound_panics_total\{service="orders"\} 1/)
  t.match(consumer.output(), /panic mode: too few instances routable/)

  for (const a of apps) a.failAll = false
  await waitFor('every instance up again', () => [...watch.view.values()].filter((i) => i.state === 'up').length === 3, 10_000)
  await waitFor('panic over', async () => /doorman_outbound_panic\{service="orders"\} 0/.test((await request(consumer.admin, { path: '/metrics' })).body), 10_000)
  t.match(consumer.output(), /panic mode over/)
})
