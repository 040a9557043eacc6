// HTTP/2 connections live under the same bounds as HTTP/1.1 ones, whatever the peer does: a preface alone or a header
// block never finished is closed within the headers timeout, an idle session within the idle timeout; header blocks
// over the limits are answered 431 (gRPC: RESOURCE_EXHAUSTED) before and after the client ACKs doorman's SETTINGS;
// grpc-timeout values beyond a timer's range neither fire at once nor go out longer than 8 digits; and a drain ends
// the process within its timeout with idle, half-sent and zero-window peers connected. Raw frames throughout.
import t from 'tap'
import http2 from 'node:http2'
import { startDoorman, startServer, waitFor, getJson } from './helpers/index.js'
import { Wire, get, request as h2request, frame, GOAWAY, HEADERS, SETTINGS_INITIAL_WINDOW_SIZE, headerBlock } from './helpers/h2wire.js'
import { encodeGrpcTimeout, grpcTimeoutMs } from '../src/core/grpc.js'

async function plainApp (t: Parameters<Parameters<typeof t.test>[1]>[0]): Promise<{ port: number, seen: () => number }> {
  let seen = 0
  const { port } = await startServer(t, (req, res) => {
    seen++
    req.resume()
    if (req.url === '/big') { res.end(Buffer.alloc(256 * 1024, 120)); return }
    res.end('ok')
  })
  return { port, seen: () => seen }
}

t.test('a preface alone, and a first header block never finished, are closed within the headers timeout', async (t) => {
  const app = await plainApp(t)
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(app.port), DOORMAN_HEADERS_TIMEOUT: '1s' })
  const prefaceOnly = await Wire.open(dm.inbound)
  const unfinished = await Wire.open(dm.inbound)
  // SETTINGS exchanged first (an ACK inside a header block would be a protocol error, closing it for another reason).
  await waitFor('the SETTINGS exchanged', () => unfinished.frames.length > 0)
  // HEADERS without END_HEADERS: a CONTINUATION must follow, and never does.
  unfinished.send(h2request(1, [[':method', 'GET'], [':scheme', 'http'], [':path', '/'], [':authority', 'app']], { endStream: true, endHeaders: false }))
  const t0 = Date.now()
  await waitFor('both connections closed by doorman', () => prefaceOnly.closed && unfinished.closed, 5000)
  t.ok(Date.now() - t0 < 3500, `closed within the headers timeout and its grace (${Date.now() - t0} ms)`)
  t.ok(prefaceOnly.of(GOAWAY).length > 0, 'told with a GOAWAY first')
  t.equal(app.seen(), 0, 'nothing reached the app')
  const m = await (await fetch(`http://127.0.0.1:${dm.admin}/metrics`)).text()
  t.match(m, /doorman_connections_closed_total\{lane="inbound",reason="headers-timeout"\} 2/)
})

t.test('a session with no open stream is closed after the idle timeout; one with a stream in flight is not', async (t) => {
  const held: Array<() => void> = []
  const { port } = await startServer(t, (req, res) => {
    req.resume()
    if (req.url === '/hold') { held.push(() => res.end('late')); return }
    res.end('ok')
  })
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(port), DOORMAN_IDLE_TIMEOUT: '1s' })
  const idle = await Wire.open(dm.inbound)
  idle.send(get(1, '/'))
  const busy = await Wire.open(dm.inbound)
  busy.send(get(1, '/hold'))
  await waitFor('the held request at the app', () => held.length === 1)
  await waitFor('the idle session closed', () => idle.closed, 5000)
  t.ok(idle.of(GOAWAY).length > 0, 'a GOAWAY first')
  t.notOk(busy.closed, 'the session with a stream in flight stays')
  held[0]()
  await waitFor('the held response', () => busy.streamEnded(1))
  await waitFor('then that session closed too, once idle', () => busy.closed, 5000)
})

t.test('a 60 KB header block is answered 431 before and after the SETTINGS ACK, and never reaches the app', async (t) => {
  const app = await plainApp(t)
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(app.port) })
  const big: Array<[string, string]> = [['x-big', 'a'.repeat(60 * 1024)]]
  for (const ack of [false, true]) {
    const w = await Wire.open(dm.inbound, { ackSettings: ack })
    t.teardown(() => { w.destroy() })
    if (ack) await waitFor('the SETTINGS exchanged', () => w.frames.length > 0)
    w.send(get(1, '/', 'app', big))
    await waitFor(`an answer (ack ${String(ack)})`, () => w.streamEnded(1), 5000)
    t.ok(w.of(HEADERS, 1).length > 0, `a response head, not a reset (ack ${String(ack)})`)
    t.match(w.body(1), /too large/, `the 431 body (ack ${String(ack)})`)
  }
  // Too many fields.
  const many: Array<[string, string]> = []
  for (let i = 0; i < 200; i++) many.push([`x-f${i}`, 'v'])
  const w = await Wire.open(dm.inbound)
  t.teardown(() => { w.destroy() })
  w.send(get(1, '/', 'app', many))
  await waitFor('an answer to 200 fields', () => w.streamEnded(1), 5000)
  t.match(w.body(1), /too many/)
  t.equal(app.seen(), 0, 'none reached the app')

  // A gRPC call: RESOURCE_EXHAUSTED, trailers-only.
  const s = http2.connect(`http://127.0.0.1:${dm.inbound}`)
  t.teardown(() => { s.destroy() })
  const head = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
    const req = s.request({ ':method': 'POST', ':path': '/x.Y/Z', 'content-type': 'application/grpc', 'x-big': 'b'.repeat(20 * 1024) })
    req.on('response', resolve)
    req.on('error', reject)
    req.end()
  })
  t.equal(head[':status'], 200)
  t.equal(head['grpc-status'], '8', 'RESOURCE_EXHAUSTED')
})

t.test('grpc-timeout: 720H and 30H calls complete, and the app sees a valid grpc-timeout', async (t) => {
  t.equal(encodeGrpcTimeout(107_999_999), '107999S', 'over 8 digits of ms: seconds')
  t.equal(encodeGrpcTimeout(250), '250m')
  t.equal(encodeGrpcTimeout(grpcTimeoutMs('720H')), '2592000S')
  t.equal(encodeGrpcTimeout(grpcTimeoutMs('99999999H')), '99999999H')
  const seen: string[] = []
  const app = http2.createServer()
  app.on('stream', (stream, headers) => {
    seen.push(String(headers['grpc-timeout']))
    stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '0' }, { endStream: true })
  })
  await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { app.close() })
  const port = (app.address() as { port: number }).port
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(port), DOORMAN_APP_PROTOCOL: 'h2c' })
  const s = http2.connect(`http://127.0.0.1:${dm.inbound}`)
  t.teardown(() => { s.destroy() })
  for (const timeout of ['720H', '30H', '99999999H']) {
    const t0 = Date.now()
    const h = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
      const req = s.request({ ':method': 'POST', ':path': '/x.Y/Z', 'content-type': 'application/grpc', 'grpc-timeout': timeout })
      req.on('response', resolve)
      req.on('error', reject)
      req.end()
    })
    t.equal(h['grpc-status'], '0', `${timeout}: the app answered (not DEADLINE_EXCEEDED after ${Date.now() - t0} ms)`)
  }
  t.equal(seen.length, 3)
  for (const v of seen) t.match(v, /^\d{1,8}[HMSmun]$/, `the app got a valid grpc-timeout (${v})`)
  t.ok(grpcTimeoutMs(seen[0]) > 2_591_000_000 && grpcTimeoutMs(seen[1]) > 107_000_000, `what is left is passed on (${seen.join(', ')})`)
})

t.test('a drain ends the process within its timeout with idle, half-sent and zero-window HTTP/2 peers connected', async (t) => {
  const app = await plainApp(t)
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(app.port), DOORMAN_DRAIN_DELAY: '0s', DOORMAN_DRAIN_QUIET: '100ms', DOORMAN_DRAIN_TIMEOUT: '2s', DOORMAN_HEADERS_TIMEOUT: '60s', DOORMAN_IDLE_TIMEOUT: '60s' })
  const idle = await Wire.open(dm.inbound)
  idle.send(get(1, '/'))
  await waitFor('the idle peer served', () => idle.streamEnded(1))
  const half = await Wire.open(dm.inbound)
  half.send(get(1, '/')) // one request served, then a header block never finished
  await waitFor('the half-sent peer served once', () => half.streamEnded(1))
  half.send(frame(HEADERS, 0, 3, headerBlock([[':method', 'GET'], [':scheme', 'http']])))
  const stuck = await Wire.open(dm.inbound, { settings: [[SETTINGS_INITIAL_WINDOW_SIZE, 0]] })
  stuck.send(get(1, '/big'))
  await waitFor('the zero-window request at the app', () => app.seen() === 3)
  await waitFor('the zero-window exchange in flight', async () => (await getJson<{ inflight: number }>(dm.admin, '/state')).inflight === 1)
  const t0 = Date.now()
  dm.proc.kill('SIGTERM')
  const exit = await Promise.race([dm.exited, new Promise<null>((resolve) => setTimeout(() => { resolve(null) }, 10_000))])
  t.not(exit, null, `the process exited (${Date.now() - t0} ms after SIGTERM)`)
  t.ok(Date.now() - t0 < 6000, `within the drain timeout and the close grace (${Date.now() - t0} ms)`)
  t.equal(exit?.code, 0)
  await waitFor('every peer disconnected', () => idle.closed && half.closed && stuck.closed, 3000)
})

t.test('an HTTP/2 CONNECT is answered 405 by doorman, never an app error', async (t) => {
  const app = await plainApp(t)
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(app.port) })
  const w = await Wire.open(dm.inbound)
  t.teardown(() => { w.destroy() })
  w.send(h2request(1, [[':method', 'CONNECT'], [':authority', 'example.com:443']], { endStream: false }))
  await waitFor('an answer', () => w.streamEnded(1), 5000)
  t.match(w.body(1), /CONNECT is not served/)
  t.equal(app.seen(), 0)
  const m = await (await fetch(`http://127.0.0.1:${dm.admin}/metrics`)).text()
  t.match(m, /doorman_client_errors_total\{kind="connect"\} 1/)
  t.notMatch(m, /doorman_upstream_errors_total\{kind=/, 'not counted against the app')
})

t.test('an h2c app that never finishes a response body is cut after the body timeout', async (t) => {
  const { H2Upstream } = await import('../src/proxy/upstream-h2.js')
  const app = http2.createServer()
  app.on('stream', (stream) => { stream.respond({ ':status': 200 }); stream.write('part') })
  await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { app.close() })
  const up = new H2Upstream(`http://127.0.0.1:${(app.address() as { port: number }).port}`, { sessions: 1, headersTimeout: 5000, connectTimeout: 5000, bodyTimeout: 300 })
  t.teardown(() => { up.destroy() })
  const got: string[] = []
  const err = await new Promise<Error>((resolve) => {
    up.dispatch({ path: '/', method: 'GET', headers: ['host', 'app'] }, {
      conn: null,
      onResponseStart: () => { got.push('head') },
      onResponseData: (_c: unknown, chunk: Buffer) => { got.push(chunk.toString()) },
      onResponseEnd: () => { resolve(new Error('ended')) },
      onResponseError: (_c: unknown, e: Error) => { resolve(e) }
    } as never)
  })
  t.same(got, ['head', 'part'])
  t.equal((err as { code?: string }).code, 'UND_ERR_BODY_TIMEOUT')
})

t.test('DOORMAN_MAX_CONNECTIONS: a connection over the cap is closed at accept, and counted', async (t) => {
  const app = await plainApp(t)
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(app.port), DOORMAN_MAX_CONNECTIONS: '2' })
  const a = await Wire.open(dm.inbound)
  const b = await Wire.open(dm.inbound)
  t.teardown(() => { a.destroy(); b.destroy() })
  await waitFor('both served their SETTINGS', () => a.frames.length > 0 && b.frames.length > 0)
  const c = await Wire.open(dm.inbound)
  await waitFor('the third closed', () => c.closed, 5000)
  t.equal(c.frames.length, 0, 'nothing was read from it')
  t.notOk(a.closed || b.closed, 'the two under the cap stay')
  const m = await (await fetch(`http://127.0.0.1:${dm.admin}/metrics`)).text()
  t.match(m, /doorman_connections_closed_total\{lane="inbound",reason="limit"\} 1/)
  t.match(m, /doorman_connections_open\{lane="inbound"\} 2/)
})
