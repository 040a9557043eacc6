// doorman's install as the cluster gets it: the kustomize base and overlays rendered by `kubectl kustomize`, parsed
// into objects; and the checks every rendering of the control plane must pass, whatever its namespace and image
// (the Helm chart's test runs them on its output too).
import { spawnSync } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { parseAllDocuments } from 'yaml'
import { SETTINGS, loadConfig } from '../../src/config/index.js'

export type Any = Record<string, any>
interface Tap {
  ok: (v: unknown, msg?: string) => void
  equal: (a: unknown, b: unknown, msg?: string) => void
  same: (a: unknown, b: unknown, msg?: string) => void
  doesNotThrow: (fn: () => unknown, msg?: string) => void
}

/** The objects of a multi-document YAML text (empty documents dropped). */
export function parseObjects (text: string, source: string): Any[] {
  const docs = parseAllDocuments(text)
  if (!Array.isArray(docs)) return []
  for (const d of docs) if (d.errors.length > 0) throw new Error(`${source}: ${d.errors[0].message}`)
  return docs.map((d) => d.toJS() as Any).filter((o) => o !== null)
}

/** Why kubectl can't render kustomizations here, or undefined when it can. */
export const kubectlMissing: string | undefined = spawnSync('kubectl', ['version', '--client'], { stdio: 'ignore' }).status === 0
  ? undefined
  : 'kubectl is not installed, so the kustomizations are not rendered (its built-in kustomize is what `kubectl apply -k` uses)'

export interface Rendering { text: string, objects: Any[] }

/** `kubectl kustomize DIR`. */
export function kustomize (dir: string): Rendering {
  const r = spawnSync('kubectl', ['kustomize', dir], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`kubectl kustomize ${dir}: ${r.stderr}`)
  return { text: r.stdout, objects: parseObjects(r.stdout, dir) }
}

export function find (objects: Any[], kind: string, name: string): Any {
  const o = objects.find((x) => x.kind === kind && x.metadata?.name === name)
  if (o === undefined) throw new Error(`no ${kind} ${name}`)
  return o
}

/** Containers of every workload that run the doorman image, with the object they belong to. */
export function doormanContainers (objects: Any[], image: string): Array<{ owner: Any, container: Any }> {
  return objects.flatMap((o) => ((o.spec?.template?.spec?.containers ?? []) as Any[])
    .filter((c) => c.image === image)
    .map((container) => ({ owner: o, container })))
}

export function envOf (container: Any): Record<string, string> {
  return Object.fromEntries(((container.env ?? []) as Any[]).filter((e) => e.value !== undefined).map((e) => [e.name, e.value]))
}

const KUBE_SYSTEM = ['kube-system', 'kube-public', 'kube-node-lease']

export interface Expect {
  /** The namespace the control plane runs in. */
  namespace: string
  /** The image of the webhook and the checker, which the webhook injects too. */
  image: string
  /** Names the objects start with (`doorman` for kustomize and a Helm release named doorman). */
  prefix?: string
}

/**
 * The control plane hangs together: the webhook configuration reaches the webhook's Service and pods, the API server
 * can check the webhook's certificate (cert-manager's annotation, or a CA bundle that signed the served certificate),
 * the webhook injects the image it runs, doorman's own and the system namespaces are never sent, and every doorman
 * container's settings load.
 */
export function checkControlPlane (t: Tap, objects: Any[], expect: Expect): void {
  const prefix = expect.prefix ?? 'doorman'
  const config = find(objects, 'MutatingWebhookConfiguration', prefix)
  const deployment = find(objects, 'Deployment', `${prefix}-webhook`)
  const service = find(objects, 'Service', `${prefix}-webhook`)
  const pdb = find(objects, 'PodDisruptionBudget', `${prefix}-webhook`)
  const checker = find(objects, 'Deployment', `${prefix}-checker`)
  for (const o of objects.filter((x) => x.kind !== 'MutatingWebhookConfiguration' && x.kind !== 'Namespace')) {
    t.equal(o.metadata.namespace, expect.namespace, `${String(o.kind)} ${String(o.metadata.name)}: in ${expect.namespace}`)
  }
  const webhook = deployment.spec.template.spec.containers[0]
  t.equal(webhook.image, expect.image, 'the webhook runs the image')
  t.equal(checker.spec.template.spec.containers[0].image, expect.image, 'so does the checker')
  t.equal(envOf(webhook).DOORMAN_SIDECAR_IMAGE, expect.image, 'and the webhook injects it (DOORMAN_SIDECAR_IMAGE)')

  t.same(config.webhooks.map((w: Any) => w.clientConfig.service.path), ['/mutate', '/mutate/namespace'])
  for (const w of config.webhooks as Any[]) {
    t.equal(w.sideEffects, 'None', 'no side effects, so dry runs are sent too')
    t.same(w.admissionReviewVersions, ['v1'])
    t.same(w.rules[0].operations, ['CREATE'])
    t.same(w.rules[0].resources, ['pods'])
    const ref = w.clientConfig.service
    t.equal(`${String(ref.namespace)}/${String(ref.name)}`, `${expect.namespace}/${String(service.metadata.name)}`, 'points at the webhook Service')
    const port = (service.spec.ports as Any[]).find((p) => p.port === ref.port)
    t.ok(port, 'on a port the Service has')
    t.ok((webhook.ports as Any[]).some((p) => p.name === port.targetPort && p.containerPort === Number(envOf(webhook).DOORMAN_WEBHOOK_PORT)), 'which reaches the webhook\'s HTTPS port')
    const excluded = (w.namespaceSelector.matchExpressions as Any[]).find((e) => e.key === 'kubernetes.io/metadata.name')
    t.equal(excluded.operator, 'NotIn')
    for (const ns of [...KUBE_SYSTEM, expect.namespace]) t.ok(excluded.values.includes(ns), `${String(w.name)}: ${ns} is never sent`)
  }
  const [perPod, perNamespace] = config.webhooks as Any[]
  t.same(perPod.namespaceSelector.matchExpressions.find((e: Any) => e.key === 'doorman.io/inject'), { key: 'doorman.io/inject', operator: 'NotIn', values: ['enabled', 'disabled'] })
  t.same(perNamespace.namespaceSelector.matchExpressions.find((e: Any) => e.key === 'doorman.io/inject'), { key: 'doorman.io/inject', operator: 'In', values: ['enabled'] })

  // The serving certificate: the API server calls <service>.<namespace>.svc and checks it against the CA bundle.
  const host = `${String(service.metadata.name)}.${expect.namespace}.svc`
  const volume = (deployment.spec.template.spec.volumes as Any[]).find((v) => v.secret !== undefined)
  const mount = (webhook.volumeMounts as Any[]).find((m) => m.name === volume.name)
  t.ok(envOf(webhook).DOORMAN_WEBHOOK_CERT.startsWith(mount.mountPath + '/') && envOf(webhook).DOORMAN_WEBHOOK_KEY.startsWith(mount.mountPath + '/'), 'the webhook reads its certificate from the mounted Secret')
  const injectFrom = config.metadata.annotations?.['cert-manager.io/inject-ca-from'] as string | undefined
  if (injectFrom !== undefined) {
    const cert = find(objects, 'Certificate', `${prefix}-webhook`)
    t.equal(injectFrom, `${expect.namespace}/${String(cert.metadata.name)}`, 'cert-manager injects the CA of the serving certificate')
    t.ok(cert.spec.dnsNames.includes(host), `the certificate names ${host}`)
    t.equal(volume.secret.secretName, cert.spec.secretName, 'the webhook mounts the certificate\'s Secret')
    for (const w of config.webhooks as Any[]) t.equal(w.clientConfig.caBundle, undefined, 'no CA bundle of its own')
  } else {
    const secret = objects.find((o) => o.kind === 'Secret' && o.metadata.name === volume.secret.secretName)
    const bundles = new Set((config.webhooks as Any[]).map((w) => w.clientConfig.caBundle))
    t.equal(bundles.size, 1, 'both webhooks trust the same CA')
    const ca = new X509Certificate(Buffer.from([...bundles][0] as string, 'base64'))
    if (secret !== undefined) {
      const served = new X509Certificate(Buffer.from(secret.data['tls.crt'], 'base64'))
      t.ok(served.checkHost(host) !== undefined, `the served certificate names ${host}`)
      t.ok(served.verify(ca.publicKey), 'and is signed by the CA bundle')
    }
  }
  t.same(pdb.spec.selector.matchLabels, deployment.spec.selector.matchLabels, 'the disruption budget covers the webhook')
  t.ok(pdb.spec.minAvailable >= 1 && pdb.spec.minAvailable < deployment.spec.replicas, 'a node drain never takes every replica, nor is blocked by the budget')

  const known = new Set(SETTINGS.map((s) => s.env))
  const running = doormanContainers(objects, expect.image)
  t.equal(running.length, 2, 'doorman runs as the webhook and the checker')
  for (const { owner, container } of running) {
    const where = `${String(owner.metadata.name)}/${String(container.name)}`
    for (const e of container.env as Any[]) if (e.name.startsWith('DOORMAN_')) t.ok(known.has(e.name), `${where}: ${String(e.name)} is a setting`)
    t.doesNotThrow(() => loadConfig(envOf(container)), `${where}: its settings load`)
    t.equal(container.securityContext?.readOnlyRootFilesystem, true, `${where}: read-only root filesystem`)
  }
}
