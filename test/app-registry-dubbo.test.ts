// Apps that register themselves: Dubbo on ZooKeeper. A private ZooKeeper, provider processes that register as Dubbo
// 2.7/3.x does (test/helpers/dubbo-provider.mjs), a consumer that follows Dubbo's rules (test/helpers/dubbo.ts), and
// a doorman in front of each provider with DOORMAN_APP_REGISTRY.
import t from 'tap'
import path from 'node:path'
import { ROOT, request, getJson, spawnNode, startDoorman, waitFor, type Child, type Doorman } from './helpers/index.js'
import { haveZooKeeper, startZooKeeper, type ZooKeeperServer } from './helpers/zookeeper.js'
import { DubboConsumer } from './helpers/dubbo.js'
import { SETTLE_MS } from '../src/app-registry/gate.js'

const IFACE = 'org.apache.dubbo.demo.DemoService'
const PROVIDER = path.join(ROOT, 'test', 'helpers', 'dubbo-provider.mjs')

interface Tap { teardown: (fn: () => unknown) => void }

interface Provider extends Child { port: number, registered: () => { registered: number, urls: string[] } | null }

async function startProvider (t: Tap, zk: ZooKeeperServer, env: Record<string, string> = {}): Promise<Provider> {
  const child = spawnNode(t, [PROVIDER], { ZK: zk.connect, INTERFACES: IFACE, ...env })
  const line = <T>(key: string): T | null => {
    for (const l of child.output().split('\n')) {
      if (!l.startsWith('{')) continue
      try { const o = JSON.parse(l) as Record<string, unknown>; if (key in o) return o as T } catch {}
    }
    return null
  }
  const port = (await waitFor('the provider to listen', () => line<{ port: number }>('port'), 10_000)).port
  return { ...child, port, registered: () => line('registered') }
}

async function startSidecar (t: Tap, zk: ZooKeeperServer, p: Provider, env: Record<string, string> = {}, waitReady = true): Promise<Doorman> {
  return await startDoorman(t, {
    DOORMAN_APP_PORT: String(p.port),
    DOORMAN_APP_REGISTRY: zk.url,
    DOORMAN_APP_SERVICES: IFACE,
    DOORMAN_DRAIN_DELAY: '1s',
    DOORMAN_DRAIN_QUIET: '200ms',
    DOORMAN_DRAIN_TIMEOUT: '5s',
    ...env
  }, { waitReady })
}

const status = async (port: number, p: string): Promise<number> => (await request(port, { path: p, timeout: 2000 })).status

t.test('readiness waits for the provider znodes: false before, true after, the registration delay seen', { skip: !haveZooKeeper() && 'zookeeper not installed' }, async (t) => {
  const zk = await startZooKeeper(t)
  // Dubbo's `delay`: the port answers well before the service is registered (here: when the test says).
  const provider = await startProvider(t, zk, { DELAY: 'signal', WARMUP: '60000' })
  const listenedAt = Date.now()
  const dm = await startSidecar(t, zk, provider, {}, false)
  // A second one declares nothing: it watches every interface under the root and waits for the set to settle.
  const undeclared = await startSidecar(t, zk, provider, { DOORMAN_APP_SERVICES: '' }, false)

  // Before the znode exists: the app's port answers, yet neither readiness passes.
  await waitFor('the app to pass its own check', async () => (await getJson<{ app: { ready: boolean } }>(dm.admin, '/state')).app.ready, 5000)
  t.equal(provider.registered(), null, 'the provider has not registered yet')
  const before = await request(dm.admin, { path: '/readyz' })
  t.equal(before.status, 503, '/readyz fails before the provider registered')
  t.match(before.body, /app-registered: the app has not registered/, 'and says why')
  t.equal(await status(dm.admin, '/app-health/app/readyz'), 503, "the app's readiness fails too")
  t.equal(await status(dm.admin, '/app-health/app/startupz'), 200, "the app's startup does not wait for it")
  const waiting = await getJson<{ appRegistry: { registered: boolean, waitingFor: string[] } }>(dm.admin, '/state')
  t.equal(waiting.appRegistry.registered, false)
  t.same(waiting.appRegistry.waitingFor, [IFACE], '/state names what is missing')

  // Readiness stays false while the app serves unregistered, then flips once the znode is there, and not before.
  await waitFor('a second of serving unregistered', async () => Date.now() - listenedAt >= 1000 && (await status(dm.admin, '/readyz')) === 503, 5000)
  provider.kill('SIGUSR2')
  const readyAt = await waitFor('/readyz', async () => (await status(dm.admin, '/readyz')) === 200 ? Date.now() : null, 10_000, 20)
  const reg = provider.registered()
  t.ok(reg !== null, 'the provider has registered')
  const registeredAt = reg?.registered ?? 0
  t.ok(readyAt >= registeredAt, `ready ${readyAt - registeredAt} ms after the registration, never before it`)
  t.ok(registeredAt - listenedAt >= 1000, `the registration delay is seen: ready ${readyAt - listenedAt} ms after the port opened`)
  t.equal(await status(dm.admin, '/app-health/app/readyz'), 200, "the app's readiness passes")

  const st = await getJson<{ ready: boolean, appRegistry: { kind: string, up: boolean, registered: boolean, registeredAt: string, entries: Array<{ service: string, url: string, timestamp: string, warmupMs: number }> } }>(dm.admin, '/state')
  t.equal(st.appRegistry.kind, 'zookeeper')
  t.equal(st.appRegistry.up, true)
  t.equal(st.appRegistry.registered, true)
  t.equal(st.appRegistry.entries.length, 1, '/state shows the registered provider')
  t.equal(st.appRegistry.entries[0].service, IFACE)
  t.equal(st.appRegistry.entries[0].url, reg?.urls[0], 'the URL as the provider wrote it')
  // Dubbo's warmup clock is the provider URL's timestamp, which doorman only reads: it starts at the registration.
  t.equal(new Date(st.appRegistry.entries[0].timestamp).getTime(), registeredAt, "Dubbo's warmup clock starts at the app's own registration")
  t.equal(st.appRegistry.entries[0].warmupMs, 60000)
  t.ok(new Date(st.appRegistry.registeredAt).getTime() >= registeredAt, 'the latch opened after the registration')
  t.equal(await status(undeclared.admin, '/readyz'), 503, 'with no declared services, not ready at once...')
  const settledAt = await waitFor('/readyz with no declared services', async () => (await status(undeclared.admin, '/readyz')) === 200 ? Date.now() : null, 15_000, 50)
  t.ok(settledAt - registeredAt >= SETTLE_MS - 100, `...but once nothing new was registered for ${SETTLE_MS} ms (${settledAt - registeredAt} ms)`)
  const other = await getJson<{ appRegistry: { entries: Array<{ service: string }> } }>(undeclared.admin, '/state')
  t.same(other.appRegistry.entries.map((e) => e.service), [IFACE], 'it found the interface under the root')

  const metrics = (await request(dm.admin, { path: '/metrics' })).body
  t.match(metrics, /^doorman_app_registered 1$/m, 'doorman_app_registered')
  t.match(metrics, /^doorman_app_registry_up 1$/m, 'doorman_app_registry_up')
})

t.test('a rolling replacement of three providers under a Dubbo consumer\'s load: zero failed calls', { skip: !haveZooKeeper() && 'zookeeper not installed' }, async (t) => {
  const zk = await startZooKeeper(t)
  const pods: Array<{ p: Provider, dm: Doorman }> = []
  for (let i = 0; i < 3; i++) {
    const p = await startProvider(t, zk)
    pods.push({ p, dm: await startSidecar(t, zk, p) })
  }
  const consumer = new DubboConsumer(zk.connect, IFACE)
  t.teardown(async () => { await consumer.close() })
  await consumer.start()
  await waitFor('the consumer to see three providers', () => consumer.invokers.length === 3, 10_000)
  consumer.startLoad(4, 10)
  await waitFor('calls to every provider', () => pods.every(({ p }) => consumer.calls.filter((c) => c.ok && c.to === `127.0.0.1:${p.port}`).length > 20), 10_000)

  const drained: Array<{ addr: string, drainAt: number }> = []
  for (let i = 0; i < 3; i++) {
    // The new pod first, ready only once its provider is registered (what the rollout waits for)...
    const p = await startProvider(t, zk, { DELAY: '300' })
    const dm = await startSidecar(t, zk, p)
    t.ok(p.registered() !== null, `new provider ${p.port} registered before its pod was ready`)
    await waitFor('the consumer to call the new provider', () => consumer.calls.some((c) => c.ok && c.to === `127.0.0.1:${p.port}`), 5000)
    // ...then the old one: the preStop hook (GET /drain?wait=1) returns once drained, then the app gets SIGTERM.
    const old = pods.shift() as { p: Provider, dm: Doorman }
    const drainAt = Date.now()
    drained.push({ addr: `127.0.0.1:${old.p.port}`, drainAt })
    const pre = await request(old.dm.admin, { path: '/drain?wait=1', timeout: 15_000 })
    t.equal(pre.status, 200, 'the preStop hook returned once drained')
    old.p.kill('SIGTERM')
    t.equal((await old.p.exited).code, 0, 'the old provider exited')
    t.equal((await old.dm.exited).code, 0, 'its doorman exited cleanly once the provider had left the registry')
    pods.push({ p, dm })
  }
  await waitFor('calls to the three new providers', () => pods.every(({ p }) => consumer.calls.filter((c) => c.ok && c.to === `127.0.0.1:${p.port}`).length > 10), 10_000)
  await consumer.stopLoad()

  const failed = consumer.calls.filter((c) => !c.ok)
  t.equal(failed.length, 0, `no call failed (of ${consumer.calls.length})${failed.length > 0 ? `: ${JSON.stringify(failed.slice(0, 3))}` : ''}`)
  for (const { addr, drainAt } of drained) {
    const configurators = consumer.events.filter((e) => e.category === 'configurators' && e.at >= drainAt)
    const first = configurators[0]
    t.ok(first !== undefined && !first.invokers.includes(addr), `${addr}: the first configurators event after the drain started disabled it (${first === undefined ? 'none' : `${first.at - drainAt} ms after the drain started`})`)
    const lastCall = Math.max(...consumer.calls.filter((c) => c.to === addr).map((c) => c.start))
    t.ok(first !== undefined && lastCall <= first.at, `${addr}: no call started after that event (last ${lastCall - drainAt} ms after the drain started)`)
  }
  // Gone with the old doormans' sessions: no override is left to disable a later pod at the same address.
  const left = consumer.events.filter((e) => e.category === 'configurators').at(-1)
  t.same(left?.urls, [], 'no override left behind')
})
