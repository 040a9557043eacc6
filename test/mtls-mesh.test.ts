// End to end through two sidecars over mTLS, with real `doorman run` processes, certificates made by openssl and a
// file registry shared by the processes: a consumer's app calls a provider by service name over HTTP/1.1, HTTP/2 and
// gRPC (grpc-js), and the provider's app sees the consumer's SPIFFE ID in x-forwarded-client-cert (never what the
// consumer's app sent under that name). The registry lists each instance's identity: an instance that presents a valid
// certificate of another identity is an impostor (refused before any byte is sent, the call going to the real one),
// and a strict sidecar refuses an instance that takes no mTLS.
import t from 'tap'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import http2 from 'node:http2'
import { createHash, X509Certificate } from 'node:crypto'
import grpc from '@grpc/grpc-js'
import loader from '@grpc/proto-loader'
import { ROOT, startDoorman, startServer, startFixtureApp, freePort, request, waitFor } from './helpers/index.js'
import { Pki } from './helpers/pki.js'
import { FileRegistry } from '../src/registry/file.js'
import type { Instance } from '../src/registry/types.js'

type Any = Record<string, any>
const ORDERS = 'spiffe://cluster.local/ns/shop/sa/orders'
const ECHO = 'spiffe://cluster.local/ns/shop/sa/echo'
const CART = 'spiffe://cluster.local/ns/shop/sa/cart'
const EVIL = 'spiffe://cluster.local/ns/shop/sa/evil'

const pki = new Pki(t)
const ca = pki.ca('mesh-ca')
const dirOf = (name: string, id: string): string => pki.workload(name, pki.leaf(ca, { id }), ca.cert)
const hashOf = (dir: string): string => createHash('sha256').update(new X509Certificate(fs.readFileSync(path.join(dir, 'tls.crt'))).raw).digest('hex')
const regDir = fs.mkdtempSync(path.join(os.tmpdir(), 'doorman-mtls-reg-'))
t.teardown(() => { fs.rmSync(regDir, { recursive: true, force: true }) })
const REGISTRY = `file://${regDir}`

/** An app answering with its name and the headers it got. */
async function app (t: Any, name: string): Promise<{ port: number, seen: Any[] }> {
  const seen: Any[] = []
  const { port } = await startServer(t, (req, res) => {
    seen.push(req.headers)
    req.resume()
    req.on('end', () => { res.setHeader('content-type', 'application/json'); res.end(JSON.stringify({ name, headers: req.headers })) })
  })
  return { port, seen }
}

async function h2call (port: number, authority: string, headers: Record<string, string> = {}): Promise<{ status: number, body: string }> {
  const s = http2.connect(`http://127.0.0.1:${port}`)
  try {
    return await new Promise((resolve, reject) => {
      s.on('error', reject)
      const req = s.request({ ':path': '/h2', ':authority': authority, ...headers })
      let status = 0
      let body = ''
      req.on('response', (h) => { status = Number(h[':status']) })
      req.on('data', (d: Buffer) => { body += d.toString() })
      req.on('end', () => { resolve({ status, body }) })
      req.on('error', reject)
      req.end()
    })
  } finally { s.close() }
}

t.test('consumer → provider over mTLS: HTTP/1.1, HTTP/2, gRPC; impostors and plaintext instances refused', async (t) => {
  const cartDir = dirOf('cart', CART)
  const ordersDir = dirOf('orders', ORDERS)
  const orders = await app(t, 'orders')
  const common = { DOORMAN_REGISTRY: REGISTRY, DOORMAN_REGISTRY_TTL: '5s', DOORMAN_APP_CHECK_INTERVAL: '100ms' }
  await startDoorman(t, { ...common, DOORMAN_APP_PORT: String(orders.port), DOORMAN_SERVICE: 'orders', DOORMAN_MTLS: 'strict', DOORMAN_TLS_DIR: ordersDir })
  const grpcApp = await startFixtureApp(t, 'grpc-app.mjs')
  await startDoorman(t, { ...common, DOORMAN_APP_PORT: String(grpcApp.port), DOORMAN_APP_PROTOCOL: 'h2c', DOORMAN_SERVICE: 'echo', DOORMAN_MTLS: 'strict', DOORMAN_TLS_DIR: dirOf('echo', ECHO) })
  // A plaintext provider (mTLS off) registered as `legacy`.
  const legacyApp = await app(t, 'legacy')
  await startDoorman(t, { ...common, DOORMAN_APP_PORT: String(legacyApp.port), DOORMAN_SERVICE: 'legacy' })
  // An impostor: a sidecar with a valid certificate of the mesh, for another identity, listed in the registry as an
  // instance of `orders` (and alone as `payments`) under the identity the registry gives those services.
  const evilApp = await app(t, 'evil')
  const evil = await startDoorman(t, { DOORMAN_APP_PORT: String(evilApp.port), DOORMAN_MTLS: 'strict', DOORMAN_TLS_DIR: dirOf('evil', EVIL) })
  const reg = new FileRegistry({ dir: regDir })
  t.teardown(async () => { await reg.close() })
  const now = Date.now()
  const fake = (service: string, id: string): Instance => ({
    id, service, cluster: 'default', zone: '', address: `127.0.0.1:${evil.inbound}`, adminPort: evil.admin, startedAt: now, registeredAt: now,
    warmup: { window: 0, aggression: 1, minWeight: 10, progress: 1 }, weight: 100, state: 'up', ejected: false, updatedAt: now, rev: 0,
    identity: ORDERS, mtls: true
  })
  await reg.register(fake('orders', 'impostor-1'), 60_000)
  await reg.register(fake('payments', 'impostor-2'), 60_000)

  const consumerApp = await app(t, 'cart')
  const consumer = await startDoorman(t, {
    ...common, DOORMAN_APP_PORT: String(consumerApp.port), DOORMAN_SERVICE: 'cart', DOORMAN_MTLS: 'strict', DOORMAN_TLS_DIR: cartDir,
    DOORMAN_OUTBOUND_PORT: String(await freePort())
  })
  await waitFor('orders listed with its identity', async () => (await reg.list('orders')).some((i) => i.identity === ORDERS && i.mtls === true && i.id !== 'impostor-1'), 10_000)
  const xfcc = `By=${ORDERS};Hash=${hashOf(cartDir)};URI=${CART}`

  // HTTP/1.1, with a forged header from the consumer's app, many times: the impostor is met and passed over.
  for (let i = 0; i < 24; i++) {
    const r = await request(consumer.outbound, { path: '/h1', headers: { host: 'orders', 'x-forwarded-client-cert': `By=x;URI=${EVIL}` } })
    t.equal(r.status, 200, `call ${i}`)
    const b = JSON.parse(r.body)
    t.equal(b.name, 'orders')
    t.equal(b.headers['x-forwarded-client-cert'], xfcc, "the provider's app sees the consumer's identity only")
    if (r.status !== 200) break
  }
  t.equal(evilApp.seen.length, 0, 'the impostor never got a request')
  const m = (await request(consumer.admin, { path: '/metrics' })).body
  t.match(m, /doorman_outbound_tls_failures_total\{service="orders",reason="impostor"\} [1-9]/, 'the impostor was met and counted')

  // HTTP/2 (h2c from the app, mTLS with ALPN h2 to the provider).
  const h2 = await h2call(consumer.outbound, 'orders', { 'x-forwarded-client-cert': 'forged' })
  t.equal(h2.status, 200)
  t.equal(JSON.parse(h2.body).headers['x-forwarded-client-cert'], xfcc)

  // gRPC through grpc-js, by service name.
  const def = loader.loadSync(path.join(ROOT, 'test', 'fixtures', 'echo.proto'), { keepCase: false, longs: Number, defaults: true })
  const Echo = (grpc.loadPackageDefinition(def) as Any).doorman.test.Echo
  const c = new Echo(`127.0.0.1:${consumer.outbound}`, grpc.credentials.createInsecure(), { 'grpc.default_authority': 'echo' })
  t.teardown(() => { c.close() })
  const g = await new Promise<{ err: Any, res: Any, xfcc?: string }>((resolve) => {
    let seen: string | undefined
    const k = c.Unary({ text: 'over mTLS' }, (err: Any, res: Any) => { resolve({ err, res, xfcc: seen }) })
    k.on('metadata', (md: grpc.Metadata) => { const v = md.get('x-echo-xfcc'); if (v.length > 0) seen = String(v[0]) })
  })
  t.equal(g.err, null)
  t.equal(g.res?.text, 'over mTLS')
  t.equal(g.xfcc, `By=${ECHO};Hash=${hashOf(cartDir)};URI=${CART}`, 'the gRPC app sees the consumer')

  // Only an impostor: refused with DOORMAN_ERR_MTLS, nothing sent to it.
  const p = await request(consumer.outbound, { path: '/', headers: { host: 'payments' } })
  t.equal(p.status, 502)
  t.equal(p.headers['x-doorman-error'], 'DOORMAN_ERR_MTLS')
  t.equal(evilApp.seen.length, 0)

  // strict: an instance that takes no mTLS is refused, clearly.
  await waitFor('legacy listed', async () => (await reg.list('legacy')).length === 1, 10_000)
  const l = await request(consumer.outbound, { path: '/', headers: { host: 'legacy' } })
  t.equal(l.status, 502)
  t.equal(l.headers['x-doorman-error'], 'DOORMAN_ERR_MTLS')
  t.match(l.body, /takes no mTLS/)
  t.equal(legacyApp.seen.length, 0, 'never in plaintext')
})
