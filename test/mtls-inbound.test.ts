// mTLS on the inbound port, with real `doorman run` processes and certificates made by openssl: `permissive` serves
// plaintext and mTLS on one port (HTTP/1.1 and HTTP/2 by ALPN, gRPC through grpc-js), `strict` refuses plaintext;
// certificates from another CA, expired ones and ones without a SPIFFE ID are refused; the app sees the caller's
// SPIFFE ID in x-forwarded-client-cert and never a client's own; readiness waits for a usable certificate.
import t from 'tap'
import path from 'node:path'
import fs from 'node:fs'
import { createHash, X509Certificate } from 'node:crypto'
import grpc from '@grpc/grpc-js'
import loader from '@grpc/proto-loader'
import { ROOT, startDoorman, startServer, startFixtureApp, request, rawRequest, waitFor } from './helpers/index.js'
import { Pki, writeAtomic, past } from './helpers/pki.js'
import { clientOf, tlsRequest, h2tlsRequest, tryTls, plaintextAnswer } from './helpers/mtls.js'

type Any = Record<string, any>
const PROVIDER = 'spiffe://cluster.local/ns/shop/sa/orders'
const CALLER = 'spiffe://cluster.local/ns/shop/sa/cart'
const OPS = 'spiffe://cluster.local/ns/ops/sa/oncall'

const pki = new Pki(t)
const ca = pki.ca('mesh-ca')
const otherCa = pki.ca('other-ca')
const provider = pki.leaf(ca, { id: PROVIDER })
const caller = pki.leaf(ca, { id: CALLER })
const ops = pki.leaf(ca, { id: OPS })
const stranger = pki.leaf(otherCa, { id: CALLER })
const expired = pki.leaf(ca, { id: CALLER, start: past(2 * 86_400_000), end: past(86_400_000) })
const anonymous = pki.leaf(ca, { id: null })
const providerDir = pki.workload('provider', provider, ca.cert)

/** An app answering with the headers it got, as JSON. */
async function echoApp (t: Any): Promise<{ port: number, seen: Any[] }> {
  const seen: Any[] = []
  const { port } = await startServer(t, (req, res) => {
    seen.push(req.headers)
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify(req.headers))
  })
  return { port, seen }
}

async function metrics (admin: number): Promise<string> {
  return (await request(admin, { path: '/metrics' })).body
}
function counter (text: string, name: string): number {
  const m = new RegExp(`^${name.replace(/[{}"=]/g, (c) => `\\${c}`)} (\\S+)$`, 'm').exec(text)
  return m === null ? 0 : Number(m[1])
}

const hashOf = (pem: string): string => createHash('sha256').update(new X509Certificate(pem).raw).digest('hex')

t.test('permissive: plaintext and mTLS on one port; x-forwarded-client-cert from the verified peer only', async (t) => {
  const app = await echoApp(t)
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(app.port), DOORMAN_MTLS: 'permissive', DOORMAN_TLS_DIR: providerDir })
  const forged = 'By=spiffe://evil/x;URI=spiffe://cluster.local/ns/ops/sa/oncall'

  const plain = await request(dm.inbound, { headers: { 'x-forwarded-client-cert': forged } })
  t.equal(plain.status, 200, 'plaintext served')
  t.equal(JSON.parse(plain.body)['x-forwarded-client-cert'], undefined, "a plaintext client's header never reaches the app")

  const r = await tlsRequest(dm.inbound, clientOf(caller, ca.cert, PROVIDER), { headers: { 'x-forwarded-client-cert': forged } })
  t.equal(r.status, 200, 'mTLS served, the provider presenting its SPIFFE ID')
  const h = JSON.parse(r.body)
  t.equal(h['x-forwarded-client-cert'], `By=${PROVIDER};Hash=${hashOf(caller.cert)};URI=${CALLER}`, "the caller's identity, Envoy's format, the forged one gone")
  t.equal(h['x-forwarded-proto'], 'https')

  const r2 = await h2tlsRequest(dm.inbound, clientOf(caller, ca.cert, PROVIDER), { headers: { 'x-forwarded-client-cert': forged } })
  t.equal(r2.alpn, 'h2', 'ALPN chose HTTP/2')
  t.equal(r2.status, 200)
  t.equal(JSON.parse(r2.body)['x-forwarded-client-cert'], `By=${PROVIDER};Hash=${hashOf(caller.cert)};URI=${CALLER}`)

  // Refused: another CA, expired, no SPIFFE ID, no client certificate at all. None reaches the app.
  const before = app.seen.length
  for (const [what, leaf] of [['another CA', stranger], ['expired', expired], ['no SPIFFE ID', anonymous], ['no client certificate', null]] as const) {
    t.not(await tryTls(dm.inbound, clientOf(leaf, ca.cert)), 'ok', `${what}: refused`)
  }
  t.equal(app.seen.length, before, 'the refused callers never reached the app')
  const m = await metrics(dm.admin)
  t.equal(counter(m, 'doorman_tls_handshake_failures_total{reason="untrusted"}'), 1)
  t.equal(counter(m, 'doorman_tls_handshake_failures_total{reason="expired"}'), 1)
  t.equal(counter(m, 'doorman_tls_handshake_failures_total{reason="no-spiffe-id"}'), 1)
  t.equal(counter(m, 'doorman_tls_handshake_failures_total{reason="no-client-cert"}'), 1)
  t.equal(counter(m, 'doorman_tls_connections_total{mode="mtls"}'), 2)
  t.ok(counter(m, 'doorman_tls_connections_total{mode="plaintext"}') >= 1)
  t.equal(counter(m, 'doorman_tls_requests_total{mode="mtls"}'), 2)
  t.equal(counter(m, 'doorman_tls_cert_ready'), 1)
  t.ok(counter(m, 'doorman_tls_cert_expiry_seconds') > 3600, 'the expiry metric')
  t.notMatch(m, CALLER, 'no identity as a label')
})

t.test('strict: plaintext refused, mTLS served; gRPC through grpc-js over mTLS; DOORMAN_ALLOW denials', async (t) => {
  const grpcApp = await startFixtureApp(t, 'grpc-app.mjs')
  const dm = await startDoorman(t, {
    DOORMAN_APP_PORT: String(grpcApp.port),
    DOORMAN_APP_PROTOCOL: 'h2c',
    DOORMAN_MTLS: 'strict',
    DOORMAN_TLS_DIR: providerDir,
    DOORMAN_ALLOW: `${CALLER},/doorman.test.Echo/ServerStream=${OPS}`
  })
  t.equal(await plaintextAnswer(dm.inbound), '', 'a plaintext HTTP/1.1 connection is closed unanswered')
  for (const [what, leaf] of [['another CA', stranger], ['expired', expired], ['no SPIFFE ID', anonymous]] as const) {
    t.not(await tryTls(dm.inbound, clientOf(leaf, ca.cert)), 'ok', `strict: ${what} refused`)
  }
  const def = loader.loadSync(path.join(ROOT, 'test', 'fixtures', 'echo.proto'), { keepCase: false, longs: Number, defaults: true })
  const Echo = (grpc.loadPackageDefinition(def) as Any).doorman.test.Echo
  const creds = (leaf: { cert: string, key: string }): grpc.ChannelCredentials =>
    grpc.credentials.createSsl(Buffer.from(ca.cert), Buffer.from(leaf.key), Buffer.from(leaf.cert), { checkServerIdentity: () => undefined })
  const call = async (c: Any, method: 'Unary' | 'ServerStream'): Promise<{ code: number, xfcc?: string, texts: string[] }> => await new Promise((resolve) => {
    const texts: string[] = []
    let xfcc: string | undefined
    if (method === 'Unary') {
      const k = c.Unary({ text: 'hi' }, (err: Any, res: Any) => { if (res != null) texts.push(res.text); resolve({ code: err?.code ?? 0, xfcc, texts }) })
      k.on('metadata', (md: grpc.Metadata) => { const v = md.get('x-echo-xfcc'); if (v.length > 0) xfcc = String(v[0]) })
    } else {
      const s = c.ServerStream({ text: 's', count: 2 })
      s.on('data', (m: Any) => texts.push(m.text))
      s.on('error', (err: Any) => { resolve({ code: err.code, texts }) })
      s.on('end', () => { resolve({ code: 0, texts }) })
    }
  })
  // The certificates name no host: the TLS server name is a service name, checked by SPIFFE ID rather than by name.
  const sni = { 'grpc.ssl_target_name_override': 'orders' }
  const asCaller = new Echo(`127.0.0.1:${dm.inbound}`, creds(caller), sni)
  const asOps = new Echo(`127.0.0.1:${dm.inbound}`, creds(ops), sni)
  const plain = new Echo(`127.0.0.1:${dm.inbound}`, grpc.credentials.createInsecure())
  t.teardown(() => { asCaller.close(); asOps.close(); plain.close() })

  const ok = await call(asCaller, 'Unary')
  t.equal(ok.code, 0, 'gRPC over mTLS')
  t.same(ok.texts, ['hi'])
  t.equal(ok.xfcc, `By=${PROVIDER};Hash=${hashOf(caller.cert)};URI=${CALLER}`, 'the gRPC app sees the caller')
  t.equal((await call(asOps, 'Unary')).code, 7, 'a caller not in DOORMAN_ALLOW: PERMISSION_DENIED')
  t.equal((await call(asOps, 'ServerStream')).code, 0, 'the per-path rule admits ops')
  t.equal((await call(asCaller, 'ServerStream')).code, 7, '...and only ops')
  t.equal((await call(plain, 'Unary')).code, 14, 'plaintext gRPC: refused (UNAVAILABLE to the client)')

  const denied = await tlsRequest(dm.inbound, clientOf(ops, ca.cert, PROVIDER), { path: '/x' })
  t.equal(denied.status, 403)
  t.equal(denied.headers['x-doorman-denied'], 'not-allowed')
  // Only the allowed calls reached the app.
  const stats = await new Promise<Any>((resolve) => asCaller.Unary({ text: 'stats' }, (_e: Any, r: Any) => { resolve(JSON.parse(r.text)) }))
  t.equal(stats.calls, 1, 'the denied unary call never reached the app')
  const m = await metrics(dm.admin)
  t.ok(counter(m, 'doorman_tls_plaintext_refused_total') >= 2)
  t.equal(counter(m, 'doorman_denied_total{reason="not-allowed"}'), 3)
  t.equal(counter(m, 'doorman_inflight_requests'), 0)
  t.notMatch(m, /doorman_shed_total\{/, 'denials are not sheds')
})

t.test('readiness: not ready without a usable certificate, ready once the files come', async (t) => {
  const app = await echoApp(t)
  const dir = path.join(pki.dir, 'late')
  fs.mkdirSync(dir)
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(app.port), DOORMAN_MTLS: 'strict', DOORMAN_TLS_DIR: dir }, { waitReady: false })
  const r = await request(dm.admin, { path: '/readyz?verbose' })
  t.equal(r.status, 503)
  t.match(r.body, /no usable mTLS certificate: missing/)
  t.equal(counter(await metrics(dm.admin), 'doorman_tls_cert_ready'), 0)
  t.not(await tryTls(dm.inbound, clientOf(caller, ca.cert)), 'ok', 'no handshake without a certificate')
  t.equal(await plaintextAnswer(dm.inbound), '', 'and no plaintext fallback')
  writeAtomic(dir, { 'tls.crt': provider.cert, 'tls.key': provider.key, 'ca.crt': ca.cert })
  await waitFor('ready', async () => (await request(dm.admin, { path: '/readyz' })).status === 200, 10_000)
  t.equal(await tryTls(dm.inbound, clientOf(caller, ca.cert, PROVIDER)), 'ok')
  // An expired pair written over it is refused: the good one stays, and so does readiness.
  writeAtomic(dir, { 'tls.crt': expired.cert, 'tls.key': expired.key, 'ca.crt': ca.cert })
  await waitFor('the refusal', async () => /certificate files refused/.test(dm.output()), 10_000)
  t.equal((await request(dm.admin, { path: '/readyz' })).status, 200)
})

t.test('a denied request never takes a slot: decided before the limiter', async (t) => {
  // One slot, no queue: while an allowed request holds the slot, another allowed one is shed, a denied one is 403.
  let release: (() => void) | null = null
  const { port } = await startServer(t, (req, res) => {
    if (req.url === '/hold') { release = () => { res.end('held') }; return }
    res.end('ok')
  })
  const dm = await startDoorman(t, {
    DOORMAN_APP_PORT: String(port), DOORMAN_MTLS: 'permissive', DOORMAN_TLS_DIR: providerDir,
    DOORMAN_MAX_CONCURRENCY: '1', DOORMAN_MAX_QUEUE: '0', DOORMAN_ALLOW: CALLER
  })
  const held = tlsRequest(dm.inbound, clientOf(caller, ca.cert), { path: '/hold' })
  await waitFor('the slot taken', () => release !== null, 10_000)
  const shed = await tlsRequest(dm.inbound, clientOf(caller, ca.cert))
  t.equal(shed.status, 503, 'an allowed caller finds the limit reached')
  t.equal(shed.headers['x-doorman-shed'], 'queue-full')
  const denied = await tlsRequest(dm.inbound, clientOf(ops, ca.cert))
  t.equal(denied.status, 403, 'a denied caller is answered 403, not shed')
  t.equal(denied.headers['x-doorman-denied'], 'not-allowed')
  const plain = await request(dm.inbound)
  t.equal(plain.status, 403, 'a plaintext caller where a rule applies: 403')
  t.equal(plain.headers['x-doorman-denied'], 'unauthenticated')
  const upgrade = await rawRequest(dm.inbound, 'GET /ws HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')
  t.match(upgrade, /^HTTP\/1\.1 403 [\s\S]*x-doorman-denied: unauthenticated/i, 'a WebSocket upgrade is denied the same way')
  ;(release as unknown as () => void)()
  t.equal((await held).status, 200)
  const m = await metrics(dm.admin)
  t.equal(counter(m, 'doorman_shed_total{reason="queue-full"}'), 1, 'only the allowed one counted as shed')
  t.equal(counter(m, 'doorman_denied_total{reason="not-allowed"}'), 1)
  t.equal(counter(m, 'doorman_denied_total{reason="unauthenticated"}'), 2)
  t.equal(counter(m, 'doorman_requests_total{code="403",protocol="http1"}'), 2)
})
