import t from 'tap'
import { injectObject, templatePaths, serviceWarnings } from '../src/inject/workload.js'
import { injectTemplate, InjectError, SIDECAR_NAME, DRAIN_HOOK_PATH, GRACE_MARGIN_SECONDS, type Obj } from '../src/inject/pod.js'
import { annotatableSettings } from '../src/inject/annotations.js'
import { diff, applyPatch, deepEqual } from '../src/inject/patch.js'
import { SETTINGS, annotationFor, loadConfig, type Config } from '../src/config/index.js'
import type { Setting } from '../src/config/table.js'
import { version } from '../src/core/version.js'
import { schemaErrors } from './helpers/k8s.js'

type Any = Record<string, any>

function podSpec (): Any {
  return {
    containers: [{
      name: 'web',
      image: 'example/web:1',
      ports: [{ name: 'http', containerPort: 8080 }],
      readinessProbe: { httpGet: { path: '/ready', port: 'http' }, periodSeconds: 3, failureThreshold: 2 },
      livenessProbe: { tcpSocket: { port: 8080 }, initialDelaySeconds: 5 }
    }]
  }
}

function template (annotations: Record<string, string> = {}, spec: Any = podSpec()): Any {
  return { metadata: { labels: { app: 'web' }, annotations: { 'doorman.io/inject': 'enabled', ...annotations } }, spec }
}

const selector = { matchLabels: { app: 'web' } }
const KINDS: Record<string, () => Any> = {
  Pod: () => ({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web', ...template().metadata }, spec: podSpec() }),
  Deployment: () => ({ apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'web' }, spec: { replicas: 2, selector, template: template() } }),
  StatefulSet: () => ({ apiVersion: 'apps/v1', kind: 'StatefulSet', metadata: { name: 'web' }, spec: { serviceName: 'web', selector, template: template() } }),
  DaemonSet: () => ({ apiVersion: 'apps/v1', kind: 'DaemonSet', metadata: { name: 'web' }, spec: { selector, template: template() } }),
  ReplicaSet: () => ({ apiVersion: 'apps/v1', kind: 'ReplicaSet', metadata: { name: 'web' }, spec: { selector, template: template() } }),
  Job: () => ({ apiVersion: 'batch/v1', kind: 'Job', metadata: { name: 'once' }, spec: { template: template({}, { ...podSpec(), restartPolicy: 'Never' }) } }),
  CronJob: () => ({ apiVersion: 'batch/v1', kind: 'CronJob', metadata: { name: 'nightly' }, spec: { schedule: '0 3 * * *', jobTemplate: { spec: { template: template({}, { ...podSpec(), restartPolicy: 'OnFailure' }) } } } })
}

/** The pod spec of the (first) template in an object. */
function specOf (o: Any): Any {
  const path = templatePaths(o)[0]
  let v: Any = o
  for (const seg of path.split('/').slice(1)) v = v[seg]
  return v.spec
}
function sidecar (spec: Any): Any | undefined {
  return [...(spec.initContainers ?? []), ...spec.containers].find((c: Any) => c.name === SIDECAR_NAME)
}
function envOf (c: Any): Record<string, string> {
  return Object.fromEntries((c.env as Any[]).filter((e) => e.value !== undefined).map((e) => [e.name, e.value]))
}
async function valid (t: Tap.Test, o: unknown, what: string): Promise<void> {
  t.same(await schemaErrors(o), [], `${what} validates against the Kubernetes schema`)
}
function inject (tpl: Any, opts = {}): { tpl: Any, warnings: string[] } {
  const copy = structuredClone(tpl)
  const r = injectTemplate(copy, opts)
  return { tpl: copy, warnings: r.warnings }
}

t.test('each workload kind gets the sidecar in its pod template, in both modes', async (t) => {
  for (const [kind, make] of Object.entries(KINDS)) {
    for (const mode of ['native', 'container'] as const) {
      const input = make()
      const before = structuredClone(input)
      const r = injectObject(input, { mode })
      t.same(input, before, `${kind}: the input is left untouched`)
      t.equal(r.injected.length, 1, `${kind} (${mode}): one template injected`)
      const spec = specOf(r.object as Any)
      const s = sidecar(spec)
      t.ok(s, `${kind} (${mode}): has the doorman container`)
      if (mode === 'native') {
        t.equal(spec.initContainers[0].name, SIDECAR_NAME, 'native: the first init container')
        t.equal(s.restartPolicy, 'Always', 'native: restartPolicy Always')
      } else {
        t.equal(spec.containers.at(-1).name, SIDECAR_NAME, 'container: a plain container after the app')
        t.equal(s.restartPolicy, undefined)
        t.equal(spec.initContainers, undefined)
      }
      t.equal(s.image, `doorman:${version}`)
      await valid(t, r.object, `${kind} (${mode})`)
    }
  }
})

t.test('a List, and pod templates at any depth', async (t) => {
  const list = { apiVersion: 'v1', kind: 'List', items: [KINDS.Deployment(), KINDS.Pod(), { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'c' }, data: { a: 'b' } }] }
  const r = injectObject(list)
  t.same(r.injected, ['/items/0/spec/template', '/items/1'])
  t.same((r.object as Any).items[2], list.items[2], 'unrelated items untouched')
  const custom = { apiVersion: 'example.com/v1', kind: 'Rollout', metadata: { name: 'r' }, spec: { strategy: { canary: {} }, template: template() } }
  t.same(injectObject(custom).injected, ['/spec/template'], 'a custom kind with a pod template is injected too')
  t.same(injectObject({ apiVersion: 'v1', kind: 'Service', metadata: { name: 's' }, spec: { ports: [{ port: 80 }] } }).injected, [])
  t.same(injectObject('just a string').injected, [])
  t.same(injectObject(null).injected, [])
})

t.test('opting in and out', async (t) => {
  const plain = KINDS.Deployment()
  delete plain.spec.template.metadata.annotations['doorman.io/inject']
  t.same(injectObject(plain).injected, [], 'no annotation: not injected')
  t.same(injectObject(plain, { injectByDefault: true }).injected, ['/spec/template'], 'no annotation in an opted-in namespace: injected')
  const off = KINDS.Deployment()
  off.spec.template.metadata.annotations['doorman.io/inject'] = 'disabled'
  t.same(injectObject(off, { injectByDefault: true }).injected, [], 'disabled wins over the namespace')
  const odd = KINDS.Deployment()
  odd.spec.template.metadata.annotations['doorman.io/inject'] = 'yes'
  const r = injectObject(odd)
  t.same(r.injected, [])
  t.match(r.warnings.join('\n'), /doorman\.io\/inject: got "yes"; expected "enabled" or "disabled"/)
  const hostNet = KINDS.Deployment()
  hostNet.spec.template.spec.hostNetwork = true
  t.same(injectObject(hostNet).injected, [], 'hostNetwork pods are left alone')
})

t.test('idempotent: injecting twice equals injecting once', async (t) => {
  for (const [kind, make] of Object.entries(KINDS)) {
    for (const mode of ['native', 'container'] as const) {
      const once = injectObject(make(), { mode, drainToken: 'tok' }).object
      const twice = injectObject(once, { mode, drainToken: 'other' })
      t.same(twice.object, once, `${kind} (${mode})`)
      t.same(twice.injected, [])
    }
  }
  const byHand = KINDS.Pod()
  byHand.spec.containers.push({ name: 'doorman', image: 'doorman:custom' })
  t.same(injectObject(byHand).object, byHand, 'a pod with a doorman container written by hand is left alone')
})

/** A valid value for a setting, distinct per setting so that a mix-up shows. */
function sample (s: Setting, i: number): string {
  switch (s.kind) {
    case 'port': return String(20000 + i)
    case 'int': return String(7 + i)
    case 'count': return String(3 + i)
    case 'percent': return String(10 + (i % 80))
    case 'number': return `1.${i + 1}`
    case 'duration': return `${i + 2}s`
    case 'string': return `sample-${i}`
    case 'host': return `10.0.0.${i + 1}`
    case 'list': return `/sample-${i}/*,/other`
    case 'json': return '{}'
    case 'enum': return (s.values ?? []).at(-1) ?? ''
    case 'registry': return `redis://redis-${i}:6379`
    case 'app-registry': return `zookeeper://zk-${i}:2181/dubbo`
    case 'services': return `org.sample.Service${i},org.other.Api`
    case 'level': return 'debug'
    case 'path': return `/tmp/sample-${i}`
    case 'nice': return String(-(i % 20))
    case 'allow': return `spiffe://cluster.local/ns/sample-${i}/sa/*,/admin/=spiffe://cluster.local/ns/ops/sa/oncall`
    case 'label': return `sample-${i}`
    case 'check': return `http:${8000 + i}/health`
  }
}

t.test('annotation → env for every sidecar setting of the table', async (t) => {
  const settable = annotatableSettings()
  t.ok(settable.length >= 30, 'the table offers the sidecar settings')
  for (const [i, s] of settable.entries()) {
    const value = s.env === 'DOORMAN_APP_PORT' ? '8080' : sample(s, i)
    const name = annotationFor(s.env)
    // DOORMAN_ALLOW names callers by their mTLS identity: it comes with mTLS on.
    const needs = s.env === 'DOORMAN_ALLOW' ? { 'doorman.io/mtls': 'permissive' } : {}
    const { tpl, warnings } = inject(template({ ...needs, [name]: value }))
    const env = envOf(sidecar(tpl.spec))
    t.equal(env[s.env], value, `${name} → ${s.env}`)
    t.same(warnings, [], `${name}: no warning`)
    t.doesNotThrow(() => loadConfig(env, { sidecar: true }), `${s.env}: the sidecar accepts its environment`)
  }
  // All at once, as a pod would write them, and the sidecar's own config agrees with each.
  const all: Record<string, string> = {}
  for (const [i, s] of settable.entries()) if (s.env !== 'DOORMAN_APP_PORT' && s.kind !== 'enum' && s.env !== 'DOORMAN_LIMIT_MIN') all[annotationFor(s.env)] = sample(s, i)
  all['doorman.io/mtls'] = 'strict'
  const { tpl } = inject(template(all))
  const env = envOf(sidecar(tpl.spec))
  const cfg = loadConfig(env, { sidecar: true }) as unknown as Record<string, unknown>
  const reference = loadConfig(Object.fromEntries(Object.entries(all).map(([a, v]) => [SETTINGS.find((s) => annotationFor(s.env) === a)?.env ?? a, v])), {}) as unknown as Record<string, unknown>
  for (const s of settable) {
    if (all[annotationFor(s.env)] === undefined) continue
    const key = s.env.replace(/^DOORMAN_/, '').toLowerCase().replace(/_([a-z])/g, (_, c: string) => c.toUpperCase()) as keyof Config
    t.same(cfg[key], reference[key], `${s.env} reaches the sidecar's config`)
  }
  const c = sidecar(tpl.spec)
  t.same(c.ports.map((p: Any) => p.containerPort), [Number(all['doorman.io/admin-port'])], 'the admin port annotation moves the admin port')
  t.equal(c.readinessProbe.httpGet.port, Number(all['doorman.io/admin-port']), '...and the probes with it')
  t.equal(tpl.spec.containers[0].ports.find((p: Any) => p.name === 'http').containerPort, Number(all['doorman.io/inbound-port']), 'the inbound port annotation moves the taken-over port')
  await valid(t, { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'all', ...tpl.metadata }, spec: tpl.spec }, 'a pod with every annotation')
})

t.test('settings that are not the pod\'s to set are refused with a warning', async (t) => {
  for (const s of SETTINGS.filter((x) => x.annotatable === false || (x.scope !== 'sidecar' && x.scope !== 'all'))) {
    const name = annotationFor(s.env)
    const { tpl, warnings } = inject(template({ [name]: 'x' }))
    t.match(warnings.join('\n'), new RegExp(`${name.replace(/\./g, '\\.')} (can't be set by annotation|is a setting of doorman)`), `${name} is refused`)
    const env = envOf(sidecar(tpl.spec))
    if (s.env !== 'DOORMAN_APP_PROBES') t.equal(env[s.env], undefined, `${s.env} not set from the annotation`)
  }
  const { warnings } = inject(template({ 'doorman.io/max-concurency': '5', 'doorman.io/whatever-else-entirely': '1' }))
  t.match(warnings[0], /unknown annotation doorman\.io\/max-concurency \(did you mean doorman\.io\/max-concurrency\?\)/)
  t.match(warnings[1], /unknown annotation doorman\.io\/whatever-else-entirely; ignored/)
})

t.test('the injector\'s own environment: POD_IP, node address, app port, service', async (t) => {
  const { tpl } = inject(template())
  const c = sidecar(tpl.spec)
  const byName = Object.fromEntries((c.env as Any[]).map((e) => [e.name, e]))
  t.same(byName.POD_IP.valueFrom, { fieldRef: { fieldPath: 'status.podIP' } })
  t.same(byName.DOORMAN_NODE_IP.valueFrom, { fieldRef: { fieldPath: 'status.hostIP' } })
  t.equal(byName.DOORMAN_APP_PORT.value, '8080', 'the app\'s first port')
  t.equal(byName.DOORMAN_SERVICE.value, 'web', 'from the app label')
  const k8sName = template()
  k8sName.metadata.labels = { 'app.kubernetes.io/name': 'shop', app: 'other' }
  t.equal(envOf(sidecar(inject(k8sName).tpl.spec)).DOORMAN_SERVICE, 'shop', 'app.kubernetes.io/name first')
  t.equal(envOf(sidecar(inject(template({ 'doorman.io/service': 'given' })).tpl.spec)).DOORMAN_SERVICE, 'given', 'the annotation wins')
  const named = template({ 'doorman.io/app-port': 'http-api' })
  named.spec.containers[0].ports.push({ name: 'http-api', containerPort: 9090 })
  t.equal(envOf(sidecar(inject(named).tpl.spec)).DOORMAN_APP_PORT, '9090', 'doorman.io/app-port may name a port')
  t.same(c.securityContext, { runAsNonRoot: true, runAsUser: 1000, runAsGroup: 1000, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] }, seccompProfile: { type: 'RuntimeDefault' } })
  t.same([c.startupProbe.httpGet.path, c.livenessProbe.httpGet.path, c.readinessProbe.httpGet.path], ['/startupz', '/livez', '/readyz'])
  t.same(c.resources, { requests: { cpu: '50m', memory: '64Mi' }, limits: { memory: '256Mi' } })
  const sized = inject(template({ 'doorman.io/sidecar-cpu': '200m', 'doorman.io/sidecar-memory': '128Mi', 'doorman.io/sidecar-cpu-limit': '1', 'doorman.io/sidecar-memory-limit': 'none' })).tpl
  t.same(sidecar(sized.spec).resources, { requests: { cpu: '200m', memory: '128Mi' }, limits: { cpu: '1' } }, 'resources overridden by annotation')
  t.equal(tpl.metadata.annotations['kubectl.kubernetes.io/default-container'], 'web', 'kubectl logs/exec default to the app')
  t.same(JSON.parse(tpl.metadata.annotations['doorman.io/status']), { version, mode: 'native' })
})

t.test('the injector\'s defaults for every pod: DOORMAN_SIDECAR_ENV and DOORMAN_SIDECAR_RESOURCES', async (t) => {
  const cfg = loadConfig({
    DOORMAN_SIDECAR_ENV: JSON.stringify({ DOORMAN_REGISTRY: 'redis://doorman-redis.mesh.svc:6379', DOORMAN_MAX_CONCURRENCY: 200, DOORMAN_DRAIN_TIMEOUT: '40s' }),
    DOORMAN_SIDECAR_RESOURCES: JSON.stringify({ requests: { cpu: '100m', memory: '96Mi' }, limits: { cpu: '1', memory: '384Mi' } })
  })
  const opts = { env: cfg.sidecarEnv, resources: cfg.sidecarResources }
  const { tpl } = inject(template(), opts)
  const env = envOf(sidecar(tpl.spec))
  t.equal(env.DOORMAN_REGISTRY, 'redis://doorman-redis.mesh.svc:6379', 'a default the pod does not set')
  t.equal(env.DOORMAN_MAX_CONCURRENCY, '200', 'numbers in the JSON become text')
  t.equal(env.DOORMAN_SERVICE, 'web', 'the service name still comes from the pod')
  t.equal(tpl.spec.terminationGracePeriodSeconds, 5 + 40 + GRACE_MARGIN_SECONDS, 'the grace period follows a default drain timeout')
  t.same(sidecar(tpl.spec).resources, { requests: { cpu: '100m', memory: '96Mi' }, limits: { cpu: '1', memory: '384Mi' } })
  const own = inject(template({ 'doorman.io/max-concurrency': '20', 'doorman.io/sidecar-cpu-limit': 'none', 'doorman.io/sidecar-memory': '128Mi' }), opts).tpl
  t.equal(envOf(sidecar(own.spec)).DOORMAN_MAX_CONCURRENCY, '20', 'the pod\'s annotation wins')
  t.equal(envOf(sidecar(own.spec)).DOORMAN_REGISTRY, 'redis://doorman-redis.mesh.svc:6379')
  t.same(sidecar(own.spec).resources, { requests: { cpu: '100m', memory: '128Mi' }, limits: { memory: '384Mi' } }, 'each doorman.io/sidecar-* annotation changes one value')
  const bare = inject(template(), { resources: loadConfig({ DOORMAN_SIDECAR_RESOURCES: '{}' }).sidecarResources }).tpl
  t.same(sidecar(bare.spec).resources, {}, 'resources {} leave the sidecar without any')
  t.same(sidecar(inject(template()).tpl.spec).resources, loadConfig({}).sidecarResources, 'without options, the setting\'s default')
  const clash = template({ 'doorman.io/limit-mode': 'adaptive', 'doorman.io/limit-min': '50' })
  t.throws(() => inject(clash, { env: { DOORMAN_MAX_CONCURRENCY: '10' } }), /doorman\.io\/limit-min: got 50; expected at most DOORMAN_MAX_CONCURRENCY \(10\)/, 'a pod whose annotations clash with a default is refused')
  await valid(t, { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web', ...tpl.metadata }, spec: tpl.spec }, 'the pod with defaults')
})

t.test('probe rewrite: httpGet, tcpSocket, grpc, named ports', async (t) => {
  const spec = podSpec()
  const app = spec.containers[0]
  app.ports.push({ name: 'grpc', containerPort: 9090 })
  app.startupProbe = { grpc: { port: 9090, service: 'shop' }, failureThreshold: 30, periodSeconds: 2, timeoutSeconds: 3 }
  app.readinessProbe = { httpGet: { path: '/ready', port: 'http', httpHeaders: [{ name: 'X-Probe', value: '1' }] }, periodSeconds: 3, failureThreshold: 2 }
  app.livenessProbe = { tcpSocket: { port: 'grpc' }, initialDelaySeconds: 5, timeoutSeconds: 2 }
  const sidekick = { name: 'logs', image: 'example/logs:1', readinessProbe: { httpGet: { path: '/x', port: 9999 } } }
  spec.containers.push(sidekick)
  const { tpl } = inject(template({}, spec))
  const out = tpl.spec.containers[0]
  t.same(out.readinessProbe, { httpGet: { path: '/app-health/web/readyz', port: 7090, scheme: 'HTTP' }, periodSeconds: 3, failureThreshold: 2 }, 'httpGet → the lane, timing kept')
  t.same(out.livenessProbe, { httpGet: { path: '/app-health/web/livez', port: 7090, scheme: 'HTTP' }, initialDelaySeconds: 5, timeoutSeconds: 2 }, 'tcpSocket → the lane')
  t.same(out.startupProbe, { httpGet: { path: '/app-health/web/startupz', port: 7090, scheme: 'HTTP' }, failureThreshold: 30, periodSeconds: 2, timeoutSeconds: 3 }, 'grpc → the lane')
  const env = envOf(sidecar(tpl.spec))
  t.same(JSON.parse(env.DOORMAN_APP_PROBES), {
    '/app-health/web/readyz': { httpGet: { path: '/ready', port: 8080, httpHeaders: [{ name: 'X-Probe', value: '1' }] }, timeoutSeconds: 1, periodSeconds: 3, failureThreshold: 2, successThreshold: 1 },
    '/app-health/web/livez': { tcpSocket: { port: 9090 }, timeoutSeconds: 2, periodSeconds: 10, failureThreshold: 3, successThreshold: 1 },
    '/app-health/web/startupz': { grpc: { port: 9090, service: 'shop' }, timeoutSeconds: 3, periodSeconds: 2, failureThreshold: 30, successThreshold: 1 }
  }, 'the originals, named ports resolved to numbers, in the contract shape')
  t.same(loadConfig(env, { sidecar: true }).appProbes['/app-health/web/livez'], { tcpSocket: { port: 9090 }, timeoutSeconds: 2, periodSeconds: 10, failureThreshold: 3, successThreshold: 1 }, 'the sidecar accepts them')
  t.same(tpl.spec.containers[1], sidekick, 'other containers keep their probes')
  const exec = podSpec()
  exec.containers[0].livenessProbe = { exec: { command: ['/bin/check'] } }
  delete exec.containers[0].readinessProbe
  const e = inject(template({}, exec)).tpl
  t.same(e.spec.containers[0].livenessProbe, { exec: { command: ['/bin/check'] } }, 'exec probes run in the app container and stay')
  t.equal(envOf(sidecar(e.spec)).DOORMAN_APP_PROBES, undefined)
  const missing = podSpec()
  missing.containers[0].readinessProbe.httpGet.port = 'metrics'
  t.throws(() => inject(template({}, missing)), { name: 'InjectError', message: /readinessProbe names port "metrics", which the container does not declare/ })
  await valid(t, { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p', ...tpl.metadata }, spec: tpl.spec }, 'the rewritten pod')
})

t.test('port takeover: Services targeting the port name reach doorman', async (t) => {
  const { tpl } = inject(template())
  t.same(tpl.spec.containers[0].ports, [{ name: 'http-app', containerPort: 8080 }, { name: 'http', containerPort: 7080, protocol: 'TCP' }])
  const unnamed = podSpec()
  unnamed.containers[0].ports = [{ containerPort: 8080 }]
  unnamed.containers[0].readinessProbe.httpGet.port = 8080
  t.same(inject(template({}, unnamed)).tpl.spec.containers[0].ports, [{ containerPort: 8080, name: 'http-app' }, { name: 'http', containerPort: 7080, protocol: 'TCP' }], 'an unnamed app port: doorman takes `http`')
  const long = podSpec()
  long.containers[0].ports = [{ name: 'http-metrics-01', containerPort: 8080 }]
  long.containers[0].readinessProbe.httpGet.port = 'http-metrics-01'
  const names = inject(template({}, long)).tpl.spec.containers[0].ports.map((p: Any) => p.name)
  t.same(names, ['http-metric-app', 'http-metrics-01'], 'a long name is shortened to the 15 characters a port name may have')
  const moved = inject(template({ 'doorman.io/inbound-port': '9000' })).tpl
  t.equal(moved.spec.containers[0].ports[1].containerPort, 9000)
  t.throws(() => inject(template({ 'doorman.io/inbound-port': '8080' })), { name: 'InjectError', message: /doorman\.io\/inbound-port: port 8080 is already used by web; choose another/ })
  t.throws(() => inject(template({ 'doorman.io/admin-port': '7080' })), { name: 'InjectError', message: /doorman\.io\/admin-port: port 7080 is already used by DOORMAN_INBOUND_PORT/ })
})

t.test('Services that target the app port by number are reported', async (t) => {
  const dep = injectObject(KINDS.Deployment())
  const byNumber = { apiVersion: 'v1', kind: 'Service', metadata: { name: 'web' }, spec: { selector: { app: 'web' }, ports: [{ name: 'web', port: 80, targetPort: 8080 }] } }
  const byName = { apiVersion: 'v1', kind: 'Service', metadata: { name: 'web2' }, spec: { selector: { app: 'web' }, ports: [{ port: 80, targetPort: 'http' }] } }
  const implicit = { apiVersion: 'v1', kind: 'Service', metadata: { name: 'web3' }, spec: { selector: { app: 'web' }, ports: [{ port: 8080 }] } }
  const other = { apiVersion: 'v1', kind: 'Service', metadata: { name: 'db' }, spec: { selector: { app: 'db' }, ports: [{ port: 5432, targetPort: 8080 }] } }
  const w = serviceWarnings([byNumber, byName, implicit, other], dep.takeovers)
  t.equal(w.length, 2)
  t.match(w[0], /^service\/web: port web targets the app of deployment\/web \/spec\/template by number \(8080\), so its traffic bypasses doorman; set targetPort: http$/)
  t.match(w[1], /^service\/web3: port 8080 /)
})

t.test('termination order: the app\'s preStop drains doorman first; the grace period covers the drain', async (t) => {
  const { tpl } = inject(template())
  t.same(tpl.spec.containers[0].lifecycle, { preStop: { httpGet: { path: DRAIN_HOOK_PATH, port: 7090, scheme: 'HTTP' } } })
  t.equal(tpl.spec.terminationGracePeriodSeconds, 5 + 25 + GRACE_MARGIN_SECONDS, 'drain delay + drain timeout + margin')
  const slow = inject(template({ 'doorman.io/drain-delay': '10s', 'doorman.io/drain-timeout': '2m' })).tpl
  t.equal(slow.spec.terminationGracePeriodSeconds, 10 + 120 + GRACE_MARGIN_SECONDS)
  const generous = inject(template({}, { ...podSpec(), terminationGracePeriodSeconds: 300 })).tpl
  t.equal(generous.spec.terminationGracePeriodSeconds, 300, 'a longer grace period is kept')
  const tokened = inject(template(), { drainToken: 's3cret' }).tpl
  t.same(tokened.spec.containers[0].lifecycle.preStop.httpGet.httpHeaders, [{ name: 'Authorization', value: 'Bearer s3cret' }])
  t.equal(envOf(sidecar(tokened.spec)).DOORMAN_ADMIN_TOKEN, 's3cret', 'the lane knows the token')
  const own = podSpec()
  own.containers[0].lifecycle = { preStop: { exec: { command: ['/bin/flush'] } }, postStart: { exec: { command: ['/bin/warm'] } } }
  const kept = inject(template({}, own))
  t.same(kept.tpl.spec.containers[0].lifecycle, own.containers[0].lifecycle, 'the app\'s own preStop is kept')
  t.match(kept.warnings.join('\n'), /already has a preStop hook; kept/)
  const job = injectObject(KINDS.Job(), { mode: 'container' })
  t.match(job.warnings.join('\n'), /in container mode doorman keeps running after a Job's app completes: have the app call POST http:\/\/127\.0\.0\.1:7090\/drain/)
  t.same(injectObject(KINDS.Job()).warnings, [], 'native mode: Jobs complete (Kubernetes stops native sidecars)')
})

t.test('a template that opts in but can\'t be injected says what to change', async (t) => {
  const cases: Array<[Any, RegExp]> = [
    [template({ 'doorman.io/max-concurrency': 'lots' }), /^doorman\.io\/max-concurrency: got "lots"; expected a whole number of at least 1/],
    [template({ 'doorman.io/drain-delay': 'soon' }), /^doorman\.io\/drain-delay: got "soon"; expected a duration/],
    [template({ 'doorman.io/app-port': 'nope' }), /^doorman\.io\/app-port: got "nope"; expected a port number or the name of a port of container web/],
    [template({ 'doorman.io/sidecar-memory': 'lots' }), /^doorman\.io\/sidecar-memory: got "lots"; expected a Kubernetes quantity/],
    [template({}, { containers: [{ name: 'web', image: 'x' }] }), /^container web declares no port: set doorman\.io\/app-port/],
    [template({}, { containers: [] }), /no containers/]
  ]
  for (const [tpl, message] of cases) t.throws(() => injectTemplate(structuredClone(tpl)), { name: 'InjectError', message }, String(message))
  const err = (() => { try { injectObject({ ...KINDS.Deployment(), spec: { selector, template: template({ 'doorman.io/limit-mode': 'magic' }) } }) } catch (e) { return e } })()
  t.ok(err instanceof InjectError)
  t.match((err as Error).message, /^deployment\/web \/spec\/template: doorman\.io\/limit-mode: got "magic"; expected one of static, adaptive/, 'the message names the object')
})

t.test('the JSON patch between input and output reproduces the output', async (t) => {
  for (const [kind, make] of Object.entries(KINDS)) {
    for (const mode of ['native', 'container'] as const) {
      const input = make()
      if (kind === 'Deployment') input.spec.template.spec.initContainers = [{ name: 'migrate', image: 'example/migrate:1' }]
      const out = injectObject(input, { mode }).object
      const ops = diff(input, out)
      t.ok(deepEqual(applyPatch(input, ops), out), `${kind} (${mode})`)
      t.ok(ops.every((o) => o.op !== 'replace' || o.path !== ''), 'no whole-document replace')
    }
  }
  const d = { a: [{ name: 'x', v: 1 }, { name: 'y' }], k: { 'a/b': 1, 'c~d': 2 }, s: [1, 2] }
  const e = { a: [{ name: 'n' }, { name: 'x', v: 2 }, { name: 'm' }, { name: 'y' }], k: { 'a/b': 3 }, s: [1, 2, 3], z: null }
  const ops = diff(d, e)
  t.same(applyPatch(d, ops), e)
  t.same(ops.filter((o) => o.path.startsWith('/k')), [{ op: 'remove', path: '/k/c~0d' }, { op: 'replace', path: '/k/a~1b', value: 3 }], 'keys are escaped')
})

t.test('the app container is the one kubectl defaults to, if named', async (t) => {
  const spec = podSpec()
  spec.containers.unshift({ name: 'proxy-helper', image: 'example/helper:1', ports: [{ name: 'admin', containerPort: 9901 }] })
  const tpl = template({ 'kubectl.kubernetes.io/default-container': 'web' }, spec)
  const out = inject(tpl).tpl as Obj & Any
  t.equal(envOf(sidecar(out.spec)).DOORMAN_APP_PORT, '8080')
  t.same(out.spec.containers[0].ports, [{ name: 'admin', containerPort: 9901 }], 'the other container is not touched')
})

t.test('port protocols: gRPC and h2c ports get DOORMAN_APP_PROTOCOL=h2c; ports doorman can\'t carry (TLS, databases, UDP) are never taken over', async (t) => {
  const withPorts = (ports: Any[], annotations: Record<string, string> = {}): Any => {
    const spec = podSpec()
    spec.containers[0].ports = ports
    delete spec.containers[0].readinessProbe
    delete spec.containers[0].livenessProbe
    return template(annotations, spec)
  }
  for (const name of ['grpc', 'grpc-api', 'h2c', 'h2c-x', 'http2']) {
    const tpl = withPorts([{ name, containerPort: 9090 }])
    const r = injectTemplate(tpl)
    t.equal(r.injected, true, `a first port named ${name}: injected`)
    t.equal(envOf(sidecar(tpl.spec)).DOORMAN_APP_PROTOCOL, 'h2c', `${name}: doorman speaks h2c to the app`)
    t.equal(tpl.spec.containers[0].ports.find((p: Any) => p.containerPort === 7080)?.name, name, `${name}: the name now reaches doorman`)
  }
  const http1 = withPorts([{ name: 'grpc', containerPort: 9090 }], { 'doorman.io/app-protocol': 'http1' })
  injectTemplate(http1)
  t.equal(envOf(sidecar(http1.spec)).DOORMAN_APP_PROTOCOL, 'http1', 'the pod\'s own doorman.io/app-protocol wins')
  for (const name of ['https', 'tls-public', 'tcp', 'mongo', 'mysql', 'redis']) {
    const tpl = withPorts([{ name, containerPort: 9090 }])
    const before = structuredClone(tpl)
    const r = injectTemplate(tpl)
    t.equal(r.injected, false, `a first port named ${name}: not injected`)
    t.same(tpl, before, `${name}: the template is left as it was`)
    t.match(r.warnings.join('\n'), new RegExp(`port ${name} \\(9090\\) speaks .*not injected`), `${name}: a warning says why`)
  }
  const udp = withPorts([{ name: 'dns', containerPort: 53, protocol: 'UDP' }])
  t.equal(injectTemplate(udp).injected, false, 'a UDP port: not injected')
  for (const name of ['http', 'http-api', 'web', 'grpc-web', 'metrics']) {
    const tpl = withPorts([{ name, containerPort: 8080 }])
    t.equal(injectTemplate(tpl).injected, true, `a first port named ${name}: injected`)
    t.equal(envOf(sidecar(tpl.spec)).DOORMAN_APP_PROTOCOL, undefined, `${name}: HTTP/1.1, the default`)
  }
  t.equal(injectTemplate(withPorts([{ containerPort: 8080 }])).injected, true, 'an unnamed port: injected')

  // A pod with a TLS port and an HTTP port: the annotation picks the HTTP one; the TLS port is never renamed.
  const both = withPorts([{ name: 'https', containerPort: 8443 }, { name: 'http', containerPort: 8080 }], { 'doorman.io/app-port': 'http' })
  t.equal(injectTemplate(both).injected, true)
  t.same(both.spec.containers[0].ports.find((p: Any) => p.containerPort === 8443), { name: 'https', containerPort: 8443 }, 'the TLS port keeps its name')
  // Naming a port doorman can't carry is an error that says which port and why.
  t.throws(() => injectTemplate(withPorts([{ name: 'https', containerPort: 8443 }], { 'doorman.io/app-port': 'https' })), /doorman\.io\/app-port: port https \(8443\) speaks TLS or a non-HTTP protocol/)
  t.throws(() => injectTemplate(withPorts([{ name: 'tls', containerPort: 8443 }, { name: 'http', containerPort: 8080 }], { 'doorman.io/app-port': '8443' })), /port tls \(8443\) speaks TLS/)
  const byNumber = withPorts([{ name: 'http', containerPort: 8080 }, { name: 'grpc', containerPort: 9090 }], { 'doorman.io/app-port': '9090' })
  injectTemplate(byNumber)
  t.equal(envOf(sidecar(byNumber.spec)).DOORMAN_APP_PROTOCOL, 'h2c', 'a gRPC port chosen by number: h2c too')

  // Services: an appProtocol doorman can't carry, or h2c toward an app declared HTTP/1.1, is warned about.
  const deploy = (ports: Any[]): Any => injectObject({ apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'web' }, spec: { selector, template: withPorts(ports) } })
  const svc = (appProtocol: string, targetPort: string): Any => ({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'web' }, spec: { selector: { app: 'web' }, ports: [{ name: 'api', port: 80, targetPort, appProtocol }] } })
  const h1 = deploy([{ name: 'http', containerPort: 8080 }]).takeovers
  t.match(serviceWarnings([svc('kubernetes.io/h2c', 'http')], h1).join('\n'), /appProtocol kubernetes\.io\/h2c but the app .* is declared HTTP\/1\.1/)
  t.match(serviceWarnings([svc('https', 'http')], h1).join('\n'), /appProtocol https, which doorman doesn't carry/)
  t.same(serviceWarnings([svc('http', 'http')], h1), [], 'appProtocol http: no warning')
  t.same(serviceWarnings([svc('kubernetes.io/ws', 'http')], h1), [], 'appProtocol kubernetes.io/ws: no warning')
  const h2 = deploy([{ name: 'grpc', containerPort: 9090 }]).takeovers
  t.same(serviceWarnings([svc('kubernetes.io/h2c', 'grpc')], h2), [], 'appProtocol kubernetes.io/h2c toward an h2c app: no warning')
  t.same(serviceWarnings([svc('grpc', 'grpc')], h2), [], 'appProtocol grpc toward an h2c app: no warning')
})

t.test('mTLS: csi-driver-spiffe\'s volume, mounted read-only into the sidecar only; DOORMAN_MTLS and DOORMAN_ALLOW from annotations', async (t) => {
  for (const mode of ['permissive', 'strict']) {
    const { tpl, warnings } = inject(template({ 'doorman.io/mtls': mode, 'doorman.io/allow': 'spiffe://cluster.local/ns/shop/sa/*' }))
    t.same(warnings, [])
    const spec = tpl.spec
    t.same(spec.volumes, [{ name: 'doorman-spiffe', csi: { driver: 'spiffe.csi.cert-manager.io', readOnly: true, volumeAttributes: { 'spiffe.csi.cert-manager.io/fs-group': '1000' } } }], `${mode}: the volume`)
    const c = sidecar(spec)
    t.same(c.volumeMounts, [{ name: 'doorman-spiffe', mountPath: '/var/run/secrets/spiffe.io', readOnly: true }], 'mounted into the sidecar, read-only, where DOORMAN_TLS_DIR points')
    t.equal(spec.containers[0].volumeMounts, undefined, 'not into the app')
    const env = envOf(c)
    t.equal(env.DOORMAN_MTLS, mode)
    t.equal(env.DOORMAN_ALLOW, 'spiffe://cluster.local/ns/shop/sa/*')
    await valid(t, { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'mtls', ...tpl.metadata }, spec }, `a pod with mTLS ${mode}`)
    const again = inject(tpl)
    t.same(again.tpl, tpl, 'idempotent')
  }
  const dir = inject(template({ 'doorman.io/mtls': 'strict', 'doorman.io/tls-dir': '/run/identity' })).tpl
  t.equal(sidecar(dir.spec).volumeMounts[0].mountPath, '/run/identity', 'doorman.io/tls-dir moves the mount')
  const off = inject(template()).tpl
  t.equal(off.spec.volumes, undefined, 'mTLS off: no volume')
  t.equal(sidecar(off.spec).volumeMounts, undefined)
  const mesh = inject(template(), { env: { DOORMAN_MTLS: 'permissive' } }).tpl
  t.equal(mesh.spec.volumes?.[0]?.name, 'doorman-spiffe', 'the mesh-wide default (DOORMAN_SIDECAR_ENV) mounts it too')
  const optOut = inject(template({ 'doorman.io/mtls': 'off' }), { env: { DOORMAN_MTLS: 'strict' } }).tpl
  t.equal(optOut.spec.volumes, undefined, "a pod's doorman.io/mtls: off wins over the mesh default")
  t.throws(() => inject(template({ 'doorman.io/allow': 'spiffe://cluster.local/ns/shop/sa/*' })), /doorman\.io\/allow.*DOORMAN_MTLS/, 'allow without mTLS is refused, naming the annotation')
  t.throws(() => inject(template({ 'doorman.io/mtls': 'strict', 'doorman.io/allow': 'shop' })), /doorman\.io\/allow/)
  const clash = template({ 'doorman.io/mtls': 'strict' }, { ...podSpec(), volumes: [{ name: 'doorman-spiffe', emptyDir: {} }] })
  t.throws(() => inject(clash), InjectError)
})
