// The checker section: one `doorman checker` replica's round time over 10,000 registered instances in a private
// redis-server (10 services × 1,000 instances, one cluster each: the seed's big cluster, ten times over). The
// instances are registry entries spread over ten loopback listeners (bench/lanes.ts), so the probes, the decisions and
// the registry writes are all real while the machine runs three processes, not 10,000.
//
// Phases, one checker process throughout: all healthy; one listener in ten answering 503 (10% failing, all ejected);
// healthy again (recoveries); five in ten answering 503 (50% failing: ejections up to the 33% threshold, then every
// round's failures held in by it); healthy again; one listener in ten holding requests without an answer (10% hung:
// each of those probes waits the full timeout). The hung phase is run again with more probe concurrency.
import { spawn, fork, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, rmSync } from 'node:fs'
import net from 'node:net'
import http from 'node:http'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import type { Options, Section, Check } from './section.js'
import { CLI, ROOT, cpuMicros, fmt, freePort, get, median, othersShare, sleep, table, until } from './lib.js'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const SERVICES = 10
const PER_SERVICE = 1000
const LANES = 10
const INTERVAL_MS = 3000
const TIMEOUT_MS = 1000

// The registry module is loaded from the build at run time (the bench compiles on its own).
interface Registry {
  waitUp: (ms: number) => Promise<boolean>
  register: (inst: Record<string, unknown>, ttl: number) => Promise<void>
  close: () => Promise<void>
}
interface RegistryModule {
  RedisRegistry: new (o: { target: unknown, commandTimeout?: number }) => Registry
  parseRegistryUrl: (url: string) => unknown
}

export interface Round { round: number, durationMs: number, targets: number, failed: number, ejected: number, recovered: number, error?: string }
interface State { lastRound: Round | null, targets: number }

const procs = new Set<ChildProcess>()
function track (p: ChildProcess): ChildProcess {
  procs.add(p)
  p.once('exit', () => { procs.delete(p) })
  return p
}
process.on('exit', () => { for (const p of procs) p.kill('SIGKILL') })

async function ping (port: number): Promise<boolean> {
  return await new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1')
    s.once('data', (d) => { s.destroy(); resolve(d.toString().startsWith('+PONG')) })
    s.once('error', () => { resolve(false) })
    s.write('*1\r\n$4\r\nPING\r\n')
  })
}

export async function startRedis (): Promise<{ url: string, proc: ChildProcess, dir: string }> {
  const port = await freePort()
  const dir = mkdtempSync(path.join(os.tmpdir(), 'doorman-bench-redis-'))
  const proc = track(spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' }))
  await until('redis-server', async () => await ping(port), 10_000, () => proc.exitCode !== null ? 'redis-server exited (is it installed?)' : null)
  return { url: `redis://127.0.0.1:${port}`, proc, dir }
}

export async function startLanes (count = LANES): Promise<{ proc: ChildProcess, ports: number[], set: (index: number, mode: 'ok' | 'sick' | 'silent') => Promise<void> }> {
  const proc = track(fork(path.join(HERE, 'lanes.js'), [], { env: { ...process.env, BENCH_LANES: String(count) }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }))
  const exited = once(proc, 'exit').then(() => { throw new Error('bench/lanes.js exited') })
  const [msg] = await Promise.race([once(proc, 'message'), exited]) as [{ ports: number[] }]
  exited.catch(() => {})
  return {
    proc,
    ports: msg.ports,
    set: async (index, mode) => { proc.send({ index, mode }); await once(proc, 'message') }
  }
}

async function register (url: string, ports: number[]): Promise<void> {
  const mod = await import(pathToFileURL(path.join(ROOT, 'dist', 'registry', 'index.js')).href) as RegistryModule
  const reg = new mod.RedisRegistry({ target: mod.parseRegistryUrl(url), commandTimeout: 10_000 })
  try {
    if (!await reg.waitUp(5000)) throw new Error('bench redis unreachable')
    const now = Date.now()
    const all: Array<Record<string, unknown>> = []
    for (let s = 0; s < SERVICES; s++) {
      for (let i = 0; i < PER_SERVICE; i++) {
        const n = s * PER_SERVICE + i
        all.push({
          id: `i-${s}-${i}`,
          service: `bench-${s}`,
          cluster: 'default',
          zone: '',
          address: `127.0.0.1:${10_000 + n}`,
          adminPort: ports[n % ports.length],
          startedAt: now,
          registeredAt: now,
          warmup: { window: 0, aggression: 1, minWeight: 10, progress: 1 },
          weight: 100,
          state: 'up',
          ejected: false,
          updatedAt: now,
          rev: 0
        })
      }
    }
    for (let i = 0; i < all.length; i += 500) await Promise.all(all.slice(i, i + 500).map(async (x) => { await reg.register(x, 3_600_000) }))
  } finally {
    await reg.close()
  }
}

export interface Checker { proc: ChildProcess, admin: number, stop: () => Promise<void> }

/** Starts `doorman checker` (3 s interval, 1 s timeout) with `env` on top; resolves once its first round is done. */
export async function startChecker (url: string, concurrency: number, env: Record<string, string> = {}): Promise<Checker> {
  const admin = await freePort()
  const proc = track(spawn(process.execPath, [CLI, 'checker'], {
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '/tmp',
      DOORMAN_REGISTRY: url,
      DOORMAN_ADMIN_PORT: String(admin),
      DOORMAN_BIND_HOST: '127.0.0.1',
      DOORMAN_LOG_LEVEL: 'error',
      DOORMAN_CHECK_INTERVAL: `${INTERVAL_MS}ms`,
      DOORMAN_CHECK_TIMEOUT: `${TIMEOUT_MS}ms`,
      DOORMAN_CHECK_CONCURRENCY: String(concurrency),
      ...env
    },
    stdio: ['ignore', 'inherit', 'inherit']
  }))
  await until('checker /readyz', async () => (await get(admin, '/readyz', 2000)).status === 200, 120_000,
    () => proc.exitCode !== null ? `checker exited with code ${String(proc.exitCode)}` : null)
  return {
    proc,
    admin,
    stop: async () => {
      if (proc.exitCode !== null) return
      proc.kill('SIGTERM')
      await once(proc, 'exit')
    }
  }
}

export async function state (admin: number): Promise<State> {
  return await new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port: admin, path: '/state', timeout: 5000 }, (res) => {
      let body = ''
      res.on('data', (c: Buffer) => { body += c.toString() })
      res.on('end', () => { try { resolve(JSON.parse(body) as State) } catch (err) { reject(err) } })
    }).on('error', reject)
  })
}

/** Collects the next `n` completed rounds (and the checker's CPU over them). */
async function rounds (c: Checker, n: number): Promise<{ rounds: Round[], cpu: number }> {
  const start = (await state(c.admin)).lastRound?.round ?? 0
  const seen = new Map<number, Round>()
  const cpu0 = cpuMicros(c.proc.pid as number)
  const t0 = performance.now()
  while (seen.size < n) {
    const r = (await state(c.admin)).lastRound
    if (r !== null && r.round > start && !seen.has(r.round)) seen.set(r.round, r)
    if (c.proc.exitCode !== null) throw new Error('the checker exited')
    await sleep(100)
  }
  const cpu = (cpuMicros(c.proc.pid as number) - cpu0) / ((performance.now() - t0) * 1000)
  return { rounds: [...seen.values()].sort((a, b) => a.round - b.round), cpu }
}

export const checkerSection: Section = {
  name: 'checker',
  title: `Checker round time over ${SERVICES * PER_SERVICE} instances (one replica)`,
  async run (opts: Options): Promise<Check[]> {
    const redis = await startRedis()
    const lanes = await startLanes()
    const rows: string[][] = []
    const results = new Map<string, Round[]>()
    let checker: Checker | null = null
    try {
      const t0 = performance.now()
      await register(redis.url, lanes.ports)
      console.log(`registered ${SERVICES * PER_SERVICE} instances (${SERVICES} services × ${PER_SERVICE}, one cluster each) on ${LANES} loopback listeners in ${fmt((performance.now() - t0) / 1000, 1)} s`)
      const measured = Math.max(2, opts.rounds)
      const phase = async (name: string, concurrency: number, n: number): Promise<void> => {
        if (checker === null) throw new Error('no checker')
        const own = [checker.proc.pid, redis.proc.pid, lanes.proc.pid, process.pid] as number[]
        const { result: { rounds: rs, cpu }, others } = await othersShare(own, async () => await rounds(checker as Checker, n))
        results.set(name, rs)
        const ms = rs.map((r) => r.durationMs)
        const probesPerSec = rs.reduce((a, r) => a + r.targets, 0) / (ms.reduce((a, b) => a + b, 0) / 1000)
        rows.push([name, String(concurrency), String(rs.length), fmt(median(ms)), fmt(Math.max(...ms)), fmt(probesPerSec), String(rs.reduce((a, r) => a + r.failed, 0)),
          String(rs.reduce((a, r) => a + r.ejected, 0)), String(rs.reduce((a, r) => a + r.recovered, 0)), fmt(100 * cpu), fmt(100 * others)])
      }
      checker = await startChecker(redis.url, 200)
      await rounds(checker, 1) // the first round opens the watches
      await phase('all healthy', 200, measured)
      await lanes.set(0, 'sick')
      // Ejections start at the third failing round; the rounds after it are the steady state (threshold reached).
      await phase('10% answer 503', 200, measured + 3)
      await lanes.set(0, 'ok')
      await phase('recovering', 200, 3)
      // Half failing: 330 of each cluster's 500 failing instances ejected, the other 170 held in by the threshold.
      for (let i = 0; i < LANES / 2; i++) await lanes.set(i, 'sick')
      await phase('50% answer 503', 200, measured + 3)
      for (let i = 0; i < LANES / 2; i++) await lanes.set(i, 'ok')
      await phase('recovering', 200, 3)
      await lanes.set(0, 'silent')
      await phase('10% hung (timeouts)', 200, measured + 1)
      await checker.stop()
      checker = await startChecker(redis.url, 1000)
      await rounds(checker, 1)
      await phase('10% hung (timeouts)', 1000, measured)
    } finally {
      if (checker !== null) await checker.stop()
      lanes.proc.kill()
      redis.proc.kill('SIGKILL')
      rmSync(redis.dir, { recursive: true, force: true })
    }
    console.log(`\ninterval ${INTERVAL_MS} ms, timeout ${TIMEOUT_MS} ms, 3 failures eject, 2 successes recover, threshold 33% (floor(1000 × 33%) = 330 per cluster)`)
    console.log('\n' + table(['phase', 'concurrency', 'rounds', 'round p50 ms', 'round max ms', 'probes/s', 'failed', 'ejected', 'recovered', 'checker CPU %', 'others %'], rows, 1))
    console.log('(checker CPU: percent of one core; others: the share of the machine other processes used meanwhile)')
    const healthy = (results.get('all healthy') ?? []).map((r) => r.durationMs)
    const sick = (results.get('10% answer 503') ?? []).map((r) => r.durationMs)
    const half = (results.get('50% answer 503') ?? []).map((r) => r.durationMs)
    return [
      { what: `round ≤ 3 s over ${SERVICES * PER_SERVICE} healthy instances (median)`, value: median(healthy), ok: (v) => v <= 3000, unit: 'ms' },
      { what: 'round ≤ 3 s with 10% failing, through their ejection (slowest)', value: Math.max(...sick), ok: (v) => v <= 3000, unit: 'ms' },
      { what: 'round ≤ 3 s with 50% failing, held at the 33% threshold (slowest)', value: Math.max(...half), ok: (v) => v <= 3000, unit: 'ms' }
    ]
  }
}
