// The Limiter on its own, in simulated time: FIFO queueing with a timeout, priority classes (critical reserve and
// dequeue order, low-priority shedding and eviction), warmup scaling, and what it feeds the limit algorithm.
import t from 'tap'
import { Limiter, CRITICAL, NORMAL, LOW, classifier, type LimitAlgorithm, type Priority, type ShedReason, Waiter } from '../src/limiter/index.js'
import { GradientLimit } from '../src/limiter/gradient.js'
import { SimClock } from '../bench/adaptive-model.js'

/** A limiter on a simulated clock, and a log of what happened to each request by name. */
function setup (opts: { limit?: number, maxQueue?: number, queueTimeout?: number, criticalReserve?: number, algorithm?: LimitAlgorithm } = {}): { clock: SimClock, limiter: Limiter, ask: (name: string, p: Priority) => void, log: string[], held: string[] } {
  const clock = new SimClock()
  const limiter = new Limiter({ limit: opts.limit ?? 2, maxQueue: opts.maxQueue ?? 10, queueTimeout: opts.queueTimeout ?? 1000, criticalReserve: opts.criticalReserve, algorithm: opts.algorithm, timers: clock })
  const log: string[] = []
  const held: string[] = []
  const ask = (name: string, p: Priority): void => {
    const r = limiter.acquire(p, (reason: ShedReason | null) => {
      if (reason === null) { held.push(name); log.push(`${name}:granted`) } else log.push(`${name}:${reason}`)
    })
    if (r === true) { held.push(name); log.push(`${name}:now`) } else if (typeof r === 'string') log.push(`${name}:${r}`)
  }
  return { clock, limiter, ask, log, held }
}

t.test('grants up to the limit, then queues FIFO, then sheds when the queue is full', async (t) => {
  const { limiter, ask, log } = setup({ limit: 2, maxQueue: 2 })
  for (const n of ['a', 'b', 'c', 'd', 'e']) ask(n, NORMAL)
  t.same(log, ['a:now', 'b:now', 'e:queue-full'])
  t.equal(limiter.inflight, 2)
  t.equal(limiter.queued, 2)
  limiter.release()
  limiter.release()
  t.same(log.slice(3), ['c:granted', 'd:granted'], 'the oldest waiter goes first')
  t.equal(limiter.stats.shed['queue-full'], 1)
})

t.test('a waiter past the queue timeout is shed; a cancelled one is forgotten', async (t) => {
  const { clock, limiter, ask, log } = setup({ limit: 1, queueTimeout: 500 })
  ask('a', NORMAL)
  ask('b', NORMAL)
  let cancelled: Waiter | null = null
  const r = limiter.acquire(NORMAL, () => { log.push('c:called') })
  if (r instanceof Waiter) cancelled = r
  t.ok(cancelled !== null, 'c queued')
  limiter.cancel(cancelled as Waiter)
  t.equal(limiter.queued, 1)
  clock.run(400)
  t.same(log, ['a:now'])
  clock.run(600)
  t.same(log, ['a:now', 'b:queue-timeout'], 'b timed out; c, cancelled, never called back')
  limiter.release()
  t.equal(limiter.inflight, 0)
})

t.test('critical requests go first and may use the reserve; low ones are shed first', async (t) => {
  // A limit of 10 with 20% reserved: normal and low requests may hold 8 slots, critical ones all 10.
  const { limiter, ask, log } = setup({ limit: 10, criticalReserve: 20, maxQueue: 4 })
  for (let i = 0; i < 8; i++) ask(`n${i}`, NORMAL)
  ask('n8', NORMAL)
  t.equal(limiter.inflight, 8, 'normal requests stop at the non-reserved share')
  t.equal(limiter.queued, 1, 'n8 waits')
  ask('c0', CRITICAL)
  ask('c1', CRITICAL)
  t.same(log.slice(-2), ['c0:now', 'c1:now'], 'critical requests use the reserve at once')
  ask('low0', LOW)
  t.same(log.slice(-1), ['low0:low-priority'], 'a low request arriving while normal ones wait is shed at once')
  ask('c2', CRITICAL)
  limiter.release()
  t.same(log.slice(-1), ['c2:granted'], 'a freed slot goes to the waiting critical request before the older normal one')
  limiter.release()
  t.equal(limiter.inflight, 9, 'the reserve is kept for critical requests...')
  t.equal(limiter.queued, 1, '...so n8 still waits')
  limiter.release()
  t.equal(limiter.queued, 1, 'at the non-reserved share, n8 still waits')
  limiter.release()
  t.same(log.slice(-1), ['n8:granted'], 'below it, n8 goes')
})

t.test('the reserve holds normal requests back even with free slots', async (t) => {
  const { limiter, ask, log } = setup({ limit: 10, criticalReserve: 20 })
  for (let i = 0; i < 9; i++) ask(`n${i}`, NORMAL)
  t.equal(limiter.inflight, 8)
  t.equal(limiter.queued, 1)
  ask('c', CRITICAL)
  t.equal(log[log.length - 1], 'c:now', 'a critical request finds a free slot in the reserve')
  limiter.release()
  limiter.release()
  t.equal(limiter.inflight, 8, 'a normal request takes a freed slot only below the non-reserved share')
  t.equal(limiter.queued, 0)
})

t.test('when the queue is full, low waiters are evicted first; a critical request may displace a normal one', async (t) => {
  const { limiter, ask, log } = setup({ limit: 1, maxQueue: 3 })
  ask('n0', NORMAL)
  ask('l1', LOW)
  ask('l2', LOW)
  ask('n1', NORMAL)
  t.equal(limiter.queued, 3)
  ask('n2', NORMAL)
  t.same(log.slice(-1), ['l2:low-priority'], 'the newest low waiter made room for a normal request')
  ask('n3', NORMAL)
  t.same(log.slice(-1), ['l1:low-priority'])
  ask('n4', NORMAL)
  t.same(log.slice(-1), ['n4:queue-full'], 'with no low waiter left, a normal request is shed')
  ask('c', CRITICAL)
  t.same(log.slice(-1), ['n3:queue-full'], 'a critical request displaces the newest normal waiter')
  limiter.release()
  t.same(log.slice(-1), ['c:granted'], 'and is served first')
  t.equal(limiter.stats.shed['low-priority'], 2)
})

t.test('shedAll sheds every waiter; scaling the limit grants waiters as it rises', async (t) => {
  const { limiter, ask, log } = setup({ limit: 10 })
  limiter.setScale(0.2)
  t.equal(limiter.limit, 2)
  t.equal(limiter.baseLimit, 10)
  for (const n of ['a', 'b', 'c', 'd', 'e']) ask(n, NORMAL)
  t.equal(limiter.queued, 3)
  limiter.setScale(0.4)
  t.same(log.slice(-2), ['c:granted', 'd:granted'], 'a rising ramp lets waiters in')
  limiter.setScale(0)
  t.equal(limiter.limit, 1, 'never below one')
  limiter.shedAll('draining-closed')
  t.same(log.slice(-1), ['e:draining-closed'])
  t.equal(limiter.queued, 0)
  t.ok(limiter.stats.limitChanges >= 3, 'limit changes are counted')
})

t.test('what the warmup ramp sheds says warmup; the same pressure without the ramp is queue-full', async (t) => {
  // A limit of 10 ramped to 2: the base limit has room for everything the ramp turns away.
  const { clock, limiter, ask, log } = setup({ limit: 10, maxQueue: 2, queueTimeout: 500 })
  limiter.setScale(0.2)
  for (const n of ['a', 'b', 'c', 'd', 'e']) ask(n, NORMAL)
  t.same(log, ['a:now', 'b:now', 'e:warmup'], 'a full queue under the ramp sheds warmup')
  clock.run(600)
  t.same(log.slice(3), ['c:warmup', 'd:warmup'], 'so does a queue timeout under the ramp')
  t.equal(limiter.stats.shed.warmup, 3)
  t.equal(limiter.stats.shed['queue-full'], 0)
  t.equal(limiter.stats.shed['queue-timeout'], 0)

  // The ramp lifted: 10 in flight and 2 waiting, the next one is plain overload.
  limiter.setScale(1)
  for (let i = 0; i < 10; i++) ask(`f${i}`, NORMAL)
  t.equal(limiter.inflight, 10)
  t.equal(limiter.queued, 2)
  ask('g', NORMAL)
  t.same(log.slice(-1), ['g:queue-full'])
  t.equal(limiter.stats.shed.warmup, 3, 'no more warmup sheds')
})

t.test('under a ramp, a shed the base limit would also make keeps its reason (the class cap at the base limit)', async (t) => {
  // Limit 10, 20% reserved: normal requests may hold 8 at the base limit. Ramped to 90% the limit in force is 9,
  // and normal requests may hold 9 - ceil(1.8) = 7.
  const { limiter, ask, log } = setup({ limit: 10, criticalReserve: 20, maxQueue: 1 })
  limiter.setScale(0.9)
  t.equal(limiter.limit, 9)
  for (let i = 0; i < 7; i++) ask(`n${i}`, NORMAL)
  ask('w', NORMAL)
  t.equal(limiter.inflight, 7)
  t.equal(limiter.queued, 1, 'w waits')
  ask('x', NORMAL)
  t.same(log.slice(-1), ['x:warmup'], '7 in flight: the base limit had an 8th normal slot')
  ask('c0', CRITICAL)
  ask('c1', CRITICAL)
  t.equal(limiter.inflight, 9, 'critical requests use the reserve')
  ask('y', NORMAL)
  t.same(log.slice(-1), ['y:queue-full'], '9 in flight: past the 8 normal slots of the base limit, this is load')
  ask('c2', CRITICAL)
  t.same(log.slice(-1), ['w:queue-full'], 'the normal waiter a critical request displaces: load too')
})

t.test('release feeds the algorithm the app\'s latency, the drop signal, and in-flight in unscaled units', async (t) => {
  const seen: Array<[number, number, boolean]> = []
  const algorithm: LimitAlgorithm = { limit: 10, update (_now, rtt, inflight, dropped) { seen.push([rtt, inflight, dropped]) } }
  const { limiter, ask } = setup({ algorithm })
  limiter.setScale(0.5)
  ask('a', NORMAL)
  ask('b', NORMAL)
  limiter.release(12, false, 2)
  limiter.release(-1, true, 1)
  limiter.release(-1, false)
  t.same(seen, [[12, 4, false], [-1, 2, true]], 'a client abort (no latency, no drop) is not a sample; the ramp at 50% doubles in-flight')
})

t.test('an adaptive limit behind the limiter backs off on timeouts', async (t) => {
  const clock = new SimClock()
  const algorithm = new GradientLimit({ min: 4, max: 100, initial: 50 })
  const limiter = new Limiter({ algorithm, maxQueue: 10, queueTimeout: 1000, timers: clock })
  // Baseline: 100 quick answers at the floor.
  for (let i = 0; i < 100; i++) { clock.run(i * 10 + 10); limiter.acquire(NORMAL, () => {}); limiter.release(10, false, 1) }
  t.equal(limiter.limit, 50, 'the baseline measured, the limit is back to where it started')
  // Then only timeouts: no latency sample, a drop each.
  let at = 2000
  // Each 500 ms window of timeouts backs off by 0.9: 10 s of them take 50 to the floor's neighbourhood.
  for (let i = 0; i < 1000; i++) { at += 10; clock.run(at); limiter.acquire(NORMAL, () => {}); limiter.release(-1, true, 40) }
  t.ok(limiter.limit < 10, `the limit came down (${limiter.limit})`)
  t.ok(limiter.limit >= 4, 'not below the floor')
})

t.test('classifier sorts paths into priority classes', async (t) => {
  const c = classifier(['/checkout/*', '/pay'], ['/reports/*', '*.csv'])
  t.equal(c('/checkout/cart?x=1'), CRITICAL)
  t.equal(c('/pay'), CRITICAL)
  t.equal(c('/pay/later'), NORMAL)
  t.equal(c('/reports/daily'), LOW)
  t.equal(c('/export/all.csv?download=1'), LOW)
  t.equal(c('/'), NORMAL)
  t.equal(classifier([], [])('/checkout/x'), NORMAL)
})

t.test('the time each queued request waited is reported when it is granted or shed', async (t) => {
  const clock = new SimClock()
  const waits: number[] = []
  const limiter = new Limiter({ limit: 1, maxQueue: 10, queueTimeout: 1000, timers: clock, onQueueWait: (ms) => { waits.push(Math.round(ms)) } })
  t.equal(limiter.acquire(NORMAL, () => {}), true)
  limiter.acquire(NORMAL, () => {})
  limiter.acquire(NORMAL, () => {})
  t.same(waits, [], 'nothing reported for a request that never queued, nor while waiting')
  clock.run(300)
  limiter.release()
  t.same(waits, [300], 'granted after 300 ms')
  clock.run(2300)
  t.equal(waits.length, 2)
  t.ok(waits[1] >= 1000 && waits[1] <= 1001, `the other shed at the queue timeout, ${waits[1]} ms after it queued`)
})
