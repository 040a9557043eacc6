// A registry in a local directory (`file:///path`): for several doorman processes on one machine without Redis
// (a laptop, a demo, a CI job). Not for a cluster: every process must see the same directory and the same clock.
//
// Layout: <dir>/<service>/<id>.json holds one instance (written by the instance only, atomically by rename) with its
// expiry time; <dir>/<service>/<id>.eject.json holds a checker's verdict, so neither writer overwrites the other.
// Watchers follow the service's directory with fs.watch (inotify on Linux: changes arrive within milliseconds) and
// list it again on every change, plus a periodic listing that also catches expiries and missed events.
// A directory that can't be read (removed, replaced by a file, no permission) is an outage, not an empty service:
// listings fail, watchers keep the last instances they saw, and `up` is false until a listing or a write succeeds.
import { promises as fsp, watch as fsWatch, mkdirSync, type FSWatcher } from 'node:fs'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import type { Instance, InstancePatch, OwnState, Registry, Watch, WatchListener } from './types.js'
import { byId, checkService, effectiveState } from './types.js'
import { ServiceView } from './view.js'

interface Stored {
  inst: Omit<Instance, 'state' | 'ejected'> & { state: OwnState }
  expiresAt: number
}
interface Verdict { ejected: boolean, rev: number }

export interface FileRegistryOptions {
  dir: string
  /** Periodic listing of each watched service, in milliseconds (default and most: 1 s). */
  resyncMs?: number
}

let lastRev = 0
/** A revision from the machine's clock, in microseconds, strictly increasing within this process. */
function nextRev (): number {
  lastRev = Math.max(lastRev + 1, Math.floor((performance.timeOrigin + performance.now()) * 1000))
  return lastRev
}

/** Errors that mean the registry's directory itself is unusable (as opposed to one instance's file being gone). */
const UNREADABLE = new Set(['ENOENT', 'ENOTDIR', 'EACCES', 'EPERM', 'EISDIR', 'EIO', 'ELOOP'])

export class FileRegistry implements Registry {
  readonly kind = 'file' as const
  readonly dir: string
  #up = true
  #statusListeners = new Set<(up: boolean) => void>()
  #resyncMs: number
  #views = new Map<string, { set: Set<ServiceView>, watcher: FSWatcher | null, timer: NodeJS.Timeout, pending: NodeJS.Timeout | null, listing: boolean, again: boolean }>()
  /** Writes per instance file, one at a time (a heartbeat and a drain update must not interleave). */
  #queues = new Map<string, Promise<unknown>>()
  #closed = false

  constructor (opts: FileRegistryOptions) {
    this.dir = opts.dir
    // Expiries show only when a listing runs (no events), so a resync runs at least every second.
    this.#resyncMs = Math.min(opts.resyncMs ?? 1000, 1000)
    mkdirSync(this.dir, { recursive: true })
  }

  /** False while the directory can't be read or written. */
  get up (): boolean { return this.#up }

  onStatus (fn: (up: boolean) => void): () => void {
    this.#statusListeners.add(fn)
    return () => { this.#statusListeners.delete(fn) }
  }

  async waitUp (timeoutMs: number): Promise<boolean> {
    if (this.#up) return true
    const root = await fsp.stat(this.dir).catch(() => null)
    if (root?.isDirectory() === true) this.#setUp(true)
    if (this.#up) return true
    return await new Promise((resolve) => {
      const timer = setTimeout(() => { off(); resolve(this.#up) }, timeoutMs)
      const off = this.onStatus((up) => { if (up) { clearTimeout(timer); off(); resolve(true) } })
    })
  }

  #setUp (up: boolean): void {
    if (up === this.#up) return
    this.#up = up
    for (const fn of [...this.#statusListeners]) fn(up)
  }

  /** Marks the registry down when `err` says its directory is unusable; rethrows it. */
  #failed (err: unknown): never {
    if (UNREADABLE.has((err as NodeJS.ErrnoException).code ?? '')) this.#setUp(false)
    throw err
  }

  /** A service directory that can't be listed: no such service when the registry's directory is fine, else an outage. */
  async #unlisted (err: unknown): Promise<string[]> {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      const root = await fsp.stat(this.dir).catch(() => null)
      if (root?.isDirectory() === true) { this.#setUp(true); return [] }
    }
    return this.#failed(err)
  }

  #serviceDir (service: string): string { return path.join(this.dir, service) }
  #file (service: string, id: string): string { return path.join(this.dir, service, `${encodeURIComponent(id)}.json`) }
  #verdictFile (service: string, id: string): string { return path.join(this.dir, service, `${encodeURIComponent(id)}.eject.json`) }

  async #serial<T> (key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#queues.get(key) ?? Promise.resolve()
    const run = prev.then(fn, fn)
    const tail = run.catch(() => {})
    this.#queues.set(key, tail)
    void tail.then(() => { if (this.#queues.get(key) === tail) this.#queues.delete(key) })
    return await run
  }

  async #write (file: string, data: unknown): Promise<void> {
    const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`
    await fsp.writeFile(tmp, JSON.stringify(data))
    await fsp.rename(tmp, file)
  }

  async #read<T> (file: string): Promise<T | undefined> {
    try { return JSON.parse(await fsp.readFile(file, 'utf8')) as T } catch { return undefined }
  }

  async #readLive (service: string, id: string, now = Date.now()): Promise<Stored | undefined> {
    const s = await this.#read<Stored>(this.#file(service, id))
    return s === undefined || s.expiresAt <= now ? undefined : s
  }

  async register (inst: Instance, ttl: number): Promise<void> {
    this.#check()
    checkService(inst.service)
    if (inst.state === 'ejected') throw new Error('an instance cannot register itself as ejected')
    const file = this.#file(inst.service, inst.id)
    try {
      await fsp.mkdir(this.#serviceDir(inst.service), { recursive: true })
      await this.#serial(file, async () => {
        await fsp.rm(this.#verdictFile(inst.service, inst.id), { force: true })
        const { ejected: _e, ...rest } = inst
        await this.#write(file, { inst: { ...rest, state: inst.state as OwnState, warmup: { ...inst.warmup }, rev: nextRev() }, expiresAt: Date.now() + ttl } satisfies Stored)
      })
    } catch (err) { this.#failed(err) }
    this.#setUp(true)
  }

  async #patch (service: string, id: string, ttl: number | null, patch: InstancePatch | undefined): Promise<boolean> {
    const file = this.#file(service, id)
    const present = await this.#serial(file, async () => {
      const s = await this.#readLive(service, id)
      if (s === undefined) return false
      const changed = patch !== undefined && Object.keys(patch).length > 0
      const inst = changed
        ? {
            ...s.inst,
            state: patch.state ?? s.inst.state,
            weight: patch.weight ?? s.inst.weight,
            updatedAt: patch.updatedAt ?? s.inst.updatedAt,
            livenessFailing: patch.livenessFailing ?? s.inst.livenessFailing,
            warmup: { ...s.inst.warmup, progress: patch.progress ?? s.inst.warmup.progress },
            rev: nextRev()
          }
        : s.inst
      await this.#write(file, { inst, expiresAt: ttl === null ? s.expiresAt : Date.now() + ttl } satisfies Stored)
      return true
    }).catch((err: unknown) => this.#failed(err))
    // A missing record in a missing directory is an outage (re-registering will tell), not a quiet expiry.
    if (present) this.#setUp(true)
    return present
  }

  async heartbeat (service: string, id: string, ttl: number, patch?: InstancePatch): Promise<boolean> {
    this.#check()
    return await this.#patch(service, id, ttl, patch)
  }

  async update (service: string, id: string, patch: InstancePatch): Promise<boolean> {
    this.#check()
    return await this.#patch(service, id, null, patch)
  }

  async setEjected (service: string, id: string, ejected: boolean): Promise<boolean> {
    this.#check()
    if (await this.#readLive(service, id) === undefined) return false
    await this.#write(this.#verdictFile(service, id), { ejected, rev: nextRev() } satisfies Verdict)
    return true
  }

  async deregister (service: string, id: string): Promise<void> {
    this.#check()
    const file = this.#file(service, id)
    await this.#serial(file, async () => {
      await fsp.rm(file, { force: true })
      await fsp.rm(this.#verdictFile(service, id), { force: true })
    })
  }

  async services (): Promise<string[]> {
    this.#check()
    let names: string[]
    try { names = await fsp.readdir(this.dir) } catch (err) { return this.#failed(err) }
    const out: string[] = []
    for (const name of names) if ((await this.list(name).catch(() => [])).length > 0) out.push(name)
    return out.sort()
  }

  async list (service: string): Promise<Instance[]> {
    return await this.#list(service, false)
  }

  /**
   * A watched service's directory was made by watch(): when it is missing, someone removed it (maybe with the whole
   * registry, maybe half way through): this listing is skipped (null), the directory made again for the next one.
   */
  async #list (service: string, watched: boolean): Promise<Instance[]> {
    this.#check()
    let names: string[]
    try {
      names = await fsp.readdir(this.#serviceDir(service))
    } catch (err) {
      names = await this.#unlisted(err)
      if (watched) {
        await fsp.mkdir(this.#serviceDir(service)).catch(() => {})
        throw err
      }
    }
    const now = Date.now()
    const out: Instance[] = []
    let vanished = false
    for (const name of names) {
      if (!name.endsWith('.json') || name.endsWith('.eject.json')) continue
      const file = path.join(this.#serviceDir(service), name)
      const s = await this.#read<Stored>(file)
      if (s === undefined) { vanished = true; continue }
      if (s.expiresAt <= now) {
        // Expired: whoever sees it first removes it (and the checker's verdict with it).
        await fsp.rm(file, { force: true })
        await fsp.rm(this.#verdictFile(service, s.inst.id), { force: true })
        continue
      }
      const v = await this.#read<Verdict>(this.#verdictFile(service, s.inst.id))
      const ejected = v?.ejected === true
      out.push({ ...s.inst, state: effectiveState(s.inst.state, ejected), ejected, rev: Math.max(s.inst.rev, v?.rev ?? 0) })
    }
    // A file gone between the listing and its read: removed alone, or with the whole directory (an outage).
    if (vanished) {
      await fsp.readdir(this.#serviceDir(service)).catch(async (err: unknown) => {
        await this.#unlisted(err)
        if (watched) throw err
      })
    }
    this.#setUp(true)
    return out.sort(byId)
  }

  watch (service: string, fn?: WatchListener): Watch {
    this.#check()
    checkService(service)
    let w = this.#views.get(service)
    if (w === undefined) {
      const dir = this.#serviceDir(service)
      let watcher: FSWatcher | null = null
      try {
        mkdirSync(dir, { recursive: true })
        watcher = fsWatch(dir, { persistent: false }, () => { this.#soon(service) })
        watcher.on('error', () => {})
      } catch {
        // No change notifications here: the periodic listing alone keeps the view.
      }
      const timer = setInterval(() => { void this.#resync(service) }, this.#resyncMs)
      timer.unref()
      w = { set: new Set(), watcher, timer, pending: null, listing: false, again: false }
      this.#views.set(service, w)
    }
    const entry = w
    const view = new ServiceView(service, () => {
      entry.set.delete(view)
      if (entry.set.size === 0 && this.#views.get(service) === entry) {
        this.#views.delete(service)
        entry.watcher?.close()
        clearInterval(entry.timer)
        if (entry.pending !== null) clearTimeout(entry.pending)
      }
    }, fn)
    entry.set.add(view)
    void this.#resync(service)
    return view
  }

  /** A change in the directory: list again shortly (one listing for a burst of events). */
  #soon (service: string): void {
    const w = this.#views.get(service)
    if (w === undefined || w.pending !== null) return
    w.pending = setTimeout(() => { w.pending = null; void this.#resync(service) }, 2)
  }

  async #resync (service: string): Promise<void> {
    const w = this.#views.get(service)
    if (w === undefined || this.#closed) return
    if (w.listing) { w.again = true; return }
    w.listing = true
    try {
      do {
        w.again = false
        const listedAt = nextRev()
        const instances = await this.#list(service, true).catch(() => null)
        if (instances !== null) for (const v of [...w.set]) v.snapshot(instances, listedAt)
      } while (w.again && !this.#closed)
    } finally {
      w.listing = false
    }
  }

  async close (): Promise<void> {
    if (this.#closed) return
    for (const w of this.#views.values()) for (const v of [...w.set]) v.close()
    this.#closed = true
    this.#views.clear()
    await Promise.allSettled([...this.#queues.values()])
  }

  #check (): void {
    if (this.#closed) throw new Error('the registry is closed')
  }
}
