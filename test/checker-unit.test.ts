// The checker's parts in one process: rendezvous hashing, modes, globs and the budget; the Prober against real
// loopback servers; the Decider's queues; whole rounds over the memory registry; the admin listener.
import t from 'tap'
import net from 'node:net'
import { once } from 'node:events'
import { MemoryRegistry, type Instance } from '../src/registry/index.js'
import { silentLogger } from '../src/core/log.js'
import { loadConfig } from '../src/config/index.js'
import {
  Checker, Decider, MemoryCoordinator, ModeTable, Performer, Prober, CheckerMetrics,
  ejectBudget, globMatcher, owner, type EjectResult, type Target, type ProbeResult
} from '../src/checker/index.js'
import { CheckerAdmin } from '../src/checker/admin.js'
import { ownerFilter, type RoundContext } from '../src/checker/dispatcher.js'
import { freePort, request, startServer, getJson, waitFor } from './helpers/index.js'
import { instance } from './checker-helpers.js'

const log = silentLogger()

t.test('rendezvous hashing: balanced, and a joining or leaving replica moves only its own share', async (t) => {
  const services = Array.from({ length: 3000 }, (_, i) => `svc-${i}`)
  const three = ['a', 'b', 'c']
  const before = new Map(services.map((s) => [s, owner(s, three)]))
  for (const r of three) {
    const n = services.filter((s) => before.get(s) === r).length
    t.ok(n > 800 && n < 1200, `${r} owns ${n} of 3000`)
  }
  // c dies: only c's services move, and they spread over a and b.
  const two = ['a', 'b']
  let moved = 0
  for (const s of services) {
    const now = owner(s, two)
    if (before.get(s) === 'c') moved++
    else if (now !== before.get(s)) t.fail(`${s} moved from ${String(before.get(s))} to ${String(now)}`)
  }
  t.equal(moved, services.filter((s) => before.get(s) === 'c').length)
  // d joins: services move only to d, about a quarter of them.
  const four = ['a', 'b', 'c', 'd']
  const toD = services.filter((s) => owner(s, four) !== before.get(s))
  t.ok(toD.every((s) => owner(s, four) === 'd'), 'every moved service went to the new replica')
  t.ok(toD.length > 600 && toD.length < 900, `${toD.length} of 3000 moved to d`)
  t.equal(owner('x', []), undefined, 'nobody owns anything without replicas')
  t.equal(owner('x', ['b', 'a']), owner('x', ['a', 'b']), 'order of the list does not matter')
})

t.test('the protection budget is the nearest whole share, never the whole cluster (seed 002: 3 → 1 at a third)', async (t) => {
  const at33 = [0, 1, 2, 3, 4, 5, 6, 9, 10, 1000].map((n) => ejectBudget(n, 33))
  t.same(at33, [0, 0, 1, 1, 1, 2, 2, 3, 3, 330], 'the default 33%: 1 → 0, 2 → 1, 3 → 1')
  t.equal(ejectBudget(3, 34), 1)
  t.equal(ejectBudget(6, 34), 2)
  t.equal(ejectBudget(3, 50), 1, 'a half rounds down: 1.5 → 1')
  t.equal(ejectBudget(2, 50), 1)
  t.equal(ejectBudget(1, 50), 0, 'a service with one instance never loses it')
  t.equal(ejectBudget(1, 99), 0, 'below 100% never the whole cluster')
  t.equal(ejectBudget(2, 90), 1)
  t.equal(ejectBudget(10, 30), 3, 'exact products are not lost to floating point')
  t.equal(ejectBudget(10, 25), 2, '2.5 → 2')
  t.equal(ejectBudget(10, 100), 10, '100% allows all')
  t.equal(ejectBudget(1, 100), 1)
  t.equal(ejectBudget(10, 0), 0)
  t.equal(ejectBudget(3, 12.5), 0)
  t.equal(ejectBudget(0, 50), 0)
})

t.test('globs and the mode table', async (t) => {
  const m = globMatcher(['pay-*', 'redis', 'db?'])
  t.ok(m('pay-api'))
  t.ok(m('redis'))
  t.ok(m('db1'))
  t.notOk(m('db12'))
  t.notOk(m('redis-cache'))
  t.notOk(m('xpay-api'))
  t.notOk(globMatcher(['a.b'])('axb'), 'a dot is a dot')
  t.notOk(globMatcher([])('anything'))

  const { table, bad } = ModeTable.parse('full', { '*': 'recover-only', orders: 'full', 'orders/eu': 'off', billing: 'off', 'billing/canary': 'full', junk: 'sometimes' })
  t.same(bad, ['junk=sometimes'])
  t.equal(table.global, 'recover-only')
  t.equal(table.for('orders', 'us'), 'full', 'a service entry beats the global one')
  t.equal(table.for('orders', 'eu'), 'off', 'a cluster entry beats the service one')
  t.equal(table.for('users', 'x'), 'recover-only', 'the global entry where nothing closer is set')
  t.ok(table.anyOn('billing'), 'a service off but with one cluster on is still watched')
  t.notOk(new ModeTable('full', new Map([['billing', 'off']])).anyOn('billing'))
  t.equal(new ModeTable('off').for('a', 'b'), 'off', 'the configured default under an empty table')
})

t.test('the checker\'s settings', async (t) => {
  const cfg = loadConfig({ DOORMAN_CHECK_CANARY: 'pay-*, orders', DOORMAN_CHECK_EXCLUDE: 'mysql*,redis', DOORMAN_CHECK_GROUP: 'canary', DOORMAN_CHECK_CONCURRENCY: '50', DOORMAN_CHECK_REPLICA_ID: 'checker-0' })
  t.same(cfg.checkCanary, ['pay-*', 'orders'])
  t.same(cfg.checkExclude, ['mysql*', 'redis'])
  t.equal(cfg.checkGroup, 'canary')
  t.equal(cfg.checkConcurrency, 50)
  t.equal(cfg.checkReplicaId, 'checker-0')
  const d = loadConfig({})
  t.match(d, { checkInterval: 3000, checkTimeout: 1000, checkFailures: 3, checkSuccesses: 2, checkMaxEject: 33, checkMode: 'full', checkGroup: 'main', checkConcurrency: 200, checkReplicaId: '' })
  t.same(d.checkCanary, [])
  const bad = (env: Record<string, string>, variable: string): void => {
    t.throws(() => loadConfig(env), { name: 'ConfigError', variable }, `${JSON.stringify(env)} names ${variable}`)
  }
  bad({ DOORMAN_CHECK_MODE: 'sometimes' }, 'DOORMAN_CHECK_MODE')
  bad({ DOORMAN_CHECK_CANARY: 'Orders/eu' }, 'DOORMAN_CHECK_CANARY')
  bad({ DOORMAN_CHECK_EXCLUDE: 'a b' }, 'DOORMAN_CHECK_EXCLUDE')
  bad({ DOORMAN_CHECK_MAX_EJECT: '150' }, 'DOORMAN_CHECK_MAX_EJECT')
  bad({ DOORMAN_CHECK_GROUP: 'blue' }, 'DOORMAN_CHECK_GROUP')
  bad({ DOORMAN_CHECK_CONCURRENCY: '0' }, 'DOORMAN_CHECK_CONCURRENCY')
  bad({ DOORMAN_CHECK_TIMEOUT: '0s' }, 'DOORMAN_CHECK_TIMEOUT')
})

t.test('the Prober: HTTP to the lane, TCP without one, timeouts, refusals, and bounded concurrency', async (t) => {
  let inflight = 0
  let peak = 0
  const ok = await startServer(t, (req, res) => {
    inflight++
    peak = Math.max(peak, inflight)
    setTimeout(() => { inflight--; res.end(req.url) }, 30)
  })
  const sick = await startServer(t, (_req, res) => { res.statusCode = 503; res.end('not ready') })
  const silent = await startServer(t, () => {}) // accepts, never answers
  const closed = await freePort()
  const prober = new Prober({ concurrency: 3, timeout: 300 })
  t.teardown(async () => { await prober.close() })
  const target = (id: string, port: number, adminPort: number): Target => ({ service: 's', cluster: 'default', id, address: `127.0.0.1:${port}`, adminPort, ejected: false, instance: instance('s', id, port, adminPort) })

  const r1 = await prober.probe(target('ok', 1, ok.port))
  t.match(r1, { ok: true, outcome: 'ok', detail: '200' }, 'HTTP 200 from the lane port, not the address')
  t.match(await prober.probe(target('sick', 1, sick.port)), { ok: false, outcome: 'status', detail: '503' })
  const r3 = await prober.probe(target('silent', 1, silent.port))
  t.match(r3, { ok: false, outcome: 'timeout' })
  t.ok(r3.ms >= 250 && r3.ms < 3000, `timed out after ${Math.round(r3.ms)} ms`)
  t.match(await prober.probe(target('closed', 1, closed)), { ok: false, outcome: 'refused' })
  t.match(await prober.probe(target('tcp', ok.port, 0)), { ok: true, outcome: 'ok', detail: 'connected' }, 'TCP connect without a lane')
  t.match(await prober.probe(target('tcp-closed', closed, 0)), { ok: false, outcome: 'refused' })
  t.match(await prober.probe({ ...target('none', 0, 0), address: '' }), { ok: false, outcome: 'error' })

  peak = 0
  const results: ProbeResult[] = []
  await prober.run(Array.from({ length: 10 }, (_, i) => target(`c${i}`, 1, ok.port)), (r) => { results.push(r) })
  t.equal(results.length, 10)
  t.ok(results.every((r) => r.ok))
  t.equal(peak, 3, 'never more than the concurrency at once, and it is used')
})

/** A memory coordinator that records how many ejections per cluster run at once (and slows each down). */
class Recording extends MemoryCoordinator {
  readonly peak = new Map<string, number>()
  readonly now = new Map<string, number>()
  overall = 0
  peakOverall = 0
  calls = 0
  override async eject (service: string, ids: readonly string[], maxPercent: number): Promise<EjectResult[]> {
    this.calls++
    const cluster = ids[0].split('-')[0]
    this.now.set(cluster, (this.now.get(cluster) ?? 0) + 1)
    this.overall++
    this.peak.set(cluster, Math.max(this.peak.get(cluster) ?? 0, this.now.get(cluster) ?? 0))
    this.peakOverall = Math.max(this.peakOverall, this.overall)
    await new Promise((resolve) => setTimeout(resolve, 5))
    try { return await super.eject(service, ids, maxPercent) } finally {
      this.now.set(cluster, (this.now.get(cluster) ?? 0) - 1)
      this.overall--
    }
  }
}

t.test('the Decider: one cluster\'s ejections run one at a time; clusters and recoveries run side by side', async (t) => {
  const registry = new MemoryRegistry()
  t.teardown(async () => { await registry.close() })
  const coordinator = new Recording(registry)
  const metrics = new CheckerMetrics({ defaults: false })
  const performer = new Performer({ coordinator, maxEject: 100, metrics, log })
  const decider = new Decider({ failures: 1, successes: 1, queues: 8, performer, log })
  // Two clusters that land on different queues.
  const clusters = ['a', 'b', 'c', 'd', 'e', 'f'].filter((c, _i, all) => all.every((o) => o === c || decider.queueOf('s', o) !== decider.queueOf('s', c)))
  t.ok(clusters.length >= 2, 'found clusters on different queues')
  const [ca, cb] = clusters
  const results: ProbeResult[] = []
  for (const c of [ca, cb]) {
    for (let i = 0; i < 6; i++) {
      const inst = instance('s', `${c}-${i}`, 1000 + i, 0, { cluster: c })
      await registry.register(inst, 60_000)
      results.push({ target: { service: 's', cluster: c, id: inst.id, address: inst.address, adminPort: 0, ejected: false, instance: inst }, ok: false, outcome: 'timeout', detail: 'timeout', ms: 1 })
    }
  }
  for (const r of results) decider.observe(r, 'full')
  await decider.idle()
  t.equal(coordinator.peak.get(ca), 1, 'cluster a decided one at a time')
  t.equal(coordinator.peak.get(cb), 1, 'cluster b decided one at a time')
  t.equal(coordinator.peakOverall, 2, 'the two clusters in parallel')
  t.equal(metrics.ejections, 12)

  // Recoveries of one cluster are spread over every queue.
  let inflight = 0
  let peak = 0
  const slow = new (class extends MemoryCoordinator {
    override async recover (service: string, id: string): Promise<boolean> {
      inflight++
      peak = Math.max(peak, inflight)
      await new Promise((resolve) => setTimeout(resolve, 5))
      inflight--
      return await super.recover(service, id)
    }
  })(registry)
  const d2 = new Decider({ failures: 1, successes: 1, queues: 8, performer: new Performer({ coordinator: slow, maxEject: 100, metrics, log }), log })
  for (const r of results.filter((r) => r.target.cluster === ca)) d2.observe({ ...r, ok: true, outcome: 'ok', target: { ...r.target, ejected: true } }, 'full')
  await d2.idle()
  t.ok(peak > 1, `recoveries of one cluster ran ${peak} at once`)
  t.equal((await registry.list('s')).filter((i) => i.ejected).length, 6, 'cluster a recovered, b still ejected')
})

t.test('the Decider: a cluster\'s failures go to the store in one batch; once it is full, not again that round', async (t) => {
  const registry = new MemoryRegistry()
  t.teardown(async () => { await registry.close() })
  const coordinator = new Recording(registry)
  const metrics = new CheckerMetrics({ defaults: false })
  const decider = new Decider({ failures: 1, successes: 1, queues: 4, performer: new Performer({ coordinator, maxEject: 34, metrics, log }), log })
  const results: ProbeResult[] = []
  for (let i = 0; i < 6; i++) {
    const inst = instance('s', `x-${i}`, 1000 + i, 0)
    await registry.register(inst, 60_000)
    results.push({ target: { service: 's', cluster: 'default', id: inst.id, address: inst.address, adminPort: 0, ejected: false, instance: inst }, ok: false, outcome: 'timeout', detail: 'timeout', ms: 1 })
  }
  decider.newRound()
  for (const r of results) decider.observe(r, 'full')
  await decider.idle()
  t.equal(metrics.ejections, 2, 'floor(6 × 34%) = 2')
  t.equal(coordinator.calls, 1, 'the cluster\'s six failures went to the store in one batch')
  t.equal(metrics.blocked.get('threshold'), 4, 'all four others counted as blocked')
  // The next round asks once more (something may have changed), then stops asking again.
  const ejectedIds = new Set((await registry.list('s')).filter((i) => i.ejected).map((i) => i.id))
  decider.newRound()
  for (const r of results.filter((r) => !ejectedIds.has(r.target.id))) decider.observe(r, 'full')
  await decider.idle()
  t.equal(coordinator.calls, 2, 'asked once more in the next round')
  t.equal(metrics.blocked.get('threshold'), 8)
  // Within one round, once the cluster is found full, later batches of it are blocked without asking.
  const again = results.filter((r) => !ejectedIds.has(r.target.id)).slice(0, 2)
  t.equal(again.length, 2)
  for (const r of again) decider.observe(r, 'full')
  await decider.idle()
  t.equal(coordinator.calls, 2, 'not asked again this round')
  t.equal(metrics.blocked.get('threshold'), 10)
  t.equal(metrics.ejections, 2)
})

interface Backend { port: number, status: number }

async function backends (t: Tap.Test, n: number): Promise<Backend[]> {
  const out: Backend[] = []
  for (let i = 0; i < n; i++) {
    const b: Backend = { port: 0, status: 200 }
    const s = await startServer(t, (_req, res) => { res.statusCode = b.status; res.end() })
    b.port = s.port
    out.push(b)
  }
  return out
}

t.test('whole rounds over the memory registry: eject, threshold, recover, filters', async (t) => {
  const registry = new MemoryRegistry()
  t.teardown(async () => { await registry.close() })
  const coordinator = new MemoryCoordinator(registry)
  const b = await backends(t, 4)
  for (const [i, x] of b.entries()) await registry.register(instance('orders', `o${i}`, 1, x.port), 60_000)
  await registry.register(instance('orders', 'starting', 1, b[0].port, { state: 'starting' }), 60_000)
  await registry.register(instance('orders', 'draining', 1, b[0].port, { state: 'draining' }), 60_000)
  await registry.register(instance('mysql', 'm0', 1, b[0].port), 60_000)
  await registry.register(instance('canary-api', 'c0', 1, b[0].port), 60_000)
  const checker = new Checker({
    registry, coordinator, id: 'r1', exclude: ['mysql*'], canary: ['canary-*'],
    interval: 1000, timeout: 300, failures: 2, successes: 2, maxEject: 50, mode: 'full', concurrency: 10, replicaTtl: 5000, log,
    metrics: new CheckerMetrics({ defaults: false })
  })
  t.teardown(async () => { await checker.stop() })
  const ejected = async (): Promise<string[]> => (await registry.list('orders')).filter((i) => i.ejected).map((i) => i.id).sort()

  let r = await checker.round()
  t.match(r, { services: 1, instances: 6, targets: 4, failed: 0 }, 'excluded and canary services skipped; starting and draining instances not probed')
  t.same(checker.state().services, ['orders'])

  b[0].status = 503
  b[1].status = 503
  b[2].status = 503
  r = await checker.round()
  t.same(await ejected(), [], 'one failure ejects nothing')
  r = await checker.round()
  t.equal(r.ejected, 2, 'the second failure ejects, up to the budget')
  t.equal((await ejected()).length, 2, 'floor(4 × 50%) = 2')
  t.ok((await ejected()).every((id) => ['o0', 'o1', 'o2'].includes(id)), 'only failing ones')
  await checker.round()
  t.equal((await ejected()).length, 2, 'still 2: the third is held back by the threshold')
  t.ok((checker.metrics.blocked.get('threshold') ?? 0) >= 2)

  for (const x of b) x.status = 200
  await checker.round()
  t.equal((await ejected()).length, 2, 'one success recovers nothing')
  r = await checker.round()
  t.equal(r.recovered, 2)
  t.same(await ejected(), [])

  // recover-only through the run-time table: counts still climb, nothing is ejected.
  await coordinator.setMode('*', 'recover-only')
  b[3].status = 503
  for (let i = 0; i < 3; i++) await checker.round()
  t.same(await ejected(), [])
  t.equal(checker.decider.streak('orders', 'o3')?.failures, 3)
  t.ok((checker.metrics.blocked.get('mode') ?? 0) >= 2)
  t.equal(checker.state().mode, 'recover-only')

  // off for the service: nothing is probed.
  await coordinator.setMode('orders', 'off')
  r = await checker.round()
  t.match(r, { services: 0, targets: 0 })
})

t.test('two replicas in one group split the services and take over when one leaves', async (t) => {
  const registry = new MemoryRegistry()
  t.teardown(async () => { await registry.close() })
  const coordinator = new MemoryCoordinator(registry)
  const server = await startServer(t, (_req, res) => { res.end() })
  const services = Array.from({ length: 12 }, (_, i) => `svc-${i}`)
  for (const s of services) await registry.register(instance(s, `${s}-0`, 1, server.port), 60_000)
  const make = (id: string): Checker => new Checker({
    registry, coordinator, id, interval: 1000, timeout: 300, failures: 2, successes: 2, maxEject: 50, mode: 'full', concurrency: 10, replicaTtl: 5000, log,
    metrics: new CheckerMetrics({ defaults: false })
  })
  const a = make('a')
  const b = make('b')
  t.teardown(async () => { await a.stop(); await b.stop() })
  await a.round()
  await b.round()
  const ra = await a.round()
  const rb = await b.round()
  t.equal(ra.services + rb.services, 12, 'every service owned once')
  t.ok(ra.services > 0 && rb.services > 0, 'both own some')
  t.same(a.state().services, services.filter((s) => owner(s, ['a', 'b']) === 'a').sort())
  await b.stop()
  const after = await a.round()
  t.equal(after.services, 12, 'after b left, a owns everything')
})

t.test('each service\'s owner is computed once, until the ring changes', async (t) => {
  let computed = 0
  const f = ownerFilter((s, r) => { computed++; return owner(s, r) })
  const services = Array.from({ length: 100 }, (_, i) => `svc-${i}`)
  // Each round brings a new array, as each heartbeat does.
  const ctx = (replicas: string[]): RoundContext => ({ self: 'a', replicas: [...replicas], modes: new ModeTable('full') })
  const mine = services.filter((s) => f.keep(s, ctx(['a', 'b'])))
  t.equal(computed, 100)
  t.same(mine, services.filter((s) => owner(s, ['a', 'b']) === 'a'))
  for (let round = 0; round < 3; round++) t.same(services.filter((s) => f.keep(s, ctx(['a', 'b']))), mine)
  t.equal(computed, 100, 'not again while the ring stays the same')
  t.same(services.filter((s) => f.keep(s, ctx(['a', 'b', 'c']))), services.filter((s) => owner(s, ['a', 'b', 'c']) === 'a'))
  t.equal(computed, 200, 'all again once it changed')
  // Names no longer listed are forgotten.
  f.retain?.(services.slice(0, 10))
  for (const s of services.slice(0, 10)) f.keep(s, ctx(['a', 'b', 'c']))
  t.equal(computed, 200, 'listed names kept')
  f.keep('svc-50', ctx(['a', 'b', 'c']))
  t.equal(computed, 201, 'a forgotten one computed again')
})

t.test('a replica that stops heartbeating is taken over the moment its membership expires, not at the next round', async (t) => {
  const registry = new MemoryRegistry()
  t.teardown(async () => { await registry.close() })
  const coordinator = new MemoryCoordinator(registry)
  const server = await startServer(t, (_req, res) => { res.end() })
  const services = Array.from({ length: 12 }, (_, i) => `svc-${i}`)
  for (const s of services) await registry.register(instance(s, `${s}-0`, 1, server.port), 60_000)
  // Rounds a minute apart: only the expiry can bring the takeover within the test's time.
  const make = (id: string): Checker => new Checker({
    registry, coordinator, id, interval: 60_000, timeout: 300, failures: 2, successes: 2, maxEject: 50, mode: 'full', concurrency: 10, replicaTtl: 1000, log,
    metrics: new CheckerMetrics({ defaults: false })
  })
  const a = make('a')
  const b = make('b')
  t.teardown(async () => { await a.stop(); await b.stop() })
  // b joins with one round and never heartbeats again, as if killed.
  await b.round()
  a.start()
  const first = await waitFor('a\'s first round', () => a.state().lastRound as { round: number, services: number } | null, 5000)
  t.equal(first.round, 1)
  t.ok(first.services < 12, `b still owned a share in a's first round (a had ${first.services})`)
  // Without the expiry, a's second round would come a minute later.
  const second = await waitFor('a\'s second round', () => (a.state().lastRound as { round: number, services: number }).round === 2 ? a.state().lastRound as { services: number } : null, 10_000)
  t.equal(second.services, 12, 'a owns every service from the round the expiry started')
  t.same(a.state().replicas, ['a'])
})

t.test('a probe timeout longer than the interval is cut to the interval', async (t) => {
  const registry = new MemoryRegistry()
  t.teardown(async () => { await registry.close() })
  const make = (timeout: number): Checker => new Checker({
    registry, coordinator: new MemoryCoordinator(registry), id: 'r1', interval: 500, timeout, failures: 2, successes: 2, maxEject: 50, mode: 'full', concurrency: 10, replicaTtl: 5000, log,
    metrics: new CheckerMetrics({ defaults: false })
  })
  t.match(make(1000).state(), { settings: { interval: 500, timeout: 500 } })
  t.match(make(200).state(), { settings: { interval: 500, timeout: 200 } })
})

t.test('the admin listener: /livez, /readyz, /metrics, /state', async (t) => {
  const registry = new MemoryRegistry()
  t.teardown(async () => { await registry.close() })
  const server = await startServer(t, (_req, res) => { res.end() })
  await registry.register(instance('orders', 'o0', 1, server.port), 60_000)
  const checker = new Checker({
    registry, coordinator: new MemoryCoordinator(registry), id: 'r1', interval: 1000, timeout: 300, failures: 2, successes: 2, maxEject: 50, mode: 'full', concurrency: 10, replicaTtl: 5000, log
  })
  const admin = new CheckerAdmin(checker)
  const port = await admin.listen(0, '127.0.0.1')
  t.teardown(async () => { await checker.stop(); await admin.close() })
  t.equal((await request(port, { path: '/livez' })).status, 200)
  const notYet = await request(port, { path: '/readyz' })
  t.equal(notYet.status, 503, 'not ready before the first round')
  t.match(notYet.body, /membership failed: not joined yet/)
  await checker.round()
  t.equal((await request(port, { path: '/readyz' })).status, 200)
  t.match((await request(port, { path: '/readyz?verbose' })).body, /\[\+\]registry ok[\s\S]*\[\+\]membership ok[\s\S]*\[\+\]round ok/)
  const metrics = (await request(port, { path: '/metrics' })).body
  for (const name of ['doorman_checker_round_duration_seconds_count 1', 'doorman_checker_probes_total{result="ok"} 1', 'doorman_checker_ejections_total 0',
    'doorman_checker_recoveries_total 0', 'doorman_checker_instances{state="up"} 1', 'doorman_checker_shard_services 1', 'doorman_checker_replicas 1',
    'doorman_checker_mode{mode="full"} 1', 'process_cpu_user_seconds_total']) {
    t.ok(metrics.includes(name), name)
  }
  const st = await getJson<{ replica: string, services: string[], lastRound: { round: number } }>(port, '/state')
  t.match(st, { replica: 'r1', services: ['orders'], lastRound: { round: 1 } })
  t.equal((await request(port, { path: '/nope' })).status, 404)
  t.equal((await request(port, { path: '/livez', method: 'POST' })).status, 405)
})

t.test('a TCP-only instance whose port closes is ejected', async (t) => {
  const registry = new MemoryRegistry()
  t.teardown(async () => { await registry.close() })
  const listeners: net.Server[] = []
  const ports: number[] = []
  for (let i = 0; i < 2; i++) {
    const s = net.createServer((c) => { c.destroy() })
    s.listen(0, '127.0.0.1')
    await once(s, 'listening')
    listeners.push(s)
    ports.push((s.address() as net.AddressInfo).port)
  }
  t.teardown(() => { for (const s of listeners) s.close() })
  for (const [i, p] of ports.entries()) await registry.register(instance('tcp', `t${i}`, p, 0), 60_000)
  const checker = new Checker({
    registry, coordinator: new MemoryCoordinator(registry), id: 'r1', interval: 1000, timeout: 300, failures: 1, successes: 1, maxEject: 50, mode: 'full', concurrency: 10, replicaTtl: 5000, log,
    metrics: new CheckerMetrics({ defaults: false })
  })
  t.teardown(async () => { await checker.stop() })
  t.match(await checker.round(), { targets: 2, failed: 0 })
  await new Promise((resolve) => listeners[1].close(resolve))
  const r = await checker.round()
  t.match(r, { failed: 1, ejected: 1 })
  t.same((await registry.list('tcp')).filter((i) => i.ejected).map((i) => i.id), ['t1'])
})
