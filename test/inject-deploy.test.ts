// Every manifest in deploy/ against the Kubernetes schemas, and against each other and the code: the webhook
// configuration reaches the webhook's Service and port, the certificate names the Service, the dashboard and the
// alerts use metrics doorman exports, the example app injects cleanly, the image runs as the injector expects.
import t from 'tap'
import { readFileSync, readdirSync, statSync } from 'node:fs'
import path from 'node:path'
import { parseAllDocuments } from 'yaml'
import { ROOT } from './helpers/index.js'
import { schemaErrors } from './helpers/k8s.js'
import { SETTINGS, loadConfig } from '../src/config/index.js'
import { injectObject, serviceWarnings } from '../src/inject/workload.js'
import { SYSTEM_NAMESPACES } from '../src/inject/admission.js'

type Any = Record<string, any>
const DEPLOY = path.join(ROOT, 'deploy')

function files (dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = path.join(dir, f)
    return statSync(p).isDirectory() ? files(p) : [p]
  })
}

function load (file: string): Any[] {
  const docs = parseAllDocuments(readFileSync(file, 'utf8'))
  if (!Array.isArray(docs)) return []
  for (const d of docs) if (d.errors.length > 0) throw new Error(`${file}: ${d.errors[0].message}`)
  return docs.map((d) => d.toJS() as Any).filter((o) => o !== null)
}

const yamlFiles = files(DEPLOY).filter((f) => f.endsWith('.yaml'))
const all = yamlFiles.flatMap((f) => load(f).map((o) => ({ file: path.relative(ROOT, f), o })))
const objects = all.filter(({ o }) => o.kind !== 'Kustomization')
const find = (kind: string, name: string): Any => {
  const x = objects.find(({ o }) => o.kind === kind && o.metadata?.name === name)
  if (x === undefined) throw new Error(`no ${kind} ${name} in deploy/`)
  return x.o
}

t.test('every manifest validates against the Kubernetes schemas', async (t) => {
  t.ok(objects.length >= 15, `${objects.length} objects`)
  for (const { file, o } of objects) t.same(await schemaErrors(o), [], `${file}: ${String(o.kind)} ${String(o.metadata?.name)}`)
})

t.test('the kustomizations list every manifest beside them, and their generated ConfigMaps validate', async (t) => {
  for (const { file, o } of all.filter(({ o }) => o.kind === 'Kustomization')) {
    const dir = path.dirname(path.join(ROOT, file))
    const listed = (o.resources ?? []) as string[]
    const beside = readdirSync(dir).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml')
    t.same([...listed].sort(), beside.sort(), `${file}: resources are the manifests beside it`)
    for (const g of (o.configMapGenerator ?? []) as Any[]) {
      const data = Object.fromEntries((g.files as string[]).map((f) => [path.basename(f), readFileSync(path.join(dir, f), 'utf8')]))
      const cm = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: g.name, namespace: g.namespace, labels: g.options?.labels }, data }
      t.same(await schemaErrors(cm), [], `${file}: the generated ConfigMap ${String(g.name)}`)
    }
  }
})

t.test('doorman containers in deploy/ use known settings with valid values', async (t) => {
  const known = new Set(SETTINGS.map((s) => s.env))
  let seen = 0
  for (const { file, o } of objects) {
    const containers: Any[] = o.spec?.template?.spec?.containers ?? []
    for (const c of containers.filter((c) => c.image === 'doorman' || String(c.image).startsWith('doorman:'))) {
      seen++
      const env = Object.fromEntries((c.env as Any[]).map((e) => [e.name, e.value]))
      for (const name of Object.keys(env).filter((n) => n.startsWith('DOORMAN_'))) t.ok(known.has(name), `${file}: ${name} is a setting`)
      t.doesNotThrow(() => loadConfig(env), `${file}: ${String(c.name)}'s settings load`)
      t.equal(c.securityContext?.readOnlyRootFilesystem, true, `${file}: read-only root filesystem`)
    }
  }
  t.equal(seen, 2, 'the webhook and the checker')
})

t.test('the webhook: configuration → Service → pods, certificate, disruption budget', async (t) => {
  const config = find('MutatingWebhookConfiguration', 'doorman')
  const deployment = find('Deployment', 'doorman-webhook')
  const service = find('Service', 'doorman-webhook')
  const pdb = find('PodDisruptionBudget', 'doorman-webhook')
  const cert = find('Certificate', 'doorman-webhook')
  t.same(config.webhooks.map((w: Any) => w.clientConfig.service.path), ['/mutate', '/mutate/namespace'])
  for (const w of config.webhooks as Any[]) {
    t.equal(w.failurePolicy, 'Ignore', `${String(w.name)}: a webhook outage never blocks pods`)
    t.equal(w.sideEffects, 'None', 'no side effects, so dry runs are sent too')
    t.same(w.admissionReviewVersions, ['v1'])
    t.same(w.rules[0].operations, ['CREATE'])
    t.same(w.rules[0].resources, ['pods'])
    const ref = w.clientConfig.service
    t.equal(`${String(ref.namespace)}/${String(ref.name)}`, `${String(service.metadata.namespace)}/${String(service.metadata.name)}`, 'points at the webhook Service')
    const port = (service.spec.ports as Any[]).find((p) => p.port === ref.port)
    t.ok(port, 'on a port the Service has')
    t.ok((deployment.spec.template.spec.containers[0].ports as Any[]).some((p) => p.name === port.targetPort && p.containerPort === 8443), 'which reaches the webhook\'s HTTPS port')
    const excluded = (w.namespaceSelector.matchExpressions as Any[]).find((e) => e.key === 'kubernetes.io/metadata.name')
    t.equal(excluded.operator, 'NotIn')
    t.same([...excluded.values].sort(), [...SYSTEM_NAMESPACES].sort(), 'system namespaces are never sent')
  }
  const [perPod, perNamespace] = config.webhooks as Any[]
  t.same(perPod.namespaceSelector.matchExpressions[1], { key: 'doorman.io/inject', operator: 'NotIn', values: ['enabled', 'disabled'] })
  t.same(perNamespace.namespaceSelector.matchExpressions[1], { key: 'doorman.io/inject', operator: 'In', values: ['enabled'] })
  t.equal(config.metadata.annotations['cert-manager.io/inject-ca-from'], `${String(cert.metadata.namespace)}/${String(cert.metadata.name)}`, 'the CA comes from the serving certificate')
  t.ok(cert.spec.dnsNames.includes(`${String(service.metadata.name)}.${String(service.metadata.namespace)}.svc`), 'the certificate names the Service')
  const volume = (deployment.spec.template.spec.volumes as Any[]).find((v) => v.secret?.secretName === cert.spec.secretName)
  t.ok(volume, 'the webhook mounts the certificate\'s Secret')
  const mount = (deployment.spec.template.spec.containers[0].volumeMounts as Any[]).find((m) => m.name === volume.name)
  const env = Object.fromEntries((deployment.spec.template.spec.containers[0].env as Any[]).map((e) => [e.name, e.value]))
  t.ok(String(env.DOORMAN_WEBHOOK_CERT).startsWith(mount.mountPath + '/') && String(env.DOORMAN_WEBHOOK_KEY).startsWith(mount.mountPath + '/'), 'and reads it from the mount')
  t.equal(deployment.spec.replicas, 2)
  t.same(pdb.spec.selector.matchLabels, deployment.spec.selector.matchLabels, 'the disruption budget covers the webhook')
  t.equal(pdb.spec.minAvailable, 1)
})

t.test('the example app injects cleanly, and its Service reaches doorman', async (t) => {
  const app = find('Deployment', 'echo')
  const svc = find('Service', 'echo')
  for (const mode of ['native', 'container'] as const) {
    const r = injectObject(app, { mode, drainToken: 'example-token' })
    t.same(r.injected, ['/spec/template'], mode)
    t.same(r.warnings, [], 'no warnings')
    t.same(await schemaErrors(r.object), [], `the injected example validates (${mode})`)
    t.same(serviceWarnings([svc], r.takeovers), [], 'the Service targets the port by name')
    const spec = (r.object as Any).spec.template.spec
    const sidecar = [...(spec.initContainers ?? []), ...spec.containers].find((c: Any) => c.name === 'doorman')
    const env = Object.fromEntries((sidecar.env as Any[]).filter((e) => e.value !== undefined).map((e) => [e.name, e.value]))
    t.equal(env.DOORMAN_SERVICE, 'echo')
    t.equal(env.DOORMAN_REGISTRY, `redis://${String(find('Service', 'doorman-redis').metadata.name)}.doorman-system.svc:6379`, 'the registry is the Redis of deploy/')
  }
})

/** Metric names doorman defines, from the source. */
function definedMetrics (): Set<string> {
  const src = files(path.join(ROOT, 'src')).filter((f) => f.endsWith('.ts')).map((f) => readFileSync(f, 'utf8')).join('\n')
  return new Set([...src.matchAll(/'(doorman_[a-z0-9_]+)'/g)].map((m) => m[1]))
}

function usedMetrics (text: string): string[] {
  return [...new Set([...text.matchAll(/\b(doorman_[a-z0-9_]+)/g)].map((m) => m[1].replace(/_(bucket|sum|count)$/, '')))]
}

t.test('the dashboard and the alerts use metrics doorman exports', async (t) => {
  const defined = definedMetrics()
  const dashboard = JSON.parse(readFileSync(path.join(DEPLOY, 'monitoring', 'grafana-dashboard.json'), 'utf8')) as Any
  t.equal(dashboard.uid, 'doorman')
  const exprs = (dashboard.panels as Any[]).flatMap((p) => (p.targets ?? []).map((x: Any) => x.expr as string))
  t.ok(exprs.length >= 10)
  const ids = (dashboard.panels as Any[]).map((p) => p.id)
  t.equal(new Set(ids).size, ids.length, 'panel ids are unique')
  for (const name of usedMetrics(exprs.join('\n'))) t.ok(defined.has(name), `dashboard: ${name} is exported`)
  t.ok(exprs.some((e) => e.includes('doorman_inflight_requests') && e.includes('/ doorman_concurrency_limit')), 'a saturation panel')
  const rules = find('PrometheusRule', 'doorman').spec.groups.flatMap((g: Any) => g.rules) as Any[]
  for (const r of rules) {
    for (const name of usedMetrics(r.expr as string)) t.ok(defined.has(name), `${String(r.alert)}: ${name} is exported`)
    t.ok(['warning', 'critical'].includes(r.labels?.severity), `${String(r.alert)}: a severity`)
  }
  const names = rules.map((r) => r.alert)
  for (const alert of ['DoormanSaturated', 'DoormanShedding', 'DoormanProbeSlow', 'DoormanDrainCut']) t.ok(names.includes(alert), alert)
  t.match(rules.find((r) => r.alert === 'DoormanSaturated').expr, /doorman_inflight_requests \/ doorman_concurrency_limit\) > 0\.8/, 'saturation over 80%')
})

t.test('the image: multi-stage, production dependencies only, the non-root user the injector expects', async (t) => {
  const docker = readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8')
  t.equal(docker.match(/^FROM /gm)?.length, 2, 'two stages')
  t.match(docker, /RUN npm ci\b/)
  t.match(docker, /npm prune --omit=dev/)
  t.match(docker, /COPY --from=build \/app\/node_modules/)
  t.notMatch(docker, /COPY --from=build \/app\/src/, 'no sources in the runtime stage')
  const user = /^USER (\d+)(?::(\d+))?$/m.exec(docker)
  t.ok(user, 'a numeric USER, so runAsNonRoot can be checked')
  const injected = injectObject(find('Deployment', 'echo')).object as Any
  const sidecar = injected.spec.template.spec.initContainers[0]
  t.equal(Number(user?.[1]), sidecar.securityContext.runAsUser, 'the same uid the injector sets')
  t.not(Number(user?.[1]), 0)
  t.match(docker, /^ENTRYPOINT \["node", "\/app\/dist\/cli\.js"\]$/m)
  t.same(sidecar.args, ['run'], 'the sidecar runs the entrypoint with `run`')
  const ignore = readFileSync(path.join(ROOT, '.dockerignore'), 'utf8').split('\n')
  for (const p of ['node_modules', 'dist', '.git']) t.ok(ignore.includes(p), `.dockerignore: ${p}`)
})
