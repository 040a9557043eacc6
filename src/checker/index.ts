// `doorman checker`: the central active health checker (seed 002), in four parts with interfaces between them:
//
//   Dispatcher (dispatcher.ts) → Prober (prober.ts) → Decider (decider.ts) → Performer (performer.ts)
//
// Every DOORMAN_CHECK_INTERVAL a round renews this replica's membership of its group, reads the run-time mode table,
// has the Dispatcher list the services this replica owns (rendezvous hashing over the group's live replicas) and
// their instances, has the Prober probe them, and the Decider count and decide as results arrive; the round ends
// once every decision has been acted on. Replicas share nothing but the registry's store (coordinator.ts).
// When another replica's membership expires (it died), the next round starts at that moment, not an interval later:
// with probes bounded by the interval, its share's frozen instances are ejected within
// DOORMAN_REGISTRY_TTL + (failures + 1) × interval of its death (docs/checker.md).
import { hostname } from 'node:os'
import type { Logger } from '../core/log.js'
import type { Instance, InstanceState, Registry } from '../registry/types.js'
import type { Coordinator } from './coordinator.js'
import { Dispatcher, addressFilter, excludeFilter, groupFilter, modeInstanceFilter, modeServiceFilter, ownerFilter, servingFilter, type RoundContext, type ServiceFilter } from './dispatcher.js'
import { Prober, probeKind, type Target } from './prober.js'
import { Decider } from './decider.js'
import { Performer, type CheckerEvent } from './performer.js'
import { CheckerMetrics } from './metrics.js'
import { ModeTable, needsLabels, type Labels, type Mode } from './policy.js'
import { Publisher } from './publisher.js'
import type { TargetSource, SourceService } from './targets.js'

export { Dispatcher } from './dispatcher.js'
export { Prober, type Target, type ProbeResult } from './prober.js'
export { Decider } from './decider.js'
export { Performer } from './performer.js'
export { MemoryCoordinator, RedisCoordinator, type Coordinator, type EjectResult, type Membership } from './coordinator.js'
export { CheckerMetrics } from './metrics.js'
export * from './policy.js'
export { Publisher, staticId } from './publisher.js'
export { TargetsFile, parseTargets, type TargetSource, type SourceService, type TargetSet } from './targets.js'

export type Group = 'main' | 'canary'

export interface CheckerOptions {
  registry: Registry
  coordinator: Coordinator
  /** This replica's name in its group's ring. */
  id?: string
  group?: Group
  /** Service globs owned by the canary group. */
  canary?: readonly string[]
  /** Service globs never checked. */
  exclude?: readonly string[]
  /** Round period, ms. */
  interval: number
  /** One probe's timeout, ms (capped at the interval: a probe never outlasts its round). */
  timeout: number
  failures: number
  successes: number
  /** Protection threshold, percent of a cluster. */
  maxEject: number
  /** The mode where the run-time table says nothing. */
  mode: Mode
  concurrency: number
  /** A replica that stops heartbeating leaves its group after this, ms. */
  replicaTtl: number
  /** Serial decision queues (default 8). */
  queues?: number
  log: Logger
  metrics?: CheckerMetrics
  /** Targets outside the registry (DOORMAN_CHECK_TARGETS), published into it by their owner. */
  targets?: TargetSource
  /** TTL of the published targets' records, ms (default replicaTtl). */
  targetTtl?: number
}

export interface RoundReport {
  round: number
  /** Epoch milliseconds. */
  startedAt: number
  durationMs: number
  replicas: number
  services: number
  instances: number
  targets: number
  failed: number
  ejected: number
  recovered: number
  /** Set when the round could not run (registry unreachable). */
  error?: string
}

/** Which mode applies to each service's cluster (per org and env found among its instances), and which entry decided it. */
export function decisions (table: ModeTable, instances: Iterable<Pick<Instance, 'service' | 'cluster' | 'org' | 'env'>>): Array<{ service: string, cluster: string, org: string, env: string, mode: Mode, scope: string }> {
  const out = new Map<string, { service: string, cluster: string, org: string, env: string, mode: Mode, scope: string }>()
  for (const i of instances) {
    const org = i.org ?? ''
    const env = i.env ?? ''
    const key = `${i.service}\n${i.cluster}\n${org}\n${env}`
    if (out.has(key)) continue
    out.set(key, { service: i.service, cluster: i.cluster, org, env, ...table.decide(i.service, i.cluster, org, env) })
  }
  return [...out.values()].sort((a, b) => a.service < b.service ? -1 : a.service > b.service ? 1 : a.cluster < b.cluster ? -1 : a.cluster > b.cluster ? 1 : 0)
}

/** The default replica id: the host name (the pod's name in Kubernetes) and the process id. */
export function defaultReplicaId (): string {
  return `${hostname().toLowerCase().replace(/[^a-z0-9.-]/g, '-').slice(0, 63)}-${process.pid}`
}

export class Checker {
  readonly id: string
  readonly group: Group
  readonly metrics: CheckerMetrics
  readonly dispatcher: Dispatcher
  readonly prober: Prober
  readonly decider: Decider
  readonly performer: Performer
  readonly #o: CheckerOptions
  readonly #log: Logger
  #replicas: string[] = []
  /** performance.now() of the last successful heartbeat (0 = never). */
  #beatAt = 0
  #modes: ModeTable
  #badModes = ''
  #services: string[] = []
  #byState = new Map<InstanceState, number>()
  #instances = 0
  #targets = 0
  #rounds = 0
  #last: RoundReport | null = null
  #progressAt = performance.now()
  #roundTimer: NodeJS.Timeout | null = null
  #beatTimer: NodeJS.Timeout | null = null
  #current: Promise<RoundReport> | null = null
  #beating: Promise<string[]> | null = null
  /** Fires when the first of the other replicas would expire: the moment to look again and take its share over. */
  #expiryTimer: NodeJS.Timeout | null = null
  /** A replica left while a round was running: the next round starts as soon as this one ends. */
  #rerun = false
  /** The probe timeout in use: DOORMAN_CHECK_TIMEOUT, at most the interval. */
  readonly #timeout: number
  #failing = false
  #started = false
  #stopped = false
  readonly #publisher: Publisher | null
  readonly #needsLabels: boolean
  /** Which replica publishes a file service: the group and rendezvous filters only (a service switched off is still published). */
  readonly #publishFilters: ServiceFilter[]
  #published = { services: 0, instances: 0, version: 0 }
  /** performance.now() of each target's last probe, for checks with their own (longer) interval. */
  readonly #probedAt = new Map<string, number>()

  constructor (opts: CheckerOptions) {
    this.#o = opts
    this.id = opts.id ?? defaultReplicaId()
    this.group = opts.group ?? 'main'
    this.#log = opts.log
    this.#modes = new ModeTable(opts.mode)
    this.metrics = opts.metrics ?? new CheckerMetrics()
    this.dispatcher = new Dispatcher({
      registry: opts.registry,
      catalog: opts.coordinator,
      log: opts.log.child({ part: 'dispatcher' }),
      serviceFilters: [
        excludeFilter(opts.exclude ?? []),
        groupFilter(this.group, opts.canary ?? []),
        modeServiceFilter(),
        ownerFilter()
      ],
      instanceFilters: [servingFilter(), addressFilter(), modeInstanceFilter()]
    })
    // A probe longer than the interval would stretch every round of the shard by it while one instance is silent, and
    // a silent instance would fail once per timeout instead of once per interval: ejections (and takeovers, see
    // docs/checker.md) would come later than `failures × interval` promises.
    this.#timeout = Math.min(opts.timeout, opts.interval)
    this.prober = new Prober({ concurrency: opts.concurrency, timeout: this.#timeout, maxTimeout: opts.interval, keepAlive: Math.max(4000, opts.interval * 2) })
    this.#publisher = opts.targets === undefined ? null : new Publisher({ registry: opts.registry, ttl: opts.targetTtl ?? opts.replicaTtl, log: opts.log.child({ part: 'publisher' }) })
    this.#publishFilters = [groupFilter(this.group, opts.canary ?? []), ownerFilter()]
    this.#needsLabels = needsLabels(opts.canary ?? []) || needsLabels(opts.exclude ?? [])
    this.performer = new Performer({ coordinator: opts.coordinator, maxEject: opts.maxEject, metrics: this.metrics, log: opts.log.child({ part: 'performer' }) })
    this.decider = new Decider({ failures: opts.failures, successes: opts.successes, queues: opts.queues, performer: this.performer, log: opts.log.child({ part: 'decider' }) })
    const r = this.metrics.readings
    r.replicas = () => this.#replicas.length
    r.shardServices = () => this.#services.length
    r.shardInstances = () => this.#instances
    r.targets = () => this.#targets
    r.instancesByState = () => this.#byState
    r.mode = () => this.#modes.global
    r.modeEntries = () => this.#modes.entries
    r.registryUp = () => opts.registry.up
  }

  /** Joins the group and starts the rounds (the first at once) and the membership heartbeat. */
  start (): void {
    if (this.#started) return
    this.#started = true
    if (this.#timeout < this.#o.timeout) this.#log.warn({ timeout: this.#o.timeout, interval: this.#o.interval }, 'DOORMAN_CHECK_TIMEOUT is longer than DOORMAN_CHECK_INTERVAL: probes time out after the interval')
    this.#log.info({ replica: this.id, group: this.group, interval: this.#o.interval, timeout: this.#timeout, failures: this.#o.failures, successes: this.#o.successes, maxEject: this.#o.maxEject, mode: this.#o.mode }, 'checker starting')
    const every = Math.max(50, Math.floor(this.#o.replicaTtl / 3))
    this.#beatTimer = setInterval(() => { if (!this.#stopped) void this.#heartbeat().catch(() => {}) }, every)
    void this.#loop()
  }

  async #loop (): Promise<void> {
    if (this.#stopped) return
    const t0 = performance.now()
    await this.round()
    if (this.#stopped) return
    // Rounds start every interval; one that overran is followed at once.
    const wait = this.#rerun ? 0 : Math.max(0, this.#o.interval - (performance.now() - t0))
    this.#rerun = false
    this.#roundTimer = setTimeout(() => { this.#roundTimer = null; void this.#loop() }, wait)
  }

  /** Starts the next round now (or right after the one running): a replica left and its share is ours to check. */
  #roundNow (): void {
    if (this.#stopped || !this.#started) return
    if (this.#current !== null || this.#roundTimer === null) { this.#rerun = true; return }
    clearTimeout(this.#roundTimer)
    this.#roundTimer = null
    void this.#loop()
  }

  /** Looks at the membership again when the first of the others would expire (unless a heartbeat renews it first). */
  #watchExpiry (inMs: number): void {
    if (this.#expiryTimer !== null) clearTimeout(this.#expiryTimer)
    this.#expiryTimer = null
    if (this.#stopped || !Number.isFinite(inMs)) return
    // A few ms past the expiry, so the store has passed it too.
    this.#expiryTimer = setTimeout(() => {
      this.#expiryTimer = null
      if (!this.#stopped) void this.#heartbeat().catch(() => {})
    }, Math.max(0, inMs) + 5)
  }

  async #heartbeat (): Promise<string[]> {
    if (this.#beating !== null) return await this.#beating
    this.#beating = this.#beat()
    try { return await this.#beating } finally { this.#beating = null }
  }

  async #beat (): Promise<string[]> {
    try {
      const { replicas, nextExpiry } = await this.#o.coordinator.heartbeat(this.group, this.id, this.#o.replicaTtl)
      const before = this.#replicas
      if (replicas.join(',') !== before.join(',')) this.#log.info({ replicas, group: this.group }, 'replicas changed')
      this.#replicas = replicas
      this.#beatAt = performance.now()
      this.#watchExpiry(nextExpiry)
      // A replica gone (expired or left): its share is checked from the next round on, which starts now (or right
      // after the one running) rather than up to an interval later.
      if (before.some((r) => !replicas.includes(r))) this.#roundNow()
      return replicas
    } catch (err) {
      this.metrics.count(this.metrics.errors, 'heartbeat')
      throw err
    }
  }

  /** One round. Exposed for tests; the loop calls it every interval. Never throws. */
  async round (): Promise<RoundReport> {
    if (this.#current !== null) return await this.#current
    this.#current = this.#round()
    try { return await this.#current } finally { this.#current = null }
  }

  async #round (): Promise<RoundReport> {
    const startedAt = Date.now()
    const t0 = performance.now()
    this.#progressAt = t0
    const report: RoundReport = { round: ++this.#rounds, startedAt, durationMs: 0, replicas: 0, services: 0, instances: 0, targets: 0, failed: 0, ejected: 0, recovered: 0 }
    const ejectedBefore = this.metrics.ejections
    const recoveredBefore = this.metrics.recoveries
    try {
      // Right after start (or in an outage), give the connection a moment rather than failing the round at once.
      if (!this.#o.registry.up) await this.#o.registry.waitUp(Math.min(1000, this.#o.interval))
      const replicas = await this.#heartbeat()
      // This round dispatches with the ring just read: no need for another one at once.
      this.#rerun = false
      const { table, bad } = await this.#o.coordinator.modes(this.#o.mode)
      const badText = bad.join(',')
      if (badText !== '' && badText !== this.#badModes) this.#log.warn({ entries: bad }, 'ignoring run-time mode entries that are not full, recover-only or off')
      this.#badModes = badText
      if (table.global !== this.#modes.global) this.#log.warn({ mode: table.global, was: this.#modes.global }, 'checker mode changed')
      this.#modes = table
      // The targets file is looked at first: an edit counts from this round on.
      if (this.#o.targets !== undefined) await this.#o.targets.refresh()
      const ctx: RoundContext = { self: this.id, replicas, modes: table, labels: await this.#labels() }
      this.decider.newRound()
      const written = await this.#publish(ctx)
      const d = await this.dispatcher.dispatch(ctx, written)
      this.#services = d.services
      this.#instances = d.instances.length
      this.#targets = d.targets.length
      const byState = new Map<InstanceState, number>()
      for (const i of d.instances) byState.set(i.state, (byState.get(i.state) ?? 0) + 1)
      this.#byState = byState
      Object.assign(report, { replicas: replicas.length, services: d.services.length, instances: d.instances.length, targets: d.targets.length })
      const m = this.metrics
      const due = this.#due(d.targets)
      await this.prober.run(due, (r) => {
        this.#progressAt = performance.now()
        m.count(m.probes, r.outcome)
        m.probeDuration.observe(r.ms / 1000)
        m.probe(probeKind(r.target), r.outcome, r.ms / 1000)
        if (!r.ok) report.failed++
        const i = r.target.instance
        this.decider.observe(r, table.for(r.target.service, r.target.cluster, i.org, i.env))
      })
      await this.decider.idle()
      this.decider.retain(new Set(d.targets.map((t) => Decider.key(t.service, t.id))))
      if (this.#failing) this.#log.info('registry reachable again: rounds resumed')
      this.#failing = false
    } catch (err) {
      this.metrics.count(this.metrics.errors, 'round')
      report.error = (err as Error)?.message ?? String(err)
      if (!this.#failing) this.#log.warn({ err }, 'round failed (registry unreachable?); retrying every interval')
      this.#failing = true
    }
    report.durationMs = performance.now() - t0
    report.ejected = this.metrics.ejections - ejectedBefore
    report.recovered = this.metrics.recoveries - recoveredBefore
    this.metrics.rounds++
    this.metrics.roundDuration.observe(report.durationMs / 1000)
    this.#progressAt = performance.now()
    this.#last = report
    return report
  }

  /**
   * Services' org and env for the selectors by org: the targets file's own, and, when DOORMAN_CHECK_CANARY or
   * DOORMAN_CHECK_EXCLUDE has org: or env: entries, the registry's (one read a round).
   */
  async #labels (): Promise<ReadonlyMap<string, Labels> | undefined> {
    const o = this.#o
    const fromStore = this.#needsLabels && o.coordinator.serviceLabels !== undefined ? await o.coordinator.serviceLabels() : undefined
    const file = o.targets?.current?.services ?? []
    if (fromStore === undefined && file.length === 0) return undefined
    const out = fromStore ?? new Map<string, Labels>()
    for (const s of file) if (s.org !== '' || s.env !== '') out.set(s.name, { org: s.org, env: s.env })
    return out
  }

  /**
   * Publishes the file services this replica owns into the registry (new, changed and gone instances; TTLs kept
   * alive). Resolves with the records written this round, which the round probes at once.
   */
  async #publish (ctx: RoundContext): Promise<ReadonlyMap<string, Instance[]> | undefined> {
    const source = this.#o.targets
    if (source === undefined || this.#publisher === null) return undefined
    const set = source.current
    const listed = new Set(set.services.map((s) => s.name))
    const names = [...listed]
    const mine = new Set(names.filter((s) => this.#publishFilters.every((f) => f.keep(s, ctx))))
    for (const f of this.#publishFilters) f.retain?.(names)
    const owned: SourceService[] = set.services.filter((s) => mine.has(s.name))
    const registry = this.#o.registry
    const pub = await this.#publisher.publish(owned, listed, async (s) => this.dispatcher.syncedView(s) ?? new Map((await registry.list(s)).map((i) => [i.id, i])))
    this.#published = { services: mine.size, instances: owned.reduce((n, s) => n + s.instances.length, 0), version: set.version }
    if (pub.errors > 0) this.metrics.count(this.metrics.errors, 'publish')
    return pub.written
  }

  /** The targets due this round: all of them, but those whose check has a longer interval of its own. */
  #due (targets: readonly Target[]): readonly Target[] {
    const now = performance.now()
    const out: Target[] = []
    // A round may start a little early or late: a check is due once 90% of its interval has passed.
    for (const t of targets) {
      const every = t.check?.interval
      if (every === undefined || every <= this.#o.interval) { out.push(t); continue }
      const key = Decider.key(t.service, t.id)
      const last = this.#probedAt.get(key)
      if (last !== undefined && now - last < every * 0.9) continue
      this.#probedAt.set(key, now)
      out.push(t)
    }
    if (this.#probedAt.size > targets.length) {
      const keep = new Set(targets.map((t) => Decider.key(t.service, t.id)))
      for (const k of this.#probedAt.keys()) if (!keep.has(k)) this.#probedAt.delete(k)
    }
    return out
  }

  /** Live: the rounds are moving (a round started, a probe finished or a round ended lately). */
  live (): { ok: boolean, detail: string } {
    const stall = Math.max(30_000, 10 * (this.#o.interval + this.#timeout))
    const idle = performance.now() - this.#progressAt
    return idle <= stall ? { ok: true, detail: 'rounds moving' } : { ok: false, detail: `no progress for ${Math.round(idle)}ms` }
  }

  /** Ready: the registry is reachable, this replica is in its group's ring, and a round has completed. */
  ready (): { ok: boolean, checks: Array<{ name: string, ok: boolean, detail: string }> } {
    const beatAge = this.#beatAt === 0 ? Infinity : performance.now() - this.#beatAt
    const checks = [
      { name: 'registry', ok: this.#o.registry.up, detail: this.#o.registry.up ? 'reachable' : 'unreachable' },
      { name: 'membership', ok: beatAge < this.#o.replicaTtl, detail: this.#beatAt === 0 ? 'not joined yet' : `last heartbeat ${Math.round(beatAge)}ms ago` },
      { name: 'round', ok: this.#last !== null && this.#last.error === undefined, detail: this.#last === null ? 'no round yet' : this.#last.error ?? `round ${this.#last.round} done` }
    ]
    return { ok: checks.every((c) => c.ok), checks }
  }

  /** What /state shows. */
  state (): Record<string, unknown> {
    const failing: Array<{ service: string, id: string, failures: number }> = []
    for (const s of this.#services) {
      for (const inst of this.dispatcher.view(s)?.values() ?? []) {
        const st = this.decider.streak(s, inst.id)
        if (st !== undefined && st.failures > 0) failing.push({ service: s, id: inst.id, failures: st.failures })
      }
    }
    return {
      replica: this.id,
      group: this.group,
      replicas: this.#replicas,
      mode: this.#modes.global,
      modes: Object.fromEntries(this.#modes.entries),
      decisions: decisions(this.#modes, this.#services.flatMap((s) => [...this.dispatcher.view(s)?.values() ?? []])),
      settings: { interval: this.#o.interval, timeout: this.#timeout, failures: this.#o.failures, successes: this.#o.successes, maxEject: this.#o.maxEject, concurrency: this.#o.concurrency },
      services: this.#services,
      instances: Object.fromEntries(this.#byState),
      targets: this.#targets,
      ...(this.#o.targets !== undefined ? { targetsFile: { source: this.#o.targets.name, version: this.#published.version, error: this.#o.targets.error, publishedServices: this.#published.services, publishedInstances: this.#published.instances } } : {}),
      lastRound: this.#last,
      failing,
      queues: this.decider.depths,
      events: this.performer.events as CheckerEvent[]
    }
  }

  /** Stops the rounds, leaves the group (the others take the share at their next round), closes connections. */
  async stop (): Promise<void> {
    if (this.#stopped) return
    this.#stopped = true
    if (this.#roundTimer !== null) clearTimeout(this.#roundTimer)
    if (this.#beatTimer !== null) clearInterval(this.#beatTimer)
    if (this.#expiryTimer !== null) clearTimeout(this.#expiryTimer)
    this.prober.stop()
    if (this.#current !== null) await this.#current.catch(() => {})
    if (this.#beating !== null) await this.#beating.catch(() => {})
    if (this.#beatAt !== 0) {
      await this.#o.coordinator.leave(this.group, this.id).catch((err: unknown) => {
        this.#log.warn({ err }, 'could not leave the group; the others take over when its membership expires')
      })
    }
    this.dispatcher.close()
    await this.prober.close()
    this.#log.info({ replica: this.id }, 'checker stopped')
  }
}
