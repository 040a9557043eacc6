// Wires the sidecar's modules together: limiter → inbound, the probe lane and its heartbeat, and the drain.
// It never exits the process: run() resolves with the exit code once the sidecar has stopped.
import type { Config } from './config/index.js'
import { describeConfig } from './config/index.js'
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

export class Sidecar {
  readonly cfg: Readonly<Config>
  readonly log: Logger
  readonly metrics: Metrics
  readonly limiter: Limiter
  readonly inbound: Inbound
  readonly probeLane: ProbeLane
  readonly drainer: Drainer
  readonly registry: Registry
  readonly registration: Registration
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
    return new Sidecar(cfg, log, registry)
  }

  constructor (cfg: Readonly<Config>, log: Logger, registry: Registry) {
    this.cfg = cfg
    this.log = log
    this.metrics = new Metrics()
    this.registry = registry
    this.registration = new Registration({
      registry: cfg.service !== '' ? this.registry : null,
      id: instanceId(),
      service: cfg.service,
      cluster: cfg.cluster,
      zone: cfg.zone,
      warmup: { window: cfg.warmup, aggression: cfg.warmupAggression, minWeight: cfg.warmupMinWeight },
      ttl: cfg.registryTtl,
      delay: cfg.registerDelay,
      log: log.child({ component: 'registration' })
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
        outlier: { failures: cfg.outlierFailures, ejectTime: cfg.outlierEjectTime, maxEject: cfg.outlierMaxEject, panicThreshold: cfg.outboundPanicThreshold }
      })
    this.limiter = new Limiter({
      algorithm: cfg.limitMode === 'adaptive' ? new GradientLimit({ min: cfg.limitMin, max: cfg.maxConcurrency }) : new FixedLimit(cfg.maxConcurrency),
      maxQueue: cfg.maxQueue,
      queueTimeout: cfg.queueTimeout,
      criticalReserve: cfg.criticalPaths.length > 0 ? cfg.criticalReserve : 0,
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
      criticalPaths: cfg.criticalPaths,
      lowPaths: cfg.lowPaths,
      trustedHops: cfg.trustedHops
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
      info: { version, service: cfg.service, cluster: cfg.cluster, zone: cfg.zone, limitMode: cfg.limitMode, maxConcurrency: cfg.maxConcurrency },
      log: log.child({ component: 'lane' }),
      metrics: async () => await this.metrics.text(),
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
    m.readings.draining = () => this.drainer.started && this.drainer.phase !== CLOSED
    m.readings.drainServed = () => this.drainer.progress.served
    m.readings.drainCut = () => this.drainer.progress.cut
    const registration = this.registration
    m.readings.warmupWeight = () => registration.weight()
    m.readings.registryUp = () => registration.registryUp
    m.readings.registryConnections = () => this.registry.connections?.()
    m.readings.registryEvents = () => registration.events
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
      const d = this.drainer.progress
      st.set(S.DRAIN_INFLIGHT_AT_START, d.inflightAtStart)
      st.set(S.DRAIN_SERVED, d.served)
      st.set(S.DRAIN_CUT, d.cut)
      // Registration follows the app's readiness as the lane sees it.
      registration.setAppReady(st.flag(S.APP_STARTED) && st.flag(S.APP_READY))
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
    await this.probeLane.close().catch((err: unknown) => { this.log.warn({ err }, 'lane close failed') })
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
