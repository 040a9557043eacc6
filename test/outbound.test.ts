// The outbound lane in-process, over a memory registry and real instance servers on loopback.
import t from 'tap'
import http from 'node:http'
import net from 'node:net'
import { once } from 'node:events'
import { Outbound, parseTarget } from '../src/outbound/index.js'
import { MemoryRegistry, type Instance, type Registry } from '../src/registry/index.js'
import { Metrics } from '../src/metrics/index.js'
import { silentLogger } from '../src/core/log.js'
import { startServer, request, rawRequest, freePort, waitFor } from './helpers/index.js'

let seq = 0
function inst (service: string, port: number, over: Partial<Instance> = {}): Instance {
  const now = Date.now()
  return { id: `${service}-${++seq}`, service, cluster: 'default', zone: '', address: `127.0.0.1:${port}`, adminPort: 0, startedAt: now, registeredAt: now, warmup: { window: 0, aggression: 1, minWeight: 10, progress: 1 }, weight: 100, state: 'up', ejected: false, updatedAt: now, rev: 0, ...over }
}

async function lane (t: Tap.Test, registry: Registry, outlier = { failures: 3, ejectTime: 30_000, maxEject: 50 }): Promise<{ port: number, metrics: Metrics }> {
  const metrics = new Metrics({ defaults: false })
  const out = new Outbound({ port: 0, registry, metrics, log: silentLogger(), upstreamTimeout: 5000, outlier })
  const port = await out.listen()
  t.teardown(async () => { await out.close() })
  return { port, metrics }
}

/** An instance server that answers with its name and counts requests. */
async function named (t: Tap.Test, name: string, handler?: http.RequestListener): Promise<{ port: number, hits: () => number, bodies: string[] }> {
  let hits = 0
  const bodies: string[] = []
  const { port } = await startServer(t, (req, res) => {
    hits++
    let body = ''
    req.on('data', (c: Buffer) => { body += c.toString() })
    req.on('end', () => {
      bodies.push(body)
      if (handler !== undefined) { handler(req, res); return }
      res.setHeader('x-host-seen', req.headers.host ?? '')
      res.end(`${name} ${req.method} ${req.url}`)
    })
  })
  return { port, hits: () => hits, bodies }
}

async function registry (t: Tap.Test): Promise<MemoryRegistry> {
  const r = new MemoryRegistry()
  t.teardown(async () => { await r.close() })
  return r
}

t.test('the service is named by the Host header or an absolute-form URL', async (t) => {
  t.same(parseTarget({ url: '/a?b=1', headers: { host: 'Orders:7081' } }), { service: 'orders', path: '/a?b=1', host: null })
  t.same(parseTarget({ url: 'http://orders.prod:8080/x?y', headers: { host: 'ignored' } }), { service: 'orders.prod', path: '/x?y', host: 'orders.prod:8080' })
  t.equal(parseTarget({ url: '/', headers: {} }), null)
  t.equal(parseTarget({ url: '/', headers: { host: 'bad_host!' } }), null)
  t.equal(parseTarget({ url: 'https://orders/', headers: {} }), null)
  t.equal(parseTarget({ url: '*', headers: { host: 'orders' } }), null)

  const reg = await registry(t)
  const a = await named(t, 'a')
  await reg.register(inst('orders', a.port), 60_000)
  const { port } = await lane(t, reg)
  const r1 = await request(port, { path: '/hello', headers: { host: 'orders' } })
  t.equal(r1.status, 200)
  t.equal(r1.body, 'a GET /hello')
  t.equal(r1.headers['x-host-seen'], 'orders')
  t.ok(r1.headers['x-request-id'])
  // As an HTTP proxy: the request line carries the URL.
  const raw = await rawRequest(port, 'GET http://orders/via-proxy?q=1 HTTP/1.1\r\nhost: orders\r\nconnection: close\r\n\r\n')
  t.match(raw, /^HTTP\/1\.1 200/)
  t.match(raw, /a GET \/via-proxy\?q=1/)
})

t.test('unknown service: 503 with x-doorman-error; no service named: 400', async (t) => {
  const reg = await registry(t)
  const { port, metrics } = await lane(t, reg)
  const r = await request(port, { path: '/', headers: { host: 'nobody' } })
  t.equal(r.status, 503)
  t.equal(r.headers['x-doorman-error'], 'DOORMAN_ERR_NO_INSTANCE')
  const bad = await rawRequest(port, 'GET / HTTP/1.0\r\n\r\n')
  t.match(bad, /^HTTP\/1\.1 400/)
  t.match(bad, /x-doorman-error: DOORMAN_ERR_NO_SERVICE/)
  t.match(await metrics.text(), /doorman_outbound_requests_total\{service="nobody",outcome="no-instance"\} 1/)
})

t.test('balances over up and warming instances, follows registry changes at once', async (t) => {
  const reg = await registry(t)
  const a = await named(t, 'a')
  const b = await named(t, 'b')
  const c = await named(t, 'c')
  const ia = inst('orders', a.port)
  const ib = inst('orders', b.port)
  const ic = inst('orders', c.port, { state: 'starting' })
  for (const i of [ia, ib, ic]) await reg.register(i, 60_000)
  const { port, metrics } = await lane(t, reg)
  for (let i = 0; i < 60; i++) t.equal((await request(port, { headers: { host: 'orders' } })).status, 200)
  t.ok(a.hits() > 10 && b.hits() > 10, `both up instances get traffic (${a.hits()}, ${b.hits()})`)
  t.equal(c.hits(), 0, 'a starting instance gets none')
  await reg.update('orders', ia.id, { state: 'draining' })
  await reg.setEjected('orders', ib.id, true)
  await reg.update('orders', ic.id, { state: 'up' })
  const before = { a: a.hits(), b: b.hits() }
  for (let i = 0; i < 20; i++) t.equal((await request(port, { headers: { host: 'orders' } })).status, 200)
  t.equal(a.hits(), before.a, 'draining: no new requests')
  t.equal(b.hits(), before.b, 'ejected by a checker: no new requests')
  t.equal(c.hits(), 20)
  await reg.deregister('orders', ic.id)
  // Only a draining and an ejected instance left: the ejected one still serves (panic) rather than nothing.
  t.equal((await request(port, { headers: { host: 'orders' } })).status, 200)
  t.equal(b.hits(), before.b + 1)
  const text = await metrics.text()
  t.match(text, /doorman_registry_instances\{service="orders",state="draining"\} 1/)
  t.match(text, /doorman_registry_instances\{service="orders",state="ejected"\} 1/)
  t.match(text, /doorman_outbound_requests_total\{service="orders",outcome="ok"\} 81/)
})

t.test('a response flagged x-doorman-draining drops that instance for new requests at once', async (t) => {
  const reg = await registry(t)
  const a = await named(t, 'a', (_req, res) => { res.setHeader('x-doorman-draining', '1'); res.end('a') })
  const b = await named(t, 'b')
  await reg.register(inst('orders', a.port), 60_000)
  await reg.register(inst('orders', b.port), 60_000)
  const { port } = await lane(t, reg)
  await waitFor('a answers once', async () => { await request(port, { headers: { host: 'orders' } }); return a.hits() > 0 }, 10_000, 1)
  const hitsA = a.hits()
  for (let i = 0; i < 30; i++) t.equal((await request(port, { headers: { host: 'orders' } })).status, 200)
  t.equal(a.hits(), hitsA, 'no request reached the draining instance after its flagged answer')
})

t.test('a drain flag seen on a response ends when the registry says up again, or after a bounded time', async (t) => {
  const reg = await registry(t)
  let flag = true
  const a = await named(t, 'a', (_req, res) => { if (flag) res.setHeader('x-doorman-draining', '1'); res.end('a') })
  const b = await named(t, 'b')
  const ia = inst('orders', a.port)
  await reg.register(ia, 60_000)
  await reg.register(inst('orders', b.port), 60_000)
  const metrics = new Metrics({ defaults: false })
  const out = new Outbound({ port: 0, registry: reg, metrics, log: silentLogger(), upstreamTimeout: 5000, outlier: { failures: 3, ejectTime: 30_000, maxEject: 50 }, drainMemoryMs: 1500 })
  const port = await out.listen()
  t.teardown(async () => { await out.close() })
  const flagged = async (): Promise<void> => {
    await waitFor('a answers flagged', async () => { await request(port, { headers: { host: 'orders' } }); return a.hits() > 0 }, 10_000, 1)
  }
  await flagged()
  flag = false
  const dropped = a.hits()
  for (let i = 0; i < 10; i++) await request(port, { headers: { host: 'orders' } })
  t.equal(a.hits(), dropped, 'dropped at once')
  // The registry reports it up in a newer record: it is back.
  await reg.update('orders', ia.id, { state: 'up', updatedAt: Date.now() })
  await waitFor('a back after the registry says up', async () => { await request(port, { headers: { host: 'orders' } }); return a.hits() > dropped }, 5_000, 1)
  // Flagged again, and the registry says nothing: back after the bounded time.
  flag = true
  const seen = a.hits()
  await waitFor('a flagged again', async () => { await request(port, { headers: { host: 'orders' } }); return a.hits() > seen }, 10_000, 1)
  flag = false
  const again = a.hits()
  for (let i = 0; i < 10; i++) await request(port, { headers: { host: 'orders' } })
  t.equal(a.hits(), again, 'dropped again')
  await waitFor('a back after the drain memory ends', async () => { await request(port, { headers: { host: 'orders' } }); return a.hits() > again }, 10_000, 50)
})

t.test('a local app that stops reading is cut after the client write timeout, and the provider sees the cancellation', async (t) => {
  const reg = await registry(t)
  let cancelled = 0
  const big = Buffer.alloc(64 * 1024, 'x')
  const a = await named(t, 'a', (_req, res) => {
    let left = 4096
    res.on('close', () => { if (!res.writableFinished) cancelled++ })
    const more = (): void => {
      while (left > 0 && !res.destroyed) {
        left--
        if (!res.write(big)) { res.once('drain', more); return }
      }
      if (left === 0) res.end()
    }
    more()
  })
  await reg.register(inst('orders', a.port), 60_000)
  const metrics = new Metrics({ defaults: false })
  const out = new Outbound({ port: 0, registry: reg, metrics, log: silentLogger(), upstreamTimeout: 5000, outlier: { failures: 3, ejectTime: 30_000, maxEject: 50 }, clientWriteTimeout: 500 })
  const port = await out.listen()
  t.teardown(async () => { await out.close() })
  const stalled = net.connect(port, '127.0.0.1')
  t.teardown(() => { stalled.destroy() })
  stalled.write('GET /big HTTP/1.1\r\nhost: orders\r\n\r\n')
  await once(stalled, 'data')
  stalled.pause()
  await waitFor('the provider saw the answer cancelled', () => cancelled === 1, 10_000)
  t.match(await metrics.text(), /doorman_client_errors_total\{kind="write-timeout"\} 1/)
})

t.test('connection refused: retried on another instance, whatever the method; then ejected', async (t) => {
  const reg = await registry(t)
  const dead = await freePort()
  const b = await named(t, 'b')
  await reg.register(inst('orders', dead), 60_000)
  await reg.register(inst('orders', b.port), 60_000)
  const { port, metrics } = await lane(t, reg)
  for (let i = 0; i < 20; i++) {
    const r = await request(port, { method: 'POST', path: '/pay', headers: { host: 'orders', 'content-type': 'text/plain' }, body: `order-${i}` })
    t.equal(r.status, 200, 'no request failed')
  }
  t.equal(b.hits(), 20)
  t.equal(b.bodies.filter((x) => x.startsWith('order-')).length, 20, 'the bodies were sent again')
  const text = await metrics.text()
  t.match(text, /doorman_outbound_retries_total\{service="orders",reason="connect"\} 3/, 'three refusals, then the dead instance was ejected')
  t.match(text, /doorman_outbound_ejections_total\{service="orders"\} 1/)
})

t.test('a 503 shed is retried on another instance, even a POST', async (t) => {
  const reg = await registry(t)
  const a = await named(t, 'a', (_req, res) => { res.writeHead(503, { 'x-doorman-shed': 'queue-full', 'retry-after': '1' }); res.end('shed') })
  const b = await named(t, 'b')
  await reg.register(inst('orders', a.port), 60_000)
  await reg.register(inst('orders', b.port), 60_000)
  const { port, metrics } = await lane(t, reg)
  for (let i = 0; i < 20; i++) {
    const r = await request(port, { method: 'POST', headers: { host: 'orders' }, body: 'x' })
    t.equal(r.status, 200)
    t.match(r.body, /^b /)
  }
  t.ok(a.hits() > 0)
  t.match(await metrics.text(), new RegExp(`doorman_outbound_retries_total\\{service="orders",reason="shed"\\} ${a.hits()}`))
  t.notMatch(await metrics.text(), /doorman_outbound_ejections_total\{service="orders"\}/, 'sheds are not failures')
  // With a single instance, the shed reaches the app as it is.
  const solo = await registry(t)
  await solo.register(inst('solo', a.port), 60_000)
  const l2 = await lane(t, solo)
  const r = await request(l2.port, { headers: { host: 'solo' } })
  t.equal(r.status, 503)
  t.equal(r.headers['x-doorman-shed'], 'queue-full')
})

t.test('a reset before any response byte: idempotent requests are retried, others are not', async (t) => {
  const reg = await registry(t)
  const resetter = net.createServer((s) => { s.once('data', () => { s.destroy() }) })
  resetter.listen(0, '127.0.0.1')
  await once(resetter, 'listening')
  t.teardown(() => { resetter.close() })
  const b = await named(t, 'b')
  await reg.register(inst('orders', (resetter.address() as net.AddressInfo).port), 60_000)
  await reg.register(inst('orders', b.port), 60_000, )
  const { port } = await lane(t, reg, { failures: 1000, ejectTime: 30_000, maxEject: 50 })
  let gets = 0
  let posts502 = 0
  for (let i = 0; i < 20; i++) {
    if ((await request(port, { headers: { host: 'orders' } })).status === 200) gets++
    const p = await request(port, { method: 'POST', headers: { host: 'orders' }, body: 'x' })
    if (p.status === 502) { posts502++; t.equal(p.headers['x-doorman-error'], 'DOORMAN_ERR_UPSTREAM_CONNECT') }
  }
  t.equal(gets, 20, 'every GET succeeded')
  t.ok(posts502 > 0, `a POST the instance may have seen is not sent twice (${posts502} of 20 answered 502)`)
})

t.test('passive ejection never takes more than the protection threshold', async (t) => {
  const reg = await registry(t)
  const dead = [await freePort(), await freePort(), await freePort()]
  for (const p of dead) await reg.register(inst('orders', p), 60_000)
  const { port, metrics } = await lane(t, reg, { failures: 2, ejectTime: 30_000, maxEject: 50 })
  for (let i = 0; i < 30; i++) {
    const r = await request(port, { headers: { host: 'orders' } })
    t.equal(r.status, 502)
  }
  t.match(await metrics.text(), /doorman_outbound_ejections_total\{service="orders"\} 1\n/, 'one of three (50%, rounded down)')
  const one = await registry(t)
  await one.register(inst('single', dead[0]), 60_000)
  const l2 = await lane(t, one, { failures: 1, ejectTime: 30_000, maxEject: 50 })
  for (let i = 0; i < 5; i++) await request(l2.port, { headers: { host: 'single' } })
  t.notMatch(await l2.metrics.text(), /doorman_outbound_ejections_total\{service="single"\}/, 'a lone instance is never ejected')
})

t.test('a warming instance gets its weight share', async (t) => {
  const reg = await registry(t)
  const warm = await named(t, 'warm')
  const cold = await named(t, 'cold')
  await reg.register(inst('orders', warm.port), 60_000)
  await reg.register(inst('orders', cold.port, { state: 'warming', weight: 10, warmup: { window: 600_000, aggression: 1, minWeight: 10, progress: 0 } }), 60_000)
  const { port } = await lane(t, reg)
  for (let i = 0; i < 300; i++) await request(port, { headers: { host: 'orders' } })
  const share = cold.hits() / 300
  t.ok(share > 0.02 && share < 0.2, `the cold instance took ${(share * 100).toFixed(1)}% at weight 10% against 100%`)
})

t.test('streams large bodies both ways', async (t) => {
  const reg = await registry(t)
  const echo = await named(t, 'echo', (req, res) => { res.end(`${req.headers['content-length'] ?? 'chunked'}`) })
  await reg.register(inst('files', echo.port), 60_000)
  const big = Buffer.alloc(2 * 1024 * 1024, 97)
  const { port } = await lane(t, reg)
  const r = await request(port, { method: 'PUT', headers: { host: 'files', 'content-length': String(big.length) }, body: big })
  t.equal(r.status, 200)
  t.equal(r.body, String(big.length))
  t.equal(echo.bodies[0].length, big.length)
  const dl = await named(t, 'dl', (_req, res) => { res.end(Buffer.alloc(3 * 1024 * 1024, 98)) })
  await reg.register(inst('big', dl.port), 60_000)
  const r2 = await request(port, { headers: { host: 'big' } })
  t.equal(r2.body.length, 3 * 1024 * 1024)
})

t.test('per-dependency saturation: in flight, latency and errors by destination service', async (t) => {
  const reg = await registry(t)
  let hold: Array<() => void> = []
  const slow = await named(t, 'slow', (_req, res) => { hold.push(() => { res.end('late') }) })
  const failing = await named(t, 'failing', (_req, res) => { res.statusCode = 503; res.end('no') })
  await reg.register(inst('orders', slow.port), 60_000)
  await reg.register(inst('pay', failing.port), 60_000)
  const { port, metrics } = await lane(t, reg)
  const text = async (): Promise<string> => await metrics.registry.metrics()
  const pending = [1, 2, 3].map(async () => await request(port, { path: '/', headers: { host: 'orders' }, timeout: 10_000 }))
  await waitFor('three requests held by orders', () => hold.length === 3)
  t.match(await text(), /doorman_outbound_inflight_requests\{service="orders"\} 3/)
  for (const h of hold) h()
  hold = []
  await Promise.all(pending)
  t.equal((await request(port, { path: '/', headers: { host: 'pay' } })).status, 503)
  // The app gives up on a hung call: the response never finishes.
  const gaveUp = request(port, { path: '/', headers: { host: 'orders' }, timeout: 200 }).catch(() => null)
  await gaveUp
  await waitFor('the abandoned call counted', async () => /doorman_outbound_errors_total\{service="orders",kind="incomplete"\} 1/.test(await text()))
  for (const h of hold) h()
  const m = await text()
  t.match(m, /doorman_outbound_inflight_requests\{service="orders"\} 0/)
  t.match(m, /doorman_outbound_request_duration_seconds_count\{service="orders"\} 4/)
  t.match(m, /doorman_outbound_request_duration_seconds_count\{service="pay"\} 1/)
  t.match(m, /doorman_outbound_errors_total\{service="pay",kind="503"\} 1/)
  t.notMatch(m, /service="nowhere"/)
  t.equal((await request(port, { path: '/', headers: { host: 'nowhere' } })).status, 503)
  t.notMatch(await text(), /doorman_outbound_request_duration_seconds_count\{service="nowhere"\}/, 'services without instances add no series')
})
