// The instance's own registration: registers once the app is ready (plus DOORMAN_REGISTER_DELAY), heartbeats every
// TTL/3 or a little sooner (jittered), follows the app's readiness, marks itself draining first thing on drain, and
// deregisters last. Its warmup is published once, at registration (window, curve, progress): consumers interpolate
// the weight themselves, and the instance writes again only when its state changes (`up` at the end of the window),
// so a replaced instance costs four messages: registered, up, draining, gone. Registry faults never change what the instance does: it keeps serving, keeps
// counting as registered once it was, retries with backoff, and registers again by itself when the store comes
// back without its record.
import type { Logger } from '../core/log.js'
import { backoff, type Instance, type InstancePatch, type OwnState, type Registry } from './types.js'
import { progress as warmupProgress, factor, warming, type WarmupSettings } from '../warmup/index.js'
import { hostname } from 'node:os'
import type { CheckSpec } from '../check/spec.js'
import { randomBytes } from 'node:crypto'

/** A new instance id: the host name (the pod's name in Kubernetes) and a random suffix, unique per process run. */
export function instanceId (): string {
  const host = hostname().toLowerCase().replace(/[^a-z0-9.-]/g, '-').slice(0, 63)
  return `${host}-${randomBytes(3).toString('hex')}`
}

export interface RegistrationOptions {
  /** The store; null registers nowhere (no service name): the delay and warmup still run. */
  registry: Registry | null
  id: string
  service: string
  cluster: string
  zone: string
  /** The central checker's scopes and check for this instance (DOORMAN_ORG, DOORMAN_ENV, DOORMAN_CHECK). */
  org?: string
  env?: string
  check?: CheckSpec | null
  /** `host:port` of the inbound listener and the admin port; set by setEndpoint() once they are bound. */
  address?: string
  adminPort?: number
  warmup: WarmupSettings
  ttl: number
  /** Extra wait after the app is ready before registering. */
  delay: number
  log: Logger
  /** Epoch milliseconds (Date.now unless given). */
  now?: () => number
  /** With mTLS on: the instance's SPIFFE ID as registered (read at each registration). */
  identity?: () => string | undefined
}

export class Registration {
  readonly id: string
  #o: RegistrationOptions
  #now: () => number
  #startedAt: number
  #registeredAt = 0
  #appReady = false
  #readySince = 0
  #draining = false
  #closed = false
  /** True once registered; stays true through registry outages. */
  #registered = false
  /** True when the store holds our current record (as far as we know). */
  #inStore = false
  #published: { state: OwnState, livenessFailing: boolean } | null = null
  #livenessFailing = false
  #timer: NodeJS.Timeout | null = null
  #delayTimer: NodeJS.Timeout | null = null
  #failures = 0
  #busy = false
  #loggedDown = false
  #offStatus: () => void = () => {}
  /** Registry events, for metrics: register, reregister, heartbeat, update, deregister, error. */
  readonly events = new Map<string, number>()
  /** Called after each change of registered / weight / state. */
  onChange: (() => void) | null = null

  constructor (opts: RegistrationOptions) {
    this.#o = opts
    this.id = opts.id
    this.#now = opts.now ?? Date.now
    this.#startedAt = this.#now()
    const reg = opts.registry
    if (reg !== null) {
      this.#offStatus = reg.onStatus((up) => {
        if (up) {
          if (this.#loggedDown) opts.log.info({ registry: reg.kind }, 'registry reachable again')
          this.#loggedDown = false
          this.#failures = 0
          // Back after an outage (maybe a restart that lost every key): check our record soon, not at the next beat;
          // at a random moment within half the heartbeat period, so that a fleet doesn't come back at once.
          if (this.#registered || this.#readySince !== 0) this.#schedule(Math.random() * this.#o.ttl / 6)
        } else if (!this.#loggedDown) {
          this.#loggedDown = true
          opts.log.warn({ registry: reg.kind, registered: this.#registered }, 'registry unreachable: serving on, retrying with backoff')
        }
      })
    }
  }

  /** The advertised inbound address and the admin port, once the listeners are bound. */
  setEndpoint (address: string, adminPort: number): void {
    this.#o = { ...this.#o, address, adminPort }
  }

  get registered (): boolean { return this.#registered }
  get registeredAt (): number { return this.#registeredAt }
  get registryUp (): boolean { return this.#o.registry?.up ?? true }
  get draining (): boolean { return this.#draining }

  /** Warmup progress now (0 before registering). */
  progress (now = this.#now()): number {
    return this.#registered ? warmupProgress(now, this.#registeredAt, this.#o.warmup.window) : 0
  }

  /** The warmup factor now, 0..1 (the floor before registering; 1 without warmup). */
  factor (now = this.#now()): number {
    return factor(this.progress(now), this.#o.warmup)
  }

  /** The weight this instance publishes now, in percent. */
  weight (now = this.#now()): number {
    return Math.round(this.factor(now) * 10000) / 100
  }

  /** The state this instance publishes now. */
  ownState (now = this.#now()): OwnState {
    if (this.#draining) return 'draining'
    if (!this.#appReady) return 'starting'
    return warming(this.progress(now), this.#o.warmup) ? 'warming' : 'up'
  }

  /** The app's readiness, as the lane last saw it. Registers once ready for the delay; follows it afterwards. */
  setAppReady (ready: boolean): void {
    if (this.#closed || ready === this.#appReady) return
    this.#appReady = ready
    if (!this.#registered) {
      if (ready) {
        this.#readySince = this.#now()
        this.#delayTimer = setTimeout(() => { this.#delayTimer = null; this.#schedule(0) }, this.#o.delay)
      } else {
        this.#readySince = 0
        if (this.#delayTimer !== null) { clearTimeout(this.#delayTimer); this.#delayTimer = null }
      }
      return
    }
    this.#schedule(0)
  }

  /** The app's liveness check as the lane last saw it (before the restart budget): published for the others to count. */
  setLivenessFailing (failing: boolean): void {
    if (this.#closed || failing === this.#livenessFailing) return
    this.#livenessFailing = failing
    if (this.#registered) this.#schedule(0)
  }

  /** Drain: publish `draining` at once (consumers stop sending), keep the record until close(). */
  async drain (): Promise<void> {
    if (this.#draining) return
    this.#draining = true
    this.onChange?.()
    const reg = this.#o.registry
    if (reg === null || !this.#registered) return
    this.#count('update')
    // Counted as published from here: a heartbeat due meanwhile must not publish `draining` a second time.
    const before = this.#published
    this.#published = { state: 'draining', livenessFailing: this.#livenessFailing }
    let ok: boolean
    try {
      ok = await reg.update(this.#o.service, this.id, { state: 'draining', updatedAt: this.#now() })
    } catch (err) {
      if (this.#published?.state === 'draining') this.#published = before
      throw err
    }
    if (!ok) this.#inStore = false
  }

  /** Deregisters and stops (idempotent). */
  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    if (this.#timer !== null) clearTimeout(this.#timer)
    if (this.#delayTimer !== null) clearTimeout(this.#delayTimer)
    this.#offStatus()
    const reg = this.#o.registry
    if (reg !== null && this.#registered) {
      this.#count('deregister')
      await reg.deregister(this.#o.service, this.id).catch((err: unknown) => {
        this.#o.log.warn({ err }, 'deregistration failed; the registry TTL will expire the instance')
      })
    }
  }

  #count (event: string): void { this.events.set(event, (this.events.get(event) ?? 0) + 1) }

  #schedule (ms: number): void {
    if (this.#closed) return
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#timer = setTimeout(() => { this.#timer = null; void this.#tick() }, ms)
  }

  #ready (): boolean {
    return this.#appReady && this.#readySince !== 0 && this.#now() - this.#readySince >= this.#o.delay
  }

  #record (now: number): Instance {
    const o = this.#o
    return {
      id: this.id,
      service: o.service,
      cluster: o.cluster,
      zone: o.zone,
      address: o.address ?? '',
      adminPort: o.adminPort ?? 0,
      startedAt: this.#startedAt,
      registeredAt: this.#registeredAt,
      warmup: { ...o.warmup, progress: this.progress(now) },
      weight: this.weight(now),
      state: this.ownState(now),
      ejected: false,
      livenessFailing: this.#livenessFailing,
      updatedAt: now,
      rev: 0,
      ...mtlsFields(o.identity?.()),
      ...(o.org !== undefined && o.org !== '' ? { org: o.org } : {}),
      ...(o.env !== undefined && o.env !== '' ? { env: o.env } : {}),
      ...(o.check !== undefined && o.check !== null ? { check: o.check } : {})
    }
  }

  async #tick (): Promise<void> {
    if (this.#closed || this.#busy) return
    this.#busy = true
    // Heartbeats every TTL/3, jittered down to 80 % of it: instances started together drift apart.
    let next = Math.max(1, Math.floor(this.#o.ttl / 3 * (0.8 + 0.2 * Math.random())))
    try {
      if (!this.#registered) {
        if (!this.#ready()) return
        await this.#register(true)
      } else {
        await this.#beat()
      }
      this.#failures = 0
      const now = this.#now()
      if (warming(this.progress(now), this.#o.warmup)) {
        // Exactly at the end of the window, the switch to `up` (the steps in between are the consumers' to compute).
        const left = this.#registeredAt + this.#o.warmup.window - now
        next = Math.max(1, Math.min(next, left + 1))
      }
    } catch (err) {
      this.#failures++
      this.#count('error')
      next = backoff(this.#failures)
      if (this.#failures === 1 && !this.#loggedDown) this.#o.log.warn({ err }, 'registry write failed; retrying with backoff')
    } finally {
      this.#busy = false
      this.#schedule(next)
    }
  }

  async #register (first: boolean): Promise<void> {
    const reg = this.#o.registry
    const now = this.#now()
    if (first) this.#registeredAt = now
    const rec = this.#record(now)
    if (reg !== null) {
      try {
        await reg.register(rec, this.#o.ttl)
      } catch (err) {
        if (first) this.#registeredAt = 0
        throw err
      }
    }
    this.#inStore = true
    this.#published = { state: rec.state as OwnState, livenessFailing: rec.livenessFailing === true }
    this.#count(first ? 'register' : 'reregister')
    if (first) {
      this.#registered = true
      this.#o.log.info({ id: this.id, service: this.#o.service, state: rec.state, weight: rec.weight, registry: reg?.kind ?? 'none' }, 'registered')
    } else {
      this.#o.log.info({ id: this.id, service: this.#o.service }, 'registered again (the registry had lost the record)')
    }
    this.onChange?.()
  }

  async #beat (): Promise<void> {
    const reg = this.#o.registry
    const now = this.#now()
    const state = this.ownState(now)
    const w = this.weight(now)
    const lf = this.#livenessFailing
    // The weight is not republished as it climbs: consumers interpolate it from the warmup published at registration.
    const changed = this.#published === null || this.#published.state !== state || this.#published.livenessFailing !== lf
    if (reg === null) {
      this.#published = { state, livenessFailing: lf }
      if (changed) this.onChange?.()
      return
    }
    const patch: InstancePatch | undefined = changed ? { state, weight: w, progress: this.progress(now), updatedAt: now, livenessFailing: lf } : undefined
    this.#count(changed ? 'update' : 'heartbeat')
    const present = this.#inStore && await reg.heartbeat(this.#o.service, this.id, this.#o.ttl, patch)
    if (!present) {
      await this.#register(false)
      return
    }
    this.#published = { state, livenessFailing: lf }
    if (changed) this.onChange?.()
  }
}

/** The identity block of a record: present only with mTLS on (an identity known). */
function mtlsFields (identity: string | undefined): Pick<Instance, 'identity' | 'mtls'> {
  return identity === undefined ? {} : { identity, mtls: true }
}
