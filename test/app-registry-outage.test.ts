// ZooKeeper stopped for 10 s under a Dubbo consumer's load: no readiness changes and no call is lost. A private
// ZooKeeper, Dubbo-style providers and consumer (test/helpers/dubbo-provider.mjs, test/helpers/dubbo.ts), a doorman
// with DOORMAN_APP_REGISTRY in front of each provider.
import t from 'tap'
import { request, getJson, waitFor, type Doorman } from './helpers/index.js'
import { haveZooKeeper, startZooKeeper } from './helpers/zookeeper.js'
import { DubboConsumer, IFACE, startProvider, startSidecar } from './helpers/dubbo.js'

interface AppRegistryState { appRegistry: { up: boolean, registered: boolean, entries: unknown[] } }

t.test('ZooKeeper stopped for 10 s changes no readiness and loses no call', { skip: !haveZooKeeper() && 'zookeeper not installed' }, async (t) => {
  const zk = await startZooKeeper(t)
  const pods: Array<{ port: number, dm: Doorman }> = []
  for (let i = 0; i < 3; i++) {
    const p = await startProvider(t, zk)
    await waitFor('the provider to register', () => p.registered(), 10_000)
    pods.push({ port: p.port, dm: await startSidecar(t, zk, p) })
  }
  const consumer = new DubboConsumer(zk.connect, IFACE)
  t.teardown(async () => { await consumer.close() })
  await consumer.start()
  await waitFor('the consumer to see three providers', () => consumer.invokers.length === 3, 10_000)
  consumer.startLoad(4, 10)

  await zk.stop()
  const stoppedAt = Date.now()
  await waitFor("every doorman to notice the registry's outage", async () => {
    for (const { dm } of pods) if ((await getJson<AppRegistryState>(dm.admin, '/state')).appRegistry.up) return false
    return true
  }, 5000)
  // Ten seconds without ZooKeeper, every probe of every pod looked at every 100 ms.
  const notReady: string[] = []
  let rounds = 0
  while (Date.now() - stoppedAt < 10_000) {
    for (const { dm } of pods) {
      for (const p of ['/readyz', '/app-health/app/readyz']) {
        const r = await request(dm.admin, { path: p, timeout: 2000 })
        if (r.status !== 200) notReady.push(`${dm.admin}${p}: ${r.status} ${r.body.trim()}`)
      }
    }
    rounds++
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  t.same(notReady, [], `no readiness changed during the outage (${rounds} rounds of probes)`)
  const duringOutage = consumer.calls.filter((c) => c.start >= stoppedAt)
  t.ok(duringOutage.filter((c) => c.ok).length > 100, `the consumer kept calling from what it last saw (${duringOutage.length} calls)`)

  await zk.start()
  const restartedAt = Date.now()
  let seen: unknown[] = []
  await waitFor('every doorman reconnected, the providers still registered (their sessions outlived the outage)', async () => {
    seen = []
    for (const { dm } of pods) seen.push((await getJson<AppRegistryState>(dm.admin, '/state')).appRegistry)
    return seen.every((st) => (st as AppRegistryState['appRegistry']).up && (st as AppRegistryState['appRegistry']).entries.length === 1)
  }, 30_000, 100).catch((err: Error) => { throw new Error(`${err.message}: ${JSON.stringify(seen)}\n${pods.map(({ dm }) => dm.output().slice(-1500)).join('\n')}`) })
  t.comment(`every doorman back on ZooKeeper ${Date.now() - restartedAt} ms after it answered again`)
  const back = consumer.calls.length
  await waitFor('calls after the registry came back', () => consumer.calls.length > back + 100, 10_000)
  await consumer.stopLoad()
  const failed = consumer.calls.filter((c) => !c.ok)
  t.equal(failed.length, 0, `no call failed (of ${consumer.calls.length})${failed.length > 0 ? `: ${JSON.stringify(failed.slice(0, 3))}` : ''}`)
  t.equal(consumer.invokers.length, 3, 'the consumer still has the three providers')
  for (const { dm } of pods) t.equal((await request(dm.admin, { path: '/readyz' })).status, 200, `doorman ${dm.admin} ready after the outage`)
})
