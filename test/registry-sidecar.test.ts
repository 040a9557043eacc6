// Registration through real `doorman run` processes, a real app server and a private redis-server: delayed
// registration, readiness tied to it, deregistration on drain, Redis outages.
import t from 'tap'
import { RedisRegistry, parseRegistryUrl, type RedisTarget, type Instance } from '../src/registry/index.js'
import { startServer, startDoorman, request, waitFor, getJson, freePort } from './helpers/index.js'
import { startRedis, redisCommand } from './helpers/redis.js'

/** An app whose /ready answers 503 until `ready` is set; `unready` holds when each 503 went out. */
async function app (t: Tap.Test): Promise<{ port: number, setReady: (r: boolean) => void, readyAt: () => number, unready: number[] }> {
  let ready = false
  let readyAt = 0
  const unready: number[] = []
  const { port } = await startServer(t, (req, res) => {
    if (req.url === '/ready') {
      if (!ready) unready.push(Date.now())
      res.statusCode = ready ? 200 : 503
      res.end(ready ? 'ok' : 'warming caches')
      return
    }
    res.end('hello')
  })
  return { port, setReady: (r) => { ready = r; if (r && readyAt === 0) readyAt = Date.now() }, readyAt: () => readyAt, unready }
}

function probes (port: number): string {
  return JSON.stringify({ '/app-health/app/readyz': { httpGet: { path: '/ready', port } } })
}

/** A watch of `service` on its own Redis client; `puts` holds when each put reached it, and the instance. */
async function watcher (t: Tap.Test, url: string, service: string): Promise<{ reg: RedisRegistry, view: () => Instance[], puts: Array<{ at: number, instance: Instance }> }> {
  const reg = new RedisRegistry({ target: parseRegistryUrl(url) as RedisTarget, checkMs: 500 })
  t.teardown(async () => { await reg.close() })
  await reg.waitUp(5000)
  const puts: Array<{ at: number, instance: Instance }> = []
  const w = reg.watch(service, (_view, change) => { if (change.type === 'put') puts.push({ at: Date.now(), instance: change.instance }) })
  t.teardown(() => { w.close() })
  await w.ready
  return { reg, view: () => [...w.view.values()], puts }
}

t.test('registers only after the app is ready and the delay has passed; readiness waits for it', async (t) => {
  const redis = await startRedis(t)
  const a = await app(t)
  const w = await watcher(t, redis.url, 'orders')
  const dm = await startDoorman(t, {
    DOORMAN_APP_PORT: String(a.port),
    DOORMAN_APP_PROBES: probes(a.port),
    DOORMAN_APP_CHECK_INTERVAL: '100ms',
    DOORMAN_REGISTRY: redis.url,
    DOORMAN_SERVICE: 'orders',
    DOORMAN_ZONE: 'z1',
    DOORMAN_REGISTER_DELAY: '1500ms',
    DOORMAN_WARMUP: '8s'
  }, { waitReady: false })
  // The app is not ready. Once the lane has found it unready (checking every 100 ms) for well over the delay, an
  // instance that registered without waiting for its app would be in Redis by now: it is not.
  await waitFor('the app found unready for over 2.5 s', () => a.unready.length >= 2 && (a.unready.at(-1) as number) - a.unready[0] >= 2500, 15_000)
  t.same(await w.reg.list('orders'), [], 'nothing registered while the app is not ready')
  t.same(w.puts, [], 'and nothing was ever put')
  const notReady = await request(dm.admin, { path: '/readyz?verbose' })
  t.equal(notReady.status, 503)
  t.match(notReady.body, /\[-\]app-ready failed/)
  t.match(notReady.body, /\[-\]registered failed: not registered yet/)

  a.setReady(true)
  const { at, instance: seen } = await waitFor('registration', () => w.puts[0], 10_000)
  t.ok(seen.registeredAt - a.readyAt() >= 1500, `registered ${seen.registeredAt - a.readyAt()} ms after the app turned ready (delay 1500 ms)`)
  t.ok(at - a.readyAt() >= 1500, `seen by the watcher ${at - a.readyAt()} ms after`)
  t.match(seen, { service: 'orders', zone: 'z1', cluster: 'default', address: `127.0.0.1:${dm.inbound}`, adminPort: dm.admin, state: 'warming' })
  t.ok(seen.weight >= 10 && seen.weight < 40, `a fresh instance publishes a low weight (${seen.weight})`)
  t.equal(seen.warmup.window, 8000)
  await waitFor('ready once registered', async () => (await request(dm.admin, { path: '/readyz' })).status === 200, 5000)
  const state = await getJson<{ registration: { registered: boolean, registryUp: boolean, registeredAt: string, connections: { commands: number, subscriber: number } }, warmup: { progress: number, weight: number } }>(dm.admin, '/state')
  t.equal(state.registration.registered, true)
  t.equal(state.registration.registryUp, true)
  t.ok(Math.abs(Date.parse(state.registration.registeredAt) - seen.registeredAt) < 100, '/state shows when the window started')
  t.ok(state.warmup.weight >= 10 && state.warmup.weight < 100)
  t.same(state.registration.connections, { commands: 1, subscriber: 1 }, 'two connections: commands, and the subscriber of its own service\'s watch (the restart budget\'s view)')
  // The weight climbs while it warms, on the instance and for its consumers, who interpolate it from the one
  // registration message: no weight steps are published.
  await waitFor('a higher weight', async () => (await getJson<{ warmup: { weight: number } }>(dm.admin, '/state')).warmup.weight > seen.weight + 10, 8000)
  t.equal(w.puts.length, 1, 'one message while warming: the registration')
  const metrics = (await request(dm.admin, { path: '/metrics' })).body
  t.match(metrics, /doorman_registry_up 1/)
  t.match(metrics, /doorman_registry_connections\{use="commands"\} 1/)
  t.match(metrics, /doorman_warmup_weight \d/)
  t.match(metrics, /doorman_registry_events_total\{event="register"\} 1/)

  // The app turns unready: the instance says so (not routable), and back.
  a.setReady(false)
  await waitFor('starting', () => w.view()[0]?.state === 'starting', 5000)
  a.setReady(true)
  await waitFor('warming again', () => w.view()[0]?.state === 'warming', 5000)
})

t.test('drain marks the instance draining at once, and removes it at the end', async (t) => {
  const redis = await startRedis(t)
  const { port } = await startServer(t, (_req, res) => { res.end('ok') })
  const w = await watcher(t, redis.url, 'orders')
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(port), DOORMAN_REGISTRY: redis.url, DOORMAN_SERVICE: 'orders', DOORMAN_DRAIN_DELAY: '1s', DOORMAN_DRAIN_QUIET: '200ms' })
  await waitFor('registered', () => w.view()[0]?.state === 'up', 5000)
  const t0 = performance.now()
  t.equal((await request(dm.admin, { path: '/drain', method: 'POST' })).status, 202)
  await waitFor('draining', () => w.view()[0]?.state === 'draining', 5000, 5)
  const ms = performance.now() - t0
  t.ok(ms < 500, `the watcher saw draining ${ms.toFixed(0)} ms after POST /drain`)
  await waitFor('removed after the drain', () => w.view().length === 0, 10_000)
  const { code } = await dm.exited
  t.equal(code, 0)
  t.same(await w.reg.list('orders'), [])
})

t.test('a Redis outage changes nothing for a registered instance; it registers again when Redis returns empty', async (t) => {
  const redis = await startRedis(t)
  const { port } = await startServer(t, (_req, res) => { res.end('ok') })
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(port), DOORMAN_REGISTRY: redis.url, DOORMAN_SERVICE: 'orders', DOORMAN_REGISTRY_TTL: '3s' })
  const w = await watcher(t, redis.url, 'orders')
  await waitFor('registered', () => w.view().length === 1, 5000)
  await redis.kill()
  await waitFor('registry down in metrics', async () => /doorman_registry_up 0/.test((await request(dm.admin, { path: '/metrics' })).body), 5000)
  for (let i = 0; i < 10; i++) {
    t.equal((await request(dm.admin, { path: '/readyz' })).status, 200, 'still ready during the outage')
    t.equal((await request(dm.inbound, { path: '/' })).body, 'ok', 'still serving')
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  const state = await getJson<{ registration: { registered: boolean, registryUp: boolean } }>(dm.admin, '/state')
  t.same(state.registration, { ...state.registration, registered: true, registryUp: false })
  const t0 = Date.now()
  await redis.restart()
  const fresh = await watcher(t, redis.url, 'orders')
  await waitFor('listed again', () => fresh.view().length === 1, 10_000)
  t.comment(`listed again ${Date.now() - t0} ms after Redis restarted empty`)
  t.equal((await request(dm.admin, { path: '/readyz' })).status, 200)
  t.equal(dm.output().match(/registry unreachable/g)?.length ?? 0, 1, 'the outage was logged once')
})

t.test('at start-up with Redis unreachable, readiness waits for registration', async (t) => {
  const port = await freePort()
  const url = `redis://127.0.0.1:${port}`
  const { port: appPort } = await startServer(t, (_req, res) => { res.end('ok') })
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(appPort), DOORMAN_REGISTRY: url, DOORMAN_SERVICE: 'orders', DOORMAN_APP_CHECK_INTERVAL: '100ms' }, { waitReady: false })
  await waitFor('the app passed its checks', async () => /app-ready ok/.test((await request(dm.admin, { path: '/readyz?verbose' })).body), 5000)
  const r = await request(dm.admin, { path: '/readyz?verbose' })
  t.equal(r.status, 503)
  t.match(r.body, /\[-\]registered failed/)
  // Redis comes up on that port: the instance registers and turns ready by itself.
  const { spawn } = await import('node:child_process')
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' })
  const exited = new Promise((resolve) => proc.once('exit', resolve))
  t.teardown(async () => { if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL'); await exited })
  await waitFor('redis-server up on the port doorman was given', async () => {
    if (proc.exitCode !== null) throw new Error(`redis-server exited with ${proc.exitCode}`)
    return (await redisCommand(port, 'PING')).startsWith('+PONG')
  }, 10_000)
  await waitFor('ready', async () => (await request(dm.admin, { path: '/readyz' })).status === 200, 15_000)
})

t.test('memory registry: the same delayed registration, within one process', async (t) => {
  const a = await app(t)
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(a.port), DOORMAN_APP_PROBES: probes(a.port), DOORMAN_APP_CHECK_INTERVAL: '100ms', DOORMAN_REGISTER_DELAY: '1s', DOORMAN_WARMUP: '10s' }, { waitReady: false })
  a.setReady(true)
  await waitFor('ready', async () => (await request(dm.admin, { path: '/readyz' })).status === 200, 10_000)
  t.ok(Date.now() - a.readyAt() >= 900, 'not before the delay')
  const st = await getJson<{ registration: { registered: boolean }, limit: number, warmup: { weight: number } }>(dm.admin, '/state')
  t.equal(st.registration.registered, true)
  t.ok(st.warmup.weight < 100, `warming: the published weight ramps (${st.warmup.weight}%)`)
  t.equal(st.limit, 100, 'the inbound limit does not ramp by default (DOORMAN_WARMUP_INBOUND=off)')
})
