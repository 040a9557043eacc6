// The one prom-client Registry and every metric definition. The hot path bumps plain counters; point-in-time
// values and labelled counters are copied into prom-client in collect(), so a request costs no label hashing.
import { Registry, Counter, Gauge, Histogram, collectDefaultMetrics } from 'prom-client'
import type { Exemplar } from './openmetrics.js'

/** Point-in-time readings the metrics pull from the modules that own them. */
export interface Readings {
  inflight?: () => number
  queued?: () => number
  limit?: () => number
  draining?: () => boolean
  warmupWeight?: () => number
  registryUp?: () => boolean
  /** Connections to the registry's store (absent for memory and file registries). */
  registryConnections?: () => { commands: number, subscriber: number } | undefined
  upgrades?: () => number
  drainServed?: () => number
  drainCut?: () => number
  /** The registration's events so far (register, reregister, heartbeat, update, deregister, error). */
  registryEvents?: () => ReadonlyMap<string, number>
  /** Registry instances by [service, state, count], for the services the outbound lane watches. */
  instances?: () => Array<[string, string, number]>
  /** The adaptive limit's baseline (no-queue) and last sample latency, in ms (absent with a static limit). */
  latencyBaseline?: () => number
  latencySample?: () => number
  limitChanges?: () => number
  /** Client connections open now, by lane. */
  connections?: () => Array<[string, number]>
}

function counterMap (): Map<string, number> { return new Map() }

type HistogramData = Awaited<ReturnType<Histogram['get']>>
interface Exposed { name: string, help: string, type: 'histogram', aggregator: 'sum', values: Array<{ value: number, metricName: string, exemplar?: null, labels: Record<string, string | number> }> }

/**
 * A histogram without labels for the request path: observe() is a bucket scan and three additions (prom-client's
 * own observe hashes labels and allocates a closure per call). Scrapes read it in the same exposition format.
 */
export class FastHistogram extends Histogram {
  readonly #name: string
  readonly #help: string
  readonly #bounds: number[]
  readonly #counts: Float64Array
  #sum = 0
  #count = 0
  /** After reset() nothing is exposed until the next observation, as prom-client does. */
  #cleared = false

  constructor (cfg: { name: string, help: string, buckets: number[], registers: Registry[] }) {
    super({ name: cfg.name, help: cfg.help, buckets: cfg.buckets, registers: cfg.registers })
    this.#name = cfg.name
    this.#help = cfg.help
    this.#bounds = [...cfg.buckets].sort((a, b) => a - b)
    this.#counts = new Float64Array(this.#bounds.length)
    // prom-client assigns observe in its constructor; this one takes a bare value (or ignored labels and a value).
    this.observe = ((a: unknown, b?: number): void => {
      const value = typeof a === 'number' ? a : b as number
      if (!Number.isFinite(value)) throw new TypeError(`Value is not a valid number: ${String(value)}`)
      const bounds = this.#bounds
      for (let i = 0; i < bounds.length; i++) {
        if (value <= bounds[i]) { this.#counts[i]++; break }
      }
      this.#sum += value
      this.#count++
      this.#cleared = false
    }) as Histogram['observe']
    this.#exemplars = new Array(this.#bounds.length + 1).fill(null)
  }

  readonly #exemplars: Array<{ traceId: string, value: number, ts: number } | null>

  /** Keeps `traceId` as the exemplar of the bucket `value` falls in (the latest one per bucket). */
  exemplar (value: number, traceId: string): void {
    const bounds = this.#bounds
    let i = 0
    while (i < bounds.length && value > bounds[i]) i++
    this.#exemplars[i] = { traceId, value, ts: Date.now() / 1000 }
  }

  /** The exemplars per bucket, for the OpenMetrics exposition. */
  exemplars (): Exemplar[] {
    const out: Exemplar[] = []
    this.#exemplars.forEach((e, i) => {
      if (e !== null) out.push({ metric: this.#name, le: i < this.#bounds.length ? String(this.#bounds[i]) : '+Inf', ...e })
    })
    return out
  }

  override reset (): void {
    super.reset()
    if (!(#counts in this)) return // prom-client's constructor calls reset() before these fields exist
    this.#counts.fill(0)
    this.#exemplars.fill(null)
    this.#sum = 0
    this.#count = 0
    this.#cleared = true
  }

  override async get (): Promise<HistogramData> { return this.getForPromString() as unknown as HistogramData }

  /** What the registry reads at scrape time: cumulative buckets, +Inf, sum and count. */
  getForPromString (): Exposed {
    const bucket = `${this.#name}_bucket`
    const values: Exposed['values'] = []
    if (this.#cleared) return { name: this.#name, help: this.#help, type: 'histogram', values, aggregator: 'sum' }
    let acc = 0
    for (let i = 0; i < this.#bounds.length; i++) {
      acc += this.#counts[i]
      values.push({ value: acc, metricName: bucket, exemplar: null, labels: { le: this.#bounds[i] } })
    }
    values.push({ value: this.#count, metricName: bucket, exemplar: null, labels: { le: '+Inf' } })
    values.push({ value: this.#sum, metricName: `${this.#name}_sum`, labels: {} })
    values.push({ value: this.#count, metricName: `${this.#name}_count`, labels: {} })
    return { name: this.#name, help: this.#help, type: 'histogram', values, aggregator: 'sum' }
  }
}

export class Metrics {
  readonly registry = new Registry()
  /** Hot-path counters (plain numbers), copied into prom-client at scrape time. */
  /** Business requests answered, by status: HTTP/1.1 requests and HTTP/2 streams. */
  readonly requests = new Map<number, number>()
  readonly requestsH2 = new Map<number, number>()
  /** gRPC calls answered, by grpc-status (`0`…`16`, `unknown`): the app's, or doorman's own. */
  readonly grpcStatus = counterMap()
  readonly shed = counterMap()
  readonly upstreamErrors = counterMap()
  readonly clientErrors = counterMap()
  /** Outbound requests by `service\toutcome` (ok, error, no-instance, aborted, bad-request). */
  readonly outbound = counterMap()
  /** Outbound retries by `service\treason` (connect, reset, shed). */
  readonly outboundRetries = counterMap()
  /** Outbound retries by `service\toutcome`: `ok` (the retry was answered below 500), `failed` (it was not). */
  readonly outboundRetryOutcomes = counterMap()
  /** Outbound calls not retried because the service's retry budget was spent, by service. */
  readonly outboundRetryExhausted = counterMap()
  /** Passive outlier ejections by service. */
  readonly outboundEjections = counterMap()
  /** Outbound requests in flight by destination service. */
  readonly outboundInflight = counterMap()
  /** Failed outbound requests by `service\tkind` (502, 503, 504, 5xx, incomplete). */
  readonly outboundErrors = counterMap()
  readonly outboundDuration: Histogram<'service'>
  /** Time requests waited in the limiter's queue (granted or shed). */
  readonly queueWait: FastHistogram
  /** 1 while the outbound balancer is in panic mode for a service. */
  readonly outboundPanic = counterMap()
  /** Times the outbound balancer entered panic mode, by service. */
  readonly outboundPanics = counterMap()
  readonly duration: FastHistogram
  /** Client connections doorman closed or refused itself, by `lane\treason`. */
  readonly connectionsClosed = counterMap()
  /** Trace spans by outcome: exported, failed (the collector refused or was unreachable), dropped (the bound). */
  readonly spans = counterMap()
  readonly readings: Readings = {}

  constructor (opts: { defaults?: boolean } = {}) {
    const registry = this.registry
    const r = this.readings
    const requests = this.requests
    const requestsH2 = this.requestsH2
    const grpcStatus = this.grpcStatus
    const shed = this.shed
    const upstreamErrors = this.upstreamErrors
    const clientErrors = this.clientErrors
    const gauge = (name: string, help: string, read: () => number | undefined): void => {
      // eslint-disable-next-line no-new
      new Gauge({ name, help, registers: [registry], collect () { const v = read(); if (v !== undefined) this.set(v) } })
    }
    gauge('doorman_inflight_requests', 'Business requests in flight to the app.', () => r.inflight?.())
    gauge('doorman_queued_requests', 'Business requests waiting for a concurrency slot.', () => r.queued?.())
    gauge('doorman_concurrency_limit', 'The concurrency limit in force (after warmup/drain scaling).', () => r.limit?.())
    gauge('doorman_limit_baseline_latency_seconds', "The adaptive limit's baseline: the app's latency when nothing queues inside it.", () => { const v = r.latencyBaseline?.(); return v === undefined ? undefined : v / 1000 })
    gauge('doorman_limit_sample_latency_seconds', "The adaptive limit's last sample of the app's latency (trimmed mean over a window).", () => { const v = r.latencySample?.(); return v === undefined ? undefined : v / 1000 })
    gauge('doorman_draining', '1 while the instance drains.', () => r.draining === undefined ? undefined : Number(r.draining()))
    gauge('doorman_warmup_weight', 'The weight this instance publishes, in percent (100 = fully warm).', () => r.warmupWeight?.())
    gauge('doorman_registry_up', '1 while the registry is reachable.', () => r.registryUp === undefined ? undefined : Number(r.registryUp()))
    new Gauge({ name: 'doorman_registry_connections', help: "Connections to the registry's Redis, by use (commands, subscriber).", labelNames: ['use'], registers: [registry], collect () { const v = r.registryConnections?.(); if (v === undefined) return; this.set({ use: 'commands' }, v.commands); this.set({ use: 'subscriber' }, v.subscriber) } })
    gauge('doorman_upgraded_connections', 'Upgraded (WebSocket) connections open.', () => r.upgrades?.())

    const copy = (c: Counter<string>, label: string, m: Map<string | number, number>): void => {
      c.reset()
      for (const [k, v] of m) c.inc({ [label]: String(k) }, v)
    }
    // eslint-disable-next-line no-new
    new Counter({
      name: 'doorman_requests_total',
      help: 'Business requests answered, by status code and protocol (http1, or h2 for HTTP/2 streams).',
      labelNames: ['code', 'protocol'],
      registers: [registry],
      collect () {
        this.reset()
        for (const [k, v] of requests) this.inc({ code: String(k), protocol: 'http1' }, v)
        for (const [k, v] of requestsH2) this.inc({ code: String(k), protocol: 'h2' }, v)
      }
    })
    // eslint-disable-next-line no-new
    new Counter({ name: 'doorman_grpc_responses_total', help: "gRPC calls answered on the inbound lane, by grpc-status (the app's, or doorman's own: 14 shed or unreachable, 4 deadline).", labelNames: ['grpc_status'], registers: [registry], collect () { copy(this, 'grpc_status', grpcStatus) } })
    // eslint-disable-next-line no-new
    new Counter({ name: 'doorman_shed_total', help: 'Requests shed before reaching the app, by reason.', labelNames: ['reason'], registers: [registry], collect () { copy(this, 'reason', shed) } })
    // eslint-disable-next-line no-new
    new Counter({ name: 'doorman_upstream_errors_total', help: 'Failures talking to the app, by kind.', labelNames: ['kind'], registers: [registry], collect () { copy(this, 'kind', upstreamErrors) } })
    // eslint-disable-next-line no-new
    new Counter({ name: 'doorman_client_errors_total', help: 'Malformed or abandoned client requests, by kind (never reach the app).', labelNames: ['kind'], registers: [registry], collect () { copy(this, 'kind', clientErrors) } })
    // eslint-disable-next-line no-new
    new Counter({ name: 'doorman_drain_served_total', help: 'Requests completed while draining.', registers: [registry], collect () { const v = r.drainServed?.(); if (v !== undefined) { this.reset(); this.inc(v) } } })
    // eslint-disable-next-line no-new
    new Counter({ name: 'doorman_drain_cut_total', help: 'Requests and upgraded connections cut at the drain deadline.', registers: [registry], collect () { const v = r.drainCut?.(); if (v !== undefined) { this.reset(); this.inc(v) } } })
    const copy2 = (c: Counter<string>, labels: [string, string], m: Map<string, number>): void => {
      c.reset()
      for (const [k, v] of m) { const tab = k.indexOf('\t'); c.inc({ [labels[0]]: k.slice(0, tab), [labels[1]]: k.slice(tab + 1) }, v) }
    }
    const outbound = this.outbound
    const outboundRetries = this.outboundRetries
    const outboundEjections = this.outboundEjections
    const outboundPanic = this.outboundPanic
    const outboundInflight = this.outboundInflight
    const outboundErrors = this.outboundErrors
    // eslint-disable-next-line no-new
    new Gauge({ name: 'doorman_outbound_inflight_requests', help: "The app's requests in flight through the outbound lane, by destination service (a hung dependency shows here first).", labelNames: ['service'], registers: [registry], collect () { this.reset(); for (const [k, v] of outboundInflight) this.set({ service: k }, v) } })
    // eslint-disable-next-line no-new
    new Counter({ name: 'doorman_outbound_errors_total', help: 'Outbound requests that failed, by destination service and kind (502, 503, 504, 5xx, incomplete: the response never finished).', labelNames: ['service', 'kind'], registers: [registry], collect () { copy2(this, ['service', 'kind'], outboundErrors) } })
    this.outboundDuration = new Histogram({ name: 'doorman_outbound_request_duration_seconds', help: 'Outbound request duration, from the app\'s request to the end of the response, by destination service.', labelNames: ['service'], buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers: [registry] })
    this.queueWait = new FastHistogram({
      name: 'doorman_queue_wait_seconds',
      help: "Time business requests waited in doorman's queue for a concurrency slot (those that queued; granted or shed).",
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry]
    })
    const connectionsClosed = this.connectionsClosed
    // eslint-disable-next-line no-new
    new Gauge({ name: 'doorman_connections_open', help: 'Client connections open on the business ports, by lane (inbound, outbound): HTTP/1.1 and HTTP/2 alike.', labelNames: ['lane'], registers: [registry], collect () { const v = r.connections?.(); if (v === undefined) return; this.reset(); for (const [lane, n] of v) this.set({ lane }, n) } })
    // eslint-disable-next-line no-new
    new Counter({ name: 'doorman_connections_closed_total', help: 'Client connections doorman refused or closed itself, by lane and reason (limit: over DOORMAN_MAX_CONNECTIONS; headers-timeout and idle-timeout: HTTP/2 sessions; close-timeout: sessions still open when the listener closed).', labelNames: ['lane', 'reason'], registers: [registry], collect () { copy2(this, ['lane', 'reason'], connectionsClosed) } })
    const spans = this.spans
    // eslint-disable-next-line no-new
    new Counter({ name: 'doorman_trace_spans_total', help: 'Trace spans by outcome: exported, failed (the collector refused them or was unreachable), dropped (more than 2,048 waiting for export: a slow or absent collector never grows memory).', labelNames: ['outcome'], registers: [registry], collect () { copy(this, 'outcome', spans) } })
    const outboundPanics = this.outboundPanics
    const outboundRetryOutcomes = this.outboundRetryOutcomes
    const outboundRetryExhausted = this.outboundRetryExhausted
    // eslint-disable-next-line no-new
    new Counter({ name: 'doorman_outbound_retry_outcomes_total', help: 'Outbound retries by service and what became of them: ok (answered below 500), failed (a 5xx, an error, or cut).', labelNames: ['service', 'outcome'], registers: [registry], collect () { copy2(this, ['service', 'outcome'], outboundRetryOutcomes) } })
    // eslint-disable-next-line no-new
    new Counter({ name: 'doorman_outbound_retry_budget_exhausted_total', help: "Outbound calls not retried because the service's retry budget (DOORMAN_RETRY_BUDGET, DOORMAN_RETRY_MIN_PER_SECOND) was spent: the caller got the provider's own answer, by service.", labelNames: ['service'], registers: [registry], collect () { copy(this, 'service', outboundRetryExhausted) } })
    // eslint-disable-next-line no-new
    new Counter({ name: 'doorman_outbound_requests_total', help: 'Requests from the app through the outbound lane, by service and outcome (ok, error, no-instance, aborted, bad-request).', labelNames: ['service', 'outcome'], registers: [registry], collect () { copy2(this, ['service', 'outcome'], outbound) } })
    // eslint-disable-next-line no-new
    new Counter({ name: 'doorman_outbound_retries_total', help: 'Outbound requests retried on another instance, by service and reason (connect, reset, shed).', labelNames: ['service', 'reason'], registers: [registry], collect () { copy2(this, ['service', 'reason'], outboundRetries) } })
    // eslint-disable-next-line no-new
    new Counter({ name: 'doorman_outbound_ejections_total', help: 'Instances ejected by the outbound lane after consecutive failures, by service.', labelNames: ['service'], registers: [registry], collect () { copy(this, 'service', outboundEjections) } })
    // eslint-disable-next-line no-new
    new Gauge({ name: 'doorman_outbound_panic', help: "1 while the outbound lane balances a service in panic mode (fewer than DOORMAN_OUTBOUND_PANIC_THRESHOLD percent of its instances routable: all registered non-draining ones are used), by service.", labelNames: ['service'], registers: [registry], collect () { this.reset(); for (const [k, v] of outboundPanic) this.set({ service: k }, v) } })
    // eslint-disable-next-line no-new
    new Counter({ name: 'doorman_outbound_panics_total', help: 'Times the outbound lane entered panic mode for a service, by service.', labelNames: ['service'], registers: [registry], collect () { copy(this, 'service', outboundPanics) } })
    // eslint-disable-next-line no-new
    new Gauge({ name: 'doorman_registry_instances', help: 'Instances in the registry by service and state, for the services the outbound lane watches.', labelNames: ['service', 'state'], registers: [registry], collect () { const v = r.instances?.(); if (v === undefined) return; this.reset(); for (const [service, state, n] of v) this.set({ service, state }, n) } })
    // eslint-disable-next-line no-new
    new Counter({ name: 'doorman_registry_events_total', help: "This instance's registry writes, by event (register, reregister, heartbeat, update, deregister, error).", labelNames: ['event'], registers: [registry], collect () { const ev = r.registryEvents?.(); if (ev !== undefined) copy(this, 'event', ev as Map<string, number>) } })
    // eslint-disable-next-line no-new
    new Counter({ name: 'doorman_limit_changes_total', help: 'Changes of the concurrency limit in force (adaptive limit, warmup ramp).', registers: [registry], collect () { const v = r.limitChanges?.(); if (v !== undefined) { this.reset(); this.inc(v) } } })
    this.duration = new FastHistogram({
      name: 'doorman_request_duration_seconds',
      help: 'Business request duration through doorman, from arrival to the end of the response.',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry]
    })
    if (opts.defaults !== false) collectDefaultMetrics({ register: registry, prefix: '' })
  }

  /** Bumps a hot-path counter. */
  static inc<K> (m: Map<K, number>, key: K, by = 1): void {
    m.set(key, (m.get(key) ?? 0) + by)
  }

  async text (): Promise<string> { return await this.registry.metrics() }
}
