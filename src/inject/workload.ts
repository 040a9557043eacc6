// Finds the pod templates in any Kubernetes object — a Pod, the template of a Deployment, StatefulSet, DaemonSet,
// ReplicaSet or Job, a CronJob's job template, the items of a List, or a `template` at any depth of another kind —
// and injects each one that opts in. The input is never modified: the result is a copy.
import { injectTemplate, InjectError, isObj, type InjectOptions, type Obj, type PortKind, type Takeover } from './pod.js'
import { escape, unescape } from './patch.js'

export interface ObjectResult {
  /** The object with the sidecar injected (a copy; the input is untouched). */
  object: unknown
  /** Pod templates injected, by JSON pointer within the object ('' for a Pod). */
  injected: string[]
  warnings: string[]
  /** Per injected template: its labels, namespace and port takeover (for checking Services against it). */
  takeovers: Array<Takeover & { where: string, namespace: string | undefined, labels: Record<string, unknown> }>
}

/** `kind/name` of an object, for messages. */
export function describe (o: unknown): string {
  if (!isObj(o)) return 'a non-object document'
  const meta = isObj(o.metadata) ? o.metadata : {}
  const name = typeof meta.name === 'string' ? meta.name : typeof meta.generateName === 'string' ? `${meta.generateName}*` : '(unnamed)'
  return `${typeof o.kind === 'string' ? o.kind.toLowerCase() : 'object'}/${name}`
}

function isTemplate (v: unknown): v is Obj {
  return isObj(v) && isObj(v.spec) && Array.isArray(v.spec.containers)
}

/** JSON pointers of every pod template in the object. */
export function templatePaths (o: unknown): string[] {
  if (!isObj(o)) return []
  if (o.kind === 'Pod' && isTemplate(o)) return ['']
  const out: string[] = []
  const walk = (v: unknown, path: string): void => {
    if (Array.isArray(v)) { v.forEach((x, i) => { walk(x, `${path}/${i}`) }); return }
    if (!isObj(v)) return
    if (v.kind === 'Pod' && isTemplate(v)) { out.push(path); return }
    for (const [k, x] of Object.entries(v)) {
      const p = `${path}/${escape(k)}`
      if ((k === 'template' || k === 'podTemplate') && isTemplate(x)) out.push(p)
      else if (k !== 'metadata' && k !== 'status') walk(x, p)
    }
  }
  walk(o, '')
  return out
}

function at (o: unknown, pointer: string): Obj {
  let v = o
  for (const seg of pointer.split('/').slice(1)) {
    const key = unescape(seg)
    v = Array.isArray(v) ? v[Number(key)] : (v as Obj)[key]
  }
  return v as Obj
}

/** Injects every opted-in pod template of an object. Throws InjectError (naming the object) when one can't be. */
export function injectObject (o: unknown, opts: InjectOptions = {}): ObjectResult {
  const copy = structuredClone(o)
  const injected: string[] = []
  const warnings: string[] = []
  const takeovers: ObjectResult['takeovers'] = []
  const meta = isObj(o) && isObj(o.metadata) ? o.metadata : {}
  for (const path of templatePaths(copy)) {
    const where = describe(o) + (path === '' ? '' : ` ${path}`)
    try {
      const tpl = at(copy, path)
      const tplMeta = isObj(tpl.metadata) ? tpl.metadata : {}
      const labels = isObj(tplMeta.labels) ? { ...tplMeta.labels } : {}
      const r = injectTemplate(tpl, opts)
      warnings.push(...r.warnings.map((w) => `${where}: ${w}`))
      if (r.injected) {
        injected.push(path)
        const ns = typeof tplMeta.namespace === 'string' ? tplMeta.namespace : typeof meta.namespace === 'string' ? meta.namespace : undefined
        takeovers.push({ ...r.takeover, where, namespace: ns, labels })
      }
    } catch (err) {
      if (err instanceof InjectError) throw new InjectError(`${where}: ${err.message}`)
      throw err
    }
  }
  return { object: copy, injected, warnings, takeovers }
}

/** What a Service port's `appProtocol` says it speaks (Kubernetes' own values, IANA names, Istio's). */
export function appProtocolKind (v: unknown): PortKind {
  if (typeof v !== 'string' || v === '') return 'http1'
  const p = v.toLowerCase()
  if (p === 'kubernetes.io/h2c' || p === 'grpc' || p === 'h2c' || p === 'http2') return 'h2c'
  if (p === 'http' || p === 'http1' || p === 'kubernetes.io/ws' || p === 'grpc-web') return 'http1'
  return 'other'
}

/**
 * Services that target an injected app's port by number: their traffic would go straight to the app, around doorman
 * (only a port name can be taken over). One warning per Service port, saying what to write instead.
 */
export function serviceWarnings (services: unknown[], takeovers: ObjectResult['takeovers']): string[] {
  const out: string[] = []
  for (const svc of services) {
    if (!isObj(svc) || svc.kind !== 'Service' || !isObj(svc.spec) || !isObj(svc.spec.selector)) continue
    const selector = svc.spec.selector
    const ns = isObj(svc.metadata) && typeof svc.metadata.namespace === 'string' ? svc.metadata.namespace : undefined
    const ports = Array.isArray(svc.spec.ports) ? svc.spec.ports.filter(isObj) : []
    for (const t of takeovers) {
      if (ns !== undefined && t.namespace !== undefined && ns !== t.namespace) continue
      if (!Object.entries(selector).every(([k, v]) => t.labels[k] === v)) continue
      for (const p of ports) {
        const target = p.targetPort ?? p.port
        const n = typeof target === 'number' ? target : typeof target === 'string' && /^\d+$/.test(target) ? Number(target) : null
        if (n === t.appPort) {
          out.push(`${describe(svc)}: port ${String(p.name ?? p.port)} targets the app of ${t.where} by number (${n}), so its traffic bypasses doorman; set targetPort: ${t.name}`)
        }
        const proto = appProtocolKind(p.appProtocol)
        if (target === t.name && proto === 'other') {
          out.push(`${describe(svc)}: port ${String(p.name ?? p.port)} declares appProtocol ${String(p.appProtocol)}, which doorman doesn't carry, but targets ${t.name}, now doorman's inbound port of ${t.where}; leave that pod uninjected or point doorman.io/app-port at its HTTP port`)
        } else if (target === t.name && proto === 'h2c' && t.protocol !== 'h2c') {
          out.push(`${describe(svc)}: port ${String(p.name ?? p.port)} declares appProtocol ${String(p.appProtocol)} but the app of ${t.where} is declared HTTP/1.1; name its port grpc or h2c, or set doorman.io/app-protocol: h2c`)
        }
      }
    }
  }
  return out
}
