// Warmup end to end: a consumer doorman sends steady traffic to `orders`; a second instance joins with an 8 s
// window. Real doorman processes, real apps, a private redis-server.
import t from 'tap'
import { RedisRegistry, parseRegistryUrl, type RedisTarget } from '../src/registry/index.js'
import { waitFor } from './helpers/index.js'
import { startRedis } from './helpers/redis.js'
import { startProvider, startConsumer, steadyLoad, failures, share } from './helpers/mesh.js'

t.test('a joining instance gets a small share first, its fair share after the window, and nothing fails', async (t) => {
  const redis = await startRedis(t)
  const watcher = new RedisRegistry({ target: parseRegistryUrl(redis.url) as RedisTarget })
  t.teardown(async () => { await watcher.close() })
  let joinedAt = 0
  const view = watcher.watch('orders', (_v, change) => {
    if (change.type === 'put' && change.instance.state === 'warming' && joinedAt === 0) joinedAt = Date.now()
  })
  t.teardown(() => { view.close() })
  await startProvider(t, redis.url, 'a')
  const consumer = await startConsumer(t, redis.url)
  const load = steadyLoad(consumer.outbound, { concurrency: 4, pauseMs: 2 })
  t.teardown(async () => { await load.stop() })
  await waitFor('traffic to a', () => load.samples.filter((s) => s.body === 'a').length > 50, 10_000)

  await startProvider(t, redis.url, 'b', { DOORMAN_WARMUP: '8s', DOORMAN_WARMUP_MIN_WEIGHT: '10' })
  const joined = await waitFor('b registered', () => joinedAt > 0 ? joinedAt : undefined, 10_000)
  await waitFor('the window has passed, and 2 s more', () => Date.now() > joined + 8000 + 500 + 2000, 15_000, 100)
  await load.stop()

  const early = share(load.samples, 'b', joined, joined + 2000)
  const late = share(load.samples, 'b', joined + 8500, joined + 10_500)
  t.comment(`b's share: ${(early.share * 100).toFixed(1)}% of ${early.n} in its first 2 s, ${(late.share * 100).toFixed(1)}% of ${late.n} after its window`)
  t.ok(early.n > 100 && late.n > 100, 'enough traffic to judge')
  t.ok(early.share > 0, 'the new instance takes some traffic at once')
  t.ok(early.share <= 0.3, `well under its fair share over the first 2 s (${(early.share * 100).toFixed(1)}% ≤ 30%)`)
  t.ok(late.share >= 0.4 && late.share <= 0.6, `its fair share after the window (${(late.share * 100).toFixed(1)}% in 40–60%)`)
  const failed = failures(load.samples)
  t.equal(failed.length, 0, `no request failed (of ${load.samples.length})${failed.length > 0 ? `: ${JSON.stringify(failed.slice(0, 3))}` : ''}`)
  t.equal([...view.view.values()].find((i) => i.weight === 100 && i.state === 'up' && i.warmup.window === 8000)?.warmup.progress, 1, 'b published the end of its window')
})
