// The outbound lane's TLS side on its own: a provider that is who the registry says is accepted, another identity is
// an impostor (refused, counted), HTTP/2 connections to an instance resume the last TLS session with it, and the
// HTTP/1.1 pool's connections stay HTTP/1.1 (undici offers h2 unless told not to).
import t from 'tap'
import tls from 'node:tls'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { CertStore } from '../src/tls/store.js'
import { OutboundTls, IMPOSTOR } from '../src/tls/outbound.js'
import { TlsStats } from '../src/tls/metrics.js'
import { silentLogger } from '../src/core/log.js'
import { Pki } from './helpers/pki.js'
import { waitFor } from './helpers/index.js'

const ORDERS = 'spiffe://cluster.local/ns/shop/sa/orders'
const CART = 'spiffe://cluster.local/ns/shop/sa/cart'

/**
 * The consumer's certificate store (CART) and a provider (ORDERS) requiring a client certificate, offering `alpn`;
 * `chosen` gets the protocol of each connection the provider accepts.
 */
async function provider (t: Tap.Test, alpn: string[]): Promise<{ store: CertStore, port: number, chosen: Array<string | false> }> {
  const pki = new Pki(t)
  const ca = pki.ca('ca')
  const orders = pki.leaf(ca, { id: ORDERS })
  const store = new CertStore({ dir: pki.workload('cart', pki.leaf(ca, { id: CART }), ca.cert), log: silentLogger() })
  store.start()
  t.teardown(() => { store.close() })
  const chosen: Array<string | false> = []
  const server = tls.createServer({ cert: orders.cert, key: orders.key, ca: ca.cert, requestCert: true, rejectUnauthorized: true, ALPNProtocols: alpn }, (s) => { chosen.push(s.alpnProtocol); s.end() })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => { server.close() })
  return { store, port: (server.address() as AddressInfo).port, chosen }
}

t.test('identity check and session resumption', async (t) => {
  const { store, port } = await provider(t, ['h2'])
  const url = new URL(`https://127.0.0.1:${port}`)
  const stats = new TlsStats()
  const out = new OutboundTls({ mode: 'strict', store, stats, log: silentLogger() })

  const connect = async (identity: string): Promise<{ reused: boolean, alpn: string | false, err: NodeJS.ErrnoException | null }> => {
    const s = out.h2Options('orders', identity).createConnection(url)
    const session = once(s, 'session').catch(() => null)
    try {
      await once(s, 'secureConnect')
      const r = { reused: s.isSessionReused(), alpn: s.alpnProtocol ?? false, err: null }
      await Promise.race([session, new Promise((resolve) => setTimeout(resolve, 2000))])
      return r
    } catch (err) {
      return { reused: false, alpn: false, err: err as NodeJS.ErrnoException }
    } finally { s.destroy() }
  }
  const first = await connect(ORDERS)
  t.equal(first.err, null, 'the registry\'s identity: accepted')
  t.equal(first.alpn, 'h2')
  t.equal(first.reused, false)
  const second = await connect(ORDERS)
  t.equal(second.err, null)
  t.equal(second.reused, true, 'the next connection resumed the TLS session')
  const impostor = await connect(CART)
  t.equal(impostor.err?.code, IMPOSTOR, 'another identity than the registry lists: an impostor')
  t.same([...stats.outboundFailures], [['orders\timpostor', 1]], 'counted, by service and reason')
})

t.test('the HTTP/1.1 pool\'s connector offers http/1.1 alone, to a provider that prefers h2', async (t) => {
  // As a provider's doorman answers: h2 first, then http/1.1.
  const { store, port, chosen } = await provider(t, ['h2', 'http/1.1'])
  const out = new OutboundTls({ mode: 'strict', store, stats: new TlsStats(), log: silentLogger() })
  const connect = out.connector('orders', ORDERS, 5000)
  const socket = await new Promise<tls.TLSSocket>((resolve, reject) => {
    connect({ hostname: '127.0.0.1', host: `127.0.0.1:${port}`, protocol: 'https:', port: String(port), servername: null, localAddress: null, httpSocket: undefined }, (err, s) => {
      if (err !== null) reject(err); else resolve(s as tls.TLSSocket)
    })
  })
  t.teardown(() => { socket.destroy() })
  t.equal(socket.alpnProtocol, 'http/1.1', 'the connection is HTTP/1.1, as the pool speaks it')
  await waitFor('the server side of the connection', () => chosen.length > 0)
  t.same(chosen, ['http/1.1'], 'the provider chose http/1.1: h2 was not offered')
})
