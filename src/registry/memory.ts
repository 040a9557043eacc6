// The embedded registry: one process's memory. The default when no Redis is configured: a sidecar registers in it
// (so its readiness, warmup and /state work the same), and only watchers in the same process see it.
import type { Instance, InstancePatch, Registry, Watch, WatchListener } from './types.js'
import { byId, checkService, effectiveState } from './types.js'
import { ServiceView } from './view.js'

interface Entry {
  inst: Instance
  /** The instance's own state under a checker's ejection. */
  own: Exclude<Instance['state'], 'ejected'>
  timer: NodeJS.Timeout
}

export class MemoryRegistry implements Registry {
  readonly kind = 'memory' as const
  readonly up = true
  #services = new Map<string, Map<string, Entry>>()
  #views = new Map<string, Set<ServiceView>>()
  #rev = 0
  #closed = false

  onStatus (_fn: (up: boolean) => void): () => void { return () => {} }
  async waitUp (_timeoutMs: number): Promise<boolean> { return true }

  #nextRev (): number { return ++this.#rev }

  #entries (service: string): Map<string, Entry> {
    let m = this.#services.get(service)
    if (m === undefined) { m = new Map(); this.#services.set(service, m) }
    return m
  }

  #expireLater (service: string, id: string, ttl: number): NodeJS.Timeout {
    const t = setTimeout(() => { this.#remove(service, id) }, ttl)
    t.unref()
    return t
  }

  #publishPut (inst: Instance): void {
    const views = this.#views.get(inst.service)
    if (views === undefined) return
    queueMicrotask(() => { for (const v of views) v.put(inst) })
  }

  #remove (service: string, id: string): void {
    const m = this.#services.get(service)
    const e = m?.get(id)
    if (m === undefined || e === undefined) return
    clearTimeout(e.timer)
    m.delete(id)
    if (m.size === 0) this.#services.delete(service)
    const rev = this.#nextRev()
    const views = this.#views.get(service)
    if (views !== undefined) queueMicrotask(() => { for (const v of views) v.delete(id, rev) })
  }

  async register (inst: Instance, ttl: number): Promise<void> {
    this.#check()
    checkService(inst.service)
    if (inst.state === 'ejected') throw new Error('an instance cannot register itself as ejected')
    const m = this.#entries(inst.service)
    const old = m.get(inst.id)
    if (old !== undefined) clearTimeout(old.timer)
    const stored: Instance = { ...inst, warmup: { ...inst.warmup }, ejected: false, rev: this.#nextRev() }
    m.set(inst.id, { inst: stored, own: inst.state, timer: this.#expireLater(inst.service, inst.id, ttl) })
    this.#publishPut(stored)
  }

  #patch (service: string, id: string, patch: InstancePatch | undefined, ejected?: boolean): Entry | undefined {
    const e = this.#services.get(service)?.get(id)
    if (e === undefined) return undefined
    if (patch === undefined && ejected === undefined) return e
    const own = patch?.state ?? e.own
    const ej = ejected ?? e.inst.ejected
    const inst: Instance = {
      ...e.inst,
      weight: patch?.weight ?? e.inst.weight,
      updatedAt: patch?.updatedAt ?? e.inst.updatedAt,
      livenessFailing: patch?.livenessFailing ?? e.inst.livenessFailing,
      warmup: { ...e.inst.warmup, progress: patch?.progress ?? e.inst.warmup.progress },
      ejected: ej,
      state: effectiveState(own, ej),
      rev: this.#nextRev()
    }
    e.inst = inst
    e.own = own
    this.#publishPut(inst)
    return e
  }

  async heartbeat (service: string, id: string, ttl: number, patch?: InstancePatch): Promise<boolean> {
    this.#check()
    const e = this.#patch(service, id, patch !== undefined && Object.keys(patch).length > 0 ? patch : undefined)
    if (e === undefined) return false
    clearTimeout(e.timer)
    e.timer = this.#expireLater(service, id, ttl)
    return true
  }

  async update (service: string, id: string, patch: InstancePatch): Promise<boolean> {
    this.#check()
    return this.#patch(service, id, patch) !== undefined
  }

  async setEjected (service: string, id: string, ejected: boolean): Promise<boolean> {
    this.#check()
    return this.#patch(service, id, undefined, ejected) !== undefined
  }

  async deregister (service: string, id: string): Promise<void> {
    this.#check()
    this.#remove(service, id)
  }

  async services (): Promise<string[]> {
    this.#check()
    return [...this.#services.keys()].sort()
  }

  async list (service: string): Promise<Instance[]> {
    this.#check()
    const m = this.#services.get(service)
    if (m === undefined) return []
    return [...m.values()].map((e) => e.inst).sort(byId)
  }

  watch (service: string, fn?: WatchListener): Watch {
    this.#check()
    let views = this.#views.get(service)
    if (views === undefined) { views = new Set(); this.#views.set(service, views) }
    const set = views
    const view = new ServiceView(service, () => {
      set.delete(view)
      if (set.size === 0) this.#views.delete(service)
    }, fn)
    set.add(view)
    const listedAt = this.#rev
    const instances = [...(this.#services.get(service)?.values() ?? [])].map((e) => e.inst)
    queueMicrotask(() => { view.snapshot(instances, listedAt) })
    return view
  }

  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    for (const m of this.#services.values()) for (const e of m.values()) clearTimeout(e.timer)
    this.#services.clear()
    for (const set of this.#views.values()) for (const v of [...set]) v.close()
    this.#views.clear()
  }

  #check (): void {
    if (this.#closed) throw new Error('the registry is closed')
  }
}
