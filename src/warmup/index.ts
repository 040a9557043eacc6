// Warmup (slow start): pure functions of (now, start, settings), no I/O and no clock of their own.
//
// The curve is Envoy's slow start: weight = base × max(minWeight, timeFactor ^ (1 / aggression)) while
// timeFactor = elapsed / window < 1, and base once the window has passed. With aggression 1 it is Dubbo's linear
// warmup (uptime / warmup × weight) with a floor. See docs/warmup.md for both sources.
//
// The window starts when the instance registers (its app passed startup and readiness), on the instance's own
// clock: the instance computes its progress and publishes it, and consumers only add the time they themselves saw
// pass since the update arrived (interpolate), so no two clocks are ever compared.

export interface WarmupSettings {
  /** Window in milliseconds; 0 = no warmup. */
  window: number
  /** Curve exponent; 1 = linear, above 1 ramps faster early, below 1 slower early. */
  aggression: number
  /** Floor in percent (0..100) of the base weight during the window. */
  minWeight: number
}

/** Progress through the window, 0..1, at `now` for a window that started at `start` (same clock). */
export function progress (now: number, start: number, window: number): number {
  if (window <= 0) return 1
  const elapsed = now - start
  if (elapsed >= window) return 1
  return Math.max(0, elapsed) / window
}

/** The share of the base weight at a given progress: max(minWeight, progress^(1/aggression)); 1 at the end. */
export function factor (p: number, s: WarmupSettings): number {
  if (s.window <= 0 || p >= 1) return 1
  const floor = Math.min(1, Math.max(0, s.minWeight / 100))
  const a = s.aggression > 0 && Number.isFinite(s.aggression) ? s.aggression : 1
  const curve = a === 1 ? Math.max(0, p) : Math.pow(Math.max(0, p), 1 / a)
  return Math.max(floor, Math.min(1, curve))
}

/** The weight at `now`: base × factor(progress(now, start)). */
export function weight (base: number, now: number, start: number, s: WarmupSettings): number {
  return base * factor(progress(now, start, s.window), s)
}

/** True while the instance is inside its window. */
export function warming (p: number, s: WarmupSettings): boolean {
  return s.window > 0 && p < 1
}

/**
 * A consumer's estimate of a provider's progress now: the provider reported `reported` when the update arrived at
 * `receivedAt` (the consumer's clock), and the window has advanced by the time the consumer saw pass since.
 */
export function interpolate (reported: number, receivedAt: number, now: number, window: number): number {
  if (window <= 0 || reported >= 1) return 1
  return Math.min(1, Math.max(0, reported) + Math.max(0, now - receivedAt) / window)
}

/**
 * How often a warming instance publishes its weight: often enough that the published curve has about 20 steps,
 * never more than every 250 ms, never less than every heartbeat (ttl / 3).
 */
export function publishInterval (window: number, ttl: number): number {
  const heartbeat = Math.max(1, Math.floor(ttl / 3))
  if (window <= 0) return heartbeat
  return Math.min(heartbeat, Math.max(250, Math.floor(window / 20)))
}
