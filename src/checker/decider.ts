// The Decider: counts each instance's consecutive results and decides. `failures` in a row eject (mode `full` only),
// `successes` in a row recover an ejected instance. Results are handled on N serial queues: a failure goes to the
// queue of its service+cluster, so ejection decisions for one cluster never run side by side (each reads the states
// the previous one left, as the threshold needs); a success can't eject anything, so successes are spread over all
// queues and a big cluster's healthy results don't pile up behind one queue (the seed's second optimisation).
// Each queue's worker takes what has queued up as one batch, and a cluster's ejections in a batch go to the store in
// one atomic call: a cluster of 1,000 with 100 failing costs a few calls a round, not 100 serial re-reads (the seed's
// 10-second decision queue). The Redis coordinator's budget is atomic on its own, which is what keeps several
// replicas within the threshold; the queues keep one replica's decisions orderly and its load balanced.
import type { Logger } from '../core/log.js'
import type { Mode } from './policy.js'
import type { Performer } from './performer.js'
import { targetKey, type ProbeResult, type Target } from './prober.js'

export interface Streak {
  /** Consecutive failures (0 after a success). */
  failures: number
  /** Consecutive successes (0 after a failure). */
  successes: number
}

interface Item { result: ProbeResult, mode: Mode }

/** FNV-1a: a cheap, stable hash to pick a cluster's queue. */
export function fnv1a (s: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return h >>> 0
}

/**
 * One serial queue: its worker takes everything queued so far as one batch, decides it, and only then takes the
 * next batch. Results that arrive while a batch is being acted on wait for the next one.
 */
class SerialQueue {
  #items: Item[] = []
  #inBatch = 0
  #running = false
  #idle: Array<() => void> = []
  readonly #handle: (batch: Item[]) => Promise<void>
  readonly #log: Logger

  constructor (handle: (batch: Item[]) => Promise<void>, log: Logger) {
    this.#handle = handle
    this.#log = log
  }

  get length (): number { return this.#items.length + this.#inBatch }

  push (item: Item): void {
    this.#items.push(item)
    if (this.#running) return
    // Start on the next turn of the loop, so results that arrive together are decided together.
    this.#running = true
    setImmediate(() => { void this.#drain() })
  }

  async #drain (): Promise<void> {
    while (this.#items.length > 0) {
      const batch = this.#items
      this.#items = []
      this.#inBatch = batch.length
      try { await this.#handle(batch) } catch (err) { this.#log.error({ err }, 'decision failed') }
      this.#inBatch = 0
    }
    this.#running = false
    const waiters = this.#idle
    this.#idle = []
    for (const w of waiters) w()
  }

  async idle (): Promise<void> {
    if (!this.#running && this.#items.length === 0) return
    await new Promise<void>((resolve) => { this.#idle.push(resolve) })
  }
}

/** Most ejections asked for in one store call (one script run blocks Redis for its length). */
const EJECT_BATCH = 500

export interface DeciderOptions {
  /** DOORMAN_CHECK_FAILURES: consecutive failures that eject. */
  failures: number
  /** DOORMAN_CHECK_SUCCESSES: consecutive successes that recover. */
  successes: number
  /** How many serial decision queues (default 8). */
  queues?: number
  performer: Performer
  log: Logger
}

export class Decider {
  readonly #o: DeciderOptions
  readonly #queues: SerialQueue[]
  readonly #streaks = new Map<string, Streak>()
  /** Clusters found at their budget this round: further failures there are blocked without asking the store again. */
  readonly #full = new Set<string>()
  #spread = 0

  constructor (opts: DeciderOptions) {
    this.#o = opts
    const n = Math.max(1, opts.queues ?? 8)
    this.#queues = Array.from({ length: n }, () => new SerialQueue(async (batch) => { await this.#decide(batch) }, opts.log))
  }

  static key (service: string, id: string): string { return targetKey(service, id) }

  /** The queue a cluster's failures go to. */
  queueOf (service: string, cluster: string): number {
    return fnv1a(`${service}\0${cluster}`) % this.#queues.length
  }

  /** Routes a probe result to its queue, where it is counted and decided in order. */
  observe (result: ProbeResult, mode: Mode): void {
    const t = result.target
    const q = result.ok ? this.#spread++ % this.#queues.length : this.queueOf(t.service, t.cluster)
    this.#queues[q].push({ result, mode })
  }

  /** Resolves once every queued result has been decided and acted on. */
  async idle (): Promise<void> {
    for (;;) {
      await Promise.all(this.#queues.map(async (q) => { await q.idle() }))
      if (this.#queues.every((q) => q.length === 0)) return
    }
  }

  /**
   * A new round: clusters found full last round are asked again (an instance may have recovered or left since).
   * Within a round a cluster's failures are decided batch after batch on its queue, so once one batch finds the
   * cluster at its budget the later ones would too; they are counted as blocked at no cost, which keeps a big failing
   * cluster's queue short (the seed's 1,000-instance cluster).
   */
  newRound (): void { this.#full.clear() }

  /** Queued results per queue (for /state). */
  get depths (): number[] { return this.#queues.map((q) => q.length) }

  streak (service: string, id: string): Streak | undefined {
    return this.#streaks.get(Decider.key(service, id))
  }

  /** Forgets the streaks of instances not in `keys` (they left the registry or this replica's shard). */
  retain (keys: ReadonlySet<string>): void {
    for (const k of this.#streaks.keys()) if (!keys.has(k)) this.#streaks.delete(k)
    this.#o.performer.retain(keys)
  }

  /**
   * Counts a batch of results in arrival order, then acts: recoveries side by side, and each cluster's ejections
   * together in one atomic store call (a batch holds one queue's results, so a cluster's failures are all here).
   */
  async #decide (batch: Item[]): Promise<void> {
    const performer = this.#o.performer
    const recover: Array<{ target: Target, successes: number }> = []
    const eject = new Map<string, Array<{ target: Target, failures: number }>>()
    for (const { result, mode } of batch) {
      const t = result.target
      const key = Decider.key(t.service, t.id)
      let s = this.#streaks.get(key)
      if (s === undefined) { s = { failures: 0, successes: 0 }; this.#streaks.set(key, s) }
      if (result.ok) {
        s.failures = 0
        s.successes++
        performer.healthy(t)
        if (t.ejected && s.successes >= this.#o.successes && mode !== 'off') recover.push({ target: t, successes: s.successes })
        continue
      }
      s.successes = 0
      s.failures++
      if (t.ejected || s.failures < this.#o.failures) continue
      if (mode !== 'full') { performer.block(t, 'mode'); continue }
      const cluster = `${t.service}\0${t.cluster}`
      if (this.#full.has(cluster)) { performer.block(t, 'threshold'); continue }
      let list = eject.get(cluster)
      if (list === undefined) { list = []; eject.set(cluster, list) }
      list.push({ target: t, failures: s.failures })
    }
    await Promise.all(recover.map(async ({ target: t, successes }) => {
      if (await performer.recover(t, successes)) this.#full.delete(`${t.service}\0${t.cluster}`)
    }))
    for (const [cluster, list] of eject) {
      for (let i = 0; i < list.length; i += EJECT_BATCH) {
        if (this.#full.has(cluster)) { for (const x of list.slice(i)) performer.block(x.target, 'threshold'); break }
        const results = await performer.eject(list.slice(i, i + EJECT_BATCH))
        if (results?.some((r) => r.outcome === 'threshold') === true) this.#full.add(cluster)
      }
    }
  }
}
