// Lossless offline: SIGTERM, POST /drain and `doorman drain`, with real doorman and app processes.
import t from 'tap'
import http from 'node:http'
import { startServer, startDoorman, request, waitFor, getJson, spawnNode, CLI, type Doorman } from './helpers/index.js'

/** An app whose requests take `?ms=` milliseconds (default 0). */
async function slowApp (t: Tap.Test): Promise<number> {
  const { port } = await startServer(t, (req, res) => {
    const ms = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('ms') ?? 0)
    const timer = setTimeout(() => { res.end('done') }, ms)
    res.on('close', () => { clearTimeout(timer) })
  })
  return port
}

t.test('SIGTERM with 40 requests in flight: nothing lost, exit 0 long before the timeout', async (t) => {
  const port = await slowApp(t)
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(port), DOORMAN_DRAIN_DELAY: '1s', DOORMAN_DRAIN_QUIET: '300ms', DOORMAN_DRAIN_TIMEOUT: '20s', DOORMAN_LOG_LEVEL: 'info' })
  const inflight = Array.from({ length: 40 }, async () => await request(dm.inbound, { path: '/work?ms=2000' }))
  await waitFor('40 in flight', async () => (await getJson<{ inflight: number }>(dm.admin, '/state')).inflight === 40)
  const killedAt = performance.now()
  dm.proc.kill('SIGTERM')
  await waitFor('readiness to fail', async () => (await request(dm.admin, { path: '/readyz' })).status === 503, 2000, 5)
  const unreadyAfter = performance.now() - killedAt
  t.ok(unreadyAfter < 100, `readiness 503 within 100 ms (${unreadyAfter.toFixed(1)} ms)`)
  t.equal((await request(dm.admin, { path: '/livez' })).status, 200, 'liveness stays 200 while draining')
  const during = await request(dm.inbound, { path: '/work?ms=10' })
  t.equal(during.status, 200, 'a request sent during the drain delay is served')
  t.equal(during.headers['x-doorman-draining'], '1', '...and flagged')
  t.equal(during.headers.connection, 'close', '...with connection: close')
  const state = await getJson<{ phase: string, drain: { inflightAtStart: number } }>(dm.admin, '/state')
  t.equal(state.phase, 'draining')
  t.equal(state.drain.inflightAtStart, 40)
  const results = await Promise.all(inflight)
  t.equal(results.filter((r) => r.status === 200).length, 40, 'all 40 complete with 200')
  t.ok(results.every((r) => r.headers['x-doorman-draining'] === '1'), 'responses sent while draining are flagged')
  const { code } = await dm.exited
  const took = performance.now() - killedAt
  t.equal(code, 0, 'exit 0')
  t.ok(took < 10_000, `exited in ${Math.round(took)} ms, well before the 20 s timeout`)
  const out = dm.output()
  t.match(out, /"msg":"drain finished"/)
  t.match(out, /"clean":true,"inflightAtStart":40,"served":41,"cut":0/, 'the drain is logged with its counts')
})

t.test('a request longer than the drain timeout is cut, logged, and doorman still exits', async (t) => {
  const port = await slowApp(t)
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(port), DOORMAN_DRAIN_DELAY: '0s', DOORMAN_DRAIN_QUIET: '100ms', DOORMAN_DRAIN_TIMEOUT: '2s', DOORMAN_LOG_LEVEL: 'info' })
  const long = request(dm.inbound, { path: '/work?ms=30000' }).then((r) => r.status, () => 'cut')
  await waitFor('in flight', async () => (await getJson<{ inflight: number }>(dm.admin, '/state')).inflight === 1)
  const killedAt = performance.now()
  dm.proc.kill('SIGTERM')
  const { code } = await dm.exited
  const took = performance.now() - killedAt
  t.ok(took < 3500, `exited within ~3 s (${Math.round(took)} ms)`)
  t.equal(code, 0)
  t.equal(await long, 'cut', 'the long request was cut')
  t.match(dm.output(), /"cut":1.*"msg":"drain deadline reached: cut what was left"/)
  t.match(dm.output(), /"clean":false/)
})

t.test('POST /drain: loopback may, others need the token', async (t) => {
  const port = await slowApp(t)
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(port), DOORMAN_ADMIN_TOKEN: 's3cret', DOORMAN_DRAIN_DELAY: '200ms', DOORMAN_DRAIN_QUIET: '100ms' })
  const other = await request(dm.admin, { method: 'POST', path: '/drain', localAddress: '127.0.0.2' })
  t.equal(other.status, 403, 'from another address without the token: 403')
  const wrong = await request(dm.admin, { method: 'POST', path: '/drain', localAddress: '127.0.0.2', headers: { authorization: 'Bearer nope' } })
  t.equal(wrong.status, 403, 'a wrong token: 403')
  t.equal((await request(dm.admin, { path: '/readyz' })).status, 200, 'still ready')
  const withToken = await request(dm.admin, { method: 'POST', path: '/drain', localAddress: '127.0.0.2', headers: { authorization: 'Bearer s3cret' } })
  t.equal(withToken.status, 202, 'with the token: accepted')
  t.equal((await dm.exited).code, 0)

  const dm2 = await startDoorman(t, { DOORMAN_APP_PORT: String(port), DOORMAN_DRAIN_DELAY: '200ms', DOORMAN_DRAIN_QUIET: '100ms' })
  const local = await request(dm2.admin, { method: 'POST', path: '/drain' })
  t.equal(local.status, 202, 'from loopback: accepted')
  t.equal((await request(dm2.admin, { path: '/readyz' })).status, 503, 'readiness fails at once')
  t.equal((await dm2.exited).code, 0)
})

t.test('doorman drain (the preStop command) waits until drained', async (t) => {
  const port = await slowApp(t)
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(port), DOORMAN_DRAIN_DELAY: '300ms', DOORMAN_DRAIN_QUIET: '100ms' })
  const req = request(dm.inbound, { path: '/work?ms=1200' })
  await waitFor('in flight', async () => (await getJson<{ inflight: number }>(dm.admin, '/state')).inflight === 1)
  const drain = spawnNode(t, [CLI, 'drain'], { DOORMAN_ADMIN_PORT: String(dm.admin) })
  const { code } = await drain.exited
  t.equal(code, 0, 'doorman drain exits 0')
  t.equal((await req).status, 200, 'the request in flight completed')
  t.equal((await dm.exited).code, 0, 'the sidecar exited cleanly')
  t.match(drain.output(), /drained/)
})

/** A consumer-side round-robin balancer over doorman instances, as a mesh client would behave. */
class Balancer {
  readonly members = new Map<string, { dm: Doorman, agent: http.Agent, live: boolean }>()
  #next = 0
  stats = { ok: 0, failed: 0, retried: 0, flagged: 0, errors: [] as string[] }

  add (name: string, dm: Doorman): void {
    this.members.set(name, { dm, agent: new http.Agent({ keepAlive: true, maxSockets: 16 }), live: true })
  }

  /** Like an endpoints controller: drops members whose readiness fails. */
  async sync (): Promise<void> {
    await Promise.all([...this.members].map(async ([name, m]) => {
      const ready = await request(m.dm.admin, { path: '/readyz', timeout: 500 }).then((r) => r.status === 200, () => false)
      if (!ready && m.live) { m.live = false; setTimeout(() => { m.agent.destroy(); this.members.delete(name) }, 10_000).unref() }
    }))
  }

  #pick (exclude?: string): [string, { dm: Doorman, agent: http.Agent }] | null {
    const live = [...this.members].filter(([n, m]) => m.live && n !== exclude)
    if (live.length === 0) return null
    return live[this.#next++ % live.length]
  }

  /** One GET; retried once elsewhere only when doorman said it is safe (a shed 503) or nothing was sent (refused). */
  async get (path: string): Promise<void> {
    let exclude: string | undefined
    for (let attempt = 0; attempt < 2; attempt++) {
      const pick = this.#pick(exclude)
      if (pick === null) { this.stats.failed++; this.stats.errors.push('no live member'); return }
      const [name, m] = pick
      const outcome = await new Promise<{ status: number, draining: boolean, err?: string }>((resolve) => {
        const req = http.get({ host: '127.0.0.1', port: m.dm.inbound, path, agent: m.agent, timeout: 10_000 }, (res) => {
          res.resume()
          res.on('end', () => { resolve({ status: res.statusCode ?? 0, draining: res.headers['x-doorman-draining'] === '1', err: res.headers['x-doorman-shed'] as string | undefined }) })
        })
        req.on('error', (err: NodeJS.ErrnoException) => { resolve({ status: 0, draining: false, err: err.code ?? err.message }) })
      })
      if (outcome.draining) {
        this.stats.flagged++
        const mm = this.members.get(name)
        if (mm !== undefined) mm.live = false
      }
      if (outcome.status === 200) { this.stats.ok++; return }
      const safe = (outcome.status === 503 && outcome.err !== undefined) || outcome.err === 'ECONNREFUSED' || outcome.err === 'ECONNRESET'
      if (safe && attempt === 0) { this.stats.retried++; exclude = name; continue }
      this.stats.failed++
      this.stats.errors.push(`${name}: ${outcome.status} ${outcome.err ?? ''}`)
      return
    }
  }
}

t.test('rolling restart under 200+ requests/s: zero failed requests', async (t) => {
  const port = await slowApp(t)
  const env = { DOORMAN_APP_PORT: String(port), DOORMAN_DRAIN_DELAY: '500ms', DOORMAN_DRAIN_QUIET: '200ms', DOORMAN_DRAIN_TIMEOUT: '5s' }
  const lb = new Balancer()
  for (let i = 0; i < 3; i++) lb.add(`v1-${i}`, await startDoorman(t, env))
  let running = true
  const syncer = (async () => { while (running) { await lb.sync(); await new Promise((resolve) => setTimeout(resolve, 100)) } })()
  const started = performance.now()
  // 10 clients, each one request every 40 ms: about 250 requests/s.
  const clients = Array.from({ length: 10 }, async (_, i) => {
    let n = 0
    while (running) {
      await lb.get('/work?ms=5')
      n++
      const due = started + i * 4 + n * 40
      const wait = due - performance.now()
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
    }
  })
  await waitFor('traffic flowing', () => lb.stats.ok > 100)
  for (let i = 0; i < 3; i++) {
    const fresh = await startDoorman(t, env)
    lb.add(`v2-${i}`, fresh)
    const old = lb.members.get(`v1-${i}`)?.dm as Doorman
    const okBefore = lb.stats.ok
    old.proc.kill('SIGTERM')
    t.equal((await old.exited).code, 0, `v1-${i} drained and exited 0`)
    await waitFor('traffic continues', () => lb.stats.ok > okBefore + 50)
  }
  running = false
  await Promise.all(clients)
  await syncer
  const seconds = (performance.now() - started) / 1000
  const rate = (lb.stats.ok + lb.stats.failed) / seconds
  t.ok(rate >= 200, `load of ${Math.round(rate)} requests/s`)
  t.equal(lb.stats.failed, 0, `zero failed requests (${lb.stats.ok} ok, ${lb.stats.retried} safely retried, ${lb.stats.flagged} flagged responses)${lb.stats.errors.length > 0 ? ': ' + lb.stats.errors.slice(0, 5).join('; ') : ''}`)
  for (const m of lb.members.values()) m.agent.destroy()
})
