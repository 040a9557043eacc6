// Scenario 2, the rollout (seed 003): three instances of the example app, each with its doorman, registered in a
// registry that every process shares; a consumer doorman in front balances over them through its outbound lane.
// Under steady load each old instance is replaced in turn, as a Deployment's rolling update does it: the new pod
// starts, registers once ready and warms up (its share of traffic rises over its warmup window); the old pod is
// terminated (SIGTERM: doorman drains, is deregistered first thing, flags its responses, waits for quiet), then its
// app stops. The load generator counts every request: none may fail.
import fs from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { Downstream } from './downstream.js'
import { LoadGenerator } from './load.js'
import { Container, Pod, appProbes, freePort, laneState, startApp, startDoorman } from './procs.js'
import { sleep, waitUntil } from './time.js'
import type { Marker, Progress, RolloutPlan, RolloutRun, RolloutSample } from './results.js'

export const ROLLOUT_FULL: RolloutPlan = { instances: 3, rate: 60, warmupMs: 6000, drainDelayMs: 1500, settleMs: 1000, sampleMs: 500, tailMs: 3000 }
export const ROLLOUT_SHORT: RolloutPlan = { ...ROLLOUT_FULL, warmupMs: 3000, drainDelayMs: 1000, settleMs: 500, tailMs: 1500 }

const SERVICE = 'evaluate'
const PROBE = { periodMs: 1000, timeoutMs: 1000, failureThreshold: 3 }

interface RunOptions {
  plan: RolloutPlan
  logDir: string
  signal?: AbortSignal
  onSample: (s: RolloutSample, p: Progress, note: string) => void
}

/**
 * A registry every process of the rollout shares: the embedded `memory` registry lives inside one process, so the
 * rollout uses a file registry, a directory in the report folder (still no Redis, no cluster).
 */
function sharedRegistry (logDir: string): string {
  const dir = path.join(logDir, '..', 'registry')
  fs.rmSync(dir, { recursive: true, force: true })
  fs.mkdirSync(dir, { recursive: true })
  return pathToFileURL(dir).href
}

interface Instance {
  name: string
  pod: Pod
  doorman: Container
  adminPort: number
}

interface LaneState { warmup?: { weight: number, progress: number }, registration?: { registered: boolean }, phase?: string }

export async function runRollout (o: RunOptions): Promise<RolloutRun> {
  const { plan } = o
  const empty = (skipped: string): RolloutRun => ({ skipped, durationMs: 0, totals: { sent: 0, ok: 0, shed: 0, failed: 0, kinds: {} }, instances: [], replaced: [], markers: [], timeline: [], shareRise: {} })
  const registry = sharedRegistry(o.logDir)

  const logDir = path.join(o.logDir, 'rollout')
  const downstream = new Downstream()
  const url = await downstream.listen()
  const live: Instance[] = []
  const all: Instance[] = []
  const markers: Marker[] = []
  let consumer: Container | null = null
  let t0 = 0
  const rel = (): number => t0 === 0 ? 0 : Math.round((Date.now() - t0) / 100) / 10
  let lg: LoadGenerator | null = null
  const stub = net.createServer((sock) => { sock.destroy() })

  const startInstance = async (name: string, warmupMs: number): Promise<Instance> => {
    const appPort = await freePort()
    const inboundPort = await freePort()
    const adminPort = await freePort()
    const own = { httpGet: { path: '/health', port: appPort }, timeoutSeconds: 1 }
    const doorman = new Container({
      name: 'doorman',
      start: () => startDoorman({
        name: `${name}-doorman`,
        appPort,
        inboundPort,
        adminPort,
        logDir,
        env: {
          DOORMAN_SERVICE: SERVICE,
          DOORMAN_REGISTRY: registry,
          DOORMAN_ADVERTISE_HOST: '127.0.0.1',
          DOORMAN_REGISTRY_TTL: '3s',
          DOORMAN_MAX_CONCURRENCY: '50',
          DOORMAN_WARMUP: `${warmupMs}ms`,
          DOORMAN_DRAIN_DELAY: `${plan.drainDelayMs}ms`,
          DOORMAN_DRAIN_QUIET: '300ms',
          // The default bound: a loaded machine can make requests slow, and the drain must not cut them.
          DOORMAN_DRAIN_TIMEOUT: '25s',
          DOORMAN_APP_CHECK_INTERVAL: '250ms',
          DOORMAN_APP_PROBES: JSON.stringify({ '/app-health/app/startupz': own, '/app-health/app/livez': own, '/app-health/app/readyz': own })
        }
      }),
      ...appProbes(adminPort, PROBE, { startup: '/startupz', liveness: '/livez', readiness: '/readyz' }),
      // SIGTERM starts doorman's drain; the grace period covers it (delay + timeout + margin).
      terminationGraceMs: plan.drainDelayMs + 30_000
    })
    const app = new Container({
      name: 'app',
      start: () => startApp({ name, port: appPort, downstream: url, workers: 64, executor: 32, startupMs: 300, logDir }, () => {}),
      ...appProbes(adminPort, PROBE, { startup: '/app-health/app/startupz', liveness: '/app-health/app/livez', readiness: '/app-health/app/readyz' }),
      terminationGraceMs: 2000
    })
    const pod = new Pod(name, [doorman, app])
    const inst: Instance = { name, pod, doorman, adminPort }
    all.push(inst)
    pod.start()
    return inst
  }

  const registered = async (inst: Instance): Promise<boolean> => (await laneState<LaneState>(inst.adminPort))?.registration?.registered === true

  try {
    // The starting fleet has been up for a long time: no warmup.
    const names = Array.from({ length: plan.instances }, (_, i) => String.fromCharCode(97 + i))
    for (const n of names) live.push(await startInstance(`v1-${n}`, 0))
    const consumerApp = await freePort()
    const outbound = await freePort()
    const consumerAdmin = await freePort()
    // The consumer's own app is not part of the story: the load generator plays it, calling through the outbound lane.
    await new Promise<void>((resolve) => { stub.listen(consumerApp, '127.0.0.1', resolve) })
    consumer = new Container({
      name: 'consumer',
      start: () => startDoorman({
        name: 'consumer-doorman',
        appPort: consumerApp,
        // The consumer's inbound listener plays no part here: any free port.
        inboundPort: 0,
        adminPort: consumerAdmin,
        outboundPort: outbound,
        logDir,
        env: { DOORMAN_SERVICE: 'frontend', DOORMAN_REGISTRY: registry, DOORMAN_REGISTRY_TTL: '3s', DOORMAN_WARMUP: '0s', DOORMAN_DRAIN_DELAY: '0s', DOORMAN_DRAIN_QUIET: '100ms' }
      }),
      terminationGraceMs: 2000
    })
    consumer.start()
    await waitUntil('the first instances to be ready', () => live.every((i) => i.pod.ready), 30_000, o.signal)
    const consumerReady = await pollUntil(async () => (await laneState<LaneState>(consumerAdmin)) !== null, 15_000, o.signal)
    if (!consumerReady) throw new Error('the consumer doorman did not start (see logs/rollout/consumer-doorman.log)')
    const outboundWorks = await pollUntil(async () => await probeOutbound(outbound), 10_000, o.signal)
    if (!outboundWorks) return empty('the consumer doorman\'s outbound lane routed no request to the instances (see logs/rollout/)')

    const outboundEndpoint = { name: 'consumer', port: outbound, ready: () => true }
    const load = new LoadGenerator({ endpoints: () => [outboundEndpoint], path: '/evaluate', timeoutMs: 10_000, headers: { host: SERVICE } })
    lg = load
    t0 = Date.now()
    load.rate = plan.rate
    load.start()

    const timeline: RolloutSample[] = []
    const weights = new Map<string, number>()
    let note = 'steady: three warm instances'
    let sampling = true
    // Each replacement: about two seconds to start and register, then the warmup and a pause.
    const estimate = plan.instances * (2000 + plan.warmupMs + plan.settleMs) + plan.settleMs + plan.tailMs
    const sampler = (async () => {
      for (let next = plan.sampleMs; sampling; next += plan.sampleMs) {
        await sleep(t0 + next - Date.now(), o.signal)
        for (const inst of live) {
          // A weight counts once the instance is registered: before that no consumer sees it.
          void laneState<LaneState>(inst.adminPort).then((s) => { if (s?.warmup !== undefined && s.registration?.registered === true) weights.set(inst.name, s.warmup.weight) })
        }
        const b = load.take()
        const w: Record<string, number> = {}
        for (const inst of live) { const v = weights.get(inst.name); if (v !== undefined) w[inst.name] = v }
        const sample: RolloutSample = { t: Math.round(next / 100) / 10, sent: b.sent, ok: b.ok, shed: b.shed, failed: b.failed, p99: Math.round(b.p99), byInstance: b.byInstance, weights: w }
        timeline.push(sample)
        o.onSample(sample, { doneMs: next, totalMs: Math.max(estimate, next) }, note)
      }
    })()

    const replaced: RolloutRun['replaced'] = []
    await sleep(plan.settleMs, o.signal)
    for (let i = 0; i < plan.instances; i++) {
      const old = live[0] as Instance
      const name = `v2-${names[i] as string}`
      note = `${name} starting`
      markers.push({ t: rel(), kind: 'start', label: `${name} started` })
      const fresh = await startInstance(name, plan.warmupMs)
      await pollUntil(async () => fresh.pod.ready && await registered(fresh), 30_000, o.signal)
      markers.push({ t: rel(), kind: 'registered', label: `${name} registered, warming up` })
      live.push(fresh)
      // The rolling update moves on once the new pod is ready: the old one is terminated now.
      note = `${old.name} draining, ${name} warming up`
      const drainStartedT = rel()
      markers.push({ t: drainStartedT, kind: 'drain', label: `${old.name} drains` })
      await old.doorman.stop()
      await old.pod.stop()
      const drainDoneT = rel()
      markers.push({ t: drainDoneT, kind: 'stopped', label: `${old.name} stopped` })
      live.splice(live.indexOf(old), 1)
      weights.delete(old.name)
      replaced.push({ old: old.name, new: name, drainStartedT, drainDoneT })
      // Like minReadySeconds: the next replacement waits until this one is warm.
      note = `${name} warming up`
      await pollUntil(async () => (await laneState<LaneState>(fresh.adminPort))?.warmup?.progress === 1, plan.warmupMs + 10_000, o.signal)
      await sleep(plan.settleMs, o.signal)
    }
    note = 'steady: three new instances'
    await sleep(plan.tailMs, o.signal)
    load.stop()
    sampling = false
    await sampler
    const end = timeline[timeline.length - 1]
    if (end !== undefined) o.onSample(end, { doneMs: end.t * 1000, totalMs: end.t * 1000 }, note)
    await load.settled()
    const rest = load.take()
    const last = timeline[timeline.length - 1]
    if (last !== undefined) { last.sent += rest.sent; last.ok += rest.ok; last.shed += rest.shed; last.failed += rest.failed }
    const durationMs = Date.now() - t0
    return {
      skipped: null,
      durationMs,
      totals: { ...load.totals, kinds: { ...load.totals.kinds } },
      instances: all.map((i) => i.name),
      replaced,
      markers,
      timeline,
      shareRise: shareRise(timeline, replaced.map((r) => r.new), markers, plan)
    }
  } finally {
    lg?.close()
    await Promise.all(all.map(async (i) => { await i.pod.stop() }))
    await consumer?.stop()
    await downstream.close()
    stub.close()
  }
}

async function pollUntil (fn: () => Promise<boolean>, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await fn()) return true
    if (Date.now() > deadline) return false
    await sleep(100, signal)
  }
}

/** One request through the consumer's outbound lane by service name: does it reach an instance? */
async function probeOutbound (port: number): Promise<boolean> {
  // node:http, not fetch: fetch does not let a caller set Host, and Host is how the outbound lane is addressed.
  return await new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/evaluate', headers: { host: SERVICE }, agent: false, timeout: 2000 }, (res) => {
      res.resume()
      res.on('end', () => { resolve(res.statusCode === 200 && res.headers['x-instance'] !== undefined) })
    })
    req.on('timeout', () => { req.destroy() })
    req.on('error', () => { resolve(false) })
  })
}

/**
 * Each new instance's share of the traffic in one-second windows, from its registration to the end of its warmup
 * (plus a second): it should rise.
 */
function shareRise (timeline: RolloutSample[], fresh: string[], markers: Marker[], plan: RolloutPlan): Record<string, number[]> {
  const out: Record<string, number[]> = {}
  for (const name of fresh) {
    const from = markers.find((m) => m.kind === 'registered' && m.label.startsWith(name + ' '))?.t
    if (from === undefined) continue
    const to = from + plan.warmupMs / 1000 + 1
    const shares: number[] = []
    for (let w = from; w < to; w += 1) {
      let mine = 0
      let total = 0
      for (const s of timeline) {
        if (s.t <= w || s.t > w + 1) continue
        for (const [n, c] of Object.entries(s.byInstance)) { total += c; if (n === name) mine += c }
      }
      if (total > 0) shares.push(Math.round((1000 * mine) / total) / 10)
    }
    out[name] = shares
  }
  return out
}
