// The lane thread: the admin/probe server on its own event loop. It answers probes from shared memory, runs the
// app's own probes over connections of its own, and asks the main thread only for metrics (with a timeout).
import { OPENMETRICS_CONTENT_TYPE, toOpenMetrics, wantsOpenMetrics, type Exemplar } from '../metrics/openmetrics.js'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { parentPort, workerData } from 'node:worker_threads'
import { timingSafeEqual } from 'node:crypto'
import { once } from 'node:events'
import { getHeapStatistics } from 'node:v8'
import { SharedState, S, T, nowMs } from './shared.js'
import { startupChecks, livenessChecks, readinessChecks, appRegistryCheck, appLivenessChecks, applyRestartBudget, restartBudget, appProbeRoute, render, ProgressTracker, readinessTiming, ReadinessStreak, type Check, type Fleet } from './probes.js'
import { runProbe, tcpProbe, type ProbeResult } from './app-probe.js'
import type { LaneData, ToLane, FromLane } from './messages.js'
import { statusPage } from './status-page.js'
import { setLanePriority } from './priority.js'
import { http } from '../core/http.js'
import { ProbeLaneMetrics, CONTENT_TYPE } from './metrics.js'

const data = workerData as LaneData
const port = parentPort as NonNullable<typeof parentPort>
const state = new SharedState(data.buffer)
const cfg = data.settings
const target = { host: cfg.appHost, port: cfg.appPort }
const send = (m: FromLane): void => { port.postMessage(m) }
// First, before the server exists: probes are answered at this priority from the first one on.
const priority = setLanePriority(cfg.laneNice)

// --- metrics owned by the lane ---
const metrics = new ProbeLaneMetrics()
const observeProbe = metrics.histogram('doorman_probe_duration_seconds', 'Time the lane took to answer a probe, by probe.',
  [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1])
const probeFailed = metrics.counter('doorman_probe_failures_total', 'Probes answered with a failure, by probe.')
let lastReady = false
metrics.gauge('doorman_ready', '1 when the lane reports the pod ready for traffic.', () => Number(lastReady))
metrics.gauge('doorman_main_loop_stall_seconds', "Age of the main thread's last heartbeat, as the lane sees it.", () => state.heartbeatAge() / 1000)
metrics.gauge('doorman_lane_nice', "The lane thread's nice value (lower runs first; DOORMAN_LANE_NICE asks for it).", () => priority.nice)
let maxStall = 0
metrics.gauge('doorman_main_loop_max_stall_seconds', 'Longest main-thread heartbeat gap the lane has seen.', () => maxStall / 1000)
metrics.gauge('doorman_app_ready', '1 while the app passes its readiness check.', () => state.get(S.APP_READY))
if (data.info.appRegistry === true) {
  metrics.gauge('doorman_app_registered', "1 once the app has registered itself in its own registry (DOORMAN_APP_REGISTRY): readiness' registration latch.", () => state.get(S.APP_REGISTERED))
  metrics.gauge('doorman_app_registry_up', "1 while the app's own registry (DOORMAN_APP_REGISTRY) is reachable.", () => state.get(S.APP_REGISTRY_UP))
}
metrics.gauge('doorman_lane_heap_size_used_bytes', "The lane thread's V8 heap in use.", () => getHeapStatistics().used_heap_size)
metrics.gauge('doorman_lane_heap_size_total_bytes', "The lane thread's V8 heap, in use or free.", () => getHeapStatistics().total_heap_size)
metrics.gauge('doorman_lane_heap_size_limit_bytes', "The most the lane thread's V8 heap may hold (its resource limits).", () => getHeapStatistics().heap_size_limit)

// --- the restart budget (DOORMAN_LIVENESS_MAX_FAILING) ---
const fleet = (): Fleet => ({ view: state.flag(S.FLEET_VIEW), others: state.get(S.FLEET_OTHERS), othersFailing: state.get(S.FLEET_OTHERS_FAILING) })
const livenessWaived = metrics.counter('doorman_liveness_waived_total', "App liveness probes answered 200 although the app's liveness check failed, by reason: `shared` (beyond the restart budget), `no-view` (memory registry, a stall alone), `confirming` (waiting for the other instances' reports).", 'reason')
metrics.gauge('doorman_app_liveness_failing', "1 while the app's liveness check fails, before the restart budget (what the instance publishes in the registry).", () => state.get(S.APP_LIVE_FAILING))
// The service's name as a label, so that alerts can compare a service's instances' views.
const svc = { service: String(data.info.service ?? '') }
metrics.gauge('doorman_liveness_service_failing', "Instances of this instance's service failing their app liveness or restarting, this one included, as it sees them (0 without a view).", () => { const f = fleet(); return f.view ? f.othersFailing + state.get(S.APP_LIVE_FAILING) : 0 }, svc)
metrics.gauge('doorman_liveness_service_instances', "Instances of this instance's service (not draining), this one included, as it sees them (0 without a view).", () => { const f = fleet(); return f.view ? f.others + 1 : 0 }, svc)
metrics.gauge('doorman_liveness_budget', 'The restart budget: the most instances of the service whose app liveness may fail at once (0 without a view).', () => { const f = fleet(); return f.view ? restartBudget(f.others + 1, cfg.livenessMaxFailing) : 0 }, svc)
let livezAsked = false
let lastLiveVerdict = 'ok'
function setLiveFailing (failing: boolean, now: number): void {
  if (failing === state.flag(S.APP_LIVE_FAILING)) return
  state.set(S.APP_LIVE_FAILING, Number(failing))
  state.setTime(T.APP_LIVE_FAILING_SINCE, failing ? now : 0)
}

// --- the app's checks, on the lane's own timer ---
const progress = new ProgressTracker(state, cfg)
const probesByKind = (kind: string): Array<[string, NonNullable<LaneData['settings']['appProbes'][string]>]> =>
  Object.entries(cfg.appProbes).filter(([path]) => path.endsWith('/' + kind))

async function checkAll (kind: 'startupz' | 'readyz'): Promise<ProbeResult> {
  const probes = probesByKind(kind)
  if (probes.length === 0) return await tcpProbe(cfg.appHost, cfg.appPort, 1000)
  const results = await Promise.all(probes.map(async ([, p]) => await runProbe(p, target)))
  const bad = results.find((r) => !r.ok)
  return bad ?? { ok: true, detail: results.map((r) => r.detail).join(', ') }
}

// Once the app has started, its readiness is checked on its readiness probe's period, and APP_READY (which the
// registration follows) changes only after its failure or success threshold, as kubelet's verdict would.
const timing = readinessTiming(probesByKind('readyz').map(([, p]) => p), cfg.appCheckInterval)
const streak = new ReadinessStreak(timing.failureThreshold, timing.successThreshold)
metrics.gauge('doorman_app_readiness_failures', "Consecutive failures of the app's readiness check (APP_READY turns 0 at the probe's failureThreshold).", () => streak.failures)
async function appCheck (): Promise<void> {
  if (!state.flag(S.APP_STARTED)) {
    const hasStartup = probesByKind('startupz').length > 0
    const r = await checkAll(hasStartup ? 'startupz' : 'readyz')
    if (!r.ok) { state.set(S.APP_READY, 0); return }
    state.set(S.APP_STARTED, 1)
    if (!hasStartup) { state.set(S.APP_READY, 1); return }
  }
  const r = await checkAll('readyz')
  state.set(S.APP_READY, Number(streak.next(state.flag(S.APP_READY), r.ok)))
}
let appTimer: NodeJS.Timeout | undefined
let stopping = false
function scheduleAppCheck (): void {
  if (stopping) return
  appTimer = setTimeout(() => {
    appCheck().catch(() => {}).finally(scheduleAppCheck)
  }, state.flag(S.APP_STARTED) ? timing.period : cfg.appCheckInterval)
}
appCheck().catch(() => {}).finally(scheduleAppCheck)
progress.sample(nowMs())
const progressTimer = setInterval(() => {
  const now = nowMs()
  progress.sample(now)
  // Progress-only liveness: publish a stall as it happens (not at kubelet's next probe), once liveness is probed.
  if (livezAsked && Object.keys(cfg.appProbes).length === 0) setLiveFailing(progress.stalledFor(now) >= cfg.appStall, now)
  const age = state.heartbeatAge(now)
  if (age > maxStall) maxStall = age
  if (drainWaiters.size > 0) answerDrainWaiters()
}, 50)

// --- metrics from the main thread, with a timeout ---
let nextId = 1
const pendingMetrics = new Map<number, (m: { text: string | null, exemplars?: Exemplar[] }) => void>()
async function mainMetrics (): Promise<{ text: string | null, exemplars?: Exemplar[] }> {
  const id = nextId++
  return await new Promise((resolve) => {
    const timer = setTimeout(() => { pendingMetrics.delete(id); resolve({ text: null }) }, 1000)
    pendingMetrics.set(id, (m) => { clearTimeout(timer); resolve(m) })
    send({ type: 'metrics', id })
  })
}

// What the main thread last told of the app's own registry (DOORMAN_APP_REGISTRY), for /state only: probes read the
// shared slots.
let appRegistry: Record<string, unknown> | null = null
function appRegistryState (): Record<string, unknown> | null {
  if (!state.flag(S.APP_REGISTRY_REQUIRED)) return null
  const at = state.time(T.APP_REGISTERED_AT)
  return { ...appRegistry, up: state.flag(S.APP_REGISTRY_UP), registered: state.flag(S.APP_REGISTERED), registeredAt: at === 0 ? null : new Date(at).toISOString() }
}

port.on('message', (m: ToLane) => {
  if (m.type === 'metrics') { pendingMetrics.get(m.id)?.(m); pendingMetrics.delete(m.id) } else if (m.type === 'close') { void shutdown() } else if (m.type === 'app-registry') appRegistry = m.status
})

// --- the server ---
/** The pod's own loopback: other containers of the pod call from here. Other 127/8 addresses are not trusted. */
function isLoopback (addr: string | undefined): boolean {
  return addr === '127.0.0.1' || addr === '::1' || addr === '::ffff:127.0.0.1'
}

function tokenOk (header: string | undefined): boolean {
  if (cfg.adminToken === '' || header === undefined) return false
  const m = /^Bearer\s+(.+)$/i.exec(header)
  if (m === null) return false
  const a = Buffer.from(m[1])
  const b = Buffer.from(cfg.adminToken)
  return a.length === b.length && timingSafeEqual(a, b)
}

function drainAllowed (req: IncomingMessage): boolean {
  const addr = req.socket.remoteAddress
  if (isLoopback(addr)) return true
  if (cfg.nodeIp !== '' && (addr === cfg.nodeIp || addr === `::ffff:${cfg.nodeIp}`)) return true
  return tokenOk(req.headers.authorization)
}

function reply (res: ServerResponse, status: number, body: string, type = 'text/plain; charset=utf-8'): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' })
  res.end(body)
}

function probe (res: ServerResponse, name: string, started: number, checks: Check[], verbose: boolean): void {
  const r = render(checks, verbose, name)
  if (name === 'readyz') lastReady = r.status === 200
  if (r.status !== 200) probeFailed(name)
  reply(res, r.status, r.body)
  observeProbe(name, (performance.now() - started) / 1000)
}

/** The heaviest flows the main thread published (DOORMAN_FAIRNESS=flow), at most ten; [] when none. */
function heaviestFlows (): unknown[] {
  const text = state.flows()
  if (text === '') return []
  try { return JSON.parse(text) as unknown[] } catch { return [] }
}

export function stateJson (): Record<string, unknown> {
  const now = nowMs()
  const drainStarted = state.time(T.DRAIN_STARTED)
  const registeredAt = state.time(T.REGISTERED_AT)
  const ready = readinessChecks(state, cfg, now).every((c) => c.ok)
  return {
    ...data.info,
    phase: state.phase,
    ready,
    live: livenessChecks(state, cfg, now).every((c) => c.ok),
    limit: state.get(S.LIMIT),
    baseLimit: state.get(S.BASE_LIMIT),
    inflight: state.get(S.INFLIGHT),
    queued: state.get(S.QUEUED),
    arrived: state.get(S.ARRIVED),
    completed: state.get(S.COMPLETED),
    failed: state.get(S.FAILED),
    shed: state.get(S.SHED),
    upgrades: state.get(S.UPGRADES),
    flows: heaviestFlows(),
    app: { started: state.flag(S.APP_STARTED), ready: state.flag(S.APP_READY) },
    appRegistry: appRegistryState(),
    registration: { required: state.flag(S.REGISTRY_REQUIRED), registered: state.flag(S.REGISTERED), registryUp: state.flag(S.REGISTRY_UP), connections: { commands: state.get(S.REGISTRY_CONNECTIONS), subscriber: state.get(S.REGISTRY_SUBSCRIBER_CONNECTIONS) }, registeredAt: registeredAt === 0 ? null : new Date(registeredAt).toISOString() },
    warmup: { progress: state.get(S.WARMUP_PROGRESS) / 10000, weight: state.get(S.WEIGHT) / 100 },
    drain: drainStarted === 0
      ? null
      : { startedAt: new Date(drainStarted).toISOString(), elapsedMs: Math.round(now - drainStarted), inflightAtStart: state.get(S.DRAIN_INFLIGHT_AT_START), served: state.get(S.DRAIN_SERVED), cut: state.get(S.DRAIN_CUT) },
    mainLoop: { heartbeatAgeMs: Math.round(state.heartbeatAge(now)), maxStallMs: Math.round(maxStall) }
  }
}

// Callers of /drain?wait=1, answered when the drain has finished (or when the lane stops).
const drainWaiters = new Set<ServerResponse>()
function answerDrainWaiters (stopping = false): Array<Promise<unknown>> {
  const phase = state.phase
  if (phase !== 'closed' && !stopping) return []
  const sent = [...drainWaiters].map(async (res) => {
    const finished = once(res, 'finish').catch(() => {})
    if (phase === 'closed') reply(res, 200, JSON.stringify({ phase, cut: state.get(S.DRAIN_CUT) }) + '\n', 'application/json')
    else reply(res, 503, JSON.stringify({ phase, error: 'the sidecar stopped before the drain finished' }) + '\n', 'application/json')
    await finished
  })
  drainWaiters.clear()
  return sent
}

async function handle (req: IncomingMessage, res: ServerResponse): Promise<void> {
  const started = performance.now()
  const url = req.url ?? '/'
  const q = url.indexOf('?')
  const path = q === -1 ? url : url.slice(0, q)
  const verbose = q !== -1 && /(^|&)verbose(=|&|$)/.test(url.slice(q + 1))
  const now = nowMs()
  if (req.method === 'GET' || req.method === 'HEAD') {
    switch (path) {
      case '/livez': probe(res, 'livez', started, livenessChecks(state, cfg, now), verbose); return
      case '/readyz': probe(res, 'readyz', started, readinessChecks(state, cfg, now), verbose); return
      case '/startupz': probe(res, 'startupz', started, startupChecks(state), verbose); return
      case '/state': reply(res, 200, JSON.stringify(stateJson()) + '\n', 'application/json'); return
      case '/': reply(res, 200, statusPage(), 'text/html; charset=utf-8'); return
      case '/metrics': {
        const main = await mainMetrics()
        const body = (main.text ?? '# doorman: the main thread did not answer within 1s; lane metrics only\n') + metrics.text()
        // Prometheus asks for OpenMetrics when it stores exemplars: the request-duration buckets carry trace ids.
        if (wantsOpenMetrics(req.headers.accept)) reply(res, 200, toOpenMetrics(body, main.exemplars), OPENMETRICS_CONTENT_TYPE)
        else reply(res, 200, body, CONTENT_TYPE)
        return
      }
    }
    const route = appProbeRoute(path, cfg.appProbes)
    if (route?.kind === 'unknown') {
      probeFailed('app-unknown')
      reply(res, 404, `no app probe at ${path}: DOORMAN_APP_PROBES holds ${route.held.join(', ')}\n`)
      return
    }
    if (route !== null) {
      const name = `app-${route.kind}`
      if (route.kind === 'livez') {
        const ownCheck = route.own === null ? null : await runProbe(route.own, target).then((r) => ({ name: 'app-probe', ok: r.ok, detail: r.detail }))
        const at = nowMs()
        progress.sample(at)
        livezAsked = true
        const checks = appLivenessChecks(progress, ownCheck, at)
        setLiveFailing(checks.some((c) => !c.ok), at)
        const v = applyRestartBudget(checks, fleet(), cfg.livenessMaxFailing, state.time(T.APP_LIVE_FAILING_SINCE), at)
        if (v.waivedBy !== undefined) livenessWaived(v.waivedBy)
        // The log line is written when the verdict changes; a failure waiting for the others' reports is not one yet.
        const kind = v.waivedBy === 'confirming' ? 'confirming' : v.verdict
        if (kind !== lastLiveVerdict && kind !== 'confirming') send({ type: 'liveness', verdict: v.verdict, reason: v.reason, failing: v.failing, total: v.total, budget: v.budget })
        if (kind !== 'confirming') lastLiveVerdict = kind
        probe(res, name, started, v.checks, verbose)
        return
      }
      const r = route.own === null ? await tcpProbe(cfg.appHost, cfg.appPort, 1000) : await runProbe(route.own, target)
      const checks: Check[] = [{ name: 'app-probe', ok: r.ok, detail: r.detail }]
      // The app is ready only once it has registered itself (DOORMAN_APP_REGISTRY); its startup doesn't wait for it.
      if (route.kind === 'readyz') checks.push(appRegistryCheck(state))
      probe(res, name, started, checks, verbose)
      return
    }
  }
  // `?wait=1` answers only once drained: the injected preStop hook is a kubelet httpGet (a GET), and kubelet sends
  // the app SIGTERM when the hook returns. A GET must ask to wait, so a stray GET never starts a drain.
  const wait = q !== -1 && /(^|&)wait(=1|=true)?(&|$)/.test(url.slice(q + 1))
  if (path === '/drain' && (req.method === 'POST' || (req.method === 'GET' && wait))) {
    if (!drainAllowed(req)) { reply(res, 403, 'forbidden: /drain needs loopback, the node address, or Authorization: Bearer <DOORMAN_ADMIN_TOKEN>\n'); return }
    state.drainAccepted()
    send({ type: 'drain', source: req.socket.remoteAddress ?? 'unknown' })
    if (wait) { drainWaiters.add(res); res.once('close', () => drainWaiters.delete(res)); answerDrainWaiters(); return }
    reply(res, 202, JSON.stringify({ phase: state.phase }) + '\n', 'application/json')
    return
  }
  reply(res, 404, 'not found\n')
}

const server = http.createServer({ keepAliveTimeout: 5_000, headersTimeout: 5_000, requestTimeout: 10_000 }, (req, res) => {
  handle(req, res).catch((err: Error) => { if (!res.headersSent) reply(res, 500, `lane error: ${err.message}\n`); else res.destroy() })
})
server.on('clientError', (_err, socket) => { socket.destroy() })
server.listen(cfg.adminPort, cfg.bindHost, () => {
  state.set(S.LANE_UP, 1)
  send({ type: 'listening', port: (server.address() as { port: number }).port, priority })
})
server.on('error', (err) => { send({ type: 'error', message: err.message, code: (err as NodeJS.ErrnoException).code }) })

async function shutdown (): Promise<void> {
  stopping = true
  clearTimeout(appTimer)
  clearInterval(progressTimer)
  state.set(S.LANE_UP, 0)
  const answered = answerDrainWaiters(true)
  if (answered.length > 0) await Promise.race([Promise.all(answered), new Promise((resolve) => setTimeout(resolve, 500))])
  server.closeAllConnections()
  await new Promise<void>((resolve) => { server.close(() => { resolve() }) })
  port.close()
}
