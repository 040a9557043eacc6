// The main thread's side of the lane: starts the lane thread, publishes state to shared memory on a heartbeat,
// answers the lane's metric requests and passes its drain requests on.
import type { Exemplar } from '../metrics/openmetrics.js'
import { Worker } from 'node:worker_threads'
import type { Logger } from '../core/log.js'
import { SharedState, S, T, PHASES, nowMs } from './shared.js'
import type { LaneData, LaneSettings, FromLane, ToLane } from './messages.js'
import type { LanePriority } from './priority.js'

export { SharedState, S, T, nowMs } from './shared.js'
export type { LaneSettings } from './messages.js'

/** What the heartbeat publishes each beat. */
export interface Publisher {
  (state: SharedState): void
}

export interface LaneOptions {
  settings: LaneSettings
  info: Record<string, unknown>
  log: Logger
  /** Prometheus text of the main thread's metrics, and the exemplars its histograms hold. */
  metrics: () => Promise<{ text: string, exemplars: Exemplar[] }>
  /** Called when the lane receives an accepted POST /drain. */
  onDrain: (source: string) => void
  /** Heartbeat period in milliseconds. */
  beatMs?: number
}

function workerUrl (): URL {
  // Running from source (tests under a TypeScript loader) or from dist: the worker sits beside this module.
  const ext = import.meta.url.endsWith('.ts') ? '.ts' : '.js'
  return new URL(`./worker${ext}`, import.meta.url)
}

/**
 * The lane thread's V8 heap. Its young generation stays at 1 MB where V8 would let it grow with the memory the process
 * sees (about 1 MB less resident, measured in docs/benchmarks.md; the lane allocates little per probe). The old
 * generation is bounded: a lane holding 64 MB would be leaking, and it then stops (ERR_WORKER_OUT_OF_MEMORY, logged),
 * its probes fail and kubelet restarts the pod, instead of the leak growing into the data path's memory.
 */
const LANE_HEAP = { maxYoungGenerationSizeMb: 1, maxOldGenerationSizeMb: 64 }

export class ProbeLane {
  readonly state = new SharedState()
  #worker: Worker | null = null
  #opts: LaneOptions
  #beat: NodeJS.Timeout | null = null
  #publishers: Publisher[] = []
  #port = 0

  constructor (opts: LaneOptions) {
    this.#opts = opts
  }

  get port (): number { return this.#port }

  /** Adds a function run on every heartbeat to copy a module's state into shared memory. */
  publish (p: Publisher): void { this.#publishers.push(p) }

  async start (): Promise<number> {
    const data: LaneData = { buffer: this.state.buffer, settings: this.#opts.settings, info: this.#opts.info }
    this.#beatOnce()
    this.#beat = setInterval(() => { this.#beatOnce() }, this.#opts.beatMs ?? 50)
    const worker = new Worker(workerUrl(), { workerData: data, name: 'doorman-lane', resourceLimits: LANE_HEAP })
    this.#worker = worker
    this.#port = await new Promise<number>((resolve, reject) => {
      const onExit = (code: number): void => { reject(new Error(`the lane thread exited with code ${code} before listening`)) }
      worker.once('error', reject)
      worker.once('exit', onExit)
      worker.on('message', (m: FromLane) => {
        if (m.type === 'listening') {
          worker.off('exit', onExit)
          worker.off('error', reject)
          this.#priority(m.priority)
          resolve(m.port)
        } else if (m.type === 'error') {
          const err = Object.assign(new Error(`admin port: ${m.message}`), { code: m.code })
          reject(err)
        } else this.#onMessage(m)
      })
    })
    worker.on('error', (err) => { this.#opts.log.error({ err }, 'lane thread failed') })
    worker.on('exit', (code) => { if (this.#worker !== null) this.#opts.log.error({ code }, 'lane thread exited') })
    return this.#port
  }

  #priority (p: LanePriority): void {
    const wanted = this.#opts.settings.laneNice
    if (p.applied) this.#opts.log.debug({ nice: p.nice }, 'lane thread priority set')
    else this.#opts.log.info({ nice: p.nice, wanted, reason: p.reason }, 'lane thread priority not raised (needs the SYS_NICE capability); probes share the CPU with business work at the same priority')
  }

  #beatOnce (): void {
    for (const p of this.#publishers) p(this.state)
    this.state.beat()
  }

  #onMessage (m: FromLane): void {
    if (m.type === 'metrics') {
      this.#opts.metrics().then(({ text, exemplars }) => { this.#send({ type: 'metrics', id: m.id, text, exemplars }) }, (err: Error) => {
        this.#opts.log.warn({ err }, 'metrics collection failed')
        this.#send({ type: 'metrics', id: m.id, text: null })
      })
    } else if (m.type === 'liveness') {
      const fields = { verdict: m.verdict, failing: m.failing, total: m.total, budget: m.budget, reason: m.reason }
      if (m.verdict === 'failed') this.#opts.log.warn(fields, "app liveness failing: the probe fails (within the service's restart budget)")
      else if (m.verdict === 'waived') this.#opts.log.warn(fields, "app liveness failing, but the probe passes: the failure is not this pod's alone (restart budget)")
      else this.#opts.log.info(fields, 'app liveness passes again')
    } else if (m.type === 'drain') {
      this.#opts.log.info({ source: m.source }, 'drain requested on the lane')
      this.#opts.onDrain(m.source)
    }
  }

  #send (m: ToLane): void { this.#worker?.postMessage(m) }

  /** Tells the lane what the app's own registry shows, for /state. */
  appRegistry (status: Record<string, unknown>): void { this.#send({ type: 'app-registry', status }) }

  /** Stops the heartbeat and the lane thread. */
  async close (): Promise<void> {
    if (this.#beat !== null) { clearInterval(this.#beat); this.#beat = null }
    const w = this.#worker
    this.#worker = null
    if (w === null) return
    const exited = new Promise<void>((resolve) => { w.once('exit', () => { resolve() }) })
    w.postMessage({ type: 'close' } satisfies ToLane)
    const timer = setTimeout(() => { void w.terminate() }, 1000)
    await exited
    clearTimeout(timer)
  }

  /** Publishes now, outside the heartbeat (phase changes must reach probes at once). */
  flush (): void { this.#beatOnce() }
}

/** Publishes the drain phase; entering draining also stamps when it started (once). */
export function setPhase (state: SharedState, phase: number): void {
  state.set(S.PHASE, phase)
  if (PHASES[phase] === 'draining' && state.time(T.DRAIN_STARTED) === 0) state.setTime(T.DRAIN_STARTED, nowMs())
}
