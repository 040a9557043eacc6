// Apps that register themselves, going offline: a rolling replacement of three Dubbo providers under a Dubbo
// consumer's load. A private ZooKeeper, providers that register as Dubbo 2.7/3.x does
// (test/helpers/dubbo-provider.mjs), a consumer that follows Dubbo's rules (test/helpers/dubbo.ts), a doorman with
// DOORMAN_APP_REGISTRY in front of each provider.
import t from 'tap'
import { request, waitFor, type Doorman } from './helpers/index.js'
import { haveZooKeeper, startZooKeeper } from './helpers/zookeeper.js'
import { DubboConsumer, IFACE, startProvider, startSidecar, type Provider } from './helpers/dubbo.js'

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
