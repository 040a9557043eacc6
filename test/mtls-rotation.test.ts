// Certificate rotation under steady load, as csi-driver-spiffe does it (the files swapped through the `..data`
// symlink): new handshakes present the new certificate within seconds, established connections keep going on the
// old one, and no request fails — through two sidecars (consumer outbound → provider inbound, over mTLS) and straight
// to the provider's port, on keep-alive connections and on a new connection per request. A broken pair written then is
// refused and the last good one kept, still without a failed request.
import t from 'tap'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import https from 'node:https'
import tls from 'node:tls'
import { X509Certificate } from 'node:crypto'
import { startDoorman, startServer, freePort, request, waitFor } from './helpers/index.js'
import { steadyLoad, failures } from './helpers/mesh.js'
import { Pki, writeAtomic } from './helpers/pki.js'

const ORDERS = 'spiffe://cluster.local/ns/shop/sa/orders'
const CART = 'spiffe://cluster.local/ns/shop/sa/cart'

/** The serial of the certificate the server presents on a new TLS connection. */
async function presentedSerial (port: number, client: { cert: string, key: string, ca: string }): Promise<string> {
  return await new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, ...client, servername: 'orders', checkServerIdentity: () => undefined, ALPNProtocols: ['http/1.1'] }, () => {
      const serial = s.getPeerX509Certificate()?.serialNumber ?? ''
      s.end()
      resolve(serial)
    })
    s.on('error', reject)
  })
}

interface Load { ok: number, errors: string[], stop: () => Promise<void> }

/** Steady HTTPS requests straight to `port`: on keep-alive connections (`agent`) or a new connection each (`agent: false`). */
function directLoad (port: number, client: { cert: string, key: string, ca: string }, keepAlive: boolean): Load & { sockets: Set<unknown> } {
  const agent = keepAlive ? new https.Agent({ keepAlive: true, maxSockets: 2, ...client, checkServerIdentity: () => undefined, servername: 'orders' }) : false
  const out: Load & { sockets: Set<unknown> } = { ok: 0, errors: [], sockets: new Set(), stop: async () => {} }
  let running = true
  const one = async (): Promise<void> => await new Promise((resolve) => {
    const req = https.request({ host: '127.0.0.1', port, path: '/', agent, ...(agent === false ? { ...client, checkServerIdentity: () => undefined, servername: 'orders' } : {}), timeout: 10_000 }, (res) => {
      out.sockets.add(res.socket)
      res.resume()
      res.on('end', () => { if (res.statusCode === 200) out.ok++; else out.errors.push(`status ${String(res.statusCode)}`); resolve() })
    })
    req.on('timeout', () => { req.destroy(new Error('timeout')) })
    req.on('error', (err) => { out.errors.push(err.message); resolve() })
    req.end()
  })
  const workers = [0, 1].map(async () => { while (running) { await one(); await new Promise((resolve) => setTimeout(resolve, 5)) } })
  out.stop = async () => { running = false; await Promise.all(workers); if (agent !== false) agent.destroy() }
  return out
}

t.test('rotation under load: new handshakes take the new pair, established connections go on, zero failures', async (t) => {
  const pki = new Pki(t)
  const ca = pki.ca('mesh-ca')
  const ordersA = pki.leaf(ca, { id: ORDERS })
  const ordersB = pki.leaf(ca, { id: ORDERS })
  const cartA = pki.leaf(ca, { id: CART })
  const cartB = pki.leaf(ca, { id: CART })
  const ordersDir = pki.workload('orders', ordersA, ca.cert)
  const cartDir = pki.workload('cart', cartA, ca.cert)
  const regDir = fs.mkdtempSync(path.join(os.tmpdir(), 'doorman-rot-reg-'))
  t.teardown(() => { fs.rmSync(regDir, { recursive: true, force: true }) })
  const common = { DOORMAN_REGISTRY: `file://${regDir}`, DOORMAN_REGISTRY_TTL: '5s', DOORMAN_APP_CHECK_INTERVAL: '100ms', DOORMAN_MTLS: 'strict' }
  const { port: ordersApp } = await startServer(t, (req, res) => { req.resume(); req.on('end', () => { res.end('orders') }) })
  const provider = await startDoorman(t, { ...common, DOORMAN_APP_PORT: String(ordersApp), DOORMAN_SERVICE: 'orders', DOORMAN_TLS_DIR: ordersDir })
  const { port: cartApp } = await startServer(t, (_req, res) => { res.end('cart') })
  const consumer = await startDoorman(t, { ...common, DOORMAN_APP_PORT: String(cartApp), DOORMAN_SERVICE: 'cart', DOORMAN_TLS_DIR: cartDir, DOORMAN_OUTBOUND_PORT: String(await freePort()) })
  await waitFor('orders reachable through the consumer', async () => (await request(consumer.outbound, { headers: { host: 'orders' } })).status === 200, 10_000)

  const serialOf = (pem: string): string => new X509Certificate(pem).serialNumber
  const client = { cert: cartA.cert, key: cartA.key, ca: ca.cert }
  t.equal(await presentedSerial(provider.inbound, client), serialOf(ordersA.cert))

  const mesh = steadyLoad(consumer.outbound, { concurrency: 4, pauseMs: 5 })
  const kept = directLoad(provider.inbound, client, true)
  const fresh = directLoad(provider.inbound, client, false)
  await waitFor('load flowing', () => mesh.samples.length > 50 && kept.ok > 20 && fresh.ok > 10, 10_000)
  const keptSockets = kept.sockets.size

  // Both sides rotate, as the csi driver renews them.
  writeAtomic(ordersDir, { 'tls.crt': ordersB.cert, 'tls.key': ordersB.key, 'ca.crt': ca.cert })
  writeAtomic(cartDir, { 'tls.crt': cartB.cert, 'tls.key': cartB.key, 'ca.crt': ca.cert })
  const rotatedAt = Date.now()
  await waitFor('new handshakes present the new certificate', async () => await presentedSerial(provider.inbound, client) === serialOf(ordersB.cert), 5_000, 50)
  t.ok(Date.now() - rotatedAt < 5_000, `within seconds (${Date.now() - rotatedAt} ms)`)
  const okBefore = kept.ok
  await waitFor('requests after the rotation', () => kept.ok > okBefore + 50 && mesh.samples.length > 300, 15_000)
  t.equal(kept.sockets.size, keptSockets, 'the keep-alive connections opened before the rotation carried on (no new ones)')

  // A broken pair (the new certificate with a key that isn't its own): refused, the last good pair kept.
  writeAtomic(ordersDir, { 'tls.crt': ordersA.cert, 'tls.key': ordersB.key, 'ca.crt': ca.cert })
  await waitFor('the refusal logged', () => /certificate files refused/.test(provider.output()), 5_000)
  t.equal(await presentedSerial(provider.inbound, client), serialOf(ordersB.cert), 'the last good pair still presented')
  const n = mesh.samples.length
  await waitFor('more requests', () => mesh.samples.length > n + 100, 10_000)
  t.equal((await request(provider.admin, { path: '/readyz' })).status, 200, 'still ready')

  await Promise.all([mesh.stop(), kept.stop(), fresh.stop()])
  t.same(failures(mesh.samples), [], `no failed request through the two sidecars (${mesh.samples.length})`)
  t.same(kept.errors, [], `none on keep-alive connections (${kept.ok})`)
  t.same(fresh.errors, [], `none on new connections (${fresh.ok})`)
  t.ok(fresh.ok > 30, 'new connections kept being made throughout')
  const m = (await request(provider.admin, { path: '/metrics' })).body
  t.match(m, /doorman_tls_reloads_total\{result="ok"\} 2/)
  t.match(m, /doorman_tls_reloads_total\{result="refused"\} [1-9]/)
})
