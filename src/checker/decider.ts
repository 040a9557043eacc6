// The Decider: counts each instance's consecutive results and decides. `failures` in a row eject (mode `full` only),
// `successes` in a row recover an ejected instance. Results are handled on N serial queues: a failure goes to the
// queue of its service+cluster, so ejection decisions for one cluster never run side by side (each reads the states
// the previous one left, as the threshold needs); a success can't eject anything, so successes are spread over all
// queues and a big cluster's healthy results don't pile up behind one queue (the seed's second optimisation).
// The Redis coordinator's budget is atomic on its own, which is what keeps several replicas within the threshold;
// the queues keep one replica's decisions orderly and its load balanced.
import type { Logger } from '../core/log.js'
import type { Mode } from './policy.js'
import type { Performer } from './performer.js'
import type { ProbeResult } from './prober.js'

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

class SerialQueue {
  readonly #items: Item[] = []
  #head = 0
  #running = false
  #idle: Array<() => void> = []
  readonly #handle: (item: Item) => Promise<void>
  readonly #log: Logger

  constructor (handle: (item: Item) => Promise<void>, log: Logger) {
    this.#handle = handle
    this.#log = log
  }

  get length (): number { return this.#items.length - this.#head + (this.#running ? 1 : 0) }

  push (item: Item): void {
    this.#items.push(item)
    if (!this.#running) void this.#drain()
  }

  async #drain (): Promise<void> {
    this.#running = true
    while (this.#head < this.#items.length) {
      const item = this.#items[this.#head]
      this.#head++
      try { await this.#handle(item) } catch (err) { this.#log.error({ err }, 'decision failed') }
    }
    this.#items.length = 0
    this.#head = 0
    this.#running = false
    const waiters = this.#idle
    this.#idle = []
    for (const w of waiters) w()
  }

  async idle (): Promise<void> {
    if (!this.#running && this.#head >= this.#items.length) return
    await new Promise<void>((resolve) => { this.#idle.push(resolve) })
  }
}

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
  #spread = 0

  constructor (opts: DeciderOptions) {
    this.#o = opts
    const n = Math.max(1, opts.queues ?? 8)
    this.#queues = Array.from({ length: n }, () => new SerialQueue(async (item) => { await this.#decide(item) }, opts.log))
  }

  static key (service: string, id: string): string { return `${service}\0${id}` }

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

  /** Queued results per queue (for /state). */
  get depths (): number[] { return this.#queues.map((q) => q.length) }

  streak (service: string, id: string): Streak | undefined {
    return this.#streaks.get(Decider.key(service, id))
  }

  /** Forgets the streaks of instances not in `keys` (they left the registry or this replica's shard). */
  retain (keys: ReadonlySet<string>): void {
    for (const k of this.#streaks.keys()) if (!keys.has(k)) this.#streaks.delete(k)
  }

  async #decide ({ result, mode }: Item): Promise<void> {
    const t = result.target
    const key = Decider.key(t.service, t.id)
    let s = this.#streaks.get(key)
    if (s === undefined) { s = { failures: 0, successes: 0 }; this.#streaks.set(key, s) }
    const performer = this.#o.performer
    if (result.ok) {
      s.failures = 0
      s.successes++
      performer.healthy(t)
      if (t.ejected && s.successes >= this.#o.successes && mode !== 'off') await performer.recover(t, s.successes)
      return
    }
    s.successes = 0
    s.failures++
    if (t.ejected || s.failures < this.#o.failures) return
    if (mode !== 'full') { performer.block(t, 'mode'); return }
    await performer.eject(t, s.failures)
  }
}
