// Kubernetes schema validation for tests: the models of the `kubernetes-models` packages carry validators compiled
// with ajv from the Kubernetes OpenAPI schemas (and from the cert-manager and prometheus-operator CRDs). Those
// schemas allow unknown fields, as the API server does without strict field validation; `kubectl apply` validates
// strictly, so a field the schema never looks at is reported here too.

type Obj = Record<string, unknown>
function isObj (v: unknown): v is Obj { return typeof v === 'object' && v !== null && !Array.isArray(v) }

interface ModelClass { prototype: { validate: () => void } }

const PACKAGES: Record<string, string> = {
  'cert-manager.io': '@kubernetes-models/cert-manager/cert-manager.io',
  'monitoring.coreos.com': '@kubernetes-models/prometheus-operator/monitoring.coreos.com'
}

async function modelFor (apiVersion: string, kind: string): Promise<ModelClass> {
  const [group, version] = apiVersion.includes('/') ? apiVersion.split('/') : ['', apiVersion]
  const base = group === '' ? 'kubernetes-models' : PACKAGES[group] ?? `kubernetes-models/${group}`
  const specifier = `${base}${group === '' || PACKAGES[group] !== undefined ? '' : ''}/${version}/${kind}`
  const mod = await import(specifier) as Record<string, ModelClass>
  const model = mod[kind]
  if (model === undefined) throw new Error(`no schema for ${apiVersion} ${kind}`)
  return model
}

/** Wraps a value so that every property the validator reads is recorded as `path`. */
function recorder (value: unknown, path: string, read: Set<string>): unknown {
  if (typeof value !== 'object' || value === null) return value
  return new Proxy(value as object, {
    get (target, key, receiver) {
      const v = Reflect.get(target, key, receiver)
      if (typeof key !== 'string' || !Object.hasOwn(target, key)) return v
      const p = `${path}/${key}`
      read.add(p)
      return recorder(v, p, read)
    }
  })
}

function unknownFields (value: unknown, path: string, read: Set<string>, out: string[]): void {
  if (Array.isArray(value)) { value.forEach((v, i) => { unknownFields(v, `${path}/${i}`, read, out) }); return }
  if (!isObj(value)) return
  for (const [k, v] of Object.entries(value)) {
    const p = `${path}/${k}`
    if (!read.has(p)) out.push(`${p === '' ? '/' : p}: unknown field ${JSON.stringify(k)}`)
    else unknownFields(v, p, read, out)
  }
}

/** Problems with one Kubernetes object against its schema (empty when it is valid). */
export async function schemaErrors (o: unknown): Promise<string[]> {
  if (!isObj(o) || typeof o.apiVersion !== 'string' || typeof o.kind !== 'string') return ['not a Kubernetes object (apiVersion and kind are required)']
  let model: ModelClass
  try {
    model = await modelFor(o.apiVersion, o.kind)
  } catch (err) {
    return [`no schema for ${o.apiVersion} ${o.kind}: ${(err as Error).message}`]
  }
  const read = new Set<string>(['/apiVersion', '/kind'])
  const out: string[] = []
  try {
    model.prototype.validate.call(recorder(structuredClone(o), '', read))
  } catch (err) {
    out.push(...String((err as Error).message).split('\n'))
    return out
  }
  unknownFields(o, '', read, out)
  return out
}
