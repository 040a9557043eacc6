// Probe semantics as pure functions of the shared state and a clock.
import t from 'tap'
import { SharedState, S, T } from '../src/probe-lane/shared.js'
import { startupChecks, livenessChecks, readinessChecks, ProgressTracker, appLivenessChecks, applyRestartBudget, restartBudget, appProbeRoute, render, LIVENESS_CONFIRM_MS, readinessTiming, ReadinessStreak } from '../src/probe-lane/probes.js'

const cfg = { livenessStall: 10_000, readinessStall: 1000, appStall: 5000, livenessMaxFailing: 25 }
const ok = (checks: Array<{ ok: boolean }>): boolean => checks.every((c) => c.ok)

function fresh (now: number): SharedState {
  const s = new SharedState()
  s.setTime(T.HEARTBEAT, now)
  return s
}

t.test('startup needs only doorman itself', async (t) => {
  const s = fresh(1000)
  t.notOk(ok(startupChecks(s)))
  s.set(S.LANE_UP, 1)
  s.set(S.LISTENING, 1)
  t.ok(ok(startupChecks(s)), 'the app is not consulted')
})

t.test('liveness is about the main loop only', async (t) => {
  const s = fresh(1000)
  t.ok(ok(livenessChecks(s, cfg, 1000 + 9_999)))
  t.notOk(ok(livenessChecks(s, cfg, 1000 + 10_000)))
  s.set(S.PHASE, 1)
  t.ok(ok(livenessChecks(s, cfg, 2000)), 'draining is alive')
})

t.test('readiness: app started and ready, registered when required, serving, loop fresh', async (t) => {
  const s = fresh(1000)
  s.set(S.LISTENING, 1)
  t.notOk(ok(readinessChecks(s, cfg, 1000)))
  s.set(S.APP_STARTED, 1)
  s.set(S.APP_READY, 1)
  t.ok(ok(readinessChecks(s, cfg, 1000)))
  s.set(S.REGISTRY_REQUIRED, 1)
  t.notOk(ok(readinessChecks(s, cfg, 1000)), 'waits for registration')
  s.set(S.REGISTERED, 1)
  t.ok(ok(readinessChecks(s, cfg, 1000)))
  t.notOk(ok(readinessChecks(s, cfg, 2000)), 'a stale heartbeat is unready')
  s.set(S.PHASE, 1)
  t.notOk(ok(readinessChecks(s, cfg, 1000)), 'draining is unready')
})

t.test('a drain the lane accepts makes it unready at once, and never moves a later phase back', async (t) => {
  const s = fresh(1000)
  s.set(S.APP_STARTED, 1)
  s.set(S.APP_READY, 1)
  s.set(S.LISTENING, 1)
  t.ok(ok(readinessChecks(s, cfg, 1000)), 'ready while serving')
  s.drainAccepted(1200)
  t.equal(s.phase, 'draining')
  t.notOk(ok(readinessChecks(s, cfg, 1000)), 'unready as soon as the drain is accepted')
  t.equal(s.time(T.DRAIN_STARTED), 1200, 'the drain start is stamped')
  s.drainAccepted(1500)
  t.equal(s.time(T.DRAIN_STARTED), 1200, '...once')
  s.set(S.PHASE, 3)
  s.drainAccepted(1600)
  t.equal(s.phase, 'closed', 'a closed drain stays closed')
})

t.test('app progress: busy is not dead, stuck is', async (t) => {
  const s = fresh(0)
  const p = new ProgressTracker(s, cfg)
  p.sample(0)
  s.set(S.INFLIGHT, 5)
  for (let now = 100; now <= 4900; now += 100) { s.setTime(T.HEARTBEAT, now); p.sample(now) }
  t.ok(ok(appLivenessChecks(p, null, 4900)), 'within the window')
  for (let now = 5000; now <= 5200; now += 100) { s.setTime(T.HEARTBEAT, now); p.sample(now) }
  t.notOk(ok(appLivenessChecks(p, null, 5200)), 'in flight and nothing completed for the window')
  s.set(S.COMPLETED, 1)
  s.setTime(T.HEARTBEAT, 5300)
  p.sample(5300)
  t.ok(ok(appLivenessChecks(p, null, 5300)), 'a completion is progress')
  const failing = { name: 'app-probe', ok: false, detail: 'timed out' }
  t.ok(ok(appLivenessChecks(p, failing, 5400)), 'its own probe failing while it completes requests: busy, not dead')
  t.notOk(ok(appLivenessChecks(p, failing, 5300 + 5000)), 'its own probe failing and nothing completed: dead')
  s.set(S.INFLIGHT, 0)
  p.sample(20_000)
  t.ok(ok(appLivenessChecks(p, null, 20_000)), 'idle is not stalled')
})

t.test("an app whose own probe passes is alive whatever its progress (a hung dependency is not a restart)", async (t) => {
  const s = fresh(0)
  const p = new ProgressTracker(s, cfg)
  p.sample(0)
  s.set(S.INFLIGHT, 20)
  for (let now = 100; now <= 30_000; now += 100) { s.setTime(T.HEARTBEAT, now); p.sample(now) }
  const passing = { name: 'app-probe', ok: true, detail: 'HTTP 200' }
  const checks = appLivenessChecks(p, passing, 30_000)
  t.ok(ok(checks), '30 s without a completion, its own probe passing: alive')
  t.match(checks.find((c) => c.name === 'progress')?.detail, /none completed for \d+ms: not ready, not dead/)
  t.notOk(ok(appLivenessChecks(p, null, 30_000)), 'progress-only: a stall is a failing check (the restart budget decides)')
})

t.test('the restart budget: at least one, the nearest share, never all below 100%', async (t) => {
  t.same([1, 2, 3, 4, 6, 8, 10, 20].map((n) => restartBudget(n, 25)), [1, 1, 1, 1, 1, 2, 2, 5])
  t.equal(restartBudget(3, 50), 1)
  t.equal(restartBudget(10, 100), 10)
})

t.test('applyRestartBudget', async (t) => {
  const stall = [{ name: 'progress', ok: false, detail: 'requests in flight and none completed for 12000ms' }]
  const ownFails = [{ name: 'progress', ok: true, detail: 'x' }, { name: 'app-probe', ok: false, detail: 'timed out' }]
  const fine = [{ name: 'progress', ok: true, detail: 'completing requests or idle' }]
  const since = 1000
  const at = since + LIVENESS_CONFIRM_MS
  const alone = { view: false, others: 0, othersFailing: 0 }
  t.equal(applyRestartBudget(fine, alone, 25, 0, at).verdict, 'ok')
  const w = applyRestartBudget(stall, alone, 25, since, at)
  t.equal(w.verdict, 'waived', 'memory registry: a stall alone never fails liveness')
  t.ok(ok(w.checks))
  t.match(render(w.checks, true, 'app-livez').body, /\[~\]progress failed, waived: .*\n\[\+\]restart-budget ok: no view of the service/)
  t.equal(applyRestartBudget(ownFails, alone, 25, since, at).verdict, 'failed', 'memory registry: its own probe failing and nothing completed is judged alone')

  const three = (othersFailing: number): { view: boolean, others: number, othersFailing: number } => ({ view: true, others: 2, othersFailing })
  t.equal(applyRestartBudget(stall, three(0), 25, since, at).verdict, 'failed', '1 of 3 failing: within the budget of 1, this pod')
  t.equal(applyRestartBudget(stall, three(0), 25, since, at - 1).verdict, 'waived', 'not before the others could report')
  const shared = applyRestartBudget(ownFails, three(1), 25, since, at)
  t.equal(shared.verdict, 'waived', '2 of 3 failing: shared, a dependency')
  t.match(shared.reason, /2 of 3 instances of the service failing or restarting, budget 1 \(DOORMAN_LIVENESS_MAX_FAILING=25%\): the failure is shared/)
  t.equal(render(shared.checks, false, 'app-livez').status, 200)
  t.equal(applyRestartBudget(stall, three(2), 25, since, at).verdict, 'waived', 'all failing: shared')
  t.equal(applyRestartBudget(stall, three(1), 50, since, at).verdict, 'waived', '2 of 3 at 50%: budget 1')
  t.equal(applyRestartBudget(stall, { view: true, others: 7, othersFailing: 1 }, 25, since, at).verdict, 'failed', '2 of 8: budget 2')
  t.equal(applyRestartBudget(stall, { view: true, others: 0, othersFailing: 0 }, 25, since, at).verdict, 'failed', 'a service of one: the budget is one')
  const okv = applyRestartBudget(fine, three(2), 25, 0, at)
  t.equal(okv.verdict, 'ok')
  t.match(okv.checks.at(-1)?.detail, /2 of 3 instances/, 'verbose shows the count while passing too')
})

t.test("readiness follows the app's probe timing, as kubelet's verdict would", async (t) => {
  const h = { httpGet: { path: '/ready', port: 1 } }
  t.same(readinessTiming([], 1000), { period: 1000, failureThreshold: 3, successThreshold: 1 }, 'no readiness probe: the check interval, kubelet defaults')
  t.same(readinessTiming([h], 1000), { period: 1000, failureThreshold: 3, successThreshold: 1 })
  t.same(readinessTiming([{ ...h, periodSeconds: 5, failureThreshold: 2, successThreshold: 2 }], 1000), { period: 5000, failureThreshold: 2, successThreshold: 2 })
  t.same(readinessTiming([{ ...h, periodSeconds: 5, failureThreshold: 4 }, { ...h, periodSeconds: 2, successThreshold: 3 }], 1000), { period: 2000, failureThreshold: 3, successThreshold: 3 }, 'several: the strictest')
  const s = new ReadinessStreak(3, 2)
  let ready = true
  const seq = (results: boolean[]): boolean[] => results.map((ok) => (ready = s.next(ready, ok)))
  t.same(seq([false, false, true, false, false]), [true, true, true, true, true], 'two failures, a pass, two failures: still ready')
  t.same(seq([false]), [false], 'the third in a row: not ready')
  t.same(seq([true, false, true, true]), [false, false, false, true], 'back after two passes in a row')
})

t.test('a stale main loop does not blame the app', async (t) => {
  const s = fresh(0)
  const p = new ProgressTracker(s, cfg)
  s.set(S.INFLIGHT, 3)
  p.sample(0)
  p.sample(8000)
  t.ok(ok(appLivenessChecks(p, null, 8000)), 'counters are stale, so no verdict against the app')
})

t.test('render', async (t) => {
  const checks = [{ name: 'a', ok: true, detail: 'fine' }, { name: 'b', ok: false, detail: 'broken' }]
  t.same(render([checks[0]], false, 'x'), { status: 200, body: 'ok\n' })
  t.same(render(checks, false, 'x'), { status: 503, body: 'b: broken\n' })
  t.equal(render(checks, true, 'readyz').body, '[+]a ok: fine\n[-]b failed: broken\nreadyz check failed\n')
})

t.test('app probe paths: with DOORMAN_APP_PROBES only the paths it holds; without it, any container falls back', async (t) => {
  const live = { httpGet: { path: '/health', port: 8080 } }
  const ready = { tcpSocket: { port: 8080 } }
  const probes = { '/app-health/app/readyz': ready, '/app-health/app/livez': live }
  t.same(appProbeRoute('/app-health/app/livez', probes), { kind: 'livez', own: live })
  t.same(appProbeRoute('/app-health/app/readyz', probes), { kind: 'readyz', own: ready })
  const held = ['/app-health/app/livez', '/app-health/app/readyz']
  t.same(appProbeRoute('/app-health/nope/livez', probes), { kind: 'unknown', held }, 'another container')
  t.same(appProbeRoute('/app-health/app/startupz', probes), { kind: 'unknown', held }, 'a probe the container has not')
  t.same(appProbeRoute('/app-health/app/health', probes), { kind: 'unknown', held }, 'not a probe kind at all')
  t.equal(appProbeRoute('/livez', probes), null, 'not an app probe path')

  t.same(appProbeRoute('/app-health/app/readyz', {}), { kind: 'readyz', own: null }, 'empty: the fallback')
  t.same(appProbeRoute('/app-health/anything/startupz', {}), { kind: 'startupz', own: null })
  t.same(appProbeRoute('/app-health/anything/livez', {}), { kind: 'livez', own: null })
  t.equal(appProbeRoute('/app-health/app/health', {}), null, 'empty: still only the three probe kinds')
})
