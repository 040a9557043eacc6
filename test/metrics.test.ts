import t from 'tap'
import { Histogram, Registry } from 'prom-client'
import { FastHistogram, Metrics } from '../src/metrics/index.js'

const BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

function pair (): { ref: Histogram, fast: FastHistogram, a: Registry, b: Registry } {
  const a = new Registry()
  const b = new Registry()
  const ref = new Histogram({ name: 'x_seconds', help: 'a histogram', buckets: BUCKETS, registers: [a] })
  const fast = new FastHistogram({ name: 'x_seconds', help: 'a histogram', buckets: BUCKETS, registers: [b] })
  return { ref, fast, a, b }
}

t.test('the fast histogram scrapes exactly like prom-client’s', async (t) => {
  const { ref, fast, a, b } = pair()
  t.equal(await b.metrics(), await a.metrics(), 'empty')
  // Edges (exactly on a bound), below the first bound, above the last, and a spread in between.
  const values = [0, 0.0005, 0.001, 0.0010001, 0.003, 0.01, 0.2, 1, 29.9, 30, 31, 100]
  for (let i = 0; i < 200; i++) values.push((i * 7919 % 1000) / 997)
  for (const v of values) { ref.observe(v); fast.observe(v) }
  t.equal(await b.metrics(), await a.metrics(), 'Prometheus text')
  t.same(JSON.parse(JSON.stringify(await b.getMetricsAsJSON())), JSON.parse(JSON.stringify(await a.getMetricsAsJSON())), 'JSON')
  a.setContentType(Registry.OPENMETRICS_CONTENT_TYPE)
  b.setContentType(Registry.OPENMETRICS_CONTENT_TYPE)
  t.equal(await b.metrics(), await a.metrics(), 'OpenMetrics text')
  t.match(await b.metrics(), /x_seconds_count 212\b/)
  ref.reset()
  fast.reset()
  t.equal(await b.metrics(), await a.metrics(), 'after reset')
  ref.observe(0.03)
  fast.observe(0.03)
  t.equal(await b.metrics(), await a.metrics(), 'observed after reset')
})

t.test('the fast histogram refuses values that are not finite, like prom-client', async (t) => {
  const { ref, fast } = pair()
  t.throws(() => { ref.observe(NaN) }, TypeError)
  t.throws(() => { fast.observe(NaN) }, TypeError)
  t.throws(() => { fast.observe(Infinity) }, TypeError)
})

t.test('the request duration histogram is a fast one, under its contract name', async (t) => {
  const m = new Metrics({ defaults: false })
  m.duration.observe(0.004)
  m.duration.observe(0.2)
  const text = await m.text()
  t.match(text, /doorman_request_duration_seconds_bucket\{le="0\.005"\} 1\n/)
  t.match(text, /doorman_request_duration_seconds_bucket\{le="0\.25"\} 2\n/)
  t.match(text, /doorman_request_duration_seconds_count 2\n/)
})
