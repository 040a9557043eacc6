// Several `doorman checker` replicas over one Redis: services split by rendezvous hashing, a killed replica's share
// picked up by the other once its membership expires (one TTL), a clean stop leaving the ring at once, and the canary group.
import t from 'tap'
import { RedisRegistry, parseRegistryUrl, type RedisTarget } from '../src/registry/index.js'
import { owner } from '../src/checker/index.js'
import { startDoorman, startServer, waitFor, type Doorman } from './helpers/index.js'
import { startRedis, redisCommand } from './helpers/redis.js'
import { checkerState, instance, startChecker } from './checker-helpers.js'

/** The first name `prefix-N` that rendezvous hashing gives to `want` among `replicas`. */
function serviceOwnedBy (prefix: string, want: string, replicas: string[]): string {
  for (let i = 0; ; i++) if (owner(`${prefix}-${i}`, replicas) === want) return `${prefix}-${i}`
}

t.test('two replicas split the services; killing one still gets ejections done by the other', async (t) => {
  const redis = await startRedis(t)
  const app = await startServer(t, (_req, res) => { res.end('ok') })
  const ring = ['ck-a', 'ck-b']
  const sa = serviceOwnedBy('alpha', 'ck-a', ring)
  const sb = serviceOwnedBy('beta', 'ck-b', ring)
  // Real doormans registering themselves: one instance of sa, two of sb.
  const dm = async (service: string): Promise<Doorman> => await startDoorman(t, { DOORMAN_APP_PORT: String(app.port), DOORMAN_REGISTRY: redis.url, DOORMAN_SERVICE: service, DOORMAN_WARMUP: '0s' })
  const [, b0] = await Promise.all([dm(sa), dm(sb), dm(sb)])
  const registry = new RedisRegistry({ target: parseRegistryUrl(redis.url) as RedisTarget, checkMs: 1000 })
  t.teardown(async () => { await registry.close() })
  t.ok(await registry.waitUp(5000))
  const b0id = await waitFor('b0 registered', async () => (await registry.list(sb)).find((i) => i.address === `127.0.0.1:${b0.inbound}`)?.id, 10_000)

  const env = { DOORMAN_REGISTRY: redis.url, DOORMAN_REGISTRY_TTL: '1s', DOORMAN_CHECK_MAX_EJECT: '50' }
  const [ca, cb] = await Promise.all([
    startChecker(t, { ...env, DOORMAN_CHECK_REPLICA_ID: 'ck-a' }),
    startChecker(t, { ...env, DOORMAN_CHECK_REPLICA_ID: 'ck-b' })
  ])
  await waitFor('both replicas see each other and own their share', async () => {
    const [x, y] = await Promise.all([checkerState(ca.admin), checkerState(cb.admin)])
    return x.replicas.length === 2 && y.replicas.length === 2 && x.services.join() === sa && y.services.join() === sb
  }, 10_000)
  t.pass(`ck-a owns ${sa}, ck-b owns ${sb}`)

  cb.kill('SIGKILL')
  await cb.exited
  const killedAt = performance.now()
  process.kill(b0.proc.pid as number, 'SIGSTOP')
  await waitFor(`ck-a takes over ${sb}`, async () => (await checkerState(ca.admin)).services.includes(sb), 10_000)
  const tookOver = performance.now() - killedAt
  t.comment(`${sb} picked up ${Math.round(tookOver)} ms after the kill (TTL 1000 ms)`)
  await waitFor('b0 ejected by ck-a', async () => (await registry.list(sb)).find((i) => i.id === b0id)?.ejected === true, 10_000)
  const st = await checkerState(ca.admin)
  t.ok(st.events.some((e) => e.action === 'eject' && e.id === b0id), 'ck-a made the ejection')
  t.same(st.replicas, ['ck-a'], 'the dead replica left the ring')

  process.kill(b0.proc.pid as number, 'SIGCONT')
  await waitFor('b0 recovered by ck-a', async () => (await registry.list(sb)).find((i) => i.id === b0id)?.ejected === false, 10_000)
  t.pass('recovered')

  // A clean stop leaves the ring at once.
  ca.kill('SIGTERM')
  t.equal((await ca.exited).code, 0, 'SIGTERM stops the checker with 0')
  t.equal(await redisCommand(redis.port, 'ZCARD', 'doorman:checker:main:replicas'), ':0\r\n', 'no replica left in the ring')
})

t.test('the canary group owns only the canary services; the main group skips them and excluded ones', async (t) => {
  const redis = await startRedis(t)
  const lane = await startServer(t, (_req, res) => { res.end('ok') })
  const registry = new RedisRegistry({ target: parseRegistryUrl(redis.url) as RedisTarget, checkMs: 1000 })
  t.teardown(async () => { await registry.close() })
  t.ok(await registry.waitUp(5000))
  for (const s of ['orders', 'pay-api', 'pay-web', 'mysql']) await registry.register(instance(s, `${s}-0`, 1, lane.port), 300_000)
  const env = { DOORMAN_REGISTRY: redis.url, DOORMAN_CHECK_CANARY: 'pay-*', DOORMAN_CHECK_EXCLUDE: 'mysql' }
  const [main, canary] = await Promise.all([
    startChecker(t, { ...env, DOORMAN_CHECK_REPLICA_ID: 'm1' }),
    startChecker(t, { ...env, DOORMAN_CHECK_REPLICA_ID: 'c1', DOORMAN_CHECK_GROUP: 'canary' })
  ])
  const [m, c] = await Promise.all([checkerState(main.admin), checkerState(canary.admin)])
  t.same(m.services, ['orders'])
  t.same(c.services, ['pay-api', 'pay-web'])
  t.same(m.replicas, ['m1'], 'the groups keep separate rings')
  t.same(c.replicas, ['c1'])
  t.equal(c.group, 'canary')
})
