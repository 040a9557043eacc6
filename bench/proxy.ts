// The proxy section: direct to the app, through http-proxy and through doorman, in alternation, at 50 and 200
// connections on a fast route and a 20 ms route. Requests/s, p50/p99 and the proxy process's CPU per request. A byte
// relay with no HTTP (`tcp relay`) runs alongside as the floor: no proxy in Node does less per request.
import type { Options, Section, Check } from './section.js'
import { Cell, Load, startApp, startHttpProxy, startTcpRelay, startDoorman, cpuMicros, othersShare, median, rotation, table, fmt, type LoadResult } from './lib.js'

interface Scenario { id: string, route: string, path: string, connections: number }
const SCENARIOS: Scenario[] = [
  { id: 'fast/50', route: 'fast', path: '/', connections: 50 },
  { id: 'fast/200', route: 'fast', path: '/', connections: 200 },
  { id: '20ms/50', route: '20 ms', path: '/slow', connections: 50 },
  { id: '20ms/200', route: '20 ms', path: '/slow', connections: 200 }
]
const TARGETS = ['direct', 'tcp relay', 'http-proxy', 'doorman'] as const
type Target = typeof TARGETS[number]
/** The order of the targets in run `i` (rotation: none always first). */
function order (i: number): Target[] { return rotation(TARGETS, i) }
/** doorman's limit here: above the largest connection count, so nothing queues or sheds. */
const LIMIT = 256

class ProxyCell extends Cell {
  others: number[] = []
  /** Per round: requests/s and CPU µs per request. */
  roundRps: number[] = []
  roundCpu: number[] = []
  addRound (r: LoadResult, cpu: number, others: number): void {
    this.add(r, cpu)
    this.others.push(others)
    this.roundRps.push(r.requests / r.seconds)
    this.roundCpu.push(cpu / r.requests)
  }
}

export const proxySection: Section = {
  name: 'proxy',
  title: 'Proxy overhead: direct vs http-proxy vs doorman, and a byte relay as the floor',
  async run (opts: Options): Promise<Check[]> {
    const app = await startApp()
    const baseline = await startHttpProxy(app.port)
    const relay = await startTcpRelay(app.port)
    const nodeArgs = opts.profileDir !== null ? ['--cpu-prof', `--cpu-prof-dir=${opts.profileDir}`] : []
    const doorman = await startDoorman(app.port, { DOORMAN_MAX_CONCURRENCY: String(LIMIT), DOORMAN_MAX_QUEUE: String(LIMIT) }, nodeArgs)
    const load = new Load()
    const ports: Record<Target, number> = { direct: app.port, 'tcp relay': relay.port, 'http-proxy': baseline.port, doorman: doorman.port }
    const pids: Record<Target, number | undefined> = { direct: undefined, 'tcp relay': relay.proc.pid, 'http-proxy': baseline.proc.pid, doorman: doorman.proc.pid }
    const cells = new Map<string, ProxyCell>()
    // This run's own processes; the rest of the machine's busy time is other load (noise), reported per cell.
    const own = [process.pid, load.pid, app.proc.pid, baseline.proc.pid, relay.proc.pid, doorman.proc.pid].filter((p): p is number => p !== undefined)
    const key = (s: Scenario, t: Target): string => `${s.id}/${t}`
    const unknown = opts.scenarios?.filter((id) => !SCENARIOS.some((s) => s.id === id)) ?? []
    if (unknown.length > 0) throw new Error(`unknown scenario ${unknown.join(', ')}; scenarios: ${SCENARIOS.map((s) => s.id).join(', ')}`)
    const scenarios = SCENARIOS.filter((s) => opts.scenarios?.includes(s.id) ?? true)
    try {
      for (let round = -1; round < opts.rounds; round++) {
        const warm = round < 0
        process.stdout.write(warm ? '  warm-up round' : `  round ${round + 1}/${opts.rounds}`)
        for (const s of scenarios) {
          for (const t of order(Math.max(round, 0) + scenarios.indexOf(s))) {
            const pid = pids[t]
            const before = pid === undefined ? NaN : cpuMicros(pid)
            const { result: r, others } = await othersShare(own, async () =>
              await load.run({ url: `http://127.0.0.1:${ports[t]}${s.path}`, connections: s.connections, duration: warm ? opts.warmup : opts.duration }))
            const cpu = pid === undefined ? NaN : cpuMicros(pid) - before
            if (warm) continue
            let c = cells.get(key(s, t))
            if (c === undefined) cells.set(key(s, t), c = new ProxyCell())
            c.addRound(r, cpu, others)
          }
          process.stdout.write('.')
        }
        process.stdout.write('\n')
      }
    } finally {
      load.close()
      await doorman.stop()
      baseline.proc.kill()
      relay.proc.kill()
      app.proc.kill()
    }

    const rows: string[][] = []
    for (const s of scenarios) {
      for (const t of TARGETS) {
        const c = cells.get(key(s, t)) as ProxyCell
        rows.push([s.route, String(s.connections), t, fmt(c.rps), fmt(median(c.p50), 1), fmt(median(c.p99), 1), t === 'direct' ? '—' : fmt(c.cpuPerRequest, 1), c.bad === 0 ? '0' : String(c.bad), fmt(100 * median(c.others))])
      }
    }
    console.log('\n' + table(['route', 'conns', 'target', 'req/s', 'p50 ms', 'p99 ms', 'proxy CPU µs/req', 'errors/non-2xx', 'other load %'], rows, 3))
    console.log('\n(other load: the share of the machine\'s CPU used by processes outside this run, median over rounds)')

    // Each ratio over the whole run, then its range over the rounds (the targets measured back to back in one round).
    const ratio = (whole: number, a: number[], b: number[]): string => {
      const per = a.map((x, i) => x / b[i])
      return `${fmt(whole, 2)} (${fmt(Math.min(...per), 2)}–${fmt(Math.max(...per), 2)})`
    }
    const ratios: string[][] = []
    for (const s of scenarios) {
      const d = cells.get(key(s, 'direct')) as ProxyCell
      const h = cells.get(key(s, 'http-proxy')) as ProxyCell
      const m = cells.get(key(s, 'doorman')) as ProxyCell
      const r = cells.get(key(s, 'tcp relay')) as ProxyCell
      ratios.push([s.route, String(s.connections), ratio(m.rps / d.rps, m.roundRps, d.roundRps), ratio(m.rps / h.rps, m.roundRps, h.roundRps), ratio(m.cpuPerRequest / h.cpuPerRequest, m.roundCpu, h.roundCpu), ratio(r.rps / d.rps, r.roundRps, d.roundRps), ratio(r.cpuPerRequest / h.cpuPerRequest, r.roundCpu, h.roundCpu)])
    }
    console.log('\n' + table(['route', 'conns', 'doorman/direct req/s', 'doorman/http-proxy req/s', 'doorman/http-proxy CPU per req', 'tcp relay/direct req/s', 'tcp relay/http-proxy CPU per req'], ratios, 2))
    console.log('\n(ratio over the whole run, and its range over the rounds in brackets; the tcp relay columns are the floor)')

    const cell = (id: string, t: Target): ProxyCell | undefined => cells.get(`${id}/${t}`)
    const checks: Check[] = []
    const fm = cell('fast/50', 'doorman')
    const fh = cell('fast/50', 'http-proxy')
    if (fm !== undefined && fh !== undefined) {
      checks.push({ what: 'doorman CPU/req ≤ 0.55 × http-proxy (fast, 50 conns)', value: fm.cpuPerRequest / fh.cpuPerRequest, ok: (v) => v <= 0.55 })
      checks.push({ what: 'doorman req/s ≥ 1.7 × http-proxy (fast, 50 conns)', value: fm.rps / fh.rps, ok: (v) => v >= 1.7 })
    }
    const sm = cell('20ms/200', 'doorman')
    const sd = cell('20ms/200', 'direct')
    if (sm !== undefined && sd !== undefined) {
      checks.push({ what: 'doorman req/s ≥ 0.95 × direct (20 ms, 200 conns)', value: sm.rps / sd.rps, ok: (v) => v >= 0.95 })
    }
    const bad = [...cells.values()].reduce((n, c) => n + c.bad, 0)
    if (bad > 0) checks.push({ what: 'no errors or non-2xx answers', value: bad, ok: () => false })
    return checks
  }
}
