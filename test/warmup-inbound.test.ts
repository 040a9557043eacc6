// The inbound side of warmup, end to end: a real `doorman run` in front of a real app, a burst beyond limit + queue
// right after start-up. With the defaults the new instance takes its whole limit at once (warmup is the consumers'
// weight only); with DOORMAN_WARMUP_INBOUND=ramp its own limit ramps, what the ramp sheds says `warmup`, and a drain
// lifts the ramp.
import t from 'tap'
import { startServer, startDoorman, request, waitFor, getJson, type Response } from './helpers/index.js'

interface GatedApp {
  port: number
  /** Requests the app holds now, the most it ever held at once, and how many it answered. */
  active: () => number
  max: () => number
  served: () => number
  /** Lets every held request (and every later one) finish, each no sooner than 600 ms after it arrived. */
  open: () => void
}

/**
 * An app whose requests are slow (600 ms) and held until the test opens the gate, so a burst is all in place —
 * in flight, queued, shed — before anything completes, however loaded the machine is.
 */
async function gatedApp (t: Tap.Test): Promise<GatedApp> {
  let active = 0
  let max = 0
  let served = 0
  let opened = false
  const held: Array<() => void> = []
  const { port } = await startServer(t, (_req, res) => {
    active++
    max = Math.max(max, active)
    const arrived = Date.now()
    const finish = (): void => {
      setTimeout(() => { active--; served++; res.end('ok') }, Math.max(0, arrived + 600 - Date.now()))
    }
    if (opened) finish()
    else held.push(finish)
  })
  return {
    port,
    active: () => active,
    max: () => max,
    served: () => served,
    open: () => { opened = true; for (const f of held.splice(0)) f() }
  }
}

/** Sends `n` requests at once, each on its own connection; `done` fills as answers come back. */
function burst (port: number, n: number): { done: Response[], all: Promise<Response[]> } {
  const done: Response[] = []
  const all = Promise.all(Array.from({ length: n }, async () => {
    const r = await request(port, { path: '/work', timeout: 60_000 })
    done.push(r)
    return r
  }))
  return { done, all }
}

interface State { limit: number, baseLimit: number, inflight: number, queued: number, phase: string, warmup: { progress: number, weight: number } }

const shedTotal = async (admin: number): Promise<Record<string, number>> => {
  const body = (await request(admin, { path: '/metrics' })).body
  const out: Record<string, number> = {}
  for (const m of body.matchAll(/^doorman_shed_total\{reason="([^"]+)"\} (\d+)$/gm)) out[m[1]] = Number(m[2])
  return out
}

const LIMITS = { DOORMAN_MAX_CONCURRENCY: '4', DOORMAN_MAX_QUEUE: '4', DOORMAN_QUEUE_TIMEOUT: '60s' }

t.test('defaults: right after start-up a burst reaches the app at the full limit, the queue is served, the rest is shed queue-full', async (t) => {
  const app = await gatedApp(t)
  // DOORMAN_WARMUP and DOORMAN_WARMUP_INBOUND unset: the defaults (a 60 s window, the ramp off).
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(app.port), ...LIMITS, DOORMAN_WARMUP: undefined })
  const st = await getJson<State>(dm.admin, '/state')
  t.ok(st.warmup.progress < 1 && st.warmup.weight < 100, `inside the default warmup window (progress ${st.warmup.progress}, weight ${st.warmup.weight}%)`)
  t.equal(st.limit, 4, 'the limit in force is the configured one')
  t.equal(st.baseLimit, 4)

  const b = burst(dm.inbound, 12)
  await waitFor('4 at the app and 4 shed', () => app.active() === 4 && b.done.length === 4, 20_000)
  await waitFor('4 queued', async () => (await getJson<State>(dm.admin, '/state')).queued === 4, 5000)
  app.open()
  const all = await b.all
  const ok = all.filter((r) => r.status === 200)
  const shed = all.filter((r) => r.status === 503)
  t.equal(app.max(), 4, 'the app saw exactly the limit in flight, never more')
  t.equal(ok.length, 8, 'the 4 in flight and the 4 queued are served')
  t.equal(app.served(), 8)
  t.equal(shed.length, 4, 'the rest is shed')
  t.same(shed.map((r) => r.headers['x-doorman-shed']), ['queue-full', 'queue-full', 'queue-full', 'queue-full'])
  t.ok(shed.every((r) => r.headers['retry-after'] === '1'), 'with retry-after')
  t.same(await shedTotal(dm.admin), { 'queue-full': 4 }, 'doorman_shed_total: queue-full only')
})

t.test('DOORMAN_WARMUP_INBOUND=ramp: the ramp holds the limit down, and what it sheds says warmup', async (t) => {
  const app = await gatedApp(t)
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(app.port), ...LIMITS, DOORMAN_WARMUP: '10m', DOORMAN_WARMUP_INBOUND: 'ramp' })
  const st = await waitFor('the ramped limit', async () => { const s = await getJson<State>(dm.admin, '/state'); return s.limit < s.baseLimit ? s : null }, 5000)
  // 4 × the 10 % floor, at least 1.
  t.equal(st.limit, 1, 'the limit in force is ramped')
  t.equal(st.baseLimit, 4)

  const b = burst(dm.inbound, 12)
  await waitFor('1 at the app and 7 shed', () => app.active() === 1 && b.done.length === 7, 20_000)
  await waitFor('4 queued', async () => (await getJson<State>(dm.admin, '/state')).queued === 4, 5000)
  app.open()
  const all = await b.all
  const ok = all.filter((r) => r.status === 200)
  const shed = all.filter((r) => r.status === 503)
  t.equal(app.max(), 1, 'the app never saw more than the ramped limit')
  t.equal(ok.length, 5, 'the one in flight and the 4 queued are served')
  t.equal(shed.length, 7)
  t.ok(shed.every((r) => r.headers['x-doorman-shed'] === 'warmup'), `the ramp's sheds say warmup (${shed.map((r) => String(r.headers['x-doorman-shed'])).join(', ')})`)
  t.same(await shedTotal(dm.admin), { warmup: 7 }, 'doorman_shed_total: warmup only')
})

t.test('DOORMAN_WARMUP_INBOUND=ramp: a drain inside the window lifts the ramp, so nothing is shed for it', async (t) => {
  const app = await gatedApp(t)
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(app.port), ...LIMITS, DOORMAN_WARMUP: '10m', DOORMAN_WARMUP_INBOUND: 'ramp', DOORMAN_DRAIN_DELAY: '60s' })
  await waitFor('the ramped limit', async () => (await getJson<State>(dm.admin, '/state')).limit === 1, 5000)
  t.equal((await request(dm.admin, { path: '/drain', method: 'POST' })).status, 202)
  const st = await waitFor('draining at the full limit', async () => { const s = await getJson<State>(dm.admin, '/state'); return s.phase === 'draining' && s.limit === 4 ? s : null }, 5000)
  t.equal(st.warmup.progress < 1, true, 'still inside the window')

  const b = burst(dm.inbound, 8)
  await waitFor('4 at the app and 4 queued', async () => app.active() === 4 && (await getJson<State>(dm.admin, '/state')).queued === 4, 20_000)
  t.equal(b.done.length, 0, 'nothing shed')
  app.open()
  const all = await b.all
  t.same(all.map((r) => r.status), [200, 200, 200, 200, 200, 200, 200, 200], 'every request of the burst is served')
  t.ok(all.every((r) => r.headers['x-doorman-draining'] === '1'), 'flagged draining')
  t.equal(app.max(), 4)
  t.same(await shedTotal(dm.admin), {}, 'nothing shed')
})
