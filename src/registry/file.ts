// A registry in a local directory (`file:///path`): for several doorman processes on one machine without Redis
// (a laptop, a demo, a CI job). Not for a cluster: every process must see the same directory and the same clock.
//
// Layout: <dir>/<service>/<id>.json holds one instance (written by the instance only, atomically by rename) with its
// expiry time; <dir>/<service>/<id>.eject.json holds a checker's verdict, so neither writer overwrites the other.
// Watchers follow the service's directory with fs.watch (inotify on Linux: changes arrive within milliseconds) and
// list it again on every change, plus a periodic listing that also catches expiries and missed events.
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

export class FileRegistry implements Registry {
  readonly kind = 'file' as const
  readonly up = true
  readonly dir: string
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

  onStatus (_fn: (up: boolean) => void): () => void { return () => {} }
  async waitUp (_timeoutMs: number): Promise<boolean> { return true }

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
    await fsp.mkdir(this.#serviceDir(inst.service), { recursive: true })
    const file = this.#file(inst.service, inst.id)
    await this.#serial(file, async () => {
      await fsp.rm(this.#verdictFile(inst.service, inst.id), { force: true })
      const { ejected: _e, ...rest } = inst
      await this.#write(file, { inst: { ...rest, state: inst.state as OwnState, warmup: { ...inst.warmup }, rev: nextRev() }, expiresAt: Date.now() + ttl } satisfies Stored)
    })
  }

  async #patch (service: string, id: string, ttl: number | null, patch: InstancePatch | undefined): Promise<boolean> {
    const file = this.#file(service, id)
    return await this.#serial(file, async () => {
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
    })
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
    try { names = await fsp.readdir(this.dir) } catch { return [] }
    const out: string[] = []
    for (const name of names) if ((await this.list(name).catch(() => [])).length > 0) out.push(name)
    return out.sort()
  }

  async list (service: string): Promise<Instance[]> {
    this.#check()
    let names: string[]
    try { names = await fsp.readdir(this.#serviceDir(service)) } catch { return [] }
    const now = Date.now()
    const out: Instance[] = []
    for (const name of names) {
      if (!name.endsWith('.json') || name.endsWith('.eject.json')) continue
      const file = path.join(this.#serviceDir(service), name)
      const s = await this.#read<Stored>(file)
      if (s === undefined) continue
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
    return out.sort(byId)
  }

  watch (service: string, fn?: WatchListener): Watch {
    this.#check()
    checkService(service)
    let w = this.#views.get(service)
    if (w === undefined) {
      const dir = this.#serviceDir(service)
      mkdirSync(dir, { recursive: true })
      let watcher: FSWatcher | null = null
      try {
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
        const instances = await this.list(service).catch(() => null)
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
