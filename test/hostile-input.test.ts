// Hostile input and quiet faults (issue 17), each against real doorman processes on loopback: who may speak
// doorman's signals, slow readers, whose mistake a bad request is, an unreadable registry, forwarded headers, and
// the small things a production user trips on.
import t from 'tap'
import http from 'node:http'
import net from 'node:net'
import { once } from 'node:events'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { CLI, getJson, request, rawRequest, spawnNode, startServer, startDoorman, waitFor, type Doorman } from './helpers/index.js'
import { startConsumer } from './helpers/mesh.js'

function registryDir (t: Tap.Test): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'doorman-hostile-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  return dir
}

interface App { port: number, hits: () => number, seen: http.IncomingHttpHeaders[] }

/** An app on port 0 with the given handler, counting requests and keeping the headers it received. */
async function app (t: Tap.Test, handler: http.RequestListener): Promise<App> {
  let hits = 0
  const seen: http.IncomingHttpHeaders[] = []
  const { port } = await startServer(t, (req, res) => {
    hits++
    seen.push(req.headers)
    handler(req, res)
  })
  return { port, hits: () => hits, seen }
}

/** An app behind its own doorman, registered as `orders` in a file registry. */
async function provider (t: Tap.Test, registry: string, handler: http.RequestListener, env: Record<string, string> = {}): Promise<App & { dm: Doorman }> {
  const a = await app(t, handler)
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(a.port), DOORMAN_REGISTRY: registry, DOORMAN_SERVICE: 'orders', DOORMAN_REGISTRY_TTL: '5s', ...env })
  return { ...a, dm }
}

const plain = (name: string): http.RequestListener => (req, res) => { req.resume(); req.on('end', () => { res.end(name) }) }

t.test('1. doorman owns x-doorman-*: an app cannot drop its own instance from every consumer', async (t) => {
  const url = `file://${registryDir(t)}`
  const a = await provider(t, url, (req, res) => {
    req.resume()
    req.on('end', () => { res.setHeader('x-doorman-draining', '1'); res.setHeader('X-Doorman-Shed', 'queue-full'); res.end('a') })
  })
  const b = await provider(t, url, plain('b'))
  const consumer = await startConsumer(t, url)
  await waitFor('both providers listed', async () => {
    await request(consumer.outbound, { headers: { host: 'orders' } })
    return a.hits() > 0 && b.hits() > 0
  }, 10_000)
  const before = a.hits()
  for (let i = 0; i < 40; i++) {
    const r = await request(consumer.outbound, { headers: { host: 'orders' } })
    t.equal(r.status, 200)
    t.equal(r.headers['x-doorman-draining'], undefined, "the app's forged flag never reaches a consumer")
  }
  t.ok(a.hits() - before >= 8, `the app that forged a drain flag still gets its share (${a.hits() - before} of 40)`)

  // A client's x-doorman-* never reaches the app either.
  const direct = await request(a.dm.inbound, { headers: { 'x-doorman-draining': '1', 'X-Doorman-Shed': 'queue-full', 'x-doormanish': 'kept' } })
  t.equal(direct.status, 200)
  const seen = a.seen[a.seen.length - 1]
  t.equal(seen['x-doorman-draining'], undefined)
  t.equal(seen['x-doorman-shed'], undefined)
  t.equal(seen['x-doormanish'], 'kept', 'only the x-doorman- prefix is doorman\'s')
  t.equal(direct.headers['x-doorman-shed'], undefined)
})

t.test('1. a shed relayed by a gateway app is its own 503: a POST is not run twice', async (t) => {
  const url = `file://${registryDir(t)}`
  const posts: string[] = []
  const handler = (name: string): http.RequestListener => (req, res) => {
    let body = ''
    req.on('data', (c: Buffer) => { body += c.toString() })
    req.on('end', () => {
      if (req.method === 'POST') posts.push(body)
      if (name === 'gateway' && req.method === 'POST') {
        res.writeHead(503, { 'x-doorman-shed': 'queue-full', 'retry-after': '1' })
        res.end('relayed shed')
        return
      }
      res.end(name)
    })
  }
  const gw = await provider(t, url, handler('gateway'))
  const b = await provider(t, url, handler('b'))
  const consumer = await startConsumer(t, url, { DOORMAN_OUTLIER_FAILURES: '1000' })
  await waitFor('both providers listed', async () => {
    await request(consumer.outbound, { headers: { host: 'orders' } })
    return gw.hits() > 0 && b.hits() > 0
  }, 10_000)
  let gatewayAnswers = 0
  for (let i = 0; i < 12; i++) {
    const r = await request(consumer.outbound, { method: 'POST', headers: { host: 'orders' }, body: `order-${i}` })
    if (r.status === 503) gatewayAnswers++
  }
  t.ok(gatewayAnswers > 0, `the gateway answered some POSTs (${gatewayAnswers})`)
  t.equal(posts.length, 12, `every POST ran once (${posts.join(' ')})`)
})

t.test('2. a client that stops reading loses its slot after DOORMAN_CLIENT_WRITE_TIMEOUT; the app sees the cancellation', async (t) => {
  let cancelled = 0
  const big = Buffer.alloc(64 * 1024, 'x')
  const a = await app(t, (req, res) => {
    if (req.url === '/small') { res.end('small'); return }
    // A large answer, written as fast as the reader takes it, up to 256 MB.
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
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(a.port), DOORMAN_MAX_CONCURRENCY: '1', DOORMAN_QUEUE_TIMEOUT: '500ms', DOORMAN_CLIENT_WRITE_TIMEOUT: '1s' })
  const stalled = net.connect(dm.inbound, '127.0.0.1')
  t.teardown(() => { stalled.destroy() })
  stalled.write('GET /big HTTP/1.1\r\nhost: app\r\n\r\n')
  // Read the head, then nothing more.
  await once(stalled, 'data')
  stalled.pause()
  const small = await waitFor('a request served while the stalled reader is cut', async () => {
    const r = await request(dm.inbound, { path: '/small' })
    return r.status === 200 ? r : undefined
  }, 15_000, 100)
  t.equal(small.body, 'small')
  await waitFor('the app saw the big answer cancelled', () => cancelled === 1, 5_000)
  const metrics = await request(dm.admin, { path: '/metrics' })
  t.match(metrics.body, /doorman_client_errors_total\{kind="write-timeout"\} 1/)
})

t.test("3. a request doorman can't forward is the client's mistake: 400, never the app's or an instance's", async (t) => {
  const a = await app(t, plain('a'))
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(a.port) })
  const twoHosts = await rawRequest(dm.inbound, 'GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\nconnection: close\r\n\r\n')
  t.match(twoHosts, /^HTTP\/1\.1 400 /, 'two Host headers: 400')
  t.match(twoHosts, /x-doorman-error: DOORMAN_ERR_BAD_REQUEST/i)
  const dropped = await rawRequest(dm.inbound, 'POST / HTTP/1.1\r\nhost: a\r\nconnection: content-length\r\ncontent-length: 5\r\n\r\nhello')
  t.match(dropped, /^HTTP\/1\.1 400 /, 'Connection naming Content-Length: 400, not a body silently dropped')
  t.equal(a.hits(), 0, 'the app was never contacted')
  const text = (await request(dm.admin, { path: '/metrics' })).body
  t.notMatch(text, /doorman_upstream_errors_total\{kind="protocol"\}/, 'not counted against the app')
  t.match(text, /doorman_client_errors_total\{kind="malformed"\} 2/)
  t.equal((await request(dm.inbound)).status, 200)

  // Outbound: twelve such requests from the local app don't eject a healthy provider.
  const url = `file://${registryDir(t)}`
  const p1 = await provider(t, url, plain('p1'))
  const p2 = await provider(t, url, plain('p2'))
  const consumer = await startConsumer(t, url, { DOORMAN_OUTLIER_FAILURES: '3' })
  await waitFor('both providers listed', async () => {
    await request(consumer.outbound, { headers: { host: 'orders' } })
    return p1.hits() > 0 && p2.hits() > 0
  }, 10_000)
  for (let i = 0; i < 12; i++) {
    const r = await rawRequest(consumer.outbound, 'GET / HTTP/1.1\r\nhost: orders\r\nhost: orders\r\nconnection: close\r\n\r\n')
    t.match(r, /^HTTP\/1\.1 400 /)
  }
  const out = (await request(consumer.admin, { path: '/metrics' })).body
  t.notMatch(out, /doorman_outbound_ejections_total\{service="orders"\} [1-9]/, 'no provider ejected for the local app\'s mistakes')
})

t.test('4. an unreadable file registry is an outage: consumers keep the last instances, and it reports itself down', async (t) => {
  const parent = registryDir(t)
  const dir = path.join(parent, 'registry')
  const url = `file://${dir}`
  const p1 = await provider(t, url, plain('p1'), { DOORMAN_REGISTRY_TTL: '3s' })
  const consumer = await startConsumer(t, url, { DOORMAN_REGISTRY_TTL: '3s' })
  await waitFor('the provider listed', async () => (await request(consumer.outbound, { headers: { host: 'orders' } })).status === 200, 10_000)
  // The directory is replaced by a file: nothing can list or write it.
  // (Moved away rather than removed: the doormen write into it all the while.)
  const file = path.join(parent, 'file')
  writeFileSync(file, 'not a directory')
  let moves = 0
  await waitFor('the directory replaced by a file', () => {
    try { renameSync(dir, path.join(parent, `gone-${++moves}`)) } catch {}
    try { renameSync(file, dir); return true } catch { return false }
  }, 5_000, 1)
  const state = async (port: number): Promise<boolean> => ((await getJson<{ registration: { registryUp: boolean } }>(port, '/state')).registration.registryUp)
  let failed = 0
  for (let i = 0; i < 40; i++) {
    if ((await request(consumer.outbound, { headers: { host: 'orders' } })).status !== 200) failed++
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  t.equal(failed, 0, 'the consumer kept routing to the last instances it knew')
  await waitFor('the consumer reports the registry down', async () => !(await state(consumer.admin)), 10_000, 100)
  t.match((await request(consumer.admin, { path: '/metrics' })).body, /doorman_registry_up 0/)
  t.ok(p1.hits() > 40)
  // Back: a directory again; both report the registry up, and the provider registers anew.
  rmSync(dir, { force: true })
  mkdirSync(dir, { recursive: true })
  await waitFor('the consumer reports the registry up', async () => await state(consumer.admin), 10_000, 100)
  await waitFor('the provider registered again', () => existsSync(path.join(dir, 'orders')) && readdirSync(path.join(dir, 'orders')).length > 0, 10_000)
})

t.test("5. x-forwarded-* are doorman's unless a trusted hop sets them; one policy on every path, WebSocket included", async (t) => {
  const upgrades: http.IncomingHttpHeaders[] = []
  const a = await app(t, plain('a'))
  const wsApp = await startServer(t, plain('ws'), (s) => {
    s.on('upgrade', (req, socket) => {
      upgrades.push(req.headers)
      socket.end('HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\nx-doorman-draining: 1\r\nx-app: yes\r\n\r\n')
    })
  })
  const edge = await startDoorman(t, { DOORMAN_APP_PORT: String(a.port) })
  const forged = { 'x-forwarded-proto': 'https', 'x-forwarded-host': 'evil', 'x-forwarded-port': '443', 'x-forwarded-for': '10.9.9.9', host: 'shop.example' }
  t.equal((await request(edge.inbound, { headers: forged })).status, 200)
  let seen = a.seen[a.seen.length - 1]
  t.equal(seen['x-forwarded-proto'], 'http', "a plain-HTTP client's x-forwarded-proto is replaced")
  t.equal(seen['x-forwarded-host'], 'shop.example', 'x-forwarded-host is the Host doorman received')
  t.equal(seen['x-forwarded-port'], String(edge.inbound))
  t.equal(seen['x-forwarded-for'], '10.9.9.9, 127.0.0.1', 'x-forwarded-for is appended to')

  const behindIngress = await startDoorman(t, { DOORMAN_APP_PORT: String(a.port), DOORMAN_TRUSTED_HOPS: '1' })
  t.equal((await request(behindIngress.inbound, { headers: forged })).status, 200)
  seen = a.seen[a.seen.length - 1]
  t.equal(seen['x-forwarded-proto'], 'https', 'kept from a trusted hop')
  t.equal(seen['x-forwarded-host'], 'evil')
  t.equal(seen['x-forwarded-port'], '443')
  t.equal(seen['x-forwarded-for'], '10.9.9.9, 127.0.0.1')

  const ws = await startDoorman(t, { DOORMAN_APP_PORT: String(wsApp.port) })
  const answer = await rawRequest(ws.inbound, 'GET /chat HTTP/1.1\r\nhost: shop.example\r\nupgrade: websocket\r\nconnection: Upgrade, x-secret\r\nx-secret: hop\r\n' +
    'proxy-authorization: Basic c2VjcmV0\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nx-forwarded-proto: https\r\nx-doorman-shed: forged\r\n\r\n')
  t.match(answer, /^HTTP\/1\.1 101 /)
  t.match(answer, /x-app: yes/i)
  t.notMatch(answer, /x-doorman-draining/i, "the app's x-doorman-* never reaches the client")
  t.equal(upgrades.length, 1)
  const up = upgrades[0]
  t.equal(up['proxy-authorization'], undefined, 'Proxy-Authorization is not forwarded')
  t.equal(up['x-secret'], undefined, 'headers named in Connection are not forwarded')
  t.equal(up['x-doorman-shed'], undefined)
  t.equal(up['x-forwarded-port'], String(ws.inbound))
  t.equal(up['x-forwarded-proto'], 'http')
  t.ok(up['x-request-id'], 'an x-request-id is made')
  t.equal(up.upgrade, 'websocket')
  t.equal(up['sec-websocket-key'], 'dGhlIHNhbXBsZSBub25jZQ==')
})

/** An app speaking raw bytes: each connection gets `answer` after the request head arrives. */
async function rawApp (t: Tap.Test, answer: string): Promise<number> {
  const server = net.createServer((c) => { c.on('error', () => {}); c.once('data', () => { c.end(answer) }) })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => { server.close() })
  return (server.address() as net.AddressInfo).port
}

t.test('6. a malformed answer from the app is a 502 DOORMAN_ERR_UPSTREAM_PROTOCOL, logged as one line without its bytes', async (t) => {
  const answers: Record<string, string> = {
    '204 with a body': 'HTTP/1.1 204 No Content\r\ncontent-length: 12\r\n\r\nSECRET-BYTES',
    'a bad chunk size': 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nSECRET-BYTES\r\n0\r\n\r\n',
    'no status line': 'SECRET-BYTES and more\r\n\r\n',
    '2,000 header fields': 'HTTP/1.1 200 OK\r\n' + Array.from({ length: 2000 }, (_, i) => `x-secret-bytes-field-${i}: SECRET-BYTES`).join('\r\n') + '\r\ncontent-length: 2\r\n\r\nok',
    'a bare CR in a header value': 'HTTP/1.1 200 OK\r\nx-a: SECRET\rBYTES\r\ncontent-length: 2\r\n\r\nok'
  }
  for (const [what, answer] of Object.entries(answers)) {
    const port = await rawApp(t, answer)
    const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(port) })
    const r = await request(dm.inbound)
    t.equal(r.status, 502, `${what}: 502`)
    t.equal(r.headers['x-doorman-error'], 'DOORMAN_ERR_UPSTREAM_PROTOCOL', `${what}: the app's fault`)
    const lines = (): string[] => dm.output().split('\n').filter((l) => l.includes('malformed response'))
    const logged = await waitFor(`${what}: logged`, () => lines().length > 0 ? lines() : undefined, 5_000)
    t.equal(logged.length, 1, `${what}: one line`)
    t.notMatch(dm.output(), /SECRET|DOORMAN_ERR_INTERNAL|"stack"/, `${what}: no app bytes, no stack trace`)
  }
})

t.test('6. DOORMAN_APP_HOST=[::1] works; a malformed host exits 78', async (t) => {
  const server = http.createServer((_req, res) => { res.end('v6') })
  server.listen(0, '::1')
  await once(server, 'listening')
  t.teardown(() => { server.close() })
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String((server.address() as net.AddressInfo).port), DOORMAN_APP_HOST: '[::1]' })
  const r = await request(dm.inbound)
  t.equal(r.status, 200)
  t.equal(r.body, 'v6')
  for (const bad of ['[::1', '[localhost]', 'a:b']) {
    const child = spawnNode(t, [CLI, 'run'], { DOORMAN_APP_PORT: '1', DOORMAN_APP_HOST: bad })
    t.equal((await child.exited).code, 78, `${bad}: exit 78`)
    t.match(child.output(), /DOORMAN_APP_HOST/)
  }
})

t.test('6. an unknown DOORMAN_* variable is warned about at start-up, naming the closest setting', async (t) => {
  const a = await app(t, plain('a'))
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(a.port), DOORMAN_MAX_CONCURENCY: '5', DOORMAN_SERVICE_HOST: '10.0.0.1', DOORMAN_PORT_7080_TCP: 'tcp://10.0.0.1:7080' })
  const line = dm.output().split('\n').find((l) => l.includes('DOORMAN_MAX_CONCURENCY'))
  t.ok(line, 'the typo is named')
  t.match(line ?? '', /did you mean DOORMAN_MAX_CONCURRENCY\?/)
  t.notMatch(dm.output(), /DOORMAN_SERVICE_HOST|DOORMAN_PORT_7080_TCP/, "Kubernetes' service links are not settings and not warned about")
})

t.test("6. a shed 503 carries the client's x-request-id, or a new one", async (t) => {
  let release: (() => void) | null = null
  const a = await app(t, (_req, res) => { release = () => { res.end('slow') } })
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(a.port), DOORMAN_MAX_CONCURRENCY: '1', DOORMAN_MAX_QUEUE: '0' })
  const held = request(dm.inbound, { path: '/held' })
  await waitFor('the slot taken', () => release !== null)
  const mine = await request(dm.inbound, { headers: { 'x-request-id': 'mine-1' } })
  t.equal(mine.status, 503)
  t.equal(mine.headers['x-doorman-shed'], 'queue-full')
  t.equal(mine.headers['x-request-id'], 'mine-1')
  const made = await request(dm.inbound)
  t.equal(made.status, 503)
  t.match(made.headers['x-request-id'], /^[0-9a-f-]{36}$/)
  ;(release as unknown as () => void)()
  t.equal((await held).status, 200)
})
