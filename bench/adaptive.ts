// The adaptive limit's benchmark, on seed 001's app (test/fixtures/executor-app.mjs: a 200-worker server hiding a
// 20-slot executor, 50 ms ± 20% per request): open-loop traffic at 1.5 × the app's capacity from callers that give
// up after 1 s, through doorman with static limits too low (5), right (20) and too high (100, the default), and with
// DOORMAN_LIMIT_MODE=adaptive; the app alone as the baseline. Goodput is what callers get in time: 200s within 1 s.
//
// `npm run bench -- --only adaptive` runs it as a section of the main bench; `node dist/bench/adaptive.js` runs it
// alone (after `npm run bench` or `tsc -p tsconfig.json && tsc -p bench/tsconfig.json`), with `--sim` for the
// parameter study in simulated time that docs/limits.md quotes.
import http from 'node:http'
import path from 'node:path'
import { once } from 'node:events'
import { spawn } from 'node:child_process'
import { parseArgs } from 'node:util'
import { fileURLToPath, pathToFileURL } from 'node:url'
import type { Options, Section, Check } from './section.js'
import { startDoorman, get, sleep, percentile, median, table, fmt, machine, killAll, ROOT } from './lib.js'
import { SimClock, simulate, settled, seeded, type AppModel, type SimLimiter, type Timers } from './adaptive-model.js'

const APP = path.join(ROOT, 'test', 'fixtures', 'executor-app.mjs')
const SLOTS = 20
const WORK_MS = 50
/** The app's capacity in requests per second, and the offered load. */
const CAPACITY = SLOTS * 1000 / WORK_MS
const RATE = 1.5 * CAPACITY
/** Callers give up after this long (and the app, like the seed's executor, still runs what they abandoned). */
const CALLER_TIMEOUT_MS = 1000

export interface AdaptiveBenchOptions {
  /** Seconds of load before measuring (the adaptive limit converges, queues fill). */
  warmup: number
  /** Seconds measured. */
  seconds: number
}

export interface AdaptiveRow {
  config: string
  /** Median limit in force while measured (from /state), NaN without doorman. */
  limit: number
  /** 200s within the caller's timeout, per second. */
  goodput: number
  /** Latency of those answers, ms. */
  p50: number
  p99: number
  /** Shares of requests shed by doorman (503), timed out at the caller, failed otherwise. */
  shed: number
  timedOut: number
  failed: number
  /** The app's own time-in-queue p99, ms. */
  appQueueP99: number
}

export interface AdaptiveResult {
  rows: AdaptiveRow[]
  best: AdaptiveRow
  adaptive: AdaptiveRow
  goodputRatio: number
  p99Ratio: number
}

interface Tally { ok: number[], shed: number, timedOut: number, failed: number, sent: number }

/** Open-loop load: `rate` requests per second whatever happens to earlier ones, each abandoned after `timeoutMs`. */
async function openLoop (port: number, rate: number, seconds: number, timeoutMs: number, measure: () => boolean): Promise<Tally> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 2000 })
  const tally: Tally = { ok: [], shed: 0, timedOut: 0, failed: 0, sent: 0 }
  const pending = new Set<Promise<void>>()
  const one = (): void => {
    const counted = measure()
    const started = performance.now()
    if (counted) tally.sent++
    const p = new Promise<void>((resolve) => {
      const req = http.get({ host: '127.0.0.1', port, path: '/work', agent }, (res) => {
        res.resume()
        res.on('end', () => {
          const ms = performance.now() - started
          if (counted) {
            if (res.statusCode === 200 && ms <= timeoutMs) tally.ok.push(ms)
            else if (res.statusCode === 503 && res.headers['x-doorman-shed'] !== undefined) tally.shed++
            else if (res.statusCode === 200) tally.timedOut++
            else tally.failed++
          }
          resolve()
        })
        res.on('error', () => { resolve() })
      })
      req.setTimeout(timeoutMs, () => { if (counted) tally.timedOut++; req.destroy(); resolve() })
      req.on('error', () => { resolve() })
    })
    pending.add(p)
    void p.then(() => pending.delete(p))
  }
  const start = performance.now()
  let sent = 0
  while (performance.now() - start < seconds * 1000) {
    const due = Math.floor((performance.now() - start) / 1000 * rate)
    for (; sent < due; sent++) one()
    await sleep(2)
  }
  await Promise.all(pending)
  agent.destroy()
  return tally
}

async function startExecutorApp (): Promise<{ port: number, stop: () => void }> {
  const proc = spawn(process.execPath, [APP], { env: { SLOTS: String(SLOTS), WORK_MS: String(WORK_MS), JITTER: '0.2', PATH: process.env.PATH ?? '' }, stdio: ['ignore', 'pipe', 'inherit'] })
  const kill = (): void => { if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL') }
  process.once('exit', kill)
  const [chunk] = await once(proc.stdout, 'data') as [Buffer]
  const port = (JSON.parse(chunk.toString().split('\n')[0]) as { port: number }).port
  return { port, stop: () => { process.off('exit', kill); kill() } }
}

async function getJson<T> (port: number, p: string): Promise<T> {
  return await new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: p, agent: false }, (res) => {
      let body = ''
      res.on('data', (c: Buffer) => { body += c.toString() })
      res.on('end', () => { try { resolve(JSON.parse(body) as T) } catch (err) { reject(err) } })
    }).on('error', reject)
  })
}

async function runConfig (config: string, env: Record<string, string> | null, o: AdaptiveBenchOptions): Promise<AdaptiveRow> {
  const app = await startExecutorApp()
  const doorman = env === null ? null : await startDoorman(app.port, { DOORMAN_MAX_QUEUE: '100', DOORMAN_QUEUE_TIMEOUT: '1s', ...env })
  try {
    const port = doorman?.port ?? app.port
    const started = performance.now()
    let measuring = false
    const limits: number[] = []
    const poll = (async () => {
      while (performance.now() - started < (o.warmup + o.seconds) * 1000) {
        await sleep(250)
        if (!measuring && performance.now() - started >= o.warmup * 1000) {
          measuring = true
          await get(app.port, '/stats/reset')
        }
        if (measuring && doorman !== null) limits.push((await getJson<{ limit: number }>(doorman.admin, '/state')).limit)
      }
    })()
    const tally = await openLoop(port, RATE, o.warmup + o.seconds, CALLER_TIMEOUT_MS, () => measuring)
    await poll
    const stats = await getJson<{ queue: { p99: number } }>(app.port, '/stats')
    const n = Math.max(1, tally.sent)
    return {
      config,
      limit: doorman === null ? NaN : median(limits),
      goodput: tally.ok.length / o.seconds,
      p50: percentile(tally.ok, 50),
      p99: percentile(tally.ok, 99),
      shed: tally.shed / n,
      timedOut: tally.timedOut / n,
      failed: tally.failed / n,
      appQueueP99: stats.queue.p99
    }
  } finally {
    await doorman?.stop()
    app.stop()
  }
}

/** Runs the comparison, prints its table and ratios, and returns the results. */
export async function runAdaptiveBench (o: AdaptiveBenchOptions = { warmup: 6, seconds: 15 }): Promise<AdaptiveResult> {
  const configs: Array<[string, Record<string, string> | null]> = [
    ['app alone', null],
    ['static 5 (too low)', { DOORMAN_MAX_CONCURRENCY: '5' }],
    ['static 20 (right)', { DOORMAN_MAX_CONCURRENCY: '20' }],
    ['static 100 (too high)', { DOORMAN_MAX_CONCURRENCY: '100' }],
    ['adaptive (4..100)', { DOORMAN_LIMIT_MODE: 'adaptive', DOORMAN_LIMIT_MIN: '4', DOORMAN_MAX_CONCURRENCY: '100' }]
  ]
  const rows: AdaptiveRow[] = []
  for (const [name, env] of configs) rows.push(await runConfig(name, env, o))
  const statics = rows.filter((r) => r.config.startsWith('static'))
  const best = statics.reduce((a, b) => b.goodput > a.goodput * 1.02 || (b.goodput >= a.goodput * 0.98 && b.p99 < a.p99) ? b : a)
  const adaptive = rows[rows.length - 1]
  const pct = (x: number): string => fmt(100 * x, 1)
  console.log(`${fmt(RATE)} req/s offered (1.5 × the app's ${fmt(CAPACITY)}), callers give up after ${CALLER_TIMEOUT_MS} ms; ${o.warmup} s of load, then ${o.seconds} s measured`)
  console.log('\n' + table(
    ['config', 'limit', 'goodput/s', 'p50 ms', 'p99 ms', 'shed %', 'timed out %', 'failed %', 'app queue p99 ms'],
    rows.map((r) => [r.config, fmt(r.limit), fmt(r.goodput), fmt(r.p50), fmt(r.p99), pct(r.shed), pct(r.timedOut), pct(r.failed), fmt(r.appQueueP99)])
  ))
  const result: AdaptiveResult = { rows, best, adaptive, goodputRatio: adaptive.goodput / best.goodput, p99Ratio: adaptive.p99 / best.p99 }
  console.log(`\nbest static: ${best.config}; adaptive / best static: goodput ${fmt(result.goodputRatio, 3)}, p99 ${fmt(result.p99Ratio, 3)}`)
  return result
}

export const adaptiveSection: Section = {
  name: 'adaptive',
  title: 'Adaptive limit vs static limits on an app with a hidden 20-slot executor',
  async run (opts: Options): Promise<Check[]> {
    const r = await runAdaptiveBench({ warmup: Math.max(6, opts.warmup), seconds: Math.max(10, opts.duration * 5) })
    return [
      { what: 'adaptive goodput ≥ 90% of the best static limit\'s', value: r.goodputRatio, ok: (v) => v >= 0.9, unit: '×' },
      { what: 'adaptive p99 ≤ 1.5 × the best static limit\'s', value: r.p99Ratio, ok: (v) => v <= 1.5, unit: '×' }
    ]
  }
}

// --- The parameter study in simulated time (`--sim`) ---

interface LimiterModule { Limiter: new (o: { algorithm: unknown, maxQueue: number, queueTimeout: number, timers: Timers }) => SimLimiter }
interface GradientModule { GradientLimit: new (o: Record<string, unknown>) => { readonly limit: number, readonly readings: { probing: boolean } } }

/** For each parameter set: the share of settling checks met (Done-when of issue 9) and the mean settled level, per latency spread. */
export async function runSimStudy (seeds = 12): Promise<void> {
  const { Limiter } = await import(pathToFileURL(path.join(ROOT, 'dist', 'limiter', 'index.js')).href) as LimiterModule
  const { GradientLimit } = await import(pathToFileURL(path.join(ROOT, 'dist', 'limiter', 'gradient.js')).href) as GradientModule
  const variants: Array<[string, Record<string, unknown>]> = [
    ['defaults (tolerance 1.05, smoothing 1, window 500 ms)', {}],
    ['tolerance 1.1', { tolerance: 1.1 }],
    ['tolerance 1.25 (Envoy buffer 25%)', { tolerance: 1.25 }],
    ['tolerance 1.5 (Gradient2 rttTolerance)', { tolerance: 1.5 }],
    ['smoothing 0.5', { smoothing: 0.5 }],
    ['smoothing 0.2 (Gradient2)', { smoothing: 0.2 }],
    ['window 250 ms', { windowMs: 250 }],
    ['window 1000 ms (Netflix WindowedLimit)', { windowMs: 1000 }]
  ]
  const spreads: Array<[string, AppModel['spread']]> = [['±25%', 0.5], ['±50%', 1], ['exponential', 'exp']]
  const scenarios: Array<[string, number, (t: number) => number, number, Array<[number, number, number]>]> = [
    ['from 200', 200, () => 20, 45, [[30_000, 45_000, 20]]],
    ['from 4', 4, () => 20, 45, [[30_000, 45_000, 20]]],
    ['20→10→40', 4, (ms) => ms < 40_000 ? 20 : ms < 80_000 ? 10 : 40, 120, [[30_000, 40_000, 20], [70_000, 80_000, 10], [110_000, 120_000, 40]]]
  ]
  const rows: string[][] = []
  for (const [name, params] of variants) {
    const row = [name]
    for (const [, spread] of spreads) {
      let met = 0
      let checks = 0
      const levels: number[] = []
      for (let seed = 1; seed <= seeds; seed++) {
        for (const [, initial, capacity, seconds, windows] of scenarios) {
          const clock = new SimClock()
          const algorithm = new GradientLimit({ min: 4, max: 200, initial, random: seeded(seed + 1000), ...params })
          const limiter = new Limiter({ algorithm, maxQueue: 200, queueTimeout: 1000, timers: clock })
          const r = simulate({ clock, limiter, app: { capacity, serviceMs: 50, spread }, clients: 100, seconds, seed, probing: () => algorithm.readings.probing })
          for (const [from, to, c] of windows) {
            const s = settled(r.trace, c, from, to)
            checks++
            if (s.ok) met++
            const pts = r.trace.filter((p) => p.t >= from && p.t <= to && !p.probing)
            levels.push(pts.reduce((a, p) => a + p.limit, 0) / pts.length / c)
          }
        }
      }
      row.push(`${met}/${checks}`, fmt(levels.reduce((a, b) => a + b, 0) / levels.length, 2), `${fmt(Math.min(...levels), 2)}–${fmt(Math.max(...levels), 2)}`)
    }
    rows.push(row)
    console.log(`  ${name}: done`)
  }
  const head = ['parameters']
  for (const [label] of spreads) head.push(`${label} settled`, 'level', 'range')
  console.log(`\nSettled within ±20% within 30 s (checks met), and the settled level (limit / capacity: mean, range), over ${seeds} seeds × 3 scenarios (from 200, from 4, 20→10→40), 100 clients, 50 ms per request at the given spread:\n`)
  console.log(table(head, rows))
}

async function main (): Promise<void> {
  const { values } = parseArgs({ options: { sim: { type: 'boolean', default: false }, seconds: { type: 'string', default: '15' }, warmup: { type: 'string', default: '6' }, seeds: { type: 'string', default: '12' } } })
  console.log(`doorman adaptive bench — ${machine()}`)
  console.log(`reproduce: node dist/bench/adaptive.js ${process.argv.slice(2).join(' ')}`.trimEnd())
  if (values.sim) {
    await runSimStudy(Number(values.seeds))
    return
  }
  const r = await runAdaptiveBench({ warmup: Number(values.warmup), seconds: Number(values.seconds) })
  console.log(`\n${r.goodputRatio >= 0.9 ? 'PASS' : 'FAIL'}  adaptive goodput ≥ 90% of the best static limit's: ${fmt(r.goodputRatio, 3)}`)
  console.log(`${r.p99Ratio <= 1.5 ? 'PASS' : 'FAIL'}  adaptive p99 ≤ 1.5 × the best static limit's: ${fmt(r.p99Ratio, 3)}`)
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().then(() => { killAll(); process.exit(0) }, (err: unknown) => { console.error(err); killAll(); process.exit(1) })
}
