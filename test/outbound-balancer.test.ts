// The weighted power-of-two-choices balancer, over plain endpoints and a seeded random source.
import t from 'tap'
import { Balancer, type Balanceable } from '../src/outbound/balancer.js'

class E implements Balanceable {
  inflight = 0
  constructor (readonly name: string, public w = 1, public t = 0, public until = Infinity) {}
  tier (): number { return this.t }
  weight (): number { return this.w }
  changing (): boolean { return false }
  tierChangesAt (): number { return this.until }
}

/** A small deterministic PRNG (mulberry32). */
function seeded (seed: number): () => number {
  let a = seed
  return () => {
    a = (a + 0x6D2B79F5) | 0
    let x = Math.imul(a ^ (a >>> 15), 1 | a)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

function shares (b: Balancer<E>, n: number, now = 0): Map<string, number> {
  const m = new Map<string, number>()
  for (let i = 0; i < n; i++) { const e = b.pick(now) as E; m.set(e.name, (m.get(e.name) ?? 0) + 1 / n) }
  return m
}

t.test('at light load the share follows the weights', async (t) => {
  const b = new Balancer<E>({ random: seeded(1) })
  const warm = new E('warm', 1)
  const cold = new E('cold', 0.1)
  b.set([warm, cold])
  const s = shares(b, 20_000)
  t.ok(Math.abs((s.get('cold') ?? 0) - 0.1 / 1.1) < 0.02, `cold ≈ 9% (${((s.get('cold') ?? 0) * 100).toFixed(1)}%)`)
  warm.w = 1; cold.w = 1
  b.invalidate()
  const even = shares(b, 20_000)
  t.ok(Math.abs((even.get('cold') ?? 0) - 0.5) < 0.02, 'equal weights: even')
})

t.test('many different weights: each share follows its weight', async (t) => {
  const b = new Balancer<E>({ random: seeded(7) })
  const ws = [0.1, 0.25, 0.5, 0.75, 1, 1, 0.3]
  const list = ws.map((w, i) => new E(`e${i}`, w))
  b.set(list)
  const s = shares(b, 100_000)
  const total = ws.reduce((x, y) => x + y, 0)
  const off = list.map((e) => Math.abs((s.get(e.name) ?? 0) - e.w / total))
  t.ok(Math.max(...off) < 0.01, `every share within 1 point of its weight share (worst ${(Math.max(...off) * 100).toFixed(2)})`)
})

t.test('under load the less busy candidate wins, but a light endpoint only wins when drawn', async (t) => {
  const b = new Balancer<E>({ random: seeded(2) })
  const a = new E('a'); const c = new E('c'); const d = new E('d')
  b.set([a, c, d])
  a.inflight = 10; c.inflight = 10; d.inflight = 0
  const s = shares(b, 20_000)
  // d is drawn at least once in 1 - (2/3)^2 = 5/9 of picks, and then always wins.
  t.ok(Math.abs((s.get('d') ?? 0) - 5 / 9) < 0.02, `the idle endpoint wins when drawn (${((s.get('d') ?? 0) * 100).toFixed(1)}%)`)
  const cold = new E('cold', 0.1)
  const warm = new E('warm', 1)
  b.set([warm, cold])
  warm.inflight = 8
  const bounded = shares(b, 20_000)
  const p = 0.1 / 1.1
  t.ok((bounded.get('cold') ?? 0) <= 2 * p - p * p + 0.02, `a cold endpoint's share stays below its chance of being drawn (${((bounded.get('cold') ?? 0) * 100).toFixed(1)}%)`)
})

t.test('tiers: ejected only when nothing healthy is left, draining last, -1 never', async (t) => {
  const b = new Balancer<E>({ random: seeded(3) })
  const ok = new E('ok', 1, 0)
  const ej = new E('ejected', 1, 1)
  const dr = new E('draining', 1, 2)
  const st = new E('starting', 1, -1)
  b.set([ok, ej, dr, st])
  t.same([...shares(b, 200).keys()], ['ok'])
  t.equal(b.tier(0), 0)
  ok.t = 2
  b.invalidate()
  t.same([...shares(b, 200).keys()], ['ejected'], 'panic: the ejected one over nothing')
  ej.t = 2
  b.invalidate()
  t.same([...shares(b, 600).keys()].sort(), ['draining', 'ejected', 'ok'], 'draining ones when nothing else is left')
  b.set([st])
  t.equal(b.pick(0), undefined)
  t.equal(b.tier(0), -1)
  b.set([])
  t.equal(b.pick(0), undefined)
})

t.test('an ejection ends by itself at its time', async (t) => {
  const b = new Balancer<E>({ random: seeded(4) })
  const a = new E('a', 1, 0)
  const c = new E('c', 1, 1, 1000)
  b.set([a, c])
  t.same([...shares(b, 100, 500).keys()], ['a'])
  c.t = 0
  // No invalidate(): the balancer rebuilds at the ejection's end by itself.
  t.same([...shares(b, 400, 1000).keys()].sort(), ['a', 'c'])
})

t.test('a retry avoids the endpoint that failed', async (t) => {
  const b = new Balancer<E>({ random: seeded(5) })
  const a = new E('a'); const c = new E('c', 0.01)
  b.set([a, c])
  let always = true
  for (let i = 0; i < 500; i++) if (b.pick(0, a) !== c) always = false
  t.ok(always, 'the other one, every time')
  b.set([a])
  t.equal(b.pick(0, a), undefined, 'no other instance: no retry target')
})

t.test('picks stay cheap at 1,000 endpoints', async (t) => {
  const b = new Balancer<E>({ random: seeded(6) })
  const list = Array.from({ length: 1000 }, (_, i) => new E(`e${i}`, i % 10 === 0 ? 0.2 : 1))
  b.set(list)
  for (let i = 0; i < 1000; i++) b.pick(0)
  const n = 200_000
  const t0 = performance.now()
  for (let i = 0; i < n; i++) { const e = b.pick(0) as E; e.inflight = (e.inflight + 1) % 5 }
  const us = ((performance.now() - t0) * 1000) / n
  t.comment(`${us.toFixed(3)} µs per pick at 1,000 endpoints`)
  t.ok(us < 50, 'generous bound: well under 50 µs a pick')
})

t.test("panic mode (Envoy's healthy_panic_threshold): below the threshold, every registered non-draining endpoint", async (t) => {
  const events: string[] = []
  const b = new Balancer<E>({ random: seeded(7), panicThreshold: 50, onPanic: (p, routable, total) => { events.push(`${p ? 'on' : 'off'} ${routable}/${total}`) } })
  const up = new E('up', 1, 0)
  const starting = [new E('s1', 1, -1), new E('s2', 1, -1)]
  const ejected = new E('ej', 1, 1)
  const draining = new E('dr', 1, 2)
  b.set([up, ...starting, ejected, draining])
  const s = shares(b, 4000)
  t.same([...s.keys()].sort(), ['ej', 's1', 's2', 'up'], '1 of 4 routable (25% < 50%): all but the draining one')
  t.ok(b.panic)
  t.same(events, ['on 1/4'])
  starting[0].t = 0
  b.invalidate()
  t.same([...shares(b, 2000).keys()].sort(), ['s1', 'up'], '2 of 4 routable (50%): only the routable ones')
  t.notOk(b.panic)
  t.same(events, ['on 1/4', 'off 2/4'])

  // Every instance unready: still reachable.
  const all = [new E('a', 1, -1), new E('b', 1, -1), new E('c', 1, -1)]
  const b2 = new Balancer<E>({ random: seeded(3), panicThreshold: 50 })
  b2.set(all)
  t.same([...shares(b2, 2000).keys()].sort(), ['a', 'b', 'c'])
  const off = new Balancer<E>({ random: seeded(3) })
  off.set(all)
  t.equal(off.pick(0), undefined, 'without panic mode nothing is usable')
  const onlyDraining = new Balancer<E>({ panicThreshold: 50 })
  onlyDraining.set([new E('d', 1, 2)])
  t.equal((onlyDraining.pick(0) as E).name, 'd', 'draining ones are still the last resort')
  t.notOk(onlyDraining.panic)
})
