// The adaptive limit (DOORMAN_LIMIT_MODE=adaptive): a gradient controller in the spirit of Netflix's Gradient2Limit
// and Envoy's adaptive concurrency filter. It compares the app's latency over a short window (the sample) with its
// latency when nothing queues inside it (the baseline, measured at a low concurrency). While the sample stays
// within a tolerance of the baseline the limit grows by a headroom of about √limit; once the app's latency climbs
// past it, the limit moves toward the concurrency the app served without queueing (in-flight × baseline / sample).
// docs/limits.md gives the anchors' parameters, ours, and the measurements behind them.
//
// Time and samples come in as arguments (`update(now, rtt, inflight, dropped)`), so the controller runs the same in
// simulated time as in real time and holds no timers.
import type { LimitAlgorithm } from './algorithm.js'

export interface GradientOptions {
  /** Floor of the limit (DOORMAN_LIMIT_MIN). */
  min: number
  /** Ceiling of the limit (DOORMAN_MAX_CONCURRENCY). */
  max: number
  /** The limit to start from, restored after the first baseline measurement; default `min`. */
  initial?: number
  /**
   * Sample/baseline latency ratio still read as "nothing queues": the limit grows below it, and shrinks once the
   * sample exceeds it by more than the measurements' noise. Default 1.05.
   */
  tolerance?: number
  /** Share of the way a latency-driven decrease moves toward its target per window, in (0, 1]. Default 1. */
  smoothing?: number
  /** Shortest sample window in ms; a window also lasts at least 2 × the baseline latency. Default 500. */
  windowMs?: number
  /** Fewest samples (answers or failures) a window needs. Default 20. */
  minSamples?: number
  /** Answers a baseline measurement gathers. Default 100. */
  probeSamples?: number
  /** Time between baseline measurements in ms, plus up to `probeJitter` of it at random. Default 30 s. */
  probeIntervalMs?: number
  /** Random extra share of the probe interval, so instances don't all measure at once. Default 0.15. */
  probeJitter?: number
  /** Share of a window's requests failing (5xx, timeouts) read as overload. Default 0.05. */
  dropThreshold?: number
  /** Factor applied to the limit after an overloaded window (AIMD-style). Default 0.9. */
  backoff?: number
  /** Random numbers in [0, 1), for the probe jitter. */
  random?: () => number
}

/** What the controller sees, for metrics and /state. */
export interface GradientReadings {
  /** The baseline (no-queue) latency in ms; 0 until measured. */
  baselineMs: number
  /** The last window's sample latency in ms; 0 until measured. */
  sampleMs: number
  /** True while a baseline measurement holds the limit down. */
  probing: boolean
}

/** Latency slack in ms on top of the tolerance, so sub-millisecond apps don't read loopback jitter as queueing. */
const SLACK_MS = 1
/** Most samples a window keeps; a window that fills up closes early. */
const MAX_SAMPLES = 4096
/** Share trimmed off each end of a window's sorted latencies before averaging (outliers: GC pauses, slow calls). */
const TRIM = 0.1
/** Baseline measurements kept; the baseline pools those that agree with their median. */
const BASE_KEEP = 5
/** A baseline measurement that ran this many windows takes what it has. */
const PROBE_MAX_WINDOWS = 8

export class GradientLimit implements LimitAlgorithm {
  readonly #min: number
  readonly #max: number
  readonly #tolerance: number
  readonly #smoothing: number
  readonly #windowMs: number
  readonly #minSamples: number
  readonly #probeSamples: number
  readonly #probeInterval: number
  readonly #probeJitter: number
  readonly #dropThreshold: number
  readonly #backoff: number
  readonly #random: () => number

  #limit: number
  /** Baseline latency and its error, ms. */
  #baseline = 0
  #baseSe = 0
  /** The last baseline measurements (a ring) and their standard errors; the peak in-flight of the last probe. */
  readonly #bases = new Float64Array(BASE_KEEP)
  readonly #baseErrs = new Float64Array(BASE_KEEP)
  #baseNext = 0
  #baseCount = 0
  #baseConcurrency = 0
  #sample = 0
  #sampleSe = 0
  /** The limit the last latency-driven decrease settled on: the app's capacity as last measured. */
  #knee = Infinity
  // The current window (or baseline measurement): samples, their send times, failures, peak in-flight.
  #start = -Infinity
  readonly #rtts = new Float64Array(MAX_SAMPLES)
  readonly #sent = new Float64Array(MAX_SAMPLES)
  readonly #scratch = new Float64Array(MAX_SAMPLES)
  #n = 0
  #drops = 0
  #peak = 0
  // Baseline measurement: the limit it holds, the limit it restores, when the next one starts.
  #probing = true
  #probeLimit: number
  #resume: number
  #nextProbe = Infinity

  constructor (opts: GradientOptions) {
    this.#min = Math.max(1, Math.floor(opts.min))
    this.#max = Math.max(this.#min, Math.floor(opts.max))
    this.#tolerance = opts.tolerance ?? 1.05
    this.#smoothing = opts.smoothing ?? 1
    this.#windowMs = opts.windowMs ?? 500
    this.#minSamples = Math.max(4, opts.minSamples ?? 20)
    this.#probeSamples = Math.max(this.#minSamples, opts.probeSamples ?? 100)
    this.#probeInterval = opts.probeIntervalMs ?? 30_000
    this.#probeJitter = opts.probeJitter ?? 0.15
    this.#dropThreshold = opts.dropThreshold ?? 0.05
    this.#backoff = opts.backoff ?? 0.9
    this.#random = opts.random ?? Math.random
    if (!(this.#tolerance >= 1)) throw new RangeError('tolerance must be at least 1')
    if (!(this.#smoothing > 0 && this.#smoothing <= 1)) throw new RangeError('smoothing must be in (0, 1]')
    if (!(this.#backoff > 0 && this.#backoff < 1)) throw new RangeError('backoff must be in (0, 1)')
    this.#limit = this.#clamp(opts.initial ?? this.#min)
    // The first baseline is measured at the floor, where nothing should queue inside the app.
    this.#resume = this.#limit
    this.#probeLimit = this.#min
  }

  get limit (): number { return Math.floor(this.#probing ? Math.min(this.#probeLimit, this.#limit) : this.#limit) }

  get readings (): GradientReadings { return { baselineMs: this.#baseline, sampleMs: this.#sample, probing: this.#probing } }

  update (now: number, rttMs: number, inflight: number, dropped: boolean): void {
    if (this.#start === -Infinity) this.#start = now - Math.max(0, rttMs)
    // A request sent before this window began ran under the previous limit: it says nothing about this one.
    if (rttMs >= 0 && now - rttMs < this.#start) return
    if (dropped) {
      this.#drops++
    } else if (rttMs >= 0) {
      this.#sent[this.#n] = now - rttMs
      this.#rtts[this.#n++] = rttMs
    } else {
      return
    }
    if (inflight > this.#peak) this.#peak = inflight
    const elapsed = now - this.#start
    if (this.#probing) {
      if (this.#n >= this.#probeSamples || (this.#n >= this.#minSamples && elapsed >= PROBE_MAX_WINDOWS * this.#window())) this.#endProbe(now)
    } else if ((this.#n + this.#drops >= this.#minSamples && elapsed >= this.#window()) || this.#n === MAX_SAMPLES) {
      this.#endWindow(now)
    }
    if (!this.#probing && now >= this.#nextProbe) this.#startProbe(now, Math.max(this.#min, Math.floor(this.#limit / 2)))
  }

  #window (): number { return Math.max(this.#windowMs, 2 * this.#baseline) }

  #clamp (limit: number): number { return Math.min(this.#max, Math.max(this.#min, limit)) }

  #reset (now: number): void {
    this.#start = now
    this.#n = 0
    this.#drops = 0
    this.#peak = 0
  }

  /**
   * Sets #sample and #sampleSe: the window's trimmed mean latency and its standard error (winsorized variance).
   * Requests sent in the window's last moments that are still running are missing, and they are the slow ones;
   * so only requests sent before now − 2 × the 90th percentile count, unless too few are left.
   */
  #measure (now: number): void {
    const n0 = this.#n
    const all = this.#scratch.subarray(0, n0)
    all.set(this.#rtts.subarray(0, n0))
    all.sort()
    const cut = now - 2 * all[Math.floor(n0 * 0.9)]
    let kept = 0
    for (let i = 0; i < n0; i++) if (this.#sent[i] <= cut) kept++
    let a = all
    if (kept >= this.#minSamples && kept < n0) {
      let k = 0
      for (let i = 0; i < n0; i++) if (this.#sent[i] <= cut) this.#scratch[k++] = this.#rtts[i]
      a = this.#scratch.subarray(0, k).sort()
    }
    const n = a.length
    const g = Math.floor(n * TRIM)
    let sum = 0
    let wsum = 0
    let wsq = 0
    for (let i = 0; i < n; i++) {
      const v = a[Math.min(n - g - 1, Math.max(g, i))]
      if (i >= g && i < n - g) sum += v
      wsum += v
      wsq += v * v
    }
    const wmean = wsum / n
    this.#sample = sum / (n - 2 * g)
    this.#sampleSe = Math.sqrt(Math.max(0, wsq / n - wmean * wmean)) / (1 - 2 * g / n) / Math.sqrt(n)
  }

  /**
   * Records the last measurement (#sample) as a baseline measurement. The baseline pools the last BASE_KEEP of them
   * around their median: one window slowed by a GC pause or a CPU-starved host can't move it, and a lasting change
   * in the app's latency moves it after three.
   */
  #rebase (): void {
    this.#bases[this.#baseNext] = this.#sample
    this.#baseErrs[this.#baseNext] = this.#sampleSe
    this.#baseNext = (this.#baseNext + 1) % BASE_KEEP
    if (this.#baseCount < BASE_KEEP) this.#baseCount++
    const order = Array.from({ length: this.#baseCount }, (_, i) => i).sort((a, b) => this.#bases[a] - this.#bases[b])
    const mid = order[(this.#baseCount - 1) >> 1]
    // Pool the measurements that agree with the median within noise (weights 1/se²): the others are outliers.
    let w = 0
    let sum = 0
    let n = 0
    let sq = 0
    for (let i = 0; i < this.#baseCount; i++) {
      const se = Math.max(1e-6, this.#baseErrs[i])
      if (Math.abs(this.#bases[i] - this.#bases[mid]) > 3 * Math.hypot(se, this.#baseErrs[mid]) + SLACK_MS) continue
      w += 1 / se ** 2
      sum += this.#bases[i] / se ** 2
      n++
      sq += (this.#bases[i] - this.#bases[mid]) ** 2
    }
    this.#baseline = sum / w
    // The error is the pooled one, or the spread between measurements when that is larger: a host whose CPU is
    // contended varies more from window to window than within one.
    this.#baseSe = Math.max(Math.sqrt(1 / w), n >= 4 ? Math.sqrt(sq / (n - 1)) : 0)
  }

  #startProbe (now: number, probeLimit: number): void {
    this.#probing = true
    this.#resume = this.#limit
    this.#probeLimit = probeLimit
    this.#reset(now)
  }

  #endProbe (now: number): void {
    this.#measure(now)
    this.#rebase()
    this.#baseConcurrency = Math.max(1, this.#peak)
    this.#probing = false
    this.#limit = this.#resume
    this.#nextProbe = now + this.#probeInterval * (1 + this.#probeJitter * this.#random())
    this.#reset(now)
  }

  #endWindow (now: number): void {
    const limit = this.#limit
    let next = limit
    let congested = false
    if (this.#drops > this.#dropThreshold * (this.#n + this.#drops)) {
      // The app fails requests (5xx, timeouts): back off whatever the latency says (fast failures look fast).
      congested = true
      next = limit * this.#backoff
    }
    if (this.#n > 0) {
      this.#measure(now)
      // A window run at no more concurrency than the baseline's own measurement is one more such measurement.
      if (this.#peak <= this.#baseConcurrency) this.#rebase()
      const base = this.#baseline
      const sample = this.#sample
      // "Within the tolerance" allows for the baseline's own error; queueing shows as a sample above that by more
      // than its own noise. In between the limit holds.
      const within = base * this.#tolerance + SLACK_MS + this.#tolerance * this.#baseSe
      const ceiling = within + this.#sampleSe
      if (sample > ceiling) {
        // Move toward the concurrency the app served without queueing. The gradient is floored at 0.5, as in both
        // anchors, so one outlying window can at most halve the target.
        congested = true
        const target = Math.min(limit, this.#peak) * Math.max(0.5, base / sample)
        next = Math.min(next, limit + this.#smoothing * (target - limit))
        this.#knee = Math.max(this.#min, target)
      } else if (!congested && this.#peak >= limit / 2) {
        // Not queueing: grow by the headroom √limit, scaled by the room left below the tolerance (none in the noise
        // band above it, where the limit holds), so the limit eases into the knee instead of overshooting it. No
        // growth while the app is barely used (in-flight under half the limit): that says nothing of its capacity.
        // Past the capacity last measured (the knee) it grows by one per window instead, as TCP grows past its
        // slow-start threshold; √knee above the knee without queueing, the knee is stale (the app grew).
        const room = Math.min(1, Math.max(0, (within - sample) / (within - base)))
        if (limit >= this.#knee + Math.sqrt(this.#knee)) this.#knee = Infinity
        next = limit + room * (limit >= this.#knee ? 1 : Math.sqrt(limit))
      }
    }
    this.#limit = this.#clamp(next)
    this.#reset(now)
  }
}
