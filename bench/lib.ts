// Shared pieces of the benchmark: child processes (the app, the baseline proxy, doorman, the load generator), the
// CPU time of a process from /proc, free ports, percentiles and table formatting.
import { fork, spawn, execFileSync, type ChildProcess } from 'node:child_process'
import { readFileSync, existsSync, mkdirSync, rmdirSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import http from 'node:http'
import { once } from 'node:events'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { LoadRequest, LoadResult } from './load.js'

export type { LoadResult } from './load.js'

const HERE = path.dirname(fileURLToPath(import.meta.url))
export const ROOT = path.resolve(HERE, '../..')
export const CLI = path.join(ROOT, 'dist', 'cli.js')

const children = new Set<ChildProcess>()

/** Kills every child this run started (called at exit and on interrupt). */
export function killAll (): void {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
  children.clear()
}
process.on('exit', killAll)
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => { killAll(); process.exit(130) })

function track (c: ChildProcess): ChildProcess {
  children.add(c)
  c.once('exit', () => { children.delete(c) })
  return c
}

/**
 * Forks one of the bench's own scripts and waits for its first IPC message (`{ port }`); in `cgroup` when given
 * (started through it, so the process sees the limit from its first instruction).
 */
async function forkScript (script: string, env: Record<string, string> = {}, cgroup?: MemoryCgroup): Promise<{ proc: ChildProcess, port: number, constrainedMemory?: number }> {
  const stdio: ['ignore', 'inherit', 'inherit', 'ipc'] = ['ignore', 'inherit', 'inherit', 'ipc']
  const argv = [process.execPath, path.join(HERE, script)]
  const [cmd, ...args] = cgroup?.wrap(argv) ?? argv
  const proc = track(cgroup === undefined ? fork(argv[1], [], { env: { ...process.env, ...env }, stdio }) : spawn(cmd, args, { env: { ...process.env, ...env }, stdio }))
  const [msg] = await once(proc, 'message') as [{ port: number, constrainedMemory?: number }]
  return { proc, ...msg }
}

export async function startApp (cgroup?: MemoryCgroup): Promise<{ proc: ChildProcess, port: number }> { return await forkScript('app.js', {}, cgroup) }

/** The floor for doorman's design: a bare http.Server on the main thread and another in a worker thread. */
export async function startFloor (cgroup?: MemoryCgroup, env: Record<string, string> = {}): Promise<{ proc: ChildProcess, port: number, constrainedMemory?: number }> { return await forkScript('floor.js', env, cgroup) }

export async function startHttpProxy (appPort: number): Promise<{ proc: ChildProcess, port: number }> {
  return await forkScript('http-proxy.js', { BENCH_APP_PORT: String(appPort) })
}

/** A byte relay with no HTTP (the floor for any proxy in Node here). */
export async function startTcpRelay (appPort: number): Promise<{ proc: ChildProcess, port: number }> {
  return await forkScript('tcp-relay.js', { BENCH_APP_PORT: String(appPort) })
}

export async function freePort (): Promise<number> {
  const s = net.createServer().listen(0, '127.0.0.1')
  await once(s, 'listening')
  const { port } = s.address() as net.AddressInfo
  await new Promise((resolve) => s.close(resolve))
  return port
}

export interface Sample { status: number, ms: number }

/** What the prober process (prober.ts) is asked over IPC, and what it answers: every sample by target label. */
export interface ProbeTarget { label: string, port: number, path: string }
export interface ProbeRequest { targets: ProbeTarget[], everyMs: number, seconds?: number, count?: number }
export type ProbeSamples = Record<string, Sample[]>

/** One GET on a fresh connection (as kubelet probes), timed from before connect to the end of the body. */
export async function get (port: number, urlPath: string, timeoutMs = 5000): Promise<Sample> {
  const t0 = process.hrtime.bigint()
  return await new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: urlPath, agent: false, timeout: timeoutMs }, (res) => {
      res.resume()
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, ms: Number(process.hrtime.bigint() - t0) / 1e6 }) })
      res.on('error', reject)
    })
    req.on('timeout', () => { req.destroy(new Error(`GET ${urlPath} timed out`)) })
    req.on('error', reject)
  })
}

/**
 * One probe as kubelet sends it: a new connection, `GET path`, `Connection: close`, read to the end. Timed from
 * before connect to the last byte, with a raw socket so the client adds as little as it can.
 */
export async function probe (port: number, urlPath: string, timeoutMs = 5000): Promise<Sample> {
  const t0 = process.hrtime.bigint()
  return await new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1')
    let head = ''
    const timer = setTimeout(() => { s.destroy(new Error(`probe ${urlPath} timed out`)) }, timeoutMs)
    s.setNoDelay(true)
    s.on('connect', () => { s.write(`GET ${urlPath} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: kube-probe/1.30\r\nConnection: close\r\n\r\n`) })
    s.on('data', (c: Buffer) => { if (head.length < 16) head += c.toString('latin1') })
    s.on('end', () => {
      clearTimeout(timer)
      s.destroy()
      resolve({ status: Number(head.slice(9, 12)), ms: Number(process.hrtime.bigint() - t0) / 1e6 })
    })
    s.on('error', (err) => { clearTimeout(timer); reject(err) })
  })
}

export async function sleep (ms: number): Promise<void> { await new Promise((resolve) => setTimeout(resolve, ms)) }

/** Polls until `fn` resolves true, or throws after the deadline. */
export async function until (what: string, fn: () => Promise<boolean>, timeoutMs = 15_000, fatal: () => string | null = () => null): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const why = fatal()
    if (why !== null) throw new Error(`${why} (waiting for ${what})`)
    try { if (await fn()) return } catch {}
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(50)
  }
}

export interface Doorman { proc: ChildProcess, port: number, admin: number, stop: () => Promise<void> }

/**
 * Starts `doorman run` (the built CLI) in front of the app and waits for /readyz. `nodeArgs` go to node (e.g.
 * `--cpu-prof`); `stop()` sends SIGTERM and waits for the exit, so profiles get written. `cli`: another build's
 * dist/cli.js (the A/B section's baseline).
 */
export async function startDoorman (appPort: number, env: Record<string, string>, nodeArgs: string[] = [], cgroup?: MemoryCgroup, cli = CLI): Promise<Doorman> {
  const port = await freePort()
  const admin = await freePort()
  const argv = [process.execPath, ...nodeArgs, cli, 'run']
  const [cmd, ...args] = cgroup?.wrap(argv) ?? argv
  const proc = track(spawn(cmd, args, {
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '/tmp',
      DOORMAN_BIND_HOST: '127.0.0.1',
      DOORMAN_APP_PORT: String(appPort),
      DOORMAN_INBOUND_PORT: String(port),
      DOORMAN_ADMIN_PORT: String(admin),
      DOORMAN_OUTBOUND_PORT: '0',
      DOORMAN_LOG_LEVEL: 'warn',
      DOORMAN_WARMUP: '0s',
      DOORMAN_DRAIN_DELAY: '0s',
      DOORMAN_DRAIN_QUIET: '10ms',
      DOORMAN_DRAIN_TIMEOUT: '2s',
      ...env
    },
    stdio: ['ignore', 'inherit', 'inherit']
  }))
  const exited = once(proc, 'exit')
  await until('doorman /readyz', async () => (await get(admin, '/readyz', 1000)).status === 200, 15_000,
    () => proc.exitCode !== null ? `doorman exited with code ${String(proc.exitCode)}` : null)
  const stop = async (): Promise<void> => {
    if (proc.exitCode !== null || proc.signalCode !== null) return
    proc.kill('SIGTERM')
    const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000)
    await exited
    clearTimeout(timer)
  }
  return { proc, port, admin, stop }
}

/**
 * The load generator: one long-lived autocannon process, asked over IPC. `nice` lowers its scheduling priority (it
 * stands for clients on other machines, which would not take CPU from the machine under test).
 */
export class Load {
  readonly #proc = track(fork(path.join(HERE, 'load.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }))
  constructor (opts: { nice?: number } = {}) {
    if (opts.nice !== undefined) os.setPriority(this.#proc.pid as number, opts.nice)
  }

  get pid (): number { return this.#proc.pid as number }
  async run (req: LoadRequest): Promise<LoadResult> {
    this.#proc.send(req)
    const [msg] = await once(this.#proc, 'message') as [LoadResult & { error?: string }]
    if (msg.error !== undefined) throw new Error(`autocannon: ${msg.error}`)
    return msg
  }

  close (): void { this.#proc.disconnect() }
}

/**
 * The prober (kubelet's stand-in) in a process of its own, at a raised scheduling priority where the system allows
 * it: kubelet runs outside the pods' CPU share, so its own wait for a CPU is not the probed server's latency.
 */
export class Prober {
  readonly #proc = track(fork(path.join(HERE, 'prober.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }))
  /** The prober's nice value (-10 when raising it was allowed, else 0). */
  readonly nice: number
  get pid (): number { return this.#proc.pid as number }
  constructor () {
    let nice = -10
    try { os.setPriority(this.#proc.pid as number, nice) } catch { nice = 0 }
    this.nice = nice
  }

  async run (req: ProbeRequest): Promise<ProbeSamples> {
    this.#proc.send(req)
    const [msg] = await once(this.#proc, 'message') as [ProbeSamples & { error?: string }]
    if (typeof msg.error === 'string') throw new Error(`prober: ${msg.error}`)
    return msg
  }

  close (): void { this.#proc.disconnect() }
}

let clockTicks = 0
/**
 * The process's CPU time (all its threads, user + system) in microseconds, or one thread's when `tid` is given (the
 * main thread's tid is the pid); NaN where /proc is missing.
 */
export function cpuMicros (pid: number, tid?: number): number {
  const file = tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`
  if (!existsSync(file)) return NaN
  if (clockTicks === 0) {
    try { clockTicks = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100 } catch { clockTicks = 100 }
  }
  const stat = readFileSync(file, 'latin1')
  // Fields after the command name (which may hold spaces) start at field 3 (state); utime is 14, stime 15.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(f[11]) + Number(f[12])) * 1e6 / clockTicks
}

/** A process's memory from /proc/<pid>/status, in bytes: resident, of it anonymous and file-backed, and its peak. */
export interface ProcMemory { rss: number, anon: number, file: number, peak: number }

export function procMemory (pid: number): ProcMemory {
  const status = readFileSync(`/proc/${pid}/status`, 'latin1')
  const kb = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024
  return { rss: kb('VmRSS'), anon: kb('RssAnon'), file: kb('RssFile'), peak: kb('VmHWM') }
}

/**
 * A memory cgroup of its own with a limit, as a pod's container has: a child of this process's own cgroup (cgroup v1
 * memory controller, or v2 where the parent delegates `memory`). Node reads the limit at start-up (libuv's
 * constrained memory) and V8 sizes its heap from it. `create` returns null where no such group can be made (not
 * root, no delegation, not Linux).
 */
export class MemoryCgroup {
  readonly #dir: string
  readonly #v2: boolean
  private constructor (dir: string, v2: boolean) { this.#dir = dir; this.#v2 = v2 }

  static create (name: string, limitBytes: number): MemoryCgroup | null {
    try {
      const lines = readFileSync('/proc/self/cgroup', 'latin1').split('\n')
      const v1 = lines.find((l) => l.split(':')[1]?.split(',').includes('memory'))
      const v2 = lines.find((l) => l.startsWith('0::'))
      const dir = v1 !== undefined
        ? path.join('/sys/fs/cgroup/memory', v1.split(':')[2], name)
        : path.join('/sys/fs/cgroup', (v2 as string).slice(3), name)
      mkdirSync(dir)
      const group = new MemoryCgroup(dir, v1 === undefined)
      try {
        writeFileSync(path.join(dir, group.#v2 ? 'memory.max' : 'memory.limit_in_bytes'), String(limitBytes))
      } catch (err) {
        group.close()
        throw err
      }
      return group
    } catch {
      return null
    }
  }

  /** A command line that enters the group, then runs `argv` in its place. */
  wrap (argv: string[]): string[] {
    return ['/bin/sh', '-c', `echo $$ > '${this.#dir}/cgroup.procs' && exec "$0" "$@"`, ...argv]
  }

  /** What the group is charged now: what its memory limit counts. */
  usage (): number {
    return Number(readFileSync(path.join(this.#dir, this.#v2 ? 'memory.current' : 'memory.usage_in_bytes'), 'latin1'))
  }

  /** Removes the group (once its processes have exited). */
  close (): void {
    try { rmdirSync(this.#dir) } catch {}
  }
}

/** Busy and total CPU time of the whole machine (all cores) in microseconds, from /proc/stat; NaN where missing. */
export function machineMicros (): { busy: number, total: number } {
  if (!existsSync('/proc/stat')) return { busy: NaN, total: NaN }
  cpuMicros(process.pid) // reads CLK_TCK once
  const f = readFileSync('/proc/stat', 'latin1').split('\n')[0].trim().split(/\s+/).slice(1).map(Number)
  // user nice system idle iowait irq softirq steal …: idle and iowait are not busy.
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0)
  const busy = total - f[3] - f[4]
  return { busy: busy * 1e6 / clockTicks, total: total * 1e6 / clockTicks }
}

/**
 * Measures how much of the machine other processes used while `fn` ran: the machine's busy time minus the CPU
 * time of `pids` (this run's own processes), as a share of the machine's capacity.
 */
export async function othersShare<T> (pids: number[], fn: () => Promise<T>): Promise<{ result: T, others: number }> {
  const own = (): number => pids.reduce((sum, pid) => sum + cpuMicros(pid), 0)
  const m0 = machineMicros()
  const o0 = own()
  const result = await fn()
  const m1 = machineMicros()
  const o1 = own()
  return { result, others: Math.max(0, (m1.busy - m0.busy) - (o1 - o0)) / (m1.total - m0.total) }
}

/**
 * The order of the targets in run `i`: rotated by one each run, and reversed every other cycle, so none always runs
 * first or right after the same other one.
 */
export function rotation<T> (targets: readonly T[], i: number): T[] {
  const n = targets.length
  const rotated = targets.map((_, k) => targets[(k + i) % n])
  return Math.floor(i / n) % 2 === 1 ? rotated.reverse() : rotated
}

export function median (xs: number[]): number {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2
}

/** Nearest-rank percentile (p in 0..100). */
export function percentile (xs: number[], p: number): number {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(p / 100 * s.length) - 1))]
}

/** A Markdown table (readable as plain text too). Right-aligns every column but the first `left` ones. */
export function table (head: string[], rows: string[][], left = 1): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)))
  const line = (r: string[]): string => '| ' + r.map((c, i) => i < left ? c.padEnd(w[i]) : c.padStart(w[i])).join(' | ') + ' |'
  const rule = '|' + w.map((n, i) => i < left ? ` ${'-'.repeat(n)} ` : ` ${'-'.repeat(n - 1)}: `).join('|') + '|'
  return [line(head), rule, ...rows.map(line)].join('\n')
}

export function fmt (n: number, digits = 0): string { return Number.isFinite(n) ? n.toFixed(digits) : 'n/a' }

/** One line on the machine and its load, for the record. */
export function machine (): string {
  const cpus = os.cpus()
  const load = os.loadavg().map((l) => l.toFixed(2)).join(' ')
  return `${cpus.length} × ${cpus[0]?.model.trim() ?? 'unknown CPU'}, ${os.platform()} ${os.release()}, node ${process.version}, load average ${load}`
}

/** One target's totals over the measured rounds: requests, seconds, the proxy's CPU, latency per round. */
export class Cell {
  requests = 0
  seconds = 0
  cpu = 0
  p50: number[] = []
  p99: number[] = []
  bad = 0
  add (r: LoadResult, cpu: number): void {
    this.requests += r.requests
    this.seconds += r.seconds
    this.cpu += cpu
    this.p50.push(r.p50)
    this.p99.push(r.p99)
    this.bad += r.non2xx + r.errors + r.timeouts
  }

  get rps (): number { return this.requests / this.seconds }
  get cpuPerRequest (): number { return this.cpu / this.requests }
}

/**
 * The start of an nginx.conf for the bench's nginx anchors: one process in the foreground (no master, one worker's
 * work), its pid and temp paths under `dir`, errors only, and the `http {` block opened for the caller's servers.
 */
export function nginxHead (dir: string): string {
  return `worker_processes 1;
daemon off;
master_process off;
pid ${dir}/nginx.pid;
error_log stderr error;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;`
}
