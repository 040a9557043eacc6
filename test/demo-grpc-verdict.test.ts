// The demo's gRPC verdict is computed from what happened: a run that lost a call, or whose calls were pinned to one
// provider (as one HTTP/2 connection through a Kubernetes Service would be), fails it.
import t from 'tap'
import { GRPC_SHORT } from '../tools/src/demo/grpc-rollout.js'
import { grpcChecks, type RolloutRun, type RolloutSample } from '../tools/src/demo/results.js'

function run (byInstance: Array<Record<string, number>>, failed = 0): RolloutRun {
  const timeline: RolloutSample[] = byInstance.map((b, i) => {
    const ok = Object.values(b).reduce((x, y) => x + y, 0)
    return { t: (i + 1) / 2, sent: ok, ok, shed: 0, failed: 0, p99: 5, byInstance: b, weights: {} }
  })
  const sent = timeline.reduce((n, s) => n + s.sent, 0) + failed
  return {
    skipped: null,
    durationMs: 10_000,
    totals: { sent, ok: sent - failed, shed: 0, failed, kinds: failed > 0 ? { 'grpc-14': failed } : {} },
    instances: ['v1-a', 'v1-b', 'v1-c', 'v2-a', 'v2-b', 'v2-c'],
    replaced: [{ old: 'v1-a', new: 'v2-a', drainStartedT: 2, drainDoneT: 3 }, { old: 'v1-b', new: 'v2-b', drainStartedT: 4, drainDoneT: 5 }, { old: 'v1-c', new: 'v2-c', drainStartedT: 6, drainDoneT: 7 }],
    markers: [{ t: 1.5, kind: 'start', label: 'v2-a started' }],
    timeline,
    shareRise: {}
  }
}

const spread = [{ 'v1-a': 10, 'v1-b': 10, 'v1-c': 10 }, { 'v1-a': 10, 'v1-b': 9, 'v1-c': 11 }, { 'v1-a': 10, 'v1-b': 10, 'v1-c': 10 }, { 'v2-a': 10, 'v2-b': 10, 'v2-c': 10 }]
const pass = (r: RolloutRun): Record<string, boolean> => Object.fromEntries(grpcChecks(GRPC_SHORT, r).map((c) => [c.name, c.pass]))

t.same(pass(run(spread)), { 'gRPC rollout: failed calls': true, 'gRPC rollout: providers replaced': true, 'gRPC rollout: calls spread per call over the providers': true })
t.equal(pass(run(spread, 1))['gRPC rollout: failed calls'], false, 'one failed call fails it')
const pinned = [{ 'v1-a': 30 }, { 'v1-a': 30 }, { 'v1-a': 30 }, { 'v2-a': 10, 'v2-b': 10, 'v2-c': 10 }]
t.equal(pass(run(pinned))['gRPC rollout: calls spread per call over the providers'], false, 'calls pinned to one provider fail it')
const missing = [...spread.slice(0, 3), { 'v2-a': 15, 'v2-b': 15 }]
t.equal(pass(run(missing))['gRPC rollout: calls spread per call over the providers'], false, 'a provider that answered nothing fails it')
const skipped = { ...run(spread), skipped: 'not installed' }
t.same(grpcChecks(GRPC_SHORT, skipped).map((c) => c.pass), [false], 'a run that did not happen fails')
