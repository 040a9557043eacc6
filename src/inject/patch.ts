// JSON Patch (RFC 6902) between an object before and after injection: the webhook answers with it, and
// `doorman inject` applies it to the YAML document so that everything it does not touch — comments included — stays.
import { isMap, isSeq, isScalar, type Document, type Node } from 'yaml'
import { isObj } from './pod.js'

export type Operation =
  | { op: 'add', path: string, value: unknown }
  | { op: 'replace', path: string, value: unknown }
  | { op: 'remove', path: string }

export function escape (key: string): string { return key.replace(/~/g, '~0').replace(/\//g, '~1') }
export function unescape (seg: string): string { return seg.replace(/~1/g, '/').replace(/~0/g, '~') }
function segments (path: string): string[] { return path === '' ? [] : path.split('/').slice(1).map(unescape) }

export function deepEqual (a: unknown, b: unknown): boolean {
  if (a === b) return true
  if (Array.isArray(a)) return Array.isArray(b) && a.length === b.length && a.every((x, i) => deepEqual(x, b[i]))
  if (isObj(a) && isObj(b)) {
    const ka = Object.keys(a)
    return ka.length === Object.keys(b).length && ka.every((k) => Object.hasOwn(b, k) && deepEqual(a[k], b[k]))
  }
  return false
}

function names (list: unknown[]): string[] | null {
  const out: string[] = []
  for (const x of list) {
    if (!isObj(x) || typeof x.name !== 'string') return null
    out.push(x.name)
  }
  return new Set(out).size === out.length ? out : null
}

/** The operations that turn `a` into `b`, applied in order. */
export function diff (a: unknown, b: unknown, path = ''): Operation[] {
  if (deepEqual(a, b)) return []
  if (isObj(a) && isObj(b)) {
    const ops: Operation[] = []
    for (const k of Object.keys(a)) if (!Object.hasOwn(b, k)) ops.push({ op: 'remove', path: `${path}/${escape(k)}` })
    for (const [k, v] of Object.entries(b)) {
      if (Object.hasOwn(a, k)) ops.push(...diff(a[k], v, `${path}/${escape(k)}`))
      else ops.push({ op: 'add', path: `${path}/${escape(k)}`, value: v })
    }
    return ops
  }
  if (Array.isArray(a) && Array.isArray(b)) {
    if (a.length === b.length) return a.flatMap((x, i) => diff(x, b[i], `${path}/${i}`))
    // Named elements (containers, env, ports) inserted among kept ones: add the new ones, diff the kept ones.
    const na = names(a)
    const nb = names(b)
    if (na !== null && nb !== null && a.length < b.length) {
      const ops: Operation[] = []
      let j = 0
      for (let i = 0; i < b.length; i++) {
        if (j < a.length && nb[i] === na[j]) { ops.push(...diff(a[j], b[i], `${path}/${i}`)); j++ } else ops.push({ op: 'add', path: `${path}/${i}`, value: b[i] })
      }
      if (j === a.length) return ops
    }
    if (a.length < b.length && a.every((x, i) => deepEqual(x, b[i]))) {
      return b.slice(a.length).map((x) => ({ op: 'add', path: `${path}/-`, value: x }))
    }
  }
  return [{ op: 'replace', path, value: b }]
}

/** Applies operations to a plain object (a copy is returned). Throws on a path that does not exist. */
export function applyPatch<T> (doc: T, ops: readonly Operation[]): T {
  let root: unknown = structuredClone(doc)
  for (const op of ops) {
    const segs = segments(op.path)
    if (segs.length === 0) {
      if (op.op === 'remove') throw new Error('cannot remove the root')
      root = structuredClone(op.value)
      continue
    }
    let parent: unknown = root
    for (const seg of segs.slice(0, -1)) {
      parent = Array.isArray(parent) ? parent[Number(seg)] : isObj(parent) ? parent[seg] : undefined
      if (parent === undefined) throw new Error(`patch path ${op.path} does not exist`)
    }
    const last = segs[segs.length - 1]
    if (Array.isArray(parent)) {
      const i = last === '-' ? parent.length : Number(last)
      if (!Number.isInteger(i) || i < 0 || i > parent.length) throw new Error(`bad index in ${op.path}`)
      if (op.op === 'add') parent.splice(i, 0, structuredClone(op.value))
      else if (op.op === 'replace') parent[i] = structuredClone(op.value)
      else parent.splice(i, 1)
    } else if (isObj(parent)) {
      if (op.op === 'remove') delete parent[last]
      else parent[last] = structuredClone(op.value)
    } else {
      throw new Error(`patch path ${op.path} does not exist`)
    }
  }
  return root as T
}

/** Applies operations to a YAML document in place, keeping the comments and layout of what they don't touch. */
export function applyToYaml (doc: Document, ops: readonly Operation[]): void {
  for (const op of ops) {
    const segs = segments(op.path)
    if (segs.length === 0) {
      if (op.op !== 'remove') doc.contents = doc.createNode(op.value) as typeof doc.contents
      continue
    }
    let parent: unknown = doc.contents
    for (const seg of segs.slice(0, -1)) {
      if (isMap(parent)) parent = parent.get(seg, true)
      else if (isSeq(parent)) parent = parent.get(Number(seg), true)
      else parent = undefined
      if (parent === undefined || isScalar(parent)) throw new Error(`patch path ${op.path} does not exist in the document`)
    }
    const last = segs[segs.length - 1]
    if (isSeq(parent)) {
      const i = last === '-' ? parent.items.length : Number(last)
      if (op.op === 'add') parent.items.splice(i, 0, doc.createNode(op.value) as Node)
      else if (op.op === 'replace') parent.items[i] = doc.createNode(op.value) as Node
      else parent.items.splice(i, 1)
    } else if (isMap(parent)) {
      if (op.op === 'remove') parent.delete(last)
      else parent.set(last, doc.createNode(op.value))
    } else {
      throw new Error(`patch path ${op.path} does not exist in the document`)
    }
  }
}
