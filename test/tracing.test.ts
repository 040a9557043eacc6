// Traces and the access log, with real doorman processes and an OTLP/HTTP receiver in the test that decodes what the
// SDK's exporter sends (OTLP/JSON): app A → A's outbound lane → B's inbound lane → app B is one trace, parent by
// parent, and app B gets doorman's span as its parent; a shed request's span carries its reason and an error status;
// a gRPC call's span its gRPC status; a collector that is down loses spans (counted), never a request.
import t from 'tap'
import http from 'node:http'
import { startDoorman, startServer, waitFor, request, startFixtureApp, freePort } from './helpers/index.js'
import { startRedis } from './helpers/redis.js'
import { rawGrpc, encodeMsg } from './helpers/grpc.js'

interface Attr { key: string, value: { stringValue?: string, intValue?: string | number, boolValue?: boolean, doubleValue?: number } }
interface OtlpSpan { traceId: string, spanId: string, parentSpanId?: string, name: string, kind: number, attributes: Attr[], status?: { code?: number, message?: string } }

/** An OTLP/HTTP receiver (JSON): every span it was sent, with its resource's service.name. */
async function collector (t: Parameters<Parameters<typeof t.test>[1]>[0]): Promise<{ url: string, spans: Array<OtlpSpan & { service: string }> }> {
  const spans: Array<OtlpSpan & { service: string }> = []
  const { port } = await startServer(t, (req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      if (req.url === '/v1/traces') {
        const body = JSON.parse(Buffer.concat(chunks).toString()) as { resourceSpans: Array<{ resource: { attributes: Attr[] }, scopeSpans: Array<{ spans: OtlpSpan[] }> }> }
        for (const rs of body.resourceSpans) {
          const service = rs.resource.attributes.find((a) => a.key === 'service.name')?.value.stringValue ?? ''
          for (const ss of rs.scopeSpans) for (const s of ss.spans) spans.push({ ...s, service })
        }
      }
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end('{}')
    })
  })
  return { url: `http://127.0.0.1:${port}`, spans }
}

function attr (s: OtlpSpan, key: string): string | number | boolean | undefined {
  const v = s.attributes.find((a) => a.key === key)?.value
  if (v === undefined) return undefined
  return v.stringValue ?? (v.intValue !== undefined ? Number(v.intValue) : undefined) ?? v.boolValue ?? v.doubleValue
}

const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736'
const APP_SPAN = '00f067aa0ba902b7'
const OTEL = (url: string, service: string): Record<string, string> => ({ OTEL_EXPORTER_OTLP_ENDPOINT: url, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', OTEL_SERVICE_NAME: service })

t.test('app A → outbound lane → inbound lane → app B: one trace, each span the parent of the next', async (t) => {
  const otlp = await collector(t)
  const redis = await startRedis(t)
  let seen: http.IncomingHttpHeaders = {}
  const appB = await startServer(t, (req, res) => { seen = req.headers; res.end('from b') })
  const b = await startDoorman(t, { DOORMAN_APP_PORT: String(appB.port), DOORMAN_REGISTRY: redis.url, DOORMAN_SERVICE: 'b', ...OTEL(otlp.url, 'b-sidecar') })
  const appA = await startServer(t, (_req, res) => { res.end('a') })
  const a = await startDoorman(t, { DOORMAN_APP_PORT: String(appA.port), DOORMAN_REGISTRY: redis.url, DOORMAN_SERVICE: 'a', DOORMAN_OUTBOUND_PORT: String(await freePort()), ...OTEL(otlp.url, 'a-sidecar') })
  await waitFor('A to see B', async () => (await request(a.outbound, { path: '/warm', headers: { host: 'b' } })).status === 200, 10_000)
  const res = await request(a.outbound, { path: '/traced?x=1', headers: { host: 'b', traceparent: `00-${TRACE_ID}-${APP_SPAN}-01` } })
  t.equal(res.status, 200)
  const tp = String(seen.traceparent)
  t.match(tp, new RegExp(`^00-${TRACE_ID}-[0-9a-f]{16}-01$`), 'app B got the same trace id')
  await waitFor('the spans exported', () => otlp.spans.filter((s) => s.traceId === TRACE_ID).length >= 3, 10_000)
  const spans = otlp.spans.filter((s) => s.traceId === TRACE_ID)
  const call = spans.find((s) => s.service === 'a-sidecar' && s.parentSpanId === APP_SPAN)
  t.ok(call, "A's call span is the app's span's child")
  const attempt = spans.find((s) => s.service === 'a-sidecar' && s.parentSpanId === call?.spanId)
  t.ok(attempt, 'an attempt span under the call')
  t.equal(attempt?.kind, 3, 'CLIENT')
  t.ok(typeof attr(attempt as OtlpSpan, 'server.port') === 'number', 'the attempt names the instance')
  const server = spans.find((s) => s.service === 'b-sidecar' && s.parentSpanId === attempt?.spanId)
  t.ok(server, "B's server span is the attempt's child")
  t.equal(server?.kind, 2, 'SERVER')
  t.equal(attr(server as OtlpSpan, 'url.path'), '/traced', 'the path without its query')
  t.equal(attr(server as OtlpSpan, 'http.response.status_code'), 200)
  t.equal(tp.split('-')[2], server?.spanId, "app B's parent is B's server span")
})

t.test('a shed request: its span carries the reason and an error status; a gRPC call its status', async (t) => {
  const otlp = await collector(t)
  const release: Array<() => void> = []
  const app = await startServer(t, (req, res) => { req.resume(); release.push(() => res.end('ok')) })
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(app.port), DOORMAN_MAX_CONCURRENCY: '1', DOORMAN_MAX_QUEUE: '0', ...OTEL(otlp.url, 'shedder') })
  const held = request(dm.inbound, { path: '/held' })
  await waitFor('the slot taken', () => release.length === 1)
  const shed = await request(dm.inbound, { path: '/shed', headers: { traceparent: `00-${TRACE_ID.replace('4b', '5c')}-${APP_SPAN}-01` } })
  t.equal(shed.status, 503)
  release[0]()
  await held
  await waitFor('the shed span', () => otlp.spans.find((s) => attr(s, 'url.path') === '/shed'), 10_000)
  const s = otlp.spans.find((x) => attr(x, 'url.path') === '/shed') as OtlpSpan
  t.equal(attr(s, 'doorman.shed.reason'), 'queue-full')
  t.equal(s.status?.code, 2, 'ERROR')
  t.equal(attr(s, 'doorman.limit'), 1)

  const grpcApp = await startFixtureApp(t, 'grpc-app.mjs')
  const g = await startDoorman(t, { DOORMAN_APP_PORT: String(grpcApp.port), DOORMAN_APP_PROTOCOL: 'h2c', ...OTEL(otlp.url, 'grpc-sidecar') })
  const call = await rawGrpc(g.inbound, encodeMsg('hi', 0), {})
  t.teardown(() => { call.session.destroy() })
  t.equal(call.headers['grpc-status'], '0')
  await waitFor('the gRPC span', () => otlp.spans.find((x) => x.service === 'grpc-sidecar'), 10_000)
  const gs = otlp.spans.find((x) => x.service === 'grpc-sidecar') as OtlpSpan
  t.equal(attr(gs, 'rpc.grpc.status_code'), 0)
  t.equal(attr(gs, 'rpc.system'), 'grpc')
  t.equal(attr(gs, 'network.protocol.version'), '2')
})

t.test('a collector that is down loses spans, counted, and never a request', async (t) => {
  const app = await startServer(t, (_req, res) => { res.end('ok') })
  const dead = await freePort()
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(app.port), OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${dead}` })
  for (let i = 0; i < 50; i++) t.equal((await request(dm.inbound, { path: `/r${i}` })).status, 200, `request ${i}`)
  await waitFor('the failed export counted', async () => {
    const m = (await request(dm.admin, { path: '/metrics' })).body
    const v = /doorman_trace_spans_total\{outcome="failed"\} (\d+)/.exec(m)
    return v !== null && Number(v[1]) >= 50
  }, 40_000) // the exporter retries a refused connection with backoff for up to its 10 s timeout per batch
})

t.test('the access log: one JSON line per request with its fields; sampling', async (t) => {
  const app = await startServer(t, (_req, res) => { res.end('ok') })
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(app.port), DOORMAN_ACCESS_LOG: 'json' })
  for (let i = 0; i < 5; i++) await request(dm.inbound, { path: `/logged/${i}`, headers: { 'x-request-id': `rid-${i}` } })
  const lines = (): Array<Record<string, unknown>> => dm.output().split('\n').filter((l) => l.includes('"lane"')).map((l) => JSON.parse(l) as Record<string, unknown>)
  await waitFor('five access log lines', () => lines().length === 5, 5000)
  const l = lines()[0]
  for (const k of ['time', 'lane', 'method', 'path', 'status', 'duration_ms', 'queue_wait_ms', 'shed', 'instance', 'request_id', 'trace_id']) t.ok(k in l, `has ${k}`)
  t.equal(l.lane, 'inbound')
  t.equal(l.path, '/logged/0')
  t.equal(l.status, 200)
  t.equal(l.request_id, 'rid-0')

  const none = await startDoorman(t, { DOORMAN_APP_PORT: String(app.port), DOORMAN_ACCESS_LOG: 'json', DOORMAN_ACCESS_LOG_SAMPLE: '0' })
  for (let i = 0; i < 20; i++) await request(none.inbound, { path: '/x' })
  const half = await startDoorman(t, { DOORMAN_APP_PORT: String(app.port), DOORMAN_ACCESS_LOG: 'json', DOORMAN_ACCESS_LOG_SAMPLE: '50' })
  for (let i = 0; i < 200; i++) await request(half.inbound, { path: '/y' })
  await waitFor('the sampled lines flushed', () => half.output().split('\n').filter((x) => x.includes('"lane"')).length > 40, 5000)
  const n = half.output().split('\n').filter((x) => x.includes('"lane"')).length
  t.ok(n > 50 && n < 150, `about half of 200 logged (${n})`)
  t.equal(none.output().split('\n').filter((x) => x.includes('"lane"')).length, 0, 'sample 0: none')
})

t.test('a B3 single header from a mesh that still sends it is continued; tracing off sends the caller’s context on untouched', async (t) => {
  const otlp = await collector(t)
  let seen: http.IncomingHttpHeaders = {}
  const app = await startServer(t, (req, res) => { seen = req.headers; res.end('ok') })
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(app.port), ...OTEL(otlp.url, 'b3') })
  const b3Trace = '80f198ee56343ba864fe8b2a57d3eff7'
  await request(dm.inbound, { path: '/b3', headers: { b3: `${b3Trace}-e457b5a2e4d86bd1-1` } })
  t.match(String(seen.traceparent), new RegExp(`^00-${b3Trace}-[0-9a-f]{16}-01$`), 'the app gets W3C trace context in the B3 trace')
  await waitFor('the span', () => otlp.spans.find((s) => s.traceId === b3Trace), 10_000)
  t.equal(otlp.spans.find((s) => s.traceId === b3Trace)?.parentSpanId, 'e457b5a2e4d86bd1', "the caller's B3 span is the parent")

  const off = await startDoorman(t, { DOORMAN_APP_PORT: String(app.port) })
  const tp = `00-${TRACE_ID}-${APP_SPAN}-01`
  await request(off.inbound, { path: '/off', headers: { traceparent: tp } })
  t.equal(seen.traceparent, tp, 'tracing off: the caller’s traceparent passes as it came')
})

t.test('exemplars: an OpenMetrics scrape carries trace ids on the request-duration buckets, and parses', async (t) => {
  const otlp = await collector(t)
  const app = await startServer(t, (_req, res) => { res.end('ok') })
  const dm = await startDoorman(t, { DOORMAN_APP_PORT: String(app.port), ...OTEL(otlp.url, 'exemplars') })
  await request(dm.inbound, { path: '/ex', headers: { traceparent: `00-${TRACE_ID}-${APP_SPAN}-01` } })
  const plain = await request(dm.admin, { path: '/metrics' })
  t.notMatch(plain.body, /# \{trace_id=/, 'no exemplars in the Prometheus text format')
  const om = await request(dm.admin, { path: '/metrics', headers: { accept: 'application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5' } })
  t.match(String(om.headers['content-type']), /^application\/openmetrics-text; version=1.0.0/)
  t.match(om.body, new RegExp(`^doorman_request_duration_seconds_bucket\\{le="[^"]+"\\} \\d+ # \\{trace_id="${TRACE_ID}"\\} [0-9.e-]+ \\d+\\.\\d+$`, 'm'), 'a bucket carries the trace id')
  t.match(om.body, /\n# EOF\n$/, 'ends with # EOF')
  t.match(om.body, /^# TYPE doorman_requests counter$/m, 'counter families named without _total')
  t.match(om.body, /^doorman_requests_total\{/m, 'their samples keep it')
  // Python's prometheus_client (Debian's python3-prometheus-client) holds the OpenMetrics parser Prometheus's own
  // follows: a strict check of the whole exposition.
  const { spawnSync } = await import('node:child_process')
  const py = spawnSync('/usr/bin/python3', ['-c', 'import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families as p\nfams = list(p(sys.stdin.read()))\nex = [s.exemplar for f in fams for s in f.samples if s.exemplar]\nprint(len(fams), len(ex))'], { input: om.body })
  t.equal(py.status, 0, `the OpenMetrics parser accepts it: ${py.stderr.toString().slice(-400)}`)
  const [families, exemplars] = py.stdout.toString().trim().split(' ').map(Number)
  t.ok(families > 20 && exemplars >= 1, `${families} families, ${exemplars} exemplar(s)`)
})
