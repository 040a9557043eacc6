// The noisy-neighbour scenario (issue 25): one service behind doorman, two callers behind one ingress that names
// them with `x-tenant` (DOORMAN_FLOW_HEADER, the ingress a trusted hop). The shop calls steadily at a fifth of the
// service's capacity; a batch job floods it at several times its capacity for a while. Run twice: with
// DOORMAN_FAIRNESS=off (one FIFO queue: the shop is shed with the batch job) and with the default `flow` (the
// batch job's overload stays the batch job's: the shop goes on being served).
import type { ChildProcess } from 'node:child_process'
import { Downstream } from './downstream.js'
import { LoadGenerator, type Bucket } from './load.js'
import { freePort, laneState, startDoorman } from './procs.js'
import type { NoisyPlan, NoisyRun, NoisySample, Progress } from './results.js'
import { sleep, waitUntil } from './time.js'
import { chart } from './charts.js'

export const NOISY_FULL: NoisyPlan = { limit: 4, serviceMs: 50, maxQueue: 20, shopRate: 16, batchRate: 400, floodFromMs: 5000, floodToMs: 25_000, totalMs: 30_000, sampleMs: 1000 }
export const NOISY_SHORT: NoisyPlan = { ...NOISY_FULL, floodFromMs: 2000, floodToMs: 8000, totalMs: 10_000 }

export interface NoisyOptions {
  plan: NoisyPlan
  fairness: 'flow' | 'off'
  logDir: string
  signal?: AbortSignal
  onSample?: (s: NoisySample, p: Progress) => void
}

const pick = (b: Bucket): NoisySample['shop'] => ({ sent: b.sent, ok: b.ok, shed: b.shed, failed: b.failed, p99: Math.round(b.p99) })

export async function runNoisy (o: NoisyOptions): Promise<NoisyRun> {
  const { plan } = o
  const app = new Downstream({ userLatencyMs: plan.serviceMs })
  await app.listen()
  const appPort = (app.server.address() as { port: number }).port
  const inboundPort = await freePort()
  const adminPort = await freePort()
  let dm: ChildProcess | null = null
  const loads: LoadGenerator[] = []
  try {
    dm = startDoorman({
      name: `noisy-${o.fairness}-doorman`,
      appPort,
      inboundPort,
      adminPort,
      logDir: o.logDir,
      env: { DOORMAN_MAX_CONCURRENCY: String(plan.limit), DOORMAN_MAX_QUEUE: String(plan.maxQueue), DOORMAN_FAIRNESS: o.fairness, DOORMAN_FLOW_HEADER: 'x-tenant', DOORMAN_TRUSTED_HOPS: '1', DOORMAN_WARMUP: '0s' }
    })
    let ready = false
    await waitUntil('doorman to be ready', () => {
      void laneState<{ ready: boolean }>(adminPort).then((s) => { ready = s?.ready === true })
      return ready
    }, 15_000, o.signal)
    const endpoint = [{ name: 'doorman', port: inboundPort, ready: () => true }]
    const shop = new LoadGenerator({ endpoints: () => endpoint, path: '/user', timeoutMs: 5000, headers: { 'x-tenant': 'shop' } })
    const batch = new LoadGenerator({ endpoints: () => endpoint, path: '/user', timeoutMs: 5000, headers: { 'x-tenant': 'batch-job' } })
    loads.push(shop, batch)
    shop.rate = plan.shopRate
    shop.start()
    batch.start()
    const samples: NoisySample[] = []
    const during = { sent: 0, ok: 0, shed: 0, failed: 0 }
    let flows: NoisyRun['flows'] = []
    const started = performance.now()
    for (let t = plan.sampleMs; t <= plan.totalMs; t += plan.sampleMs) {
      await sleep(started + t - performance.now(), o.signal)
      const now = performance.now() - started
      batch.rate = now >= plan.floodFromMs && now < plan.floodToMs ? plan.batchRate : 0
      const s: NoisySample = { t: t / 1000, shop: pick(shop.take()), batch: pick(batch.take()) }
      samples.push(s)
      if (t > plan.floodFromMs && t <= plan.floodToMs) {
        during.sent += s.shop.sent; during.ok += s.shop.ok; during.shed += s.shop.shed; during.failed += s.shop.failed
      }
      if (t === plan.floodFromMs + Math.round((plan.floodToMs - plan.floodFromMs) / 2 / plan.sampleMs) * plan.sampleMs) {
        flows = (await laneState<{ flows?: NoisyRun['flows'] }>(adminPort))?.flows ?? []
      }
      o.onSample?.(s, { doneMs: t, totalMs: plan.totalMs })
    }
    shop.stop()
    batch.stop()
    await Promise.all([shop.settled(), batch.settled()])
    return { fairness: o.fairness, samples, shop: { ...shop.totals }, batch: { ...batch.totals }, shopDuringFlood: during, flows }
  } finally {
    for (const l of loads) l.close()
    dm?.kill('SIGKILL')
    await app.close()
  }
}

/** The report's section: the shop's and the batch job's answers per second, without fairness (left) and with it. */
export function noisySection (plan: NoisyPlan, without: NoisyRun, withF: NoisyRun): string {
  const xMax = plan.totalMs / 1000
  const band = [{ from: plan.floodFromMs / 1000, to: plan.floodToMs / 1000, label: 'batch job floods', short: 'flood', color: '#fff1e5' }]
  let yMax = plan.shopRate * 1.5
  for (const r of [without, withF]) for (const s of r.samples) yMax = Math.max(yMax, s.shop.sent)
  const side = (r: NoisyRun, id: string, title: string): string => chart({
    id,
    title,
    unit: 'requests/s',
    xMax,
    yMax,
    bands: band,
    stack: {
      step: plan.sampleMs / 1000,
      layers: [
        { name: 'shop: served', color: '#1a7f37', values: r.samples.map((s) => [s.t, s.shop.ok]) },
        { name: 'shop: shed', color: '#cf222e', values: r.samples.map((s) => [s.t, s.shop.shed]) },
        { name: 'shop: failed', color: '#6e7781', values: r.samples.map((s) => [s.t, s.shop.failed]) }
      ]
    }
  })
  const flows = withF.flows.length === 0
    ? ''
    : `<p class="note">At the height of the flood doorman's <code>/state</code> listed the heaviest flows: ${withF.flows.slice(0, 3).map((f) => `<code>${f.flow.replace(/[<>&"]/g, '')}</code> (${f.inflight} in flight, ${f.queued} queued, ${f.shed} shed)`).join(', ')}.</p>`
  return `<h2>Noisy neighbour: one caller floods, another goes on being served</h2>
<details><summary>Setup of the noisy neighbour</summary><ul>
<li>One service behind doorman with a limit of ${plan.limit} and a queue of ${plan.maxQueue}; each request takes ${plan.serviceMs} ms, so it serves ${plan.limit * 1000 / plan.serviceMs} requests/s.</li>
<li>Two callers behind one ingress that names them in <code>x-tenant</code> (<code>DOORMAN_FLOW_HEADER=x-tenant</code>, <code>DOORMAN_TRUSTED_HOPS=1</code>): the shop at ${plan.shopRate} requests/s all along, a batch job at ${plan.batchRate} requests/s from ${plan.floodFromMs / 1000} s to ${plan.floodToMs / 1000} s.</li>
<li>The charts show the shop's requests per second: served, shed, failed. Left: <code>DOORMAN_FAIRNESS=off</code>, one FIFO queue. Right: the default, <code>flow</code>: the queue shared fairly across callers, the heaviest shed first (<code>x-doorman-shed: flow-share</code>).</li>
</ul></details>
<div class="sides"><figure>${side(without, 'noisy-off', 'Shop, fairness off')}<figcaption>During the flood: ${without.shopDuringFlood.ok} of ${without.shopDuringFlood.sent} served, ${without.shopDuringFlood.shed} shed.</figcaption></figure>
<figure>${side(withF, 'noisy-flow', 'Shop, fairness on')}<figcaption>During the flood: ${withF.shopDuringFlood.ok} of ${withF.shopDuringFlood.sent} served, ${withF.shopDuringFlood.shed} shed; the batch job: ${withF.batch.ok} served, ${withF.batch.shed} shed.</figcaption></figure></div>
${flows}`
}
