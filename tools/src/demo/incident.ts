// Scenario 1, the incident of seed 001, replayed twice with real processes: two pods of the example app behind a
// Service, traffic doubled (the 50% → 100% cut-over), then the downstream's latency jumps from ~10 ms to ~500 ms.
// Once with kubelet probing the app directly (its /health waits for a worker like any request), once with doorman
// in each pod (a concurrency limit below the app's pool, probes answered on doorman's lane, the app's own probe
// rewritten onto the lane).
import fs from 'node:fs'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { Downstream } from './downstream.js'
import { LoadGenerator, type Endpoint } from './load.js'
import { Container, Pod, PodWatch, appProbes, freePort, laneCounter, laneState, startApp, startDoorman } from './procs.js'
import type { ContainerEvent, ProbeRecord } from './kubelet.js'
import { sleep, waitUntil } from './time.js'
import type { IncidentPlan, IncidentRun, IncidentSample, Marker, Progress } from './results.js'

export const INCIDENT_FULL: IncidentPlan = {
  pods: 2,
  workers: 20,
  executor: 8,
  limit: 12,
  maxQueue: 20,
  queueTimeoutMs: 1000,
  startupMs: 1500,
  clientTimeoutMs: 5000,
  baseRate: 20,
  doubledRate: 40,
  normalLatencyMs: 10,
  slowLatencyMs: 500,
  doubleAtMs: 3000,
  slowAtMs: 6000,
  recoverAtMs: 17_000,
  endMs: 23_000,
  sampleMs: 500,
  probe: { periodMs: 1000, timeoutMs: 1000, failureThreshold: 3 }
}

export const INCIDENT_SHORT: IncidentPlan = {
  ...INCIDENT_FULL,
  startupMs: 1000,
  doubleAtMs: 1500,
  slowAtMs: 3000,
  recoverAtMs: 10_500,
  endMs: 13_000
}

/**
 * Scenario 2 (issue 16): a dependency every pod calls hangs for 20 s. The app's liveness is its own progress-style
 * check; the client timeout outlasts the hang, so requests wait rather than give up.
 */
export const HANG_FULL: IncidentPlan = {
  ...INCIDENT_FULL,
  pods: 3,
  baseRate: 20,
  doubledRate: 20,
  doubleAtMs: 0,
  slowAtMs: 2000,
  recoverAtMs: 22_000,
  endMs: 26_000,
  clientTimeoutMs: 25_000,
  hang: true,
  appStallMs: 3000
}

export const HANG_SHORT: IncidentPlan = {
  ...HANG_FULL,
  startupMs: 1000,
  slowAtMs: 1500,
  recoverAtMs: 9500,
  endMs: 13_000,
  clientTimeoutMs: 12_000
}

export function phaseAt (plan: IncidentPlan, ms: number): string {
  if (ms < plan.doubleAtMs) return 'baseline'
  if (ms < plan.slowAtMs) return plan.hang === true ? 'baseline' : 'traffic doubled'
  if (ms < plan.recoverAtMs) return plan.hang === true ? 'dependency hung' : 'downstream slow'
  return 'recovery'
}

interface RunOptions {
  signal?: AbortSignal
  withDoorman: boolean
  plan: IncidentPlan
  logDir: string
  onSample: (s: IncidentSample, p: Progress) => void
}

interface PodParts {
  pod: Pod
  watch: PodWatch
  app: Container
  endpoint: Endpoint
  adminPort: number | null
}

async function buildPod (i: number, o: RunOptions, downstream: string, registry: string | null): Promise<PodParts> {
  const { plan } = o
  const name = `pod-${i + 1}`
  const watch = new PodWatch()
  const appPort = await freePort()
  const tag = `${plan.hang === true ? 'hang' : 'incident'}-${o.withDoorman ? 'with' : 'without'}`
  const app = (): ReturnType<typeof startApp> => startApp({
    name, port: appPort, downstream, workers: plan.workers, executor: plan.executor, startupMs: plan.startupMs, logDir: path.join(o.logDir, tag), stallMs: plan.appStallMs
  }, watch.onStats)
  const grace = 500
  // The hang scenario's app checks its own progress for liveness.
  const livePath = plan.hang === true ? '/health/live' : '/health'
  if (!o.withDoorman) {
    const probes = appProbes(appPort, plan.probe, { startup: '/health', liveness: livePath, readiness: '/health' })
    const c = new Container({ name: 'app', start: app, ...probes, terminationGraceMs: grace })
    const pod = new Pod(name, [c])
    return { pod, watch, app: c, endpoint: { name, port: appPort, ready: () => pod.ready }, adminPort: null }
  }
  const inboundPort = await freePort()
  const adminPort = await freePort()
  const own = { httpGet: { path: '/health', port: appPort }, timeoutSeconds: plan.probe.timeoutMs / 1000 }
  const ownLive = { ...own, httpGet: { path: livePath, port: appPort } }
  const sidecar = new Container({
    name: 'doorman',
    start: () => startDoorman({
      name: `${name}-doorman`,
      appPort,
      inboundPort,
      adminPort,
      logDir: path.join(o.logDir, tag),
      env: {
        // The hang: the pods share a registry (a directory; the memory one has no view of the others), so each one's
        // restart budget sees the whole service.
        ...(registry !== null ? { DOORMAN_REGISTRY: registry, DOORMAN_REGISTRY_TTL: '3s' } : {}),
        // The app's stall window is also how long a request completed keeps it "busy, not dead".
        ...(plan.appStallMs !== undefined ? { DOORMAN_APP_STALL: `${plan.appStallMs}ms` } : {}),
        DOORMAN_SERVICE: 'evaluate',
        DOORMAN_MAX_CONCURRENCY: String(plan.limit),
        DOORMAN_MAX_QUEUE: String(plan.maxQueue),
        DOORMAN_QUEUE_TIMEOUT: `${plan.queueTimeoutMs}ms`,
        DOORMAN_WARMUP: '0s',
        DOORMAN_DRAIN_DELAY: '0s',
        DOORMAN_DRAIN_QUIET: '100ms',
        DOORMAN_DRAIN_TIMEOUT: '1s',
        DOORMAN_APP_CHECK_INTERVAL: '500ms',
        // What the injector writes: the app's own probes, now run by the lane over a connection of their own.
        DOORMAN_APP_PROBES: JSON.stringify({ '/app-health/app/startupz': own, '/app-health/app/livez': ownLive, '/app-health/app/readyz': own })
      }
    }),
    ...appProbes(adminPort, plan.probe, { startup: '/startupz', liveness: '/livez', readiness: '/readyz' }),
    terminationGraceMs: grace
  })
  // The app container's probes, rewritten by the injector onto the lane.
  const probes = appProbes(adminPort, plan.probe, { startup: '/app-health/app/startupz', liveness: '/app-health/app/livez', readiness: '/app-health/app/readyz' })
  const c = new Container({ name: 'app', start: app, ...probes, terminationGraceMs: grace })
  const pod = new Pod(name, [sidecar, c])
  return { pod, watch, app: c, endpoint: { name, port: inboundPort, ready: () => pod.ready }, adminPort }
}

/** A file registry in the report folder that every pod of a run shares (as the rollout's). */
function sharedRegistry (logDir: string, name: string): string {
  const dir = path.join(logDir, '..', name)
  fs.rmSync(dir, { recursive: true, force: true })
  fs.mkdirSync(dir, { recursive: true })
  return pathToFileURL(dir).href
}

interface LaneState { inflight: number, limit: number, queued: number, shed: number }


export async function runIncident (o: RunOptions): Promise<IncidentRun> {
  const { plan } = o
  const downstream = new Downstream({ tagLatencyMs: plan.normalLatencyMs })
  const url = await downstream.listen()
  const parts: PodParts[] = []
  const markers: Marker[] = []
  let t0 = 0
  let ending = false
  const rel = (at: number): number => t0 === 0 ? 0 : (at - t0) / 1000
  const load = new LoadGenerator({ endpoints: () => parts.map((p) => p.endpoint), path: '/evaluate', timeoutMs: plan.clientTimeoutMs })
  try {
    const registry = o.withDoorman && plan.hang === true ? sharedRegistry(o.logDir, 'hang-registry') : null
    for (let i = 0; i < plan.pods; i++) parts.push(await buildPod(i, o, url, registry))
    for (const p of parts) {
      p.app.liveness?.on('result', (r: ProbeRecord) => { if (t0 !== 0) p.watch.onProbe(r) })
      for (const c of p.pod.containers) {
        c.on('event', (e: ContainerEvent) => {
          if (e.type === 'exited' && c === p.app) p.watch.stats = null
          if (t0 === 0 || ending) return
          if (e.type === 'killed') markers.push({ t: rel(e.at), kind: 'restart', label: `${p.pod.name} ${c.spec.name} restarted`, detail: e.reason })
          if (e.type === 'ready') markers.push({ t: rel(e.at), kind: e.ready ? 'ready' : 'unready', label: `${p.pod.name} ${c.spec.name} ${e.ready ? 'ready' : 'not ready'}` })
        })
      }
      p.pod.start()
    }
    await waitUntil('every pod to be ready', () => parts.every((p) => p.pod.ready), 30_000, o.signal)

    // The run's clock starts with the traffic.
    t0 = Date.now()
    load.rate = plan.baseRate
    load.start()
    const timeline: IncidentSample[] = []
    const lane = new Map<string, LaneState>()
    let zeroReadyMs = 0
    for (let next = plan.sampleMs; next <= plan.endMs; next += plan.sampleMs) {
      const wait = t0 + next - Date.now()
      await sleep(wait, o.signal)
      const ms = Date.now() - t0
      // The script: traffic doubles, then the downstream slows down, then recovers.
      load.rate = ms >= plan.doubleAtMs ? plan.doubledRate : plan.baseRate
      const slow = ms >= plan.slowAtMs && ms < plan.recoverAtMs
      if (plan.hang === true) downstream.hung = slow
      else downstream.tagLatencyMs = slow ? plan.slowLatencyMs : plan.normalLatencyMs
      for (const p of parts) {
        if (p.adminPort !== null) void laneState<LaneState>(p.adminPort).then((s) => { if (s !== null) lane.set(p.pod.name, s) })
      }
      const b = load.take()
      const pods = parts.map((p) => {
        const w = p.watch.take()
        const ls = lane.get(p.pod.name)
        return {
          name: p.pod.name,
          ready: p.pod.ready,
          up: p.app.proc !== null && p.watch.stats !== null,
          busy: w.busy,
          max: plan.workers,
          queued: p.watch.stats?.queued ?? 0,
          execBusy: p.watch.stats?.execBusy ?? 0,
          execQueued: p.watch.stats?.execQueued ?? 0,
          probeMs: w.probeMs,
          probeFailed: w.probeFailed,
          restarts: p.pod.restarts,
          doorman: ls === undefined ? null : { inflight: ls.inflight, limit: ls.limit, queued: ls.queued, shed: ls.shed }
        }
      })
      const readyPods = pods.filter((p) => p.ready).length
      if (readyPods === 0) zeroReadyMs += plan.sampleMs
      const sample: IncidentSample = {
        t: Math.round(ms / 100) / 10,
        phase: phaseAt(plan, ms),
        rate: load.rate,
        downstreamMs: downstream.hung ? -1 : downstream.tagLatencyMs,
        sent: b.sent,
        ok: b.ok,
        shed: b.shed,
        failed: b.failed,
        p99: Math.round(b.p99),
        readyPods,
        restarts: parts.reduce((n, p) => n + p.pod.restarts, 0),
        pods
      }
      timeline.push(sample)
      o.onSample(sample, { doneMs: ms, totalMs: plan.endMs })
    }
    downstream.hung = false
    load.stop()
    await load.settled()
    // How often each pod's restart budget answered a failing app liveness 200 because the failure was shared.
    const waived = await Promise.all(parts.map(async (p) => p.adminPort === null ? 0 : (await laneCounter(p.adminPort, 'doorman_liveness_waived_total', 'reason="shared"')) ?? 0))
    ending = true
    const durationMs = Date.now() - t0
    const probes = parts.map((p) => p.app.liveness?.stats ?? { probes: 0, failures: 0, maxMs: 0 })
    return {
      withDoorman: o.withDoorman,
      durationMs,
      totals: { ...load.totals, kinds: { ...load.totals.kinds } },
      restarts: parts.reduce((n, p) => n + p.pod.restarts, 0),
      restartsByPod: Object.fromEntries(parts.map((p) => [p.pod.name, p.pod.restarts])),
      probe: {
        count: probes.reduce((n, s) => n + s.probes, 0),
        failures: probes.reduce((n, s) => n + s.failures, 0),
        maxMs: Math.round(Math.max(...timeline.flatMap((s) => s.pods.map((p) => p.probeMs ?? 0)))),
        timeoutMs: plan.probe.timeoutMs
      },
      maxBusy: Math.max(...timeline.flatMap((s) => s.pods.map((p) => p.busy))),
      workers: plan.workers,
      limit: o.withDoorman ? plan.limit : null,
      zeroReadySeconds: zeroReadyMs / 1000,
      livenessWaived: o.withDoorman ? waived.reduce((a, b) => a + b, 0) : undefined,
      markers: markers.sort((a, b) => a.t - b.t),
      timeline
    }
  } finally {
    load.close()
    await Promise.all(parts.map(async (p) => { await p.pod.stop() }))
    await downstream.close()
  }
}
