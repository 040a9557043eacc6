// The tracing section: doorman's CPU per request with tracing off, at 1 % sampling and at 100 %, in one run, the three
// sidecars in rotation in front of the same app, exporting to a collector in this process that takes every batch
// (OTLP/HTTP, protobuf, discarded). The spread of the "off" rounds is the run's noise.
import http from 'node:http'
import { once } from 'node:events'
import type { Options, Section, Check } from './section.js'
import { Load, Cell, startApp, startDoorman, cpuMicros, rotation, table, fmt, median } from './lib.js'

const CONNECTIONS = 50
const TARGETS = ['off', '1 %', '100 %'] as const
type Target = typeof TARGETS[number]

export const tracingSection: Section = {
  name: 'tracing',
  title: 'Tracing: CPU per request with tracing off, at 1 % and at 100 % sampling',
  async run (opts: Options): Promise<Check[]> {
    let spansBytes = 0
    const collector = http.createServer((req, res) => {
      req.on('data', (c: Buffer) => { spansBytes += c.length })
      req.on('end', () => { res.writeHead(200, { 'content-type': 'application/x-protobuf' }); res.end() })
    })
    collector.listen(0, '127.0.0.1')
    await once(collector, 'listening')
    const endpoint = `http://127.0.0.1:${(collector.address() as { port: number }).port}`
    const app = await startApp()
    const env = (sampler: string, arg: string): Record<string, string> => ({ OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, OTEL_TRACES_SAMPLER: sampler, OTEL_TRACES_SAMPLER_ARG: arg, DOORMAN_MAX_CONCURRENCY: '512' })
    const sidecars = {
      off: await startDoorman(app.port, { DOORMAN_MAX_CONCURRENCY: '512' }),
      '1 %': await startDoorman(app.port, env('traceidratio', '0.01')),
      '100 %': await startDoorman(app.port, env('always_on', '1'))
    }
    const load = new Load({ nice: 10 })
    const cells = new Map<Target, Cell>(TARGETS.map((t) => [t, new Cell()]))
    const offRounds: number[] = []
    try {
      for (const t of TARGETS) await load.run({ url: `http://127.0.0.1:${sidecars[t].port}/`, connections: CONNECTIONS, duration: opts.warmup })
      for (let i = 0; i < opts.rounds * 2; i++) {
        for (const t of rotation(TARGETS, i)) {
          const d = sidecars[t]
          const c0 = cpuMicros(d.proc.pid as number)
          const r = await load.run({ url: `http://127.0.0.1:${d.port}/`, connections: CONNECTIONS, duration: opts.duration })
          const cpu = cpuMicros(d.proc.pid as number) - c0
          cells.get(t)?.add(r, cpu)
          if (t === 'off') offRounds.push(cpu / r.requests)
        }
      }
    } finally {
      load.close()
      for (const d of Object.values(sidecars)) await d.stop()
      app.proc.kill()
      collector.close()
    }
    const off = cells.get('off') as Cell
    const rows = TARGETS.map((t) => {
      const c = cells.get(t) as Cell
      return [t, fmt(c.rps), fmt(c.cpuPerRequest, 1), fmt(c.cpuPerRequest / off.cpuPerRequest, 3), fmt(median(c.p99), 1), String(c.bad)]
    })
    console.log(table(['tracing', 'requests/s', 'doorman CPU µs/request', 'vs off', 'p99 ms (median of rounds)', 'errors'], rows))
    const lo = Math.min(...offRounds)
    const hi = Math.max(...offRounds)
    console.log(`\n${CONNECTIONS} connections, ${opts.rounds * 2} rounds of ${opts.duration} s per setting in rotation; "off" rounds ranged ${fmt(lo, 1)}–${fmt(hi, 1)} µs/request (the run's noise: ±${fmt((hi - lo) / 2 / median(offRounds) * 100, 1)} %); ${fmt(spansBytes / 1e6, 1)} MB of spans exported.`)
    const one = cells.get('1 %') as Cell
    const all = cells.get('100 %') as Cell
    return [
      { what: 'no errors with tracing on', value: one.bad + all.bad + off.bad, ok: (v) => v === 0 },
      { what: 'CPU per request at 1 % sampling vs off (within 10 %)', value: one.cpuPerRequest / off.cpuPerRequest, ok: (v) => v <= 1.1 }
    ]
  }
}
