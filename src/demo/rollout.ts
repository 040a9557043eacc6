// Scenario 2, the rollout: instances behind a consumer doorman, drained and replaced in turn under load.
import type { Progress, RolloutPlan, RolloutRun, RolloutSample } from './results.js'

export const ROLLOUT_FULL: RolloutPlan = { instances: 3, rate: 60, warmupMs: 6000, drainDelayMs: 1500, settleMs: 1000, sampleMs: 500, tailMs: 3000 }
export const ROLLOUT_SHORT: RolloutPlan = { ...ROLLOUT_FULL, warmupMs: 3000, drainDelayMs: 1000, settleMs: 500, tailMs: 1500 }

interface RunOptions {
  plan: RolloutPlan
  logDir: string
  signal?: AbortSignal
  onSample: (s: RolloutSample, p: Progress, note: string) => void
}

export async function runRollout (_o: RunOptions): Promise<RolloutRun> {
  return { skipped: 'needs the outbound lane and a registry shared between processes', durationMs: 0, totals: { sent: 0, ok: 0, shed: 0, failed: 0, kinds: {} }, instances: [], replaced: [], markers: [], timeline: [], shareRise: {} }
}
