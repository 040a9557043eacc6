// The Performer: carries out the Decider's verdicts in the registry. An ejection goes through the coordinator's
// budget (atomic, re-reading the cluster's current states); a recovery releases the ejection. Either write is
// published on the service's channel by the store, so every watcher (consumers' outbound lanes, `doorman
// instances`, other checker replicas) sees it within milliseconds. Each action is also logged and kept in a short
// list of recent events for the checker's /state.
import type { Logger } from '../core/log.js'
import type { Coordinator, EjectResult } from './coordinator.js'
import type { CheckerMetrics, BlockReason } from './metrics.js'
import { targetKey, type Target } from './prober.js'

export interface CheckerEvent {
  /** Epoch milliseconds. */
  at: number
  action: 'eject' | 'recover' | 'blocked'
  service: string
  cluster: string
  id: string
  address: string
  /** For ejections and blocks: the cluster's counts after the decision. */
  ejected?: number
  total?: number
  budget?: number
  reason?: BlockReason
}

const RECENT = 100

export interface PerformerOptions {
  coordinator: Coordinator
  /** DOORMAN_CHECK_MAX_EJECT. */
  maxEject: number
  metrics: CheckerMetrics
  log: Logger
}

export class Performer {
  readonly #o: PerformerOptions
  /** The most recent events, newest last. */
  readonly events: CheckerEvent[] = []
  /** Instances whose blocked ejection was already logged (logged once until they are ejected or healthy). */
  readonly #quiet = new Set<string>()

  constructor (opts: PerformerOptions) {
    this.#o = opts
  }

  #record (e: CheckerEvent): void {
    this.events.push(e)
    if (this.events.length > RECENT) this.events.splice(0, this.events.length - RECENT)
  }

  /**
   * Ejects a batch of one service's instances within the budget, in one atomic step. Resolves with the
   * coordinator's answer per target, or null when the registry call failed (the next round tries again).
   */
  async eject (targets: ReadonlyArray<{ target: Target, failures: number }>): Promise<EjectResult[] | null> {
    if (targets.length === 0) return []
    const { metrics, log } = this.#o
    const service = targets[0].target.service
    let results: EjectResult[]
    try {
      results = await this.#o.coordinator.eject(service, targets.map((x) => x.target.id), this.#o.maxEject)
    } catch (err) {
      metrics.count(metrics.errors, 'eject')
      log.warn({ err, service, instances: targets.length }, 'ejection failed; retried next round')
      return null
    }
    for (const [i, r] of results.entries()) {
      const { target: t, failures } = targets[i]
      const base = { service: t.service, cluster: t.cluster, id: t.id, address: t.address, ejected: r.ejected, total: r.total, budget: r.budget }
      if (r.outcome === 'ejected') {
        this.#quiet.delete(targetKey(t.service, t.id))
        metrics.ejections++
        this.#record({ at: Date.now(), action: 'eject', ...base })
        log.warn({ ...base, failures }, 'instance ejected')
      } else if (r.outcome === 'threshold') {
        this.#block(t, 'threshold', base)
      }
    }
    return results
  }

  /** An ejection the counts call for but the mode or the threshold forbids. */
  block (t: Target, reason: BlockReason): void {
    this.#block(t, reason, { service: t.service, cluster: t.cluster, id: t.id, address: t.address })
  }

  #block (t: Target, reason: BlockReason, base: Omit<CheckerEvent, 'at' | 'action'>): void {
    const { metrics, log } = this.#o
    metrics.count(metrics.blocked, reason)
    const key = targetKey(t.service, t.id)
    if (this.#quiet.has(key)) return
    this.#quiet.add(key)
    this.#record({ at: Date.now(), action: 'blocked', reason, ...base })
    log.warn({ ...base, reason }, reason === 'threshold'
      ? 'instance failing but not ejected: its cluster is at the protection threshold (DOORMAN_CHECK_MAX_EJECT)'
      : 'instance failing but not ejected: the checker is recover-only here')
  }

  /** Forgets instances not in `keys` (`service\0id`): they left the registry or this replica's shard. */
  retain (keys: ReadonlySet<string>): void {
    for (const k of this.#quiet) if (!keys.has(k)) this.#quiet.delete(k)
  }

  /** The instance answers again: its blocked ejection may be logged again the next time. */
  healthy (t: Target): void {
    this.#quiet.delete(targetKey(t.service, t.id))
  }

  /** Releases an ejection. Resolves true when released, false when gone or the call failed. */
  async recover (t: Target, successes: number): Promise<boolean> {
    const { metrics, log } = this.#o
    let ok: boolean
    try {
      ok = await this.#o.coordinator.recover(t.service, t.id)
    } catch (err) {
      metrics.count(metrics.errors, 'recover')
      log.warn({ err, service: t.service, id: t.id }, 'recovery failed; retried next round')
      return false
    }
    if (ok) {
      metrics.recoveries++
      this.#record({ at: Date.now(), action: 'recover', service: t.service, cluster: t.cluster, id: t.id, address: t.address })
      log.info({ service: t.service, cluster: t.cluster, id: t.id, address: t.address, successes }, 'instance recovered')
    }
    return ok
  }
}
