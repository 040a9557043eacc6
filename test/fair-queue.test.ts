// Fair queuing across flows, on its own and inside the Limiter, in simulated time: round-robin dispatch across flows,
// the heaviest flow's newest request shed when the queue is full (never a light flow's), `flow-share` as the reason,
// priority classes above fairness, timeouts and cancellations keeping the counts right, memory bounded by the queue
// however many flows pass, and the bounded tally of the most-shed flows.
import t from 'tap'
import { FairQueue, ShedTally, type FlowWaiter } from '../src/limiter/fair.js'
import { Limiter, CRITICAL, NORMAL, LOW, type LimitAlgorithm, type Priority, type ShedReason } from '../src/limiter/index.js'
import { SimClock } from '../bench/adaptive-model.js'

class W implements FlowWaiter {
  waiting = true
  constructor (readonly flow: string, readonly name: string) {}
}

t.test('FairQueue: serves flows round-robin, a new flow joins at the end of the round', async (t) => {
  const q = new FairQueue<W>()
  for (let i = 0; i < 4; i++) q.push(new W('a', `a${i}`))
  q.push(new W('b', 'b0'))
  q.push(new W('b', 'b1'))
  const order: string[] = []
  order.push((q.shift() as W).name) // a0
  q.push(new W('c', 'c0'))
  for (let w = q.shift(); w !== undefined; w = q.shift()) order.push(w.name)
  t.same(order, ['a0', 'b0', 'a1', 'c0', 'b1', 'a2', 'a3'], 'c waits for the flows already in the round')
  t.equal(q.flows, 0, 'no flow is kept once its requests are gone')
  t.equal(q.heaviestCount, 0)
})

t.test('FairQueue: evicts the newest request of the heaviest flow; left() keeps the counts right', async (t) => {
  const q = new FairQueue<W>()
  const ws: W[] = []
  for (let i = 0; i < 5; i++) { const w = new W('heavy', `h${i}`); ws.push(w); q.push(w) }
  q.push(new W('light', 'l0'))
  t.equal(q.heaviestFlow(), 'heavy')
  t.equal((q.evict() as W).name, 'h4', 'the newest of the heaviest flow')
  t.equal(q.countOf('heavy'), 4)
  // Two of heavy's leave from outside (a timeout, a client gone).
  for (const w of [ws[0], ws[1]]) { w.waiting = false; q.left(w) }
  t.equal(q.countOf('heavy'), 2)
  t.same(q.top(5), [{ flow: 'heavy', queued: 2 }, { flow: 'light', queued: 1 }])
  t.equal((q.evict() as W).name, 'h3')
  // Now tied at one each: either may be the heaviest, and both are served in turn.
  const rest: string[] = []
  for (let w = q.shift(); w !== undefined; w = q.shift()) rest.push(w.name)
  t.same(rest.sort(), ['h2', 'l0'])
  t.equal(q.flows, 0)
})

t.test('FairQueue: a flow whose every request left is dropped from the ring', async (t) => {
  const q = new FairQueue<W>()
  const a = new W('a', 'a0')
  q.push(a)
  q.push(new W('b', 'b0'))
  q.push(new W('c', 'c0'))
  a.waiting = false
  q.left(a)
  t.equal(q.flows, 2)
  t.same([(q.shift() as W).name, (q.shift() as W).name], ['b0', 'c0'])
  t.equal(q.shift(), undefined)
})

t.test('FairQueue: memory follows the requests waiting, not the flows seen', async (t) => {
  const q = new FairQueue<W>()
  // 100,000 distinct flows pass through a queue that never holds more than 100 requests.
  let most = 0
  for (let i = 0; i < 100_000; i++) {
    q.push(new W(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, String(i)))
    most = Math.max(most, q.flows)
    if (i >= 99) q.shift()
  }
  t.equal(most, 100, 'never more flows kept than requests waiting')
  t.equal(q.flows, 99)
  t.equal(q.heaviestCount, 1)
})

t.test('ShedTally: bounded, and the flow shed most is counted whatever else is shed once', async (t) => {
  const tally = new ShedTally(8)
  for (let i = 0; i < 1000; i++) {
    tally.add('noisy')
    tally.add(`once-${i}`)
  }
  const top = tally.top(3)
  t.equal(top[0].flow, 'noisy')
  t.ok(top[0].count >= 1000)
  t.equal(tally.top(100).length, 8, 'never more than its capacity')
})

/** A fair limiter on a simulated clock; `ask` logs what happens to each request by name. */
function setup (opts: { limit?: number, maxQueue?: number, queueTimeout?: number, criticalReserve?: number, fairness?: boolean } = {}): { clock: SimClock, limiter: Limiter, ask: (name: string, flow: string, p?: Priority) => void, log: string[] } {
  const clock = new SimClock()
  const limiter = new Limiter({ limit: opts.limit ?? 1, maxQueue: opts.maxQueue ?? 4, queueTimeout: opts.queueTimeout ?? 1000, criticalReserve: opts.criticalReserve, fairness: opts.fairness ?? true, timers: clock })
  const log: string[] = []
  const ask = (name: string, flow: string, p: Priority = NORMAL): void => {
    const r = limiter.acquire(p, (reason: ShedReason | null) => { log.push(`${name}:${reason ?? 'granted'}`) }, flow)
    if (r === true) log.push(`${name}:now`)
    else if (typeof r === 'string') log.push(`${name}:${r}`)
  }
  return { clock, limiter, ask, log }
}

t.test('Limiter with fairness: while slots are free nothing changes', async (t) => {
  const { limiter, ask, log } = setup({ limit: 3 })
  ask('a0', 'a')
  ask('a1', 'a')
  ask('b0', 'b')
  t.same(log, ['a0:now', 'a1:now', 'b0:now'])
  t.equal(limiter.queued, 0)
})

t.test('Limiter with fairness: a light flow is served between a heavy flow\'s requests', async (t) => {
  const { limiter, ask, log } = setup({ limit: 1, maxQueue: 10 })
  for (let i = 0; i < 6; i++) ask(`a${i}`, 'a')
  ask('b0', 'b')
  ask('b1', 'b')
  log.length = 0
  for (let i = 0; i < 7; i++) limiter.release()
  t.same(log, ['a1:granted', 'b0:granted', 'a2:granted', 'b1:granted', 'a3:granted', 'a4:granted', 'a5:granted'])
})

t.test('Limiter with fairness: a full queue sheds the heavy flow\'s newest, never the light newcomer', async (t) => {
  const { limiter, ask, log } = setup({ limit: 1, maxQueue: 4 })
  for (let i = 0; i < 5; i++) ask(`a${i}`, 'a') // a0 holds the slot, a1..a4 fill the queue
  ask('b0', 'b')
  t.same(log, ['a0:now', 'a4:flow-share'], 'the heavy flow gives up its newest; the light newcomer waits')
  ask('a5', 'a')
  t.equal(log.at(-1), 'a5:flow-share', 'the heavy flow\'s newcomer is shed: it is over its share')
  ask('c0', 'c')
  t.equal(log.at(-1), 'a3:flow-share', 'a third flow also takes one of the heavy flow\'s slots')
  t.equal(limiter.stats.shed['flow-share'], 3)
  t.equal(limiter.stats.shed['queue-full'], 0)
  t.same(limiter.topFlows(10).map((f) => [f.flow, f.queued, f.shed]), [['a', 2, 3], ['b', 1, 0], ['c', 1, 0]], 'the heaviest flows, with their sheds')
})

t.test('Limiter with fairness: one flow alone in a full queue is shed queue-full, as without fairness', async (t) => {
  const { limiter, ask, log } = setup({ limit: 1, maxQueue: 2 })
  for (let i = 0; i < 4; i++) ask(`a${i}`, 'a')
  t.same(log, ['a0:now', 'a3:queue-full'])
  t.equal(limiter.stats.shed['queue-full'], 1)
})

t.test('Limiter without fairness: the light newcomer is shed when the heavy flow fills the queue', async (t) => {
  const { ask, log } = setup({ limit: 1, maxQueue: 4, fairness: false })
  for (let i = 0; i < 5; i++) ask(`a${i}`, 'a')
  ask('b0', 'b')
  t.equal(log.at(-1), 'b0:queue-full')
})

t.test('Limiter with fairness: priority classes stay above fairness', async (t) => {
  const { limiter, ask, log } = setup({ limit: 1, maxQueue: 3 })
  ask('a0', 'a')
  ask('a1', 'a')
  ask('a2', 'a')
  ask('b0', 'b')
  ask('c0', 'c', CRITICAL)
  t.equal(log.at(-1), 'a2:queue-full', 'a critical request displaces the heaviest normal flow\'s newest')
  ask('lo', 'd', LOW)
  t.equal(log.at(-1), 'lo:low-priority', 'low is shed while others wait')
  log.length = 0
  for (let i = 0; i < 4; i++) limiter.release()
  t.same(log, ['c0:granted', 'a1:granted', 'b0:granted'], 'critical first, then fair within the normal class')
})

t.test('Limiter with fairness: timeouts in arrival order across flows; cancellations leave the counts right', async (t) => {
  const { clock, limiter, ask, log } = setup({ limit: 1, maxQueue: 10, queueTimeout: 500 })
  ask('a0', 'a')
  ask('a1', 'a')
  clock.run(100)
  ask('b0', 'b')
  clock.run(200)
  const w = limiter.acquire(NORMAL, () => { log.push('a2:called') }, 'a')
  t.type(w, 'object')
  if (typeof w === 'object') limiter.cancel(w)
  t.equal(limiter.queued, 2)
  t.same(limiter.topFlows(5).map((f) => f.queued), [1, 1], 'the cancelled request no longer counts for its flow')
  clock.run(550)
  t.same(log.slice(1), ['a1:queue-timeout'], 'the oldest times out first')
  clock.run(650)
  t.same(log.slice(1), ['a1:queue-timeout', 'b0:queue-timeout'])
  t.equal(limiter.queued, 0)
  t.ok(limiter.topFlows(5).every((f) => f.queued === 0), 'no flow waits')
  limiter.release()
  t.equal(limiter.inflight, 0)
  ask('b1', 'b')
  t.equal(log.at(-1), 'b1:now', 'the queue is usable afterwards')
})

t.test('Limiter with fairness: shedAll empties every flow', async (t) => {
  const { limiter, ask, log } = setup({ limit: 1, maxQueue: 10 })
  ask('a0', 'a')
  ask('a1', 'a')
  ask('b0', 'b')
  limiter.shedAll('draining-closed')
  t.same(log.slice(1).sort(), ['a1:draining-closed', 'b0:draining-closed'])
  t.equal(limiter.queued, 0)
  t.equal(limiter.topFlows().filter((f) => f.queued > 0).length, 0)
})

t.test('Limiter with fairness: random arrivals, releases, cancellations and timeouts never desynchronise it', async (t) => {
  for (let seed = 1; seed <= 100; seed++) {
    let s = seed
    const rnd = (): number => { s = (s * 1103515245 + 12345) % 2147483648; return s / 2147483648 }
    const clock = new SimClock()
    const limiter = new Limiter({ limit: 3, maxQueue: 6, queueTimeout: 100, fairness: true, timers: clock, criticalReserve: rnd() < 0.5 ? 20 : 0 })
    let held = 0
    const waiters: Array<Exclude<ReturnType<Limiter['acquire']>, true | string>> = []
    for (let i = 0; i < 500; i++) {
      const r = rnd()
      if (r < 0.5) {
        const p: Priority = rnd() < 0.1 ? CRITICAL : rnd() < 0.1 ? LOW : NORMAL
        const x = limiter.acquire(p, (reason) => { if (reason === null) held++ }, `f${Math.floor(rnd() * 4)}`)
        if (x === true) held++
        else if (typeof x === 'object') waiters.push(x)
      } else if (r < 0.75 && held > 0) {
        held--
        limiter.release()
      } else if (r < 0.85 && waiters.length > 0) {
        limiter.cancel(waiters.splice(Math.floor(rnd() * waiters.length), 1)[0])
      } else clock.run(clock.now() + rnd() * 50)
      const byFlows = limiter.topFlows(100).reduce((n, f) => n + f.queued, 0)
      if (byFlows !== limiter.queued || limiter.inflight !== held || (limiter.queued > 0 && limiter.inflight === 0)) {
        t.fail(`seed ${seed}, step ${i}: ${byFlows} queued by flow, ${limiter.queued} queued, ${limiter.inflight} in flight, ${held} held`)
        return
      }
    }
  }
  t.pass('the flows\' counts add up to the queue, and the queue never stalls with free slots')
})

t.test('Limiter with fairness under an adaptive limit: slots the algorithm adds go round-robin across flows', async (t) => {
  // A limit algorithm that raises its limit by one on every sample, as an adaptive limit does while the app keeps up.
  class Rising implements LimitAlgorithm {
    limit = 1
    update (): void { this.limit++ }
  }
  const clock = new SimClock()
  const limiter = new Limiter({ algorithm: new Rising(), maxQueue: 10, queueTimeout: 1000, fairness: true, timers: clock })
  const log: string[] = []
  const ask = (name: string, flow: string): void => {
    const r = limiter.acquire(NORMAL, (reason) => { log.push(`${name}:${reason ?? 'granted'}`) }, flow)
    if (r === true) log.push(`${name}:now`)
  }
  ask('a0', 'a')
  for (let i = 1; i <= 4; i++) ask(`a${i}`, 'a')
  ask('b0', 'b')
  ask('b1', 'b')
  // One release with a latency sample: the limit goes from 1 to 2, so two waiters get slots at once.
  limiter.release(50, false, 1)
  t.same(log, ['a0:now', 'a1:granted', 'b0:granted'], 'the slot freed and the one added go to both flows in turn')
  limiter.release(50, false, 2)
  t.same(log.slice(3), ['a2:granted', 'b1:granted'])
})
