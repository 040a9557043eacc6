// The demo's HTML report: one self-contained file (inline CSS and SVG, nothing fetched), the two incident runs side
// by side on shared scales, the rollout, and the verdict. Written next to results.json.
import { chart, CHART_CSS, type ChartSpec } from './charts.js'
import { GRPC_SERVICE } from './grpc-rollout.js'
import { noisySection } from './noisy.js'
import type { IncidentPlan, IncidentRun, Marker, Results, RolloutRun } from './results.js'

const C = {
  ok: '#2da44e',
  shed: '#d4a72c',
  failed: '#cf222e',
  pods: ['#0969da', '#8250df', '#bf3989', '#1b7c83'],
  slow: 'rgba(207,34,46,0.07)',
  doubled: 'rgba(9,105,218,0.05)',
  limit: '#1a7f37',
  max: '#cf222e',
  restart: '#cf222e',
  instances: ['#0969da', '#8250df', '#bf3989', '#1b7c83', '#9a6700', '#57606a', '#d1242f', '#2da44e']
}

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')

type Pair = NonNullable<Results['incident']>

function bands (p: IncidentPlan): ChartSpec['bands'] {
  if (p.hang === true) {
    return [
      { from: p.slowAtMs / 1000, to: p.recoverAtMs / 1000, label: `dependency hung: ${(p.recoverAtMs - p.slowAtMs) / 1000} s`, color: C.slow, short: 'dependency hung' },
      { from: p.recoverAtMs / 1000, to: p.endMs / 1000, label: 'dependency back', color: C.doubled, short: 'recovered' }
    ]
  }
  return [
    { from: p.doubleAtMs / 1000, to: p.slowAtMs / 1000, label: `traffic doubled: ${p.doubledRate} req/s`, color: C.doubled, short: 'traffic ×2' },
    { from: p.slowAtMs / 1000, to: p.recoverAtMs / 1000, label: `downstream slow: ${p.slowLatencyMs} ms`, color: C.slow, short: `downstream ${p.slowLatencyMs} ms` },
    { from: p.recoverAtMs / 1000, to: p.endMs / 1000, label: `traffic doubled: ${p.doubledRate} req/s`, color: C.doubled, short: 'recovered' }
  ]
}

function restartMarkers (m: Marker[]): NonNullable<ChartSpec['markers']> {
  return m.filter((x) => x.kind === 'restart').map((x) => ({ t: x.t, label: `${x.label} (${x.detail ?? ''}) at ${x.t.toFixed(1)}s`, color: C.restart }))
}

function incidentCharts (inc: Pair | null | undefined, prefix: 'incident' | 'hang'): string {
  if (inc === null || inc === undefined) return ''
  const hang = inc.plan.hang === true
  const runs: Array<[string, IncidentRun]> = [['without', inc.without], ['with', inc.with]]
  const xMax = inc.plan.endMs / 1000
  const step = inc.plan.sampleMs / 1000
  const perSec = 1 / step
  const b = bands(inc.plan)
  const maxOf = (f: (run: IncidentRun) => number[]): number => Math.max(0, ...runs.flatMap(([, run]) => f(run)))
  const reqMax = (maxOf((run) => run.timeline.map((s) => (s.ok + s.shed + s.failed) * perSec)))
  const probeMax = (Math.max(inc.plan.probe.timeoutMs * 1.1, maxOf((run) => run.timeline.flatMap((s) => s.pods.map((p) => p.probeMs ?? 0)))))
  const rows: Array<{ title: string, note: string, make: (run: IncidentRun, side: string) => ChartSpec, caption: (run: IncidentRun) => string }> = [
    {
      title: 'Requests per second, by outcome',
      note: hang
        ? 'Open-loop load; the dependency hangs in the red band (every call to it waits, on every pod). Without doorman the pods are restarted and requests fail; with it the app keeps the limit\'s worth of requests (they complete once the dependency is back), the excess is shed at once with 503 + retry-after, and everything recovers when the dependency does.'
        : 'Open-loop load: doubled at the blue band, the downstream slows in the red band. Without doorman the pods go down and requests time out or find no pod; with it the excess is shed at once with 503 + retry-after, and the rest is served.',
      make: (run, side) => ({
        id: `${prefix}-${side}-requests`,
        title: `${side} doorman`,
        unit: 'req/s',
        xMax,
        yMax: reqMax,
        bands: b,
        stack: {
          step,
          layers: [
            { name: 'ok', color: C.ok, values: run.timeline.map((s) => [s.t, s.ok * perSec]) },
            { name: 'shed', color: C.shed, values: run.timeline.map((s) => [s.t, s.shed * perSec]) },
            { name: 'failed', color: C.failed, values: run.timeline.map((s) => [s.t, s.failed * perSec]) }
          ]
        },
        markers: restartMarkers(run.markers)
      }),
      caption: (run) => `${run.totals.ok} ok, ${run.totals.shed} shed, ${run.totals.failed} failed`
    },
    {
      title: "The app's request workers: busy of max",
      note: `The seed's Tomcat chart: busy threads against the pool (${inc.plan.workers}). Once the pool is full, /health queues behind business requests. doorman keeps at most ${inc.plan.limit} requests in the app, so a worker is always free.`,
      make: (run, side) => ({
        id: `${prefix}-${side}-workers`,
        title: `${side} doorman`,
        unit: 'workers',
        xMax,
        yMax: inc.plan.workers * 1.2,
        bands: b,
        series: run.timeline[0]?.pods.map((p, i) => ({ name: p.name, color: C.pods[i % C.pods.length] as string, kind: 'step' as const, dashed: i > 0, points: run.timeline.map((s) => [s.t, s.pods[i]?.up === true ? s.pods[i].busy : null] as [number, number | null]) })) ?? [],
        hlines: [{ y: inc.plan.workers, label: `pool max ${inc.plan.workers}`, color: C.max }, ...(run.limit !== null ? [{ y: run.limit, label: `doorman limit ${run.limit}`, color: C.limit }] : [])],
        markers: restartMarkers(run.markers)
      }),
      caption: (run) => `busiest: ${run.maxBusy} of ${run.workers}`
    },
    {
      title: 'Liveness probe latency',
      note: `Slowest liveness probe of the app container per ${step} s (kubelet: timeout ${inc.plan.probe.timeoutMs} ms, ${inc.plan.probe.failureThreshold} failures in a row restart the container). With doorman the probe is answered on doorman's lane, never behind business traffic.`,
      make: (run, side) => ({
        id: `${prefix}-${side}-probe`,
        title: `${side} doorman`,
        unit: 'ms',
        xMax,
        yMax: probeMax,
        bands: b,
        series: run.timeline[0]?.pods.map((p, i) => ({ name: p.name, color: C.pods[i % C.pods.length] as string, kind: 'dots' as const, points: run.timeline.map((s) => [s.t, s.pods[i]?.probeMs ?? null] as [number, number | null]) })) ?? [],
        hlines: [{ y: inc.plan.probe.timeoutMs, label: `timeout ${inc.plan.probe.timeoutMs} ms`, color: C.max }],
        markers: restartMarkers(run.markers)
      }),
      caption: (run) => `slowest: ${run.probe.maxMs} ms, ${run.probe.failures} failed`
    },
    {
      title: 'Pods ready, and restarts',
      note: hang
        ? 'Pods behind the Service. Each ↻ is kubelet killing a container whose liveness failed. Without doorman the app\'s own progress-style check fails on every pod at once and every pod is restarted, which cures nothing: the dependency is still hung. With doorman the same check fails on every pod too, but that is beyond the restart budget (DOORMAN_LIVENESS_MAX_FAILING): a shared cause, so the rewritten liveness passes.'
        : 'Pods behind the Service. Each ↻ is kubelet killing a container whose liveness probe failed: a busy app called dead. When both pods are down the zone is down, as in the seed.',
      make: (run, side) => ({
        id: `${prefix}-${side}-ready`,
        title: `${side} doorman`,
        unit: 'pods',
        xMax,
        yMax: Math.max(inc.plan.pods, ...run.timeline.map((s) => s.restarts)) + 1,
        bands: b,
        series: [
          { name: 'ready pods', color: C.ok, kind: 'step', points: run.timeline.map((s) => [s.t, s.readyPods]) },
          { name: 'restarts (total)', color: C.restart, kind: 'step', dashed: true, points: run.timeline.map((s) => [s.t, s.restarts]) }
        ],
        markers: restartMarkers(run.markers)
      }),
      caption: (run) => `${run.restarts} restart(s), ${run.zeroReadySeconds} s with no pod ready`
    }
  ]
  return rows.map((row) => `<section class="pair"><h3>${esc(row.title)}</h3><p class="note">${esc(row.note)}</p><div class="sides">${runs.map(([side, run]) => `<figure>${chart(row.make(run, side))}<figcaption>${esc(row.caption(run))}</figcaption></figure>`).join('')}</div></section>`).join('\n')
}

function rolloutCharts (run: RolloutRun): string {
  const c = rolloutChartSpecs(run, 'rollout', 'Requests', 'req/s')
  if (c === null) return ''
  return `<section class="pair"><h3>Traffic share during the rollout</h3><p class="note">Each new instance registers once its app is ready (▲) and warms up: its share of traffic rises over its warmup window. The old one it replaces is then terminated (▼): doorman marks it draining in the registry first thing, flags its responses, serves until traffic is quiet, and exits; the consumer stops picking it at once.</p>${chart(c.shares)}</section>
<section class="pair"><div class="sides"><figure>${chart(c.requests)}</figure><figure>${chart(c.weights)}</figure></div></section>`
}

function grpcCharts (run: RolloutRun): string {
  const c = rolloutChartSpecs(run, 'grpc', 'Calls', 'calls/s')
  if (c === null) return ''
  return `<section class="pair"><h3>Share of the one channel's calls, by provider</h3><p class="note">Every call travels on the same HTTP/2 connection from the caller to its doorman, yet each one is balanced on its own: the providers share the calls from the first second (Kubernetes' Service would pin the connection, and so every call, to one pod). Each new provider registers (▲), the old one is sent SIGTERM (▼): it is marked draining in the registry, its doorman flags its answers and sends its HTTP/2 clients GOAWAY, and the consumer stops picking it at once.</p>${chart(c.shares)}</section>
<section class="pair"><div class="sides"><figure>${chart(c.requests)}</figure><figure>${chart(c.weights)}</figure></div></section>`
}

function rolloutChartSpecs (run: RolloutRun, prefix: string, what: string, rateUnit: string): { shares: ChartSpec, requests: ChartSpec, weights: ChartSpec } | null {
  if (run.skipped !== null || run.timeline.length === 0) return null
  const xMax = Math.ceil(run.timeline[run.timeline.length - 1]?.t ?? 1)
  const color = (n: string): string => C.instances[run.instances.indexOf(n) % C.instances.length] as string
  const markers = run.markers.filter((m) => m.kind === 'drain' || m.kind === 'registered').map((m) => ({ t: m.t, label: `${m.label} at ${m.t.toFixed(1)}s`, color: m.kind === 'drain' ? C.failed : C.limit, glyph: m.kind === 'drain' ? '▼' : '▲', bottom: m.kind !== 'drain' }))
  const step = run.timeline.length > 1 ? (run.timeline[1]?.t ?? 1) - (run.timeline[0]?.t ?? 0) : 1
  // Shares over one-second windows: half-second counts at a few dozen requests are too noisy to read.
  const shareStep = Math.max(1, Math.round(1 / step)) * step
  const windows: Array<{ t: number, counts: Record<string, number> }> = []
  for (const s of run.timeline) {
    const end = Math.ceil(s.t / shareStep - 1e-9) * shareStep
    let w = windows[windows.length - 1]
    if (w === undefined || w.t !== end) { w = { t: end, counts: {} }; windows.push(w) }
    for (const [n, c] of Object.entries(s.byInstance)) w.counts[n] = (w.counts[n] ?? 0) + c
  }
  const shares: ChartSpec = {
    id: `${prefix}-share`,
    title: prefix === 'grpc' ? 'Share of calls by provider' : 'Share of traffic by instance',
    unit: '%',
    xMax,
    yMax: 100,
    stack: {
      step: shareStep,
      layers: run.instances.map((n) => ({
        name: n,
        color: color(n),
        values: windows.map((w) => {
          const total = Object.values(w.counts).reduce((a, b) => a + b, 0)
          return [w.t, total === 0 ? 0 : (100 * (w.counts[n] ?? 0)) / total] as [number, number]
        })
      }))
    },
    markers,
    width: 1060,
    height: 230
  }
  const perSec = 1 / step
  const requests: ChartSpec = {
    id: `${prefix}-requests`,
    title: `${what} per second, by outcome`,
    unit: rateUnit,
    xMax,
    yMax: Math.max(...run.timeline.map((s) => (s.ok + s.shed + s.failed) * perSec)),
    stack: { step, layers: [{ name: 'ok', color: C.ok, values: run.timeline.map((s) => [s.t, s.ok * perSec]) }, { name: 'shed', color: C.shed, values: run.timeline.map((s) => [s.t, s.shed * perSec]) }, { name: 'failed', color: C.failed, values: run.timeline.map((s) => [s.t, s.failed * perSec]) }] },
    markers
  }
  const weights: ChartSpec = {
    id: `${prefix}-weights`,
    title: 'Published warmup weight',
    unit: '%',
    xMax,
    yMax: 100,
    series: run.instances.map((n) => ({ name: n, color: color(n), kind: 'line' as const, points: run.timeline.map((s) => [s.t, s.weights[n] ?? null] as [number, number | null]) })),
    markers
  }
  return { shares, requests, weights }
}

function kinds (k: Record<string, number | undefined>): string {
  const parts = Object.entries(k).filter(([, v]) => (v ?? 0) > 0).map(([n, v]) => `${v} ${n}`)
  return parts.length === 0 ? '' : ` <span class="dim">(${esc(parts.join(', '))})</span>`
}

function hangTable (r: Results): string {
  if (r.hang === undefined || r.hang === null) return ''
  const a = r.hang.without
  const b = r.hang.with
  const pods = (x: IncidentRun): number => Object.values(x.restartsByPod).filter((n) => n > 0).length
  const tr = (name: string, x: string, y: string, cls = ''): string => `<tr${cls !== '' ? ` class="${cls}"` : ''}><th>${esc(name)}</th><td>${x}</td><td>${y}</td></tr>`
  return ['<table class="verdict"><thead><tr><th>a dependency hangs</th><th>without doorman</th><th>with doorman</th></tr></thead><tbody>',
    tr('pod restarts', `<b class="bad">${a.restarts}</b> <span class="dim">(${pods(a)} of ${r.hang.plan.pods} pods)</span>`, `<b class="${b.restarts === 0 ? 'good' : 'bad'}">${b.restarts}</b>`, 'key'),
    tr('failed requests', `${a.totals.failed}${kinds(a.totals.kinds)}`, `${b.totals.failed}${kinds(b.totals.kinds)}`),
    tr('shed by doorman (503, safe to retry)', '–', String(b.totals.shed)),
    tr('succeeded', `${a.totals.ok} of ${a.totals.sent}`, `${b.totals.ok} of ${b.totals.sent}`),
    tr('time with no pod ready', `${a.zeroReadySeconds} s`, `${b.zeroReadySeconds} s`),
    '</tbody></table>'].join('\n')
}

function hangSetup (r: Results): string {
  const p = r.hang?.plan
  if (p === undefined) return ''
  const s = (ms: number): string => `${ms / 1000} s`
  return `<details><summary>Setup of the dependency-hang runs</summary><ul>
<li>${p.pods} pods of the same app; ${p.baseRate} req/s; at ${s(p.slowAtMs)} the downstream stops answering the app's sub-task calls altogether, and answers every held call at ${s(p.recoverAtMs)}. Client timeout ${s(p.clientTimeoutMs)} (longer than the hang).</li>
<li>The app's liveness is its own progress-style check, <code>/health/live</code>: down while it has requests in flight and completed none for ${s(p.appStallMs ?? 0)} — as many apps write one. Readiness stays <code>/health</code>. kubelet as in the incident (liveness every ${s(p.probe.periodMs)}, ${p.probe.failureThreshold} failures restart).</li>
<li>With doorman: the same limit, queue and probes rewritten onto the lane; the pods share a file registry, so each one's restart budget (<code>DOORMAN_LIVENESS_MAX_FAILING</code>, default 25%: 1 of ${p.pods}) sees the whole service.</li>
</ul></details>`
}

function verdictTable (r: Results): string {
  const rows: string[] = []
  if (r.incident !== null) {
    const a = r.incident.without
    const b = r.incident.with
    const tr = (name: string, x: string, y: string, cls = ''): string => `<tr${cls !== '' ? ` class="${cls}"` : ''}><th>${esc(name)}</th><td>${x}</td><td>${y}</td></tr>`
    rows.push('<table class="verdict"><thead><tr><th>incident (seed 001)</th><th>without doorman</th><th>with doorman</th></tr></thead><tbody>')
    rows.push(tr('pod restarts', `<b class="bad">${a.restarts}</b>`, `<b class="${b.restarts === 0 ? 'good' : 'bad'}">${b.restarts}</b>`, 'key'))
    rows.push(tr('failed requests', `${a.totals.failed}${kinds(a.totals.kinds)}`, `${b.totals.failed}${kinds(b.totals.kinds)}`))
    rows.push(tr('shed by doorman (503, safe to retry)', '–', String(b.totals.shed)))
    rows.push(tr('succeeded', `${a.totals.ok} of ${a.totals.sent}`, `${b.totals.ok} of ${b.totals.sent}`))
    rows.push(tr('slowest liveness probe', `${a.probe.maxMs} ms <span class="dim">(${a.probe.failures} of ${a.probe.count} failed)</span>`, `${b.probe.maxMs} ms <span class="dim">(${b.probe.failures} of ${b.probe.count} failed)</span>`))
    rows.push(tr('busiest worker pool', `${a.maxBusy} / ${a.workers}`, `${b.maxBusy} / ${b.workers} <span class="dim">(limit ${b.limit ?? '–'})</span>`))
    rows.push(tr('time with no pod ready', `${a.zeroReadySeconds} s`, `${b.zeroReadySeconds} s`))
    rows.push('</tbody></table>')
  }
  rows.push(hangTable(r))
  if (r.rollout !== null) {
    const run = r.rollout.run
    rows.push('<table class="verdict"><thead><tr><th>rollout</th><th colspan="2"></th></tr></thead><tbody>')
    if (run.skipped !== null) rows.push(`<tr><th>not run</th><td colspan="2">${esc(run.skipped)}</td></tr>`)
    else {
      rows.push(`<tr class="key"><th>failed requests</th><td colspan="2"><b class="${run.totals.failed === 0 ? 'good' : 'bad'}">${run.totals.failed}</b> of ${run.totals.sent}${kinds(run.totals.kinds)}</td></tr>`)
      rows.push(`<tr><th>instances replaced</th><td colspan="2">${run.replaced.length} of ${r.rollout.plan.instances}</td></tr>`)
      rows.push(`<tr><th>shed</th><td colspan="2">${run.totals.shed}</td></tr>`)
    }
    rows.push('</tbody></table>')
  }
  if (r.grpc !== undefined && r.grpc !== null) {
    const run = r.grpc.run
    rows.push('<table class="verdict"><thead><tr><th>gRPC rollout</th><th colspan="2"></th></tr></thead><tbody>')
    if (run.skipped !== null) rows.push(`<tr><th>not run</th><td colspan="2">${esc(run.skipped)}</td></tr>`)
    else {
      rows.push(`<tr class="key"><th>failed calls</th><td colspan="2"><b class="${run.totals.failed === 0 ? 'good' : 'bad'}">${run.totals.failed}</b> of ${run.totals.sent}${kinds(run.totals.kinds)}</td></tr>`)
      rows.push(`<tr><th>providers replaced</th><td colspan="2">${run.replaced.length} of ${r.grpc.plan.providers}</td></tr>`)
      rows.push(`<tr><th>shed (UNAVAILABLE + x-doorman-shed)</th><td colspan="2">${run.totals.shed}</td></tr>`)
    }
    rows.push('</tbody></table>')
  }
  rows.push(`<ul class="checks">${r.verdict.checks.map((c) => `<li class="${c.pass ? 'good' : 'bad'}">${c.pass ? '✓' : '✗'} <b>${esc(c.name)}</b>: ${esc(c.detail)}</li>`).join('')}</ul>`)
  return rows.join('\n')
}

function setup (r: Results): string {
  const p = r.incident?.plan
  if (p === undefined) return ''
  const s = (ms: number): string => `${ms / 1000} s`
  return `<details><summary>Setup of the incident runs</summary><ul>
<li>${p.pods} pods of the example app, each with ${p.workers} request workers that every request needs (<code>/health</code> included) and an inner executor of ${p.executor} threads; each business request calls the downstream once, then runs two sub-tasks on the executor and waits for both.</li>
<li>Load: ${p.baseRate} req/s, doubled to ${p.doubledRate} req/s at ${s(p.doubleAtMs)}; the downstream's latency goes from ${p.normalLatencyMs} ms to ${p.slowLatencyMs} ms at ${s(p.slowAtMs)} and back at ${s(p.recoverAtMs)}; client timeout ${s(p.clientTimeoutMs)}.</li>
<li>kubelet: liveness every ${s(p.probe.periodMs)}, timeout ${s(p.probe.timeoutMs)}, failure threshold ${p.probe.failureThreshold}; readiness every ${s(p.probe.periodMs)}; a startup probe holds liveness off while the app boots (${s(p.startupMs)}).</li>
<li>With doorman: <code>DOORMAN_MAX_CONCURRENCY=${p.limit}</code> (below the pool of ${p.workers}), <code>DOORMAN_MAX_QUEUE=${p.maxQueue}</code>, <code>DOORMAN_QUEUE_TIMEOUT=${p.queueTimeoutMs}ms</code>; kubelet probes <code>/livez</code>, <code>/readyz</code> and the app's rewritten <code>/app-health/app/*</code> on the lane (<code>DOORMAN_APP_PROBES</code>).</li>
</ul></details>`
}

function rolloutSetup (r: Results): string {
  const p = r.rollout?.plan
  if (p === undefined) return ''
  const s = (ms: number): string => `${ms / 1000} s`
  return `<details><summary>Setup of the rollout</summary><ul>
<li>${p.instances} instances of the example app, each behind its own doorman, registered in a file registry that every process shares (<code>DOORMAN_REGISTRY=file://…</code>: still no Redis).</li>
<li>A consumer doorman's outbound lane balances ${p.rate} req/s over them by service name (<code>Host: evaluate</code>): weighted power-of-two-choices with the instances' published warmup weights, one retry on a refused connection or a shed request.</li>
<li>Each new instance registers once its app passed startup and readiness and warms up over <code>DOORMAN_WARMUP=${p.warmupMs}ms</code>. The old one is then sent SIGTERM: it is marked draining in the registry first thing, flags its responses with <code>x-doorman-draining: 1</code>, serves for at least <code>DOORMAN_DRAIN_DELAY=${p.drainDelayMs}ms</code> and until traffic is quiet, then exits; its app stops after it. The next replacement starts once the new instance is warm (like <code>minReadySeconds</code>).</li>
<li>Client timeout 10 s; every request is counted as ok, shed or failed. Sampled every ${s(p.sampleMs)}.</li>
</ul></details>`
}

function grpcSetup (r: Results): string {
  const p = r.grpc?.plan
  if (p === undefined) return ''
  const s = (ms: number): string => `${ms / 1000} s`
  return `<details><summary>Setup of the gRPC rollout</summary><ul>
<li>${p.providers} providers, each a grpc-js server behind its own doorman with <code>DOORMAN_APP_PROTOCOL=h2c</code>, registered as <code>${GRPC_SERVICE}</code> in a file registry (as in the HTTP rollout).</li>
<li>The caller is a grpc-js client with one channel for the whole run: target its doorman's outbound port, <code>grpc.default_authority</code> = <code>${GRPC_SERVICE}</code>. ${p.rate} unary calls/s, open loop, each with a ${s(p.deadlineMs)} deadline; every call is counted by its gRPC status (OK, shed = UNAVAILABLE with <code>x-doorman-shed</code>, or failed).</li>
<li>After ${s(p.leadMs)} of steady calls each provider is replaced in turn: the new one starts, passes readiness and registers (warmup <code>${p.warmupMs}ms</code>); the old one's doorman gets SIGTERM (drain delay <code>${p.drainDelayMs}ms</code>), then its app stops.</li>
</ul></details>`
}

export function renderReport (r: Results): string {
  const secs = (ms: number): string => `${(ms / 1000).toFixed(0)} s`
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>doorman demo report</title>
<meta name="viewport" content="width=device-width,initial-scale=1">
<style>
body{font:14px/1.5 system-ui,-apple-system,Segoe UI,sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
main{max-width:1100px;margin:0 auto;padding:1.5rem 1.2rem 3rem}
h1{font-size:1.5rem;margin:.2rem 0}h2{font-size:1.2rem;margin:2rem 0 .5rem;border-bottom:1px solid #d8dee4;padding-bottom:.3rem}
h3{font-size:1rem;margin:1.2rem 0 .2rem}.note{margin:.1rem 0 .5rem;color:#59636e;max-width:75ch}
.sides{display:grid;grid-template-columns:1fr 1fr;gap:12px}figure{margin:0}figcaption{font-size:12px;color:#1f2328;margin:.15rem 0 0 .2rem}
@media (max-width:900px){.sides{grid-template-columns:1fr}}
table.verdict{border-collapse:collapse;margin:.6rem 0;background:#fff;min-width:60%}
table.verdict th,table.verdict td{border:1px solid #d8dee4;padding:.35rem .7rem;text-align:left}
table.verdict thead th{background:#eaeef2}table.verdict tr.key{font-size:1.1rem}
.good{color:#1a7f37}.bad{color:#cf222e}.dim{color:#59636e}
.banner{padding:.6rem 1rem;border-radius:6px;font-weight:600;margin:1rem 0}.banner.pass{background:#dafbe1;color:#116329}.banner.fail{background:#ffebe9;color:#a40e26}
ul.checks{list-style:none;padding:0}code{background:#eaeef2;padding:0 .25em;border-radius:3px}
.lead{max-width:80ch}
${CHART_CSS}
</style></head><body><main>
<h1>doorman demo</h1>
<p class="dim">doorman ${esc(r.version)} · ${r.mode} mode · ${esc(r.startedAt)} · took ${secs(r.durationMs)}</p>
<div class="banner ${r.verdict.pass ? 'pass' : 'fail'}" id="verdict" data-pass="${r.verdict.pass}">${r.verdict.pass ? 'PASS' : 'FAIL'}: ${r.incident !== null ? `${r.incident.without.restarts} restart(s) without doorman, ${r.incident.with.restarts} with it` : ''}${r.hang !== undefined && r.hang !== null ? `${r.incident !== null ? '; ' : ''}dependency hang: ${r.hang.without.restarts} restart(s) without doorman, ${r.hang.with.restarts} with it` : ''}${r.rollout !== null ? `${r.incident !== null || (r.hang ?? null) !== null ? '; ' : ''}rollout: ${r.rollout.run.skipped !== null ? 'not run' : `${r.rollout.run.totals.failed} failed request(s)`}` : ''}${r.grpc !== undefined && r.grpc !== null ? `${r.incident !== null || (r.hang ?? null) !== null || r.rollout !== null ? '; ' : ''}gRPC rollout: ${r.grpc.run.skipped !== null ? 'not run' : `${r.grpc.run.totals.failed} failed call(s)`}` : ''}${r.noisy !== undefined && r.noisy !== null ? `${r.incident !== null || (r.hang ?? null) !== null || r.rollout !== null || (r.grpc ?? null) !== null ? '; ' : ''}noisy neighbour: the light caller ${r.noisy.without.shopDuringFlood.shed} shed without fairness, ${r.noisy.with.shopDuringFlood.shed} with it` : ''}</div>
<p class="lead">A replay of a real incident (seed 001): a service whose liveness probe shares the request worker pool with business
traffic. Traffic doubled after a cut-over, a downstream's latency jumped from ~10 ms to ~500 ms, a small inner executor
became the bottleneck, the worker pool filled up, the probe queued behind business requests and timed out, and kubelet
restarted both busy-but-alive pods: the zone went down. Here it runs twice with real processes on loopback: once with
kubelet probing the app directly, once with doorman in each pod.${r.hang !== undefined && r.hang !== null ? ' Then a dependency every pod calls hangs: a restart cures nothing there, and restarting every pod at once is the same zone-down outcome by another route.' : ''}${r.rollout !== null ? ` Then a rollout (seed 003): three instances behind a consumer doorman are replaced one by one under load; each new one warms up, each old one drains, and no request may fail.` : ''}${r.grpc !== undefined && r.grpc !== null ? ' Last, the same rollout for gRPC: one grpc-js channel through doorman\'s outbound lane, its calls balanced one by one over three providers while each is replaced; no call may fail.' : ''}${r.noisy !== undefined && r.noisy !== null ? ' And a noisy neighbour: one caller floods a service; with fairness across callers, the other caller goes on being served.' : ''}</p>
<h2>Verdict</h2>
${verdictTable(r)}
${r.incident !== null ? `<h2>Incident: without doorman (left) and with doorman (right)</h2>${setup(r)}\n${incidentCharts(r.incident, 'incident')}` : ''}
${r.hang !== undefined && r.hang !== null ? `<h2>A dependency hangs: without doorman (left) and with doorman (right)</h2>${hangSetup(r)}\n${incidentCharts(r.hang, 'hang')}` : ''}
${r.rollout !== null ? `<h2>Rollout: three instances replaced in turn under load</h2>${rolloutSetup(r)}${r.rollout.run.skipped !== null ? `<p class="bad">Not run: ${esc(r.rollout.run.skipped)}</p>` : rolloutCharts(r.rollout.run)}` : ''}
${r.noisy !== undefined && r.noisy !== null ? noisySection(r.noisy.plan, r.noisy.without, r.noisy.with) : ''}
${r.grpc !== undefined && r.grpc !== null ? `<h2>gRPC rollout: one channel, ${r.grpc.plan.providers} providers replaced in turn</h2>${grpcSetup(r)}${r.grpc.run.skipped !== null ? `<p class="bad">Not run: ${esc(r.grpc.run.skipped)}</p>` : grpcCharts(r.grpc.run)}` : ''}
<h2>Read more</h2>
<p>The numbers behind every chart are in <code>results.json</code> beside this file; each process's output is in <code>logs/</code>.
How doorman is built: <code>docs/architecture.md</code>. Probes and their meaning: <code>docs/probes.md</code>.
gRPC: <code>docs/grpc.md</code>. Draining and start-up: <code>docs/lifecycle.md</code>, <code>docs/warmup.md</code>. When things go wrong: <code>docs/troubleshooting.md</code>.</p>
</main></body></html>
`
}
