// Every way an HTTP/2 client can leave ends its exchanges: a TCP FIN with no GOAWAY or RST_STREAM first (a client
// killed, a pod deleted, a load balancer closing idle connections) frees the slot, cancels the app's request and
// closes the socket, on the inbound lane and the outbound lane, mid-upload and mid-response; a grpc-js client killed
// with SIGKILL mid-call too. Raw frames (test/helpers/h2wire.ts), so the wire is exactly what such a client sends.
import t from 'tap'
import http from 'node:http'
import path from 'node:path'
import { startDoorman, startServer, waitFor, getJson, request, spawnNode, startFixtureApp, ROOT } from './helpers/index.js'
import { Wire, get, request as h2request, data } from './helpers/h2wire.js'
import { startRedis } from './helpers/redis.js'
import { rawGrpc, encodeMsg } from './helpers/grpc.js'

interface AppSeen { started: number, aborted: number, done: number }

/** An HTTP/1.1 app whose /hold requests wait until the client goes (or 30 s); counts what it saw. */
async function holdApp (t: Tap.Test): Promise<{ port: number, seen: AppSeen }> {
  const seen: AppSeen = { started: 0, aborted: 0, done: 0 }
  const { port } = await startServer(t, (req, res) => {
    if (req.url?.startsWith('/hold') === true) {
      seen.started++
      req.resume()
      const timer = setTimeout(() => { seen.done++; res.end('late') }, 30_000)
      res.on('close', () => { clearTimeout(timer); if (!res.writableFinished) seen.aborted++ })
      // mid-response: a head and some body, then nothing until the client goes.
      if (req.url === '/hold/streaming') { res.writeHead(200); res.write('part') }
      return
    }
    req.resume()
    req.on('end', () => { seen.done++; res.end('ok') })
  })
  return { port, seen }
}

type Tap = typeof t
declare namespace Tap { type Test = typeof t }

async function inflight (admin: number): Promise<number> {
  const s = await getJson<{ inflight: number }>(admin, '/state')
  return s.inflight
}

t.test('inbound: a FIN mid-response, mid-upload and while queued frees the slot and cancels the app request', async (t) => {
  const app = await holdApp(t)
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(app.port), DOORMAN_MAX_CONCURRENCY: '2', DOORMAN_MAX_QUEUE: '4', DOORMAN_QUEUE_TIMEOUT: '20s' })

  // Mid-response: the app has sent a head and part of the body.
  const a = await Wire.open(dm.inbound)
  a.send(get(1, '/hold/streaming'))
  // Mid-upload: the request body has started and not ended.
  const b = await Wire.open(dm.inbound)
  b.send(h2request(1, [[':method', 'POST'], [':scheme', 'http'], [':path', '/hold/upload'], [':authority', 'app']]), data(1, 'first part'))
  await waitFor('both requests at the app', () => app.seen.started === 2)
  await waitFor('the two slots taken', async () => await inflight(dm.admin) === 2)
  // Queued behind them.
  const c = await Wire.open(dm.inbound)
  c.send(get(1, '/queued'))
  await waitFor('the third request queued', async () => (await getJson<{ queued: number }>(dm.admin, '/state')).queued === 1)

  // The queued client leaves first: it leaves the queue and never reaches the app.
  c.fin()
  await waitFor('the queued one to leave the queue', async () => (await getJson<{ queued: number }>(dm.admin, '/state')).queued === 0, 3000)
  for (const w of [a, b]) w.fin()
  await waitFor('the app to see both requests cancelled', () => app.seen.aborted === 2, 3000)
  await waitFor('the slots free', async () => (await getJson<{ inflight: number, queued: number }>(dm.admin, '/state')).inflight === 0, 3000)
  t.equal(app.seen.started, 2, 'the queued request never reached the app')
  await waitFor('doorman to close the sockets', () => a.closed && b.closed && c.closed, 3000)

  // The instance serves at full capacity afterwards.
  const after = await Promise.all([1, 2].map(async () => await request(dm.inbound, { path: '/x' })))
  t.same(after.map((r) => r.status), [200, 200])
})

t.test('inbound: a FIN after a completed response leaves no half-closed socket', async (t) => {
  const app = await holdApp(t)
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(app.port) })
  const w = await Wire.open(dm.inbound)
  w.send(get(1, '/done'))
  await waitFor('the response', () => w.streamEnded(1))
  t.equal(w.body(1), 'ok')
  w.fin()
  await waitFor('doorman to close its side too', () => w.closed, 3000)
})

t.test('outbound: a FIN from the app mid-call frees the call and cancels it at the provider', async (t) => {
  const redis = await startRedis(t)
  const app = await holdApp(t)
  const provider = await startDoorman(t, { DOORMAN_APP_PORT: String(app.port), DOORMAN_REGISTRY: redis.url, DOORMAN_SERVICE: 'holder' })
  const consumerApp = await startServer(t, (_req, res) => { res.end('consumer') })
  const consumer = await startDoorman(t, { DOORMAN_APP_PORT: String(consumerApp.port), DOORMAN_REGISTRY: redis.url, DOORMAN_SERVICE: 'caller', DOORMAN_OUTBOUND_PORT: String(await freeOutbound()) })
  await waitFor('the consumer to see the provider', async () => (await request(consumer.outbound, { path: '/ping', headers: { host: 'holder' } })).status === 200, 10_000)
  const w = await Wire.open(consumer.outbound)
  w.send(get(1, '/hold/streaming', 'holder'))
  await waitFor('the call at the app', () => app.seen.started === 1)
  w.fin()
  await waitFor('the provider app to see the call cancelled', () => app.seen.aborted === 1, 3000)
  await waitFor('the provider slot free', async () => await inflight(provider.admin) === 0, 3000)
  await waitFor('the consumer to close the socket', () => w.closed, 3000)
})

t.test('inbound: a grpc-js client killed with SIGKILL mid-call frees its slot', async (t) => {
  const grpcApp = await startFixtureApp(t, 'grpc-app.mjs')
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(grpcApp.port), DOORMAN_APP_PROTOCOL: 'h2c', DOORMAN_MAX_CONCURRENCY: '1', DOORMAN_QUEUE_TIMEOUT: '200ms' })
  const caller = spawnNode(t, [path.join(ROOT, 'test', 'fixtures', 'grpc-caller.mjs')], { PORT: String(dm.inbound), DELAY_MS: '30000' })
  await waitFor('the call in flight', async () => await inflight(dm.admin) === 1, 10_000)
  caller.kill('SIGKILL')
  await caller.exited
  await waitFor('the slot free', async () => await inflight(dm.admin) === 0, 3000)
  // The one slot serves the next call: it is not shed queue-timeout behind a dead client.
  const next = await rawGrpc(dm.inbound, encodeMsg('next', 0), {})
  t.teardown(() => { next.session.destroy() })
  t.equal(next.headers['grpc-status'], '0', 'the next call is served')
})

async function freeOutbound (): Promise<number> {
  const { freePort } = await import('./helpers/index.js')
  return await freePort()
}

void http
