// The lane thread's scheduling priority. On Linux a nice value belongs to a thread, not to the process, so the lane
// can run at a higher priority than doorman's main thread: when the pod's CPU is contended (the container at its
// CPU limit, the node busy), the scheduler runs a waiting probe before business work. Asking for a higher priority
// (a nice value below the current one) needs CAP_SYS_NICE; without it the lane keeps the priority it has.
import os from 'node:os'

export interface LanePriority {
  /** The nice value the lane thread runs at. */
  nice: number
  /** Whether the nice value asked for was applied. */
  applied: boolean
  /** Why it was not (an errno code such as EACCES, or the platform). */
  reason?: string
}

/** Sets the calling thread's nice value (call it on the lane thread). */
export function setLanePriority (wanted: number): LanePriority {
  const current = os.getPriority(0)
  if (wanted === current) return { nice: current, applied: true }
  // Elsewhere setpriority(2) with pid 0 would change the whole process, the data path included.
  if (process.platform !== 'linux') return { nice: current, applied: false, reason: `per-thread priority is Linux only (${process.platform})` }
  try {
    os.setPriority(0, wanted)
    return { nice: os.getPriority(0), applied: true }
  } catch (err) {
    const code = (err as { info?: { code?: string }, code?: string }).info?.code ?? (err as { code?: string }).code
    return { nice: current, applied: false, reason: code ?? String(err) }
  }
}
