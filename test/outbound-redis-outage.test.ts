// A Redis outage under steady outbound traffic: Redis SIGKILLed, then restarted empty. Real doorman processes,
// real apps, a private redis-server.
import t from 'tap'
import { RedisRegistry, parseRegistryUrl, type RedisTarget } from '../src/registry/index.js'
import { request, waitFor } from './helpers/index.js'
import { startRedis } from './helpers/redis.js'
import { startProvider, startConsumer, steadyLoad, failures } from './helpers/mesh.js'

t.test('Redis killed under traffic: nothing fails, readiness holds; restarted empty: providers listed again', async (t) => {
  const redis = await startRedis(t)
  const a = await startProvider(t, redis.url, 'a', { DOORMAN_WARMUP: '0', DOORMAN_REGISTRY_TTL: '6s' })
  const b = await startProvider(t, redis.url, 'b', { DOORMAN_WARMUP: '0', DOORMAN_REGISTRY_TTL: '6s' })
  // The consumer lists often (every 1 s) so that an empty listing right after the restart would be seen.
  const consumer = await startConsumer(t, redis.url, { DOORMAN_REGISTRY_TTL: '3s' })
  const load = steadyLoad(consumer.outbound, { concurrency: 4, pauseMs: 2 })
  t.teardown(async () => { await load.stop() })
  await waitFor('traffic to both', () => load.samples.filter((s) => s.body === 'a').length > 50 && load.samples.filter((s) => s.body === 'b').length > 50, 10_000)

  const killedAt = Date.now()
  await redis.kill()
  // Readiness of every doorman is polled through the outage.
  const admins = [a.dm.admin, b.dm.admin, consumer.admin]
  const readiness: number[] = []
  const until = Date.now() + 3000
  while (Date.now() < until) {
    for (const port of admins) readiness.push((await request(port, { path: '/readyz', timeout: 2000 })).status)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  t.ok(readiness.length > 30 && readiness.every((s) => s === 200), `readiness stayed 200 through the outage (${readiness.length} probes)`)
  t.match((await request(a.dm.admin, { path: '/metrics' })).body, /doorman_registry_up 0/)
  const during = load.samples.filter((s) => s.sentAt > killedAt)
  t.ok(during.filter((s) => s.body === 'a').length > 20 && during.filter((s) => s.body === 'b').length > 20, 'both providers kept getting traffic')

  const restartedAt = Date.now()
  await redis.restart()
  const watcher = new RedisRegistry({ target: parseRegistryUrl(redis.url) as RedisTarget, checkMs: 250 })
  t.teardown(async () => { await watcher.close() })
  const view = watcher.watch('orders')
  t.teardown(() => { view.close() })
  await waitFor('both providers listed again', () => view.view.size === 2, 10_000)
  const listedAfter = Date.now() - restartedAt
  t.comment(`listed again ${listedAfter} ms after Redis restarted empty`)
  t.ok(listedAfter <= 10_000)
  await waitFor('registry up again in metrics', async () => /doorman_registry_up 1/.test((await request(consumer.admin, { path: '/metrics' })).body), 10_000)
  // Traffic carries on after the restart, still spread over both.
  const after = Date.now()
  await waitFor('traffic after the restart', () => load.samples.filter((s) => s.sentAt > after && s.body === 'b').length > 20 && load.samples.filter((s) => s.sentAt > after && s.body === 'a').length > 20, 10_000)
  await load.stop()
  const failed = failures(load.samples)
  t.equal(failed.length, 0, `no request failed (of ${load.samples.length})${failed.length > 0 ? `: ${JSON.stringify(failed.slice(0, 3))}` : ''}`)
})
