// Warmup curve: pure functions, clock passed in.
import t from 'tap'
import { progress, factor, weight, warming, interpolate, publishInterval, type WarmupSettings } from '../src/warmup/index.js'

const linear: WarmupSettings = { window: 8000, aggression: 1, minWeight: 10 }

t.test('progress runs 0..1 over the window from its start', async (t) => {
  t.equal(progress(1000, 1000, 8000), 0)
  t.equal(progress(3000, 1000, 8000), 0.25)
  t.equal(progress(9000, 1000, 8000), 1)
  t.equal(progress(50_000, 1000, 8000), 1)
  t.equal(progress(500, 1000, 8000), 0, 'a clock before the start counts as the start')
  t.equal(progress(0, 1000, 0), 1, 'no window: fully warm')
})

t.test('linear curve with a floor (Envoy slow start, aggression 1; Dubbo warmup)', async (t) => {
  t.equal(factor(0, linear), 0.1, 'the floor at the start')
  t.equal(factor(0.05, linear), 0.1, 'still the floor')
  t.equal(factor(0.25, linear), 0.25)
  t.equal(factor(0.5, linear), 0.5)
  t.equal(factor(0.999, linear), 0.999)
  t.equal(factor(1, linear), 1)
  t.equal(weight(100, 2000 + 4000, 2000, linear), 50)
  t.equal(weight(100, 2000 + 8000, 2000, linear), 100)
  t.equal(weight(40, 2000, 2000, linear), 4)
})

t.test('aggression bends the curve: timeFactor^(1/aggression)', async (t) => {
  const fast: WarmupSettings = { window: 10_000, aggression: 2, minWeight: 0 }
  const slow: WarmupSettings = { window: 10_000, aggression: 0.5, minWeight: 0 }
  t.equal(factor(0.25, fast), 0.5, 'sqrt(0.25)')
  t.equal(factor(0.5, slow), 0.25, '0.5^2')
  t.ok(factor(0.3, fast) > factor(0.3, linear) && factor(0.3, linear) > factor(0.3, slow))
  for (const p of [0, 0.1, 0.5, 0.9]) t.ok(factor(p, fast) <= 1 && factor(p, slow) >= 0)
  t.equal(factor(0.5, { window: 1, aggression: 0, minWeight: 0 }), 0.5, 'a nonsensical aggression falls back to linear')
})

t.test('the curve never decreases and reaches the base at the end', async (t) => {
  for (const s of [linear, { window: 60_000, aggression: 3, minWeight: 5 }, { window: 1000, aggression: 0.3, minWeight: 50 }]) {
    let last = 0
    let ok = true
    for (let i = 0; i <= 100; i++) {
      const w = weight(100, (s.window * i) / 100, 0, s)
      if (w < last - 1e-9 || w < s.minWeight - 1e-9 || w > 100) ok = false
      last = w
    }
    t.ok(ok, 'monotonic, within [minWeight, 100]')
    t.equal(last, 100, 'the base at the end of the window')
  }
})

t.test('warming and no-warmup', async (t) => {
  t.equal(warming(0.5, linear), true)
  t.equal(warming(1, linear), false)
  const off = { window: 0, aggression: 1, minWeight: 10 }
  t.equal(warming(0, off), false)
  t.equal(factor(0, off), 1)
})

t.test('consumers interpolate from the last report on their own clock', async (t) => {
  // Reported 25% when the update arrived at 10_000 (consumer clock); 2 s later of an 8 s window: 50%.
  t.equal(interpolate(0.25, 10_000, 12_000, 8000), 0.5)
  t.equal(interpolate(0.25, 10_000, 10_000, 8000), 0.25)
  t.equal(interpolate(0.9, 10_000, 20_000, 8000), 1, 'capped at 1')
  t.equal(interpolate(0.25, 10_000, 9000, 8000), 0.25, 'a clock step back never goes below the report')
  t.equal(interpolate(1, 0, 0, 8000), 1)
  t.equal(interpolate(0.3, 0, 0, 0), 1, 'no window')
})

t.test('warming instances publish about 20 steps per window, bounded by 250 ms and the heartbeat', async (t) => {
  t.equal(publishInterval(8000, 15_000), 400)
  t.equal(publishInterval(60_000, 15_000), 3000)
  t.equal(publishInterval(600_000, 15_000), 5000)
  t.equal(publishInterval(1000, 15_000), 250)
  t.equal(publishInterval(0, 15_000), 5000)
  t.equal(publishInterval(60_000, 600), 200)
})
