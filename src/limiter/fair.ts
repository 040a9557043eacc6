// Fair queuing across flows, for the limiter's queue of one priority class. A flow is one caller (an mTLS identity,
// a trusted proxy's flow header, or a client address: the inbound lane decides); the queue knows only its key.
//
// Each flow with requests waiting has its own FIFO; the flows with requests waiting form a ring that is served
// round-robin, one request per turn (every request costs one slot, so this is deficit round-robin with equal costs:
// the dispatch of Kubernetes' API Priority and Fairness without its virtual time). A flow exists only while it has a
// request waiting: the memory is bounded by the queue's own bound (DOORMAN_MAX_QUEUE), however many distinct flows
// come and go. Flows are also kept in buckets by how many requests they have waiting, so that the heaviest flow is
// found in O(1) when the queue is full and a request must be shed: it is that flow's newest request, not the
// newcomer's (unless the newcomer's flow is itself the heaviest). Every operation is O(1).
//
// Waiters leave in three ways: dispatched (shift), evicted (evict), or from outside (a timeout, a client gone,
// a drain): the limiter marks them and calls left(); their entries are dropped lazily from the flow's FIFO.

/** What the queue needs of a waiter: its flow, and whether it still waits. */
export interface FlowWaiter {
  readonly flow: string
  readonly waiting: boolean
}

/** A FIFO with O(1) push/shift and lazy removal of entries that no longer wait. */
export class Fifo<W extends FlowWaiter> {
  #items: Array<W | undefined> = []
  #head = 0
  push (w: W): void { this.#items.push(w) }
  /** The oldest waiter still waiting, dropping the others on the way. */
  peek (): W | undefined {
    while (this.#head < this.#items.length) {
      const w = this.#items[this.#head] as W
      if (w.waiting) return w
      this.#items[this.#head++] = undefined
    }
    this.#compact()
    return undefined
  }

  shift (): W | undefined {
    const w = this.peek()
    if (w !== undefined) { this.#items[this.#head++] = undefined; this.#compact() }
    return w
  }

  /** The victim when the queue is full: the newest waiter. */
  evict (): W | undefined { return this.popNewest() }
  /** A waiter stopped waiting from outside: nothing to do, its entry is dropped lazily. */
  left (_w: W): void {}

  /** The newest waiter still waiting (for eviction), dropping the others from the tail. */
  popNewest (): W | undefined {
    while (this.#items.length > this.#head) {
      const w = this.#items.pop() as W
      if (w.waiting) return w
    }
    this.#compact()
    return undefined
  }

  #compact (): void {
    if (this.#head === this.#items.length) { this.#items = []; this.#head = 0 } else if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head); this.#head = 0
    }
  }
}

class Flow<W extends FlowWaiter> {
  readonly items = new Fifo<W>()
  /** Requests of this flow waiting now. */
  count = 0
  prev: Flow<W> = this
  next: Flow<W> = this
  constructor (readonly key: string) {}
}

/** One flow's share of the queue, as /state shows it. */
export interface FlowCount { flow: string, queued: number }

export class FairQueue<W extends FlowWaiter> {
  readonly #flows = new Map<string, Flow<W>>()
  /** The flow served next; null when no flow has a request waiting. */
  #cursor: Flow<W> | null = null
  /** #buckets[n]: the flows with n requests waiting (n >= 1). */
  readonly #buckets: Array<Set<Flow<W>> | undefined> = []
  #max = 0

  /** Flows with a request waiting. */
  get flows (): number { return this.#flows.size }
  /** Requests the heaviest flow has waiting (0: none waits). */
  get heaviestCount (): number { return this.#max }

  /** Requests `flow` has waiting. */
  countOf (flow: string): number { return this.#flows.get(flow)?.count ?? 0 }

  push (w: W): void {
    let f = this.#flows.get(w.flow)
    if (f === undefined) {
      f = new Flow<W>(w.flow)
      this.#flows.set(w.flow, f)
      const c = this.#cursor
      // A new flow joins at the end of the round: just before the flow served next.
      if (c === null) this.#cursor = f
      else { f.prev = c.prev; f.next = c; c.prev.next = f; c.prev = f }
    }
    f.items.push(w)
    this.#move(f, f.count + 1)
  }

  /** The waiter served next: the oldest of the flow whose turn it is. */
  peek (): W | undefined {
    return this.#cursor?.items.peek()
  }

  /** Takes the waiter served next; the turn passes to the next flow. */
  shift (): W | undefined {
    const f = this.#cursor
    if (f === null) return undefined
    const w = f.items.shift()
    if (w === undefined) return undefined
    this.#cursor = f.next
    this.#dec(f)
    return w
  }

  /** The victim when the queue is full: the newest waiter of the heaviest flow, taken out of the queue. */
  evict (): W | undefined {
    const f = this.heaviest()
    if (f === undefined) return undefined
    const w = f.items.popNewest()
    if (w !== undefined) this.#dec(f)
    return w
  }

  /** The key of the flow with the most requests waiting (any one of them on a tie). */
  heaviestFlow (): string | undefined { return this.heaviest()?.key }

  heaviest (): Flow<W> | undefined {
    if (this.#max === 0) return undefined
    return (this.#buckets[this.#max] as Set<Flow<W>>).values().next().value
  }

  /** A waiter stopped waiting from outside (timeout, cancellation, drain): its flow's count goes down. */
  left (w: W): void {
    const f = this.#flows.get(w.flow)
    if (f !== undefined) this.#dec(f)
  }

  /** The `n` flows with the most requests waiting, heaviest first. O(n + the heaviest count). */
  top (n: number): FlowCount[] {
    const out: FlowCount[] = []
    for (let c = this.#max; c > 0 && out.length < n; c--) {
      const b = this.#buckets[c]
      if (b === undefined) continue
      for (const f of b) {
        out.push({ flow: f.key, queued: c })
        if (out.length === n) break
      }
    }
    return out
  }

  #dec (f: Flow<W>): void {
    this.#move(f, f.count - 1)
    if (f.count > 0) return
    // No request of this flow waits: it leaves the ring and the map (its FIFO holds only entries that left).
    this.#flows.delete(f.key)
    if (f.next === f) this.#cursor = null
    else {
      f.prev.next = f.next
      f.next.prev = f.prev
      if (this.#cursor === f) this.#cursor = f.next
    }
    f.prev = f
    f.next = f
  }

  #move (f: Flow<W>, to: number): void {
    const from = f.count
    if (from > 0) {
      const b = this.#buckets[from] as Set<Flow<W>>
      b.delete(f)
      if (b.size === 0 && this.#max === from) this.#max = to > from ? to : from - 1
    }
    f.count = to
    if (to > 0) {
      let b = this.#buckets[to]
      if (b === undefined) { b = new Set(); this.#buckets[to] = b }
      b.add(f)
      if (to > this.#max) this.#max = to
    }
  }
}

/**
 * Sheds counted by flow in a fixed number of counters (the Space-Saving algorithm of Metwally, Agrawal and El Abbadi):
 * a flow not counted yet takes over the smallest counter, plus one, so a flow shed often is always among the counted
 * ones however many flows are shed once. Only the overload path touches it (O(capacity) for a new flow there).
 */
export class ShedTally {
  readonly #counts = new Map<string, number>()
  constructor (readonly capacity: number) {}

  add (flow: string): void {
    const m = this.#counts
    const c = m.get(flow)
    if (c !== undefined) { m.set(flow, c + 1); return }
    if (m.size < this.capacity) { m.set(flow, 1); return }
    let minFlow = ''
    let min = Infinity
    for (const [f, n] of m) if (n < min) { min = n; minFlow = f }
    m.delete(minFlow)
    m.set(flow, min + 1)
  }

  /** The `n` most-shed flows, most first (counts may overestimate a flow that took another's counter). */
  top (n: number): Array<{ flow: string, count: number }> {
    return [...this.#counts].sort((a, b) => b[1] - a[1]).slice(0, n).map(([flow, count]) => ({ flow, count }))
  }
}
