// The lane section: probe latency on the admin port (/livez, /readyz, each on a fresh connection as kubelet sends
// them) while doorman's data path is saturated far above its limit (most requests shed at once, the main thread
// busy), against the same probes on an idle doorman.
import type { Options, Section, Check } from './run.js'
import { Load, startApp, startDoorman, probe as probeOnce, sleep, cpuMicros, othersShare, percentile, table, fmt, type Sample } from './lib.js'

const LIMIT = 8
const CONNECTIONS = 200
const PROBE_EVERY_MS = 10

async function probe (admin: number, until: () => boolean, max = Infinity): Promise<Map<string, Sample[]>> {
  const out = new Map<string, Sample[]>([['/livez', []], ['/readyz', []]])
  for (let i = 0; i < max && !until(); i++) {
    const p = i % 2 === 0 ? '/livez' : '/readyz'
    ;(out.get(p) as Sample[]).push(await probeOnce(admin, p, 2000))
    await sleep(PROBE_EVERY_MS)
  }
  return out
}

export const laneSection: Section = {
  name: 'lane',
  title: 'Probe lane latency while the data path is saturated',
  async run (opts: Options): Promise<Check[]> {
    const app = await startApp()
    const doorman = await startDoorman(app.port, { DOORMAN_MAX_CONCURRENCY: String(LIMIT), DOORMAN_MAX_QUEUE: String(LIMIT * 2) })
    const load = new Load()
    const rows: string[][] = []
    let saturated: Map<string, Sample[]>
    let loadLine: string
    try {
      const pid = doorman.proc.pid as number
      const own = [process.pid, load.pid, app.proc.pid as number, pid]
      const idle = await othersShare(own, async () => await probe(doorman.admin, () => false, 200))
      let done = false
      const running = load.run({ url: `http://127.0.0.1:${doorman.port}/slow`, connections: CONNECTIONS, duration: opts.laneSeconds + 1 })
        .finally(() => { done = true })
      await sleep(1000)
      const main0 = cpuMicros(pid, pid)
      const t0 = performance.now()
      const busy = await othersShare(own, async () => await probe(doorman.admin, () => done))
      const mainBusy = (cpuMicros(pid, pid) - main0) / ((performance.now() - t0) * 1000)
      saturated = busy.result
      const r = await running
      loadLine = `data path: ${CONNECTIONS} connections on the 20 ms route against a limit of ${LIMIT}: ` +
        `${fmt(r.requests / r.seconds)} req/s answered, ${fmt(100 * r.non2xx / Math.max(1, r.requests))}% shed (503); ` +
        `doorman's main thread ${fmt(100 * mainBusy)}% busy while probed.\n` +
        `other load (processes outside this run): ${fmt(100 * idle.others)}% of the machine while idle probes ran, ` +
        `${fmt(100 * busy.others)}% during the saturated ones`
      for (const [name, m] of [['idle', idle.result], ['saturated', saturated]] as const) {
        for (const [p, xs] of m) {
          const ms = xs.map((x) => x.ms)
          rows.push([name, p, String(xs.length), fmt(percentile(ms, 50), 2), fmt(percentile(ms, 99), 2), fmt(Math.max(...ms), 2), String(xs.filter((x) => x.status !== 200).length)])
        }
      }
    } finally {
      load.close()
      await doorman.stop()
      app.proc.kill()
    }
    console.log('\n' + loadLine)
    console.log('\n' + table(['doorman', 'probe', 'probes', 'p50 ms', 'p99 ms', 'max ms', 'non-200'], rows, 2))
    const all = [...saturated.values()].flat()
    return [
      { what: 'probe p99 ≤ 2 ms with the data path saturated', value: percentile(all.map((x) => x.ms), 99), ok: (v) => v <= 2, unit: 'ms' },
      { what: 'every probe answered 200 with the data path saturated', value: all.filter((x) => x.status !== 200).length, ok: (v) => v === 0, unit: 'failed' }
    ]
  }
}
