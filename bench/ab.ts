// The A/B section: this checkout's build against another commit's (`--baseline REF`, default `HEAD`), side by side in
// one run, so a change to the proxy core is judged by the CPU per request it costs, not by memory of an older run.
// The baseline is checked out with `git worktree add` into a temporary directory, given this checkout's node_modules
// and built with its own `npm run build`; both doormans then stand in front of the same apps and take the same load
// in alternation: HTTP/1.1 keep-alive (autocannon, 50 connections, the bench app) and unary gRPC (h2load, 50
// streams over 5 connections, an h2c app). Reported as proxy CPU per request and after/before ratios, per round.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, symlinkSync, existsSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import type { Options, Section, Check } from './section.js'
import { startApp, startDoorman, Load, cpuMicros, rotation, table, fmt, ROOT, type Doorman } from './lib.js'
import { startGrpcApp, h2load, which, writeGrpcCall } from './grpc.js'

const SIDES = ['before', 'after'] as const
type Side = typeof SIDES[number]
const SHAPES = ['HTTP/1.1 keep-alive', 'gRPC unary'] as const
type Shape = typeof SHAPES[number]
const LIMIT = 512

/** Checks `ref` out beside this checkout and builds it; returns its dist/cli.js and a cleanup. */
function buildBaseline (ref: string): { cli: string, commit: string, remove: () => void } {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'doorman-bench-baseline-'))
  const git = (...args: string[]): string => execFileSync('git', ['-C', ROOT, ...args], { stdio: ['ignore', 'pipe', 'pipe'] }).toString().trim()
  const commit = git('rev-parse', '--short', `${ref}^{commit}`)
  git('worktree', 'add', '--detach', dir, commit)
  const remove = (): void => {
    try { git('worktree', 'remove', '--force', dir) } catch { rmSync(dir, { recursive: true, force: true }) }
  }
  try {
    symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'), 'dir')
    // Its own build script, whatever it was then (`npm run build`).
    execFileSync('npm', ['run', '--silent', 'build'], { cwd: dir, stdio: ['ignore', 'ignore', 'inherit'] })
  } catch (err) {
    remove()
    throw err
  }
  return { cli: path.join(dir, 'dist', 'cli.js'), commit, remove }
}

class Cell {
  requests = 0
  cpu = 0
  bad = 0
  roundCpu: number[] = []
  add (requests: number, cpu: number, bad: number): void {
    this.requests += requests
    this.cpu += cpu
    this.bad += bad
    this.roundCpu.push(cpu / requests)
  }

  get cpuPerRequest (): number { return this.cpu / this.requests }
}

export const abSection: Section = {
  name: 'ab',
  title: 'A/B: this build against a baseline commit, CPU per request (HTTP/1.1 and gRPC)',
  async run (opts: Options): Promise<Check[]> {
    const h2 = which('h2load')
    if (h2 === null) throw new Error('the ab section needs h2load on PATH; on Debian: apt-get install nghttp2-client')
    const base = buildBaseline(opts.baseline)
    const head = execFileSync('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD']).toString().trim()
    const dirty = execFileSync('git', ['-C', ROOT, 'status', '--porcelain', '--untracked-files=no']).toString().trim() !== ''
    console.log(`  before: ${base.commit} (${opts.baseline}); after: this checkout's build (${head}${dirty ? ' with uncommitted changes' : ''})`)
    const dir = mkdtempSync(path.join(os.tmpdir(), 'doorman-bench-ab-'))
    const body = writeGrpcCall(dir)
    const app = await startApp()
    const grpcApp = await startGrpcApp()
    const env = { DOORMAN_MAX_CONCURRENCY: String(LIMIT), DOORMAN_MAX_QUEUE: String(LIMIT) }
    const doormans = new Map<string, Doorman>()
    const load = new Load({ nice: 5 })
    const cells = new Map<string, Cell>()
    try {
      for (const side of SIDES) {
        const cli = side === 'before' ? base.cli : undefined
        doormans.set(`${side}/HTTP/1.1 keep-alive`, await startDoorman(app.port, env, [], undefined, cli))
        doormans.set(`${side}/gRPC unary`, await startDoorman(grpcApp.port, { ...env, DOORMAN_APP_PROTOCOL: 'h2c' }, [], undefined, cli))
      }
      for (let round = -1; round < opts.rounds; round++) {
        const warm = round < 0
        process.stdout.write(warm ? '  warm-up round' : `  round ${round + 1}/${opts.rounds}`)
        for (const [si, shape] of SHAPES.entries()) {
          for (const side of rotation(SIDES, Math.max(round, 0) + si)) {
            const dm = doormans.get(`${side}/${shape}`) as Doorman
            const seconds = warm ? opts.warmup : opts.duration
            const before = cpuMicros(dm.proc.pid as number)
            let requests: number
            let bad: number
            if (shape === 'gRPC unary') {
              const r = await h2load(h2, `http://127.0.0.1:${dm.port}/bench.Bench/Fast`, 50, body, seconds)
              requests = r.calls
              bad = r.failed + r.non2xx
            } else {
              const r = await load.run({ url: `http://127.0.0.1:${dm.port}/`, connections: 50, duration: seconds })
              requests = r.requests - r.non2xx
              bad = r.non2xx + r.errors + r.timeouts
            }
            const cpu = cpuMicros(dm.proc.pid as number) - before
            if (warm) continue
            let c = cells.get(`${side}/${shape}`)
            if (c === undefined) cells.set(`${side}/${shape}`, c = new Cell())
            c.add(requests, cpu, bad)
          }
          process.stdout.write('.')
        }
        process.stdout.write('\n')
      }
    } finally {
      load.close()
      await Promise.all([...doormans.values()].map(async (d) => { await d.stop() }))
      app.proc.kill()
      grpcApp.proc.kill()
      rmSync(dir, { recursive: true, force: true })
      if (existsSync(base.cli)) base.remove()
    }

    const cell = (side: Side, shape: Shape): Cell => cells.get(`${side}/${shape}`) as Cell
    const rows = SHAPES.map((shape) => {
      const a = cell('before', shape)
      const b = cell('after', shape)
      const per = b.roundCpu.map((x, i) => x / a.roundCpu[i])
      return [shape, fmt(a.cpuPerRequest, 1), fmt(b.cpuPerRequest, 1), `${fmt(b.cpuPerRequest / a.cpuPerRequest, 3)} (${fmt(Math.min(...per), 3)}–${fmt(Math.max(...per), 3)})`, String(a.bad + b.bad)]
    })
    console.log('\n' + table(['load', `before µs/request (${base.commit})`, 'after µs/request', 'after/before (range over rounds)', 'failed'], rows, 1))
    // "Not worse": within the rounds' own spread, read here as at most 5 % above the baseline over the whole run.
    const checks: Check[] = SHAPES.map((shape) => ({
      what: `A/B: ${shape} CPU per request after/before ≤ 1.05 (baseline ${base.commit})`,
      value: cell('after', shape).cpuPerRequest / cell('before', shape).cpuPerRequest,
      ok: (v: number) => v <= 1.05
    }))
    const bad = [...cells.values()].reduce((n, c) => n + c.bad, 0)
    if (bad > 0) checks.push({ what: 'A/B: no failed requests', value: bad, ok: () => false })
    return checks
  }
}
