// Check definitions beyond the lane's /readyz: a grpc-js server whose health service says NOT_SERVING is ejected and
// recovers on SERVING (grpc.health.v1 Check over h2c, a file target); and a sidecar whose `doorman.io/check`
// (DOORMAN_CHECK) points at its app's own /health is judged by it, although its lane's /readyz stays 200.
import t from 'tap'
import { mkdtempSync, writeFileSync, rmSync, readFileSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import https from 'node:https'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import path from 'node:path'
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'
import { startDoorman, startServer, waitFor } from './helpers/index.js'
import { startRedis } from './helpers/redis.js'
import { startChecker } from './checker-helpers.js'
import { HEALTH_PROTO } from '../src/checker/checks/grpc.js'
import { RedisRegistry, parseRegistryUrl, type RedisTarget, type Instance } from '../src/registry/index.js'

/** A self-signed certificate for 127.0.0.1 (its own CA), made with the openssl CLI. */
function certificate (dir: string, name: string): { cert: string, key: string } {
  const cert = path.join(dir, `${name}.crt`)
  const key = path.join(dir, `${name}.key`)
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert,
    '-days', '1', '-subj', `/CN=doorman-check-${name}`, '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' })
  return { cert, key }
}

/** A grpc-js server with a health service: `status.get(name)` answers for a service name (absent: NOT_FOUND). */
async function startGrpcHealth (t: Tap.Test, status: Map<string, string>, tls?: { cert: string, key: string }): Promise<number> {
  const def = protoLoader.fromJSON(HEALTH_PROTO as unknown as Parameters<typeof protoLoader.fromJSON>[0], { enums: String, defaults: true })
  const pkg = grpc.loadPackageDefinition(def) as unknown as { grpc: { health: { v1: { Health: { service: grpc.ServiceDefinition } } } } }
  const server = new grpc.Server()
  server.addService(pkg.grpc.health.v1.Health.service, {
    Check: (call: grpc.ServerUnaryCall<{ service: string }, unknown>, cb: grpc.sendUnaryData<{ status: string }>) => {
      const s = status.get(call.request.service)
      if (s === undefined) cb({ code: grpc.status.NOT_FOUND, details: 'unknown service' })
      else cb(null, { status: s })
    }
  })
  const port = await new Promise<number>((resolve, reject) => {
    const creds = tls === undefined ? grpc.ServerCredentials.createInsecure() : grpc.ServerCredentials.createSsl(null, [{ cert_chain: readFileSync(tls.cert), private_key: readFileSync(tls.key) }])
    server.bindAsync('127.0.0.1:0', creds, (err, p) => { if (err !== null) reject(err); else resolve(p) })
  })
  t.teardown(() => { server.forceShutdown() })
  return port
}

const view = (w: { view: ReadonlyMap<string, Instance> }, port: number): Instance | undefined => [...w.view.values()].find((i) => i.address === `127.0.0.1:${port}` || i.address === `localhost:${port}` || i.check?.port === port)

t.test('grpc.health.v1: NOT_SERVING is ejected, SERVING recovers', async (t) => {
  const redis = await startRedis(t)
  const dir = mkdtempSync(path.join(tmpdir(), 'doorman-grpc-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const a = new Map([['ledger.v1.Ledger', 'SERVING']])
  const b = new Map([['ledger.v1.Ledger', 'SERVING']])
  const ports = [await startGrpcHealth(t, a), await startGrpcHealth(t, b)]
  const file = path.join(dir, 'targets.yaml')
  writeFileSync(file, [
    'services:',
    '  - name: ledger',
    '    check: {type: grpc, service: ledger.v1.Ledger, timeout: 250ms}',
    `    instances: ["127.0.0.1:${ports[0]}", "127.0.0.1:${ports[1]}"]`,
    ''
  ].join('\n'))
  const reg = new RedisRegistry({ target: parseRegistryUrl(redis.url) as RedisTarget, checkMs: 1000 })
  t.teardown(async () => { await reg.close() })
  const ledger = reg.watch('ledger')
  t.teardown(() => { ledger.close() })
  const checker = await startChecker(t, { DOORMAN_REGISTRY: redis.url, DOORMAN_CHECK_TARGETS: file })
  await waitFor('both published', () => ledger.view.size === 2, 10_000)

  b.set('ledger.v1.Ledger', 'NOT_SERVING')
  await waitFor('b ejected', () => view(ledger, ports[1])?.state === 'ejected', 10_000)
  t.equal(view(ledger, ports[0])?.state, 'up', 'a, SERVING, stays up')
  b.set('ledger.v1.Ledger', 'SERVING')
  await waitFor('b recovered', () => view(ledger, ports[1])?.state === 'up', 10_000)
  t.pass('SERVING again: recovered')
  // A server that does not know the service name counts as unhealthy too.
  b.delete('ledger.v1.Ledger')
  await waitFor('b ejected on SERVICE_UNKNOWN', () => view(ledger, ports[1])?.state === 'ejected', 10_000)
  t.pass('an unknown service name is a failure')
  checker.kill('SIGTERM')
  t.equal((await checker.exited).code, 0)
})

t.test('a sidecar\'s doorman.io/check overrides the lane\'s /readyz', async (t) => {
  const redis = await startRedis(t)
  let healthA = 200
  const appA = await startServer(t, (req, res) => { res.statusCode = req.url === '/health' ? healthA : 200; res.end('a') })
  const appB = await startServer(t, (_req, res) => { res.end('b') })
  const provider = { DOORMAN_REGISTRY: redis.url, DOORMAN_SERVICE: 'orders' }
  await Promise.all([
    startDoorman(t, { ...provider, DOORMAN_APP_PORT: String(appA.port), DOORMAN_CHECK: `http:${appA.port}/health`, DOORMAN_ORG: 'shop' }),
    startDoorman(t, { ...provider, DOORMAN_APP_PORT: String(appB.port) })
  ])
  const reg = new RedisRegistry({ target: parseRegistryUrl(redis.url) as RedisTarget, checkMs: 1000 })
  t.teardown(async () => { await reg.close() })
  const orders = reg.watch('orders')
  t.teardown(() => { orders.close() })
  await waitFor('both registered', () => orders.view.size === 2 && [...orders.view.values()].every((i) => i.state === 'up'), 10_000)
  const a = view(orders, appA.port)
  t.same(a?.check, { type: 'http', port: appA.port, path: '/health', method: 'GET', expect: [200, 299] }, 'the record carries the check')
  t.equal(a?.org, 'shop', 'and the org')
  const checker = await startChecker(t, { DOORMAN_REGISTRY: redis.url })
  healthA = 503
  await waitFor('a ejected by its own /health while its lane is ready', () => view(orders, appA.port)?.state === 'ejected', 10_000)
  t.equal([...orders.view.values()].filter((i) => i.state === 'up').length, 1, 'b, checked on its lane, stays up')
  healthA = 200
  await waitFor('a recovered', () => view(orders, appA.port)?.state === 'up', 10_000)
  checker.kill('SIGTERM')
  t.equal((await checker.exited).code, 0)
})

t.test('TLS: https and grpc checks verify the target against the CA file', async (t) => {
  const redis = await startRedis(t)
  const dir = mkdtempSync(path.join(tmpdir(), 'doorman-tls-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const trusted = certificate(dir, 'trusted')
  const other = certificate(dir, 'other')
  const health = [200, 200, 200]
  const servers = await Promise.all([trusted, trusted, other].map(async (c, i) => await new Promise<https.Server>((resolve) => {
    const s = https.createServer({ cert: readFileSync(c.cert), key: readFileSync(c.key) }, (_req, res) => { res.statusCode = health[i]; res.end() })
    s.listen(0, '127.0.0.1', () => { resolve(s) })
  })))
  t.teardown(() => { for (const s of servers) s.close() })
  const ports = servers.map((s) => (s.address() as AddressInfo).port)
  const status = new Map([['', 'SERVING']])
  const grpcPorts = [await startGrpcHealth(t, status, trusted), await startGrpcHealth(t, new Map([['', 'SERVING']]), trusted)]
  const file = path.join(dir, 'targets.yaml')
  writeFileSync(file, [
    'services:',
    '  - name: secure',
    `    check: {type: http, path: /health, tls: {ca: ${trusted.cert}}}`,
    `    instances: [${ports.map((p) => `"127.0.0.1:${p}"`).join(', ')}]`,
    '  - name: ledger-tls',
    `    check: {type: grpc, tls: {ca: ${trusted.cert}}}`,
    // By name: grpc-js sends the host as the TLS server name, which may not be an IP address.
    `    instances: [${grpcPorts.map((p) => `"localhost:${p}"`).join(', ')}]`,
    ''
  ].join('\n'))
  const reg = new RedisRegistry({ target: parseRegistryUrl(redis.url) as RedisTarget, checkMs: 1000 })
  t.teardown(async () => { await reg.close() })
  const secure = reg.watch('secure')
  const ledger = reg.watch('ledger-tls')
  t.teardown(() => { secure.close(); ledger.close() })
  const checker = await startChecker(t, { DOORMAN_REGISTRY: redis.url, DOORMAN_CHECK_TARGETS: file })
  // The server whose certificate the CA did not sign fails the check (budget 1 of 3): ejected.
  await waitFor('the untrusted https target ejected', () => view(secure, ports[2])?.state === 'ejected', 10_000)
  t.equal(view(secure, ports[0])?.state, 'up', 'a trusted one answering 200 stays up')
  t.equal(view(secure, ports[1])?.state, 'up')
  // gRPC over TLS: NOT_SERVING for the whole server is ejected, SERVING recovers.
  status.set('', 'NOT_SERVING')
  await waitFor('the grpc TLS target ejected on NOT_SERVING', () => view(ledger, grpcPorts[0])?.state === 'ejected', 10_000)
  status.set('', 'SERVING')
  await waitFor('recovered', () => view(ledger, grpcPorts[0])?.state === 'up', 10_000)
  t.equal(view(ledger, grpcPorts[1])?.state, 'up')
  checker.kill('SIGTERM')
  t.equal((await checker.exited).code, 0)
})
