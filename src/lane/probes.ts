// Probe logic over the shared state: pure functions of (state, settings, now), used by the lane thread.
import { S, T, type SharedState } from './shared.js'
import type { AppProbe } from '../config/index.js'

export interface Check {
  name: string
  ok: boolean
  detail: string
}

export interface ProbeSettings {
  livenessStall: number
  readinessStall: number
  appStall: number
}

/** doorman's own startup: its listeners and lane are up. Never waits for the app (native sidecars would deadlock). */
export function startupChecks (s: SharedState): Check[] {
  return [
    { name: 'lane', ok: s.flag(S.LANE_UP), detail: s.flag(S.LANE_UP) ? 'lane listening' : 'lane not listening yet' },
    { name: 'listeners', ok: s.flag(S.LISTENING), detail: s.flag(S.LISTENING) ? 'business listeners up' : 'business listeners not up yet' }
  ]
}

/** doorman's own liveness: its main event loop still makes progress. Busy is never dead. */
export function livenessChecks (s: SharedState, cfg: ProbeSettings, now: number): Check[] {
  const age = s.heartbeatAge(now)
  return [{ name: 'main-loop', ok: age < cfg.livenessStall, detail: `last heartbeat ${Math.round(age)}ms ago (window ${cfg.livenessStall}ms)` }]
}

/** doorman's readiness: should this pod get traffic now? */
export function readinessChecks (s: SharedState, cfg: ProbeSettings, now: number): Check[] {
  const age = s.heartbeatAge(now)
  const phase = s.phase
  const regRequired = s.flag(S.REGISTRY_REQUIRED)
  const registered = s.flag(S.REGISTERED)
  return [
    { name: 'listeners', ok: s.flag(S.LISTENING), detail: s.flag(S.LISTENING) ? 'up' : 'not up yet' },
    { name: 'app-started', ok: s.flag(S.APP_STARTED), detail: s.flag(S.APP_STARTED) ? 'passed' : 'the app has not passed its startup check' },
    { name: 'app-ready', ok: s.flag(S.APP_READY), detail: s.flag(S.APP_READY) ? 'passed' : 'the app does not pass its readiness check' },
    { name: 'registered', ok: !regRequired || registered, detail: !regRequired ? 'no registry' : registered ? 'registered' : 'not registered yet' },
    { name: 'serving', ok: phase === 'serving', detail: phase },
    { name: 'main-loop', ok: age < cfg.readinessStall, detail: `last heartbeat ${Math.round(age)}ms ago (window ${cfg.readinessStall}ms)` }
  ]
}

/**
 * Tracks whether the app makes progress: it is stalled when it has requests in flight and completes none for the
 * stall window. Fed by the lane's own timer, so the verdict does not depend on how often kubelet asks.
 */
export class ProgressTracker {
  #lastCompleted = -1
  #lastProgress = 0
  #lastCompletion = 0

  constructor (readonly s: SharedState, readonly cfg: ProbeSettings) {}

  sample (now: number): void {
    const completed = this.s.get(S.COMPLETED)
    const inflight = this.s.get(S.INFLIGHT)
    if (this.#lastCompleted === -1) { this.#lastProgress = now; this.#lastCompletion = 0 }
    if (completed !== this.#lastCompleted) {
      if (this.#lastCompleted !== -1) this.#lastCompletion = now
      this.#lastCompleted = completed
      this.#lastProgress = now
    }
    // Nothing in flight is not a stall; and while doorman's own loop is stale its counters are, too: don't blame the app.
    if (inflight === 0 || this.s.heartbeatAge(now) >= this.cfg.readinessStall) this.#lastProgress = now
  }

  /** Milliseconds the app has had work in flight without completing any. */
  stalledFor (now: number): number { return now - this.#lastProgress }
  /** True when the app completed a request within the stall window. */
  completedRecently (now: number): boolean { return this.#lastCompletion !== 0 && now - this.#lastCompletion < this.cfg.appStall }
}

/** The app's liveness, judged by progress first: a busy app that completes requests is alive whatever its probe says. */
export function appLivenessChecks (p: ProgressTracker, own: Check | null, now: number): Check[] {
  const stalled = p.stalledFor(now)
  const checks: Check[] = [{ name: 'progress', ok: stalled < p.cfg.appStall, detail: stalled < p.cfg.appStall ? 'completing requests or idle' : `requests in flight and none completed for ${Math.round(stalled)}ms` }]
  if (own !== null) {
    const busyAlive = p.completedRecently(now)
    checks.push({ name: 'app-probe', ok: own.ok || busyAlive, detail: own.ok ? own.detail : busyAlive ? `${own.detail}, but the app completes requests: busy, not dead` : own.detail })
  }
  return checks
}

/** What a lane path under `/app-health/` asks for. */
export type AppProbeRoute =
  /** One of the app's probes; `own` is null without DOORMAN_APP_PROBES (the app's port and progress stand in). */
  | { kind: 'livez' | 'readyz' | 'startupz', own: AppProbe | null }
  /** A path DOORMAN_APP_PROBES doesn't hold, and the paths it does. */
  | { kind: 'unknown', held: string[] }

const APP_HEALTH = /^\/app-health\/[^/]+\/(livez|readyz|startupz)$/

/**
 * Routes a lane path to the app's probe it names, or null when it is not an app probe path at all. With
 * DOORMAN_APP_PROBES set, only the paths it holds are probes: any other `/app-health/…` path is unknown (a typo or a
 * renamed container must fail, not pass on the app's port for ever). Without it (doorman run by hand, no injector)
 * there is nothing to check a name against: every `/app-health/<c>/<probe>` falls back to the app's port and progress.
 */
export function appProbeRoute (path: string, probes: Readonly<Record<string, AppProbe>>): AppProbeRoute | null {
  if (!path.startsWith('/app-health/')) return null
  const held = Object.keys(probes)
  const m = APP_HEALTH.exec(path)
  if (held.length === 0) return m === null ? null : { kind: m[1] as 'livez' | 'readyz' | 'startupz', own: null }
  const own = probes[path]
  if (own === undefined || m === null) return { kind: 'unknown', held: held.sort() }
  return { kind: m[1] as 'livez' | 'readyz' | 'startupz', own }
}

export function render (checks: Check[], verbose: boolean, name: string): { status: number, body: string } {
  const ok = checks.every((c) => c.ok)
  if (!verbose) {
    if (ok) return { status: 200, body: 'ok\n' }
    const failed = checks.filter((c) => !c.ok).map((c) => `${c.name}: ${c.detail}`).join('; ')
    return { status: 503, body: `${failed}\n` }
  }
  const lines = checks.map((c) => `[${c.ok ? '+' : '-'}]${c.name} ${c.ok ? 'ok' : 'failed'}: ${c.detail}`)
  lines.push(`${name} check ${ok ? 'passed' : 'failed'}`)
  return { status: ok ? 200 : 503, body: lines.join('\n') + '\n' }
}

export { S, T }
