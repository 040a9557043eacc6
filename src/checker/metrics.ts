// The checker's metrics: its own prom-client Registry (one per checker), plain counters bumped by the parts and
// copied into prom-client at scrape time, and point-in-time readings of the last round.
import { Registry, Counter, Gauge, Histogram, collectDefaultMetrics } from 'prom-client'
import { STATES, type InstanceState } from '../registry/types.js'
import { MODES, type Mode } from './policy.js'
import { OUTCOMES, PROBE_KINDS, type ProbeKind, type ProbeOutcome } from './prober.js'

/** Why an ejection the counts called for did not happen. */
export type BlockReason = 'threshold' | 'mode'

export interface CheckerReadings {
  replicas?: () => number
  shardServices?: () => number
  shardInstances?: () => number
  targets?: () => number
  instancesByState?: () => ReadonlyMap<InstanceState, number>
  mode?: () => Mode
  registryUp?: () => boolean
  /** The targets file (DOORMAN_CHECK_TARGETS): good or not, changes refused since start, accepted version. */
  targetsFile?: () => { ok: boolean, refused: number, version: number }
  /** The run-time mode table's entries (scope → mode), and the default. */
  modeEntries?: () => ReadonlyMap<string, Mode>
}

export class CheckerMetrics {
  readonly registry = new Registry()
  readonly probes = new Map<ProbeOutcome, number>()
  readonly blocked = new Map<BlockReason, number>()
  /** Failed registry calls, by what was being done: `round`, `eject`, `recover`, `heartbeat`. */
  readonly errors = new Map<string, number>()
  ejections = 0
  recoveries = 0
  rounds = 0
  readonly roundDuration: Histogram
  readonly probeDuration: Histogram
  /** Probes by kind of check (`lane`, `connect`, `http`, `tcp`, `grpc`) and result. */
  readonly checkProbes: Counter<'type' | 'result'>
  readonly checkDuration: Histogram<'type'>
  readonly readings: CheckerReadings = {}

  constructor (opts: { defaults?: boolean } = {}) {
    const registry = this.registry
    const r = this.readings
    const gauge = (name: string, help: string, read: () => number | undefined): void => {
      // eslint-disable-next-line no-new
      new Gauge({ name, help, registers: [registry], collect () { const v = read(); if (v !== undefined) this.set(v) } })
    }
    const copy = (c: Counter<string>, label: string, m: ReadonlyMap<string, number>, all: readonly string[] = []): void => {
      c.reset()
      for (const k of all) c.inc({ [label]: k }, 0)
      for (const [k, v] of m) c.inc({ [label]: k }, v)
    }
    const probes = this.probes
    const blocked = this.blocked
    const errors = this.errors
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const self = this
    this.roundDuration = new Histogram({ name: 'doorman_checker_round_duration_seconds', help: 'One round: list, probe every owned instance, decide and act.', buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30], registers: [registry] })
    this.probeDuration = new Histogram({ name: 'doorman_checker_probe_duration_seconds', help: 'One probe, until its answer or its timeout.', buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5], registers: [registry] })
    this.checkProbes = new Counter({ name: 'doorman_checker_check_probes_total', help: 'Probes by kind of check (lane: a sidecar\'s /readyz, connect: TCP without a lane, http, tcp, grpc: check definitions) and result.', labelNames: ['type', 'result'], registers: [registry] })
    this.checkDuration = new Histogram({ name: 'doorman_checker_check_duration_seconds', help: 'One probe by kind of check, until its answer or its timeout.', labelNames: ['type'], buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5], registers: [registry] })
    for (const k of PROBE_KINDS) for (const o of OUTCOMES) this.checkProbes.inc({ type: k, result: o }, 0)
    // eslint-disable-next-line no-new
    new Gauge({
      name: 'doorman_checker_mode_entry',
      help: 'The run-time mode table: 1 per entry (scope: *, org:NAME, env:NAME, service, service/cluster) with its mode.',
      labelNames: ['scope', 'mode'],
      registers: [registry],
      collect () {
        const m = r.modeEntries?.()
        if (m === undefined) return
        this.reset()
        for (const [scope, mode] of m) this.set({ scope, mode }, 1)
      }
    })
    // eslint-disable-next-line no-new
    new Counter({ name: 'doorman_checker_rounds_total', help: 'Rounds completed.', registers: [registry], collect () { this.reset(); this.inc(self.rounds) } })
    // eslint-disable-next-line no-new
    new Counter({ name: 'doorman_checker_probes_total', help: 'Probes by result: ok, timeout, refused, status (a non-2xx answer), error.', labelNames: ['result'], registers: [registry], collect () { copy(this, 'result', probes, OUTCOMES) } })
    // eslint-disable-next-line no-new
    new Counter({ name: 'doorman_checker_ejections_total', help: 'Instances this replica ejected.', registers: [registry], collect () { this.reset(); this.inc(self.ejections) } })
    // eslint-disable-next-line no-new
    new Counter({ name: 'doorman_checker_recoveries_total', help: 'Ejected instances this replica recovered.', registers: [registry], collect () { this.reset(); this.inc(self.recoveries) } })
    // eslint-disable-next-line no-new
    new Counter({ name: 'doorman_checker_ejections_blocked_total', help: 'Ejections called for but not made, by reason: threshold (the protection threshold), mode (recover-only).', labelNames: ['reason'], registers: [registry], collect () { copy(this, 'reason', blocked, ['threshold', 'mode']) } })
    // eslint-disable-next-line no-new
    new Counter({ name: 'doorman_checker_registry_errors_total', help: 'Failed registry calls, by step: round, eject, recover, heartbeat.', labelNames: ['step'], registers: [registry], collect () { copy(this, 'step', errors) } })
    // eslint-disable-next-line no-new
    new Gauge({
      name: 'doorman_checker_instances',
      help: "Instances of this replica's shard by registry state.",
      labelNames: ['state'],
      registers: [registry],
      collect () {
        const m = r.instancesByState?.()
        if (m === undefined) return
        for (const s of STATES) this.set({ state: s }, m.get(s) ?? 0)
      }
    })
    // eslint-disable-next-line no-new
    new Gauge({
      name: 'doorman_checker_mode',
      help: 'The mode in force everywhere (1 for the current one); scopes may override it per service or cluster.',
      labelNames: ['mode'],
      registers: [registry],
      collect () {
        const cur = r.mode?.()
        if (cur === undefined) return
        for (const m of MODES) this.set({ mode: m }, m === cur ? 1 : 0)
      }
    })
    gauge('doorman_checker_shard_services', 'Services this replica owns.', () => r.shardServices?.())
    gauge('doorman_checker_shard_instances', "Instances of the services this replica owns.", () => r.shardInstances?.())
    gauge('doorman_checker_probe_targets', 'Instances probed in the last round (after the filters).', () => r.targets?.())
    gauge('doorman_checker_replicas', "Live replicas in this replica's group.", () => r.replicas?.())
    gauge('doorman_checker_registry_up', '1 while the registry is reachable.', () => r.registryUp === undefined ? undefined : Number(r.registryUp()))
    gauge('doorman_checker_targets_file_ok', '1 while the targets file (DOORMAN_CHECK_TARGETS) is good; 0 while a refused change is on disk (the last good one is in force).', () => { const f = r.targetsFile?.(); return f === undefined ? undefined : Number(f.ok) })
    // eslint-disable-next-line no-new
    new Counter({ name: 'doorman_checker_targets_file_refused_total', help: 'Changes of the targets file refused (not YAML, or not the documented shape).', registers: [registry], collect () { const f = r.targetsFile?.(); this.reset(); if (f !== undefined) this.inc(f.refused) } })
    gauge('doorman_checker_targets_file_version', 'Accepted versions of the targets file since start (1 = the first load).', () => r.targetsFile?.().version)
    if (opts.defaults !== false) collectDefaultMetrics({ register: registry })
  }

  /** One probe's result by kind of check. */
  probe (kind: ProbeKind, outcome: ProbeOutcome, seconds: number): void {
    this.checkProbes.inc({ type: kind, result: outcome })
    this.checkDuration.observe({ type: kind }, seconds)
  }

  count<K> (m: Map<K, number>, k: K): void { m.set(k, (m.get(k) ?? 0) + 1) }

  async text (): Promise<string> { return await this.registry.metrics() }
}
