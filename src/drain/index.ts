// Draining: serving → draining → closing → closed. Acts through the other modules' own controls.
//
//  draining: the app is first disabled for the consumers of its own registry (DOORMAN_APP_REGISTRY: a Dubbo
//            override), then readiness fails at once, the instance is deregistered, every response is flagged
//            (x-doorman-draining, connection: close) and idle keep-alive sockets are closed; new requests are
//            still served for at least DRAIN_DELAY and until no request has arrived for DRAIN_QUIET.
//  closing:  listeners stop accepting, late requests on open connections are shed `draining-closed`, upgraded
//            connections get a close frame; doorman waits for what is in flight.
//  closed:   nothing left in flight, or the deadline (drain start + DRAIN_DELAY + DRAIN_TIMEOUT) cut the rest.
import type { Logger } from '../core/log.js'

export const SERVING = 0
export const DRAINING = 1
export const CLOSING = 2
export const CLOSED = 3

/** What the drain needs from the data path, kept narrow so the drain can be tested over any implementation. */
export interface Drainable {
  /** Requests in flight or queued, and upgraded connections open. */
  pending: () => { inflight: number, queued: number, upgrades: number }
  /** performance.now() of the last request arrival. */
  lastArrival: () => number
  /** Requests the app has completed so far. */
  completed: () => number
  startDraining: () => void
  stopAccepting: () => void
  closeUpgrades: () => void
  /** Cuts what is left; returns how many were cut. */
  destroy: () => number
}

export interface DrainOptions {
  delay: number
  quiet: number
  timeout: number
  log: Logger
  target: Drainable
  /** Phase changes, published to the lane at once. */
  onPhase: (phase: number) => void
  /** Deregistration, first thing (errors are logged, never block the drain). */
  deregister?: () => Promise<void>
  /**
   * Before anything else: takes the instance out of the choice of consumers that don't go through doorman (the app's
   * own registry). Never delays the drain's phases; the drain ends no sooner than it is written, or at its deadline.
   */
  offline?: () => Promise<void>
  /** How often to look at the data path while waiting, in milliseconds. */
  pollMs?: number
}

export interface DrainResult {
  clean: boolean
  inflightAtStart: number
  served: number
  cut: number
  durationMs: number
  source: string
}

export class Drainer {
  #opts: DrainOptions
  #phase = SERVING
  #done: Promise<DrainResult> | null = null
  #forced: (() => void) | null = null
  /** Live counts, for /state and metrics. */
  readonly progress = { inflightAtStart: 0, served: 0, cut: 0 }

  constructor (opts: DrainOptions) {
    this.#opts = opts
  }

  get phase (): number { return this.#phase }
  get started (): boolean { return this.#phase !== SERVING }

  /** Starts the drain (idempotent: later calls return the same result). */
  start (source: string): Promise<DrainResult> {
    if (this.#done !== null) return this.#done
    this.#done = this.#run(source)
    return this.#done
  }

  /** Skips the remaining waits and cuts what is left now (a second SIGINT). */
  force (): void { this.#forced?.() }

  #set (phase: number): void {
    this.#phase = phase
    this.#opts.onPhase(phase)
  }

  async #run (source: string): Promise<DrainResult> {
    const { delay, quiet, timeout, log, target } = this.#opts
    const poll = this.#opts.pollMs ?? 25
    const t0 = performance.now()
    const deadline = t0 + delay + timeout
    const offline = this.#opts.offline?.().catch((err: unknown) => { log.warn({ err }, "could not disable the instance in the app's registry") })
    const completedAtStart = target.completed()
    const atStart = target.pending()
    this.progress.inflightAtStart = atStart.inflight + atStart.queued
    this.#set(DRAINING)
    target.startDraining()
    log.info({ source, inflight: atStart.inflight, queued: atStart.queued, upgrades: atStart.upgrades, delayMs: delay, quietMs: quiet, timeoutMs: timeout }, 'drain started')
    const dereg = this.#opts.deregister?.().catch((err: unknown) => { log.warn({ err }, 'deregistration failed; the registry TTL will expire the instance') })

    let forced = false
    const forcedPromise = new Promise<void>((resolve) => { this.#forced = () => { forced = true; resolve() } })
    const sleep = async (ms: number): Promise<void> => {
      let timer: NodeJS.Timeout | undefined
      await Promise.race([new Promise<void>((resolve) => { timer = setTimeout(resolve, Math.max(1, ms)) }), forcedPromise])
      clearTimeout(timer)
    }
    const served = (): number => target.completed() - completedAtStart

    // draining: serve (flagged) for at least the delay and until quiet.
    for (;;) {
      const now = performance.now()
      if (forced || now >= deadline) break
      const quietAt = Math.max(target.lastArrival(), t0) + quiet
      const closeAt = Math.max(t0 + delay, quietAt)
      if (now >= closeAt) break
      await sleep(Math.min(closeAt, deadline) - now)
    }
    const closingAt = performance.now()
    this.#set(CLOSING)
    target.stopAccepting()
    target.closeUpgrades()
    const p = target.pending()
    log.info({ inflight: p.inflight, queued: p.queued, upgrades: p.upgrades, servedSoFar: served(), afterMs: Math.round(closingAt - t0) }, 'drain closing: no longer accepting')

    // closing: adaptive wait for what is in flight, never past the deadline.
    for (;;) {
      const { inflight, queued, upgrades } = target.pending()
      this.progress.served = served()
      if (inflight + queued + upgrades === 0) break
      const now = performance.now()
      if (forced || now >= deadline) break
      await sleep(Math.min(poll, deadline - now))
    }
    const left = target.pending()
    let cut = 0
    if (left.inflight + left.queued + left.upgrades > 0) {
      cut = target.destroy()
      log.warn({ cut, inflight: left.inflight, queued: left.queued, upgrades: left.upgrades, forced }, 'drain deadline reached: cut what was left')
    }
    await dereg
    if (offline !== undefined) {
      let timer: NodeJS.Timeout | undefined
      await Promise.race([offline, new Promise<void>((resolve) => { timer = setTimeout(resolve, Math.max(0, deadline - performance.now())) }), forcedPromise])
      clearTimeout(timer)
    }
    this.progress.served = served()
    this.progress.cut = cut
    this.#set(CLOSED)
    const result: DrainResult = { clean: cut === 0, inflightAtStart: this.progress.inflightAtStart, served: this.progress.served, cut, durationMs: Math.round(performance.now() - t0), source }
    log.info({ ...result, closingAfterMs: Math.round(closingAt - t0) }, 'drain finished')
    return result
  }
}
