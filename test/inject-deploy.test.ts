// Every manifest in deploy/ against the Kubernetes schemas, and rendered as `kubectl apply -k` renders it: the base,
// the example overlays (another registry, another namespace) and both at once, each checked to hang together (the
// webhook configuration reaches the webhook, the certificate names its Service, the webhook injects the image it
// runs, no trace of the default namespace is left); the dashboard and the alerts use metrics doorman exports, the
// example app injects cleanly, the image runs as the injector expects.
import t from 'tap'
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { ROOT } from './helpers/index.js'
import { schemaErrors } from './helpers/k8s.js'
import { checkControlPlane, envOf, find as findIn, kubectlMissing, kustomize, parseObjects, type Any, type Rendering } from './helpers/deploy.js'
import { injectObject, serviceWarnings } from '../src/inject/workload.js'

const DEPLOY = path.join(ROOT, 'deploy')

function files (dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = path.join(dir, f)
    return statSync(p).isDirectory() ? files(p) : [p]
  })
}

const yamlFiles = files(DEPLOY).filter((f) => f.endsWith('.yaml') && path.basename(f) !== 'kustomizeconfig.yaml')
const all = yamlFiles.flatMap((f) => parseObjects(readFileSync(f, 'utf8'), f).map((o) => ({ file: path.relative(ROOT, f), o })))
// Kustomizations, their configurations and the transformer of namespace-refs are kustomize's, not the cluster's.
const objects = all.filter(({ o }) => o.kind !== 'Kustomization' && o.apiVersion !== 'builtin')
const find = (kind: string, name: string): Any => findIn(objects.map(({ o }) => o), kind, name)

t.test('every manifest validates against the Kubernetes schemas', async (t) => {
  t.ok(objects.length >= 15, `${objects.length} objects`)
  for (const { file, o } of objects) t.same(await schemaErrors(o), [], `${file}: ${String(o.kind)} ${String(o.metadata?.name)}`)
})

t.test('the kustomizations list every manifest beside them', async (t) => {
  for (const { file, o } of all.filter(({ o }) => o.kind === 'Kustomization')) {
    const dir = path.dirname(path.join(ROOT, file))
    const listed = ((o.resources ?? []) as string[]).filter((r) => r.endsWith('.yaml'))
    const beside = readdirSync(dir).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml' && f !== 'kustomizeconfig.yaml')
    t.same([...listed].sort(), beside.sort(), `${file}: resources are the manifests beside it`)
  }
})

const NEW_IMAGE = 'registry.example.com/platform/doorman:0.2.0'
const BASE_IMAGE = 'doorman:0.1.0'

/** Renders a kustomization written to a temporary directory, its paths relative to it as kustomize requires. */
function overlay (t: Tap.Test, fields: (rel: (p: string) => string) => Any): Rendering {
  const dir = mkdtempSync(path.join(tmpdir(), 'doorman-overlay-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const rel = (p: string): string => path.relative(dir, path.join(DEPLOY, p))
  writeFileSync(path.join(dir, 'kustomization.yaml'), JSON.stringify({ apiVersion: 'kustomize.config.k8s.io/v1beta1', kind: 'Kustomization', ...fields(rel) }))
  return kustomize(dir)
}

async function validates (t: Tap.Test, r: Rendering): Promise<void> {
  for (const o of r.objects) t.same(await schemaErrors(o), [], `${String(o.kind)} ${String(o.metadata?.name)} validates`)
}

t.test('rendered with kubectl kustomize', { skip: kubectlMissing }, async (t) => {
  await t.test('the base', async (t) => {
    const r = kustomize(path.join(DEPLOY, 'base'))
    await validates(t, r)
    checkControlPlane(t, r.objects, { namespace: 'doorman-system', image: BASE_IMAGE })
    t.equal(findIn(r.objects, 'Namespace', 'doorman-system').metadata.labels['doorman.io/inject'], 'disabled', 'the namespace is labelled never to be injected')
    t.equal(findIn(r.objects, 'Deployment', 'doorman-webhook').spec.replicas, 2, 'two webhook replicas')
    t.equal(findIn(r.objects, 'PodDisruptionBudget', 'doorman-webhook').spec.minAvailable, 1)
  })

  await t.test('overlays/registry: the image everywhere, the injected one too', async (t) => {
    const r = kustomize(path.join(DEPLOY, 'overlays', 'registry'))
    await validates(t, r)
    checkControlPlane(t, r.objects, { namespace: 'doorman-system', image: NEW_IMAGE })
    t.notMatch(r.text, BASE_IMAGE, `no ${BASE_IMAGE} left`)
    const digest = overlay(t, (rel) => ({ resources: [rel('base')], images: [{ name: 'doorman', newName: 'registry.example.com/doorman', digest: 'sha256:' + 'a'.repeat(64) }] }))
    checkControlPlane(t, digest.objects, { namespace: 'doorman-system', image: `registry.example.com/doorman@sha256:${'a'.repeat(64)}` })
  })

  await t.test('overlays/namespace: no doorman-system left anywhere', async (t) => {
    const r = kustomize(path.join(DEPLOY, 'overlays', 'namespace'))
    await validates(t, r)
    checkControlPlane(t, r.objects, { namespace: 'mesh', image: BASE_IMAGE })
    t.notMatch(r.text, 'doorman-system', 'no doorman-system left')
    t.equal(findIn(r.objects, 'Namespace', 'mesh').metadata.labels['doorman.io/inject'], 'disabled')
    t.equal(envOf(findIn(r.objects, 'Deployment', 'doorman-checker').spec.template.spec.containers[0]).DOORMAN_REGISTRY, 'redis://doorman-redis:6379', 'the checker finds the Redis beside it')
  })

  await t.test('both, stacked on the registry overlay, with monitoring: moved and re-imaged together', async (t) => {
    const r = overlay(t, (rel) => ({ resources: [rel('overlays/registry'), rel('monitoring')], namespace: 'platform-mesh', transformers: [rel('base/namespace-refs')] }))
    await validates(t, r)
    checkControlPlane(t, r.objects, { namespace: 'platform-mesh', image: NEW_IMAGE })
    t.notMatch(r.text, 'doorman-system', 'no doorman-system left')
    t.notMatch(r.text, BASE_IMAGE, `no ${BASE_IMAGE} left`)
    for (const kind of ['PodMonitor', 'PrometheusRule', 'ConfigMap']) t.equal(r.objects.find((o) => o.kind === kind)?.metadata.namespace, 'platform-mesh', `the ${kind} moved too`)
  })

  await t.test('overlays/mtls: injected pods get mTLS (permissive) and csi-driver-spiffe\'s volume', async (t) => {
    const r = kustomize(path.join(DEPLOY, 'overlays', 'mtls'))
    await validates(t, r)
    checkControlPlane(t, r.objects, { namespace: 'doorman-system', image: BASE_IMAGE })
    const env = envOf(findIn(r.objects, 'Deployment', 'doorman-webhook').spec.template.spec.containers[0])
    t.same(JSON.parse(env.DOORMAN_SIDECAR_ENV), { DOORMAN_MTLS: 'permissive' })
    const app = parseObjects(readFileSync(path.join(DEPLOY, 'example', 'app.yaml'), 'utf8'), 'app').find((o) => o.kind === 'Deployment') as Any
    const injected = injectObject(app, { env: JSON.parse(env.DOORMAN_SIDECAR_ENV) }).object as Any
    const spec = injected.spec.template.spec
    t.equal(spec.volumes.find((v: Any) => v.name === 'doorman-spiffe')?.csi.driver, 'spiffe.csi.cert-manager.io')
    const sidecar = [...(spec.initContainers ?? []), ...spec.containers].find((c: Any) => c.name === 'doorman')
    t.equal(sidecar.volumeMounts[0].mountPath, '/var/run/secrets/spiffe.io')
    t.same(await schemaErrors(injected), [], 'the injected app validates')
  })

  await t.test('without namespace-refs, the namespace overlay would break TLS (why the overlays list it)', async (t) => {
    const r = overlay(t, (rel) => ({ resources: [rel('base')], namespace: 'mesh' }))
    t.match(r.text, 'doorman-webhook.doorman-system.svc', 'the certificate still names the old namespace')
  })

  await t.test('monitoring and the example render and validate', async (t) => {
    for (const dir of ['monitoring', 'example']) await validates(t, kustomize(path.join(DEPLOY, dir)))
  })
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
    const env = envOf(sidecar)
    t.equal(env.DOORMAN_SERVICE, 'echo')
    t.equal(env.DOORMAN_REGISTRY, `redis://${String(find('Service', 'doorman-redis').metadata.name)}.doorman-system.svc:6379`, 'the registry is the Redis of deploy/base')
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
