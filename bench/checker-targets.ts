// The checker-targets section: one `doorman checker` replica over 5,000 targets of one cluster listed in a targets file
// (DOORMAN_CHECK_TARGETS: no sidecar, an `http` check of their own), each a loopback listener of its own (bench/
// lanes.ts, in four processes of 1,250 listeners), so every probe is a real request to a distinct address. The baseline, in the same run: the same 5,000
// listeners registered as sidecars' registry records (the lane's /readyz probe, today's path). Printed: round times
// against the 3 s interval, and the checker's CPU per probe, file targets over the baseline as a ratio.
//
// Phases: baseline (registry instances) healthy; file targets healthy; one listener in ten answering 503 (their
// ejection, up to the 33% threshold); healthy again (recoveries).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import type { Options, Section, Check } from './section.js'
import { ROOT, cpuMicros, fmt, median, othersShare, sleep, table } from './lib.js'
import { startChecker, startLanes, startRedis, state, type Checker, type Round } from './checker.js'

const TARGETS = 5000
/** The stand-in targets' processes: 5,000 machines are not one process, so neither are their stand-ins. */
const LANE_PROCS = 4
// As startChecker (bench/checker.ts) runs the checker.
const INTERVAL_MS = 3000
const TIMEOUT_MS = 1000


interface Registry {
  waitUp: (ms: number) => Promise<boolean>
  register: (inst: Record<string, unknown>, ttl: number) => Promise<void>
  close: () => Promise<void>
}
interface RegistryModule {
  RedisRegistry: new (o: { target: unknown, commandTimeout?: number }) => Registry
  parseRegistryUrl: (url: string) => unknown
}

async function redisCommand (url: string, ...args: string[]): Promise<string> {
  const port = Number(new URL(url).port)
  return await new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1')
    s.once('data', (d) => { s.destroy(); resolve(d.toString()) })
    s.once('error', reject)
    s.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`)
  })
}

async function registerBaseline (url: string, ports: number[]): Promise<void> {
  const mod = await import(pathToFileURL(path.join(ROOT, 'dist', 'registry', 'index.js')).href) as RegistryModule
  const reg = new mod.RedisRegistry({ target: mod.parseRegistryUrl(url), commandTimeout: 10_000 })
  try {
    if (!await reg.waitUp(5000)) throw new Error('bench redis unreachable')
    const now = Date.now()
    const all = ports.map((p, i) => ({
      id: `i-${i}`,
      service: 'bench-registry',
      cluster: 'default',
      zone: '',
      address: `127.0.0.1:${p}`,
      adminPort: p,
      startedAt: now,
      registeredAt: now,
      warmup: { window: 0, aggression: 1, minWeight: 10, progress: 1 },
      weight: 100,
      state: 'up',
      ejected: false,
      updatedAt: now,
      rev: 0
    }))
    for (let i = 0; i < all.length; i += 500) await Promise.all(all.slice(i, i + 500).map(async (x) => { await reg.register(x, 3_600_000) }))
  } finally {
    await reg.close()
  }
}

/** The next `n` completed rounds, and the checker's CPU (core-seconds) over them. */
async function rounds (c: Checker, n: number): Promise<{ rounds: Round[], cpuSeconds: number, wallSeconds: number }> {
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
  return { rounds: [...seen.values()].sort((a, b) => a.round - b.round), cpuSeconds: (cpuMicros(c.proc.pid as number) - cpu0) / 1e6, wallSeconds: (performance.now() - t0) / 1000 }
}

export const checkerTargetsSection: Section = {
  name: 'checker-targets',
  title: `Checker over ${TARGETS} file targets in one cluster (one replica), against the same listeners as registry instances`,
  async run (opts: Options): Promise<Check[]> {
    const redis = await startRedis()
    const parts = await Promise.all(Array.from({ length: LANE_PROCS }, async () => await startLanes(TARGETS / LANE_PROCS)))
    const per = TARGETS / LANE_PROCS
    const lanes = {
      ports: parts.flatMap((p) => p.ports),
      pids: parts.map((p) => p.proc.pid as number),
      set: async (i: number, mode: 'ok' | 'sick' | 'silent') => { await parts[Math.floor(i / per)].set(i % per, mode) },
      kill: () => { for (const p of parts) p.proc.kill() }
    }
    const dir = mkdtempSync(path.join(os.tmpdir(), 'doorman-bench-targets-'))
    const file = path.join(dir, 'targets.yaml')
    const rows: string[][] = []
    const perProbe = new Map<string, number>()
    const results = new Map<string, Round[]>()
    let checker: Checker | null = null
    const measured = Math.max(3, opts.rounds)
    const phase = async (name: string, n: number): Promise<void> => {
      if (checker === null) throw new Error('no checker')
      const own = [checker.proc.pid, redis.proc.pid, ...lanes.pids, process.pid] as number[]
      const { result: { rounds: rs, cpuSeconds, wallSeconds }, others } = await othersShare(own, async () => await rounds(checker as Checker, n))
      results.set(name, rs)
      const ms = rs.map((r) => r.durationMs)
      // CPU per probe: the checker's CPU over the measured rounds (between the first and last round's end) per probe.
      const probes = rs.reduce((a, r) => a + r.targets, 0)
      const us = cpuSeconds * 1e6 / probes
      perProbe.set(name, us)
      rows.push([name, String(rs.length), fmt(median(ms)), fmt(Math.max(...ms)), String(rs[rs.length - 1]?.targets ?? 0), String(rs.reduce((a, r) => a + r.failed, 0)),
        String(rs.reduce((a, r) => a + r.ejected, 0)), String(rs.reduce((a, r) => a + r.recovered, 0)), fmt(100 * cpuSeconds / wallSeconds), fmt(us, 1), fmt(100 * others)])
    }
    try {
      // Baseline: the listeners as sidecars' records, probed on their lane's /readyz.
      await registerBaseline(redis.url, lanes.ports)
      checker = await startChecker(redis.url, 200, { DOORMAN_REGISTRY_TTL: '30s' })
      await rounds(checker, 1)
      await phase('baseline: registry instances, healthy', measured)
      await checker.stop()
      checker = null
      await redisCommand(redis.url, 'FLUSHALL')

      // The same listeners as file targets with an http check of their own.
      writeFileSync(file, [
        'services:',
        '  - name: bench-file',
        '    org: bench',
        '    env: prod',
        '    check: {type: http, path: /readyz, expect: "200-299"}',
        '    instances:',
        ...lanes.ports.map((p) => `      - "127.0.0.1:${p}"`),
        ''
      ].join('\n'))
      const t0 = performance.now()
      checker = await startChecker(redis.url, 200, { DOORMAN_REGISTRY_TTL: '30s', DOORMAN_CHECK_TARGETS: file })
      console.log(`first round (publishes ${TARGETS} records, probes them) done ${fmt((performance.now() - t0) / 1000, 1)} s after start`)
      await rounds(checker, 1)
      await phase('file targets, healthy', measured)
      for (let i = 0; i < TARGETS / 10; i++) await lanes.set(i, 'sick')
      await phase('file targets, 10% answer 503', measured + 3)
      for (let i = 0; i < TARGETS / 10; i++) await lanes.set(i, 'ok')
      await phase('file targets, recovering', 3)
    } finally {
      if (checker !== null) await checker.stop()
      lanes.kill()
      redis.proc.kill('SIGKILL')
      rmSync(redis.dir, { recursive: true, force: true })
      rmSync(dir, { recursive: true, force: true })
    }
    console.log(`\ninterval ${INTERVAL_MS} ms, timeout ${TIMEOUT_MS} ms, concurrency 200, 3 failures eject, 2 successes recover, threshold 33%`)
    console.log('\n' + table(['phase', 'rounds', 'round p50 ms', 'round max ms', 'targets', 'failed', 'ejected', 'recovered', 'checker CPU %', 'CPU µs/probe', 'others %'], rows, 1))
    const base = perProbe.get('baseline: registry instances, healthy') ?? NaN
    const file1 = perProbe.get('file targets, healthy') ?? NaN
    console.log(`CPU per probe, file targets / registry instances (healthy): ${fmt(file1 / base, 2)} ×`)
    console.log('(checker CPU: percent of one core; others: the share of the machine other processes used meanwhile)')
    const healthy = (results.get('file targets, healthy') ?? []).map((r) => r.durationMs)
    const sick = (results.get('file targets, 10% answer 503') ?? []).map((r) => r.durationMs)
    return [
      { what: `round ≤ 3 s over ${TARGETS} healthy file targets in one cluster (slowest)`, value: Math.max(...healthy), ok: (v) => v <= INTERVAL_MS, unit: 'ms' },
      { what: 'round ≤ 3 s with 10% of them failing, through their ejection (slowest)', value: Math.max(...sick), ok: (v) => v <= INTERVAL_MS, unit: 'ms' },
      { what: 'checker CPU per probe, file targets (healthy)', value: file1, ok: (v) => Number.isFinite(v), unit: 'µs' }
    ]
  }
}
