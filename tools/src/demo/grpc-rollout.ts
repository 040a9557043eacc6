// Scenario 4, the gRPC rollout (issue 14): three grpc-js providers, each behind its doorman speaking h2c to it
// (`DOORMAN_APP_PROTOCOL=h2c`), registered in the same file registry as the HTTP rollout; a grpc-js caller with one
// long-lived channel to its consumer doorman's outbound port, the channel's authority the service name. One HTTP/2
// connection carries every call, and doorman balances each call on its own over the providers (Kubernetes' Service
// would pin the connection to one pod). Under steady load each provider is replaced in turn: the new one starts and
// registers, the old one gets SIGTERM and drains. Every call is counted by its gRPC status: none may fail.
import { fork, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { Container, DIST, Pod, freePort, laneState, startDoorman } from './procs.js'
import { EVALUATE, loadGrpc, type CallReply, type Grpc } from './grpc-service.js'
import { sleep } from './time.js'
import type { FailKind } from './load.js'
import type { GrpcRolloutPlan, Marker, Progress, RolloutRun, RolloutSample } from './results.js'

export const GRPC_FULL: GrpcRolloutPlan = { providers: 3, rate: 60, leadMs: 3000, warmupMs: 2000, drainDelayMs: 1000, settleMs: 1000, sampleMs: 500, tailMs: 2000, deadlineMs: 10_000 }
export const GRPC_SHORT: GrpcRolloutPlan = { ...GRPC_FULL }

export const GRPC_SERVICE = 'evaluate-grpc'

interface RunOptions {
  plan: GrpcRolloutPlan
  logDir: string
  signal?: AbortSignal
  onSample: (s: RolloutSample, p: Progress, note: string) => void
}

interface Provider { name: string, pod: Pod, doorman: Container, adminPort: number }
interface LaneState { warmup?: { weight: number, progress: number }, registration?: { registered: boolean } }

function logFd (dir: string, name: string): number {
  fs.mkdirSync(dir, { recursive: true })
  return fs.openSync(path.join(dir, `${name}.log`), 'a')
}

function startGrpcApp (name: string, port: number, logDir: string): ChildProcess {
  const fd = logFd(logDir, name)
  const child = fork(path.join(DIST, 'demo', 'grpc-app.js'), ['--name', name, '--port', String(port)], { stdio: ['ignore', fd, fd, 'ipc'], env: {} })
  fs.closeSync(fd)
  child.on('error', () => {})
  return child
}

/** Open-loop unary calls over one channel, counted by outcome and by the provider that answered. */
class Caller {
  rate = 0
  readonly totals = { sent: 0, ok: 0, shed: 0, failed: 0, kinds: {} as Partial<Record<FailKind, number>> }
  #client: any
  #grpc: Grpc
  #deadlineMs: number
  #timer: NodeJS.Timeout | null = null
  #credit = 0
  #last = 0
  #id = 0
  #outstanding = 0
  #idle: Array<() => void> = []
  #b = Caller.#empty()

  static #empty (): { sent: number, ok: number, shed: number, failed: number, byInstance: Record<string, number>, lat: number[] } {
    return { sent: 0, ok: 0, shed: 0, failed: 0, byInstance: {}, lat: [] }
  }

  constructor (grpc: Grpc, port: number, deadlineMs: number) {
    this.#grpc = grpc
    this.#deadlineMs = deadlineMs
    const Client = grpc.makeGenericClientConstructor(EVALUATE, 'Evaluate')
    this.#client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), { 'grpc.default_authority': GRPC_SERVICE })
  }

  /** One call, resolved with its status code and the provider that answered. */
  async call (): Promise<{ code: number, shed: boolean, instance: string | null }> {
    return await new Promise((resolve) => {
      let reply: CallReply | null = null
      const id = ++this.#id
      const c = this.#client.Call({ id }, new this.#grpc.Metadata(), { deadline: Date.now() + this.#deadlineMs }, (_err: unknown, res: CallReply | undefined) => { reply = res ?? null })
      c.on('status', (s: { code: number, metadata: { get: (k: string) => unknown[] } }) => {
        setImmediate(() => { resolve({ code: s.code, shed: s.metadata.get('x-doorman-shed').length > 0, instance: reply?.instance ?? null }) })
      })
    })
  }

  start (): void {
    this.#last = Date.now()
    this.#timer = setInterval(() => {
      const now = Date.now()
      this.#credit += (this.rate * (now - this.#last)) / 1000
      this.#last = now
      while (this.#credit >= 1) { this.#credit -= 1; this.#send() }
    }, 20)
  }

  #send (): void {
    const t = Date.now()
    this.totals.sent++
    this.#b.sent++
    this.#outstanding++
    void this.call().then((r) => {
      if (r.code === this.#grpc.status.OK) {
        this.totals.ok++
        this.#b.ok++
        this.#b.lat.push(Date.now() - t)
        if (r.instance !== null) this.#b.byInstance[r.instance] = (this.#b.byInstance[r.instance] ?? 0) + 1
      } else if (r.code === this.#grpc.status.UNAVAILABLE && r.shed) {
        this.totals.shed++
        this.#b.shed++
      } else {
        this.totals.failed++
        this.#b.failed++
        const kind: FailKind = r.code === this.#grpc.status.DEADLINE_EXCEEDED ? 'timeout' : `grpc-${r.code}`
        this.totals.kinds[kind] = (this.totals.kinds[kind] ?? 0) + 1
      }
      if (--this.#outstanding === 0) for (const f of this.#idle.splice(0)) f()
    })
  }

  take (): { sent: number, ok: number, shed: number, failed: number, byInstance: Record<string, number>, p99: number } {
    const b = this.#b
    this.#b = Caller.#empty()
    const lat = b.lat.sort((x, y) => x - y)
    return { sent: b.sent, ok: b.ok, shed: b.shed, failed: b.failed, byInstance: b.byInstance, p99: lat.length === 0 ? 0 : lat[Math.min(lat.length - 1, Math.floor(0.99 * lat.length))] as number }
  }

  stop (): void { if (this.#timer !== null) clearInterval(this.#timer); this.#timer = null }
  async settled (): Promise<void> { if (this.#outstanding > 0) await new Promise<void>((resolve) => { this.#idle.push(resolve) }) }
  close (): void { this.stop(); this.#client.close() }
}

export async function runGrpcRollout (o: RunOptions): Promise<RolloutRun> {
  const { plan } = o
  const empty = (skipped: string): RolloutRun => ({ skipped, durationMs: 0, totals: { sent: 0, ok: 0, shed: 0, failed: 0, kinds: {} }, instances: [], replaced: [], markers: [], timeline: [], shareRise: {} })
  const grpc = await loadGrpc()
  if (grpc === null) return empty('@grpc/grpc-js is not installed (a devDependency: run `npm ci` in a clone)')
  const regDir = path.join(o.logDir, '..', 'registry-grpc')
  fs.rmSync(regDir, { recursive: true, force: true })
  fs.mkdirSync(regDir, { recursive: true })
  const registry = pathToFileURL(regDir).href
  const logDir = path.join(o.logDir, 'grpc')
  const live: Provider[] = []
  const all: Provider[] = []
  const markers: Marker[] = []
  let consumer: Container | null = null
  let caller: Caller | null = null
  let t0 = 0
  const rel = (): number => t0 === 0 ? 0 : Math.round((Date.now() - t0) / 100) / 10
  const stub = net.createServer((sock) => { sock.destroy() })

  const startProvider = async (name: string, warmupMs: number): Promise<Provider> => {
    const appPort = await freePort()
    const inboundPort = await freePort()
    const adminPort = await freePort()
    const doorman = new Container({
      name: 'doorman',
      start: () => startDoorman({
        name: `${name}-doorman`,
        appPort,
        inboundPort,
        adminPort,
        logDir,
        env: {
          DOORMAN_SERVICE: GRPC_SERVICE,
          DOORMAN_APP_PROTOCOL: 'h2c',
          DOORMAN_REGISTRY: registry,
          DOORMAN_ADVERTISE_HOST: '127.0.0.1',
          DOORMAN_REGISTRY_TTL: '3s',
          DOORMAN_MAX_CONCURRENCY: '50',
          DOORMAN_WARMUP: `${warmupMs}ms`,
          DOORMAN_DRAIN_DELAY: `${plan.drainDelayMs}ms`,
          DOORMAN_DRAIN_QUIET: '300ms',
          DOORMAN_DRAIN_TIMEOUT: '25s',
          DOORMAN_APP_CHECK_INTERVAL: '250ms'
        }
      }),
      readiness: { port: adminPort, path: '/readyz', periodMs: 250, timeoutMs: 1000, failureThreshold: 1 },
      terminationGraceMs: plan.drainDelayMs + 30_000
    })
    const app = new Container({ name: 'app', start: () => startGrpcApp(name, appPort, logDir), terminationGraceMs: 2000 })
    const pod = new Pod(name, [doorman, app])
    const p: Provider = { name, pod, doorman, adminPort }
    all.push(p)
    pod.start()
    return p
  }
  const registered = async (p: Provider): Promise<boolean> => (await laneState<LaneState>(p.adminPort))?.registration?.registered === true

  try {
    const names = Array.from({ length: plan.providers }, (_, i) => String.fromCharCode(97 + i))
    for (const n of names) live.push(await startProvider(`v1-${n}`, 0))
    const consumerApp = await freePort()
    const outbound = await freePort()
    const consumerAdmin = await freePort()
    await new Promise<void>((resolve) => { stub.listen(consumerApp, '127.0.0.1', resolve) })
    consumer = new Container({
      name: 'consumer',
      start: () => startDoorman({
        name: 'grpc-consumer-doorman',
        appPort: consumerApp,
        inboundPort: 0,
        adminPort: consumerAdmin,
        outboundPort: outbound,
        logDir,
        env: { DOORMAN_SERVICE: 'grpc-frontend', DOORMAN_REGISTRY: registry, DOORMAN_REGISTRY_TTL: '3s', DOORMAN_WARMUP: '0s', DOORMAN_DRAIN_DELAY: '0s', DOORMAN_DRAIN_QUIET: '100ms' }
      }),
      terminationGraceMs: 2000
    })
    consumer.start()
    const up = await pollUntil(async () => (await Promise.all(live.map(registered))).every(Boolean) && (await laneState<LaneState>(consumerAdmin)) !== null, 30_000, o.signal)
    if (!up) return empty('the gRPC providers or the consumer doorman did not start (see logs/grpc/)')
    const c = new Caller(grpc, outbound, plan.deadlineMs)
    caller = c
    // The same channel from its first call to its last: it is never reconnected or recreated.
    const routed = await pollUntil(async () => (await c.call()).code === grpc.status.OK, 10_000, o.signal)
    if (!routed) return empty('the consumer doorman\'s outbound lane routed no gRPC call to the providers (see logs/grpc/)')

    t0 = Date.now()
    c.rate = plan.rate
    c.start()
    const timeline: RolloutSample[] = []
    const weights = new Map<string, number>()
    let note = `steady: ${plan.providers} providers, one channel`
    let sampling = true
    const estimate = plan.leadMs + plan.providers * (2000 + plan.drainDelayMs + plan.warmupMs + plan.settleMs) + plan.tailMs
    const sampler = (async () => {
      for (let next = plan.sampleMs; sampling; next += plan.sampleMs) {
        await sleep(t0 + next - Date.now(), o.signal)
        for (const p of live) {
          void laneState<LaneState>(p.adminPort).then((s) => { if (s?.warmup !== undefined && s.registration?.registered === true) weights.set(p.name, s.warmup.weight) })
        }
        const b = c.take()
        const w: Record<string, number> = {}
        for (const p of live) { const v = weights.get(p.name); if (v !== undefined) w[p.name] = v }
        const sample: RolloutSample = { t: Math.round(next / 100) / 10, sent: b.sent, ok: b.ok, shed: b.shed, failed: b.failed, p99: b.p99, byInstance: b.byInstance, weights: w }
        timeline.push(sample)
        o.onSample(sample, { doneMs: next, totalMs: Math.max(estimate, next) }, note)
      }
    })()

    const replaced: RolloutRun['replaced'] = []
    await sleep(plan.leadMs, o.signal)
    for (let i = 0; i < plan.providers; i++) {
      const old = live[0] as Provider
      const name = `v2-${names[i] as string}`
      note = `${name} starting`
      markers.push({ t: rel(), kind: 'start', label: `${name} started` })
      const fresh = await startProvider(name, plan.warmupMs)
      await pollUntil(async () => fresh.pod.ready && await registered(fresh), 30_000, o.signal)
      markers.push({ t: rel(), kind: 'registered', label: `${name} registered` })
      live.push(fresh)
      note = `${old.name} draining`
      const drainStartedT = rel()
      markers.push({ t: drainStartedT, kind: 'drain', label: `${old.name} drains` })
      await old.doorman.stop()
      await old.pod.stop()
      const drainDoneT = rel()
      markers.push({ t: drainDoneT, kind: 'stopped', label: `${old.name} stopped` })
      live.splice(live.indexOf(old), 1)
      weights.delete(old.name)
      replaced.push({ old: old.name, new: name, drainStartedT, drainDoneT })
      note = `${name} warming up`
      await pollUntil(async () => (await laneState<LaneState>(fresh.adminPort))?.warmup?.progress === 1, plan.warmupMs + 10_000, o.signal)
      await sleep(plan.settleMs, o.signal)
    }
    note = `steady: ${plan.providers} new providers`
    await sleep(plan.tailMs, o.signal)
    c.stop()
    sampling = false
    await sampler
    await c.settled()
    const rest = c.take()
    const last = timeline[timeline.length - 1]
    if (last !== undefined) {
      last.sent += rest.sent; last.ok += rest.ok; last.shed += rest.shed; last.failed += rest.failed
      for (const [n, k] of Object.entries(rest.byInstance)) last.byInstance[n] = (last.byInstance[n] ?? 0) + k
      o.onSample(last, { doneMs: last.t * 1000, totalMs: last.t * 1000 }, note)
    }
    return { skipped: null, durationMs: Date.now() - t0, totals: { ...c.totals, kinds: { ...c.totals.kinds } }, instances: all.map((p) => p.name), replaced, markers, timeline, shareRise: {} }
  } finally {
    caller?.close()
    await Promise.all(all.map(async (p) => { await p.pod.stop() }))
    await consumer?.stop()
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
