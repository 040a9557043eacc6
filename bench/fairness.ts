// The fairness section: what fair queuing across flows costs (issue 25).
//   - CPU per request of a real `doorman run` with DOORMAN_FAIRNESS=flow against the same with `off` (one FIFO per
//     class), one flow only (every request from one client address), in the same run, rounds alternating: with slots
//     to spare (the fast route, no queue) and with the limit reached (the 20 ms route, a limit of 10, requests queued).
//   - Memory with 100,000 distinct flows: flows named by DOORMAN_FLOW_HEADER from a trusted hop (one distinct value
//     per request), the limit reached so that the fair queue holds and sheds them; doorman's RSS before, after
//     each of three batches of 100,000 flows, beside the same requests through doorman with one FIFO, with V8's used
//     heap (from /metrics) beside it: RSS keeps what V8 grew its heap to, the used heap says what is still held.
import { Pool, request } from 'undici'
import type { Options, Section, Check } from './section.js'
import { Cell, Load, startApp, startDoorman, cpuMicros, procMemory, table, fmt, type Doorman } from './lib.js'

const FLOWS = 100_000
const MB = 1024 * 1024

/** V8's used heap (all spaces) of doorman's main thread, from its /metrics (prom-client's default metrics). */
async function heapUsed (admin: number): Promise<number> {
  const res = await request(`http://127.0.0.1:${admin}/metrics`)
  const body = await res.body.text()
  return Number(/^nodejs_heap_size_used_bytes (\S+)$/m.exec(body)?.[1] ?? NaN)
}

/** Sends `n` GETs of `path`, `concurrency` at a time, each with a distinct value of `header`; counts answers by status. */
async function distinctFlows (port: number, path: string, header: string, from: number, n: number, concurrency: number): Promise<Map<number, number>> {
  const pool = new Pool(`http://127.0.0.1:${port}`, { connections: concurrency })
  const statuses = new Map<number, number>()
  let next = from
  const end = from + n
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < end) {
      const i = next++
      try {
        const r = await pool.request({ path, method: 'GET', headers: { [header]: `tenant-${i}` } })
        await r.body.dump()
        statuses.set(r.statusCode, (statuses.get(r.statusCode) ?? 0) + 1)
      } catch {
        statuses.set(0, (statuses.get(0) ?? 0) + 1)
      }
    }
  }))
  await pool.close()
  return statuses
}

export const fairnessSection: Section = {
  name: 'fairness',
  title: 'Fair queuing across flows: CPU against one FIFO, and memory with 100,000 flows',
  async run (opts: Options): Promise<Check[]> {
    const app = await startApp()
    const load = new Load({ nice: 5 })
    const checks: Check[] = []
    try {
      // CPU: the same load through doorman with fairness on and off, rounds alternating.
      const scenarios = [
        { name: 'slots to spare (fast route, limit 100, 20 connections)', path: '/', limit: '100', connections: 20 },
        { name: 'limit reached (20 ms route, limit 10, 40 connections: ~30 queued)', path: '/slow', limit: '10', connections: 40 }
      ]
      const rows: string[][] = []
      for (const sc of scenarios) {
        const targets: Array<{ mode: 'flow' | 'off', dm: Doorman, cell: Cell }> = []
        for (const mode of ['flow', 'off'] as const) {
          targets.push({ mode, dm: await startDoorman(app.port, { DOORMAN_FAIRNESS: mode, DOORMAN_MAX_CONCURRENCY: sc.limit, DOORMAN_MAX_QUEUE: '100' }), cell: new Cell() })
        }
        try {
          for (let round = -1; round < opts.rounds; round++) {
            for (const t of round % 2 === 0 ? targets : [...targets].reverse()) {
              const pid = t.dm.proc.pid as number
              const before = cpuMicros(pid)
              const r = await load.run({ url: `http://127.0.0.1:${t.dm.port}${sc.path}`, connections: sc.connections, duration: round < 0 ? opts.warmup : opts.duration })
              if (round >= 0) t.cell.add(r, cpuMicros(pid) - before)
            }
          }
        } finally {
          for (const t of targets) await t.dm.stop()
        }
        const [fair, fifo] = targets.map((t) => t.cell)
        const ratio = fair.cpuPerRequest / fifo.cpuPerRequest
        rows.push([sc.name, fmt(fifo.rps), fmt(fair.rps), fmt(fifo.cpuPerRequest, 1), fmt(fair.cpuPerRequest, 1), fmt(ratio, 3), String(fair.bad + fifo.bad)])
        checks.push({ what: `fair queuing CPU per request vs FIFO, one flow, ${sc.name}`, value: ratio, ok: (v) => v <= 1.05, unit: '×' })
      }
      console.log(table(['one flow', 'FIFO req/s', 'fair req/s', 'FIFO µs CPU/req', 'fair µs CPU/req', 'fair / FIFO', 'non-2xx'], rows))

      // Memory: 100,000 distinct flows through the fair queue, then 100,000 more, beside the same requests through one
      // FIFO. RSS is what the kernel holds for the process, garbage V8 has not collected yet included: bounded means
      // the second 100,000 flows add about nothing (the in-process test shows the queue's own structures stay at the
      // size of DOORMAN_MAX_QUEUE: test/fair-queue.test.ts).
      const mem: string[][] = []
      for (const mode of ['flow', 'off'] as const) {
        const dm = await startDoorman(app.port, { DOORMAN_FAIRNESS: mode, DOORMAN_FLOW_HEADER: 'x-tenant', DOORMAN_TRUSTED_HOPS: '1', DOORMAN_MAX_CONCURRENCY: '10', DOORMAN_MAX_QUEUE: '100' })
        try {
          const pid = dm.proc.pid as number
          await distinctFlows(dm.port, '/slow', 'x-other', 0, 2000, 50) // warm-up: one flow (no flow header)
          const rss = [procMemory(pid).rss]
          const heap = [await heapUsed(dm.admin)]
          let served = 0
          let shed = 0
          for (let batch = 0; batch < 3; batch++) {
            const got = await distinctFlows(dm.port, '/slow', 'x-tenant', batch * FLOWS, FLOWS, 150)
            served += got.get(200) ?? 0
            shed += got.get(503) ?? 0
            rss.push(procMemory(pid).rss)
            heap.push(await heapUsed(dm.admin))
          }
          const peak = procMemory(pid).peak
          mem.push([mode === 'flow' ? 'fair (flow)' : 'FIFO (off)', `${served} / ${shed}`, ...rss.map((v, i) => `${fmt(v / MB, 1)} (${fmt(heap[i] / MB, 1)})`), fmt(peak / MB, 1), fmt((rss[3] - rss[2]) / MB, 1)])
          if (mode === 'flow') checks.push({ what: 'RSS growth over the third 100,000 distinct flows (fair)', value: (rss[3] - rss[2]) / MB, ok: (v) => v < 16, unit: 'MB' })
        } finally {
          await dm.stop()
        }
      }
      console.log(table(['distinct x-tenant values from a trusted hop', 'served / shed', 'RSS (used heap) before MB', 'after 100,000', 'after 200,000', 'after 300,000', 'peak RSS MB', 'third 100,000 MB'], mem))
      console.log('\n(RSS of doorman\'s process, V8\'s used heap of its main thread in brackets, garbage not yet collected included)')
    } finally {
      load.close()
      app.proc.kill()
    }
    console.log('reproduce: npm run bench -- --only fairness')
    return checks
  }
}
