// A dependency every instance calls hangs (seed 001's slow downstream, issue 16 §1): three `doorman run` instances of
// one service over a private redis-server, each in front of its own app; every app calls one shared dependency on
// each business request, and the dependency stops answering. Requests pile up in flight and none completes, on every
// instance at once. No restart cures that, so no instance's app liveness may fail:
//   - with the app's own liveness probe (it passes: the app is alive) — never, whatever the progress;
//   - progress-only (no own probe) — the restart budget at its default lets at most its share fail, and a lone stall
//     (one pod's own deadlock) still fails.
import t from 'tap'
import http from 'node:http'
import { request, startDoorman, startServer, waitFor, type Doorman } from './helpers/index.js'
import { startRedis, type RedisServer } from './helpers/redis.js'
import { restartBudget } from '../src/probe-lane/probes.js'

const STALL = '1s'
const DEFAULT_MAX_FAILING = 25

/** The shared dependency: answers at once, or holds every request while hung. */
async function dependency (t: Tap.Test): Promise<{ port: number, hang: () => void, heal: () => void }> {
  let hung = false
  const held: http.ServerResponse[] = []
  const s = await startServer(t, (_req, res) => { if (hung) held.push(res); else res.end('dep') })
  return { port: s.port, hang: () => { hung = true }, heal: () => { hung = false; for (const r of held.splice(0)) r.end('dep') } }
}

/** An app whose business requests call the dependency; its own /health touches nothing (it is alive). `stuck` holds its requests itself. */
async function app (t: Tap.Test, depPort: number): Promise<{ port: number, stick: () => void, unstick: () => void }> {
  let stuck = false
  const held: Array<() => void> = []
  const s = await startServer(t, (req, res) => {
    if (req.url === '/health') { res.end('ok'); return }
    const call = (): void => {
      http.get({ host: '127.0.0.1', port: depPort, path: '/', agent: false }, (r) => { r.resume(); r.on('end', () => { res.end('done') }) })
        .on('error', () => { res.statusCode = 502; res.end() })
    }
    if (stuck) held.push(call); else call()
  })
  return { port: s.port, stick: () => { stuck = true }, unstick: () => { stuck = false; for (const c of held.splice(0)) c() } }
}

/** Keeps `n` requests at a time going to an instance's inbound port until stopped. */
function load (port: number, n: number): { stop: () => Promise<void> } {
  let on = true
  const loops = Array.from({ length: n }, async () => {
    while (on) await request(port, { path: '/work', timeout: 60_000 }).catch(() => {})
  })
  return { stop: async () => { on = false; await Promise.all(loops) } }
}

async function livez (d: Doorman, verbose = false): Promise<{ status: number, body: string }> {
  const r = await request(d.admin, { path: `/app-health/app/livez${verbose ? '?verbose' : ''}`, timeout: 5000 })
  return { status: r.status, body: r.body }
}

async function metric (d: Doorman, name: string, labels = ''): Promise<number> {
  const text = (await request(d.admin, { path: '/metrics', timeout: 5000 })).body
  // Without labels asked for: the series whatever its labels (the liveness gauges carry the service's name).
  const line = text.split('\n').find((l) => labels === '' ? l.startsWith(`${name} `) || l.startsWith(`${name}{`) : l.startsWith(`${name}{${labels}} `))
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1))
}

async function fleet (t: Tap.Test, redis: RedisServer, service: string, ownProbe: boolean): Promise<{ dep: Awaited<ReturnType<typeof dependency>>, apps: Array<Awaited<ReturnType<typeof app>>>, doormans: Doorman[] }> {
  const dep = await dependency(t)
  const apps = await Promise.all([0, 1, 2].map(async () => await app(t, dep.port)))
  const doormans = await Promise.all(apps.map(async (a) => await startDoorman(t, {
    DOORMAN_APP_PORT: String(a.port),
    DOORMAN_REGISTRY: redis.url,
    DOORMAN_SERVICE: service,
    DOORMAN_APP_STALL: STALL,
    DOORMAN_APP_PROBES: ownProbe ? JSON.stringify({ '/app-health/app/livez': { httpGet: { path: '/health', port: a.port }, timeoutSeconds: 1 } }) : undefined
  })))
  await waitFor('three instances see each other', async () => {
    for (const d of doormans) if (await metric(d, 'doorman_liveness_service_instances') !== 3) return false
    return true
  }, 15_000)
  return { dep, apps, doormans }
}

/** Asks every instance's app liveness `rounds` times, 200 ms apart; returns how many failed in each round. */
async function watchLiveness (doormans: Doorman[], rounds: number): Promise<number[]> {
  const failedPerRound: number[] = []
  for (let i = 0; i < rounds; i++) {
    const statuses = await Promise.all(doormans.map(async (d) => (await livez(d)).status))
    failedPerRound.push(statuses.filter((s) => s !== 200).length)
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
  return failedPerRound
}

let redis: RedisServer
t.before(async () => { redis = await startRedis(t) })

t.test("the app's own probe passes: no instance's liveness fails while the shared dependency hangs", async (t) => {
  const { dep, doormans } = await fleet(t, redis, 'own', true)
  const traffic = doormans.map((d) => load(d.inbound, 3))
  await waitFor('traffic flowing', async () => (await request(doormans[0].inbound, { path: '/work', timeout: 5000 })).status === 200)
  dep.hang()
  // Every instance stalls (in flight, nothing completed for the window) and says so in /app-health…/livez?verbose.
  await waitFor('every instance stalled', async () => {
    for (const d of doormans) if (!/none completed for \d+ms: not ready, not dead/.test((await livez(d, true)).body)) return false
    return true
  }, 15_000)
  const failed = await watchLiveness(doormans, 10)
  t.same(failed, failed.map(() => 0), `no instance's liveness failed in any round (${failed.join(',')})`)
  dep.heal()
  for (const l of traffic) await l.stop()
  const after = await Promise.all(doormans.map(async (d) => (await livez(d)).status))
  t.same(after, [200, 200, 200], 'all alive after the dependency is back')
})

t.test('progress-only liveness: at most the default budget fails when every instance stalls; a lone stall fails', async (t) => {
  const { dep, apps, doormans } = await fleet(t, redis, 'progress', false)
  const budget = restartBudget(3, DEFAULT_MAX_FAILING)
  t.equal(budget, 1)
  t.match((await request(doormans[0].admin, { path: '/metrics' })).body, /doorman_liveness_budget\{service="progress"\} 1/, 'labelled by service, for the alert')
  for (const d of doormans) t.equal(await metric(d, 'doorman_liveness_budget'), budget, 'the budget as each instance sees it')

  // One pod's own deadlock: only its app is stuck. It is within the budget (1 of 3): its liveness fails.
  const lone = load(doormans[0].inbound, 2)
  apps[0].stick()
  await waitFor('the stuck instance fails its liveness', async () => (await livez(doormans[0])).status === 503, 15_000)
  t.match((await livez(doormans[0], true)).body, /within the budget, this pod's own failure/)
  t.same(await Promise.all(doormans.slice(1).map(async (d) => (await livez(d)).status)), [200, 200], 'the others are fine')
  apps[0].unstick()
  await lone.stop()
  await waitFor('the stuck instance alive again', async () => (await livez(doormans[0])).status === 200, 15_000)
  await waitFor('no instance publishes a failure', async () => {
    for (const d of doormans) if (await metric(d, 'doorman_liveness_service_failing') !== 0) return false
    return true
  }, 15_000)

  // The shared dependency hangs: every instance stalls at once. At most the budget's share fails, in every round.
  const traffic = doormans.map((d) => load(d.inbound, 3))
  await waitFor('traffic flowing', async () => (await request(doormans[1].inbound, { path: '/work', timeout: 5000 })).status === 200)
  dep.hang()
  await waitFor('every instance sees all three failing', async () => {
    for (const d of doormans) if (await metric(d, 'doorman_liveness_service_failing') !== 3) return false
    return true
  }, 15_000)
  const failed = await watchLiveness(doormans, 10)
  t.ok(failed.every((n) => n <= budget), `at most ${budget} failed in any round (${failed.join(',')})`)
  const verbose = (await livez(doormans[1], true)).body
  t.match(verbose, /\[~\]progress failed, waived/)
  t.match(verbose, /3 of 3 instances of the service failing or restarting, budget 1 \(DOORMAN_LIVENESS_MAX_FAILING=25%\): the failure is shared/)
  t.ok(await metric(doormans[1], 'doorman_liveness_waived_total', 'reason="shared"') > 0, 'counted as waived, shared')
  t.equal(await metric(doormans[1], 'doorman_app_liveness_failing'), 1, 'the raw check fails, published')
  dep.heal()
  for (const l of traffic) await l.stop()
  await waitFor('all alive, nothing published as failing', async () => {
    for (const d of doormans) if ((await livez(d)).status !== 200 || await metric(d, 'doorman_liveness_service_failing') !== 0) return false
    return true
  }, 15_000)
  t.pass('recovered')
})
