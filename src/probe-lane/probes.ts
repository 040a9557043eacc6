// Probe logic over the shared state: pure functions of (state, settings, now), used by the lane thread.
import { S, T, type SharedState } from './shared.js'
import type { AppProbe } from '../config/index.js'
import { ejectBudget } from '../protection/index.js'
import { TLS_PROBLEMS } from '../tls/problems.js'

export interface Check {
  name: string
  ok: boolean
  detail: string
  /** Set when the check fails but the probe passes anyway (the restart budget): why. */
  waived?: string
}

export interface ProbeSettings {
  livenessStall: number
  readinessStall: number
  appStall: number
  /** DOORMAN_LIVENESS_MAX_FAILING. */
  livenessMaxFailing: number
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

/**
 * The app's registration in its own registry (DOORMAN_APP_REGISTRY): a latch that opens once every service it must
 * register is there, and never closes again (the registry going away changes nothing once the pod is ready).
 */
export function appRegistryCheck (s: SharedState): Check {
  if (!s.flag(S.APP_REGISTRY_REQUIRED)) return { name: 'app-registered', ok: true, detail: 'no app registry' }
  const ok = s.flag(S.APP_REGISTERED)
  return { name: 'app-registered', ok, detail: ok ? 'registered in the app\'s registry' : 'the app has not registered in its registry yet' }
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
    appRegistryCheck(s),
    { name: 'serving', ok: phase === 'serving', detail: phase },
    { name: 'main-loop', ok: age < cfg.readinessStall, detail: `last heartbeat ${Math.round(age)}ms ago (window ${cfg.readinessStall}ms)` },
    tlsCheck(s.get(S.TLS))
  ]
}

/** With mTLS on, doorman is ready only while it holds a usable certificate (it never falls back to plaintext). */
function tlsCheck (v: number): Check {
  if (v === 0) return { name: 'certificate', ok: true, detail: 'usable, or mTLS off' }
  const problem = TLS_PROBLEMS[v - 1] ?? 'unknown'
  return { name: 'certificate', ok: false, detail: `no usable mTLS certificate: ${problem} (DOORMAN_TLS_DIR; the log says more)` }
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

/**
 * The app's own liveness, before the restart budget: an app whose own probe passes is alive whatever its progress,
 * and a busy app that completes requests is alive whatever its probe says. No progress alone is a readiness signal;
 * it fails liveness only without an own probe (progress-only), and then only as the restart budget allows.
 */
export function appLivenessChecks (p: ProgressTracker, own: Check | null, now: number): Check[] {
  const stalled = p.stalledFor(now)
  const isStalled = stalled >= p.cfg.appStall
  const stallDetail = `requests in flight and none completed for ${Math.round(stalled)}ms`
  if (own === null) return [{ name: 'progress', ok: !isStalled, detail: isStalled ? stallDetail : 'completing requests or idle' }]
  const busyAlive = p.completedRecently(now)
  return [
    { name: 'progress', ok: true, detail: isStalled ? `${stallDetail}: not ready, not dead (the app's own probe decides liveness)` : 'completing requests or idle' },
    { name: 'app-probe', ok: own.ok || busyAlive, detail: own.ok ? own.detail : busyAlive ? `${own.detail}, but the app completes requests: busy, not dead` : own.detail }
  ]
}

/** What the main thread sees of the service's other instances, and the settings of the restart budget. */
export interface Fleet {
  /** False without a registry the instances share (memory): no view of the others. */
  view: boolean
  /** The service's other instances (not draining). */
  others: number
  /** ...of which failing their app liveness or restarting. */
  othersFailing: number
}

/** How long a failure waits for the other instances' reports before the budget counts it (they fail together). */
export const LIVENESS_CONFIRM_MS = 1000

/** The restart budget: the most instances of `total` whose app liveness may fail at once, at least one. */
export function restartBudget (total: number, maxPercent: number): number {
  return Math.max(1, ejectBudget(total, maxPercent))
}

export interface LivenessVerdict {
  checks: Check[]
  /** `ok`: the checks pass; `failed`: a check fails and the probe fails; `waived`: a check fails, the probe passes. */
  verdict: 'ok' | 'failed' | 'waived'
  /** Why a failing check was waived: beyond the budget, no view of the service, or the others' reports awaited. */
  waivedBy?: 'shared' | 'no-view' | 'confirming'
  reason: string
  failing: number
  total: number
  budget: number
}

/**
 * Applies the restart budget to the app's liveness checks. With a view of the service: this instance fails only
 * while the instances failing or restarting, itself included, are within the budget; beyond it the failure is
 * shared (a dependency, not this pod) and the probe passes. A failure younger than LIVENESS_CONFIRM_MS passes while
 * the others' reports arrive. Without a view (memory registry) the app's own probe decides alone, and a stall alone
 * never fails liveness.
 */
export function applyRestartBudget (checks: Check[], fleet: Fleet, maxPercent: number, failingSince: number, now: number): LivenessVerdict {
  const failed = checks.some((c) => !c.ok)
  const total = fleet.others + 1
  const failing = fleet.othersFailing + (failed ? 1 : 0)
  const budget = restartBudget(total, maxPercent)
  const setting = `DOORMAN_LIVENESS_MAX_FAILING=${maxPercent}%`
  const waive = (waivedBy: 'shared' | 'no-view' | 'confirming', reason: string): LivenessVerdict => ({
    checks: [...checks.map((c) => c.ok ? c : { ...c, ok: true, waived: reason }), { name: 'restart-budget', ok: true, detail: reason }],
    verdict: 'waived',
    waivedBy,
    reason,
    failing,
    total,
    budget
  })
  if (!fleet.view) {
    if (!failed) return { checks, verdict: 'ok', reason: '', failing, total, budget }
    const progressOnly = checks.every((c) => c.ok || c.name === 'progress')
    if (progressOnly) return waive('no-view', 'no view of the service (memory registry): a stall alone is a readiness signal, never a restart')
    return { checks, verdict: 'failed', reason: 'the app\'s own probe fails and it completes nothing (no view of the service: judged alone)', failing, total, budget }
  }
  const counted = `${failing} of ${total} instances of the service failing or restarting, budget ${budget} (${setting})`
  if (!failed) return { checks: [...checks, { name: 'restart-budget', ok: true, detail: counted }], verdict: 'ok', reason: '', failing, total, budget }
  if (failingSince !== 0 && now - failingSince < LIVENESS_CONFIRM_MS) return waive('confirming', `failing for ${Math.round(now - failingSince)}ms: waiting ${LIVENESS_CONFIRM_MS}ms for the other instances' reports`)
  if (failing > budget) return waive('shared', `${counted}: the failure is shared (a dependency, not this pod); a restart would cure nothing`)
  const reason = `${counted}: within the budget, this pod's own failure`
  return { checks: [...checks, { name: 'restart-budget', ok: true, detail: reason }], verdict: 'failed', reason, failing, total, budget }
}

/** kubelet's defaults for a probe's thresholds. */
export const KUBELET_FAILURE_THRESHOLD = 3
export const KUBELET_SUCCESS_THRESHOLD = 1

/**
 * The timing the lane checks the app's readiness with once it has started, as kubelet would run its readiness
 * probe: its period (DOORMAN_APP_CHECK_INTERVAL when the probe gives none, or with no readiness probe at all), and
 * its failure and success thresholds (kubelet's defaults, 3 and 1, when absent). Several readiness probes (several
 * containers) take the strictest: the shortest period and failure threshold, the longest success threshold.
 */
export function readinessTiming (probes: readonly AppProbe[], fallbackPeriod: number): { period: number, failureThreshold: number, successThreshold: number } {
  if (probes.length === 0) return { period: fallbackPeriod, failureThreshold: KUBELET_FAILURE_THRESHOLD, successThreshold: KUBELET_SUCCESS_THRESHOLD }
  return {
    period: Math.min(...probes.map((p) => p.periodSeconds !== undefined ? p.periodSeconds * 1000 : fallbackPeriod)),
    failureThreshold: Math.min(...probes.map((p) => p.failureThreshold ?? KUBELET_FAILURE_THRESHOLD)),
    successThreshold: Math.max(...probes.map((p) => p.successThreshold ?? KUBELET_SUCCESS_THRESHOLD))
  }
}

/** kubelet's verdict over consecutive results: ready → not after `failureThreshold` failures, back after `successThreshold` successes. */
export class ReadinessStreak {
  #failures = 0
  #successes = 0
  constructor (readonly failureThreshold: number, readonly successThreshold: number) {}

  /** The verdict after one more result, from the current one. */
  next (ready: boolean, ok: boolean): boolean {
    if (ok) {
      this.#failures = 0
      this.#successes++
      return ready || this.#successes >= this.successThreshold
    }
    this.#successes = 0
    this.#failures++
    return ready && this.#failures < this.failureThreshold
  }

  /** Consecutive failures so far. */
  get failures (): number { return this.#failures }
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
  const lines = checks.map((c) => c.waived !== undefined ? `[~]${c.name} failed, waived: ${c.detail}` : `[${c.ok ? '+' : '-'}]${c.name} ${c.ok ? 'ok' : 'failed'}: ${c.detail}`)
  lines.push(`${name} check ${ok ? 'passed' : 'failed'}`)
  return { status: ok ? 200 : 503, body: lines.join('\n') + '\n' }
}

export { S, T }
