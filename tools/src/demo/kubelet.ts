// A small stand-in for kubelet, for the demo and for tests: HTTP probes with kubelet's knobs (period, timeout,
// failure and success thresholds, initial delay) and containers that are really killed and started again when their
// liveness probe fails, with the restarts counted. It probes the way kubelet does: a fresh connection per probe,
// `200 <= status < 400` passes, no answer within the timeout fails.
import http from 'node:http'
import { EventEmitter } from 'node:events'
import type { ChildProcess } from 'node:child_process'

export interface HttpProbe {
  port: number
  path: string
  host?: string
  /** periodSeconds, in milliseconds (kubelet's default: 10 s). */
  periodMs?: number
  /** timeoutSeconds, in milliseconds (default 1 s). */
  timeoutMs?: number
  /** Consecutive failures that flip the probe to failed (default 3). */
  failureThreshold?: number
  /** Consecutive successes that flip it back (default 1). */
  successThreshold?: number
  /** initialDelaySeconds, in milliseconds (default 0). */
  initialDelayMs?: number
}

export interface ProbeRecord {
  /** Date.now() when the probe was sent. */
  at: number
  ok: boolean
  /** How long the answer took (the timeout, when there was none). */
  ms: number
  detail: string
}

/** One HTTP probe on a fresh connection; resolves (never rejects). */
export async function probeOnce (p: HttpProbe): Promise<ProbeRecord> {
  const at = Date.now()
  const start = performance.now()
  const timeout = p.timeoutMs ?? 1000
  return await new Promise((resolve) => {
    let settled = false
    const done = (ok: boolean, detail: string): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      resolve({ at, ok, ms: ok || detail !== 'timeout' ? performance.now() - start : timeout, detail })
    }
    const req = http.request({ host: p.host ?? '127.0.0.1', port: p.port, path: p.path, agent: false, headers: { 'user-agent': 'kube-probe/demo', connection: 'close' } }, (res) => {
      const status = res.statusCode ?? 0
      res.resume()
      done(status >= 200 && status < 400, `HTTP ${status}`)
    })
    // kubelet's timeout covers the whole exchange, connection included.
    const timer = setTimeout(() => { done(false, 'timeout'); req.destroy() }, timeout)
    req.on('error', (err: NodeJS.ErrnoException) => { done(false, err.code ?? err.message) })
    req.end()
  })
}

/**
 * Probes on a period and keeps kubelet's verdict: `ok` flips to false after `failureThreshold` consecutive failures
 * and back to true after `successThreshold` consecutive successes. Emits 'result' (ProbeRecord) for every probe and
 * 'change' (ok) when the verdict flips.
 */
export class Prober extends EventEmitter {
  readonly spec: Required<Omit<HttpProbe, 'host'>> & { host: string }
  #ok: boolean
  #initial: boolean
  #failures = 0
  #successes = 0
  #timer: NodeJS.Timeout | null = null
  #running: Promise<void> | null = null
  #stopped = true
  #generation = 0
  /** Every probe since start, and totals. */
  readonly stats = { probes: 0, failures: 0, maxMs: 0 }

  /** `initiallyOk`: liveness starts healthy, readiness starts not ready (kubelet's defaults). */
  constructor (spec: HttpProbe, initiallyOk: boolean) {
    super()
    this.spec = {
      host: spec.host ?? '127.0.0.1',
      port: spec.port,
      path: spec.path,
      periodMs: spec.periodMs ?? 10_000,
      timeoutMs: spec.timeoutMs ?? 1000,
      failureThreshold: spec.failureThreshold ?? 3,
      successThreshold: spec.successThreshold ?? 1,
      initialDelayMs: spec.initialDelayMs ?? 0
    }
    this.#initial = initiallyOk
    this.#ok = initiallyOk
  }

  get ok (): boolean { return this.#ok }
  get consecutiveFailures (): number { return this.#failures }

  /** Starts probing (after the initial delay); a restart of the container calls reset() then start() again. */
  start (): void {
    if (!this.#stopped) return
    this.#stopped = false
    const gen = ++this.#generation
    this.#timer = setTimeout(() => { this.#loop(gen) }, this.spec.initialDelayMs)
  }

  #loop (gen: number): void {
    if (this.#stopped || gen !== this.#generation) return
    const started = performance.now()
    this.#running = probeOnce(this.spec).then((r) => {
      if (this.#stopped || gen !== this.#generation) return
      this.#record(r)
      const wait = Math.max(0, this.spec.periodMs - (performance.now() - started))
      this.#timer = setTimeout(() => { this.#loop(gen) }, wait)
    })
  }

  #record (r: ProbeRecord): void {
    this.stats.probes++
    if (!r.ok) this.stats.failures++
    if (r.ms > this.stats.maxMs) this.stats.maxMs = r.ms
    if (r.ok) { this.#successes++; this.#failures = 0 } else { this.#failures++; this.#successes = 0 }
    this.emit('result', r)
    const before = this.#ok
    if (!r.ok && this.#failures >= this.spec.failureThreshold) this.#ok = false
    if (r.ok && this.#successes >= this.spec.successThreshold) this.#ok = true
    if (before !== this.#ok) this.emit('change', this.#ok)
  }

  /** Back to the initial verdict with no history (a restarted container is probed afresh). */
  reset (): void {
    this.#failures = 0
    this.#successes = 0
    const before = this.#ok
    this.#ok = this.#initial
    if (before !== this.#ok) this.emit('change', this.#ok)
  }

  async stop (): Promise<void> {
    this.#stopped = true
    this.#generation++
    if (this.#timer !== null) { clearTimeout(this.#timer); this.#timer = null }
    await this.#running
  }
}

export interface ContainerSpec {
  name: string
  /** Starts the container's process (called again on every restart). */
  start: () => ChildProcess
  startup?: HttpProbe
  liveness?: HttpProbe
  readiness?: HttpProbe
  /** terminationGracePeriodSeconds: SIGTERM, then SIGKILL after this (default 30 s). */
  terminationGraceMs?: number
  /** Wait before starting again after a restart (kubelet's back-off; default 0). */
  restartDelayMs?: number
}

export type ContainerEvent =
  | { type: 'started', at: number, restarts: number }
  | { type: 'unhealthy', at: number, probe: 'liveness' | 'startup', detail: string }
  | { type: 'killed', at: number, reason: string }
  | { type: 'exited', at: number, code: number | null, signal: string | null }
  | { type: 'ready', at: number, ready: boolean }

/**
 * A container under kubelet's restart policy `Always`: started, probed, killed when its liveness (or startup) probe
 * fails past its threshold, and started again; `restarts` counts them, as `kubectl get pods` does. Emits 'event'.
 */
export class Container extends EventEmitter {
  readonly spec: ContainerSpec
  restarts = 0
  readonly events: ContainerEvent[] = []
  proc: ChildProcess | null = null
  readonly startup: Prober | null
  readonly liveness: Prober | null
  readonly readiness: Prober | null
  #started = false
  #stopped = false
  #killing: Promise<void> | null = null
  #restartTimer: NodeJS.Timeout | null = null

  constructor (spec: ContainerSpec) {
    super()
    this.spec = spec
    this.startup = spec.startup !== undefined ? new Prober(spec.startup, false) : null
    this.liveness = spec.liveness !== undefined ? new Prober(spec.liveness, true) : null
    this.readiness = spec.readiness !== undefined ? new Prober(spec.readiness, false) : null
    this.startup?.on('change', (ok: boolean) => { if (ok) this.#onStarted() })
    this.startup?.on('result', (r: ProbeRecord) => {
      if (!r.ok && (this.startup as Prober).consecutiveFailures >= (this.startup as Prober).spec.failureThreshold) {
        this.#unhealthy('startup', r.detail)
      }
    })
    this.liveness?.on('change', (ok: boolean) => {
      if (!ok) this.#unhealthy('liveness', `${(this.liveness as Prober).spec.failureThreshold} consecutive failures`)
    })
    this.readiness?.on('change', () => { this.#emitReady() })
  }

  /** Started (startup probe passed, or there is none) and ready (readiness passes, or there is none). */
  get ready (): boolean {
    if (this.proc === null || !this.#started) return false
    return this.readiness === null ? true : this.readiness.ok
  }

  #event (e: ContainerEvent): void {
    this.events.push(e)
    this.emit('event', e)
  }

  #lastReady = false
  #emitReady (): void {
    const r = this.ready
    if (r !== this.#lastReady) { this.#lastReady = r; this.#event({ type: 'ready', at: Date.now(), ready: r }) }
  }

  start (): void {
    this.#stopped = false
    this.#launch()
  }

  #launch (): void {
    if (this.#stopped) return
    const proc = this.spec.start()
    this.proc = proc
    this.#started = false
    this.#event({ type: 'started', at: Date.now(), restarts: this.restarts })
    proc.once('exit', (code, signal) => {
      if (this.proc === proc) this.proc = null
      this.#event({ type: 'exited', at: Date.now(), code, signal })
      this.#emitReady()
      // Restart policy Always: a container that exits by itself is restarted too (unless kubelet is killing it).
      if (this.#killing === null && !this.#stopped) void this.#restart()
    })
    for (const p of [this.startup, this.liveness, this.readiness]) p?.reset()
    if (this.startup !== null) this.startup.start()
    else this.#onStarted()
  }

  #onStarted (): void {
    if (this.#started) return
    this.#started = true
    void this.startup?.stop()
    this.liveness?.start()
    this.readiness?.start()
    this.#emitReady()
  }

  #unhealthy (probe: 'liveness' | 'startup', detail: string): void {
    if (this.#killing !== null || this.#stopped || this.proc === null) return
    this.#event({ type: 'unhealthy', at: Date.now(), probe, detail })
    void this.#restart(`${probe} probe failed`)
  }

  /** Kills the running process (if any) and starts a new one. */
  async #restart (reason?: string): Promise<void> {
    if (this.#killing !== null) return
    const done = (async () => {
      await Promise.all([this.startup?.stop(), this.liveness?.stop(), this.readiness?.stop()])
      this.#started = false
      this.#emitReady()
      if (reason !== undefined) await this.#kill(reason)
      this.restarts++
    })()
    this.#killing = done
    await done
    this.#killing = null
    if (this.#stopped) return
    const delay = this.spec.restartDelayMs ?? 0
    this.#restartTimer = setTimeout(() => { this.#restartTimer = null; this.#launch() }, delay)
  }

  async #kill (reason: string): Promise<void> {
    const proc = this.proc
    if (proc === null || proc.exitCode !== null || proc.signalCode !== null) return
    this.#event({ type: 'killed', at: Date.now(), reason })
    const exited = new Promise<void>((resolve) => { proc.once('exit', () => { resolve() }) })
    proc.kill('SIGTERM')
    const grace = setTimeout(() => { proc.kill('SIGKILL') }, this.spec.terminationGraceMs ?? 30_000)
    await exited
    clearTimeout(grace)
  }

  /** Stops probing and the process for good (SIGTERM, then SIGKILL after the grace period). */
  async stop (): Promise<void> {
    this.#stopped = true
    if (this.#restartTimer !== null) { clearTimeout(this.#restartTimer); this.#restartTimer = null }
    await Promise.all([this.startup?.stop(), this.liveness?.stop(), this.readiness?.stop()])
    await this.#killing
    await this.#kill('stopped')
    this.#started = false
  }
}

/** A pod: its containers, ready when every one of them is ready. */
export class Pod {
  constructor (readonly name: string, readonly containers: Container[]) {}
  get ready (): boolean { return this.containers.every((c) => c.ready) }
  get restarts (): number { return this.containers.reduce((n, c) => n + c.restarts, 0) }
  start (): void { for (const c of this.containers) c.start() }
  async stop (): Promise<void> { await Promise.all(this.containers.map(async (c) => { await c.stop() })) }
}
