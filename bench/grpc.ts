// The gRPC section: unary gRPC calls over HTTP/2 (h2load) direct to an h2c app (the ceiling), through a bare
// node:http2 relay (the floor for a proxy on node:http2), through nginx with
// `grpc_pass` (the native anchor) and through doorman (DOORMAN_APP_PROTOCOL=h2c), in alternation, at 50 and 200
// concurrent streams, on a 0 ms route (CPU per call) and a 20 ms route (calls/s). The proxy's CPU per call comes
// from /proc, as in the proxy section. Needs `h2load` (Debian `nghttp2-client`) and `nginx` (Debian `nginx-light`).
import { fork, spawn, execFileSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, writeFileSync, readFileSync, rmSync } from 'node:fs'
import { once } from 'node:events'
import os from 'node:os'
import path from 'node:path'
import net from 'node:net'
import { fileURLToPath } from 'node:url'
import type { Options, Section, Check } from './section.js'
import { startDoorman, cpuMicros, machineMicros, freePort, until, median, rotation, table, fmt, nginxHead } from './lib.js'

const HERE = path.dirname(fileURLToPath(import.meta.url))

interface Scenario { id: string, route: string, path: string, streams: number }
/** Streams are spread over CLIENTS connections (h2load `-c`), `streams / CLIENTS` each (`-m`). */
const CLIENTS = 5
const SCENARIOS: Scenario[] = [
  { id: '0ms/50', route: '0 ms', path: '/bench.Bench/Fast', streams: 50 },
  { id: '0ms/200', route: '0 ms', path: '/bench.Bench/Fast', streams: 200 },
  { id: '20ms/50', route: '20 ms', path: '/bench.Bench/Slow', streams: 50 },
  { id: '20ms/200', route: '20 ms', path: '/bench.Bench/Slow', streams: 200 }
]
const TARGETS = ['direct', 'nginx', 'h2 relay', 'doorman'] as const
type Target = typeof TARGETS[number]
/** The order of the targets in run `i` (rotation: none always first). */
function order (i: number): Target[] { return rotation(TARGETS, i) }
/** doorman's limit here: above the largest stream count, so nothing queues or sheds. */
const LIMIT = 512

export function which (cmd: string): string | null {
  try { return execFileSync('sh', ['-c', `command -v ${cmd}`]).toString().trim() || null } catch { return null }
}

/** CPU time (user + system, µs) of this process's children that have exited and been reaped (h2load runs). */
function reapedChildrenMicros (): number {
  const stat = readFileSync('/proc/self/stat', 'latin1')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // cutime is field 16, cstime 17: index 13 and 14 after the state field (3).
  const ticks = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100
  return (Number(f[13]) + Number(f[14])) * 1e6 / ticks
}

const children = new Set<ChildProcess>()
function stopAll (): void { for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL') }
process.on('exit', stopAll)

export async function startGrpcApp (script = 'grpc-app.js', env: Record<string, string> = {}): Promise<{ proc: ChildProcess, port: number }> {
  const proc = fork(path.join(HERE, script), [], { env: { ...process.env, ...env }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  children.add(proc)
  const [msg] = await once(proc, 'message') as [{ port: number }]
  return { proc, port: msg.port }
}

/**
 * nginx in the foreground, one process (no master, one worker's work), listening h2c and passing every call to the
 * app with `grpc_pass` over a keepalive pool: its usual shape in front of a gRPC service.
 */
async function startNginx (bin: string, appPort: number, dir: string): Promise<{ proc: ChildProcess, port: number }> {
  const port = await freePort()
  const conf = path.join(dir, 'nginx.conf')
  writeFileSync(conf, `
${nginxHead(dir)}
  upstream app {
    server 127.0.0.1:${appPort};
    keepalive 512;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:${port} http2;
    http2_max_concurrent_streams 1024;
    keepalive_requests 1000000;
    location / { grpc_pass grpc://app; }
  }
}
`)
  const proc = spawn(bin, ['-p', dir, '-c', conf, '-e', 'stderr'], { stdio: ['ignore', 'inherit', 'inherit'] })
  children.add(proc)
  await until('nginx listening', async () => await new Promise<boolean>((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => { s.destroy(); resolve(true) })
    s.on('error', () => { resolve(false) })
  }), 10_000, () => proc.exitCode !== null ? `nginx exited with code ${String(proc.exitCode)}` : null)
  return { proc, port }
}

/**
 * Writes the unary call's request body into `dir` for h2load's `-d`: one length-prefixed protobuf message (field 1, a
 * 16-byte string). Returns its path.
 */
export function writeGrpcCall (dir: string): string {
  const msg = Buffer.concat([Buffer.from([0x0a, 16]), Buffer.from('bench call 00001')])
  const body = path.join(dir, 'call.bin')
  writeFileSync(body, Buffer.concat([Buffer.from([0, 0, 0, 0, msg.length]), msg]))
  return body
}

export interface H2Result { calls: number, seconds: number, failed: number, non2xx: number, meanMs: number }

/** One h2load run: unary calls (a POST of `body`) for `seconds`, from `CLIENTS` connections. */
export async function h2load (bin: string, url: string, streams: number, body: string, seconds: number): Promise<H2Result> {
  const args = ['-c', String(CLIENTS), '-m', String(Math.max(1, Math.round(streams / CLIENTS))), '-t', '1',
    '-D', String(seconds), '-d', body,
    '-H', 'content-type: application/grpc', '-H', 'te: trailers', url]
  const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  proc.stdout.on('data', (c: Buffer) => { out += c.toString() })
  const [code] = await once(proc, 'exit') as [number | null]
  if (code !== 0 || !/ [1-9]\d* succeeded/.test(out)) throw new Error(`h2load against ${url} exited with ${String(code)} and no call succeeded:\n${out}`)
  const num = (re: RegExp): number => Number(re.exec(out)?.[1] ?? NaN)
  const done = num(/(\d+) succeeded/)
  const secs = num(/finished in ([\d.]+)s/)
  const meanRaw = /time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)/.exec(out)
  const meanMs = meanRaw === null ? NaN : Number(meanRaw[1]) * (meanRaw[2] === 'us' ? 1e-3 : meanRaw[2] === 's' ? 1e3 : 1)
  return { calls: num(/status codes: (\d+) 2xx/), seconds: secs, failed: num(/(\d+) failed/) + num(/(\d+) errored/) + num(/(\d+) timeout/) + (Number.isFinite(done) ? 0 : 1), non2xx: num(/2xx, (\d+) 3xx/) + num(/3xx, (\d+) 4xx/) + num(/4xx, (\d+) 5xx/), meanMs }
}

class GrpcCell {
  calls = 0
  seconds = 0
  cpu = 0
  bad = 0
  mean: number[] = []
  others: number[] = []
  roundRate: number[] = []
  roundCpu: number[] = []
  add (r: H2Result, cpu: number, others: number): void {
    this.calls += r.calls
    this.seconds += r.seconds
    this.cpu += cpu
    this.bad += r.failed + r.non2xx
    this.mean.push(r.meanMs)
    this.others.push(others)
    this.roundRate.push(r.calls / r.seconds)
    this.roundCpu.push(cpu / r.calls)
  }

  get rate (): number { return this.calls / this.seconds }
  get cpuPerCall (): number { return this.cpu / this.calls }
}

export const grpcSection: Section = {
  name: 'grpc',
  title: 'gRPC over HTTP/2: direct vs nginx grpc_pass vs doorman (h2c app)',
  async run (opts: Options): Promise<Check[]> {
    const h2 = which('h2load')
    const ngx = which('nginx') ?? (which('/usr/sbin/nginx') !== null ? '/usr/sbin/nginx' : null)
    if (h2 === null || ngx === null) {
      throw new Error(`the grpc section needs h2load and nginx on PATH (missing: ${[h2 === null ? 'h2load' : '', ngx === null ? 'nginx' : ''].filter(Boolean).join(', ')}); on Debian: apt-get install nghttp2-client nginx-light`)
    }
    const dir = mkdtempSync(path.join(os.tmpdir(), 'doorman-bench-grpc-'))
    const body = writeGrpcCall(dir)

    const app = await startGrpcApp()
    const nginx = await startNginx(ngx, app.port, dir)
    const relay = await startGrpcApp('h2-relay.js', { BENCH_APP_PORT: String(app.port) })
    const nodeArgs = opts.profileDir !== null ? ['--cpu-prof', `--cpu-prof-dir=${opts.profileDir}`] : []
    const doorman = await startDoorman(app.port, { DOORMAN_APP_PROTOCOL: 'h2c', DOORMAN_MAX_CONCURRENCY: String(LIMIT), DOORMAN_MAX_QUEUE: String(LIMIT) }, nodeArgs)
    const ports: Record<Target, number> = { direct: app.port, nginx: nginx.port, 'h2 relay': relay.port, doorman: doorman.port }
    const pids: Record<Target, number | undefined> = { direct: undefined, nginx: nginx.proc.pid, 'h2 relay': relay.proc.pid, doorman: doorman.proc.pid }
    const own = [process.pid, app.proc.pid, nginx.proc.pid, relay.proc.pid, doorman.proc.pid].filter((p): p is number => p !== undefined)
    const cells = new Map<string, GrpcCell>()
    const key = (s: Scenario, t: Target): string => `${s.id}/${t}`
    const scenarios = SCENARIOS
    try {
      for (let round = -1; round < opts.rounds; round++) {
        const warm = round < 0
        process.stdout.write(warm ? '  warm-up round' : `  round ${round + 1}/${opts.rounds}`)
        for (const s of scenarios) {
          for (const t of order(Math.max(round, 0) + scenarios.indexOf(s))) {
            const pid = pids[t]
            const m0 = machineMicros()
            const o0 = own.reduce((n, p) => n + cpuMicros(p), 0) + reapedChildrenMicros()
            const before = pid === undefined ? NaN : cpuMicros(pid)
            const r = await h2load(h2, `http://127.0.0.1:${ports[t]}${s.path}`, s.streams, body, warm ? opts.warmup : opts.duration)
            const cpu = pid === undefined ? NaN : cpuMicros(pid) - before
            const m1 = machineMicros()
            const o1 = own.reduce((n, p) => n + cpuMicros(p), 0) + reapedChildrenMicros()
            const others = Math.max(0, (m1.busy - m0.busy) - (o1 - o0)) / (m1.total - m0.total)
            if (warm) continue
            let c = cells.get(key(s, t))
            if (c === undefined) cells.set(key(s, t), c = new GrpcCell())
            c.add(r, cpu, others)
          }
          process.stdout.write('.')
        }
        process.stdout.write('\n')
      }
    } finally {
      await doorman.stop()
      nginx.proc.kill('SIGQUIT')
      relay.proc.kill()
      app.proc.kill()
      rmSync(dir, { recursive: true, force: true })
    }

    const rows: string[][] = []
    for (const s of scenarios) {
      for (const t of TARGETS) {
        const c = cells.get(key(s, t)) as GrpcCell
        rows.push([s.route, String(s.streams), t, fmt(c.rate), fmt(median(c.mean), 1), t === 'direct' ? '—' : fmt(c.cpuPerCall, 1), String(c.bad), fmt(100 * median(c.others))])
      }
    }
    console.log('\n' + table(['route', 'streams', 'target', 'calls/s', 'mean ms', 'proxy CPU µs/call', 'failed/non-2xx', 'other load %'], rows, 3))
    console.log(`\n(${CLIENTS} HTTP/2 connections, streams spread over them; other load: the share of the machine's CPU used by processes outside this run, median over rounds)`)

    const ratio = (whole: number, a: number[], b: number[]): string => {
      const per = a.map((x, i) => x / b[i])
      return `${fmt(whole, 2)} (${fmt(Math.min(...per), 2)}–${fmt(Math.max(...per), 2)})`
    }
    const ratios: string[][] = []
    for (const s of scenarios) {
      const d = cells.get(key(s, 'direct')) as GrpcCell
      const n = cells.get(key(s, 'nginx')) as GrpcCell
      const m = cells.get(key(s, 'doorman')) as GrpcCell
      const r = cells.get(key(s, 'h2 relay')) as GrpcCell
      ratios.push([s.route, String(s.streams), ratio(m.cpuPerCall / n.cpuPerCall, m.roundCpu, n.roundCpu), ratio(r.cpuPerCall / n.cpuPerCall, r.roundCpu, n.roundCpu), ratio(m.rate / d.rate, m.roundRate, d.roundRate), ratio(n.rate / d.rate, n.roundRate, d.roundRate), ratio(r.rate / d.rate, r.roundRate, d.roundRate)])
    }
    console.log('\n' + table(['route', 'streams', 'doorman/nginx CPU per call', 'h2 relay/nginx CPU per call', 'doorman/direct calls/s', 'nginx/direct calls/s', 'h2 relay/direct calls/s'], ratios, 2))
    console.log('\n(ratio over the whole run, and its range over the rounds in brackets; nginx/direct is what a native proxy reaches on this machine in the same run, the h2 relay columns the floor for a proxy on node:http2)')

    const cell = (id: string, t: Target): GrpcCell => cells.get(`${id}/${t}`) as GrpcCell
    const checks: Check[] = []
    for (const id of ['0ms/50', '0ms/200']) {
      checks.push({ what: `gRPC: doorman CPU/call ≤ 3 × nginx grpc_pass (0 ms, ${id.split('/')[1]} streams)`, value: cell(id, 'doorman').cpuPerCall / cell(id, 'nginx').cpuPerCall, ok: (v) => v <= 3 })
    }
    for (const id of ['20ms/50', '20ms/200']) {
      checks.push({ what: `gRPC: doorman calls/s ≥ 0.9 × direct (20 ms, ${id.split('/')[1]} streams)`, value: cell(id, 'doorman').rate / cell(id, 'direct').rate, ok: (v) => v >= 0.9 })
    }
    const bad = [...cells.values()].reduce((n, c) => n + c.bad, 0)
    if (bad > 0) checks.push({ what: 'gRPC: no failed or non-2xx calls', value: bad, ok: () => false })
    return checks
  }
}
