// charts/doorman with the real helm: it lints, renders with the default values and with others, the output validates
// against the Kubernetes (and cert-manager, prometheus-operator) schemas and hangs together like the kustomize base,
// it is that base in substance, values.schema.json refuses bad values at install, and the certificate the chart
// generates is one the API server would accept from the real webhook.
import t from 'tap'
import https from 'node:https'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { parse } from 'yaml'
import { CLI, ROOT, freePort, request, spawnNode, waitFor } from './helpers/index.js'
import { schemaErrors } from './helpers/k8s.js'
import { checkControlPlane, envOf, find, kubectlMissing, kustomize, parseObjects, type Any, type Rendering } from './helpers/deploy.js'
import { CHART, helm, helmMissing, helmTemplate } from './helpers/helm.js'
import { SETTINGS, loadConfig } from '../src/config/index.js'
import { renderChartSchema } from '../tools/src/config-doc.js'
import { injectObject } from '../src/inject/workload.js'

const read = (p: string): string => readFileSync(path.join(ROOT, p), 'utf8')
const schema = JSON.parse(read('charts/doorman/values.schema.json')) as Any

t.test('the chart\'s metadata and copies agree with the rest of the repository', async (t) => {
  const chart = parse(read('charts/doorman/Chart.yaml')) as Any
  t.equal(chart.appVersion, (JSON.parse(read('package.json')) as Any).version, 'appVersion is doorman\'s version (the default image tag)')
  t.equal(read('charts/doorman/files/grafana-dashboard.json'), read('deploy/monitoring/grafana-dashboard.json'), 'the dashboard is deploy/monitoring\'s')
  t.same(parse(read('charts/doorman/files/prometheus-rules.yaml')), parseObjects(read('deploy/monitoring/prometheus-rule.yaml'), 'rule')[0].spec, 'the alerts are deploy/monitoring\'s')
  t.equal(read('charts/doorman/values.schema.json'), renderChartSchema(read('charts/doorman/values.schema.json')), 'values.schema.json: sidecar.env and checker.env take the settings of the table (`npm run docs:config` rewrites them)')
})

async function validates (t: Tap.Test, r: Rendering): Promise<void> {
  t.ok(r.objects.length > 0)
  for (const o of r.objects) t.same(await schemaErrors(o), [], `${String(o.kind)} ${String(o.metadata?.name)} validates`)
}

/** Writes values to a temporary file for `helm -f`. */
function valuesFile (t: Tap.Test, values: Any): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'doorman-values-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const file = path.join(dir, 'values.json')
  writeFileSync(file, JSON.stringify(values))
  return file
}

// A CA of the user's own, for webhook.tls.mode secret.
const CA_PEM = execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', '/dev/null', '-subj', '/CN=corp-ca', '-days', '1'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
const NON_DEFAULT: Any = {
  image: { repository: 'registry.example.com/platform/doorman', digest: 'sha256:' + 'b'.repeat(64) },
  imagePullSecrets: [{ name: 'registry-pull' }],
  registry: { existingSecret: { name: 'doorman-registry', key: 'redis-url' } },
  redis: { enabled: false },
  sidecar: {
    mode: 'container',
    resources: { requests: { cpu: '100m', memory: '96Mi' }, limits: { cpu: 1, memory: '384Mi' } },
    env: { DOORMAN_REGISTRY: 'rediss://registry.mesh.example.com:6380', DOORMAN_MAX_CONCURRENCY: 200, DOORMAN_REGISTER_DELAY: '2s' }
  },
  webhook: {
    replicas: 3,
    failurePolicy: 'Fail',
    timeoutSeconds: 10,
    excludedNamespaces: ['istio-system', 'monitoring'],
    tls: { mode: 'secret', secret: { name: 'corp-webhook-tls', caBundle: CA_PEM } },
    logLevel: 'debug',
    podDisruptionBudget: { minAvailable: 2 },
    nodeSelector: { 'node-role.kubernetes.io/infra': '' },
    tolerations: [{ key: 'infra', operator: 'Exists', effect: 'NoSchedule' }],
    priorityClassName: 'system-cluster-critical'
  },
  checker: { replicas: 3, env: { DOORMAN_CHECK_MODE: 'recover-only', DOORMAN_CHECK_CANARY: 'pay-*' } },
  monitoring: {
    podMonitor: { enabled: true, labels: { release: 'kube-prometheus-stack' }, interval: '30s' },
    prometheusRule: { enabled: true, labels: { release: 'kube-prometheus-stack' } },
    dashboard: { enabled: true }
  }
}

t.test('helm', { skip: helmMissing }, async (t) => {
  await t.test('lints, with the default values and others', async (t) => {
    for (const args of [[], ['-f', valuesFile(t, NON_DEFAULT)], ['--set', 'webhook.tls.mode=certManager']]) {
      const r = helm(['lint', '--strict', CHART, ...args])
      t.equal(r.status, 0, `helm lint --strict ${args.join(' ')}: ${r.stdout}${r.stderr}`)
    }
  })

  await t.test('the default values: a CA generated when cert-manager is absent', async (t) => {
    const r = helmTemplate('doorman', 'doorman-system')
    await validates(t, r)
    checkControlPlane(t, r.objects, { namespace: 'doorman-system', image: 'doorman:0.1.0' })
    const config = find(r.objects, 'MutatingWebhookConfiguration', 'doorman')
    t.equal(config.metadata.annotations, undefined, 'no cert-manager annotation')
    t.notOk(r.objects.some((o) => o.apiVersion === 'cert-manager.io/v1'), 'no cert-manager objects')
    t.ok(find(r.objects, 'Secret', 'doorman-webhook-ca'), 'the CA is kept in a Secret, for the next upgrades')
    t.notOk(r.objects.some((o) => o.apiVersion === 'monitoring.coreos.com/v1' || o.kind === 'ConfigMap'), 'monitoring is off by default')
  })

  await t.test('is the kustomize base in substance, with cert-manager found in the cluster', { skip: kubectlMissing }, async (t) => {
    const chart = helmTemplate('doorman', 'doorman-system', ['--api-versions', 'cert-manager.io/v1'])
    const base = kustomize(path.join(ROOT, 'deploy', 'base'))
    checkControlPlane(t, chart.objects, { namespace: 'doorman-system', image: 'doorman:0.1.0' })
    const key = (o: Any): string => `${String(o.kind)} ${String(o.metadata.namespace ?? '')}/${String(o.metadata.name)}`
    const fromBase = base.objects.filter((o) => o.kind !== 'Namespace')
    t.same(chart.objects.map(key).sort(), fromBase.map(key).sort(), 'the same objects (the chart leaves the namespace to helm --create-namespace)')
    for (const o of fromBase) t.same(substance(chart.objects.find((c) => key(c) === key(o)) as Any), substance(o), `${key(o)}: the same in substance`)
  })

  await t.test('other values: another release, namespace and image, a TLS Secret of yours, monitoring, sidecar defaults', async (t) => {
    const r = helmTemplate('edge', 'mesh', ['-f', valuesFile(t, NON_DEFAULT)])
    await validates(t, r)
    const image = `registry.example.com/platform/doorman@sha256:${'b'.repeat(64)}`
    checkControlPlane(t, r.objects, { namespace: 'mesh', image, prefix: 'edge-doorman' })
    t.notMatch(r.text, 'doorman-system', 'no doorman-system anywhere')
    const config = find(r.objects, 'MutatingWebhookConfiguration', 'edge-doorman')
    for (const w of config.webhooks as Any[]) {
      t.equal(w.failurePolicy, 'Fail')
      t.equal(w.timeoutSeconds, 10)
      t.equal(Buffer.from(w.clientConfig.caBundle as string, 'base64').toString(), CA_PEM, 'the CA bundle given')
      t.same(w.namespaceSelector.matchExpressions[0].values, ['kube-system', 'kube-public', 'kube-node-lease', 'mesh', 'istio-system', 'monitoring'])
    }
    t.notOk(r.objects.some((o) => o.kind === 'Secret'), 'no Secret made: the TLS one is yours')
    const webhook = find(r.objects, 'Deployment', 'edge-doorman-webhook')
    const pod = webhook.spec.template.spec
    t.equal(pod.volumes[0].secret.secretName, 'corp-webhook-tls')
    t.equal(webhook.spec.replicas, 3)
    t.equal(find(r.objects, 'PodDisruptionBudget', 'edge-doorman-webhook').spec.minAvailable, 2)
    t.same([pod.priorityClassName, pod.nodeSelector, pod.tolerations, pod.imagePullSecrets], ['system-cluster-critical', NON_DEFAULT.webhook.nodeSelector, NON_DEFAULT.webhook.tolerations, [{ name: 'registry-pull' }]])
    const cfg = loadConfig(envOf(pod.containers[0]))
    t.equal(cfg.sidecarMode, 'container')
    t.equal(cfg.logLevel, 'debug')
    // What the webhook gives a pod with these settings.
    const app = parseObjects(read('deploy/example/app.yaml'), 'app').find((o) => o.kind === 'Deployment') as Any
    delete app.spec.template.metadata.annotations['doorman.io/registry']
    const injected = injectObject(app, { mode: cfg.sidecarMode, image: cfg.sidecarImage, env: cfg.sidecarEnv, resources: cfg.sidecarResources }).object as Any
    const sidecar = (injected.spec.template.spec.containers as Any[]).find((c) => c.name === 'doorman')
    t.equal(sidecar.image, image, 'injected pods run the image')
    t.same(sidecar.resources, { requests: { cpu: '100m', memory: '96Mi' }, limits: { cpu: '1', memory: '384Mi' } }, 'with sidecar.resources')
    t.match(envOf(sidecar), { DOORMAN_REGISTRY: 'rediss://registry.mesh.example.com:6380', DOORMAN_REGISTER_DELAY: '2s', DOORMAN_MAX_CONCURRENCY: '50' }, 'sidecar.env, under the pod\'s own annotations')
    t.same(await schemaErrors(injected), [], 'the injected app validates')
    const checker = find(r.objects, 'Deployment', 'edge-doorman-checker').spec.template.spec.containers[0]
    t.same(checker.env.find((e: Any) => e.name === 'DOORMAN_REGISTRY'), { name: 'DOORMAN_REGISTRY', valueFrom: { secretKeyRef: { name: 'doorman-registry', key: 'redis-url' } } }, 'the registry URL from your Secret')
    t.match(envOf(checker), { DOORMAN_CHECK_MODE: 'recover-only', DOORMAN_CHECK_CANARY: 'pay-*' })
    t.notOk(r.objects.some((o) => String(o.metadata.name).includes('redis')), 'no Redis of the chart\'s')
    const monitor = find(r.objects, 'PodMonitor', 'edge-doorman')
    t.equal(monitor.metadata.labels.release, 'kube-prometheus-stack')
    t.equal(monitor.spec.podMetricsEndpoints[0].interval, '30s')
    t.same(find(r.objects, 'PrometheusRule', 'edge-doorman').spec, parse(read('charts/doorman/files/prometheus-rules.yaml')), 'the alerts, {{ $labels }} untouched')
    const dashboard = find(r.objects, 'ConfigMap', 'edge-doorman-dashboard')
    t.equal(dashboard.metadata.labels.grafana_dashboard, '1')
    t.equal(dashboard.data['grafana-dashboard.json'], read('deploy/monitoring/grafana-dashboard.json'))
    t.match(helm(['install', 'edge', CHART, '-n', 'mesh', '--dry-run=client', '-f', valuesFile(t, NON_DEFAULT)]).stdout, /NOTES:\n[\s\S]*registry\.mesh\.example\.com/, 'NOTES.txt renders, naming the registry the pods get')
  })

  await t.test('mtls: the mesh-wide default reaches injected pods, the trust bundle', async (t) => {
    const r = helmTemplate('doorman', 'mesh', ['-f', valuesFile(t, { mtls: { mode: 'permissive', trustBundle: { enabled: true, sources: [{ secret: { name: 'mesh-ca', key: 'ca.crt' } }] } }, sidecar: { env: { DOORMAN_MAX_CONCURRENCY: 50 } } })])
    await validates(t, { ...r, objects: r.objects.filter((o) => o.kind !== 'Bundle') })
    const cfg = loadConfig(envOf(find(r.objects, 'Deployment', 'doorman-webhook').spec.template.spec.containers[0]))
    t.same(cfg.sidecarEnv, { DOORMAN_MAX_CONCURRENCY: '50', DOORMAN_MTLS: 'permissive' }, 'DOORMAN_MTLS beside sidecar.env')
    const app = parseObjects(read('deploy/example/app.yaml'), 'app').find((o) => o.kind === 'Deployment') as Any
    const injected = injectObject(app, { env: cfg.sidecarEnv }).object as Any
    t.equal(injected.spec.template.spec.volumes.find((v: Any) => v.name === 'doorman-spiffe')?.csi.driver, 'spiffe.csi.cert-manager.io', 'injected pods mount the identity')
    t.same(await schemaErrors(injected), [])
    const bundle = find(r.objects, 'Bundle', 'doorman-trust-bundle')
    t.equal(bundle.apiVersion, 'trust.cert-manager.io/v1alpha1')
    t.same(bundle.spec, { sources: [{ secret: { name: 'mesh-ca', key: 'ca.crt' } }], target: { configMap: { key: 'ca.crt' }, namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'cert-manager' } } } })
    const own = helmTemplate('doorman', 'mesh', ['--set', 'mtls.mode=strict', '--set', 'sidecar.env.DOORMAN_MTLS=permissive'])
    t.equal(loadConfig(envOf(find(own.objects, 'Deployment', 'doorman-webhook').spec.template.spec.containers[0])).sidecarEnv.DOORMAN_MTLS, 'permissive', 'sidecar.env wins')
    const off = helmTemplate('doorman', 'mesh')
    t.notOk(off.objects.some((o) => o.kind === 'Bundle'), 'no Bundle by default')
    t.equal(envOf(find(off.objects, 'Deployment', 'doorman-webhook').spec.template.spec.containers[0]).DOORMAN_SIDECAR_ENV, undefined, 'and no mesh default')
  })

  await t.test('bad values fail at install, naming the value', async (t) => {
    const cases: Array<[string[], RegExp]> = [
      [['--set', 'sidecar.mode=fast'], /\/sidecar\/mode/],
      [['--set', 'webhook.replicas=0'], /\/webhook\/replicas/],
      [['--set', 'sidecar.env.DOORMAN_MAX_CONCURENCY=5'], /invalid propertyName 'DOORMAN_MAX_CONCURENCY'/],
      [['--set', 'sidecar.env.DOORMAN_SERVICE=web'], /invalid propertyName 'DOORMAN_SERVICE'/],
      [['--set', 'checker.env.DOORMAN_REGISTRY=redis://x:1'], /invalid propertyName 'DOORMAN_REGISTRY'/],
      [['--set', 'webhok.replicas=2'], /additional properties 'webhok' not allowed/],
      [['--set', 'sidecar.resources.requests.cpu=lots'], /\/sidecar\/resources\/requests\/cpu/],
      [['--set', 'registry.url=mysql://db:3306'], /\/registry\/url/],
      [['--set', 'webhook.failurePolicy=Never'], /\/webhook\/failurePolicy/],
      [['--set', 'webhook.tls.mode=secret'], /\/webhook\/tls\/secret\/(name|caBundle)/],
      [['--set', 'image.digest=latest'], /\/image\/digest/],
      [['--set', 'redis.enabled=false'], /the checker needs a registry/],
      [['--set', 'mtls.mode=on'], /\/mtls\/mode/],
      [['--set', 'mtls.trustBundle.enabled=true'], /mtls\.trustBundle\.sources/]
    ]
    for (const [args, message] of cases) {
      const r = helm(['template', 'doorman', CHART, ...args])
      t.not(r.status, 0, `${args.join(' ')} is refused`)
      t.match(r.stderr, message, `${args.join(' ')}: ${r.stderr.split('\n').slice(0, 3).join(' ')}`)
    }
  })

  await t.test('the generated certificate is one the API server accepts from the real webhook', async (t) => {
    const r = helmTemplate('doorman', 'mesh')
    const secret = find(r.objects, 'Secret', 'doorman-webhook-tls')
    const ca = Buffer.from(find(r.objects, 'MutatingWebhookConfiguration', 'doorman').webhooks[0].clientConfig.caBundle as string, 'base64')
    const dir = mkdtempSync(path.join(tmpdir(), 'doorman-chart-tls-'))
    t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
    for (const f of ['tls.crt', 'tls.key']) writeFileSync(path.join(dir, f), Buffer.from(secret.data[f] as string, 'base64'))
    const port = await freePort()
    const admin = await freePort()
    const env = envOf(find(r.objects, 'Deployment', 'doorman-webhook').spec.template.spec.containers[0])
    const child = spawnNode(t, [CLI, 'webhook'], {
      ...env,
      DOORMAN_WEBHOOK_CERT: path.join(dir, 'tls.crt'),
      DOORMAN_WEBHOOK_KEY: path.join(dir, 'tls.key'),
      DOORMAN_WEBHOOK_PORT: String(port),
      DOORMAN_ADMIN_PORT: String(admin),
      DOORMAN_BIND_HOST: '127.0.0.1',
      DOORMAN_LOG_LEVEL: 'warn'
    })
    await waitFor('the webhook is ready', async () => (await request(admin, { path: '/readyz', timeout: 1000 })).status === 200, 20_000)
    const status = await new Promise<number>((resolve, reject) => {
      // As the API server calls it: by the Service's name, trusting only the configuration's CA bundle.
      const req = https.request({ host: '127.0.0.1', port, servername: 'doorman-webhook.mesh.svc', ca, method: 'POST', path: '/mutate', agent: false, headers: { 'content-type': 'application/json' } }, (res) => { res.resume(); resolve(res.statusCode ?? 0) })
      req.on('error', reject)
      req.end(JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: { uid: 'u1', kind: { kind: 'Pod' }, operation: 'CREATE', namespace: 'shop', object: { metadata: {}, spec: { containers: [{ name: 'a', image: 'a' }] } } } }))
    })
    t.equal(status, 200, 'TLS verified against doorman-webhook.mesh.svc and the CA bundle, and the review answered')
    child.kill('SIGTERM')
    await child.exited
  })
})

/** An object without what the chart adds for Helm (labels, explicit defaults), its doorman settings as loaded. */
function substance (o: Any): Any {
  const x = structuredClone(o)
  delete x.metadata.labels
  const strip = (tpl: Any | undefined): void => {
    if (tpl === undefined) return
    delete tpl.metadata.labels
    for (const c of tpl.spec.topologySpreadConstraints ?? []) delete c.labelSelector
    for (const c of tpl.spec.containers as Any[]) {
      if (c.imagePullPolicy === 'IfNotPresent') delete c.imagePullPolicy
      if (c.env !== undefined && String(c.image).startsWith('doorman')) c.env = loadConfig(envOf(c))
    }
  }
  strip(x.spec?.template)
  if (x.spec?.selector !== undefined) delete x.spec.selector
  return x
}
