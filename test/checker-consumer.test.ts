// Consumers skip what the checker ejects: a consumer's doorman calls `orders` through its outbound lane while
// `doorman checker` ejects a frozen provider; once the ejection reaches the consumer, every call goes to the healthy
// provider and none waits on the frozen one. After SIGCONT the checker recovers it and calls reach it again.
import t from 'tap'
import { freePort, request, startDoorman, startServer, waitFor } from './helpers/index.js'
import { startRedis } from './helpers/redis.js'
import { startChecker } from './checker-helpers.js'

t.test('the outbound lane skips ejected instances', async (t) => {
  const redis = await startRedis(t)
  const appA = await startServer(t, (_req, res) => { res.end('a') })
  const appB = await startServer(t, (_req, res) => { res.end('b') })
  const web = await startServer(t, (_req, res) => { res.end('web') })
  const provider = { DOORMAN_REGISTRY: redis.url, DOORMAN_SERVICE: 'orders', DOORMAN_WARMUP: '0s' }
  const [a, , consumer] = await Promise.all([
    startDoorman(t, { ...provider, DOORMAN_APP_PORT: String(appA.port) }),
    startDoorman(t, { ...provider, DOORMAN_APP_PORT: String(appB.port) }),
    startDoorman(t, { DOORMAN_REGISTRY: redis.url, DOORMAN_SERVICE: 'web', DOORMAN_APP_PORT: String(web.port), DOORMAN_OUTBOUND_PORT: String(await freePort()) })
  ])
  const call = async (): Promise<string> => (await request(consumer.outbound, { path: '/', headers: { host: 'orders' }, timeout: 5000 })).body
  const consumerSees = async (state: string): Promise<number> => {
    const text = (await request(consumer.admin, { path: '/metrics' })).body
    const m = new RegExp(`doorman_registry_instances\\{service="orders",state="${state}"\\} (\\d+)`).exec(text)
    return m === null ? 0 : Number(m[1])
  }
  // Both providers take calls.
  const seen = new Set<string>()
  await waitFor('calls reach both providers', async () => { seen.add(await call()); return seen.size === 2 }, 10_000)

  // The default protection threshold: 1 of 2.
  const checker = await startChecker(t, { DOORMAN_REGISTRY: redis.url })
  process.kill(a.proc.pid as number, 'SIGSTOP')
  await waitFor('the consumer sees provider a ejected', async () => await consumerSees('ejected') === 1, 10_000)
  const bodies: string[] = []
  const t0 = performance.now()
  for (let i = 0; i < 20; i++) bodies.push(await call())
  const took = performance.now() - t0
  t.same([...new Set(bodies)], ['b'], 'every call went to the provider that is not ejected')
  t.ok(took < 5000, `20 calls in ${Math.round(took)} ms: none waited on the frozen provider`)

  process.kill(a.proc.pid as number, 'SIGCONT')
  await waitFor('the consumer sees provider a back', async () => await consumerSees('up') === 2, 10_000)
  const after = new Set<string>()
  await waitFor('calls reach provider a again', async () => { after.add(await call()); return after.has('a') }, 10_000)
  t.pass('recovered provider takes calls again')
  checker.kill('SIGTERM')
  t.equal((await checker.exited).code, 0)
})
