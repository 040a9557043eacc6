// Apps that register themselves, coming online: readiness bound to the registration of a Dubbo provider in
// ZooKeeper. A private ZooKeeper, a provider process that registers as Dubbo 2.7/3.x does
// (test/helpers/dubbo-provider.mjs), doormans in front of it with DOORMAN_APP_REGISTRY.
import t from 'tap'
import { request, getJson, waitFor } from './helpers/index.js'
import { haveZooKeeper, startZooKeeper, gateZooKeeper, OP_EXISTS } from './helpers/zookeeper.js'
import { IFACE, startProvider, startSidecar } from './helpers/dubbo.js'
import { SETTLE_MS } from '../src/app-registry/gate.js'

const status = async (port: number, p: string): Promise<number> => (await request(port, { path: p, timeout: 2000 })).status

t.test('a path created between a failed listing and the watch set for it is still followed', { skip: !haveZooKeeper() && 'zookeeper not installed' }, async (t) => {
  // A registration creates the whole path at once (mkdirp, then the provider znode). A sidecar whose listing found no
  // node asks to be told when it appears (exists); the node may appear before the server reads that request, and the
  // watch then set fires on the node's data, never on its children. Each gate holds one sidecar's first `exists` on
  // the path it waits for while the provider registers, as a busy server or network would.
  const zk = await startZooKeeper(t)
  const provider = await startProvider(t, zk, { DELAY: 'signal' })
  const rootGate = await gateZooKeeper(t, zk, OP_EXISTS, '/dubbo')
  const providersGate = await gateZooKeeper(t, zk, OP_EXISTS, `/dubbo/${IFACE}/providers`)
  const undeclared = await startSidecar(t, { ...zk, url: rootGate.url }, provider, { DOORMAN_APP_SERVICES: '' }, false)
  const declared = await startSidecar(t, { ...zk, url: providersGate.url }, provider, {}, false)
  await waitFor('both sidecars to ask whether their path exists', () => rootGate.holding && providersGate.holding, 10_000)
  provider.kill('SIGUSR2')
  await waitFor('the provider to register', () => provider.registered() !== null, 10_000)
  rootGate.release()
  providersGate.release()
  await waitFor('/readyz of the sidecar declaring the interface', async () => (await status(declared.admin, '/readyz')) === 200, 10_000, 50)
  t.pass('the sidecar waiting on the providers path saw the registration')
  await waitFor('/readyz of the sidecar watching the whole root', async () => (await status(undeclared.admin, '/readyz')) === 200, SETTLE_MS + 10_000, 50)
  t.pass('the sidecar waiting on the root saw the registration')
})

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
