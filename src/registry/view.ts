// A watcher's local view of one service, shared by every registry implementation. Pushed changes and full
// listings can arrive out of order (a listing started before a push may land after it), so every record carries a
// revision from the store's clock: the view keeps the newer of two reports, and remembers deletions for a while so
// a stale listing cannot bring a departed instance back.
import type { Change, Instance, Watch, WatchListener } from './types.js'

/** How long a deletion is remembered against stale listings, in milliseconds. */
const TOMBSTONE_MS = 60_000

export class ServiceView implements Watch {
  readonly service: string
  readonly ready: Promise<void>
  #view = new Map<string, Instance>()
  #tombstones = new Map<string, { rev: number, at: number }>()
  #listeners: WatchListener[] = []
  #synced = false
  #closed = false
  #resolveReady!: () => void
  #onClose: () => void

  constructor (service: string, onClose: () => void, fn?: WatchListener) {
    this.service = service
    this.#onClose = onClose
    if (fn !== undefined) this.#listeners.push(fn)
    this.ready = new Promise((resolve) => { this.#resolveReady = resolve })
  }

  get view (): ReadonlyMap<string, Instance> { return this.#view }
  get synced (): boolean { return this.#synced }
  get closed (): boolean { return this.#closed }

  listen (fn: WatchListener): void { this.#listeners.push(fn) }

  #emit (change: Change): void {
    for (const fn of this.#listeners) fn(this.#view, change)
  }

  /** A pushed write. Ignored when the view already holds a newer revision or the id was deleted later. */
  put (inst: Instance): void {
    if (this.#closed) return
    const prev = this.#view.get(inst.id)
    // An equal revision is the same write reported twice (a push and a listing): nothing changed.
    if (prev !== undefined && prev.rev >= inst.rev) return
    const tomb = this.#tombstones.get(inst.id)
    if (tomb !== undefined) {
      if (tomb.rev >= inst.rev) return
      this.#tombstones.delete(inst.id)
    }
    this.#view.set(inst.id, inst)
    this.#emit({ type: 'put', instance: inst, previous: prev })
  }

  /** A pushed deletion; `rev` is the store's clock at deletion (0 when unknown, e.g. a TTL expiry). */
  delete (id: string, rev: number, now = Date.now()): void {
    if (this.#closed) return
    const prev = this.#view.get(id)
    if (prev !== undefined && rev !== 0 && prev.rev > rev) return
    if (rev !== 0) this.#tombstones.set(id, { rev, at: now })
    if (prev === undefined) return
    this.#view.delete(id)
    this.#emit({ type: 'delete', id, previous: prev })
  }

  /**
   * A full listing, begun when the store's clock read `listedAt` (a revision): it replaces the view, except that
   * records pushed after the listing began are kept, and deletions newer than a listed record win. With
   * `keepMissing` (the store may have lost data: it just came back), instances it doesn't list are kept; only
   * pushed deletions remove them.
   */
  snapshot (instances: Instance[], listedAt: number, now = Date.now(), keepMissing = false): void {
    if (this.#closed) return
    for (const [id, t] of this.#tombstones) if (now - t.at > TOMBSTONE_MS) this.#tombstones.delete(id)
    const next = new Map<string, Instance>()
    for (const inst of instances) {
      const tomb = this.#tombstones.get(inst.id)
      if (tomb !== undefined && tomb.rev >= inst.rev) continue
      const prev = this.#view.get(inst.id)
      next.set(inst.id, prev !== undefined && prev.rev >= inst.rev ? prev : inst)
    }
    // A record pushed after the listing began is newer than the listing: keep it even though it is not listed.
    for (const [id, prev] of this.#view) if (!next.has(id) && (keepMissing || prev.rev > listedAt)) next.set(id, prev)
    const before = this.#view
    this.#view = next
    for (const [id, prev] of before) if (!next.has(id)) this.#emit({ type: 'delete', id, previous: prev })
    for (const [id, inst] of next) if (before.get(id) !== inst) this.#emit({ type: 'put', instance: inst, previous: before.get(id) })
    this.#emit({ type: 'snapshot' })
    if (!this.#synced) { this.#synced = true; this.#resolveReady() }
  }

  close (): void {
    if (this.#closed) return
    this.#closed = true
    this.#listeners = []
    this.#onClose()
  }
}
