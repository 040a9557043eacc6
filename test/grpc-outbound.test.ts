// gRPC through the outbound lane, with real processes: two providers (`doorman run` in front of a grpc-js app, h2c)
// registered in a file:// registry, and a consumer doorman whose outbound port one grpc-js channel uses, its
// authority the service name. Calls are balanced per call; a draining provider stops getting calls at once; a shed
// call is retried on the other instance. And curl's plain HTTP/2 requests through the same port.
import t from 'tap'
import path from 'node:path'
import http2 from 'node:http2'
import type { AddressInfo } from 'node:net'
import { mkdtempSync, rmSync, readdirSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { execFile } from 'node:child_process'
import grpc from '@grpc/grpc-js'
import loader from '@grpc/proto-loader'
import { ROOT, startDoorman, startFixtureApp, startServer, freePort, waitFor, request, type Doorman } from './helpers/index.js'

import { startProvider } from './helpers/mesh.js'
import { rawGrpc, encodeMsg } from './helpers/grpc.js'

type Any = Record<string, any>
interface Teardown { teardown: (fn: () => unknown) => void }
const def = loader.loadSync(path.join(ROOT, 'test', 'fixtures', 'echo.proto'), { keepCase: false, longs: Number, defaults: true })
const Echo = (grpc.loadPackageDefinition(def) as Any).doorman.test.Echo

/** One channel to `port`; `authority` is what the channel calls (the service name on the outbound lane). */
function client (port: number, authority?: string): Any {
  return new Echo(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), authority === undefined ? {} : { 'grpc.default_authority': authority })
}

interface Result { err: Any | null, res: Any | null, trailers: grpc.Metadata | null, status: Any }

async function unary (c: Any, msg: Any, opts: { deadlineMs?: number } = {}): Promise<Result> {
  return await new Promise((resolve) => {
    const out: Partial<Result> = { err: null, res: null, trailers: null }
    const callOpts: Any = {}
    if (opts.deadlineMs !== undefined) callOpts.deadline = Date.now() + opts.deadlineMs
    const call = c.Unary(msg, new grpc.Metadata(), callOpts, (err: Any, res: Any) => { out.err = err; out.res = res })
    call.on('status', (s: Any) => { out.status = s; out.trailers = s.metadata; setImmediate(() => { resolve(out as Result) }) })
  })
}

async function appStats (c: Any): Promise<Any> {
  const r = await unary(c, { text: 'stats' })
  return JSON.parse(r.res.text)
}

interface GrpcProvider { app: number, direct: Any, dm: Doorman }

/** A grpc-js app behind its own `doorman run` (h2c to the app), registered as `service`. */
async function provider (t: Teardown, registry: string, env: Record<string, string> = {}, service = 'orders'): Promise<GrpcProvider> {
  const app = await startFixtureApp(t, 'grpc-app.mjs')
  const dm = await startDoorman(t, {
    DOORMAN_APP_PORT: String(app.port),
    DOORMAN_APP_PROTOCOL: 'h2c',
    DOORMAN_REGISTRY: registry,
    DOORMAN_SERVICE: service,
    DOORMAN_REGISTRY_TTL: '3s',
    ...env
  })
  const direct = client(app.port)
  t.teardown(() => { direct.close() })
  return { app: app.port, direct, dm }
}

async function consumer (t: Teardown, registry: string): Promise<Doorman> {
  const { port } = await startServer(t, (_req, res) => { res.end('frontend') })
  return await startDoorman(t, {
    DOORMAN_APP_PORT: String(port),
    DOORMAN_REGISTRY: registry,
    DOORMAN_SERVICE: 'frontend',
    DOORMAN_REGISTRY_TTL: '3s',
    DOORMAN_OUTBOUND_PORT: String(await freePort())
  })
}

function registryDir (t: Teardown): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'doorman-grpc-outbound-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  return `file://${dir}`
}

async function curl (args: string[]): Promise<string> {
  return await new Promise((resolve, reject) => {
    execFile('curl', ['-s', '--max-time', '10', ...args], (err, stdout) => { if (err !== null) reject(err); else resolve(stdout) })
  })
}

/** A metric's value from the consumer's /metrics (0 when absent). */
async function metric (admin: number, line: RegExp): Promise<number> {
  const text = (await request(admin, { path: '/metrics', timeout: 5000 })).body
  const m = line.exec(text)
  return m === null ? 0 : Number(m[1])
}

t.test('one channel, calls balanced per call over two providers', async (t) => {
  const url = registryDir(t)
  const a = await provider(t, url)
  const b = await provider(t, url)
  const c = await consumer(t, url)
  const ch = client(c.outbound, 'orders')
  t.teardown(() => { ch.close() })

  let failed = 0
  for (let i = 0; i < 100; i++) {
    const r = await unary(ch, { text: `call-${i}` })
    if (r.status.code !== grpc.status.OK || r.res?.text !== `call-${i}`) failed++
  }
  t.equal(failed, 0, 'every call succeeded')
  const atA = (await appStats(a.direct)).calls as number
  const atB = (await appStats(b.direct)).calls as number
  t.comment(`a: ${atA} calls, b: ${atB} calls`)
  t.equal(atA + atB, 100, 'each call reached one provider once')
  t.ok(atA >= 25 && atB >= 25, `each provider got at least 25 % (a ${atA}, b ${atB})`)

  await t.test('metadata, status and trailers pass through; no instance is UNAVAILABLE naming the service', async (t) => {
    const r = await unary(ch, { text: 'x', failCode: grpc.status.FAILED_PRECONDITION })
    t.equal(r.status.code, grpc.status.FAILED_PRECONDITION)
    t.equal(r.status.details, 'failed as asked: x')
    t.equal(r.trailers?.get('x-app-trailer')[0], 'why-9')
    const other = client(c.outbound, 'nobody')
    t.teardown(() => { other.close() })
    const none = await unary(other, { text: 'x' })
    t.equal(none.status.code, grpc.status.UNAVAILABLE)
    t.match(none.status.details, /nobody/)
    t.equal(none.trailers?.get('x-doorman-error')[0], 'DOORMAN_ERR_NO_INSTANCE')
  })

  await t.test('a streaming call, and a client deadline that cancels the call at the provider', async (t) => {
    const got: string[] = []
    await new Promise<void>((resolve, reject) => {
      const call = ch.Bidi()
      let n = 0
      call.on('data', (m: Any) => {
        got.push(m.text)
        if (++n < 5) call.write({ text: `m${n}` })
        else call.end()
      })
      call.on('error', reject)
      call.on('end', resolve)
      call.write({ text: 'm0' })
    })
    t.same(got, ['M0', 'M1', 'M2', 'M3', 'M4'])
    await unary(a.direct, { text: 'reset' })
    await unary(b.direct, { text: 'reset' })
    const r = await unary(ch, { text: 'slow', delayMs: 5000 }, { deadlineMs: 300 })
    t.equal(r.status.code, grpc.status.DEADLINE_EXCEEDED)
    await waitFor('the provider\'s app to see the cancellation', async () => (await appStats(a.direct)).cancelled + (await appStats(b.direct)).cancelled === 1, 5000)
  })
})

t.test('grpc-timeout is enforced on the outbound lane itself, for a caller that never cancels', async (t) => {
  const reg = registryDir(t)
  // The instance is a bare HTTP/2 app that ignores grpc-timeout and never answers (no doorman in front, no gRPC
  // library to enforce the deadline): only the consumer's outbound lane can end the call and reset the app's stream.
  const app = http2.createServer()
  let reset = 0
  app.on('stream', (stream) => { stream.on('error', () => {}); stream.resume(); stream.on('close', () => { reset++ }) })
  app.on('session', (s) => { s.on('error', () => {}) })
  await new Promise<void>((resolve) => { app.listen(0, '127.0.0.1', resolve) })
  t.teardown(() => { app.close() })
  const { FileRegistry } = await import('../src/registry/file.js')
  const store = new FileRegistry({ dir: new URL(reg).pathname })
  const now = Date.now()
  await store.register({ id: 'bare-app', service: 'orders', cluster: 'default', zone: '', address: `127.0.0.1:${(app.address() as AddressInfo).port}`, adminPort: 0, startedAt: now - 600_000, registeredAt: now - 600_000, warmup: { window: 0, aggression: 1, minWeight: 10, progress: 1 }, weight: 100, state: 'up', ejected: false, updatedAt: now, rev: 0 }, 120_000)
  t.teardown(async () => { await store.deregister('orders', 'bare-app'); await store.close() })
  const dm = await consumer(t, reg)
  // A bare HTTP/2 caller: it sends grpc-timeout and waits, never resetting its stream. (Until the lane has listed the
  // instance, the answer is UNAVAILABLE, no instance.)
  await waitFor('the instance listed', async () => {
    const probe = await rawGrpc(dm.outbound, encodeMsg('probe', 0), { 'grpc-timeout': '100m', ':authority': 'orders' })
    probe.session.destroy()
    return probe.headers['grpc-status'] === '4'
  }, 15_000)
  await waitFor('the probe\'s stream reset at the app', () => reset >= 1, 5000)
  const before = reset
  const r = await rawGrpc(dm.outbound, encodeMsg('slow', 0), { 'grpc-timeout': '300m', ':authority': 'orders' })
  t.teardown(() => { r.session.destroy() })
  t.equal(r.headers['grpc-status'], '4', 'DEADLINE_EXCEEDED')
  t.ok(r.ms < 3000, `answered at the deadline (${r.ms} ms)`)
  await waitFor('the app\'s stream reset', () => reset === before + 1, 5000)
})

t.test('a draining provider stops getting calls at once, and no call fails', async (t) => {
  // The consumer reads a frozen copy of the registry (records that never change or expire), so what takes the
  // draining provider out is what its responses say (x-doorman-draining), not the registry's update.
  const live = registryDir(t)
  const frozen = registryDir(t)
  const a = await provider(t, live)
  const b = await provider(t, live, { DOORMAN_DRAIN_DELAY: '3s', DOORMAN_DRAIN_QUIET: '500ms' })
  const from = path.join(live.slice('file://'.length), 'orders')
  const to = path.join(frozen.slice('file://'.length), 'orders')
  await waitFor('both providers registered', () => readdirSync(from).filter((n) => n.endsWith('.json')).length === 2, 10_000)
  mkdirSync(to, { recursive: true })
  for (const name of readdirSync(from).filter((n) => n.endsWith('.json'))) {
    const rec = JSON.parse(readFileSync(path.join(from, name), 'utf8'))
    rec.expiresAt = Date.now() + 600_000
    writeFileSync(path.join(to, name), JSON.stringify(rec))
  }
  const c = await consumer(t, frozen)
  const ch = client(c.outbound, 'orders')
  t.teardown(() => { ch.close() })

  let stop = false
  const results: Result[] = []
  const worker = async (): Promise<void> => {
    while (!stop) results.push(await unary(ch, { text: 'w', delayMs: 5 }))
  }
  const workers = Array.from({ length: 4 }, async () => { await worker() })
  t.teardown(async () => { stop = true; await Promise.all(workers) })
  await waitFor('calls at both', async () => (await appStats(a.direct)).calls > 20 && (await appStats(b.direct)).calls > 20, 10_000)

  t.equal((await request(b.dm.admin, { path: '/drain', method: 'POST' })).status, 202)
  // What was in flight when the drain started may still arrive; nothing new after that.
  await new Promise((resolve) => setTimeout(resolve, 500))
  const atB = (await appStats(b.direct)).calls as number
  const atA = (await appStats(a.direct)).calls as number
  const { code } = await b.dm.exited
  t.equal(code, 0, 'the drained provider exited cleanly')
  await new Promise((resolve) => setTimeout(resolve, 300))
  stop = true
  await Promise.all(workers)

  const failed = results.filter((r) => r.status.code !== grpc.status.OK)
  t.equal(failed.length, 0, `no call failed (of ${results.length})${failed.length > 0 ? `: ${JSON.stringify(failed.slice(0, 3).map((r) => r.status.details))}` : ''}`)
  t.equal((await appStats(b.direct)).calls, atB, 'the draining provider got no call after the first half second of its drain')
  t.ok((await appStats(a.direct)).calls > atA + 50, 'the other provider took the calls')
})

t.test('a shed call is retried on the other instance', async (t) => {
  const url = registryDir(t)
  const small = await provider(t, url, { DOORMAN_MAX_CONCURRENCY: '1', DOORMAN_MAX_QUEUE: '0' })
  const big = await provider(t, url)
  const c = await consumer(t, url)
  const ch = client(c.outbound, 'orders')
  t.teardown(() => { ch.close() })
  await waitFor('both providers listed', async () => {
    await unary(ch, { text: 'warm' })
    return (await appStats(small.direct)).calls > 0 && (await appStats(big.direct)).calls > 0
  }, 10_000)
  await unary(small.direct, { text: 'reset' })
  await unary(big.direct, { text: 'reset' })

  const results = await Promise.all(Array.from({ length: 10 }, async () => await unary(ch, { text: 'burst', delayMs: 400 })))
  const failed = results.filter((r) => r.status.code !== grpc.status.OK)
  t.equal(failed.length, 0, `no call failed${failed.length > 0 ? `: ${JSON.stringify(failed.map((r) => r.status.details))}` : ''}`)
  const s = await appStats(small.direct)
  const bg = await appStats(big.direct)
  t.equal(s.maxInflight, 1, 'the small provider\'s limit held')
  t.equal(s.calls + bg.calls, 10, 'every call was served once')
  const retried = await metric(c.admin, /doorman_outbound_retries_total\{service="orders",reason="shed"\} (\d+)/)
  t.ok(retried >= 1, `shed calls were retried on the other instance (${retried})`)
})

t.test('a plain HTTP/2 request (curl --http2-prior-knowledge) through the outbound lane to HTTP/1.1 apps', async (t) => {
  const url = registryDir(t)
  await startProvider(t, url, 'a', { DOORMAN_REGISTRY_TTL: '3s' })
  await startProvider(t, url, 'b', { DOORMAN_REGISTRY_TTL: '3s' })
  const c = await consumer(t, url)
  const seen = new Set<string>()
  for (let i = 0; i < 20; i++) {
    const out = await curl(['--http2-prior-knowledge', '-H', 'host: orders', '-w', ' %{http_version} %{http_code}', `http://127.0.0.1:${c.outbound}/`])
    t.match(out, /^[ab] 2 200$/, `answered over HTTP/2 by a provider (${out})`)
    seen.add(out[0])
  }
  t.same([...seen].sort(), ['a', 'b'], 'both providers answered')
  const none = await curl(['--http2-prior-knowledge', '-H', 'host: nobody', '-w', ' %{http_code}', `http://127.0.0.1:${c.outbound}/`])
  t.match(none, /no instance of service "nobody".* 503$/s)
})
