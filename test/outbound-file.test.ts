// Several doorman processes on one machine sharing a file:// registry (no Redis): registration, the outbound lane,
// a drain, and `doorman instances`.
import t from 'tap'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { CLI, request, spawnNode, waitFor } from './helpers/index.js'
import { startProvider, startConsumer, steadyLoad, failures } from './helpers/mesh.js'

t.test('two providers and a consumer over a shared directory', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'doorman-file-registry-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const url = `file://${dir}`
  const a = await startProvider(t, url, 'a', { DOORMAN_WARMUP: '0', DOORMAN_REGISTRY_TTL: '3s' })
  const b = await startProvider(t, url, 'b', { DOORMAN_WARMUP: '0', DOORMAN_REGISTRY_TTL: '3s', DOORMAN_DRAIN_DELAY: '2s', DOORMAN_DRAIN_QUIET: '300ms' })
  const consumer = await startConsumer(t, url, { DOORMAN_REGISTRY_TTL: '3s' })

  const listed = spawnNode(t, [CLI, 'instances', 'orders', '--json'], { DOORMAN_REGISTRY: url })
  t.equal((await listed.exited).code, 0)
  const list = JSON.parse(listed.output()) as Array<{ address: string, state: string }>
  t.same(list.map((i) => i.address).sort(), [`127.0.0.1:${a.dm.inbound}`, `127.0.0.1:${b.dm.inbound}`].sort())
  t.ok(list.every((i) => i.state === 'up'))

  const load = steadyLoad(consumer.outbound, { concurrency: 3, pauseMs: 5 })
  t.teardown(async () => { await load.stop() })
  await waitFor('traffic to both', () => load.samples.filter((s) => s.body === 'a').length > 30 && load.samples.filter((s) => s.body === 'b').length > 30, 10_000)
  const drainAt = Date.now()
  t.equal((await request(b.dm.admin, { path: '/drain', method: 'POST' })).status, 202)
  t.equal((await b.dm.exited).code, 0)
  await load.stop()
  t.equal(failures(load.samples).length, 0, `no request failed (of ${load.samples.length})`)
  const late = Math.max(...b.arrivals) - drainAt
  t.ok(late <= 1000, `b got nothing new later than 1 s after its drain started (${late} ms)`)
})
