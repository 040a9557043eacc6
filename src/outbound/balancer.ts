// Weighted power-of-two-choices over one service's endpoints.
//
// Two candidates are drawn independently in proportion to their weights; the one with fewer requests in flight per
// unit of weight wins, and a tie is split evenly. At light load (nothing in flight) an endpoint's share is its share
// of the weights, so a warming instance gets what its warmup weight says; under load the less busy candidate wins,
// but an endpoint can only win when it was drawn, so a cold instance's share stays below about twice its weight's.
//
// Panic mode (Envoy's healthy_panic_threshold): when fewer than `panicThreshold` percent of the service's registered
// instances that are not draining take traffic (Tier.USE), the balancer uses all of them — ejected and `starting`
// ones too — rather than a few overloaded ones or none: when most of a service looks unhealthy at once, the verdict
// is more likely wrong (a readiness blip everywhere, a checker gone astray) than the whole service dead.
//
// Endpoints come in tiers (Tier): USE takes traffic; EJECTED (by the outbound lane's outlier detection or a checker)
// is used only when no USE endpoint is left (a panic mode, as Envoy's); DRAINING, still serving for its drain delay,
// only when nothing else is left; NEVER is never used (its app is not ready). Weights and tiers are read when
// the balancer rebuilds: when told to (invalidate), at a pending ejection's expiry, and every `refreshMs` while
// some endpoint's weight is still changing (warming).

/** An endpoint's tier: which picks it takes part in. The lowest tier present is used; NEVER takes none. */
export const Tier = {
  /** Takes traffic. */
  USE: 0,
  /** Ejected: used only when no endpoint to USE is left. */
  EJECTED: 1,
  /** Draining, still serving for its drain delay: used only when nothing else is left. */
  DRAINING: 2,
  /** Never used (its app is not ready). */
  NEVER: -1
} as const
export type Tier = typeof Tier[keyof typeof Tier]
/** Above every tier: none found yet. */
const NO_TIER = 3

export interface Balanceable {
  /** Requests in flight to this endpoint now. */
  readonly inflight: number
  /** The tier now. */
  tier: (now: number) => Tier
  /** Relative weight now (> 0). */
  weight: (now: number) => number
  /** True while the weight still changes with time. */
  changing: (now: number) => boolean
  /** When the tier will change by itself (an ejection's end), or Infinity. */
  tierChangesAt: (now: number) => number
}

export class Balancer<E extends Balanceable> {
  #all: E[] = []
  #live: E[] = []
  /** #live's weights as of the last rebuild (floored above 0): the draw and the load comparison both use them. */
  #weights: number[] = []
  /** Walker's alias table over #live's weights (O(1) weighted draws); empty when all weights are equal. */
  #prob: Float64Array = new Float64Array(0)
  #alias: Int32Array = new Int32Array(0)
  #weighted = false
  #dirty = true
  #rebuildAt = Infinity
  #tier: Tier = Tier.NEVER
  #panic = false
  readonly #random: () => number
  readonly #refreshMs: number
  readonly #panicThreshold: number
  readonly #onPanic: ((panic: boolean, routable: number, total: number) => void) | undefined

  /**
   * `panicThreshold`: percent (0 = no panic mode beyond the tier fallbacks); `onPanic` is told when panic mode starts
   * or ends, with the routable and total (registered, not draining) counts.
   */
  constructor (opts: { random?: () => number, refreshMs?: number, panicThreshold?: number, onPanic?: (panic: boolean, routable: number, total: number) => void } = {}) {
    this.#random = opts.random ?? Math.random
    this.#refreshMs = opts.refreshMs ?? 100
    this.#panicThreshold = opts.panicThreshold ?? 0
    this.#onPanic = opts.onPanic
  }

  /** True while in panic mode (as of the last rebuild). */
  get panic (): boolean { return this.#panic }

  /** Replaces the endpoint set. */
  set (endpoints: E[]): void {
    this.#all = endpoints
    this.#dirty = true
  }

  get endpoints (): readonly E[] { return this.#all }

  /**
   * Re-reads tiers and weights at the next pick; in panic mode at once, so that its end is noticed (and reported)
   * without waiting for a request. `now` on the clock the endpoints' tiers use (performance.now()).
   */
  invalidate (now?: number): void {
    this.#dirty = true
    if (this.#panic) this.#refresh(now ?? performance.now())
  }

  /** The tier picks come from now (NEVER when none is usable). */
  tier (now: number): Tier {
    this.#refresh(now)
    return this.#tier
  }

  #refresh (now: number): void {
    if (!this.#dirty && now < this.#rebuildAt) return
    this.#dirty = false
    let best: Tier | typeof NO_TIER = NO_TIER
    let until = Infinity
    let changing = false
    const tiers = this.#all.map((e) => {
      const tier = e.tier(now)
      if (tier !== Tier.NEVER && tier < best) best = tier
      const at = e.tierChangesAt(now)
      if (at < until) until = at
      return tier
    })
    const live: E[] = []
    let routable = 0
    let total = 0
    for (const tier of tiers) { if (tier === Tier.USE) routable++; if (tier !== Tier.DRAINING) total++ }
    const panic = total > 0 && routable * 100 < this.#panicThreshold * total
    if (panic) {
      this.#all.forEach((e, i) => { if (tiers[i] !== Tier.DRAINING) live.push(e) })
      best = Tier.USE
    } else if (best !== NO_TIER) this.#all.forEach((e, i) => { if (tiers[i] === best) live.push(e) })
    if (panic !== this.#panic) { this.#panic = panic; this.#onPanic?.(panic, routable, total) }
    const weights = live.map((e) => { if (e.changing(now)) changing = true; return Math.max(1e-6, e.weight(now)) })
    let equal = true
    for (let i = 1; i < weights.length; i++) if (weights[i] !== weights[0]) { equal = false; break }
    this.#live = live
    this.#weights = weights
    this.#weighted = !equal
    if (!equal) this.#buildAlias(weights)
    this.#tier = best !== NO_TIER ? best : Tier.NEVER
    this.#rebuildAt = Math.min(until, changing ? now + this.#refreshMs : Infinity)
  }

  /** Vose's alias method: after this, a draw is one random number, one comparison and one lookup. */
  #buildAlias (weights: number[]): void {
    const n = weights.length
    let total = 0
    for (const w of weights) total += w
    const prob = new Float64Array(n)
    const alias = new Int32Array(n)
    const scaled = weights.map((w) => (w * n) / total)
    const small: number[] = []
    const large: number[] = []
    for (let i = 0; i < n; i++) (scaled[i] < 1 ? small : large).push(i)
    while (small.length > 0 && large.length > 0) {
      const s = small.pop() as number
      const l = large.pop() as number
      prob[s] = scaled[s]
      alias[s] = l
      scaled[l] = scaled[l] + scaled[s] - 1
      ;(scaled[l] < 1 ? small : large).push(l)
    }
    for (const i of large) { prob[i] = 1; alias[i] = i }
    for (const i of small) { prob[i] = 1; alias[i] = i }
    this.#prob = prob
    this.#alias = alias
  }

  #draw (): number {
    const n = this.#live.length
    const u = this.#random() * n
    const i = Math.min(n - 1, Math.floor(u))
    if (!this.#weighted) return i
    return u - i < this.#prob[i] ? i : this.#alias[i]
  }

  #load (i: number): number {
    const e = this.#live[i]
    return this.#weighted ? e.inflight / this.#weights[i] : e.inflight
  }

  /** Picks an endpoint, avoiding `exclude` when any other is usable; undefined when none is. */
  pick (now: number, exclude?: E): E | undefined {
    this.#refresh(now)
    const live = this.#live
    const n = live.length
    if (n === 0) return undefined
    if (n === 1) return live[0] === exclude ? undefined : live[0]
    let a = this.#draw()
    let b = this.#draw()
    if (exclude !== undefined) {
      // A retry: draw again a few times rather than land on the endpoint that just failed.
      for (let k = 0; k < 4 && live[a] === exclude; k++) a = this.#draw()
      for (let k = 0; k < 4 && live[b] === exclude; k++) b = this.#draw()
      if (live[a] === exclude && live[b] === exclude) {
        const other = live.find((e) => e !== exclude)
        return other
      }
      if (live[a] === exclude) a = b
      if (live[b] === exclude) b = a
    }
    if (a === b) return live[a]
    const la = this.#load(a)
    const lb = this.#load(b)
    if (la < lb) return live[a]
    if (lb < la) return live[b]
    return this.#random() < 0.5 ? live[a] : live[b]
  }
}
