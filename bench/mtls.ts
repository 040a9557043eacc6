// The mTLS section: two proxies in a row (a consumer's side and a provider's side) in front of the bench app, over
// mutual TLS and over plaintext between them, doorman → doorman beside nginx → nginx (nginx-light:
// `proxy_ssl_certificate` on the consumer's side, `ssl_verify_client` on the provider's), in one run, in alternation:
//  - keep-alive: autocannon on keep-alive connections into the consumer's side, which keeps its connections to the
//    provider's side (TLS handshakes amortized, what most traffic between sidecars looks like);
//  - a new connection per request: a client making a fresh connection (and so a full mTLS handshake, client
//    certificate verified) for every request, straight into the provider's side.
// Reported as proxy CPU per request (both proxies' processes, from /proc) and its ratios. Certificates are made with
// openssl in a temporary directory: a CA and two workload certificates with SPIFFE IDs (and a DNS name, which nginx's
// proxy_ssl_verify checks; doorman checks the SPIFFE ID against the registry). Beside them the floor: a bare Node
// byte relay pair (bench/tls-relay.ts), whose mTLS minus plaintext is what Node's TLS alone adds to a request.
import { fork, spawn, execFileSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, mkdirSync, writeFileSync, readFileSync, rmSync, copyFileSync } from 'node:fs'
import { once } from 'node:events'
import os from 'node:os'
import path from 'node:path'
import net from 'node:net'
import { fileURLToPath } from 'node:url'
import type { Options, Section, Check } from './section.js'
import { startApp, startDoorman, Load, cpuMicros, freePort, until, rotation, table, fmt, nginxHead, type Doorman } from './lib.js'
import type { TlsLoadRequest, TlsLoadResult } from './tls-load.js'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const TARGETS = ['doorman plaintext', 'doorman mTLS', 'nginx plaintext', 'nginx mTLS', 'node relay plaintext', 'node relay mTLS'] as const
type Target = typeof TARGETS[number]
const MODES = ['keep-alive', 'new connection'] as const
type Mode = typeof MODES[number]
const CONNECTIONS: Record<Mode, number> = { 'keep-alive': 32, 'new connection': 8 }
const LIMIT = 512

function which (cmd: string): string | null {
  try { return execFileSync('sh', ['-c', `command -v ${cmd}`]).toString().trim() || null } catch { return null }
}

const children = new Set<ChildProcess>()
process.on('exit', () => { for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL') })

interface Pair { crt: string, key: string, dir: string }

/** A CA and two workload pairs, each in a directory laid out as csi-driver-spiffe mounts it. */
function makeCerts (dir: string): { ca: string, provider: Pair, consumer: Pair } {
  const ssl = (...args: string[]): void => { execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] }) }
  ssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '1',
    '-subj', '/CN=bench-ca', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign')
  const leaf = (name: string, id: string): Pair => {
    writeFileSync(path.join(dir, `${name}.ext`), `basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=URI:${id},DNS:${name}\n`)
    ssl('req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`)
    ssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '1', '-out', `${name}.crt`, '-extfile', `${name}.ext`)
    const d = path.join(dir, `${name}-tls`)
    mkdirSync(d)
    copyFileSync(path.join(dir, `${name}.crt`), path.join(d, 'tls.crt'))
    copyFileSync(path.join(dir, `${name}.key`), path.join(d, 'tls.key'))
    copyFileSync(path.join(dir, 'ca.crt'), path.join(d, 'ca.crt'))
    return { crt: path.join(dir, `${name}.crt`), key: path.join(dir, `${name}.key`), dir: d }
  }
  return { ca: path.join(dir, 'ca.crt'), provider: leaf('bench-app', 'spiffe://bench.local/ns/bench/sa/app'), consumer: leaf('bench-client', 'spiffe://bench.local/ns/bench/sa/client') }
}

interface Nginx { proc: ChildProcess, front: { plain: number, tls: number }, back: { plain: number, tls: number } }

/** One nginx process (no master, one worker) holding both sides of both chains. */
async function startNginx (bin: string, appPort: number, dir: string, certs: ReturnType<typeof makeCerts>): Promise<Nginx> {
  const p = { fp: await freePort(), ft: await freePort(), bp: await freePort(), bt: await freePort() }
  const conf = path.join(dir, 'nginx.conf')
  const pass = 'proxy_http_version 1.1; proxy_set_header Connection "";'
  writeFileSync(conf, `
${nginxHead(dir)}
  keepalive_requests 1000000;
  upstream app { server 127.0.0.1:${appPort}; keepalive 128; keepalive_requests 1000000; }
  upstream back_plain { server 127.0.0.1:${p.bp}; keepalive 128; keepalive_requests 1000000; }
  upstream back_tls { server 127.0.0.1:${p.bt}; keepalive 128; keepalive_requests 1000000; }
  # The provider's side: plaintext, and mTLS with the client certificate required and verified.
  server { listen 127.0.0.1:${p.bp}; location / { proxy_pass http://app; ${pass} } }
  server {
    listen 127.0.0.1:${p.bt} ssl;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_certificate ${certs.provider.crt};
    ssl_certificate_key ${certs.provider.key};
    ssl_client_certificate ${certs.ca};
    ssl_verify_client on;
    location / { proxy_pass http://app; ${pass} }
  }
  # The consumer's side: to the provider's side in plaintext, or over mTLS (its certificate verified, sessions reused).
  server { listen 127.0.0.1:${p.fp}; location / { proxy_pass http://back_plain; ${pass} } }
  server {
    listen 127.0.0.1:${p.ft};
    location / {
      proxy_pass https://back_tls; ${pass}
      proxy_ssl_certificate ${certs.consumer.crt};
      proxy_ssl_certificate_key ${certs.consumer.key};
      proxy_ssl_trusted_certificate ${certs.ca};
      proxy_ssl_verify on;
      proxy_ssl_name bench-app;
      proxy_ssl_session_reuse on;
      proxy_ssl_protocols TLSv1.2 TLSv1.3;
    }
  }
}
`)
  const proc = spawn(bin, ['-p', dir, '-c', conf, '-e', 'stderr'], { stdio: ['ignore', 'inherit', 'inherit'] })
  children.add(proc)
  for (const port of Object.values(p)) {
    await until('nginx listening', async () => await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => { s.destroy(); resolve(true) })
      s.on('error', () => { resolve(false) })
    }), 10_000, () => proc.exitCode !== null ? `nginx exited with code ${String(proc.exitCode)}` : null)
  }
  return { proc, front: { plain: p.fp, tls: p.ft }, back: { plain: p.bp, tls: p.bt } }
}

interface Relay { proc: ChildProcess, front: { plain: number, tls: number }, back: { plain: number, tls: number } }

/** The floor: a bare Node byte relay pair (bench/tls-relay.ts), plaintext or mTLS between its two sides. */
async function startRelay (appPort: number, certs: ReturnType<typeof makeCerts>): Promise<Relay> {
  const files = { provider: { crt: certs.provider.crt, key: certs.provider.key }, consumer: { crt: certs.consumer.crt, key: certs.consumer.key }, ca: certs.ca, servername: 'bench-app' }
  const proc = fork(path.join(HERE, 'tls-relay.js'), [], { env: { ...process.env, BENCH_APP_PORT: String(appPort), BENCH_TLS: JSON.stringify(files) }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  children.add(proc)
  const [ports] = await once(proc, 'message') as [Omit<Relay, 'proc'>]
  return { proc, ...ports }
}

interface Chain { consumer: Doorman, provider: Doorman, outbound: number, service: string }

/** A provider doorman registered as `service` and a consumer doorman whose outbound lane calls it. */
async function startChain (appPort: number, registry: string, service: string, mtls: { consumer: string, provider: string } | null, nodeArgs: string[]): Promise<Chain> {
  const common = { DOORMAN_REGISTRY: registry, DOORMAN_MAX_CONCURRENCY: String(LIMIT), DOORMAN_MAX_QUEUE: String(LIMIT), DOORMAN_REGISTRY_TTL: '15s' }
  const provider = await startDoorman(appPort, { ...common, DOORMAN_SERVICE: service, ...(mtls === null ? {} : { DOORMAN_MTLS: 'strict', DOORMAN_TLS_DIR: mtls.provider }) }, nodeArgs)
  const outbound = await freePort()
  const consumer = await startDoorman(appPort, { ...common, DOORMAN_SERVICE: `${service}-client`, DOORMAN_OUTBOUND_PORT: String(outbound), ...(mtls === null ? {} : { DOORMAN_MTLS: 'strict', DOORMAN_TLS_DIR: mtls.consumer }) }, nodeArgs)
  return { consumer, provider, outbound, service }
}

/** doorman_tls_connections_total{mode="mtls"} of a doorman: the mTLS connections it has accepted. */
async function mtlsAccepted (admin: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text()
  const m = /^doorman_tls_connections_total\{mode="mtls"\} (\d+)/m.exec(text)
  return m === null ? 0 : Number(m[1])
}

class TlsLoad {
  readonly #proc = fork(path.join(HERE, 'tls-load.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  constructor () { children.add(this.#proc); os.setPriority(this.#proc.pid as number, 5) }
  get pid (): number { return this.#proc.pid as number }
  async run (req: TlsLoadRequest): Promise<TlsLoadResult> {
    this.#proc.send(req)
    const [msg] = await once(this.#proc, 'message') as [TlsLoadResult]
    return msg
  }

  close (): void { this.#proc.disconnect() }
}

class Cell {
  requests = 0
  seconds = 0
  cpu = 0
  bad = 0
  firstError = ''
  roundCpu: number[] = []
  add (requests: number, seconds: number, cpu: number, bad: number): void {
    this.requests += requests
    this.seconds += seconds
    this.cpu += cpu
    this.bad += bad
    this.roundCpu.push(cpu / requests)
  }

  get rate (): number { return this.requests / this.seconds }
  get cpuPerRequest (): number { return this.cpu / this.requests }
}

export const mtlsSection: Section = {
  name: 'mtls',
  title: 'mTLS between two proxies: doorman → doorman over mTLS vs plaintext vs nginx → nginx',
  async run (opts: Options): Promise<Check[]> {
    const ngx = which('nginx') ?? (which('/usr/sbin/nginx') !== null ? '/usr/sbin/nginx' : null)
    if (ngx === null) throw new Error('the mtls section needs nginx on PATH; on Debian: apt-get install nginx-light')
    const dir = mkdtempSync(path.join(os.tmpdir(), 'doorman-bench-mtls-'))
    const certs = makeCerts(dir)
    const pem = { cert: readFileSync(certs.consumer.crt, 'utf8'), key: readFileSync(certs.consumer.key, 'utf8'), ca: readFileSync(certs.ca, 'utf8'), servername: 'bench-app' }
    const app = await startApp()
    const registry = `file://${path.join(dir, 'registry')}`
    const nodeArgs = opts.profileDir !== null ? ['--cpu-prof', `--cpu-prof-dir=${opts.profileDir}`] : []
    const plain = await startChain(app.port, registry, 'bench-plain', null, nodeArgs)
    const tls = await startChain(app.port, registry, 'bench-mtls', { consumer: certs.consumer.dir, provider: certs.provider.dir }, nodeArgs)
    const nginx = await startNginx(ngx, app.port, dir, certs)
    const relay = await startRelay(app.port, certs)
    const load = new Load({ nice: 5 })
    const fresh = new TlsLoad()
    const cells = new Map<string, Cell>()
    /** Each target's keep-alive rate in its first run (requests/s), which sizes its later runs. */
    const rates = new Map<Target, number>()
    /** mTLS connections the provider's side accepted during the keep-alive cells (outside the warm-up round). */
    let keepAliveHandshakes = 0
    const pidsOf = (t: Target, m: Mode): number[] => {
      const chain = t === 'doorman plaintext' ? plain : t === 'doorman mTLS' ? tls : null
      if (t.startsWith('node relay')) return [relay.proc.pid as number]
      if (chain === null) return [nginx.proc.pid as number]
      // A new connection per request goes straight into the provider's side.
      return m === 'keep-alive' ? [chain.consumer.proc.pid as number, chain.provider.proc.pid as number] : [chain.provider.proc.pid as number]
    }
    const one = async (t: Target, m: Mode, seconds: number): Promise<{ requests: number, seconds: number, bad: number, firstError: string }> => {
      if (m === 'keep-alive') {
        const chain = t === 'doorman plaintext' ? plain : t === 'doorman mTLS' ? tls : null
        const front = t.startsWith('node relay') ? relay.front : nginx.front
        const url = chain !== null ? `http://127.0.0.1:${chain.outbound}/` : `http://127.0.0.1:${t.endsWith('mTLS') ? front.tls : front.plain}/`
        const headers = chain !== null ? { host: chain.service } : undefined
        // A run cut by the clock abandons the 32 requests in flight, and a proxy closes each upstream connection whose
        // request was abandoned (HTTP/1.1 can't take one back): the next run would open them again, a handshake each
        // over mTLS. So a keep-alive run sends a number of requests (the target's rate in its first run × the seconds) and ends
        // once all are answered; a target's first run, with no rate yet, is followed by a short one that ends so.
        const known = rates.get(t)
        if (known === undefined) {
          const probe = await load.run({ url, connections: CONNECTIONS[m], duration: seconds, headers })
          rates.set(t, probe.requests / probe.seconds)
        }
        const amount = Math.max(CONNECTIONS[m], Math.round((rates.get(t) as number) * (known === undefined ? 0.5 : seconds)))
        const r = await load.run({ url, connections: CONNECTIONS[m], duration: 10 * seconds + 10, amount, headers })
        return { requests: r.requests - r.non2xx, seconds: r.seconds, bad: r.non2xx + r.errors + r.timeouts, firstError: r.non2xx + r.errors > 0 ? `${r.non2xx} non-2xx, ${r.errors} errors` : '' }
      }
      const back = t.startsWith('node relay') ? relay.back : nginx.back
      const port = t === 'doorman plaintext' ? plain.provider.port : t === 'doorman mTLS' ? tls.provider.port : t.endsWith('mTLS') ? back.tls : back.plain
      const r = await fresh.run({ port, connections: CONNECTIONS[m], duration: seconds, tls: t.endsWith('mTLS') ? pem : undefined })
      return { requests: r.requests, seconds: r.seconds, bad: r.errors, firstError: r.firstError }
    }
    try {
      // Keep-alive means connections already made: both chains are driven until a run of the mTLS one adds no
      // connection at the provider's side (a run ended by the clock, such as a target's first, leaves the consumer's
      // pool short of the connections it closed under the requests abandoned), so that the rounds measure connections
      // in use, as between two sidecars carrying steady traffic; what the rounds still add is counted below.
      process.stdout.write('  settling the doorman pools')
      for (let i = 0, grew = Infinity; i < 15 && grew > 1; i++) {
        const was = await mtlsAccepted(tls.provider.admin)
        await one('doorman mTLS', 'keep-alive', 2)
        grew = await mtlsAccepted(tls.provider.admin) - was
        await one('doorman plaintext', 'keep-alive', 2)
        process.stdout.write(` +${grew}`)
      }
      process.stdout.write('\n')
      // One mode's rounds after the other's: a new-connection round leaves hundreds of closed TLS sockets for the
      // collector, which it must not charge to the next keep-alive round.
      for (const [mi, m] of MODES.entries()) {
        for (let round = -1; round < opts.rounds; round++) {
          const warm = round < 0
          process.stdout.write(`  ${m}: ${warm ? 'warm-up round' : `round ${round + 1}/${opts.rounds}`}`)
          for (const t of rotation(TARGETS, Math.max(round, 0) + mi)) {
            const pids = pidsOf(t, m)
            const counting = m === 'keep-alive' && t === 'doorman mTLS'
            const accepted = counting ? await mtlsAccepted(tls.provider.admin) : 0
            const before = pids.reduce((n, p) => n + cpuMicros(p), 0)
            const r = await one(t, m, warm ? opts.warmup : opts.duration)
            const cpu = pids.reduce((n, p) => n + cpuMicros(p), 0) - before
            if (warm) continue
            if (counting) keepAliveHandshakes += await mtlsAccepted(tls.provider.admin) - accepted
            const k = `${m}/${t}`
            let c = cells.get(k)
            if (c === undefined) cells.set(k, c = new Cell())
            c.add(r.requests, r.seconds, cpu, r.bad)
            c.firstError ||= r.firstError
            process.stdout.write('.')
          }
          process.stdout.write('\n')
        }
      }
    } finally {
      load.close()
      fresh.close()
      nginx.proc.kill('SIGQUIT')
      relay.proc.kill()
      await Promise.all([plain.consumer.stop(), plain.provider.stop(), tls.consumer.stop(), tls.provider.stop()])
      app.proc.kill()
      rmSync(dir, { recursive: true, force: true })
    }

    const cell = (m: Mode, t: Target): Cell => cells.get(`${m}/${t}`) as Cell
    const rows: string[][] = []
    for (const m of MODES) {
      for (const t of TARGETS) {
        const c = cell(m, t)
        rows.push([m, t, fmt(c.rate), fmt(c.cpuPerRequest, 1), String(c.bad) + (c.firstError !== '' ? ` (${c.firstError})` : '')])
      }
    }
    console.log('\n' + table(['connections', 'target', 'requests/s', 'proxy CPU µs/request', 'failed'], rows, 2))
    console.log(`\n(keep-alive: ${CONNECTIONS['keep-alive']} keep-alive connections into the consumer's side, which keeps its own to the provider's side, CPU of both sides; new connection: ${CONNECTIONS['new connection']} clients each making a fresh connection per request into the provider's side, its CPU)`)
    const ratio = (a: Cell, b: Cell): string => {
      const per = a.roundCpu.map((x, i) => x / b.roundCpu[i])
      return `${fmt(a.cpuPerRequest / b.cpuPerRequest, 2)} (${fmt(Math.min(...per), 2)}–${fmt(Math.max(...per), 2)})`
    }
    const added = (m: Mode, proxy: 'doorman' | 'nginx' | 'node relay'): number => cell(m, `${proxy} mTLS`).cpuPerRequest - cell(m, `${proxy} plaintext`).cpuPerRequest
    const ratios: string[][] = MODES.map((m) => [
      m,
      ratio(cell(m, 'doorman mTLS'), cell(m, 'doorman plaintext')),
      ratio(cell(m, 'nginx mTLS'), cell(m, 'nginx plaintext')),
      ratio(cell(m, 'node relay mTLS'), cell(m, 'node relay plaintext')),
      ratio(cell(m, 'doorman mTLS'), cell(m, 'nginx mTLS')),
      `${fmt(added(m, 'doorman'), 1)} / ${fmt(added(m, 'nginx'), 1)} = ${fmt(added(m, 'doorman') / added(m, 'nginx'), 2)}`,
      fmt(added(m, 'node relay'), 1)
    ])
    console.log('\n' + table(['connections', 'doorman mTLS/plaintext', 'nginx mTLS/plaintext', 'node relay mTLS/plaintext', 'doorman mTLS/nginx mTLS', 'mTLS added µs/request, doorman / nginx', 'node relay added'], ratios, 1))
    console.log('\n(CPU per request, ratio over the whole run and its range over the rounds in brackets)')
    // The floor: what TLS alone adds to the same reads and writes in Node, against the 25 % doorman may add.
    const floor = added('keep-alive', 'node relay')
    const allowed = 0.25 * cell('keep-alive', 'doorman plaintext').cpuPerRequest
    console.log(`\nNode's floor (keep-alive): TLS adds ${fmt(floor, 1)} µs/request to a bare Node relay pair (${ratio(cell('keep-alive', 'node relay mTLS'), cell('keep-alive', 'node relay plaintext'))} × its plaintext); ` +
      `it adds ${fmt(added('keep-alive', 'doorman'), 1)} µs to doorman, whose 25 % budget is ${fmt(allowed, 1)} µs: ` +
      (floor > allowed ? 'the goal is below what Node\'s TLS allows on this machine (the floor alone exceeds it)' : 'the floor is inside the budget'))
    const ka = cell('keep-alive', 'doorman mTLS')
    console.log(`\nHandshakes on keep-alive: the provider's side accepted ${keepAliveHandshakes} mTLS connections during the doorman mTLS keep-alive cells, ` +
      `one per ${fmt(ka.requests / Math.max(keepAliveHandshakes, 1))} requests (the consumer's pool keeps its connections between cells)`)
    const checks: Check[] = [
      { what: 'mTLS: doorman → doorman CPU/request over mTLS ≤ 1.25 × plaintext (keep-alive)', value: cell('keep-alive', 'doorman mTLS').cpuPerRequest / cell('keep-alive', 'doorman plaintext').cpuPerRequest, ok: (v) => v <= 1.25 },
      { what: 'mTLS: what mTLS adds to doorman per request ≤ 2 × what it adds to nginx (a new connection per request)', value: added('new connection', 'doorman') / added('new connection', 'nginx'), ok: (v) => v <= 2 }
    ]
    const bad = [...cells.values()].reduce((n, c) => n + c.bad, 0)
    if (bad > 0) checks.push({ what: 'mTLS: no failed requests', value: bad, ok: () => false })
    return checks
  }
}
