// What a benchmark section is to the runner (run.ts): its options, the targets it checks, the section itself.

export interface Options {
  /** Measured rounds per cell (after one warm-up round). */
  rounds: number
  /** Seconds per measured run. */
  duration: number
  /** Seconds per warm-up run. */
  warmup: number
  /** Seconds of probing under load in the lane section. */
  laneSeconds: number
  /** The proxy section's scenarios to run (`fast/50`, `20ms/200`, …), or null for all. */
  scenarios: string[] | null
  /** Where doorman writes a V8 CPU profile (--cpu-prof), or null for none. */
  profileDir: string | null
  /** The git commit (or branch, tag) the A/B section builds and compares this checkout's build with. */
  baseline: string
}

/** A target a section checks: `value` against `ok`, printed PASS/FAIL at the end. */
export interface Check { what: string, value: number, ok: (v: number) => boolean, unit?: string }

/** A part of the benchmark: sets up its own processes, prints its tables, returns its checks. */
export interface Section { name: string, title: string, run: (opts: Options) => Promise<Check[]> }
