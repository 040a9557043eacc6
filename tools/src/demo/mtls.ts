// The demo's mTLS part (issue 24): a consumer's doorman calls a provider's doorman over mutual TLS, both `strict`,
// with workload certificates made for the run by openssl (a CA, SPIFFE IDs as URI SANs) in directories laid out as
// cert-manager's csi-driver-spiffe mounts them. Under steady load the provider's certificate is rotated as the csi
// driver does it (the `..data` symlink swapped): new handshakes present the new one, no request fails. The provider's
// app sees the consumer's SPIFFE ID in x-forwarded-client-cert; a plaintext caller and a caller with a certificate
// from another CA are refused.
import { execFileSync } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import fs from 'node:fs'
import http from 'node:http'
import https from 'node:https'
import net from 'node:net'
import path from 'node:path'
import tls from 'node:tls'
import { pathToFileURL } from 'node:url'
import type { ChildProcess } from 'node:child_process'
import { freePort, startDoorman } from './procs.js'
import { sleep } from './time.js'

export interface MtlsPlan { rate: number, durationMs: number, rotateAtMs: number }
export const MTLS_FULL: MtlsPlan = { rate: 40, durationMs: 12_000, rotateAtMs: 6000 }
export const MTLS_SHORT: MtlsPlan = { rate: 40, durationMs: 6000, rotateAtMs: 3000 }

export interface MtlsRun {
  skipped: string | null
  sent: number
  ok: number
  failed: number
  /** The consumer's SPIFFE ID, and what the provider's app read in x-forwarded-client-cert. */
  consumerId: string
  xfcc: string
  /** The serials the provider presented before and after the rotation, and how soon new handshakes had the new one. */
  rotation: { before: string, after: string, presentedAfterMs: number } | null
  refused: { plaintext: boolean, otherCa: boolean }
}

const PROVIDER_ID = 'spiffe://demo.local/ns/shop/sa/orders'
const CONSUMER_ID = 'spiffe://demo.local/ns/shop/sa/frontend'

interface Leaf { cert: string, key: string }

/** openssl in `dir`: CAs and leaf certificates with a SPIFFE ID (or none). */
class Certs {
  readonly #dir: string
  #n = 0
  constructor (dir: string) { this.#dir = dir }
  #ssl (...args: string[]): void { execFileSync('openssl', args, { cwd: this.#dir, stdio: ['ignore', 'ignore', 'pipe'] }) }
  ca (name: string): { name: string, cert: string } {
    this.#ssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.crt`,
      '-days', '1', '-subj', `/CN=${name}`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign')
    return { name, cert: fs.readFileSync(path.join(this.#dir, `${name}.crt`), 'utf8') }
  }

  leaf (ca: string, id: string): Leaf {
    const n = `leaf${++this.#n}`
    fs.writeFileSync(path.join(this.#dir, `${n}.ext`), `basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=URI:${id}\n`)
    this.#ssl('req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${n}.key`, '-out', `${n}.csr`, '-subj', `/CN=${n}`)
    this.#ssl('x509', '-req', '-in', `${n}.csr`, '-CA', `${ca}.crt`, '-CAkey', `${ca}.key`, '-set_serial', String(1000 + this.#n), '-days', '1', '-out', `${n}.crt`, '-extfile', `${n}.ext`)
    return { cert: fs.readFileSync(path.join(this.#dir, `${n}.crt`), 'utf8'), key: fs.readFileSync(path.join(this.#dir, `${n}.key`), 'utf8') }
  }
}

let swaps = 0
/** The files written as kubelet's AtomicWriter (and csi-driver-spiffe) does: a new directory, `..data` switched to it. */
function writeAtomic (dir: string, files: Record<string, string>): void {
  fs.mkdirSync(dir, { recursive: true })
  const ts = `..${Date.now()}_${++swaps}`
  fs.mkdirSync(path.join(dir, ts))
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(dir, ts, name), text, { mode: 0o600 })
  let old: string | null = null
  try { old = fs.readlinkSync(path.join(dir, '..data')) } catch {}
  fs.symlinkSync(ts, path.join(dir, '..data_tmp'))
  fs.renameSync(path.join(dir, '..data_tmp'), path.join(dir, '..data'))
  for (const name of Object.keys(files)) if (!fs.existsSync(path.join(dir, name))) fs.symlinkSync(path.join('..data', name), path.join(dir, name))
  if (old !== null) fs.rmSync(path.join(dir, old), { recursive: true, force: true })
}

function hasOpenssl (): boolean {
  try { execFileSync('openssl', ['version'], { stdio: 'ignore' }); return true } catch { return false }
}

async function ready (adminPort: number, signal?: AbortSignal): Promise<void> {
  let ok = false
  const poll = async (): Promise<void> => {
    ok = await new Promise<boolean>((resolve) => {
      http.get({ host: '127.0.0.1', port: adminPort, path: '/readyz', timeout: 500 }, (r) => { r.resume(); resolve(r.statusCode === 200) }).on('error', () => { resolve(false) })
    })
  }
  const deadline = Date.now() + 20_000
  while (!ok && Date.now() < deadline) { await poll(); if (!ok) await sleep(100, signal) }
  if (!ok) throw new Error(`a doorman of the mTLS part did not get ready (admin port ${adminPort})`)
}

/** The serial of the certificate a new TLS connection to `port` is shown, or '' when the handshake fails. */
async function presented (port: number, client: Leaf, ca: string): Promise<string> {
  return await new Promise((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port, ...client, ca, servername: 'orders', checkServerIdentity: () => undefined }, () => {
      resolve(s.getPeerX509Certificate()?.serialNumber ?? '')
      s.end()
    })
    s.on('error', () => { resolve('') })
  })
}

/** Whether a request over mTLS with `client` is answered (false: the connection was refused or cut). */
async function answered (port: number, client: Leaf | null, ca: string): Promise<boolean> {
  return await new Promise((resolve) => {
    const onRes = (r: http.IncomingMessage): void => { r.resume(); r.on('end', () => { resolve(true) }) }
    const req = client === null
      ? http.get({ host: '127.0.0.1', port, path: '/', agent: false, timeout: 3000 }, onRes)
      : https.get({ host: '127.0.0.1', port, path: '/', agent: false, timeout: 3000, ...client, ca, servername: 'orders', checkServerIdentity: () => undefined }, onRes)
    req.on('timeout', () => { req.destroy() })
    req.on('error', () => { resolve(false) })
  })
}

export async function runMtls (o: { plan: MtlsPlan, logDir: string, signal?: AbortSignal, onProgress?: (note: string) => void }): Promise<MtlsRun> {
  const run: MtlsRun = { skipped: null, sent: 0, ok: 0, failed: 0, consumerId: CONSUMER_ID, xfcc: '', rotation: null, refused: { plaintext: false, otherCa: false } }
  if (!hasOpenssl()) return { ...run, skipped: 'openssl is not installed (it makes the certificates of this part)' }
  const base = path.join(o.logDir, '..', 'mtls')
  fs.rmSync(base, { recursive: true, force: true })
  fs.mkdirSync(path.join(base, 'pki'), { recursive: true })
  const certs = new Certs(path.join(base, 'pki'))
  const ca = certs.ca('mesh-ca')
  certs.ca('other-ca')
  const providerA = certs.leaf('mesh-ca', PROVIDER_ID)
  const providerB = certs.leaf('mesh-ca', PROVIDER_ID)
  const consumer = certs.leaf('mesh-ca', CONSUMER_ID)
  const stranger = certs.leaf('other-ca', CONSUMER_ID)
  const providerDir = path.join(base, 'orders-identity')
  const consumerDir = path.join(base, 'frontend-identity')
  writeAtomic(providerDir, { 'tls.crt': providerA.cert, 'tls.key': providerA.key, 'ca.crt': ca.cert })
  writeAtomic(consumerDir, { 'tls.crt': consumer.cert, 'tls.key': consumer.key, 'ca.crt': ca.cert })
  fs.mkdirSync(path.join(base, 'registry'))
  const registry = pathToFileURL(path.join(base, 'registry')).href
  const logDir = path.join(o.logDir, 'mtls')

  // The provider's app answers with the caller it was told of.
  const app = http.createServer((req, res) => {
    req.resume()
    res.end(String(req.headers['x-forwarded-client-cert'] ?? ''))
  })
  const procs: ChildProcess[] = []
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4 })
  try {
    await new Promise<void>((resolve) => { app.listen(0, '127.0.0.1', resolve) })
    const appPort = (app.address() as net.AddressInfo).port
    const p = { inbound: await freePort(), admin: await freePort() }
    const c = { inbound: await freePort(), admin: await freePort(), outbound: await freePort() }
    const common = { DOORMAN_REGISTRY: registry, DOORMAN_MTLS: 'strict', DOORMAN_WARMUP: '0', DOORMAN_APP_CHECK_INTERVAL: '200ms', DOORMAN_DRAIN_DELAY: '0s', DOORMAN_DRAIN_QUIET: '100ms' }
    procs.push(startDoorman({ name: 'orders', appPort, inboundPort: p.inbound, adminPort: p.admin, logDir, env: { ...common, DOORMAN_SERVICE: 'orders', DOORMAN_TLS_DIR: providerDir } }))
    procs.push(startDoorman({ name: 'frontend', appPort, inboundPort: c.inbound, adminPort: c.admin, outboundPort: c.outbound, logDir, env: { ...common, DOORMAN_SERVICE: 'frontend', DOORMAN_TLS_DIR: consumerDir } }))
    await ready(p.admin, o.signal)
    await ready(c.admin, o.signal)
    run.rotation = { before: new X509Certificate(providerA.cert).serialNumber, after: '', presentedAfterMs: -1 }

    // Steady load through the consumer's outbound lane, by service name, on keep-alive connections.
    let running = true
    const one = async (): Promise<void> => await new Promise((resolve) => {
      run.sent++
      const req = http.get({ host: '127.0.0.1', port: c.outbound, path: '/', headers: { host: 'orders' }, agent, timeout: 5000 }, (r) => {
        let body = ''
        r.on('data', (d: Buffer) => { body += d.toString() })
        r.on('end', () => { if (r.statusCode === 200) { run.ok++; run.xfcc = body } else run.failed++; resolve() })
      })
      req.on('timeout', () => { req.destroy() })
      req.on('error', () => { run.failed++; resolve() })
    })
    const loop = (async () => {
      const gap = 1000 / o.plan.rate
      const pending = new Set<Promise<void>>()
      while (running) {
        const q = one().finally(() => { pending.delete(q) })
        pending.add(q)
        await sleep(gap, o.signal)
      }
      await Promise.all(pending)
    })()
    await sleep(o.plan.rotateAtMs, o.signal)
    o.onProgress?.('rotating the provider\'s certificate (..data symlink swapped)')
    const rotatedAt = Date.now()
    writeAtomic(providerDir, { 'tls.crt': providerB.cert, 'tls.key': providerB.key, 'ca.crt': ca.cert })
    const want = new X509Certificate(providerB.cert).serialNumber
    while (Date.now() - rotatedAt < 10_000) {
      if (await presented(p.inbound, consumer, ca.cert) === want) { run.rotation = { ...run.rotation, after: want, presentedAfterMs: Date.now() - rotatedAt }; break }
      await sleep(50, o.signal)
    }
    run.refused.plaintext = !await answered(p.inbound, null, ca.cert)
    run.refused.otherCa = !await answered(p.inbound, stranger, ca.cert)
    await sleep(Math.max(0, o.plan.durationMs - (Date.now() - rotatedAt) - o.plan.rotateAtMs), o.signal)
    running = false
    await loop
  } finally {
    agent.destroy()
    for (const proc of procs) if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM')
    await Promise.all(procs.map(async (proc) => { if (proc.exitCode === null && proc.signalCode === null) await new Promise((resolve) => proc.once('exit', resolve)) }))
    await new Promise((resolve) => { app.close(resolve); app.closeAllConnections() })
  }
  return run
}
