// The adaptive limit in simulated time: the real Limiter and GradientLimit drive a model of seed 001's app (a
// hidden executor whose size the limit must find from latency alone: 50 ms ± 25% per request, FIFO beyond its
// slots), with 100 closed-loop clients. Seeded, so each run is the same run; no real waiting.
import t from 'tap'
import { Limiter } from '../src/limiter/index.js'
import { GradientLimit, type GradientOptions } from '../src/limiter/gradient.js'
import { SimClock, simulate, settled, seeded, type AppModel, type SimResult } from '../bench/adaptive-model.js'

interface Run extends SimResult { algorithm: GradientLimit, limiter: Limiter }

function run (o: { app: Partial<AppModel> & Pick<AppModel, 'capacity'>, seconds: number, seed: number, clients?: number | ((t: number) => number), gradient?: Partial<GradientOptions>, onTick?: (t: number, limiter: Limiter) => void }): Run {
  const clock = new SimClock()
  const algorithm = new GradientLimit({ min: 4, max: 200, random: seeded(o.seed + 1000), ...o.gradient })
  const limiter = new Limiter({ algorithm, maxQueue: 200, queueTimeout: 1000, timers: clock })
  const app: AppModel = { serviceMs: 50, spread: 0.5, ...o.app }
  const res = simulate({ clock, limiter, app, clients: o.clients ?? 100, seconds: o.seconds, seed: o.seed, probing: () => algorithm.readings.probing, onTick: (t) => { o.onTick?.(t, limiter) } })
  return { ...res, algorithm, limiter }
}

const fmt = (r: { lo: number, hi: number }): string => `5 s means ${r.lo.toFixed(2)}–${r.hi.toFixed(2)} × capacity`

t.test('from a limit far too high, settles within 20% of the hidden capacity within 30 s', async (t) => {
  for (const seed of [1, 2, 3]) {
    const r = run({ app: { capacity: () => 20 }, seconds: 45, seed, gradient: { initial: 200 } })
    const s = settled(r.trace, 20, 30_000, 45_000)
    t.ok(s.ok, `seed ${seed}: ${fmt(s)}`)
    const late = r.trace.filter((p) => p.t >= 30_000 && !p.probing).map((p) => p.limit)
    t.ok(Math.min(...late) >= 10 && Math.max(...late) <= 30, `seed ${seed}: no reading after 30 s strays past ±50% (${Math.min(...late)}–${Math.max(...late)})`)
  }
})

t.test('from a limit far too low, settles within 20% of the hidden capacity within 30 s', async (t) => {
  for (const seed of [1, 2, 3]) {
    const r = run({ app: { capacity: () => 20 }, seconds: 45, seed, gradient: { initial: 4 } })
    const s = settled(r.trace, 20, 30_000, 45_000)
    t.ok(s.ok, `seed ${seed}: ${fmt(s)}`)
  }
})

t.test('follows the capacity as it changes 20 → 10 → 40, within 30 s each', async (t) => {
  const capacity = (ms: number): number => ms < 40_000 ? 20 : ms < 80_000 ? 10 : 40
  for (const seed of [1, 2, 3]) {
    const r = run({ app: { capacity }, seconds: 120, seed })
    for (const [from, to, c] of [[30_000, 40_000, 20], [70_000, 80_000, 10], [110_000, 120_000, 40]]) {
      const s = settled(r.trace, c, from, to)
      t.ok(s.ok, `seed ${seed}, capacity ${c}: ${fmt(s)}`)
    }
  }
})

t.test('the app\'s own queue stays short once settled', async (t) => {
  const r = run({ app: { capacity: () => 20 }, seconds: 45, seed: 4 })
  const late = r.waits.slice(-Math.floor(r.waits.length / 3)).sort((a, b) => a - b)
  const p99 = late[Math.floor(late.length * 0.99)]
  t.ok(p99 < 25, `p99 wait in the app's queue over the last third: ${p99.toFixed(1)} ms (a request takes 50 ms)`)
  // The same clients with a static limit of 100 wait 4 × 50 ms: the limit is what keeps it short.
  const clock = new SimClock()
  const fixed = simulate({ clock, limiter: new Limiter({ limit: 100, maxQueue: 200, queueTimeout: 1000, timers: clock }), app: { capacity: () => 20, serviceMs: 50, spread: 0.5 }, clients: 100, seconds: 10, seed: 4 })
  const w = fixed.waits.slice(-1000).sort((a, b) => a - b)
  t.ok(w[Math.floor(w.length / 2)] > 150, `with a static limit of 100 the median wait is ${w[Math.floor(w.length / 2)].toFixed(0)} ms`)
})

t.test('5xx and timeouts from the app are a drop signal', async (t) => {
  // An app with a bounded queue: beyond 2 waiting it answers 503 at once. Fast failures look fast; the limit must
  // still come down to where the app stops failing.
  const r = run({ app: { capacity: () => 20, rejectAbove: 2 }, seconds: 40, seed: 5, gradient: { initial: 100 } })
  const late = r.trace.filter((p) => p.t >= 25_000 && !p.probing).map((p) => p.limit)
  const mean = late.reduce((a, b) => a + b, 0) / late.length
  t.ok(mean >= 16 && mean <= 26, `the limit settles near the capacity (mean ${mean.toFixed(1)})`)
  const from = r.trace.find((p) => p.t === 25_000)
  const to = r.trace[r.trace.length - 1]
  const failed = to.failed - (from?.failed ?? 0)
  const served = to.served - (from?.served ?? 0)
  t.ok(failed < (served + failed) * 0.1, `once settled, few requests fail (${failed} of ${served + failed})`)
  const clock = new SimClock()
  const fixed = simulate({ clock, limiter: new Limiter({ limit: 100, maxQueue: 200, queueTimeout: 1000, timers: clock }), app: { capacity: () => 20, serviceMs: 50, spread: 0.5, rejectAbove: 2 }, clients: 100, seconds: 10, seed: 5 })
  t.ok(fixed.failed > fixed.served, `with a static limit of 100 most fail (${fixed.failed} of ${fixed.served + fixed.failed})`)
})

t.test('a steady trickle of 5xx unrelated to load does not pin the limit down', async (t) => {
  const r = run({ app: { capacity: () => 20, errorRate: 0.02 }, seconds: 45, seed: 6 })
  const s = settled(r.trace, 20, 30_000, 45_000)
  t.ok(s.ok, `with 2% of answers 500 the limit still finds the capacity: ${fmt(s)}`)
})

t.test('no growth while the app is barely used', async (t) => {
  // 6 clients never use more than 6 slots: the limit must not climb toward the capacity it never sees used.
  const r = run({ app: { capacity: () => 20 }, clients: 6, seconds: 30, seed: 7 })
  const max = Math.max(...r.trace.map((p) => p.limit))
  t.ok(max <= 12, `the limit stays within twice the in-flight requests (max ${max})`)
  // When the clients come, it grows to the capacity.
  const r2 = run({ app: { capacity: () => 20 }, clients: (ms) => ms < 20_000 ? 6 : 100, seconds: 50, seed: 7 })
  t.ok(settled(r2.trace, 20, 45_000, 50_000).ok, 'and grows to the capacity once the load arrives')
})

t.test('the app getting slower: the baseline follows, the limit is not pinned to the floor', async (t) => {
  // At 20 s every request takes twice as long (same 20 slots): latency doubles with no queueing.
  const r = run({ app: { capacity: () => 20, serviceMs: (ms) => ms < 20_000 ? 50 : 100 }, seconds: 60, seed: 8 })
  t.ok(r.algorithm.readings.baselineMs > 90, `the baseline moved to the new latency (${r.algorithm.readings.baselineMs.toFixed(1)} ms)`)
  const s = settled(r.trace, 20, 50_000, 60_000)
  t.ok(s.ok, `the limit is back near the capacity: ${fmt(s)}`)
})

t.test('a warmup ramp scales the limit the algorithm holds', async (t) => {
  // The ramp climbs from 10% to 100% over 30 s (as src/warmup would), starting when the algorithm is settled.
  let maxEffective = 0
  const r = run({
    app: { capacity: () => 20 },
    seconds: 70,
    seed: 9,
    onTick: (ms, limiter) => {
      if (ms >= 20_000 && ms <= 50_000) limiter.setScale(0.1 + 0.9 * (ms - 20_000) / 30_000)
      if (ms >= 20_000 && ms <= 50_000 && limiter.limit > maxEffective) maxEffective = limiter.limit
    }
  })
  t.equal(r.limiter.scale, 1, 'the ramp ended')
  t.ok(maxEffective <= 26, `the app was never driven far past its capacity during the ramp (max limit in force ${maxEffective})`)
  const s = settled(r.trace, 20, 60_000, 70_000)
  t.ok(s.ok, `after the ramp the limit is near the capacity: ${fmt(s)}`)
})

t.test('parameters are checked', async (t) => {
  t.throws(() => new GradientLimit({ min: 4, max: 100, tolerance: 0.9 }), RangeError)
  t.throws(() => new GradientLimit({ min: 4, max: 100, smoothing: 0 }), RangeError)
  t.throws(() => new GradientLimit({ min: 4, max: 100, backoff: 1 }), RangeError)
  const g = new GradientLimit({ min: 10, max: 5 })
  t.equal(g.limit, 10, 'a ceiling under the floor is raised to it')
  t.same(g.readings, { baselineMs: 0, sampleMs: 0, probing: true }, 'it starts by measuring its baseline')
})
