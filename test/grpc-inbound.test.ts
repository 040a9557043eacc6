// gRPC and cleartext HTTP/2 through the inbound lane, with stacks nobody here wrote: grpc-js as the app (h2c) and as
// the caller, curl --http2-prior-knowledge against an HTTP/1.1 app, real `doorman run` child processes.
import t from 'tap'
import path from 'node:path'
import net from 'node:net'
import http2 from 'node:http2'
import { readFileSync } from 'node:fs'
import { execFile } from 'node:child_process'
import grpc from '@grpc/grpc-js'
import loader from '@grpc/proto-loader'
import { PREFACE, classify } from '../src/proxy/detect.js'
import { ROOT, startDoorman, startFixtureApp, startServer, waitFor, request, getJson } from './helpers/index.js'
import { rawGrpc, encodeMsg } from './helpers/grpc.js'

type Any = Record<string, any>
const def = loader.loadSync(path.join(ROOT, 'test', 'fixtures', 'echo.proto'), { keepCase: false, longs: Number, defaults: true })
const Echo = (grpc.loadPackageDefinition(def) as Any).doorman.test.Echo

const BIG = 16 << 20
function client (port: number): Any {
  return new Echo(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), { 'grpc.max_receive_message_length': BIG, 'grpc.max_send_message_length': BIG })
}

interface Result { err: Any | null, res: Any | null, headers: grpc.Metadata | null, trailers: grpc.Metadata | null, status: Any | null }

/** A unary call, resolving with everything the caller saw. */
async function unary (c: Any, msg: Any, opts: { md?: Record<string, string>, deadlineMs?: number } = {}): Promise<Result> {
  return await new Promise((resolve) => {
    const md = new grpc.Metadata()
    for (const [k, v] of Object.entries(opts.md ?? {})) md.set(k, v)
    const out: Result = { err: null, res: null, headers: null, trailers: null, status: null }
    const callOpts: Any = {}
    if (opts.deadlineMs !== undefined) callOpts.deadline = Date.now() + opts.deadlineMs
    const call = c.Unary(msg, md, callOpts, (err: Any, res: Any) => { out.err = err; out.res = res })
    call.on('metadata', (m: grpc.Metadata) => { out.headers = m })
    call.on('status', (s: Any) => { out.status = s; out.trailers = s.metadata; setImmediate(() => { resolve(out) }) })
  })
}

async function appStats (c: Any): Promise<Any> {
  const r = await unary(c, { text: 'stats' })
  return JSON.parse(r.res.text)
}

async function curl (args: string[]): Promise<string> {
  return await new Promise((resolve, reject) => {
    execFile('curl', ['-s', '--max-time', '10', ...args], (err, stdout) => { if (err !== null) reject(err); else resolve(stdout) })
  })
}

t.test('gRPC through the inbound lane to an h2c app', async (t) => {
  const app = await startFixtureApp(t, 'grpc-app.mjs')
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(app.port), DOORMAN_APP_PROTOCOL: 'h2c' })
  const c = client(dm.inbound)
  const direct = client(app.port)
  t.teardown(() => { c.close(); direct.close() })

  await t.test('unary, metadata both ways', async (t) => {
    const r = await unary(c, { text: 'hi' }, { md: { 'x-caller': 'me' } })
    t.equal(r.err, null)
    t.equal(r.res.text, 'hi')
    t.equal(r.headers?.get('x-app-header')[0], 'from-app')
    t.equal(r.headers?.get('x-echo-caller')[0], 'me', 'the caller\'s metadata reached the app')
    t.equal(r.trailers?.get('x-app-trailer')[0], 'done', 'trailer metadata passed back')
    t.equal(r.status.code, grpc.status.OK)
  })

  await t.test('a 4 MiB message both ways', async (t) => {
    const data = Buffer.alloc(4 << 20)
    for (let i = 0; i < data.length; i += 4096) data[i] = i % 251
    const r = await unary(c, { text: 'big', data })
    t.equal(r.err, null)
    t.equal(r.res.data.length, data.length)
    t.ok(Buffer.compare(r.res.data, data) === 0, 'the bytes came back intact')
  })

  await t.test('the app\'s status, message and trailer metadata intact', async (t) => {
    const r = await unary(c, { text: 'x', failCode: grpc.status.FAILED_PRECONDITION })
    t.equal(r.status.code, grpc.status.FAILED_PRECONDITION)
    t.equal(r.status.details, 'failed as asked: x')
    t.equal(r.trailers?.get('x-app-trailer')[0], 'why-9')
    t.same([...(r.trailers?.get('x-detail-bin')[0] as Buffer)], [1, 2, 3], 'binary trailer metadata intact')
  })

  await t.test('server stream', async (t) => {
    const got: string[] = []
    await new Promise<void>((resolve, reject) => {
      const call = c.ServerStream({ text: 's', count: 50 })
      call.on('data', (m: Any) => got.push(m.text))
      call.on('error', reject)
      call.on('end', resolve)
    })
    t.equal(got.length, 50)
    t.equal(got[49], 's-49')
  })

  await t.test('client stream', async (t) => {
    const res = await new Promise<Any>((resolve, reject) => {
      const call = c.ClientStream((err: Any, r: Any) => { if (err !== null) reject(err); else resolve(r) })
      for (let i = 0; i < 20; i++) call.write({ text: String(i) })
      call.end()
    })
    t.equal(res.text, Array.from({ length: 20 }, (_, i) => String(i)).join(','))
  })

  await t.test('bidi stream', async (t) => {
    const got: string[] = []
    await new Promise<void>((resolve, reject) => {
      const call = c.Bidi()
      let n = 0
      call.on('data', (m: Any) => {
        got.push(m.text)
        // One at a time: each answer is read before the next message is written.
        if (++n < 10) call.write({ text: `m${n}` })
        else call.end()
      })
      call.on('error', reject)
      call.on('end', resolve)
      call.write({ text: 'm0' })
    })
    t.same(got, Array.from({ length: 10 }, (_, i) => `M${i}`))
  })

  await t.test('a client deadline ends the call in time and cancels it at the app', async (t) => {
    await unary(direct, { text: 'reset' })
    const t0 = Date.now()
    const r = await unary(c, { text: 'slow', delayMs: 5000 }, { deadlineMs: 300 })
    const took = Date.now() - t0
    t.equal(r.status.code, grpc.status.DEADLINE_EXCEEDED)
    t.ok(took < 3000, `ended well before the app would answer (${took} ms)`)
    await waitFor('the app to see the cancellation', async () => (await appStats(direct)).cancelled === 1, 5000)
    const state = await waitFor('the slot to be free', async () => { const s = await getJson(dm.admin, '/state') as Any; return s.inflight === 0 ? s : undefined }, 5000)
    t.equal(state.inflight, 0)
  })
})

t.test('the limit holds per stream: queue served, the rest UNAVAILABLE with x-doorman-shed', async (t) => {
  const app = await startFixtureApp(t, 'grpc-app.mjs')
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(app.port), DOORMAN_APP_PROTOCOL: 'h2c', DOORMAN_MAX_CONCURRENCY: '3', DOORMAN_MAX_QUEUE: '3', DOORMAN_QUEUE_TIMEOUT: '10s' })
  const c = client(dm.inbound)
  const direct = client(app.port)
  t.teardown(() => { c.close(); direct.close() })
  await unary(direct, { text: 'reset' })
  const results = await Promise.all(Array.from({ length: 12 }, async () => await unary(c, { text: 'b', delayMs: 400 })))
  const ok = results.filter((r) => r.status.code === grpc.status.OK)
  const shed = results.filter((r) => r.status.code === grpc.status.UNAVAILABLE)
  t.equal(ok.length, 6, 'three in flight and three queued were served')
  t.equal(shed.length, 6, 'the rest were shed')
  for (const r of shed) {
    t.equal(r.trailers?.get('x-doorman-shed')[0], 'queue-full')
    t.match(r.status.details, /shed/)
  }
  const s = await appStats(direct)
  t.equal(s.calls, 6, 'the shed calls never reached the app')
  t.ok(s.maxInflight <= 3, `never more than the limit at the app (${s.maxInflight})`)
  // The metrics tell HTTP/2 from HTTP/1.1, and count gRPC answers by grpc-status (the app's 0s, doorman's 14s).
  const m = (await request(dm.admin, { path: '/metrics' })).body
  t.match(m, /doorman_requests_total\{code="200",protocol="h2"\} 12/, 'twelve HTTP/2 streams answered 200')
  t.notMatch(m, /protocol="http1"/, 'no HTTP/1.1 requests counted')
  t.match(m, /doorman_grpc_responses_total\{grpc_status="0"\} 6/, 'six OK')
  t.match(m, /doorman_grpc_responses_total\{grpc_status="14"\} 6/, 'six UNAVAILABLE')
})

t.test('a gRPC call to an app declared http1: UNAVAILABLE naming DOORMAN_APP_PROTOCOL, logged once', async (t) => {
  const { port } = await startServer(t, (_req, res) => { res.end('h1') })
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(port) })
  const c = client(dm.inbound)
  t.teardown(() => { c.close() })
  const a = await unary(c, { text: 'x' })
  const b = await unary(c, { text: 'y' })
  t.equal(a.status.code, grpc.status.UNAVAILABLE)
  t.match(a.status.details, /DOORMAN_APP_PROTOCOL/)
  t.equal(b.status.code, grpc.status.UNAVAILABLE)
  await waitFor('the log line', () => dm.output().includes('DOORMAN_APP_PROTOCOL'))
  t.equal(dm.output().split('DOORMAN_APP_PROTOCOL is http1').length - 1, 1, 'logged once')
})

t.test('the app unreachable: UNAVAILABLE', async (t) => {
  const { port } = await startServer(t, () => {})
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(port), DOORMAN_APP_PROTOCOL: 'h2c' }, { waitReady: false })
  // An HTTP/1.1 server where an h2c one should be: the session fails, the call is answered by doorman.
  const c = client(dm.inbound)
  t.teardown(() => { c.close() })
  const r = await unary(c, { text: 'x' }, { deadlineMs: 5000 })
  t.equal(r.status.code, grpc.status.UNAVAILABLE)
  t.ok(r.trailers?.get('x-doorman-error')[0], 'x-doorman-error names the cause')
})

t.test('DOORMAN_UPSTREAM_TIMEOUT: DEADLINE_EXCEEDED naming the timeout, the app\'s stream reset', async (t) => {
  const app = await startFixtureApp(t, 'grpc-app.mjs')
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(app.port), DOORMAN_APP_PROTOCOL: 'h2c', DOORMAN_UPSTREAM_TIMEOUT: '300ms' })
  const c = client(dm.inbound)
  const direct = client(app.port)
  t.teardown(() => { c.close(); direct.close() })
  await unary(direct, { text: 'reset' })
  const r = await unary(c, { text: 'quiet', delayMs: 3000 })
  t.equal(r.status.code, grpc.status.DEADLINE_EXCEEDED)
  t.equal(r.trailers?.get('x-doorman-error')[0], 'DOORMAN_ERR_UPSTREAM_TIMEOUT')
  await waitFor('the app to see the cancellation', async () => (await appStats(direct)).cancelled === 1, 5000)
})

t.test('an h2c app that resets a stream after its head: the client sees a failure, never a complete response', async (t) => {
  // A bare node:http2 app: head, more body than the flow-control window lets out, then RST_STREAM CANCEL at once: the
  // reset overtakes the queued bytes and their END_STREAM. Node raises no error for a CANCEL, only an early end of
  // the readable side, which must not pass for a complete response.
  const app = http2.createServer()
  app.on('stream', (stream, headers) => {
    stream.on('error', () => {})
    const grpcCall = String(headers['content-type']).startsWith('application/grpc')
    stream.respond({ ':status': 200, 'content-type': grpcCall ? 'application/grpc' : 'text/plain' })
    const body = Buffer.alloc(1 << 20, 0x61)
    if (grpcCall) { body[0] = 0; body.writeUInt32BE(body.length - 5, 1) }
    stream.write(body)
    stream.close(http2.constants.NGHTTP2_CANCEL)
  })
  app.on('session', (s) => { s.on('error', () => {}) })
  await new Promise<void>((resolve) => { app.listen(0, '127.0.0.1', resolve) })
  t.teardown(() => { app.close() })
  const appPort = (app.address() as net.AddressInfo).port
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(appPort), DOORMAN_APP_PROTOCOL: 'h2c' })

  // Plain HTTP/2: the stream is cut, not ended as if the body were whole.
  const session = http2.connect(`http://127.0.0.1:${dm.inbound}`)
  t.teardown(() => { session.destroy() })
  const seen = await new Promise<{ body: string, clean: boolean, rst: number | undefined }>((resolve) => {
    const req = session.request({ ':path': '/x' })
    let body = ''
    let ended = false
    req.on('data', (c: Buffer) => { body += c.toString() })
    req.on('end', () => { ended = true })
    req.on('error', () => {})
    req.on('close', () => { resolve({ body, clean: ended && req.rstCode === http2.constants.NGHTTP2_NO_ERROR, rst: req.rstCode }) })
  })
  t.notOk(seen.clean, `the client's stream did not end cleanly (${seen.body.length} body bytes, RST code ${seen.rst})`)

  // gRPC: doorman ends the call with UNAVAILABLE in its trailers, naming itself.
  const c = client(dm.inbound)
  t.teardown(() => { c.close() })
  const r = await unary(c, { text: 'x' }, { deadlineMs: 5000 })
  t.equal(r.status.code, grpc.status.UNAVAILABLE)
  t.match(r.status.details, /doorman/)
  const m = (await request(dm.admin, { path: '/metrics' })).body
  t.match(m, /doorman_upstream_errors_total\{kind="connect"\} 2/, 'both counted as the app\'s failures')
})

t.test('curl --http2-prior-knowledge to an HTTP/1.1 app, and HTTP/1.1 on the same port', async (t) => {
  const { port } = await startServer(t, (req, res) => {
    let n = 0
    req.on('data', (c: Buffer) => { n += c.length })
    req.on('end', () => { res.setHeader('x-app', '1'); res.end(`${req.method} ${req.url} ${n}`) })
  })
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(port) })
  const url = `http://127.0.0.1:${dm.inbound}/p?q=1`
  t.equal(await curl(['--http2-prior-knowledge', url]), 'GET /p?q=1 0')
  t.equal(await curl(['--http2-prior-knowledge', '--data-binary', 'x'.repeat(100_000), url]), 'POST /p?q=1 100000')
  const head = await curl(['--http2-prior-knowledge', '-o', '/dev/null', '-D', '-', url])
  t.match(head, /^HTTP\/2 200/)
  t.match(head, /x-app: 1/)
  t.equal((await request(dm.inbound, { path: '/h1' })).body, 'GET /h1 0', 'HTTP/1.1 on the same port as before')
  // A preface split over two writes is still told apart: the answer is an HTTP/2 SETTINGS frame, not HTTP/1.1.
  const first = await new Promise<Buffer>((resolve, reject) => {
    const sock = net.connect(dm.inbound, '127.0.0.1')
    t.teardown(() => { sock.destroy() })
    sock.once('data', resolve)
    sock.on('error', reject)
    sock.write(PREFACE.subarray(0, 7))
    setTimeout(() => { sock.write(Buffer.concat([PREFACE.subarray(7), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])])) }, 50)
  })
  t.equal(first[3], 4, 'a SETTINGS frame')
})

t.test('preface detection', async (t) => {
  t.equal(classify(Buffer.from('GET / HTTP/1.1\r\n')), 'h1')
  t.equal(classify(Buffer.from('PRI * HTTP/2')), null, 'a prefix waits for more')
  t.equal(classify(Buffer.from('PRI * HTTP/1.1\r\n')), 'h1')
  t.equal(classify(Buffer.concat([PREFACE, Buffer.from('xyz')])), 'h2')
})

/** A gRPC request by hand (node:http2), with a grpc-timeout header and no deadline of the caller's own. */
t.test('grpc-timeout bounds the queue wait and the app wait; a cancelled call frees its slot at once', async (t) => {
  const app = await startFixtureApp(t, 'grpc-app.mjs')
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(app.port), DOORMAN_APP_PROTOCOL: 'h2c', DOORMAN_MAX_CONCURRENCY: '1', DOORMAN_MAX_QUEUE: '5', DOORMAN_QUEUE_TIMEOUT: '20s' })
  const c = client(dm.inbound)
  const direct = client(app.port)
  t.teardown(() => { c.close(); direct.close() })
  await unary(direct, { text: 'reset' })

  // Waiting on the app: doorman answers DEADLINE_EXCEEDED and resets the app's stream.
  const active = await rawGrpc(dm.inbound, encodeMsg('slow', 5000), { 'grpc-timeout': '300m' })
  t.teardown(() => { active.session.destroy() })
  t.equal(active.headers[':status'], 200)
  t.equal(active.headers['grpc-status'], '4', 'DEADLINE_EXCEEDED')
  t.ok(active.ms < 3000, `answered at the deadline (${active.ms} ms)`)
  await waitFor('the app to see the cancellation', async () => (await appStats(direct)).cancelled === 1, 5000)

  // Waiting in the queue: the one slot is taken by a slow call.
  const hog = unary(c, { text: 'hog', delayMs: 1500 })
  await waitFor('the slow call to reach the app', async () => (await appStats(direct)).inflight === 1, 5000)
  const queued = await rawGrpc(dm.inbound, encodeMsg('q', 0), { 'grpc-timeout': '200m' })
  t.teardown(() => { queued.session.destroy() })
  t.equal(queued.headers['grpc-status'], '4', 'DEADLINE_EXCEEDED while queued')
  t.ok(queued.ms < 1400, `before the slot came free (${queued.ms} ms)`)
  t.equal((await hog).status.code, grpc.status.OK)

  // The caller cancels: the app sees it and the slot is free at once for the next call.
  const call = c.Unary({ text: 'cancel-me', delayMs: 10_000 }, () => {})
  await waitFor('the call to reach the app', async () => (await appStats(direct)).inflight === 1, 5000)
  call.cancel()
  await waitFor('the app to see the cancellation', async () => (await appStats(direct)).cancelled === 2, 5000)
  const next = await unary(c, { text: 'after' }, { deadlineMs: 3000 })
  t.equal(next.status.code, grpc.status.OK, 'the slot was given back')
})

t.test('SIGTERM with streams in flight: all complete, GOAWAY to idle sessions too, exit 0', async (t) => {
  const app = await startFixtureApp(t, 'grpc-app.mjs')
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(app.port), DOORMAN_APP_PROTOCOL: 'h2c', DOORMAN_DRAIN_DELAY: '1s', DOORMAN_DRAIN_QUIET: '300ms', DOORMAN_DRAIN_TIMEOUT: '20s' })
  const c = client(dm.inbound)
  const direct = client(app.port)
  t.teardown(() => { c.close(); direct.close() })
  await unary(direct, { text: 'reset' })
  // An idle HTTP/2 session: it must get the GOAWAY without sending anything more.
  const idle = http2.connect(`http://127.0.0.1:${dm.inbound}`)
  t.teardown(() => { idle.destroy() })
  const goaways: number[] = []
  idle.on('goaway', (_code: number, last: number) => { goaways.push(last) })
  idle.on('error', () => {})
  await new Promise<void>((resolve) => { idle.once('remoteSettings', () => { resolve() }) })

  const calls = Array.from({ length: 6 }, async () => await unary(c, { text: 'inflight', delayMs: 1500 }))
  await waitFor('the calls to reach the app', async () => (await appStats(direct)).inflight === 6, 5000)
  dm.proc.kill('SIGTERM')
  await waitFor('the idle session to get a GOAWAY', () => goaways.length > 0, 5000)
  t.equal(goaways[0], 2 ** 31 - 1, 'first GOAWAY: the largest stream id')
  // While draining (before the listener closes), a new call is served and flagged.
  const late = await unary(c, { text: 'late' })
  t.equal(late.status.code, grpc.status.OK)
  t.equal(late.headers?.get('x-doorman-draining')[0], '1', 'x-doorman-draining on responses while draining')
  const results = await Promise.all(calls)
  t.same(results.map((r) => r.status.code), Array(6).fill(grpc.status.OK), 'every stream in flight completed')
  const { code } = await dm.exited
  t.equal(code, 0)
})

t.test('flow control end to end: a client that stops reading holds the app back, doorman buffers little', async (t) => {
  // An h2c app that writes 64 MiB as fast as HTTP/2 flow control lets it.
  const chunk = Buffer.alloc(64 * 1024, 97)
  let sent = 0
  const app = http2.createServer()
  app.on('stream', (st) => {
    st.respond({ ':status': 200 })
    const pump = (): void => {
      while (sent < 64 << 20) {
        sent += chunk.length
        if (!st.write(chunk)) { st.once('drain', pump); return }
      }
      st.end()
    }
    pump()
  })
  app.listen(0, '127.0.0.1')
  await new Promise((resolve) => app.once('listening', resolve))
  t.teardown(() => { app.close() })
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String((app.address() as net.AddressInfo).port), DOORMAN_APP_PROTOCOL: 'h2c' })
  const rss = (): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${dm.proc.pid as number}/status`, 'utf8'))?.[1] ?? 0) * 1024
  const before = rss()
  const session = http2.connect(`http://127.0.0.1:${dm.inbound}`)
  t.teardown(() => { session.destroy() })
  const req = session.request({ ':path': '/big' })
  let got = 0
  let held = false
  req.on('data', (d: Buffer) => { got += d.length; if (!held && got >= 4 << 20) { held = true; req.pause() } })
  req.on('error', () => {})
  await waitFor('the client to read 4 MiB', () => got >= 4 << 20)
  // The client reads no more: what the app manages to write levels off.
  let last = -1
  let same = 0
  await waitFor('the app to be held back', () => { same = sent === last ? same + 1 : 0; last = sent; return same >= 10 }, 15_000, 50)
  t.ok(sent - got < 16 << 20, `the app wrote ${(sent / 2 ** 20).toFixed(1)} MiB, the client read ${(got / 2 ** 20).toFixed(1)} MiB`)
  t.ok(rss() - before < 64 << 20, `doorman's memory grew by ${((rss() - before) / 2 ** 20).toFixed(1)} MiB`)
  req.resume()
  await new Promise((resolve) => req.once('end', resolve))
  t.equal(got, 64 << 20, 'everything arrived once the client read again')
})

t.test('HTTP/1.1 clients to an h2c app: bodies both ways, headers, status', async (t) => {
  const app = http2.createServer()
  app.on('stream', (st, h) => {
    let n = 0
    st.on('data', (d: Buffer) => { n += d.length })
    st.on('end', () => { st.respond({ ':status': 201, 'x-app': 'h2', 'x-seen-host': String(h[':authority']) }); st.end(`${String(h[':method'])} ${String(h[':path'])} ${n}`) })
  })
  app.listen(0, '127.0.0.1')
  await new Promise((resolve) => app.once('listening', resolve))
  t.teardown(() => { app.close() })
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String((app.address() as net.AddressInfo).port), DOORMAN_APP_PROTOCOL: 'h2c' })
  const get = await request(dm.inbound, { path: '/a?b=1', headers: { host: 'orders.example' } })
  t.equal(get.status, 201)
  t.equal(get.body, 'GET /a?b=1 0')
  t.equal(get.headers['x-app'], 'h2')
  t.equal(get.headers['x-seen-host'], 'orders.example', 'Host became :authority')
  const post = await request(dm.inbound, { path: '/up', method: 'POST', body: Buffer.alloc(300_000, 1) })
  t.equal(post.body, 'POST /up 300000')
  t.equal(await curl(['--http2-prior-knowledge', '--data-binary', 'abc', `http://127.0.0.1:${dm.inbound}/h2`]), 'POST /h2 3', 'HTTP/2 clients too')
})
