// The protection threshold: how much of a cluster may be taken out at once. One rule for everything that takes
// instances out of service: the checker's active ejection (and the Redis coordinator's Lua script, which computes
// the same), the outbound lane's passive outlier ejection, and the probe lane's restart budget for app liveness.
// It sits below all three so that none of them imports another for it. A pure function; no I/O.

/**
 * The protection threshold: how many of a cluster's `total` instances may be ejected at once with `maxPercent`:
 * the whole number of instances nearest to the share (a half rounds down), and never the whole cluster below 100%.
 * At 33%: 1 → 0, 2 → 1, 3 → 1, 4 → 1, 5 → 2, 6 → 2 (seed 002: "at most one third; a cluster of 3 → at most 1").
 * Why 1 → 0 and 2 → 1 is in docs/checker.md. The Redis coordinator's Lua script computes the same.
 */
export function ejectBudget (total: number, maxPercent: number): number {
  if (total <= 0) return 0
  const nearest = Math.max(0, Math.ceil(total * maxPercent / 100 - 0.5 - 1e-9))
  return maxPercent < 100 ? Math.min(nearest, total - 1) : nearest
}
