import t from 'tap'
import { Registry, Histogram, Counter, Gauge } from 'prom-client'
import { ProbeLaneMetrics, CONTENT_TYPE } from '../src/probe-lane/metrics.js'

// The lane writes its metrics by hand; a scrape must read exactly as prom-client would have written them.
t.test('the lane writes what prom-client writes for the same metrics', async (t) => {
  const buckets = [0.0001, 0.001, 0.01, 0.1, 1]
  const registry = new Registry()
  const h = new Histogram({ name: 'x_duration_seconds', help: 'Time, by probe.', labelNames: ['probe'], buckets, registers: [registry] })
  const c = new Counter({ name: 'x_failures_total', help: 'Failures, by probe.', labelNames: ['probe'], registers: [registry] })
  let v = 1
  // eslint-disable-next-line no-new
  new Gauge({ name: 'x_ready', help: "1 when it's \"ready\"; a back\\slash", registers: [registry], collect () { this.set(v) } })

  const lane = new ProbeLaneMetrics()
  const observe = lane.histogram('x_duration_seconds', 'Time, by probe.', buckets)
  const fail = lane.counter('x_failures_total', 'Failures, by probe.')
  lane.gauge('x_ready', "1 when it's \"ready\"; a back\\slash", () => v)

  t.equal(lane.text(), await registry.metrics(), 'nothing observed yet')
  for (const [probe, s] of [['livez', 0.00005], ['livez', 0.0004], ['readyz', 0.02], ['app-readyz', 3], ['livez', 0.001]] as const) {
    h.observe({ probe }, s)
    observe(probe, s)
  }
  c.inc({ probe: 'readyz' })
  fail('readyz')
  c.inc({ probe: 'readyz' })
  fail('readyz')
  v = 0.25
  t.equal(lane.text(), await registry.metrics(), 'after observations')
  t.equal(CONTENT_TYPE, registry.contentType)
})

t.test('gauges read their value at each scrape', async (t) => {
  const lane = new ProbeLaneMetrics()
  let n = 1
  lane.gauge('g', 'A gauge.', () => n)
  t.match(lane.text(), /^g 1$/m)
  n = Infinity
  t.match(lane.text(), /^g \+Inf$/m)
})
