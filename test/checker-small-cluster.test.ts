// The shipped checker on the example app's shape: three `doorman run` instances of one service over a private
// redis-server, `doorman checker` at its default protection threshold (DOORMAN_CHECK_MAX_EJECT=33). Seed 002: "a
// cluster of 3 → remove at most 1". Two instances are frozen (SIGSTOP): exactly one is ejected, the other is held in
// by the threshold, and both come back after SIGCONT.
import t from 'tap'
import { RedisRegistry, parseRegistryUrl, type RedisTarget } from '../src/registry/index.js'
import { startDoorman, startServer, waitFor, type Doorman } from './helpers/index.js'
import { startRedis } from './helpers/redis.js'
import { metric, rounds, startChecker } from './checker-helpers.js'

t.test('the default threshold ejects 1 of 3, never 2', async (t) => {
  const redis = await startRedis(t)
  const app = await startServer(t, (_req, res) => { res.end('ok') })
  const doormans: Doorman[] = await Promise.all(Array.from({ length: 3 }, async () => await startDoorman(t, {
    DOORMAN_APP_PORT: String(app.port),
    DOORMAN_REGISTRY: redis.url,
    DOORMAN_SERVICE: 'orders',
    DOORMAN_WARMUP: '0s'
  })))
  const registry = new RedisRegistry({ target: parseRegistryUrl(redis.url) as RedisTarget, checkMs: 1000 })
  t.teardown(async () => { await registry.close() })
  if (!await registry.waitUp(5000)) throw new Error('registry unreachable')
  const ejected = async (): Promise<string[]> => (await registry.list('orders')).filter((i) => i.ejected).map((i) => i.address)
  await waitFor('three instances up', async () => (await registry.list('orders')).filter((i) => i.state === 'up').length === 3, 15_000)

  const checker = await startChecker(t, { DOORMAN_REGISTRY: redis.url })
  const frozen = [doormans[0], doormans[1]]
  const thawAll = (): void => { for (const d of frozen) { try { process.kill(d.proc.pid as number, 'SIGCONT') } catch {} } }
  t.teardown(thawAll)
  for (const d of frozen) process.kill(d.proc.pid as number, 'SIGSTOP')

  await waitFor('one ejected', async () => (await ejected()).length >= 1, 10_000)
  await waitFor('the second blocked by the threshold', async () => await metric(checker.admin, 'doorman_checker_ejections_blocked_total', 'reason="threshold"') >= 3, 10_000)
  await rounds(checker.admin, 2)
  const now = await ejected()
  t.equal(now.length, 1, `ejected: ${now.join(', ')}`)
  t.ok(frozen.some((d) => now[0] === `127.0.0.1:${d.inbound}`), 'a frozen one')
  t.equal(await metric(checker.admin, 'doorman_checker_ejections_total'), 1)

  thawAll()
  await waitFor('all recovered', async () => (await ejected()).length === 0, 10_000)
  t.pass('both back once thawed')
  checker.kill('SIGTERM')
  t.equal((await checker.exited).code, 0)
})
