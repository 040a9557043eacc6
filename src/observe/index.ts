// Per-request observation for both lanes: OpenTelemetry spans (the official SDK, an OTLP/HTTP exporter behind a
// bounded batch) and the JSON access log. A lane's policy asks `observer.start(ex, …)` for each exchange; the answer
// is null when neither is on, so a request costs nothing then. The exchange calls back at each attempt (where the
// trace context for the peer is written into the request's headers) and once at its end.
//
// Inbound: a SERVER span per request or stream, continued from the caller's traceparent (W3C; B3 single-header also
// accepted), the app sent doorman's span as its parent. Outbound: a CLIENT span per call, continued from the app's
// traceparent, with a child CLIENT span per attempt (the instance, its warmup weight, the retry reason); the provider
// gets the attempt's span as its parent.
import { trace, SpanKind, SpanStatusCode, ROOT_CONTEXT, type Context, type Span, type TextMapGetter, type TextMapSetter } from '@opentelemetry/api'
import { CompositePropagator, W3CTraceContextPropagator } from '@opentelemetry/core'
import { B3Propagator, B3InjectEncoding } from '@opentelemetry/propagator-b3'
import { resourceFromAttributes } from '@opentelemetry/resources'
import {
  TracerProvider, BatchSpanProcessor, AlwaysOnSampler, AlwaysOffSampler, TraceIdRatioBasedSampler, ParentBasedSampler,
  type Sampler, type SpanExporter, type SpanProcessor, type ReadableSpan
} from '@opentelemetry/sdk-trace'
import { OTLPTraceExporter as JsonExporter } from '@opentelemetry/exporter-trace-otlp-http'
import { OTLPTraceExporter as ProtoExporter } from '@opentelemetry/exporter-trace-otlp-proto'
import { ExportResultCode, type ExportResult } from '@opentelemetry/core'
import pino from 'pino'
import type { Logger } from '../core/log.js'
import { Metrics } from '../metrics/index.js'
import type { Exchange, ExchangeTrace, Outcome } from '../proxy/exchange.js'

export interface ObserveSettings {
  /** OTLP/HTTP traces endpoint (the full URL, `/v1/traces` included); '' = tracing off. */
  tracesEndpoint: string
  protocol: 'http/protobuf' | 'http/json'
  serviceName: string
  sampler: string
  samplerArg: number
  resourceAttributes: Record<string, string>
  /** Spans waiting for export at most; beyond it new ones are dropped and counted. */
  maxQueue?: number
  accessLog: 'off' | 'json'
  /** Percent of requests the access log writes. */
  accessLogSample: number
}

/** What a lane tells the observer about an exchange (`T`: the lane policy's target, as on the exchange). */
export interface Subject<T = unknown> {
  lane: 'inbound' | 'outbound'
  /** The destination service (outbound). */
  service?: string
  /** Attributes of the lane's decisions, read at the end (the limit in force, the flow). */
  decisions? (ex: Exchange<T>): Record<string, string | number | boolean>
  /** The attempt's target: its address and warmup weight (outbound). */
  target? (ex: Exchange<T>): { address: string, weight: number } | null
}

const getter: TextMapGetter<Record<string, string>> = {
  keys: (c) => Object.keys(c),
  get: (c, key) => c[key]
}

/**
 * The request's trace headers (traceparent, tracestate, b3, x-b3-*), lower-cased, in one pass over its headers; null
 * when it carries none (then there is nothing to extract, and the propagators are not asked).
 */
function traceHeaders (raw: string[]): Record<string, string> | null {
  let c: Record<string, string> | null = null
  for (let i = 0; i < raw.length; i += 2) {
    const n = raw[i]
    const first = n.charCodeAt(0) | 0x20
    if (first !== 116 /* t */ && first !== 98 /* b */ && first !== 120 /* x */) continue
    const l = n.toLowerCase()
    if (l === 'traceparent' || l === 'tracestate' || l === 'b3' || l.startsWith('x-b3-')) (c ??= {})[l] = raw[i + 1]
  }
  return c
}

const setter: TextMapSetter<Record<string, string>> = { set: (c, k, v) => { c[k] = v } }
/** Input: W3C, then B3 single-header (meshes that still send it). Output: W3C only. */
const INPUT = new CompositePropagator({ propagators: [new B3Propagator({ injectEncoding: B3InjectEncoding.SINGLE_HEADER }), new W3CTraceContextPropagator()] })
const OUTPUT = new W3CTraceContextPropagator()

function sampler (name: string, arg: number): Sampler {
  const ratio = new TraceIdRatioBasedSampler(arg)
  switch (name) {
    case 'always_on': return new AlwaysOnSampler()
    case 'always_off': return new AlwaysOffSampler()
    case 'traceidratio': return ratio
    case 'parentbased_always_off': return new ParentBasedSampler({ root: new AlwaysOffSampler() })
    case 'parentbased_traceidratio': return new ParentBasedSampler({ root: ratio })
    default: return new ParentBasedSampler({ root: new AlwaysOnSampler() })
  }
}

/** Counts what the exporter sent and failed to send. */
class CountingExporter implements SpanExporter {
  readonly #inner: SpanExporter
  readonly #counts: Map<string, number>
  pending = 0
  constructor (inner: SpanExporter, counts: Map<string, number>) { this.#inner = inner; this.#counts = counts }
  export (spans: ReadableSpan[], done: (r: ExportResult) => void): void {
    this.#inner.export(spans, (r) => {
      this.pending -= spans.length
      Metrics.inc(this.#counts, r.code === ExportResultCode.SUCCESS ? 'exported' : 'failed', spans.length)
      done(r)
    })
  }

  async shutdown (): Promise<void> { await this.#inner.shutdown() }
  async forceFlush (): Promise<void> { await this.#inner.forceFlush?.() }
}

/**
 * The batch processor behind a bound of its own: spans ended but not yet exported (queued or in an export) are at most
 * `max`; past it a span is dropped and counted, never buffered, so a slow or absent collector costs no memory growth.
 */
class BoundedProcessor implements SpanProcessor {
  readonly #batch: BatchSpanProcessor
  readonly #exporter: CountingExporter
  readonly #counts: Map<string, number>
  readonly #max: number
  constructor (exporter: CountingExporter, counts: Map<string, number>, max: number) {
    this.#exporter = exporter
    this.#counts = counts
    this.#max = max
    this.#batch = new BatchSpanProcessor({ exporter, maxQueueSize: max, maxExportBatchSize: Math.min(512, max), scheduledDelayMillis: 1000, exportTimeoutMillis: 10_000 })
  }

  onStart (span: Parameters<SpanProcessor['onStart']>[0], ctx: Context): void { this.#batch.onStart(span, ctx) }
  onEnd (span: ReadableSpan): void {
    if (this.#exporter.pending >= this.#max) { Metrics.inc(this.#counts, 'dropped'); return }
    this.#exporter.pending++
    this.#batch.onEnd(span)
  }

  async forceFlush (): Promise<void> { await this.#batch.forceFlush() }
  async shutdown (): Promise<void> { await this.#batch.shutdown() }
}

export class Observer {
  readonly #tracer: ReturnType<TracerProvider['getTracer']> | null
  readonly #provider: TracerProvider | null
  readonly #access: pino.Logger | null
  readonly #sample: number

  private constructor (provider: TracerProvider | null, access: pino.Logger | null, sample: number) {
    this.#provider = provider
    this.#tracer = provider?.getTracer('doorman') ?? null
    this.#access = access
    this.#sample = sample
  }

  /** The observer for these settings, or null when tracing and the access log are both off. */
  static create (s: ObserveSettings, metrics: Metrics, log: Logger): Observer | null {
    let provider: TracerProvider | null = null
    if (s.tracesEndpoint !== '') {
      const Exporter = s.protocol === 'http/json' ? JsonExporter : ProtoExporter
      const exporter = new CountingExporter(new Exporter({ url: s.tracesEndpoint, timeoutMillis: 10_000 }), metrics.spans)
      provider = new TracerProvider({
        sampler: sampler(s.sampler, s.samplerArg),
        resource: resourceFromAttributes({ ...s.resourceAttributes, 'service.name': s.serviceName }),
        spanProcessors: [new BoundedProcessor(exporter, metrics.spans, s.maxQueue ?? 2048)]
      })
      log.info({ endpoint: s.tracesEndpoint, protocol: s.protocol, sampler: s.sampler, ratio: s.samplerArg }, 'tracing on')
    }
    const access = s.accessLog === 'json' ? pino({ base: null, messageKey: 'msg', timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ dest: 1, sync: false })) : null
    if (provider === null && access === null) return null
    return new Observer(provider, access, s.accessLogSample / 100)
  }

  /** Flushes what is queued (at most `ms`), then stops. */
  async close (ms = 2000): Promise<void> {
    const p = this.#provider
    if (p !== null) await Promise.race([p.shutdown().catch(() => {}), new Promise((resolve) => setTimeout(resolve, ms).unref())])
    this.#access?.flush()
  }

  /** The exchange's observation, started now (its arrival). */
  start<T> (ex: Exchange<T>, subject: Subject<T>): ExchangeTrace {
    return new Observation(this.#tracer, this.#access, this.#sample, ex, subject)
  }
}

class Observation<T> implements ExchangeTrace {
  readonly #access: pino.Logger | null
  readonly #subject: Subject<T>
  readonly #tracer: ReturnType<TracerProvider['getTracer']> | null
  readonly #span: Span | null
  readonly #ctx: Context
  #attempt: Span | null = null
  #sampleLog: boolean
  #started: number

  constructor (tracer: ReturnType<TracerProvider['getTracer']> | null, access: pino.Logger | null, sample: number, ex: Exchange<T>, subject: Subject<T>) {
    this.#tracer = tracer
    this.#access = access
    this.#subject = subject
    this.#sampleLog = access !== null && (sample >= 1 || Math.random() < sample)
    this.#started = Date.now()
    if (tracer === null) { this.#span = null; this.#ctx = ROOT_CONTEXT; return }
    const carrier = traceHeaders(ex.client.rawHeaders())
    const parent = carrier === null ? ROOT_CONTEXT : INPUT.extract(ROOT_CONTEXT, carrier, getter)
    const inbound = subject.lane === 'inbound'
    const name = inbound ? ex.client.method : `${ex.client.method} ${subject.service ?? ''}`
    const span = tracer.startSpan(name, { kind: inbound ? SpanKind.SERVER : SpanKind.CLIENT }, parent)
    // Attributes only on a span that is recorded: an unsampled request pays for its context, not for its details.
    if (span.isRecording()) {
      span.setAttributes({
        'http.request.method': ex.client.method,
        'url.path': pathOnly(ex.client.path),
        'network.protocol.version': ex.client.h2 ? '2' : '1.1',
        'doorman.lane': subject.lane
      })
      if (ex.client.grpc) span.setAttribute('rpc.system', 'grpc')
      if (subject.service !== undefined) span.setAttribute('doorman.service', subject.service)
    }
    this.#span = span
    this.#ctx = trace.setSpan(parent, span)
  }

  get traceId (): string {
    if (this.#span === null) return ''
    const c = this.#span.spanContext()
    return (c.traceFlags & 1) === 1 ? c.traceId : ''
  }

  queued (): void { this.#span?.addEvent('doorman.queued') }

  attempt (ex: Exchange<T>, headers: string[], retry: string | null): string[] {
    const tracer = this.#tracer
    if (tracer === null || this.#span === null) return headers
    let ctx = this.#ctx
    if (this.#subject.lane === 'outbound') {
      this.#attempt?.end()
      const target = this.#subject.target?.(ex) ?? null
      const attrs: Record<string, string | number> = { 'http.request.method': ex.client.method, 'doorman.attempt': ex.attempt }
      if (target !== null) {
        const colon = target.address.lastIndexOf(':')
        attrs['server.address'] = target.address.slice(0, colon)
        attrs['server.port'] = Number(target.address.slice(colon + 1))
        attrs['doorman.warmup.weight'] = target.weight
      }
      if (retry !== null) attrs['doorman.retry.reason'] = retry
      this.#attempt = tracer.startSpan(`${ex.client.method} attempt`, { kind: SpanKind.CLIENT, attributes: attrs }, ctx)
      ctx = trace.setSpan(ctx, this.#attempt)
    }
    const carrier: Record<string, string> = {}
    OUTPUT.inject(ctx, carrier, setter)
    // The peer's parent is doorman's span: the caller's trace headers are replaced (b3 passed on as it came).
    const out: string[] = []
    for (let i = 0; i < headers.length; i += 2) {
      const n = headers[i].toLowerCase()
      if (n === 'traceparent' || n === 'tracestate') continue
      out.push(headers[i], headers[i + 1])
    }
    for (const k of Object.keys(carrier)) out.push(k, carrier[k])
    return out
  }

  end (ex: Exchange<T>, o: Outcome): void {
    const now = performance.now()
    const span = this.#span
    if (span !== null && !span.isRecording()) {
      this.#attempt?.end()
    } else if (span !== null) {
      const attempt = this.#attempt
      if (attempt !== null) {
        if (o.status >= 500 || o.err !== null) attempt.setStatus({ code: SpanStatusCode.ERROR })
        attempt.end()
      }
      if (o.status > 0) span.setAttribute('http.response.status_code', o.status)
      if (o.grpcStatus !== null) span.setAttribute('rpc.grpc.status_code', Number(o.grpcStatus))
      if (ex.queueWaitMs > 0) span.setAttribute('doorman.queue.wait_ms', Math.round(ex.queueWaitMs * 1000) / 1000)
      if (o.shed !== null) span.setAttribute('doorman.shed.reason', o.shed)
      span.setAttribute('doorman.outcome', o.kind)
      if (o.err !== null) span.setAttribute('error.type', o.err.code)
      const d = this.#subject.decisions?.(ex)
      if (d !== undefined) span.setAttributes(d)
      const failed = o.kind === 'shed' || o.kind === 'error' || o.kind === 'no-route' || o.kind === 'expired' || o.status >= 500 ||
        (o.grpcStatus !== null && o.grpcStatus !== '0')
      if (failed) span.setStatus({ code: SpanStatusCode.ERROR, message: o.shed !== null ? `shed: ${o.shed}` : o.err?.message })
      span.end()
    }
    if (this.#sampleLog) {
      const target = this.#subject.target?.(ex) ?? null
      this.#access?.info({
        lane: this.#subject.lane,
        method: ex.client.method,
        path: ex.client.path,
        status: o.status,
        grpc_status: o.grpcStatus,
        outcome: o.kind,
        duration_ms: Math.round((now - ex.arrivedAt) * 1000) / 1000,
        queue_wait_ms: Math.round(ex.queueWaitMs * 1000) / 1000,
        shed: o.shed,
        service: this.#subject.service ?? null,
        instance: target?.address ?? null,
        attempts: ex.attempt + 1,
        request_id: ex.requestId,
        trace_id: span !== null ? span.spanContext().traceId : null,
        start: new Date(this.#started).toISOString()
      })
    }
  }
}

/** The path without its query (a bounded, non-secret attribute). */
function pathOnly (p: string): string {
  const q = p.indexOf('?')
  return q < 0 ? p : p.slice(0, q)
}
