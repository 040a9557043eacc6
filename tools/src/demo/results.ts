// The demo's machine-readable results (`results.json` beside the report) and the verdict computed from them.
import type { Bucket, FailKind } from './load.js'
import type { MtlsPlan, MtlsRun } from './mtls.js'

export interface ProbeTimingsPlan { periodMs: number, timeoutMs: number, failureThreshold: number }

export interface IncidentPlan {
  pods: number
  /** The app's request worker pool (Tomcat's max threads) and its inner executor. */
  workers: number
  executor: number
  /** doorman's concurrency limit, below the worker pool; its queue bound and queue timeout. */
  limit: number
  maxQueue: number
  queueTimeoutMs: number
  startupMs: number
  clientTimeoutMs: number
  baseRate: number
  doubledRate: number
  normalLatencyMs: number
  slowLatencyMs: number
  doubleAtMs: number
  slowAtMs: number
  recoverAtMs: number
  endMs: number
  sampleMs: number
  probe: ProbeTimingsPlan
  /**
   * The dependency-hang scenario: between slowAtMs and recoverAtMs the downstream does not answer at all; the app's
   * liveness is its own progress-style `/health/live` (down after `appStallMs` without a completion), and with doorman
   * the instances share a registry (the restart budget's view of the service).
   */
  hang?: boolean
  appStallMs?: number
}

export interface Progress { doneMs: number, totalMs: number }

export interface Marker {
  /** Seconds since the run's traffic started. */
  t: number
  kind: 'restart' | 'ready' | 'unready' | 'drain' | 'start' | 'registered' | 'stopped'
  label: string
  detail?: string
}

export interface Totals {
  sent: number
  ok: number
  shed: number
  failed: number
  kinds: Partial<Record<FailKind, number>>
}

export interface PodSample {
  name: string
  ready: boolean
  /** The app process is running and reporting. */
  up: boolean
  busy: number
  max: number
  queued: number
  execBusy: number
  execQueued: number
  /** Slowest liveness probe of the app container in this interval (null: none ran). */
  probeMs: number | null
  probeFailed: boolean
  restarts: number
  doorman: { inflight: number, limit: number, queued: number, shed: number } | null
}

export interface IncidentSample {
  /** Seconds since the traffic started. */
  t: number
  phase: string
  rate: number
  downstreamMs: number
  sent: number
  ok: number
  shed: number
  failed: number
  p99: number
  readyPods: number
  restarts: number
  pods: PodSample[]
}

export interface IncidentRun {
  withDoorman: boolean
  durationMs: number
  totals: Totals
  restarts: number
  restartsByPod: Record<string, number>
  probe: { count: number, failures: number, maxMs: number, timeoutMs: number }
  maxBusy: number
  workers: number
  limit: number | null
  zeroReadySeconds: number
  /** With doorman: app liveness probes its restart budget answered 200 because the failure was shared (all pods). */
  livenessWaived?: number
  markers: Marker[]
  timeline: IncidentSample[]
}

export interface RolloutPlan {
  instances: number
  rate: number
  warmupMs: number
  drainDelayMs: number
  /** Pause between one instance's replacement and the next. */
  settleMs: number
  sampleMs: number
  tailMs: number
}

export interface RolloutSample {
  t: number
  sent: number
  ok: number
  shed: number
  failed: number
  p99: number
  /** Successful answers in this interval, by instance. */
  byInstance: Record<string, number>
  /** Each live instance's published warmup weight in percent (from its lane). */
  weights: Record<string, number>
}

export interface RolloutRun {
  /** Empty when the rollout could not run; `skipped` then says why. */
  skipped: string | null
  durationMs: number
  totals: Totals
  instances: string[]
  replaced: Array<{ old: string, new: string, drainStartedT: number, drainDoneT: number }>
  markers: Marker[]
  timeline: RolloutSample[]
  /** For each new instance: its share of traffic in successive windows after it started taking traffic. */
  shareRise: Record<string, number[]>
}

export interface GrpcRolloutPlan {
  providers: number
  /** Unary calls per second over the one channel. */
  rate: number
  /** Steady load before the first replacement: the per-call spread over the first providers is read there. */
  leadMs: number
  warmupMs: number
  drainDelayMs: number
  settleMs: number
  sampleMs: number
  tailMs: number
  /** Each call's gRPC deadline. */
  deadlineMs: number
}

/** The noisy neighbour (tools/src/demo/noisy.ts runs it). */
export interface NoisyPlan {
  /** doorman's limit, and the app's time per request: capacity = limit × 1000 / serviceMs per second. */
  limit: number
  serviceMs: number
  maxQueue: number
  /** The shop's rate, and the batch job's while it floods (requests/s). */
  shopRate: number
  batchRate: number
  /** The flood runs from floodFromMs to floodToMs of a run of totalMs. */
  floodFromMs: number
  floodToMs: number
  totalMs: number
  sampleMs: number
}

export interface NoisySample {
  /** Seconds since the run's traffic started. */
  t: number
  shop: Pick<Bucket, 'sent' | 'ok' | 'shed' | 'failed' | 'p99'>
  batch: Pick<Bucket, 'sent' | 'ok' | 'shed' | 'failed' | 'p99'>
}

export interface NoisyRun {
  fairness: 'flow' | 'off'
  samples: NoisySample[]
  shop: Totals
  batch: Totals
  /** The shop's totals while the batch job floods. */
  shopDuringFlood: { sent: number, ok: number, shed: number, failed: number }
  /** The heaviest flows doorman's /state listed at the height of the flood. */
  flows: Array<{ flow: string, inflight: number, queued: number, shed: number }>
}

export interface Check { name: string, pass: boolean, detail: string }

export interface Results {
  version: string
  mode: 'full' | 'short'
  startedAt: string
  durationMs: number
  incident: { plan: IncidentPlan, without: IncidentRun, with: IncidentRun } | null
  rollout: { plan: RolloutPlan, run: RolloutRun } | null
  /** A dependency hangs (issue 16): the same pods, without and with doorman. */
  hang?: { plan: IncidentPlan, without: IncidentRun, with: IncidentRun } | null
  /** The gRPC rollout (issue 14): one grpc-js channel through the outbound lane, three providers replaced in turn. */
  grpc?: { plan: GrpcRolloutPlan, run: RolloutRun } | null
  /** mTLS between two sidecars (issue 24): identity to the app, refusals, a certificate rotated under load. */
  mtls?: { plan: MtlsPlan, run: MtlsRun } | null
  /** The noisy neighbour (issue 25): one caller floods, with DOORMAN_FAIRNESS=off and with fairness. */
  noisy?: { plan: NoisyPlan, without: NoisyRun, with: NoisyRun } | null
  verdict: { pass: boolean, checks: Check[] }
}

/** The verdict the demo stands on: the seed's restarts without doorman, none with it, a lossless rollout. */
export function verdict (r: Omit<Results, 'verdict'>): { pass: boolean, checks: Check[] } {
  const checks: Check[] = []
  if (r.incident !== null) {
    const { without, with: withD } = r.incident
    checks.push({ name: 'restarts without doorman', pass: without.restarts > 0, detail: `${without.restarts} restart(s): kubelet killed busy-but-alive pods` })
    checks.push({ name: 'restarts with doorman', pass: withD.restarts === 0, detail: `${withD.restarts} restart(s)` })
    checks.push({ name: 'failed requests with doorman', pass: withD.totals.failed < without.totals.failed, detail: `${withD.totals.failed} failed with doorman vs ${without.totals.failed} without (${withD.totals.shed} shed with 503 + retry-after)` })
  }
  if (r.hang !== undefined && r.hang !== null) checks.push(...hangChecks(r.hang.plan, r.hang.without, r.hang.with))
  if (r.rollout !== null) {
    const run = r.rollout.run
    if (run.skipped !== null) {
      checks.push({ name: 'rollout', pass: false, detail: `not run: ${run.skipped}` })
    } else {
      checks.push({ name: 'failed requests in the rollout', pass: run.totals.failed === 0, detail: `${run.totals.failed} failed of ${run.totals.sent}` })
      checks.push({ name: 'instances replaced', pass: run.replaced.length === r.rollout.plan.instances, detail: `${run.replaced.length} of ${r.rollout.plan.instances}` })
    }
  }
  if (r.grpc !== undefined && r.grpc !== null) checks.push(...grpcChecks(r.grpc.plan, r.grpc.run))
  if (r.mtls !== undefined && r.mtls !== null) checks.push(...mtlsChecks(r.mtls.run))
  if (r.noisy !== undefined && r.noisy !== null) checks.push(...noisyChecks(r.noisy.without, r.noisy.with))
  return { pass: checks.length > 0 && checks.every((c) => c.pass), checks }
}

/**
 * The gRPC rollout's verdict, from what happened: no call failed (shed calls count apart, though none is expected),
 * every provider was replaced, and the one channel's calls were spread per call: in the steady lead before the first
 * replacement each first provider answered at least a fifth of them, and every provider answered calls in its turn.
 */
export function grpcChecks (plan: GrpcRolloutPlan, run: RolloutRun): Check[] {
  if (run.skipped !== null) return [{ name: 'gRPC rollout', pass: false, detail: `not run: ${run.skipped}` }]
  const firstStart = run.markers.find((m) => m.kind === 'start')?.t ?? Infinity
  const lead: Record<string, number> = {}
  const total: Record<string, number> = {}
  for (const s of run.timeline) {
    for (const [n, c] of Object.entries(s.byInstance)) {
      total[n] = (total[n] ?? 0) + c
      if (s.t <= firstStart) lead[n] = (lead[n] ?? 0) + c
    }
  }
  const first = run.instances.slice(0, plan.providers)
  const leadSum = Object.values(lead).reduce((a, b) => a + b, 0)
  const shares = first.map((n) => leadSum === 0 ? 0 : Math.round((1000 * (lead[n] ?? 0)) / leadSum) / 10)
  const spread = leadSum > 0 && shares.every((x) => x >= 20) && run.instances.every((n) => (total[n] ?? 0) > 0)
  return [
    { name: 'gRPC rollout: failed calls', pass: run.totals.sent > 0 && run.totals.failed === 0, detail: `${run.totals.failed} failed of ${run.totals.sent} calls over one channel (${run.totals.ok} OK, ${run.totals.shed} shed)` },
    { name: 'gRPC rollout: providers replaced', pass: run.replaced.length === plan.providers, detail: `${run.replaced.length} of ${plan.providers}` },
    { name: 'gRPC rollout: calls spread per call over the providers', pass: spread, detail: `before the first replacement ${first.map((n, i) => `${n} ${shares[i] ?? 0}%`).join(', ')} of ${leadSum} calls; over the run ${run.instances.map((n) => `${n} ${total[n] ?? 0}`).join(', ')}` }
  ]
}

/**
 * The dependency hang's verdict, from what happened: without doorman every pod was restarted (its progress-style
 * liveness failed on all of them at once); with doorman none was, the excess was shed (503 + retry-after) rather than
 * left to time out, and once the dependency was back every pod was ready and requests succeeded again.
 */
export function hangChecks (plan: IncidentPlan, without: IncidentRun, withD: IncidentRun): Check[] {
  const pods = Object.keys(without.restartsByPod)
  const restarted = pods.filter((p) => (without.restartsByPod[p] ?? 0) > 0)
  // After the dependency is back (plus a few seconds for the held calls to finish): the last samples of the run.
  const settledT = (plan.recoverAtMs + 3000) / 1000
  const after = withD.timeline.filter((s) => s.t >= settledT)
  const recovered = after.length > 0 && after.every((s) => s.readyPods === plan.pods && s.failed === 0 && s.shed === 0) && after.some((s) => s.ok > 0)
  const noEndpoint = withD.totals.kinds['no-endpoint'] ?? 0
  return [
    { name: 'dependency hang: every pod restarted without doorman', pass: pods.length > 0 && restarted.length === pods.length, detail: `${restarted.length} of ${pods.length} pods restarted (${without.restarts} restarts): their liveness failed together, and the dependency was still hung` },
    { name: 'dependency hang: no restart with doorman', pass: withD.restarts === 0, detail: `${withD.restarts} restart(s); kubelet saw ${withD.probe.failures} of ${withD.probe.count} app liveness probes fail; the restart budget answered ${withD.livenessWaived ?? 0} failing ones 200 as shared (the app's own check failed on every pod at once)` },
    { name: 'dependency hang: traffic shed cleanly with doorman', pass: withD.totals.shed > 0 && noEndpoint === 0 && withD.totals.failed < without.totals.failed, detail: `${withD.totals.shed} shed (503 + retry-after), ${withD.totals.failed} failed with doorman vs ${without.totals.failed} without; pods never all unready (${noEndpoint} with no endpoint)` },
    { name: 'dependency hang: recovered with doorman', pass: recovered, detail: recovered ? `from ${settledT} s: every pod ready, ${after.reduce((n, s) => n + s.ok, 0)} ok, nothing failed or shed` : `after ${settledT} s: ${after.map((s) => `${s.readyPods} ready/${s.ok} ok/${s.failed} failed`).join(', ')}` }
  ]
}

/** The mTLS part's verdict: no failed request across the rotation, the caller's identity at the app, both refusals. */
export function mtlsChecks (run: MtlsRun): Check[] {
  if (run.skipped !== null) return [{ name: 'mTLS', pass: false, detail: `not run: ${run.skipped}` }]
  const rot = run.rotation
  return [
    { name: 'failed requests over mTLS', pass: run.failed === 0 && run.ok > 0, detail: `${run.failed} failed of ${run.sent}, the certificate rotated mid-run` },
    { name: 'new certificate in use', pass: rot !== null && rot.after !== '' && rot.after !== rot.before, detail: rot === null || rot.after === '' ? 'new handshakes never presented the new certificate' : `new handshakes presented it ${rot.presentedAfterMs} ms after the swap` },
    { name: "caller's identity at the app", pass: run.xfcc.includes(`URI=${run.consumerId}`), detail: run.xfcc === '' ? 'no x-forwarded-client-cert' : `x-forwarded-client-cert: ${run.xfcc.replace(/;Hash=[0-9a-f]+/, ';Hash=…')}` },
    { name: 'plaintext caller refused', pass: run.refused.plaintext, detail: run.refused.plaintext ? 'connection closed unanswered (strict)' : 'answered' },
    { name: 'certificate from another CA refused', pass: run.refused.otherCa, detail: run.refused.otherCa ? 'handshake refused' : 'answered' }
  ]
}

/** The verdict's checks: with fairness the shop is served through the flood; without it, it is shed with the batch job. */
export function noisyChecks (without: NoisyRun, withF: NoisyRun): Check[] {
  const share = (d: NoisyRun['shopDuringFlood']): string => `${d.ok} of ${d.sent} served, ${d.shed} shed`
  return [
    { name: 'noisy neighbour: the light caller shed without fairness', pass: without.shopDuringFlood.shed > 0, detail: `DOORMAN_FAIRNESS=off: ${share(without.shopDuringFlood)} while the batch job floods` },
    // 95 %, not the end-to-end test's 99 %: the demo's own process carries the flood's load generator and the app.
    { name: 'noisy neighbour: the light caller served with fairness', pass: withF.shopDuringFlood.sent > 0 && withF.shopDuringFlood.ok >= withF.shopDuringFlood.sent * 0.95, detail: `DOORMAN_FAIRNESS=flow: ${share(withF.shopDuringFlood)}; the batch job ${withF.batch.shed} shed` }
  ]
}
