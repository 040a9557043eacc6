// End to end: a real app process with a hidden 20-slot executor behind a 200-worker server, 80 clients through a
// real `doorman run` with DOORMAN_LIMIT_MODE=adaptive. doorman finds the executor's size from latency alone: the
// app's own time-in-queue stays short while the limit hovers near 20. Without doorman the same load queues there.
import t from 'tap'
import http from 'node:http'
import { startDoorman, startFixtureApp, getJson, waitFor, request } from './helpers/index.js'

interface AppStats { queue: { count: number, p50: number, p99: number, max: number }, completed: number, maxQueued: number }

/** `clients` closed-loop clients on keep-alive connections; counts answers by status until stop(). */
function load (port: number, clients: number): { statuses: Map<number, number>, stop: () => Promise<void> } {
  const agent = new http.Agent({ keepAlive: true, maxSockets: clients })
  const statuses = new Map<number, number>()
  let running = true
  const one = async (): Promise<void> => {
    await new Promise<void>((resolve) => {
      const req = http.get({ host: '127.0.0.1', port, path: '/work', agent, timeout: 10_000 }, (res) => {
        statuses.set(res.statusCode ?? 0, (statuses.get(res.statusCode ?? 0) ?? 0) + 1)
        res.resume()
        res.on('end', resolve)
        res.on('error', () => { resolve() })
      })
      req.on('timeout', () => { req.destroy() })
      req.on('error', () => { statuses.set(0, (statuses.get(0) ?? 0) + 1); setTimeout(resolve, 20) })
    })
  }
  const loops = Array.from({ length: clients }, async () => { while (running) await one() })
  return {
    statuses,
    stop: async () => { running = false; await Promise.all(loops); agent.destroy() }
  }
}

t.test('adaptive limit keeps the hidden executor\'s queue short under 80 clients', async (t) => {
  const app = await startFixtureApp(t, 'executor-app.mjs', { SLOTS: '20', WORKERS: '200', WORK_MS: '50' })

  // Without doorman: 80 clients on 20 slots wait about 3 × 50 ms in the executor's queue.
  const direct = load(app.port, 80)
  await waitFor('the direct load to run', async () => (await getJson<AppStats>(app.port, '/stats')).completed > 400, 20_000)
  await direct.stop()
  const before = await getJson<AppStats>(app.port, '/stats')
  t.ok(before.queue.p99 > 100, `directly, the app's queue p99 is long (${before.queue.p99.toFixed(0)} ms)`)
  await getJson(app.port, '/stats/reset')

  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(app.port), DOORMAN_LIMIT_MODE: 'adaptive', DOORMAN_MAX_CONCURRENCY: '100', DOORMAN_LIMIT_MIN: '4', DOORMAN_WARMUP: '0s' })
  const through = load(dm.inbound, 80)
  const limits: number[] = []
  const started = Date.now()
  // Sample the limit from the lane's /state for 12 s of load (the first 4 s are the start-up ramp).
  await waitFor('12 s of load through doorman', async () => {
    const st = await getJson<{ limit: number }>(dm.admin, '/state')
    if (Date.now() - started > 4000) limits.push(st.limit)
    return Date.now() - started > 12_000
  }, 30_000, 200)
  await through.stop()
  const after = await getJson<AppStats>(app.port, '/stats')
  const metrics = (await request(dm.admin, { path: '/metrics' })).body
  const gauge = (name: string): number => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(metrics)?.[1] ?? NaN)
  t.ok(gauge('doorman_limit_baseline_latency_seconds') > 0.045 && gauge('doorman_limit_baseline_latency_seconds') < 0.1, `the baseline latency is the app's 50 ms (${gauge('doorman_limit_baseline_latency_seconds')} s)`)
  t.ok(gauge('doorman_limit_sample_latency_seconds') > 0.045, `a sample latency is published (${gauge('doorman_limit_sample_latency_seconds')} s)`)
  t.ok(gauge('doorman_limit_changes_total') > 3, `limit changes are counted (${gauge('doorman_limit_changes_total')})`)

  const sorted = [...limits].sort((a, b) => a - b)
  const median = sorted[sorted.length >> 1]
  t.ok(after.queue.count > 1000, `the app served plenty through doorman (${after.queue.count})`)
  t.ok(after.queue.p99 < 50, `through doorman, the app's queue p99 stays under 50 ms (${after.queue.p99.toFixed(1)} ms, p50 ${after.queue.p50.toFixed(1)} ms)`)
  t.ok(median >= 14 && median <= 28, `the limit hovers near 20 (median ${median}, range ${sorted[0]}–${sorted[sorted.length - 1]})`)
  const ok = through.statuses.get(200) ?? 0
  t.ok(ok > 1000, `clients were served (${JSON.stringify(Object.fromEntries(through.statuses))})`)
})

t.test('an adaptive limit drains like a static one: what is in flight and queued completes, doorman exits 0', async (t) => {
  const app = await startFixtureApp(t, 'executor-app.mjs', { SLOTS: '20', WORKERS: '200', WORK_MS: '50' })
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(app.port), DOORMAN_LIMIT_MODE: 'adaptive', DOORMAN_WARMUP: '0s', DOORMAN_DRAIN_DELAY: '300ms', DOORMAN_DRAIN_QUIET: '200ms', DOORMAN_DRAIN_TIMEOUT: '10s', DOORMAN_LOG_LEVEL: 'info' })
  const clients = load(dm.inbound, 40)
  await waitFor('the limit to grow past its floor', async () => (await getJson<{ limit: number, queued: number }>(dm.admin, '/state')).limit >= 10, 15_000, 100)
  const st = await getJson<{ inflight: number, queued: number }>(dm.admin, '/state')
  t.ok(st.inflight + st.queued > 0, `requests in flight (${st.inflight}) and queued (${st.queued}) when the drain starts`)
  // The clients send nothing new (a keep-alive socket the drain closes could be picked for a new request: a client
  // race, not a loss); what they have in flight and queued must complete.
  const stopped = clients.stop()
  t.equal((await request(dm.admin, { method: 'POST', path: '/drain' })).status, 202)
  await stopped
  const { code } = await dm.exited
  t.equal(code, 0, 'exit 0')
  t.equal(clients.statuses.get(0) ?? 0, 0, 'no request failed on the wire')
  t.same([...clients.statuses.keys()].filter((s) => s !== 200 && s !== 503), [], 'every answer is a 200 (or a shed 503)')
  t.match(dm.output(), /"clean":true/, 'the drain finished clean: nothing cut')
})
