// The lane section: probe latency on the admin port (/livez, /readyz, each on a fresh connection as kubelet sends
// them) while doorman's data path is saturated far above its limit (the limit and queue full, every other request
// shed at once, the main thread as busy as the load makes it), against the same probes on an idle doorman, and
// against a bare Node http server in a process of its own probed alongside (the machine's own floor).
import type { Options, Section, Check } from './section.js'
import { Load, Prober, startApp, startDoorman, sleep, cpuMicros, othersShare, percentile, table, fmt, type Sample } from './lib.js'

const LIMIT = 8
const CONNECTIONS = 200
const PROBE_EVERY_MS = 10
const LABELS = ['/livez', '/readyz', 'bare server']

/** The lane's own view: how many probes it answered within each bucket bound, summed over /livez and /readyz. */
async function laneHistogram (admin: number): Promise<Map<number, number>> {
  const text = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text()
  const out = new Map<number, number>()
  for (const m of text.matchAll(/^doorman_probe_duration_seconds_bucket\{le="([^"]+)",probe="(livez|readyz)"\} (\d+)/gm)) {
    const le = m[1] === '+Inf' ? Infinity : Number(m[1])
    out.set(le, (out.get(le) ?? 0) + Number(m[3]))
  }
  return out
}

export const laneSection: Section = {
  name: 'lane',
  title: 'Probe lane latency while the data path is saturated',
  async run (opts: Options): Promise<Check[]> {
    const app = await startApp()
    const doorman = await startDoorman(app.port, { DOORMAN_MAX_CONCURRENCY: String(LIMIT), DOORMAN_MAX_QUEUE: String(LIMIT * 2) })
    const reference = await startApp()
    const load = new Load()
    const prober = new Prober()
    const rows: string[][] = []
    let saturated: Sample[] = []
    const lines: string[] = []
    try {
      const pid = doorman.proc.pid as number
      const own = [process.pid, load.pid, prober.pid, app.proc.pid as number, reference.proc.pid as number, pid]
      const targets = [
        { label: '/livez', port: doorman.admin, path: '/livez' },
        { label: '/readyz', port: doorman.admin, path: '/readyz' },
        { label: 'bare server', port: reference.port, path: '/' }
      ]
      await prober.run({ targets, everyMs: PROBE_EVERY_MS, count: 150 }) // warm-up
      const idle = await othersShare(own, async () => await prober.run({ targets, everyMs: PROBE_EVERY_MS, count: 300 }))
      const running = load.run({ url: `http://127.0.0.1:${doorman.port}/slow`, connections: CONNECTIONS, duration: opts.laneSeconds + 1.5 })
      await sleep(1000)
      const before = await laneHistogram(doorman.admin)
      const main0 = cpuMicros(pid, pid)
      const t0 = performance.now()
      const busy = await othersShare(own, async () => await prober.run({ targets, everyMs: PROBE_EVERY_MS, seconds: opts.laneSeconds }))
      const mainBusy = (cpuMicros(pid, pid) - main0) / ((performance.now() - t0) * 1000)
      const after = await laneHistogram(doorman.admin)
      const r = await running
      saturated = [...busy.result['/livez'], ...busy.result['/readyz']]
      const n = (after.get(Infinity) ?? 0) - (before.get(Infinity) ?? 0)
      const within = (le: number): string => fmt(100 * ((after.get(le) ?? 0) - (before.get(le) ?? 0)) / Math.max(1, n), 1)
      lines.push(
        `data path: ${CONNECTIONS} connections on the 20 ms route against a limit of ${LIMIT} and a queue of ${LIMIT * 2}: ` +
          `${fmt(r.requests / r.seconds)} req/s answered, ${fmt(100 * r.non2xx / Math.max(1, r.requests))}% shed (503); ` +
          `doorman's main thread ${fmt(100 * mainBusy)}% busy while probed.`,
        `the lane's own clock (doorman_probe_duration_seconds, handler to last byte written), saturated: ${within(0.0005)}% ` +
          `of probes within 0.5 ms, ${within(0.001)}% within 1 ms, ${within(0.0025)}% within 2.5 ms.`,
        `prober: its own process${prober.nice < 0 ? `, at nice ${prober.nice} (kubelet runs outside the pods' CPU share)` : ' (nice could not be raised here)'}; ` +
          `other load (processes outside this run): ${fmt(100 * idle.others)}% of the machine while idle, ` +
          `${fmt(100 * busy.others)}% while saturated.`
      )
      for (const [name, m] of [['idle', idle.result], ['saturated', busy.result]] as const) {
        for (const p of LABELS) {
          const xs = m[p]
          const ms = xs.map((x) => x.ms)
          rows.push([name, p, String(xs.length), fmt(percentile(ms, 50), 2), fmt(percentile(ms, 99), 2), fmt(Math.max(...ms), 2), String(xs.filter((x) => x.status !== 200).length)])
        }
      }
    } finally {
      prober.close()
      load.close()
      await doorman.stop()
      app.proc.kill()
      reference.proc.kill()
    }
    console.log('\n' + lines.join('\n'))
    console.log('\n' + table(['data path', 'probe', 'probes', 'p50 ms', 'p99 ms', 'max ms', 'non-200'], rows, 2))
    const ms = saturated.map((x) => x.ms)
    return [
      { what: 'probe p50 with the data path saturated', value: percentile(ms, 50), ok: () => true, unit: 'ms' },
      { what: 'probe p99 ≤ 2 ms with the data path saturated', value: percentile(ms, 99), ok: (v) => v <= 2, unit: 'ms' },
      { what: 'every probe answered 200 with the data path saturated', value: saturated.filter((x) => x.status !== 200).length, ok: (v) => v === 0, unit: 'failed' }
    ]
  }
}
