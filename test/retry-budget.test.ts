// The outbound lane's retry budget: the window on its own (a simulated clock), then the lane in-process over a memory
// registry and real instance servers on loopback: against a service whose every instance sheds, 1,000 calls reach the
// providers at most 1,000 × 1.2 + 10 × seconds times and every caller sees the provider's own 503; an app's own 503
// with retry-after is passed on as it is, never retried sooner than it asks; a refused connection is retried after a
// backoff. The same for gRPC calls: the provider's own status 14.
import t from 'tap'
import http2 from 'node:http2'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { Pool } from 'undici'
import { RetryBudget } from '../src/outbound/retry-budget.js'
import { Outbound } from '../src/outbound/index.js'
import { MemoryRegistry, type Instance } from '../src/registry/index.js'
import { Metrics } from '../src/metrics/index.js'
import { silentLogger } from '../src/core/log.js'
import { startServer, request, freePort } from './helpers/index.js'

t.test('RetryBudget: a percentage of the requests in the window plus a floor per second', async (t) => {
  let now = 0
  const b = new RetryBudget({ percent: 20, minPerSecond: 10, now: () => now })
  // The first second: the floor alone allows 10.
  let granted = 0
  while (b.tryRetry()) granted++
  t.equal(granted, 10, 'the floor: 10 in the first second with no requests')
  t.equal(b.exhausted, 1)
  for (let i = 0; i < 100; i++) b.request()
  granted = 0
  while (b.tryRetry()) granted++
  t.equal(granted, 20, '20 % of 100 requests on top')
  // The floor grows by 10 a second from the first; the requests and retries of the first second still count.
  now = 1500
  t.equal(b.available, 5)
  now = 2000
  granted = 0
  while (b.tryRetry()) granted++
  t.equal(granted, 10)
  // The window slides: after 10 s the first second's requests and retries fall out of it.
  now = 10_000
  t.equal(b.available, 10 * 10 - 10, "the first second's 100 requests and 30 retries are gone; the third second's 10 retries stay")
  now = 12_000
  t.equal(b.available, 100, 'nothing left in the window but the floor')
  now = 60_000
  t.equal(b.available, 100, 'a long pause empties the window')
})

t.test('RetryBudget: a percentage of 0 and a floor of 0 allow no retry', async (t) => {
  const b = new RetryBudget({ percent: 0, minPerSecond: 0, now: () => 0 })
  for (let i = 0; i < 1000; i++) b.request()
  t.notOk(b.tryRetry())
})

let seq = 0
function inst (port: number): Instance {
  const now = Date.now()
  return { id: `orders-${++seq}`, service: 'orders', cluster: 'default', zone: '', address: `127.0.0.1:${port}`, adminPort: 0, startedAt: now, registeredAt: now, warmup: { window: 0, aggression: 1, minWeight: 10, progress: 1 }, weight: 100, state: 'up', ejected: false, updatedAt: now, rev: 0 }
}

async function lane (t: Tap.Test, servers: number[], retryBudget?: { percent: number, minPerSecond: number }): Promise<{ port: number, metrics: Metrics }> {
  const reg = new MemoryRegistry()
  t.teardown(async () => { await reg.close() })
  for (const p of servers) await reg.register(inst(p), 60_000)
  const metrics = new Metrics({ defaults: false })
  const out = new Outbound({ port: 0, registry: reg, metrics, log: silentLogger(), upstreamTimeout: 5000, outlier: { failures: 5, ejectTime: 30_000, maxEject: 50 }, retryBudget })
  const port = await out.listen()
  t.teardown(async () => { await out.close() })
  return { port, metrics }
}

t.test('every instance sheds: retries stay within the budget and callers get the provider\'s own 503', async (t) => {
  let hits = 0
  const servers: number[] = []
  for (let i = 0; i < 3; i++) {
    const { port } = await startServer(t, (_req, res) => {
      hits++
      res.writeHead(503, { 'x-doorman-shed': 'queue-full', 'retry-after': '1', 'content-type': 'text/plain' })
      res.end('shed: queue-full\n')
    })
    servers.push(port)
  }
  const { port, metrics } = await lane(t, servers)
  const pool = new Pool(`http://127.0.0.1:${port}`, { connections: 20 })
  t.teardown(async () => { await pool.destroy() })
  const started = performance.now()
  const answers = new Map<string, number>()
  let next = 0
  await Promise.all(Array.from({ length: 20 }, async () => {
    while (next < 1000) {
      next++
      const r = await pool.request({ path: '/order', method: 'POST', headers: { host: 'orders' }, body: 'x' })
      const body = await r.body.text()
      const key = `${r.statusCode} shed=${String(r.headers['x-doorman-shed'])} error=${String(r.headers['x-doorman-error'])} ${body.trim()}`
      answers.set(key, (answers.get(key) ?? 0) + 1)
    }
  }))
  const seconds = Math.ceil((performance.now() - started) / 1000)
  t.comment(`${hits} provider hits for 1000 calls in ${seconds} s; answers ${JSON.stringify(Object.fromEntries(answers))}`)
  t.same([...answers], [['503 shed=queue-full error=undefined shed: queue-full', 1000]], "every caller saw the provider's own shed answer")
  t.ok(hits <= 1000 * 1.2 + 10 * seconds, `${hits} ≤ 1000 × 1.2 + 10 × ${seconds}`)
  t.ok(hits >= 1000 + 200, 'the budget was used: 20 % of the calls were retried')
  const text = await metrics.text()
  const exhausted = Number(/doorman_outbound_retry_budget_exhausted_total\{service="orders"\} (\d+)/.exec(text)?.[1] ?? 0)
  const retried = Number(/doorman_outbound_retries_total\{service="orders",reason="shed"\} (\d+)/.exec(text)?.[1] ?? 0)
  t.equal(retried, hits - 1000, 'each retry counted')
  t.ok(exhausted > 0, 'calls not retried for the budget are counted')
  t.match(text, new RegExp(`doorman_outbound_retry_outcomes_total\\{service="orders",outcome="failed"\\} ${retried}`), 'every retry failed too (shed again)')
})

t.test("an app's own 503 with retry-after is passed on as it is, not retried", async (t) => {
  let hits = 0
  const servers: number[] = []
  for (let i = 0; i < 2; i++) {
    const { port } = await startServer(t, (_req, res) => { hits++; res.writeHead(503, { 'retry-after': '7' }); res.end('busy, come back later') })
    servers.push(port)
  }
  const { port } = await lane(t, servers)
  const r = await request(port, { path: '/', headers: { host: 'orders' } })
  t.equal(r.status, 503)
  t.equal(r.headers['retry-after'], '7', "the app's retry-after reaches the caller")
  t.equal(r.body, 'busy, come back later')
  t.equal(hits, 1, 'not retried sooner than it asks: not retried at all')
})

t.test('a refused connection is retried on another instance after a jittered backoff, within the budget', async (t) => {
  const closed = await freePort()
  let seen = 0
  const { port: live } = await startServer(t, (_req, res) => { seen++; res.end('ok') })
  // Only the refusing instance first, so the first attempt surely goes there.
  const reg = new MemoryRegistry()
  t.teardown(async () => { await reg.close() })
  const metrics = new Metrics({ defaults: false })
  const out = new Outbound({ port: 0, registry: reg, metrics, log: silentLogger(), upstreamTimeout: 5000, outlier: { failures: 100, ejectTime: 30_000, maxEject: 50 }, retryBudget: { percent: 0, minPerSecond: 1 } })
  const port = await out.listen()
  t.teardown(async () => { await out.close() })
  await reg.register(inst(closed), 60_000)
  await reg.register(inst(live), 60_000)
  let retried = 0
  let refused = 0
  let minRetryMs = Infinity
  const started = performance.now()
  for (let i = 0; i < 20; i++) {
    const t0 = performance.now()
    const r = await request(port, { path: '/', headers: { host: 'orders' } })
    const ms = performance.now() - t0
    const before = retried
    retried = Number(/doorman_outbound_retries_total\{service="orders",reason="connect"\} (\d+)/.exec(await metrics.text())?.[1] ?? 0)
    if (retried > before) { t.equal(r.status, 200, 'the retry reached the live instance'); minRetryMs = Math.min(minRetryMs, ms) }
    if (r.status === 502) { refused++; t.equal(r.headers['x-doorman-error'], 'DOORMAN_ERR_UPSTREAM_CONNECT') }
  }
  t.ok(retried >= 1, `some calls were retried (${retried})`)
  const seconds = Math.ceil((performance.now() - started) / 1000)
  t.ok(retried <= seconds + 1, `no more than the floor of one per second allows (${retried} in ${seconds} s)`)
  t.ok(refused >= 1, 'a refused call the budget did not allow ends with the refusal itself')
  t.ok(minRetryMs >= 12, `a retried call waited its backoff (${minRetryMs.toFixed(1)} ms)`)
  t.equal(seen, 20 - refused)
})

t.test("gRPC: every instance sheds (UNAVAILABLE), retries stay within the budget and callers get the provider's own status 14", async (t) => {
  let hits = 0
  const servers: number[] = []
  for (let i = 0; i < 2; i++) {
    const server = http2.createServer()
    server.on('stream', (stream) => {
      hits++
      stream.on('error', () => {})
      stream.resume()
      stream.on('end', () => {
        stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '14', 'grpc-message': 'shed: queue-full', 'x-doorman-shed': 'queue-full' }, { endStream: true })
      })
    })
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    t.teardown(async () => { await new Promise((resolve) => { server.close(resolve) }) })
    servers.push((server.address() as AddressInfo).port)
  }
  const { port, metrics } = await lane(t, servers)
  const session = http2.connect(`http://127.0.0.1:${port}`)
  t.teardown(() => { session.destroy() })
  const calls = 300
  const started = performance.now()
  const statuses = new Map<string, number>()
  const frame = Buffer.from([0, 0, 0, 0, 0])
  let next = 0
  await Promise.all(Array.from({ length: 10 }, async () => {
    while (next < calls) {
      next++
      const answer = await new Promise<string>((resolve) => {
        const s = session.request({ ':method': 'POST', ':path': '/doorman.test.Echo/Unary', ':authority': 'orders', 'content-type': 'application/grpc', te: 'trailers' })
        let got = ''
        s.on('response', (h) => { got = `${String(h['grpc-status'])} shed=${String(h['x-doorman-shed'])} error=${String(h['x-doorman-error'])}` })
        s.on('trailers', (h) => { got = `${String(h['grpc-status'])} shed=${String(h['x-doorman-shed'])} error=${String(h['x-doorman-error'])}` })
        s.on('error', () => { got = 'stream error' })
        s.on('close', () => { resolve(got) })
        s.resume()
        s.end(frame)
      })
      statuses.set(answer, (statuses.get(answer) ?? 0) + 1)
    }
  }))
  const seconds = Math.ceil((performance.now() - started) / 1000)
  t.comment(`${hits} provider hits for ${calls} calls in ${seconds} s; answers ${JSON.stringify(Object.fromEntries(statuses))}`)
  t.same([...statuses], [['14 shed=queue-full error=undefined', calls]], "every caller saw the provider's own UNAVAILABLE with its shed flag")
  t.ok(hits <= calls * 1.2 + 10 * seconds, `${hits} ≤ ${calls} × 1.2 + 10 × ${seconds}`)
  t.ok(hits > calls, 'within the budget, some calls were retried on the other instance')
  t.match(await metrics.text(), /doorman_outbound_retry_budget_exhausted_total\{service="orders"\} [1-9]/)
})
