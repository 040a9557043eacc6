// Live progress in the terminal: on a TTY, a progress bar and a compact table redrawn in place; otherwise (CI, a
// pipe, a file) a plain line every couple of seconds. Then the verdict table.
import type { Writable } from 'node:stream'
import type { IncidentSample, Progress, Results, RolloutSample } from './results.js'

const ESC = '\x1b['

export interface Style { bold: (s: string) => string, dim: (s: string) => string, red: (s: string) => string, green: (s: string) => string, yellow: (s: string) => string }

function style (color: boolean): Style {
  const wrap = (code: number) => (s: string): string => color ? `${ESC}${code}m${s}${ESC}0m` : s
  return { bold: wrap(1), dim: wrap(2), red: wrap(31), green: wrap(32), yellow: wrap(33) }
}

/** Visible width of a string without its ANSI codes. */
function width (s: string): number {
  // eslint-disable-next-line no-control-regex
  return s.replace(/\x1b\[[0-9;]*m/g, '').length
}

function pad (s: string, n: number): string { return s + ' '.repeat(Math.max(0, n - width(s))) }

/** The line cut to `cols` visible characters (colours dropped when it has to be cut). */
function fit (s: string, cols: number): string {
  if (width(s) < cols) return s
  // eslint-disable-next-line no-control-regex
  return s.replace(/\x1b\[[0-9;]*m/g, '').slice(0, Math.max(1, cols - 1))
}

export function bar (fraction: number, cells = 24): string {
  const f = Math.max(0, Math.min(1, fraction))
  const full = Math.round(f * cells)
  return '█'.repeat(full) + '░'.repeat(cells - full)
}

/** A text table: the first row is the header. */
export function table (rows: string[][], s: Style): string {
  const widths: number[] = []
  for (const r of rows) r.forEach((c, i) => { widths[i] = Math.max(widths[i] ?? 0, width(c)) })
  return rows.map((r, i) => '  ' + r.map((c, j) => pad(i === 0 ? s.dim(c) : c, widths[j] as number)).join('  ')).join('\n')
}

export class Live {
  readonly s: Style
  #out: Writable & { isTTY?: boolean, columns?: number }
  #tty: boolean
  #drawn = 0
  #lastPlain = -Infinity

  constructor (out: Writable & { isTTY?: boolean, columns?: number }, opts: { tty?: boolean } = {}) {
    this.#out = out
    this.#tty = opts.tty ?? out.isTTY === true
    this.s = style(this.#tty)
  }

  get tty (): boolean { return this.#tty }

  line (text: string): void {
    this.#clear()
    this.#out.write(text + '\n')
  }

  /** A new stage: its title line stays; the live block below it is redrawn. */
  stage (title: string): void {
    this.#clear()
    this.#lastPlain = -Infinity
    this.#out.write('\n' + this.s.bold(title) + '\n')
  }

  #clear (): void {
    if (!this.#tty || this.#drawn === 0) return
    this.#out.write(`${ESC}${this.#drawn}A${ESC}0J`)
    this.#drawn = 0
  }

  #draw (lines: string[]): void {
    this.#clear()
    // Every row fits the terminal's width, so the block is exactly as many rows as it has lines to move back over.
    const cols = this.#out.columns ?? 80
    const rows = lines.join('\n').split('\n').map((l) => fit(l, cols))
    this.#out.write(rows.join('\n') + '\n')
    this.#drawn = rows.length
  }

  /** Ends the live block, leaving its last state on screen. */
  done (summary?: string): void {
    this.#drawn = 0
    if (summary !== undefined) this.#out.write(summary + '\n')
  }

  incident (x: IncidentSample, p: Progress): void {
    const s = this.s
    const secs = (ms: number): string => `${(ms / 1000).toFixed(1)}s`
    const slow = x.downstreamMs > 100 || x.downstreamMs < 0
    const ds = x.downstreamMs < 0 ? 'hung' : `${x.downstreamMs} ms`
    const head = `  ${bar(p.doneMs / p.totalMs, 20)} ${secs(p.doneMs)}/${secs(p.totalMs)}  ${x.phase}: ${x.rate} req/s, downstream ${slow ? s.red(ds) : ds}`
    if (!this.#tty) {
      if (p.doneMs - this.#lastPlain < 2000 && p.doneMs < p.totalMs) return
      this.#lastPlain = p.doneMs
      const pods = x.pods.map((q) => `${q.name} ${q.ready ? 'ready' : 'NOT READY'} busy ${q.busy}/${q.max} probe ${q.probeMs === null ? '-' : `${Math.round(q.probeMs)}ms`}${q.probeFailed ? ' FAILED' : ''}`).join('; ')
      this.#out.write(`  [${secs(p.doneMs)}] ${x.phase}: ${x.rate} req/s, downstream ${x.downstreamMs < 0 ? 'hung' : `${x.downstreamMs} ms`} | ok ${x.ok} shed ${x.shed} failed ${x.failed} (last ${0.5}s) | restarts ${x.restarts} | ${pods}\n`)
      return
    }
    const rows = [['pod', 'ready', 'app workers busy', 'queued', 'probe', 'doorman', 'restarts']]
    for (const q of x.pods) {
      const probe = q.probeMs === null ? '-' : `${Math.round(q.probeMs)} ms`
      rows.push([
        q.name,
        q.ready ? s.green('yes') : s.red('no'),
        `${q.busy >= q.max ? s.red(pad(`${q.busy}/${q.max}`, 5)) : pad(`${q.busy}/${q.max}`, 5)} ${bar(q.busy / q.max, 10)}`,
        String(q.queued),
        q.probeFailed ? s.red(`${probe} failed`) : probe,
        q.doorman === null ? s.dim('none') : `${q.doorman.inflight}/${q.doorman.limit} in flight`,
        q.restarts > 0 ? s.red(String(q.restarts)) : '0'
      ])
    }
    const traffic = `  last 0.5 s: ${s.green(`ok ${x.ok}`)}  ${x.shed > 0 ? s.yellow(`shed ${x.shed}`) : 'shed 0'}  ${x.failed > 0 ? s.red(`failed ${x.failed}`) : 'failed 0'}  p99 ${x.p99} ms  ready pods ${x.readyPods}/${x.pods.length}`
    this.#draw([head, table(rows, s), traffic])
  }

  rollout (x: RolloutSample, p: Progress, note: string): void {
    const s = this.s
    const names = [...new Set([...Object.keys(x.weights), ...Object.keys(x.byInstance)])].sort()
    const weight = (n: string): string => x.weights[n] === undefined ? 'not registered' : `${Math.round(x.weights[n] as number)}%`
    const total = Object.values(x.byInstance).reduce((a, b) => a + b, 0)
    const share = (n: string): string => total === 0 ? '-' : `${Math.round(100 * (x.byInstance[n] ?? 0) / total)}%`
    if (!this.#tty) {
      if (p.doneMs - this.#lastPlain < 2000) return
      this.#lastPlain = p.doneMs
      this.#out.write(`  [${(p.doneMs / 1000).toFixed(1)}s] ${note} | ok ${x.ok} shed ${x.shed} failed ${x.failed} | ${names.map((n) => `${n} ${share(n)} (weight ${weight(n)})`).join(', ')}\n`)
      return
    }
    const rows = [['instance', 'share of traffic', 'weight']]
    for (const n of names) rows.push([n, `${pad(share(n), 4)} ${bar(total === 0 ? 0 : (x.byInstance[n] ?? 0) / total, 12)}`, weight(n)])
    this.#draw([
      `  ${bar(p.doneMs / p.totalMs, 20)} ${(p.doneMs / 1000).toFixed(1)}s/~${(p.totalMs / 1000).toFixed(0)}s  ${note}`,
      table(rows, s),
      `  last 0.5 s: ${s.green(`ok ${x.ok}`)}  shed ${x.shed}  ${x.failed > 0 ? s.red(`failed ${x.failed}`) : 'failed 0'}  p99 ${x.p99} ms`
    ])
  }

  verdict (r: Results, reportPath: string): void {
    const s = this.s
    this.line('')
    this.line(s.bold('Verdict'))
    if (r.incident !== null) {
      const a = r.incident.without
      const b = r.incident.with
      const rows = [
        ['incident (seed 001)', 'without doorman', 'with doorman'],
        ['pod restarts', a.restarts > 0 ? s.red(String(a.restarts)) : String(a.restarts), b.restarts === 0 ? s.green('0') : s.red(String(b.restarts))],
        ['failed requests', String(a.totals.failed), String(b.totals.failed)],
        ['shed by doorman (503, safe to retry)', '-', String(b.totals.shed)],
        ['succeeded', `${a.totals.ok} of ${a.totals.sent}`, `${b.totals.ok} of ${b.totals.sent}`],
        ['slowest liveness probe', `${a.probe.maxMs} ms (${a.probe.failures} failed)`, `${b.probe.maxMs} ms (${b.probe.failures} failed)`],
        ['busiest app worker pool', `${a.maxBusy}/${a.workers}`, `${b.maxBusy}/${b.workers}`],
        ['time with no pod ready', `${a.zeroReadySeconds} s`, `${b.zeroReadySeconds} s`]
      ]
      this.line(table(rows, s))
    }
    if (r.hang !== undefined && r.hang !== null) {
      const a = r.hang.without
      const b = r.hang.with
      const podsRestarted = (x: typeof a): number => Object.values(x.restartsByPod).filter((n) => n > 0).length
      this.line('')
      this.line(table([
        [`a dependency hangs ${(r.hang.plan.recoverAtMs - r.hang.plan.slowAtMs) / 1000} s`, 'without doorman', 'with doorman'],
        ['pod restarts', a.restarts > 0 ? s.red(`${a.restarts} (${podsRestarted(a)} of ${r.hang.plan.pods} pods)`) : '0', b.restarts === 0 ? s.green('0') : s.red(`${b.restarts} (${podsRestarted(b)} of ${r.hang.plan.pods} pods)`)],
        ['failed requests', String(a.totals.failed), String(b.totals.failed)],
        ['shed by doorman (503, safe to retry)', '-', String(b.totals.shed)],
        ['succeeded', `${a.totals.ok} of ${a.totals.sent}`, `${b.totals.ok} of ${b.totals.sent}`],
        ['time with no pod ready', `${a.zeroReadySeconds} s`, `${b.zeroReadySeconds} s`]
      ], s))
    }
    if (r.rollout !== null) {
      const run = r.rollout.run
      this.line('')
      if (run.skipped !== null) this.line(`  rollout: ${s.yellow('not run')}: ${run.skipped}`)
      else this.line(table([['rollout', ''], ['instances replaced', `${run.replaced.length} of ${r.rollout.plan.instances}`], ['requests', `${run.totals.ok} ok, ${run.totals.shed} shed, ${run.totals.failed > 0 ? s.red(String(run.totals.failed)) : s.green('0')} failed of ${run.totals.sent}`]], s))
    }
    if (r.grpc !== undefined && r.grpc !== null) {
      const run = r.grpc.run
      this.line('')
      if (run.skipped !== null) this.line(`  gRPC rollout: ${s.yellow('not run')}: ${run.skipped}`)
      else this.line(table([['gRPC rollout', ''], ['providers replaced', `${run.replaced.length} of ${r.grpc.plan.providers}`], ['calls (one channel)', `${run.totals.ok} OK, ${run.totals.shed} shed, ${run.totals.failed > 0 ? s.red(String(run.totals.failed)) : s.green('0')} failed of ${run.totals.sent}`]], s))
    }
    this.line('')
    for (const c of r.verdict.checks) this.line(`  ${c.pass ? s.green('✓') : s.red('✗')} ${c.name}: ${c.detail}`)
    this.line('')
    this.line(`${r.verdict.pass ? s.green(s.bold('PASS')) : s.red(s.bold('FAIL'))}  report: ${reportPath}`)
  }
}

