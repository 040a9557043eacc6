// `doorman checker` against a private redis-server and six real `doorman run` processes in front of an app, each
// registering itself. An instance is frozen with SIGSTOP on its doorman (the whole process, lane thread included: it
// answers nothing) and thawed with SIGCONT. Rounds are short (300 ms interval, 200 ms timeout, 3 failures eject, 2 successes recover).
import t from 'tap'
import { RedisRegistry, parseRegistryUrl, type RedisTarget, type Watch } from '../src/registry/index.js'
import { CLI, spawnNode, startDoorman, startServer, waitFor, type Doorman } from './helpers/index.js'
import { startRedis, type RedisServer } from './helpers/redis.js'
import { checkerState, metric, rounds, startChecker, type CheckerProc } from './checker-helpers.js'

const INTERVAL = 300
const TIMEOUT = 200
const FAILURES = 3

let redis: RedisServer
let registry: RedisRegistry
let doormans: Doorman[]
let checker: CheckerProc
let watch: Watch
const ids: string[] = []
// The test's own watch: the time each ejection and recovery reaches a consumer.
const changes: Array<{ id: string, ejected: boolean, at: number }> = []

const ejected = (): string[] => [...watch.view.values()].filter((i) => i.ejected).map((i) => i.id).sort()
const freeze = (i: number): void => { process.kill(doormans[i].proc.pid as number, 'SIGSTOP') }
const thaw = (i: number): void => { process.kill(doormans[i].proc.pid as number, 'SIGCONT') }

t.before(async () => {
  redis = await startRedis(t)
  const app = await startServer(t, (_req, res) => { res.end('ok') })
  // Each doorman registers itself (service `orders`, no warmup: `up` at once) once its app is ready.
  doormans = await Promise.all(Array.from({ length: 6 }, async () => await startDoorman(t, {
    DOORMAN_APP_PORT: String(app.port),
    DOORMAN_REGISTRY: redis.url,
    DOORMAN_SERVICE: 'orders',
    DOORMAN_WARMUP: '0s'
  })))
  registry = new RedisRegistry({ target: parseRegistryUrl(redis.url) as RedisTarget, checkMs: 1000 })
  t.teardown(async () => { await registry.close() })
  if (!await registry.waitUp(5000)) throw new Error('registry unreachable')
  watch = registry.watch('orders', (_view, change) => {
    if (change.type === 'put' && change.instance.ejected !== change.previous?.ejected) changes.push({ id: change.instance.id, ejected: change.instance.ejected, at: performance.now() })
  })
  t.teardown(() => { watch.close() })
  await watch.ready
  await waitFor('six instances registered and up', () => [...watch.view.values()].filter((i) => i.state === 'up').length === 6, 15_000)
  // The instances' ids, in the order of `doormans`.
  for (const d of doormans) ids.push([...watch.view.values()].find((i) => i.address === `127.0.0.1:${d.inbound}`)?.id ?? '?')
  // The default protection threshold (DOORMAN_CHECK_MAX_EJECT=33): 2 of 6.
  checker = await startChecker(t, { DOORMAN_REGISTRY: redis.url })
})

t.test('every instance is probed through its lane and none is ejected while all answer', async (t) => {
  await rounds(checker.admin, 3)
  const st = await checkerState(checker.admin)
  t.same(st.services, ['orders'])
  t.equal(st.targets, 6)
  t.same(ejected(), [])
  t.ok(await metric(checker.admin, 'doorman_checker_probes_total', 'result="ok"') >= 18, 'probes answered ok')
  t.equal(await metric(checker.admin, 'doorman_checker_instances', 'state="up"'), 6)
})

t.test('a frozen instance is ejected within interval × failures + timeout, and recovered after SIGCONT', async (t) => {
  const bound = INTERVAL * FAILURES + TIMEOUT
  const frozenAt = performance.now()
  freeze(0)
  const ej = await waitFor('d0 ejected', () => changes.find((c) => c.id === ids[0] && c.ejected && c.at > frozenAt), 10_000)
  const took = ej.at - frozenAt
  t.comment(`ejected ${Math.round(took)} ms after SIGSTOP (bound ${bound} ms)`)
  // The bound plus slack for scheduling on a loaded machine (the check rounds themselves run on time).
  t.ok(took <= bound + 1400, `ejected in ${Math.round(took)} ms`)
  t.ok(took >= TIMEOUT * FAILURES * 0.9, 'not before several probes failed')
  t.same(ejected(), [ids[0]])
  const listed = await registry.list('orders')
  t.equal(listed.find((i) => i.id === ids[0])?.state, 'ejected', 'the registry holds it ejected')
  t.equal(await metric(checker.admin, 'doorman_checker_ejections_total'), 1)

  const thawedAt = performance.now()
  thaw(0)
  await waitFor('d0 recovered', () => changes.find((c) => c.id === ids[0] && !c.ejected && c.at > thawedAt), 10_000)
  t.same(ejected(), [])
  t.equal((await registry.list('orders')).find((i) => i.id === ids[0])?.state, 'up', 'its own state is back')
  t.equal(await metric(checker.admin, 'doorman_checker_recoveries_total'), 1)
})

t.test('3 of 6 frozen at the default threshold: exactly 2 are ejected, and stay 2', async (t) => {
  const blockedBefore = await metric(checker.admin, 'doorman_checker_ejections_blocked_total', 'reason="threshold"')
  for (const i of [1, 2, 3]) freeze(i)
  await waitFor('2 ejected', () => ejected().length >= 2, 10_000)
  // Let the third keep failing for several more rounds: the budget (6 × 33% = 1.98 → 2) holds it in.
  await waitFor('the third blocked by the threshold', async () => await metric(checker.admin, 'doorman_checker_ejections_blocked_total', 'reason="threshold"') >= blockedBefore + 3, 10_000)
  await rounds(checker.admin, 3)
  const now = ejected()
  t.equal(now.length, 2, `ejected: ${now.join(', ')}`)
  t.ok(now.every((id) => [ids[1], ids[2], ids[3]].includes(id)), 'only frozen ones')
  const stored = (await registry.list('orders')).filter((i) => i.ejected)
  t.equal(stored.length, 2, 'the store agrees')
  const st = await checkerState(checker.admin)
  t.ok(st.events.some((e) => e.action === 'blocked' && e.reason === 'threshold'), 'the block is reported in /state')

  for (const i of [1, 2, 3]) thaw(i)
  await waitFor('all recovered', () => ejected().length === 0, 10_000)
  t.pass('all recovered once thawed')
})

t.test('recover-only (switched at run time) never ejects but still recovers', async (t) => {
  freeze(4)
  await waitFor('d4 ejected in full mode', () => ejected().includes(ids[4]), 10_000)

  const set = spawnNode(t, [CLI, 'checker', 'mode', 'recover-only'], { DOORMAN_REGISTRY: redis.url })
  t.equal((await set.exited).code, 0, set.output())
  t.match(set.output(), /\*: recover-only/)
  await waitFor('the checker in recover-only', async () => (await checkerState(checker.admin)).mode === 'recover-only', 5000)

  const blockedBefore = await metric(checker.admin, 'doorman_checker_ejections_blocked_total', 'reason="mode"')
  freeze(5)
  await waitFor('d5 failing past the ejection count', async () => ((await checkerState(checker.admin)).failing.find((f) => f.id === ids[5])?.failures ?? 0) >= FAILURES + 2, 10_000)
  t.ok(await metric(checker.admin, 'doorman_checker_ejections_blocked_total', 'reason="mode"') > blockedBefore, 'the ejection was blocked by the mode')
  t.notOk(ejected().includes(ids[5]), 'd5 is not ejected')

  thaw(4)
  await waitFor('d4 recovered in recover-only mode', () => !ejected().includes(ids[4]), 10_000)
  t.pass('recovered')
  thaw(5)
  t.same(ejected(), [])

  const back = spawnNode(t, [CLI, 'checker', 'mode', '*', '--clear'], { DOORMAN_REGISTRY: redis.url })
  t.equal((await back.exited).code, 0, back.output())
  await waitFor('the checker back in full mode', async () => (await checkerState(checker.admin)).mode === 'full', 5000)
})

t.test('per-service mode off: the service is no longer probed', async (t) => {
  const set = spawnNode(t, [CLI, 'checker', 'mode', 'orders', 'off'], { DOORMAN_REGISTRY: redis.url })
  t.equal((await set.exited).code, 0, set.output())
  await waitFor('orders dropped from the shard', async () => (await checkerState(checker.admin)).services.length === 0, 5000)
  t.equal((await checkerState(checker.admin)).targets, 0)
  const clear = spawnNode(t, [CLI, 'checker', 'mode', 'orders', '--clear'], { DOORMAN_REGISTRY: redis.url })
  t.equal((await clear.exited).code, 0, clear.output())
  await waitFor('orders back', async () => (await checkerState(checker.admin)).targets === 6, 5000)
})
