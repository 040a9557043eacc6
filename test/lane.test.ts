// The probe lane: answered from its own thread whatever the main thread and the app are doing.
import t from 'tap'
import http from 'node:http'
import path from 'node:path'
import { startServer, startDoorman, startFixtureApp, request, waitFor, freePort, getJson, ROOT } from './helpers/index.js'
import { probeOnce, type ProbeRecord } from '../tools/src/demo/kubelet.js'

const BLOCKING = path.join(ROOT, 'test', 'fixtures', 'blocking-sidecar.mjs')

interface Sample { at: number, path: string, status: number, ms: number }

/** Probes one path as kubelet does (fresh connection, 1 s timeout) and keeps every record. */
function kubeletProbe (port: number, path: string): { probe: () => Promise<ProbeRecord>, records: ProbeRecord[], failures: () => number } {
  const records: ProbeRecord[] = []
  return {
    records,
    probe: async () => { const r = await probeOnce({ port, path, timeoutMs: 1000 }); records.push(r); return r },
    failures: () => records.filter((r) => !r.ok).length
  }
}
const show = (records: ProbeRecord[]): string => records.map((r) => `${r.detail}:${Math.round(r.ms)}ms`).join(', ')

/** Polls the given lane paths every `everyMs` until `stop()`; one new connection per probe, as kubelet does. */
function pollLane (port: number, paths: string[], everyMs: number): { samples: Sample[], stop: () => Promise<void> } {
  const samples: Sample[] = []
  const pending = new Set<Promise<void>>()
  const timer = setInterval(() => {
    for (const p of paths) {
      const started = performance.now()
      const pr = request(port, { path: p, timeout: 2000 })
        .then((r) => { samples.push({ at: Date.now(), path: p, status: r.status, ms: performance.now() - started }) }, () => { samples.push({ at: Date.now(), path: p, status: 0, ms: performance.now() - started }) })
        .finally(() => { pending.delete(pr) })
      pending.add(pr)
    }
  }, everyMs)
  return { samples, stop: async () => { clearInterval(timer); await Promise.all(pending) } }
}

t.test('a blocked main thread: probes still answered at once, readiness follows the heartbeat', async (t) => {
  const { port } = await startServer(t, (_req, res) => { res.end('ok') })
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(port), BLOCK_MS: '3000', DOORMAN_READINESS_STALL: '1s', DOORMAN_LIVENESS_STALL: '10s' }, { args: [BLOCKING] })
  const poll = pollLane(dm.admin, ['/livez', '/readyz'], 50)
  await waitFor('a few probes before the block', () => poll.samples.length >= 6)
  dm.proc.kill('SIGUSR2')
  await waitFor('the block to start', () => dm.output().includes('blocking'))
  await waitFor('the block to end', () => dm.output().includes('unblocked'), 10_000)
  await waitFor('readiness back', () => poll.samples.some((s) => s.path === '/readyz' && s.status === 200 && s.at > Date.now() - 200), 5000)
  await poll.stop()
  const slowest = Math.max(...poll.samples.map((s) => s.ms))
  t.ok(slowest < 50, `every probe answered within 50 ms (slowest ${slowest.toFixed(1)} ms over ${poll.samples.length})`)
  t.ok(poll.samples.every((s) => s.path !== '/livez' || s.status === 200), 'liveness stayed 200: a 3 s stall is within its window')
  const ready = poll.samples.filter((s) => s.path === '/readyz').map((s) => s.status)
  const firstBad = ready.indexOf(503)
  t.ok(firstBad > 0, 'readiness turned 503 during the stall')
  t.equal(ready.at(-1), 200, 'and back to 200 after')
  t.ok(ready.slice(0, firstBad).every((s) => s === 200), 'it was 200 before')
})

t.test('a stall past the liveness window fails /livez', async (t) => {
  const { port } = await startServer(t, (_req, res) => { res.end('ok') })
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(port), BLOCK_MS: '2500', DOORMAN_LIVENESS_STALL: '1s', DOORMAN_READINESS_STALL: '500ms' }, { args: [BLOCKING] })
  const poll = pollLane(dm.admin, ['/livez'], 50)
  dm.proc.kill('SIGUSR2')
  await waitFor('the block to end', () => dm.output().includes('unblocked'), 10_000)
  await waitFor('liveness back', () => poll.samples.some((s) => s.status === 200 && s.at > Date.now() - 200), 5000)
  await poll.stop()
  t.ok(poll.samples.some((s) => s.status === 503), '/livez failed while the main loop was stuck past its window')
  t.equal(poll.samples.at(-1)?.status, 200, 'and recovered')
  const verbose = await request(dm.admin, { path: '/livez?verbose' })
  t.match(verbose.body, /\[\+\]main-loop ok/)
})

/** 80 clients looping 400 ms requests against `port` until stopped. */
function load (port: number, clients: number): { stop: () => Promise<void>, statuses: Map<number, number> } {
  const agent = new http.Agent({ keepAlive: true, maxSockets: clients })
  const statuses = new Map<number, number>()
  let running = true
  const loops = Array.from({ length: clients }, async () => {
    while (running) {
      const status = await new Promise<number>((resolve) => {
        const req = http.get({ host: '127.0.0.1', port, path: '/work', agent, timeout: 10_000 }, (res) => { res.resume(); res.on('end', () => { resolve(res.statusCode ?? 0) }) })
        req.on('error', () => { resolve(0) })
        req.on('timeout', () => { req.destroy() })
      })
      statuses.set(status, (statuses.get(status) ?? 0) + 1)
      if (status !== 200) await new Promise((resolve) => setTimeout(resolve, 20))
    }
  })
  return { statuses, stop: async () => { running = false; await Promise.all(loops); agent.destroy() } }
}

t.test('the seed incident: probes behind a saturated pool fail; on the lane they never do', async (t) => {
  const app = await startFixtureApp(t, 'pool-app.mjs', { SLOTS: '20', WORK_MS: '400' })
  // Without doorman: kubelet probes the app's /health, which queues behind business requests for a worker.
  const direct = load(app.port, 80)
  const kDirect = kubeletProbe(app.port, '/health')
  for (let i = 0; i < 6; i++) await kDirect.probe()
  await direct.stop()
  t.ok(kDirect.failures() > 0, `probing the app directly fails under load (${show(kDirect.records)})`)

  await waitFor('the app to drain its queue', async () => (await getJson<{ busy: number }>(app.port, '/stats')).busy === 0, 15_000)
  const probes = JSON.stringify({ '/app-health/app/livez': { httpGet: { path: '/health', port: app.port }, timeoutSeconds: 1 }, '/app-health/app/readyz': { httpGet: { path: '/health', port: app.port }, timeoutSeconds: 1 } })
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(app.port), DOORMAN_MAX_CONCURRENCY: '16', DOORMAN_APP_PROBES: probes })
  const before = await getJson<{ maxActive: number }>(app.port, '/stats')
  t.ok(before.maxActive > 16, 'the direct phase had pushed the app past 16')
  await request(app.port, { path: '/stats/reset' })
  const viaDoorman = load(dm.inbound, 80)
  const kubelets = ['/livez', '/readyz', '/app-health/app/livez', '/app-health/app/readyz'].map((p) => kubeletProbe(dm.admin, p))
  for (let i = 0; i < 6; i++) await Promise.all(kubelets.map(async (k) => await k.probe()))
  await viaDoorman.stop()
  const appMax = (await getJson<{ maxActive: number }>(app.port, '/stats')).maxActive
  for (const k of kubelets) t.equal(k.failures(), 0, `no failed probe on the lane (${show(k.records)})`)
  t.ok(appMax <= 16, `the app never saw more than 16 business requests at once (max ${appMax})`)
  t.ok((viaDoorman.statuses.get(200) ?? 0) > 0, 'business requests were served')
  const state = await getJson<{ limit: number }>(dm.admin, '/state')
  t.equal(state.limit, 16)
})

t.test('a frozen app fails its rewritten liveness; doorman stays alive; a killed app fails readiness', async (t) => {
  const app = await startFixtureApp(t, 'pool-app.mjs', { SLOTS: '20', WORK_MS: '50' })
  const probes = JSON.stringify({ '/app-health/app/livez': { httpGet: { path: '/health', port: app.port }, timeoutSeconds: 0.5 } })
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(app.port), DOORMAN_APP_PROBES: probes, DOORMAN_APP_STALL: '1s', DOORMAN_APP_CHECK_INTERVAL: '200ms', DOORMAN_UPSTREAM_TIMEOUT: '60s' })
  const traffic = load(dm.inbound, 4)
  await waitFor('traffic flowing', () => (traffic.statuses.get(200) ?? 0) > 10)
  t.equal((await request(dm.admin, { path: '/app-health/app/livez' })).status, 200, 'alive while completing')
  process.kill(app.proc.pid as number, 'SIGSTOP')
  const stoppedAt = Date.now()
  const failedAt = await waitFor('app liveness to fail', async () => (await request(dm.admin, { path: '/app-health/app/livez' })).status === 503 ? Date.now() : null, 10_000)
  t.ok(failedAt - stoppedAt >= 900, `not before the stall window (${failedAt - stoppedAt} ms)`)
  t.equal((await request(dm.admin, { path: '/livez' })).status, 200, "doorman's own liveness stays 200")
  const verbose = await request(dm.admin, { path: '/app-health/app/livez?verbose' })
  t.match(verbose.body, /\[-\]app-probe failed/, 'its own probe fails too: that is what fails liveness')
  t.match(verbose.body, /\[\+\]progress ok: requests in flight and none completed for \d+ms: not ready, not dead/)
  process.kill(app.proc.pid as number, 'SIGCONT')
  await traffic.stop()
  app.kill('SIGKILL')
  await app.exited
  const killedAt = Date.now()
  await waitFor('readiness to fail', async () => (await request(dm.admin, { path: '/readyz' })).status === 503, 5000)
  t.ok(Date.now() - killedAt < 2000, 'readiness failed at the next check')
  t.match((await request(dm.admin, { path: '/readyz?verbose' })).body, /\[-\]app-ready failed/)
  t.equal((await request(dm.admin, { path: '/livez' })).status, 200, 'doorman is still alive')
})

t.test('a slow app that completes requests is busy, not dead, even when its own probe times out', async (t) => {
  const app = await startFixtureApp(t, 'pool-app.mjs', { SLOTS: '2', WORK_MS: '150' })
  const probes = JSON.stringify({ '/app-health/app/livez': { httpGet: { path: '/health', port: app.port }, timeoutSeconds: 0.2 } })
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(app.port), DOORMAN_APP_PROBES: probes, DOORMAN_APP_STALL: '2s', DOORMAN_MAX_QUEUE: '100', DOORMAN_QUEUE_TIMEOUT: '10s' })
  const traffic = load(dm.inbound, 12)
  await waitFor('traffic flowing', () => (traffic.statuses.get(200) ?? 0) > 4)
  const k = kubeletProbe(dm.admin, '/app-health/app/livez')
  let ownProbeTimedOut = false
  for (let i = 0; i < 8; i++) {
    await k.probe()
    const body = (await request(dm.admin, { path: '/app-health/app/livez?verbose' })).body
    if (/timed out.*busy, not dead/.test(body)) ownProbeTimedOut = true
  }
  await traffic.stop()
  t.ok(ownProbeTimedOut, "the app's own probe timed out behind its busy workers")
  t.equal(k.failures(), 0, `yet the rewritten liveness never failed (${show(k.records)})`)
})

t.test('/startupz passes while the app is still down (no deadlock with native sidecars)', async (t) => {
  const port = await freePort()
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(port), DOORMAN_APP_CHECK_INTERVAL: '100ms' }, { waitReady: false })
  t.equal((await request(dm.admin, { path: '/startupz' })).status, 200)
  t.equal((await request(dm.admin, { path: '/livez' })).status, 200)
  const ready = await request(dm.admin, { path: '/readyz?verbose' })
  t.equal(ready.status, 503, 'not ready: the app is not up')
  t.match(ready.body, /\[-\]app-started failed/)
  t.equal((await request(dm.admin, { path: '/app-health/app/readyz' })).status, 503)
  t.equal((await request(dm.admin, { path: '/nope' })).status, 404, 'unknown paths 404')
  const late = http.createServer((_req, res) => { res.end('up') })
  late.listen(port, '127.0.0.1')
  t.teardown(() => { late.close() })
  const up = await waitFor('ready once the app listens', async () => { const r = await request(dm.admin, { path: '/readyz?verbose' }); return r.status === 200 ? r : null }, 5000)
  t.match(up.body, /\[\+\]app-started ok: passed/, 'the app passed its start-up check once it listened')
  t.match(up.body, /\[\+\]app-ready ok: passed/)
  // Without DOORMAN_APP_PROBES the app's rewritten probes fall back to a TCP connect to its port.
  const appReady = await request(dm.admin, { path: '/app-health/app/readyz?verbose' })
  t.equal(appReady.status, 200)
  t.match(appReady.body, /\[\+\]app-probe ok: connected/)
})

t.test('with DOORMAN_APP_PROBES, an /app-health path it does not hold is 404 and names the paths it holds', async (t) => {
  const { port } = await startServer(t, (_req, res) => { res.end('ok') })
  const probes = JSON.stringify({ '/app-health/app/livez': { httpGet: { path: '/health', port } }, '/app-health/app/readyz': { httpGet: { path: '/health', port } } })
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(port), DOORMAN_APP_PROBES: probes })
  t.equal((await request(dm.admin, { path: '/app-health/app/livez' })).status, 200, 'a held path is the probe')
  t.equal((await request(dm.admin, { path: '/app-health/app/readyz' })).status, 200)
  for (const p of ['/app-health/nope/livez', '/app-health/nope/readyz', '/app-health/app/startupz', '/app-health/app/health']) {
    const r = await request(dm.admin, { path: p })
    t.equal(r.status, 404, `${p}: 404`)
    t.equal(r.body, `no app probe at ${p}: DOORMAN_APP_PROBES holds /app-health/app/livez, /app-health/app/readyz\n`)
  }
  t.match((await request(dm.admin, { path: '/metrics' })).body, /^doorman_probe_failures_total\{probe="app-unknown"\} 4$/m)
})

t.test('without DOORMAN_APP_PROBES, /app-health/<any container>/<probe> falls back to the app port and its progress', async (t) => {
  const { port } = await startServer(t, (_req, res) => { res.end('ok') })
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(port) })
  for (const p of ['/app-health/app/readyz', '/app-health/other/startupz']) {
    const r = await request(dm.admin, { path: `${p}?verbose` })
    t.equal(r.status, 200, `${p}: 200`)
    t.match(r.body, /\[\+\]app-probe ok: connected/, 'a TCP connect to the app port')
  }
  const live = await request(dm.admin, { path: '/app-health/other/livez?verbose' })
  t.equal(live.status, 200)
  t.match(live.body, /\[\+\]progress ok/)
  t.notMatch(live.body, /app-probe/, 'progress alone: there is no probe of the app to run')
  t.equal((await request(dm.admin, { path: '/app-health/app/health' })).status, 404, 'not a probe kind: 404')
})

t.test('metrics are served by the lane, with the main thread\'s and the lane\'s own', async (t) => {
  const { port } = await startServer(t, (_req, res) => { res.end('ok') })
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(port) })
  await request(dm.inbound, { path: '/' })
  await request(dm.admin, { path: '/livez' })
  const m = (await request(dm.admin, { path: '/metrics' })).body
  for (const name of ['doorman_inflight_requests', 'doorman_queued_requests', 'doorman_concurrency_limit', 'doorman_requests_total', 'doorman_shed_total', 'doorman_request_duration_seconds', 'doorman_upstream_errors_total', 'doorman_probe_duration_seconds', 'doorman_ready', 'doorman_draining', 'doorman_warmup_weight', 'doorman_registry_up', 'nodejs_eventloop_lag_seconds', 'process_cpu_user_seconds_total']) {
    t.match(m, new RegExp(`^# TYPE ${name} `, 'm'), name)
  }
  t.match(m, /doorman_requests_total\{code="200",protocol="http1"\} 1/)
  t.match(m, /doorman_ready 1/)
  const gauge = (name: string): number => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(m)?.[1])
  t.ok(gauge('doorman_lane_heap_size_used_bytes') > 0, "the lane's heap is shown")
  t.ok(gauge('doorman_lane_heap_size_used_bytes') <= gauge('doorman_lane_heap_size_total_bytes'))
  t.ok(gauge('doorman_lane_heap_size_limit_bytes') < 80 * 1024 * 1024, "the lane's heap is bounded by its resource limits")
  const page = await request(dm.admin, { path: '/' })
  t.match(page.headers['content-type'], /text\/html/)
  t.match(page.body, /fetch\('\/state'/)
})
