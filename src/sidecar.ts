// Wires the sidecar's modules together: limiter → inbound, the probe lane and its heartbeat, and the drain.
// It never exits the process: run() resolves with the exit code once the sidecar has stopped.
import type { Config } from './config/index.js'
import { describeConfig, parseResourceAttributes, tracesEndpoint } from './config/index.js'
import { Observer } from './observe/index.js'
import type { Logger } from './core/log.js'
import { Limiter, FixedLimit } from './limiter/index.js'
import { GradientLimit } from './limiter/gradient.js'
import { Metrics } from './metrics/index.js'
import { Inbound } from './inbound/index.js'
import { ProbeLane, S, T, setPhase } from './probe-lane/index.js'
import type { SharedState } from './probe-lane/shared.js'
import { Drainer, CLOSED, type DrainResult } from './drain/index.js'
import { version } from './core/version.js'
import { openRegistry, checkPeriod } from './registry/open.js'
import type { Registry, Watch } from './registry/types.js'
import { Registration, instanceId } from './registry/registration.js'
import { Outbound } from './outbound/index.js'
import { openAppRegistry, RegistrationGate, type AppRegistry } from './app-registry/index.js'
import { CertStore } from './tls/store.js'
import { OutboundTls } from './tls/outbound.js'
import { TLS_PROBLEMS } from './tls/problems.js'
import { TlsStats, registerTlsMetrics } from './tls/metrics.js'
import { Authorizer } from './authz/index.js'
import type { FlowReport } from './inbound/policy.js'

export class Sidecar {
  readonly cfg: Readonly<Config>
  readonly log: Logger
  readonly metrics: Metrics
  /** Spans and the access log (null: neither on). */
  readonly observer: Observer | null
  readonly limiter: Limiter
  readonly inbound: Inbound
  readonly probeLane: ProbeLane
  readonly drainer: Drainer
  readonly registry: Registry
  readonly registration: Registration
  /** The registry the app registers itself in (DOORMAN_APP_REGISTRY), and its readiness latch; null without one. */
  readonly appRegistry: AppRegistry | null
  readonly #appGate: RegistrationGate | null
  /** The workload's certificate (DOORMAN_MTLS permissive or strict); null with mTLS off. */
  readonly certs: CertStore | null
  readonly tlsStats = new TlsStats()
  /** The app's calls to other services; null when DOORMAN_OUTBOUND_PORT is 0. */
  readonly outbound: Outbound | null
  /** The instance's own service, for the restart budget: null without a registry the instances share. */
  readonly #fleet: Watch | null
  #stopped: Promise<number>
  #resolveStopped!: (code: number) => void
  #stopping = false

  /** Opens the registry DOORMAN_REGISTRY names (loading only its backend), then builds the sidecar. */
  static async create (cfg: Readonly<Config>, log: Logger): Promise<Sidecar> {
    const registry = await openRegistry(cfg.registry, { log: log.child({ component: 'registry' }), resyncMs: Math.max(250, Math.floor(cfg.registryTtl / 3)), checkMs: checkPeriod(cfg.registryTtl), reconnectGraceMs: Math.max(cfg.registryTtl, 5000) })
    const appRegistry = await openAppRegistry(cfg.appRegistry, { host: cfg.advertiseHost, port: cfg.appPort, services: cfg.appServices, log: log.child({ component: 'app-registry' }) })
    return new Sidecar(cfg, log, registry, appRegistry)
  }

  constructor (cfg: Readonly<Config>, log: Logger, registry: Registry, appRegistry: AppRegistry | null = null) {
    this.cfg = cfg
    this.log = log
    this.metrics = new Metrics()
    this.observer = Observer.create({
      tracesEndpoint: tracesEndpoint(cfg),
      protocol: cfg.otelExporterOtlpProtocol,
      serviceName: cfg.otelServiceName !== '' ? cfg.otelServiceName : cfg.service !== '' ? cfg.service : 'doorman',
      sampler: cfg.otelTracesSampler,
      samplerArg: Number(cfg.otelTracesSamplerArg),
      resourceAttributes: parseResourceAttributes(cfg.otelResourceAttributes) ?? {},
      accessLog: cfg.accessLog,
      accessLogSample: cfg.accessLogSample
    }, this.metrics, log.child({ component: 'observe' }))
    this.registry = registry
    this.appRegistry = appRegistry
    this.#appGate = appRegistry === null ? null : new RegistrationGate(cfg.appServices)
    this.certs = cfg.mtls === 'off' ? null : new CertStore({ dir: cfg.tlsDir, log: log.child({ component: 'tls' }) })
    this.certs?.start()
    registerTlsMetrics(this.metrics.registry, this.tlsStats, this.certs)
    this.registration = new Registration({
      registry: cfg.service !== '' ? this.registry : null,
      id: instanceId(),
      service: cfg.service,
      cluster: cfg.cluster,
      zone: cfg.zone,
      org: cfg.org,
      env: cfg.env,
      check: cfg.check,
      warmup: { window: cfg.warmup, aggression: cfg.warmupAggression, minWeight: cfg.warmupMinWeight },
      ttl: cfg.registryTtl,
      delay: cfg.registerDelay,
      log: log.child({ component: 'registration' }),
      identity: this.certs === null ? undefined : () => this.certs?.current?.id
    })
    this.#fleet = cfg.service !== '' && registry.kind !== 'memory' ? registry.watch(cfg.service) : null
    this.outbound = cfg.outboundPort === 0
      ? null
      : new Outbound({
        port: cfg.outboundPort,
        registry: this.registry,
        metrics: this.metrics,
        log: log.child({ component: 'outbound' }),
        upstreamTimeout: cfg.upstreamTimeout,
        clientWriteTimeout: cfg.clientWriteTimeout,
        idleTimeout: cfg.idleTimeout,
        maxConnections: cfg.maxConnections,
        maxHeaderSize: cfg.maxHeaderSize,
        observer: this.observer,
        tls: this.certs === null || cfg.mtls === 'off' ? undefined : new OutboundTls({ mode: cfg.mtls, store: this.certs, stats: this.tlsStats, log: log.child({ component: 'outbound-tls' }) }),
        retryBudget: { percent: cfg.retryBudget, minPerSecond: cfg.retryMinPerSecond },
        outlier: { failures: cfg.outlierFailures, ejectTime: cfg.outlierEjectTime, maxEject: cfg.outlierMaxEject, panicThreshold: cfg.outboundPanicThreshold }
      })
    this.limiter = new Limiter({
      algorithm: cfg.limitMode === 'adaptive' ? new GradientLimit({ min: cfg.limitMin, max: cfg.maxConcurrency }) : new FixedLimit(cfg.maxConcurrency),
      maxQueue: cfg.maxQueue,
      queueTimeout: cfg.queueTimeout,
      criticalReserve: cfg.criticalPaths.length > 0 ? cfg.criticalReserve : 0,
      fairness: cfg.fairness === 'flow',
      onQueueWait: (ms) => { this.metrics.queueWait.observe(ms / 1000) }
    })
    this.inbound = new Inbound({
      appHost: cfg.appHost,
      appPort: cfg.appPort,
      appProtocol: cfg.appProtocol,
      port: cfg.inboundPort,
      host: cfg.bindHost,
      limiter: this.limiter,
      metrics: this.metrics,
      log: log.child({ component: 'inbound' }),
      upstreamTimeout: cfg.upstreamTimeout,
      clientWriteTimeout: cfg.clientWriteTimeout,
      connections: cfg.maxConcurrency,
      maxUpgrades: cfg.maxUpgrades,
      maxHeaderSize: cfg.maxHeaderSize,
      headersTimeout: cfg.headersTimeout,
      idleTimeout: cfg.idleTimeout,
      maxConnections: cfg.maxConnections,
      criticalPaths: cfg.criticalPaths,
      lowPaths: cfg.lowPaths,
      trustedHops: cfg.trustedHops,
      observer: this.observer,
      mtls: this.certs === null || cfg.mtls === 'off' ? undefined : { mode: cfg.mtls, store: this.certs, authorizer: Authorizer.parse(cfg.allow), stats: this.tlsStats },
      fairness: cfg.fairness === 'flow' ? { flowHeader: cfg.flowHeader } : undefined
    })
    this.probeLane = new ProbeLane({
      settings: {
        adminPort: cfg.adminPort,
        bindHost: cfg.bindHost,
        appHost: cfg.appHost,
        appPort: cfg.appPort,
        appProbes: cfg.appProbes,
        livenessStall: cfg.livenessStall,
        readinessStall: cfg.readinessStall,
        appStall: cfg.appStall,
        livenessMaxFailing: cfg.livenessMaxFailing,
        appCheckInterval: cfg.appCheckInterval,
        adminToken: cfg.adminToken,
        nodeIp: cfg.nodeIp,
        laneNice: cfg.laneNice
      },
      info: { version, service: cfg.service, cluster: cfg.cluster, zone: cfg.zone, limitMode: cfg.limitMode, maxConcurrency: cfg.maxConcurrency, appRegistry: appRegistry !== null },
      log: log.child({ component: 'lane' }),
      metrics: async () => ({ text: await this.metrics.text(), exemplars: this.metrics.duration.exemplars() }),
      onDrain: (source) => { void this.drain(`lane:${source}`) }
    })
    const inbound = this.inbound
    const limiter = this.limiter
    // DOORMAN_WARMUP_INBOUND=ramp: the instance's own limit follows the warmup factor while it serves. A drain lifts
    // it at once: what the drain lets finish must not be shed by a ramp.
    const ramp = cfg.warmupInbound === 'ramp'
    this.drainer = new Drainer({
      delay: cfg.drainDelay,
      quiet: cfg.drainQuiet,
      timeout: cfg.drainTimeout,
      log: log.child({ component: 'drain' }),
      target: {
        pending: () => ({ inflight: limiter.inflight, queued: limiter.queued, upgrades: inbound.upgrades }),
        lastArrival: () => inbound.stats.lastArrival,
        completed: () => inbound.stats.completed,
        startDraining: () => { inbound.startDraining() },
        stopAccepting: () => { inbound.stopAccepting() },
        closeUpgrades: () => { inbound.closeUpgrades() },
        destroy: () => inbound.destroy()
      },
      deregister: async () => { await this.registration.drain() },
      offline: appRegistry === null ? undefined : async () => { await appRegistry.disable() },
      onPhase: (phase) => {
        if (ramp) limiter.setScale(1)
        setPhase(this.probeLane.state, phase)
        this.probeLane.flush()
      }
    })
    const m = this.metrics
    m.readings.inflight = () => limiter.inflight
    m.readings.queued = () => limiter.queued
    m.readings.limit = () => limiter.limit
    m.readings.limitChanges = () => limiter.stats.limitChanges
    const algorithm = limiter.algorithm
    if (algorithm instanceof GradientLimit) {
      m.readings.latencyBaseline = () => algorithm.readings.baselineMs
      m.readings.latencySample = () => algorithm.readings.sampleMs
    }
    m.readings.connections = () => {
      const v: Array<[string, number]> = [['inbound', this.inbound.connections]]
      if (this.outbound !== null) v.push(['outbound', this.outbound.connections])
      return v
    }
    m.readings.draining = () => this.drainer.started && this.drainer.phase !== CLOSED
    m.readings.drainServed = () => this.drainer.progress.served
    m.readings.drainCut = () => this.drainer.progress.cut
    const registration = this.registration
    m.readings.warmupWeight = () => registration.weight()
    m.readings.registryUp = () => registration.registryUp
    m.readings.registryConnections = () => this.registry.connections?.()
    m.readings.registryEvents = () => registration.events
    let flowBeats = 0
    this.probeLane.publish((st) => {
      st.set(S.INFLIGHT, limiter.inflight)
      st.set(S.QUEUED, limiter.queued)
      st.set(S.LIMIT, limiter.limit)
      st.set(S.BASE_LIMIT, limiter.baseLimit)
      st.set(S.COMPLETED, inbound.stats.completed)
      st.set(S.ARRIVED, inbound.stats.arrived)
      st.set(S.FAILED, inbound.stats.failed)
      let shed = 0
      for (const v of m.shed.values()) shed += v
      st.set(S.SHED, shed)
      st.set(S.UPGRADES, inbound.upgrades)
      // The heaviest flows, every fifth beat: a few microseconds, off the request path.
      if (limiter.fair && ++flowBeats % 5 === 0) publishFlows(st, inbound.policy.topFlows(10))
      const d = this.drainer.progress
      st.set(S.DRAIN_INFLIGHT_AT_START, d.inflightAtStart)
      st.set(S.DRAIN_SERVED, d.served)
      st.set(S.DRAIN_CUT, d.cut)
      // Registration follows the app's readiness as the lane sees it, its own registration when it has one, and,
      // with mTLS on, a usable certificate.
      const tlsProblem = this.certs?.status().problem ?? null
      registration.setAppReady(st.flag(S.APP_STARTED) && st.flag(S.APP_READY) && this.#publishAppRegistry(st) && tlsProblem === null)
      registration.setLivenessFailing(st.flag(S.APP_LIVE_FAILING))
      this.#publishFleet(st)
      const now = Date.now()
      if (ramp && !this.drainer.started) limiter.setScale(registration.factor(now))
      st.set(S.REGISTERED, Number(registration.registered))
      st.set(S.REGISTRY_UP, Number(registration.registryUp))
      const conns = this.registry.connections?.()
      st.set(S.REGISTRY_CONNECTIONS, conns?.commands ?? 0)
      st.set(S.REGISTRY_SUBSCRIBER_CONNECTIONS, conns?.subscriber ?? 0)
      st.set(S.WEIGHT, Math.round(registration.weight(now) * 100))
      st.set(S.WARMUP_PROGRESS, Math.round(registration.progress(now) * 10000))
      if (registration.registered) st.setTime(T.REGISTERED_AT, registration.registeredAt)
      st.set(S.TLS, tlsProblem === null ? 0 : TLS_PROBLEMS.indexOf(tlsProblem) + 1)
    })
    registration.onChange = () => { this.probeLane.flush() }
    this.#stopped = new Promise((resolve) => { this.#resolveStopped = resolve })
  }

  /**
   * The restart budget's view of the service: its other instances that are not draining, and how many of them fail
   * their app liveness or are restarting (`starting`: registered, the app not ready).
   */
  #publishFleet (st: SharedState): void {
    const f = this.#fleet
    const view = f !== null && f.synced && this.registry.up
    let others = 0
    let failing = 0
    if (view) {
      for (const inst of f.view.values()) {
        if (inst.id === this.registration.id || inst.state === 'draining') continue
        others++
        if (inst.livenessFailing === true || inst.state === 'starting') failing++
      }
    }
    st.set(S.FLEET_VIEW, Number(view))
    st.set(S.FLEET_OTHERS, others)
    st.set(S.FLEET_OTHERS_FAILING, failing)
  }

  /**
   * The app's own registration (DOORMAN_APP_REGISTRY) into the shared state; true once its latch is open (or with
   * no app registry). The latch is fed on every beat, so an undeclared set settles without a registry event.
   */
  #publishAppRegistry (st: SharedState): boolean {
    const reg = this.appRegistry
    const gate = this.#appGate
    if (reg === null || gate === null) return true
    const status = reg.status()
    const wasOpen = gate.open
    const now = Date.now()
    if (gate.observe(status.entries.map((e) => e.service), now) && !wasOpen) {
      st.setTime(T.APP_REGISTERED_AT, now)
      this.log.info({ services: status.entries.map((e) => e.service) }, "the app has registered in its registry: the registration latch is open")
      queueMicrotask(() => { this.#sendAppRegistry() })
    }
    st.set(S.APP_REGISTRY_UP, Number(status.up))
    st.set(S.APP_REGISTERED, Number(gate.open))
    return gate.open
  }

  /** What the lane shows of the app's registry in /state. */
  #sendAppRegistry (): void {
    const reg = this.appRegistry
    const gate = this.#appGate
    if (reg === null || gate === null) return
    const status = reg.status()
    const g = gate.state()
    this.probeLane.appRegistry({
      kind: status.kind,
      services: this.cfg.appServices,
      waitingFor: g.waitingFor,
      detail: g.detail,
      disabled: status.disabled,
      entries: status.entries.map((e) => ({ service: e.service, url: e.url, timestamp: e.timestamp === 0 ? null : new Date(e.timestamp).toISOString(), warmupMs: e.warmup }))
    })
  }

  /** Starts the probe lane, then the business listeners. Resolves with the bound ports. */
  async start (): Promise<{ inbound: number, admin: number }> {
    const cfg = this.cfg
    this.log.info({ version, config: describeConfig(cfg) }, 'doorman starting')
    const admin = await this.probeLane.start()
    const inbound = await this.inbound.listen()
    const outbound = this.outbound === null ? 0 : await this.outbound.listen()
    const host = cfg.advertiseHost.includes(':') ? `[${cfg.advertiseHost}]` : cfg.advertiseHost
    this.registration.setEndpoint(`${host}:${inbound}`, admin)
    this.probeLane.state.set(S.LISTENING, 1)
    this.probeLane.state.set(S.REGISTRY_REQUIRED, 1)
    if (this.appRegistry !== null) {
      this.probeLane.state.set(S.APP_REGISTRY_REQUIRED, 1)
      this.appRegistry.start(() => {
        this.probeLane.flush()
        this.#sendAppRegistry()
      })
      this.#sendAppRegistry()
    }
    this.probeLane.flush()
    this.log.info({ inbound, admin, outbound: outbound === 0 ? 'off' : outbound, app: `${cfg.appHost}:${cfg.appPort}` }, 'doorman listening')
    return { inbound, admin }
  }

  /** Drains, then stops everything; resolves with the drain's outcome. Idempotent. */
  async drain (source: string): Promise<DrainResult> {
    const result = await this.drainer.start(source)
    await this.#stop(0)
    return result
  }

  /** Resolves with the exit code once the sidecar has stopped. */
  get stopped (): Promise<number> { return this.#stopped }

  async #stop (code: number): Promise<void> {
    if (this.#stopping) return
    this.#stopping = true
    await this.registration.close()
    this.#fleet?.close()
    await this.inbound.close().catch((err: unknown) => { this.log.warn({ err }, 'inbound close failed') })
    await this.outbound?.close().catch((err: unknown) => { this.log.warn({ err }, 'outbound close failed') })
    await this.registry.close().catch((err: unknown) => { this.log.warn({ err }, 'registry close failed') })
    // After a drain, the override stays until the app's own entries have left the registry (the app stops after
    // doorman's drain), at most DOORMAN_DRAIN_TIMEOUT; then it goes with doorman's session.
    await this.appRegistry?.close(code === 0 ? this.cfg.drainTimeout : 0).catch((err: unknown) => { this.log.warn({ err }, 'app registry close failed') })
    await this.probeLane.close().catch((err: unknown) => { this.log.warn({ err }, 'lane close failed') })
    await this.observer?.close()
    this.certs?.close()
    this.log.info({ code }, 'doorman stopped')
    this.#resolveStopped(code)
  }

  /** Stops at once without draining (start-up failures, tests). */
  async destroy (): Promise<void> {
    this.inbound.destroy()
    this.outbound?.destroy()
    await this.#stop(1)
  }
}

/** Writes the heaviest flows into shared memory for /state; flows are dropped from the end until the text fits. */
function publishFlows (st: SharedState, flows: FlowReport[]): void {
  for (let n = flows.length; n >= 0; n--) if (st.setFlows(JSON.stringify(flows.slice(0, n)))) return
}
