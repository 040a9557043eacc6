// The registration gate: one more latch of readiness. It opens once the app has registered every service it
// declares (DOORMAN_APP_SERVICES), or, with none declared, once it has registered at least one and no new one has
// appeared for SETTLE_MS. Like the other latches at start it flips one way: once open it stays open, so a registry
// that goes away (or an entry that flaps) never turns a ready pod unready.

/** With no declared services: how long after the last new one the set counts as complete. */
export const SETTLE_MS = 5000

export interface GateState {
  open: boolean
  /** When it opened (ms since the epoch), 0 while closed. */
  openedAt: number
  /** Declared services not registered yet (empty without a declared list). */
  waitingFor: string[]
  detail: string
}

export class RegistrationGate {
  readonly #declared: readonly string[]
  readonly #settleMs: number
  #openedAt = 0
  #seen = new Set<string>()
  #lastNew = 0
  #waitingFor: string[]

  constructor (declared: readonly string[], settleMs = SETTLE_MS) {
    this.#declared = declared
    this.#settleMs = settleMs
    this.#waitingFor = [...declared]
  }

  get open (): boolean { return this.#openedAt !== 0 }

  /** Feeds the services registered now; returns whether the gate is open after it. */
  observe (registered: Iterable<string>, now: number): boolean {
    if (this.open) return true
    const current = new Set(registered)
    for (const s of current) {
      if (!this.#seen.has(s)) { this.#seen.add(s); this.#lastNew = now }
    }
    if (this.#declared.length > 0) {
      this.#waitingFor = this.#declared.filter((s) => !current.has(s))
      if (this.#waitingFor.length === 0) this.#openedAt = now
    } else if (current.size > 0 && now - this.#lastNew >= this.#settleMs) {
      this.#openedAt = now
    }
    return this.open
  }

  /** When an undeclared set will count as complete if nothing new appears (0: not waiting on that). */
  settlesAt (): number {
    return this.#declared.length === 0 && !this.open && this.#lastNew !== 0 ? this.#lastNew + this.#settleMs : 0
  }

  state (): GateState {
    const declared = this.#declared.length > 0
    let detail: string
    if (this.open) detail = 'every service registered'
    else if (declared) detail = `waiting for ${this.#waitingFor.join(', ')}`
    else if (this.#seen.size === 0) detail = 'nothing registered yet'
    else detail = `waiting ${this.#settleMs}ms after the last new service`
    return { open: this.open, openedAt: this.#openedAt, waitingFor: declared ? [...this.#waitingFor] : [], detail }
  }
}
