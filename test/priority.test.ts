// Priority classes end to end (seed 000 §5: pause non-core business, keep core business served): an app saturated
// by normal and low-priority traffic through a real `doorman run`, with a static and with an adaptive limit.
// Critical requests keep being served (none shed: they never need more than the reserve), low ones are shed, and
// no normal one is.
import t from 'tap'
import http from 'node:http'
import { startDoorman, startFixtureApp, getJson, waitFor } from './helpers/index.js'

interface Tally { ok: number, shed: Map<string, number>, other: number, firstShedAt: number }

/** `clients` closed-loop clients on `path`; tallies answers and shed reasons until stop(). */
function load (port: number, path: string, clients: number): { tally: Tally, stop: () => Promise<void> } {
  const agent = new http.Agent({ keepAlive: true, maxSockets: clients })
  const tally: Tally = { ok: 0, shed: new Map(), other: 0, firstShedAt: Infinity }
  let running = true
  const one = async (): Promise<void> => {
    await new Promise<void>((resolve) => {
      const req = http.get({ host: '127.0.0.1', port, path, agent, timeout: 10_000 }, (res) => {
        const reason = res.headers['x-doorman-shed']
        if (res.statusCode === 200) tally.ok++
        else if (res.statusCode === 503 && typeof reason === 'string') {
          tally.shed.set(reason, (tally.shed.get(reason) ?? 0) + 1)
          if (tally.firstShedAt === Infinity) tally.firstShedAt = performance.now()
        } else tally.other++
        res.resume()
        res.on('end', () => { setTimeout(resolve, res.statusCode === 503 ? 100 : 0) })
      })
      req.on('timeout', () => { req.destroy() })
      req.on('error', () => { tally.other++; setTimeout(resolve, 20) })
    })
  }
  const loops = Array.from({ length: clients }, async () => { while (running) await one() })
  return { tally, stop: async () => { running = false; await Promise.all(loops); agent.destroy() } }
}

const total = (m: Map<string, number>): number => [...m.values()].reduce((a, b) => a + b, 0)

for (const mode of ['static', 'adaptive'] as const) {
  t.test(`${mode} limit: critical requests are served, low ones shed first`, async (t) => {
    const app = await startFixtureApp(t, 'executor-app.mjs', { SLOTS: '10', WORK_MS: '50' })
    const dm = await startDoorman(t, {
      DOORMAN_APP_PORT: String(app.port),
      DOORMAN_LIMIT_MODE: mode,
      DOORMAN_MAX_CONCURRENCY: mode === 'static' ? '10' : '100',
      DOORMAN_CRITICAL_PATHS: '/checkout/*',
      DOORMAN_LOW_PATHS: '/reports/*',
      DOORMAN_CRITICAL_RESERVE: '20',
      DOORMAN_MAX_QUEUE: '40',
      DOORMAN_WARMUP: '0s'
    })
    // Normal traffic alone uses most of the app; low traffic pushes it past saturation.
    const normal = load(dm.inbound, '/api/orders', 6)
    const low = load(dm.inbound, '/reports/daily', 10)
    // One critical client at a time: it never needs more than the reserve.
    const critical = load(dm.inbound, '/checkout/pay', 1)
    const started = Date.now()
    await waitFor('8 s of saturation', () => Date.now() - started > 8000, 20_000, 100)
    await Promise.all([critical.stop(), normal.stop(), low.stop()])
    const state = await getJson<{ limit: number }>(dm.admin, '/state')

    const c = critical.tally
    const n = normal.tally
    const l = low.tally
    const summary = JSON.stringify({ limit: state.limit, critical: [c.ok, Object.fromEntries(c.shed)], normal: [n.ok, Object.fromEntries(n.shed)], low: [l.ok, Object.fromEntries(l.shed)] })
    t.ok(c.ok >= 20, `critical requests kept being served (${c.ok}) ${summary}`)
    t.equal(total(c.shed), 0, 'no critical request was shed')
    t.ok((l.shed.get('low-priority') ?? 0) > 20, 'low requests were shed as low-priority')
    t.ok(l.ok > 0, 'low requests got what capacity was left')
    t.equal(total(n.shed), 0, 'no normal request was shed')
    t.equal(c.other + n.other + l.other, 0, 'no errors')
  })
}
