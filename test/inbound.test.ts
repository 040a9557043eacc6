// The inbound proxy, end to end: a real app server, a real `doorman run` child process, real client sockets.
import t from 'tap'
import http from 'node:http'
import net from 'node:net'
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { WebSocketServer, WebSocket } from 'ws'
import { startServer, startDoorman, request, rawRequest, waitFor, freePort, getJson } from './helpers/index.js'

interface Seen { method: string, url: string, headers: http.IncomingHttpHeaders, rawHeaders: string[], bodyHash: string, bodyLength: number }

/** An app that records what it saw and answers by path. */
async function startApp (t: Tap.Test): Promise<{ port: number, seen: Seen[], receiving: number }> {
  const seen: Seen[] = []
  const state = { port: 0, seen, receiving: 0 }
  const { port } = await startServer(t, (req, res) => {
    const h = createHash('sha256')
    let n = 0
    req.on('data', (c: Buffer) => { h.update(c); n += c.length; if (n === c.length) state.receiving++ })
    req.on('end', () => {
      if (n > 0) state.receiving--
      const digest = h.digest('hex')
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders, bodyHash: digest, bodyLength: n })
      const url = new URL(req.url ?? '/', 'http://x')
      switch (url.pathname) {
        case '/echo':
          res.writeHead(200, { 'content-type': 'application/json', 'x-body-sha256': digest })
          res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers, length: n }))
          return
        case '/big': {
          const size = Number(url.searchParams.get('size'))
          const body = randomBytes(size)
          res.writeHead(200, { 'content-length': String(size), 'x-body-sha256': createHash('sha256').update(body).digest('hex') })
          res.end(body)
          return
        }
        case '/hop':
          res.writeHead(200, { connection: 'keep-alive, x-private', 'x-private': 'secret', 'keep-alive': 'timeout=5', 'proxy-authenticate': 'Basic', 'x-kept': 'yes' })
          res.end('hop')
          return
        case '/status': {
          const code = Number(url.searchParams.get('code'))
          res.writeHead(code, { etag: '"v1"' })
          res.end()
          return
        }
        case '/trailers':
          res.writeHead(200, { trailer: 'x-checksum', 'content-type': 'text/plain' })
          res.write('part one,')
          res.addTrailers({ 'x-checksum': 'abc123' })
          res.end('part two')
          return
        case '/chunked':
          res.writeHead(200, { 'content-type': 'text/plain' })
          res.write('a'.repeat(1000))
          setImmediate(() => res.end('b'.repeat(1000)))
          return
        case '/request-id':
          res.writeHead(200, { 'x-request-id': 'from-app' })
          res.end()
          return
        default:
          res.end('ok')
      }
    })
  })
  state.port = port
  return state
}

t.test('forwarding', async (t) => {
  const app = await startApp(t)
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(app.port) })

  t.test('methods, paths, queries and bodies', async (t) => {
    for (const method of ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']) {
      const body = method === 'GET' || method === 'OPTIONS' ? undefined : `body of ${method}`
      const res = await request(dm.inbound, { method, path: '/echo?a=1&b=%20x', body, headers: body === undefined ? {} : { 'content-type': 'text/plain', 'content-length': String(Buffer.byteLength(body)) } })
      t.equal(res.status, 200, method)
      const got = JSON.parse(res.body) as { method: string, url: string, length: number }
      t.equal(got.method, method)
      t.equal(got.url, '/echo?a=1&b=%20x')
      t.equal(got.length, body === undefined ? 0 : Buffer.byteLength(body))
    }
    const head = await request(dm.inbound, { method: 'HEAD', path: '/big?size=1000' })
    t.equal(head.status, 200)
    t.equal(head.headers['content-length'], '1000', 'HEAD keeps the length')
    t.equal(head.body, '', 'HEAD has no body')
  })

  t.test('4 MiB bodies intact both ways', async (t) => {
    const size = 4 * 1024 * 1024
    const up = randomBytes(size)
    const res = await request(dm.inbound, { method: 'POST', path: '/echo', body: up, headers: { 'content-length': String(size) } })
    t.equal(res.headers['x-body-sha256'], createHash('sha256').update(up).digest('hex'), 'upload intact')
    const down = await new Promise<{ hash: string, n: number, expected: string }>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port: dm.inbound, path: `/big?size=${size}`, agent: false }, (r) => {
        const h = createHash('sha256')
        let n = 0
        r.on('data', (c: Buffer) => { h.update(c); n += c.length })
        r.on('end', () => { resolve({ hash: h.digest('hex'), n, expected: String(r.headers['x-body-sha256']) }) })
      }).on('error', reject)
    })
    t.equal(down.n, size)
    t.equal(down.hash, down.expected, 'download intact')
  })

  t.test('chunked request bodies stream through, without waiting for the whole body', async (t) => {
    const chunks = [randomBytes(10_000), randomBytes(50_000), randomBytes(3)]
    const seenBefore = app.seen.length
    let firstBytesAtApp = false
    const res = await new Promise<{ headers: http.IncomingHttpHeaders, body: string }>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: dm.inbound, path: '/echo', method: 'POST', agent: false, headers: { 'transfer-encoding': 'chunked' } }, (r) => {
        let b = ''
        r.on('data', (c: Buffer) => { b += c.toString() })
        r.on('end', () => { resolve({ headers: r.headers, body: b }) })
      })
      req.on('error', reject)
      req.write(chunks[0])
      // The rest is sent only once the app has started receiving: doorman must not wait for the whole body.
      waitFor('the app to receive the first bytes', () => app.receiving > 0).then(() => {
        firstBytesAtApp = true
        req.write(chunks[1])
        req.end(chunks[2])
      }, reject)
    })
    t.ok(firstBytesAtApp, 'the app received the first chunk before the client sent the rest')
    t.equal(res.headers['x-body-sha256'], createHash('sha256').update(Buffer.concat(chunks)).digest('hex'), 'the body arrived intact')
    const seen = app.seen[seenBefore]
    t.equal(seen.headers['transfer-encoding'], 'chunked', 'the app received it chunked')
  })

  t.test('Expect: 100-continue', async (t) => {
    const body = 'after continue'
    const res = await new Promise<{ status: number, continued: boolean, body: string }>((resolve, reject) => {
      let continued = false
      const req = http.request({ host: '127.0.0.1', port: dm.inbound, path: '/echo', method: 'POST', agent: false, headers: { expect: '100-continue', 'content-length': String(body.length) } }, (r) => {
        let b = ''
        r.on('data', (c: Buffer) => { b += c.toString() })
        r.on('end', () => { resolve({ status: r.statusCode ?? 0, continued, body: b }) })
      })
      req.on('continue', () => { continued = true; req.end(body) })
      req.on('error', reject)
    })
    t.ok(res.continued, 'doorman sent 100 Continue')
    t.equal(res.status, 200)
    t.equal((JSON.parse(res.body) as { length: number }).length, body.length)
  })

  t.test('hop-by-hop headers are dropped both ways', async (t) => {
    const res = await rawRequest(dm.inbound, 'GET /echo HTTP/1.1\r\nHost: example.test\r\nConnection: keep-alive, x-secret-hop\r\nX-Secret-Hop: 1\r\nKeep-Alive: timeout=9\r\nTE: trailers\r\nProxy-Authorization: Basic Zm9v\r\nUpgrade-Insecure-Requests: 1\r\nX-End: 1\r\nConnection: close\r\n\r\n')
    const body = JSON.parse(res.slice(res.indexOf('{'), res.lastIndexOf('}') + 1)) as { headers: Record<string, string> }
    for (const h of ['x-secret-hop', 'keep-alive', 'te', 'proxy-authorization']) t.notOk(h in body.headers, `${h} not forwarded`)
    t.equal(body.headers['x-end'], '1', 'end-to-end headers kept')
    t.equal(body.headers['upgrade-insecure-requests'], '1', 'a header that only starts like a hop-by-hop one is kept')
    const hop = await request(dm.inbound, { path: '/hop' })
    t.equal(hop.headers['x-kept'], 'yes')
    t.notOk('x-private' in hop.headers, 'header named in the response Connection is dropped')
    t.notOk('proxy-authenticate' in hop.headers)
    t.equal(hop.body, 'hop')
  })

  t.test('forwarded headers and request ids', async (t) => {
    const a = JSON.parse((await request(dm.inbound, { path: '/echo', headers: { host: 'shop.example', 'x-forwarded-for': '203.0.113.9' } })).body) as { headers: Record<string, string> }
    t.equal(a.headers['x-forwarded-for'], '203.0.113.9, 127.0.0.1', 'x-forwarded-for appended')
    t.equal(a.headers['x-forwarded-proto'], 'http')
    t.equal(a.headers['x-forwarded-host'], 'shop.example')
    t.equal(a.headers.host, 'shop.example', 'Host kept')
    t.match(a.headers['x-request-id'], /^[0-9a-f-]{36}$/, 'request id generated')
    const b = await request(dm.inbound, { path: '/echo', headers: { 'x-request-id': 'req-42', 'x-forwarded-proto': 'https' } })
    const bb = JSON.parse(b.body) as { headers: Record<string, string> }
    t.equal(bb.headers['x-request-id'], 'req-42', 'request id passed through')
    t.equal(b.headers['x-request-id'], 'req-42', 'and echoed to the client')
    t.equal(bb.headers['x-forwarded-proto'], 'http', 'a client\'s proto is replaced: no trusted hop in front (DOORMAN_TRUSTED_HOPS=0)')
    const c = await request(dm.inbound, { path: '/request-id' })
    t.equal(c.headers['x-request-id'], 'from-app', 'the app\'s own request id wins on the response')
  })

  t.test('status codes without bodies, trailers, chunked responses', async (t) => {
    const nc = await request(dm.inbound, { path: '/status?code=204' })
    t.equal(nc.status, 204)
    t.equal(nc.body, '')
    const nm = await request(dm.inbound, { path: '/status?code=304', headers: { 'if-none-match': '"v1"' } })
    t.equal(nm.status, 304)
    t.equal(nm.headers.etag, '"v1"')
    const tr = await new Promise<{ body: string, trailers: NodeJS.Dict<string> }>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port: dm.inbound, path: '/trailers', agent: false, headers: { te: 'trailers' } }, (r) => {
        let b = ''
        r.on('data', (c: Buffer) => { b += c.toString() })
        r.on('end', () => { resolve({ body: b, trailers: r.trailers }) })
      }).on('error', reject)
    })
    t.equal(tr.body, 'part one,part two')
    t.equal(tr.trailers['x-checksum'], 'abc123', 'trailers passed on')
    const ch = await request(dm.inbound, { path: '/chunked' })
    t.equal(ch.body, 'a'.repeat(1000) + 'b'.repeat(1000))
  })
})

t.test('the limit is never exceeded at the app, and the queue sheds', async (t) => {
  let active = 0
  let max = 0
  let release: Array<() => void> = []
  const { port } = await startServer(t, (req, res) => {
    active++
    if (active > max) max = active
    const done = (): void => { active--; res.end('done') }
    if (req.url === '/hold') release.push(done)
    else setTimeout(done, 30)
  })
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(port), DOORMAN_MAX_CONCURRENCY: '5', DOORMAN_MAX_QUEUE: '200', DOORMAN_QUEUE_TIMEOUT: '20s' })

  t.test('a burst of 100 never puts more than 5 on the app', async (t) => {
    const results = await Promise.all(Array.from({ length: 100 }, async () => await request(dm.inbound, { path: '/fast' })))
    t.equal(results.filter((r) => r.status === 200).length, 100, 'all served')
    t.ok(max <= 5, `the app saw at most ${max} at once`)
    t.equal(max, 5, 'and the limit was used')
  })

  t.test('queue-full and queue-timeout', async (t) => {
    max = 0
    release = []
    const dm2 = await startDoorman(t, { DOORMAN_APP_PORT: String(port), DOORMAN_MAX_CONCURRENCY: '2', DOORMAN_MAX_QUEUE: '2', DOORMAN_QUEUE_TIMEOUT: '300ms' })
    const holders = [request(dm2.inbound, { path: '/hold' }), request(dm2.inbound, { path: '/hold' })]
    await waitFor('two requests held by the app', () => release.length === 2)
    const queued = [request(dm2.inbound, { path: '/hold' }), request(dm2.inbound, { path: '/hold' })]
    await waitFor('two queued', async () => (JSON.parse((await request(dm2.admin, { path: '/state' })).body) as { queued: number }).queued === 2)
    const full = await request(dm2.inbound, { path: '/hold' })
    t.equal(full.status, 503)
    t.equal(full.headers['x-doorman-shed'], 'queue-full')
    t.equal(full.headers['retry-after'], '1')
    const timedOut = await Promise.all(queued)
    for (const r of timedOut) {
      t.equal(r.status, 503)
      t.equal(r.headers['x-doorman-shed'], 'queue-timeout')
      t.ok(r.headers['retry-after'])
    }
    for (const f of release) f()
    for (const r of await Promise.all(holders)) t.equal(r.status, 200)
    t.ok(max <= 2)
    const metrics = (await request(dm2.admin, { path: '/metrics' })).body
    t.match(metrics, /doorman_shed_total\{reason="queue-full"\} 1/)
    t.match(metrics, /doorman_shed_total\{reason="queue-timeout"\} 2/)
  })

  t.test('a client that gives up while queued frees its place at once', async (t) => {
    release = []
    const dm3 = await startDoorman(t, { DOORMAN_APP_PORT: String(port), DOORMAN_MAX_CONCURRENCY: '1', DOORMAN_MAX_QUEUE: '1', DOORMAN_QUEUE_TIMEOUT: '20s' })
    const holder = request(dm3.inbound, { path: '/hold' })
    await waitFor('held', () => release.length === 1)
    const sock = net.connect(dm3.inbound, '127.0.0.1')
    await once(sock, 'connect')
    sock.write('GET /hold HTTP/1.1\r\nHost: x\r\n\r\n')
    const state = async (): Promise<{ queued: number }> => JSON.parse((await request(dm3.admin, { path: '/state' })).body) as { queued: number }
    await waitFor('queued', async () => (await state()).queued === 1)
    sock.destroy()
    await waitFor('left the queue', async () => (await state()).queued === 0)
    const next = request(dm3.inbound, { path: '/hold' })
    await waitFor('the next one is queued, not shed', async () => (await state()).queued === 1)
    release.shift()?.()
    t.equal((await holder).status, 200)
    await waitFor('next reached the app', () => release.length === 1)
    release.shift()?.()
    t.equal((await next).status, 200)
  })
})

t.test('upstream failures', async (t) => {
  t.test('app down: 502 fast', async (t) => {
    const dead = await freePort()
    const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(dead) }, { waitReady: false })
    const started = Date.now()
    const res = await request(dm.inbound, { path: '/' })
    t.equal(res.status, 502)
    t.equal(res.headers['x-doorman-error'], 'DOORMAN_ERR_UPSTREAM_CONNECT')
    t.notMatch(res.body, /at .*\(/, 'no stack trace')
    t.ok(Date.now() - started < 5000, 'answered without hanging')
  })

  t.test('upstream timeout: 504, and the slot is released', async (t) => {
    let hits = 0
    const { port } = await startServer(t, (_req, res) => { hits++; setTimeout(() => { res.end('late') }, 3000).unref() })
    // One slot and no queue: a request that finds the slot still held is shed at once.
    const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(port), DOORMAN_UPSTREAM_TIMEOUT: '300ms', DOORMAN_MAX_CONCURRENCY: '1', DOORMAN_MAX_QUEUE: '0' })
    const res = await request(dm.inbound, { path: '/' })
    t.equal(res.status, 504)
    t.equal(res.headers['x-doorman-error'], 'DOORMAN_ERR_UPSTREAM_TIMEOUT')
    // The main thread publishes the in-flight count before the failure count, in the same heartbeat: a /state read
    // after one that saw the failure sees the in-flight count of that heartbeat or a later one.
    await waitFor('the failure published', async () => (await getJson<{ failed: number }>(dm.admin, '/state')).failed === 1)
    t.equal((await getJson<{ inflight: number }>(dm.admin, '/state')).inflight, 0, 'no request in flight once the timeout is counted')
    // The app still holds the first request, doorman doesn't: the next one takes the slot instead of being shed.
    const next = await request(dm.inbound, { path: '/' })
    t.equal(next.status, 504, 'the next request reached the app (and timed out too)')
    t.equal(next.headers['x-doorman-shed'], undefined, 'not shed')
    t.equal(hits, 2)
  })

  t.test('app resets mid-response: the client connection is cut, the slot freed', async (t) => {
    const { port } = await startServer(t, (_req, res) => { res.writeHead(200, { 'content-length': '100' }); res.write('partial'); setImmediate(() => res.socket?.destroy()) })
    const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(port) })
    await t.rejects(request(dm.inbound, { path: '/' }))
    await waitFor('slot released', async () => (JSON.parse((await request(dm.admin, { path: '/state' })).body) as { inflight: number }).inflight === 0)
  })
})

t.test('malformed requests never reach the app', async (t) => {
  let hits = 0
  const { port } = await startServer(t, (_req, res) => { hits++; res.end('ok') })
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(port), DOORMAN_MAX_HEADER_SIZE: '8192', DOORMAN_HEADERS_TIMEOUT: '500ms' })
  const cases: Array<[string, string, RegExp]> = [
    ['Content-Length with Transfer-Encoding', 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n', /^HTTP\/1\.1 400/],
    ['two Content-Lengths', 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!', /^HTTP\/1\.1 400/],
    ['obfuscated Transfer-Encoding', 'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n', /^HTTP\/1\.1 400/],
    ['invalid header characters', 'GET / HTTP/1.1\r\nHost: x\r\nX-Bad: a\u0001b\r\n\r\n', /^HTTP\/1\.1 400/],
    ['space before colon', 'GET / HTTP/1.1\r\nHost: x\r\nX-Bad : 1\r\n\r\n', /^HTTP\/1\.1 400/],
    ['no Host on HTTP/1.1', 'GET / HTTP/1.1\r\n\r\n', /^HTTP\/1\.1 400/],
    ['oversized headers', `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(10_000)}\r\n\r\n`, /^HTTP\/1\.1 431/],
    ['absolute-form target to another host', 'GET http://elsewhere/ HTTP/1.1\r\nHost: x\r\n\r\n', /^HTTP\/1\.1 400/]
  ]
  for (const [name, raw, expected] of cases) {
    const res = await rawRequest(dm.inbound, raw)
    t.match(res, expected, name)
  }
  // CONNECT asks for a tunnel, which the inbound port doesn't open: a 405 naming the error, and the connection closed
  // (the client never closes it; the deadline only bounds the wait).
  const tunnel = net.connect(dm.inbound, '127.0.0.1')
  await once(tunnel, 'connect')
  let tunnelAnswer = ''
  let tunnelClosed = false
  tunnel.on('data', (c: Buffer) => { tunnelAnswer += c.toString() })
  tunnel.on('error', () => {})
  tunnel.on('close', () => { tunnelClosed = true })
  tunnel.write('CONNECT elsewhere:443 HTTP/1.1\r\nHost: elsewhere:443\r\n\r\n')
  await waitFor('doorman to close the CONNECT connection', () => tunnelClosed, 10_000)
  t.match(tunnelAnswer, /^HTTP\/1\.1 405 Method Not Allowed\r\n/, 'CONNECT: 405, not a silent close')
  t.match(tunnelAnswer, /x-doorman-error: DOORMAN_ERR_BAD_REQUEST\r\n/i)
  t.match(tunnelAnswer, /allow: /i)
  const slow = net.connect(dm.inbound, '127.0.0.1')
  await once(slow, 'connect')
  slow.write('GET / HTTP/1.1\r\nHost: x\r\n')
  let got = ''
  slow.on('data', (c: Buffer) => { got += c.toString() })
  await once(slow, 'close')
  t.match(got, /^HTTP\/1\.1 408/, 'slow headers get 408')
  t.equal(hits, 0, 'the app saw none of them')
  const ok = await request(dm.inbound, { path: '/' })
  t.equal(ok.status, 200, 'and doorman still serves')
  t.equal(hits, 1)
})

t.test('WebSocket echo through doorman, under its own cap', async (t) => {
  const { server, port } = await startServer(t, (_req, res) => { res.end('http') })
  const wss = new WebSocketServer({ server })
  wss.on('connection', (ws) => { ws.on('message', (m, isBinary) => { ws.send(m, { binary: isBinary }) }) })
  t.teardown(() => { wss.close() })
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(port), DOORMAN_MAX_UPGRADES: '1' })
  const ws = new WebSocket(`ws://127.0.0.1:${dm.inbound}/chat`)
  await once(ws, 'open')
  ws.send('hello doorman')
  const [msg] = await once(ws, 'message') as [Buffer]
  t.equal(msg.toString(), 'hello doorman', 'echoed')
  const second = new WebSocket(`ws://127.0.0.1:${dm.inbound}/chat`)
  const status = await new Promise<number>((resolve) => {
    second.on('unexpected-response', (_req, res) => { resolve(res.statusCode ?? 0) })
    second.on('error', () => { resolve(-1) })
  })
  t.equal(status, 503, 'the second upgrade is over the cap')
  ws.close()
  await once(ws, 'close')
  await waitFor('the cap frees', async () => (JSON.parse((await request(dm.admin, { path: '/state' })).body) as { upgrades: number }).upgrades === 0)
  const third = new WebSocket(`ws://127.0.0.1:${dm.inbound}/chat`)
  await once(third, 'open')
  third.close()
})

t.test('upgrades: h2c is ignored and answered over HTTP/1.1 (curl --http2), other protocols get a 400, never an empty reply', async (t) => {
  const app = await startApp(t)
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(app.port) })
  const { execFile } = await import('node:child_process')
  const curl = async (args: string[]): Promise<string> => await new Promise((resolve, reject) => {
    execFile('curl', ['-sS', '-i', '--max-time', '10', ...args], (err, stdout) => { if (err !== null) reject(err); else resolve(stdout) })
  })
  const get = await curl(['--http2', `http://127.0.0.1:${dm.inbound}/echo`])
  t.match(get, /^HTTP\/1\.1 200/, 'curl --http2 (Upgrade: h2c) gets its answer over HTTP/1.1')
  const post = await curl(['--http2', '--data-binary', 'hello h2c', `http://127.0.0.1:${dm.inbound}/echo`])
  t.match(post, /^HTTP\/1\.1 200/, 'a POST with an h2c upgrade too')
  const body = JSON.parse(post.slice(post.indexOf('\r\n\r\n') + 4)) as { method: string, length: number, headers: Record<string, string> }
  t.equal(body.method, 'POST')
  t.equal(body.length, 9, 'its body reached the app')
  t.equal(body.headers.upgrade, undefined, 'the app never sees the Upgrade header')
  t.equal(body.headers['http2-settings'], undefined, 'nor HTTP2-Settings')
  const before = app.seen.length
  const foo = await rawRequest(dm.inbound, 'POST /echo HTTP/1.1\r\nHost: example.test\r\nConnection: Upgrade\r\nUpgrade: foo/1\r\nContent-Length: 5\r\n\r\nhello')
  t.match(foo, /^HTTP\/1\.1 400/, 'an unknown upgrade gets 400')
  t.match(foo, /x-doorman-error: DOORMAN_ERR_UPGRADE_UNSUPPORTED/)
  const both = await rawRequest(dm.inbound, 'GET /echo HTTP/1.1\r\nHost: example.test\r\nConnection: Upgrade\r\nUpgrade: h2c, foo\r\n\r\n')
  t.match(both, /^HTTP\/1\.1 400/, 'h2c offered beside an unknown protocol: 400 too')
  t.equal(app.seen.length, before, 'neither reached the app')
})

t.test('HTTP/1.1 keep-alive connections stay open for DOORMAN_IDLE_TIMEOUT, as HTTP/2 ones do, and say so', async (t) => {
  const app = await startServer(t, (_req, res) => { res.end('ok') })
  const byDefault = await startDoorman(t, { DOORMAN_APP_PORT: String(app.port) })
  const agent = new http.Agent({ keepAlive: true })
  t.teardown(() => { agent.destroy() })
  const head = await new Promise<http.IncomingMessage>((resolve, reject) => {
    http.get({ port: byDefault.inbound, host: '127.0.0.1', path: '/', agent }, (r) => { r.resume(); r.on('end', () => { resolve(r) }) }).on('error', reject)
  })
  t.equal(head.headers['keep-alive'], 'timeout=60', 'by default a minute, told to the client (a consumer\'s pool keeps its connection as long)')
  const short = await startDoorman(t, { DOORMAN_APP_PORT: String(app.port), DOORMAN_IDLE_TIMEOUT: '2s' })
  const t0 = Date.now()
  // rawRequest resolves when the server ends the connection: here, once it has been idle for the timeout.
  const raw = await rawRequest(short.inbound, 'GET / HTTP/1.1\r\nHost: example.test\r\n\r\n', 15_000)
  const open = Date.now() - t0
  t.match(raw, /^HTTP\/1\.1 200/)
  t.match(raw, /\r\nkeep-alive: timeout=2\r\n/i, 'the timeout given')
  t.ok(open >= 1900 && open < 10_000, `the idle connection was closed after the timeout (${open} ms)`)
})
