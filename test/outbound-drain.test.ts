// Lossless offline end to end: a consumer doorman sends steady traffic to two providers; one drains with a 3 s
// delay. Real doorman processes, real apps, a private redis-server.
import t from 'tap'
import { request, waitFor } from './helpers/index.js'
import { startRedis } from './helpers/redis.js'
import { startProvider, startConsumer, steadyLoad, failures } from './helpers/mesh.js'

t.test('draining one of two providers under steady traffic: nothing fails, it gets nothing new after 1 s', async (t) => {
  const redis = await startRedis(t)
  const a = await startProvider(t, redis.url, 'a', { DOORMAN_WARMUP: '0' })
  const b = await startProvider(t, redis.url, 'b', { DOORMAN_WARMUP: '0', DOORMAN_DRAIN_DELAY: '3s', DOORMAN_DRAIN_QUIET: '500ms' })
  const consumer = await startConsumer(t, redis.url)
  const load = steadyLoad(consumer.outbound, { concurrency: 4, pauseMs: 2 })
  t.teardown(async () => { await load.stop() })
  await waitFor('traffic to both', () => load.samples.filter((s) => s.body === 'a').length > 50 && load.samples.filter((s) => s.body === 'b').length > 50, 10_000)

  const drainAt = Date.now()
  t.equal((await request(b.dm.admin, { path: '/drain', method: 'POST' })).status, 202)
  const { code } = await b.dm.exited
  t.equal(code, 0, 'the drained provider exited cleanly')
  const exitedAfter = Date.now() - drainAt
  // Keep the traffic going a little after b is gone.
  await new Promise((resolve) => setTimeout(resolve, 500))
  await load.stop()

  const failed = failures(load.samples)
  t.equal(failed.length, 0, `no request failed (of ${load.samples.length})${failed.length > 0 ? `: ${JSON.stringify(failed.slice(0, 3))}` : ''}`)
  const lastAtB = Math.max(...b.arrivals)
  const lastAfter = lastAtB - drainAt
  t.comment(`b's last new request arrived ${lastAfter} ms after the drain started; b exited after ${exitedAfter} ms`)
  t.ok(lastAfter <= 1000, `no new request reached the draining provider later than 1 s after the drain started (${lastAfter} ms)`)
  t.ok(exitedAfter >= 3000, 'b kept serving (flagged) for its drain delay')
  t.ok(a.arrivals.filter((at) => at > drainAt + 1000).length > 100, 'a took the traffic')
})
