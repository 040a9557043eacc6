// One AdmissionReview (admission.k8s.io/v1) in, its response out: a pure function, so the webhook server stays a
// thin HTTPS wrapper. Pods that opt in get a JSONPatch; everything else is allowed untouched.
import { randomBytes } from 'node:crypto'
import { injectObject } from './workload.js'
import { InjectError, isObj, type InjectOptions, type Obj } from './pod.js'
import { diff } from './patch.js'

/** Namespaces whose pods are never injected. */
export const SYSTEM_NAMESPACES: readonly string[] = Object.freeze(['kube-system', 'kube-public', 'kube-node-lease', 'doorman-system'])

export interface AdmissionOptions extends Pick<InjectOptions, 'mode' | 'image' | 'env' | 'resources'> {
  /** The namespace opted in (the `/mutate/namespace` path): inject unless the pod says `disabled`. */
  injectByDefault: boolean
  /** A fresh token for each injected pod's preStop drain call. */
  token?: () => string
}

export type Outcome = 'injected' | 'skipped' | 'denied' | 'invalid'

export interface AdmissionResult {
  /** HTTP status for the answer: 200, or 400 for a body that is not an AdmissionReview. */
  status: number
  body: unknown
  outcome: Outcome
  dryRun: boolean
  /** Why a pod was skipped or denied, or what was wrong with the review, for the log. */
  detail: string
}

export function newToken (): string { return randomBytes(18).toString('base64url') }

function invalid (detail: string): AdmissionResult {
  return { status: 400, body: { error: `not an admission.k8s.io/v1 AdmissionReview: ${detail}` }, outcome: 'invalid', dryRun: false, detail }
}

export function review (raw: string | Buffer, opts: AdmissionOptions): AdmissionResult {
  let parsed: unknown
  try {
    parsed = JSON.parse(raw.toString())
  } catch (err) {
    return invalid(`bad JSON (${(err as Error).message})`)
  }
  if (!isObj(parsed)) return invalid('the body is not a JSON object')
  if (parsed.apiVersion !== 'admission.k8s.io/v1' || parsed.kind !== 'AdmissionReview') return invalid(`got apiVersion ${JSON.stringify(parsed.apiVersion)}, kind ${JSON.stringify(parsed.kind)}`)
  const req = parsed.request
  if (!isObj(req)) return invalid('no request')
  if (typeof req.uid !== 'string' || req.uid === '') return invalid('request.uid is missing')
  const uid = req.uid
  const dryRun = req.dryRun === true
  const answer = (outcome: Outcome, detail: string, response: Obj = {}): AdmissionResult => ({
    status: 200,
    body: { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response: { uid, allowed: true, ...response } },
    outcome,
    dryRun,
    detail
  })
  const kind = isObj(req.kind) ? req.kind : {}
  if (kind.kind !== 'Pod' || (req.subResource !== undefined && req.subResource !== '')) return answer('skipped', `not a pod (${String(kind.kind)})`)
  if (req.operation !== 'CREATE') return answer('skipped', `operation ${String(req.operation)}`)
  const namespace = typeof req.namespace === 'string' ? req.namespace : ''
  if (SYSTEM_NAMESPACES.includes(namespace)) return answer('skipped', `system namespace ${namespace}`)
  const pod = req.object
  if (!isObj(pod) || !isObj(pod.spec)) return invalid('request.object is not a pod')
  let result
  try {
    const { token, ...inject } = opts
    result = injectObject({ ...pod, kind: 'Pod' }, { ...inject, drainToken: token?.() })
  } catch (err) {
    if (!(err instanceof InjectError)) throw err
    return {
      ...answer('denied', err.message),
      body: { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response: { uid, allowed: false, status: { code: 400, message: `doorman: ${err.message}` } } }
    }
  }
  const warnings = result.warnings.slice(0, 10).map((w) => w.length > 250 ? w.slice(0, 247) + '...' : w)
  const extra = warnings.length > 0 ? { warnings } : {}
  if (result.injected.length === 0) return answer('skipped', 'not opted in or already injected', extra)
  const ops = diff({ ...pod, kind: 'Pod' }, result.object)
  return answer('injected', `${ops.length} operations`, { patchType: 'JSONPatch', patch: Buffer.from(JSON.stringify(ops)).toString('base64'), ...extra })
}
