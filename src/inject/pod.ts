// The sidecar injected into one pod template: a pure transform over plain Kubernetes objects (no I/O).
//
// What it does to a template that opts in:
//  - adds the doorman container (a native sidecar in initContainers by default, or a plain container), with its
//    settings from the pod's annotations, its own probes on the lane, and POD_IP / DOORMAN_NODE_IP from the
//    downward API;
//  - rewrites the app container's httpGet/tcpSocket/grpc probes to the lane's /app-health/<container>/<probe>, and
//    hands the originals to doorman in DOORMAN_APP_PROBES;
//  - takes over the app's port name: the app's port `http` becomes `http-app` and `http` now names doorman's
//    inbound port, so Services with `targetPort: http` reach doorman unchanged;
//  - orders termination: the app container's preStop is a kubelet httpGet to the lane's `/drain?wait=1`, which starts
//    the drain and answers only when drained, so the app gets SIGTERM after doorman has drained; and the pod's
//    terminationGracePeriodSeconds covers the drain.
import type { IContainer } from 'kubernetes-models/v1/Container'
import type { IProbe } from 'kubernetes-models/v1/Probe'
import type { IEnvVar } from 'kubernetes-models/v1/EnvVar'
import { loadConfig, type AppProbe, type SidecarResources } from '../config/index.js'
import { annotationFor, QUANTITY, SETTINGS, SIDECAR_RESOURCES } from '../config/table.js'
import { ConfigError } from '../core/errors.js'
import { version } from '../core/version.js'
import { INJECT, STATUS, SIDECAR_CPU, SIDECAR_MEMORY, SIDECAR_CPU_LIMIT, SIDECAR_MEMORY_LIMIT, readAnnotations } from './annotations.js'

export type Obj = Record<string, unknown>
/** A plain object (not null, not an array). */
export function isObj (v: unknown): v is Obj { return typeof v === 'object' && v !== null && !Array.isArray(v) }
export type Mode = 'native' | 'container'

export const SIDECAR_NAME = 'doorman'
/** The lane path of the app container's preStop hook. */
export const DRAIN_HOOK_PATH = '/drain?wait=1'
/** Seconds added to drain delay + drain timeout for the app's own shutdown after the drain. */
export const GRACE_MARGIN_SECONDS = 10
const DEFAULT_GRACE_SECONDS = 30
const DEFAULT_CONTAINER = 'kubectl.kubernetes.io/default-container'
/** uid/gid of the image's non-root user (see the Dockerfile). */
const SIDECAR_UID = 1000

export interface InjectOptions {
  /** `native` (default): an init container with restartPolicy Always; `container`: a plain container. */
  mode?: Mode
  /** Sidecar image; default `doorman:<version>`. */
  image?: string
  /** Inject templates that don't say either way (their namespace opted in). */
  injectByDefault?: boolean
  /** Bearer token the app's preStop hook sends to the lane (also set as DOORMAN_ADMIN_TOKEN); none = node address only. */
  drainToken?: string
  /** Defaults for the sidecar's settings (DOORMAN_SIDECAR_ENV); the pod's annotations win. */
  env?: Readonly<Record<string, string>>
  /** The sidecar's resources before the pod's doorman.io/sidecar-* annotations (DOORMAN_SIDECAR_RESOURCES). */
  resources?: Readonly<SidecarResources>
}

/** The app's port and the name doorman's inbound port took from it. */
export interface Takeover { name: string, appPort: number, inboundPort: number, protocol: 'http1' | 'h2c' }

export type TemplateOutcome =
  | { injected: true, warnings: string[], takeover: Takeover }
  | { injected: false, reason: string, warnings: string[] }

/** A template that asks for injection but can't have it as written; the message names what to change. */
export class InjectError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'InjectError'
  }
}

export function defaultImage (): string { return `doorman:${version}` }

function objAt (o: Obj, key: string): Obj {
  const v = o[key]
  if (isObj(v)) return v
  const fresh: Obj = {}
  o[key] = fresh
  return fresh
}

interface Port { name?: string, containerPort: number, protocol?: string }

/**
 * What a port speaks, read from its name the way Istio does (`<protocol>[-<suffix>]`) and from its `protocol`:
 * `http1` and `h2c` (gRPC, cleartext HTTP/2: DOORMAN_APP_PROTOCOL=h2c) doorman carries; `other` (TLS, databases, raw
 * TCP, UDP) it does not, so it never takes such a port over: a Service that targets it would break.
 */
export type PortKind = 'http1' | 'h2c' | 'other'
const H2C_NAMES = new Set(['grpc', 'h2c', 'http2'])
const OTHER_NAMES = new Set(['https', 'tls', 'tcp', 'udp', 'mongo', 'mysql', 'redis', 'postgres', 'postgresql', 'kafka', 'amqp', 'mqtt', 'nats', 'thrift', 'dubbo', 'zookeeper', 'cassandra', 'memcached', 'ldap', 'smtp', 'ssh', 'dns'])
export function portKind (p: { name?: string, protocol?: string }): PortKind {
  if ((p.protocol ?? 'TCP') !== 'TCP') return 'other'
  const name = typeof p.name === 'string' ? p.name.toLowerCase() : ''
  if (name === 'grpc-web' || name.startsWith('grpc-web-')) return 'http1'
  const prefix = name.split('-')[0]
  if (H2C_NAMES.has(prefix)) return 'h2c'
  if (OTHER_NAMES.has(prefix)) return 'other'
  return 'http1'
}

function portRefusal (p: Port): string {
  const what = `port ${p.name !== undefined ? `${p.name} (${p.containerPort})` : p.containerPort}`
  const byProtocol = (p.protocol ?? 'TCP') !== 'TCP'
  return `${what} speaks ${byProtocol ? String(p.protocol) : 'TLS or a non-HTTP protocol'} by its ${byProtocol ? 'protocol' : 'name'}, which doorman doesn't carry: taking it over would break every connection to it`
}

function portsOf (c: Obj): Port[] {
  return Array.isArray(c.ports) ? (c.ports as unknown[]).filter(isObj) as unknown as Port[] : []
}

/** Whether the template already carries the sidecar (injected before, or written by hand). */
export function alreadyInjected (tpl: Obj): boolean {
  const spec = isObj(tpl.spec) ? tpl.spec : {}
  const meta = isObj(tpl.metadata) ? tpl.metadata : {}
  const ann = isObj(meta.annotations) ? meta.annotations : {}
  if (ann[STATUS] !== undefined) return true
  for (const key of ['containers', 'initContainers']) {
    const list = spec[key]
    if (Array.isArray(list) && list.some((c) => isObj(c) && c.name === SIDECAR_NAME)) return true
  }
  return false
}

/** Whether a template opts in: `doorman.io/inject` on it, else the namespace default. */
export function wantsInjection (tpl: Obj, injectByDefault: boolean, warnings: string[]): boolean {
  const meta = isObj(tpl.metadata) ? tpl.metadata : {}
  const ann = isObj(meta.annotations) ? meta.annotations : {}
  const v = ann[INJECT]
  if (v === undefined) return injectByDefault
  if (v === 'enabled') return true
  if (v === 'disabled') return false
  warnings.push(`${INJECT}: got ${JSON.stringify(v)}; expected "enabled" or "disabled"; not injected`)
  return false
}

/**
 * Injects the sidecar into a pod template ({metadata, spec}) in place. Returns whether it did and why not; throws
 * InjectError when the template opts in but can't be injected as written.
 */
export function injectTemplate (tpl: Obj, opts: InjectOptions = {}): TemplateOutcome {
  const warnings: string[] = []
  if (!wantsInjection(tpl, opts.injectByDefault === true, warnings)) return { injected: false, reason: 'not opted in', warnings }
  if (alreadyInjected(tpl)) return { injected: false, reason: 'already injected', warnings }
  const spec = tpl.spec
  if (!isObj(spec) || !Array.isArray(spec.containers) || spec.containers.length === 0 || !spec.containers.every(isObj)) {
    throw new InjectError('the pod template has no containers')
  }
  if (spec.hostNetwork === true) {
    warnings.push('hostNetwork pods share the node\'s ports; not injected')
    return { injected: false, reason: 'hostNetwork', warnings }
  }
  const meta = objAt(tpl, 'metadata')
  const annotations = isObj(meta.annotations) ? meta.annotations : {}
  const labels = isObj(meta.labels) ? meta.labels : {}
  const containers = spec.containers as Obj[]
  const mode: Mode = opts.mode ?? 'native'

  const app = appContainer(containers, annotations)
  const appName = String(app.name)
  const appPorts = portsOf(app)
  const read = readAnnotations(annotations)
  warnings.push(...read.warnings)
  const env = new Map([...Object.entries(opts.env ?? {}), ...read.env])

  // The app's port: doorman.io/app-port (a number or one of the app's port names), else its first port.
  const appPortAnnotation = annotationFor('DOORMAN_APP_PORT')
  const given = env.get('DOORMAN_APP_PORT')
  let appPort: number
  let appPortEntryKind: PortKind = 'http1'
  if (given !== undefined && !/^\d+$/.test(given.trim())) {
    const named = appPorts.find((p) => p.name === given.trim())
    if (named === undefined) throw new InjectError(`${appPortAnnotation}: got ${JSON.stringify(given)}; expected a port number or the name of a port of container ${appName}`)
    if (portKind(named) === 'other') throw new InjectError(`${appPortAnnotation}: ${portRefusal(named)}; name an HTTP port, or leave this pod uninjected`)
    appPort = named.containerPort
    appPortEntryKind = portKind(named)
  } else if (given !== undefined) {
    appPort = Number(given)
    const declared = appPorts.find((p) => p.containerPort === appPort)
    if (declared !== undefined && portKind(declared) === 'other') throw new InjectError(`${appPortAnnotation}: ${portRefusal(declared)}; name an HTTP port, or leave this pod uninjected`)
    if (declared !== undefined) appPortEntryKind = portKind(declared)
  } else if (appPorts.length > 0 && Number.isInteger(appPorts[0].containerPort)) {
    appPort = appPorts[0].containerPort
    appPortEntryKind = portKind(appPorts[0])
    if (appPortEntryKind === 'other') {
      // Fail open: the pod keeps working without doorman rather than losing its traffic to a listener that can't speak it.
      warnings.push(`container ${appName}: ${portRefusal(appPorts[0])}; not injected (set ${appPortAnnotation} to the app's HTTP port if it has one)`)
      return { injected: false, reason: 'protocol', warnings }
    }
  } else {
    throw new InjectError(`container ${appName} declares no port: set ${appPortAnnotation} to the port the app listens on`)
  }
  env.set('DOORMAN_APP_PORT', String(appPort))
  // A gRPC or h2c port (by its name): doorman speaks cleartext HTTP/2 to the app, unless the pod says otherwise.
  if (appPortEntryKind === 'h2c' && !env.has('DOORMAN_APP_PROTOCOL')) env.set('DOORMAN_APP_PROTOCOL', 'h2c')
  if (!env.has('DOORMAN_SERVICE')) {
    const name = labels['app.kubernetes.io/name'] ?? labels.app
    if (typeof name === 'string' && name !== '') env.set('DOORMAN_SERVICE', name)
  }

  // The app's probes → the lane; the originals (named ports resolved against the app's ports) → DOORMAN_APP_PROBES.
  const probes: Record<string, AppProbe> = {}
  const rewritten: Array<[string, IProbe]> = []
  for (const [field, lanePath] of [['livenessProbe', 'livez'], ['readinessProbe', 'readyz'], ['startupProbe', 'startupz']] as const) {
    const p = app[field]
    if (!isObj(p) || (p.httpGet === undefined && p.tcpSocket === undefined && p.grpc === undefined)) continue
    const path = `/app-health/${appName}/${lanePath}`
    probes[path] = originalProbe(p, appPorts, appName, field)
    const { httpGet: _h, tcpSocket: _t, grpc: _g, exec: _e, ...timing } = p
    rewritten.push([field, { ...timing, httpGet: { path, port: 0, scheme: 'HTTP' } } as IProbe])
  }
  if (Object.keys(probes).length > 0) env.set('DOORMAN_APP_PROBES', JSON.stringify(probes))
  if (opts.drainToken !== undefined) env.set('DOORMAN_ADMIN_TOKEN', opts.drainToken)

  // Validate the sidecar's whole environment as `doorman run` will, naming the annotation on error.
  let cfg
  try {
    cfg = loadConfig(Object.fromEntries(env), { sidecar: true })
  } catch (err) {
    if (err instanceof ConfigError) {
      const setting = SETTINGS.find((s) => s.env === err.variable)
      const where = setting !== undefined && setting.annotatable !== false ? annotationFor(err.variable) : err.variable
      throw new InjectError(`${where}: ${err.message.replace(`${err.variable}: `, '')}`)
    }
    throw err
  }

  // doorman's ports must not collide with each other or with any port the pod declares.
  const own: Array<[string, number]> = [['DOORMAN_INBOUND_PORT', cfg.inboundPort], ['DOORMAN_ADMIN_PORT', cfg.adminPort]]
  if (cfg.outboundPort !== 0) own.push(['DOORMAN_OUTBOUND_PORT', cfg.outboundPort])
  const declared = new Map<number, string>()
  for (const c of [...containers, ...(Array.isArray(spec.initContainers) ? spec.initContainers.filter(isObj) : [])]) {
    for (const p of portsOf(c)) declared.set(p.containerPort, String(c.name))
  }
  declared.set(appPort, appName)
  for (const [i, [envName, port]] of own.entries()) {
    const clash = declared.get(port) ?? own.slice(0, i).find(([, q]) => q === port)?.[0]
    if (clash !== undefined) throw new InjectError(`${annotationFor(envName)}: port ${port} is already used by ${clash}; choose another`)
  }

  for (const [field, probe] of rewritten) {
    (probe.httpGet as { port: number }).port = cfg.adminPort
    app[field] = probe
  }

  // Port takeover: the app's port name now names doorman's inbound port.
  const appPortEntry = appPorts.find((p) => p.containerPort === appPort && (p.protocol ?? 'TCP') === 'TCP')
  const allNames = new Set<string>()
  for (const c of containers) for (const p of portsOf(c)) if (typeof p.name === 'string') allNames.add(p.name)
  let takenName: string
  if (appPortEntry?.name !== undefined) {
    takenName = appPortEntry.name
    appPortEntry.name = renamed(takenName, allNames)
  } else {
    takenName = allNames.has('http') ? 'doorman-http' : 'http'
    if (appPortEntry !== undefined) appPortEntry.name = renamed('http', new Set([...allNames, takenName]))
  }
  // Declared on the app container: named ports of native sidecars reach Services only from Kubernetes 1.32/1.33 on.
  app.ports = [...(Array.isArray(app.ports) ? app.ports : []), { name: takenName, containerPort: cfg.inboundPort, protocol: 'TCP' }]

  // Termination order: the app's preStop starts the drain and returns when doorman has drained.
  const lifecycle = isObj(app.lifecycle) ? app.lifecycle : undefined
  if (lifecycle?.preStop !== undefined) {
    warnings.push(`container ${appName} already has a preStop hook; kept, so doorman drains only when it gets SIGTERM (${mode === 'native' ? 'after the app has exited' : 'at the same time as the app'}): move that hook's work into the app's SIGTERM handling to get the drain first`)
  } else {
    const httpHeaders = opts.drainToken !== undefined ? [{ name: 'Authorization', value: `Bearer ${opts.drainToken}` }] : undefined
    app.lifecycle = { ...(lifecycle ?? {}), preStop: { httpGet: { path: DRAIN_HOOK_PATH, port: cfg.adminPort, scheme: 'HTTP', ...(httpHeaders !== undefined ? { httpHeaders } : {}) } } }
  }
  const needed = Math.ceil((cfg.drainDelay + cfg.drainTimeout) / 1000) + GRACE_MARGIN_SECONDS
  const grace = typeof spec.terminationGracePeriodSeconds === 'number' ? spec.terminationGracePeriodSeconds : DEFAULT_GRACE_SECONDS
  if (grace < needed) spec.terminationGracePeriodSeconds = needed

  const sidecar = sidecarContainer(env, cfg.adminPort, mode, opts.image ?? defaultImage(), resources(annotations, opts.resources ?? SIDECAR_RESOURCES))
  if (cfg.mtls !== 'off') mountIdentity(spec, sidecar, cfg.tlsDir)
  if (mode === 'native') {
    spec.initContainers = [sidecar, ...(Array.isArray(spec.initContainers) ? spec.initContainers : [])]
  } else {
    spec.containers = [...containers, sidecar]
    const restart = spec.restartPolicy
    if (restart === 'Never' || restart === 'OnFailure') {
      warnings.push('in container mode doorman keeps running after a Job\'s app completes: have the app call POST http://127.0.0.1:' + cfg.adminPort + '/drain when it is done, or use native mode')
    }
  }
  const ann = objAt(meta, 'annotations')
  ann[STATUS] = JSON.stringify({ version, mode })
  if (ann[DEFAULT_CONTAINER] === undefined) ann[DEFAULT_CONTAINER] = appName
  return { injected: true, warnings, takeover: { name: takenName, appPort, inboundPort: cfg.inboundPort, protocol: cfg.appProtocol } }
}

function appContainer (containers: Obj[], annotations: Obj): Obj {
  const preferred = annotations[DEFAULT_CONTAINER]
  return containers.find((c) => c.name === preferred) ?? containers[0]
}

/** `http` → `http-app`, within the 15 characters of a port name, unique in the pod. */
function renamed (name: string, taken: Set<string>): string {
  for (const suffix of ['-app', '-app2', '-app3', '-app4']) {
    const base = name.slice(0, 15 - suffix.length).replace(/-+$/, '')
    const candidate = base + suffix
    if (!taken.has(candidate)) { taken.add(candidate); return candidate }
  }
  throw new InjectError(`can't find a free port name to rename ${name}`)
}

function resolvePort (port: unknown, ports: Port[], app: string, field: string): number {
  if (typeof port === 'number') return port
  if (typeof port === 'string' && /^\d+$/.test(port)) return Number(port)
  const named = ports.find((p) => p.name === port)
  if (named === undefined) throw new InjectError(`container ${app}: ${field} names port ${JSON.stringify(port)}, which the container does not declare`)
  return named.containerPort
}

/** The app's own probe handler, as the lane runs it (contract shape of DOORMAN_APP_PROBES). */
function originalProbe (p: Obj, ports: Port[], app: string, field: string): AppProbe {
  const out: AppProbe = {}
  if (isObj(p.httpGet)) {
    const g = p.httpGet
    out.httpGet = { ...(g as unknown as NonNullable<AppProbe['httpGet']>), port: resolvePort(g.port, ports, app, field) }
  } else if (isObj(p.tcpSocket)) {
    out.tcpSocket = { ...(p.tcpSocket as unknown as NonNullable<AppProbe['tcpSocket']>), port: resolvePort(p.tcpSocket.port, ports, app, field) }
  } else if (isObj(p.grpc)) {
    out.grpc = { ...(p.grpc as unknown as NonNullable<AppProbe['grpc']>), port: resolvePort(p.grpc.port, ports, app, field) }
  }
  out.timeoutSeconds = typeof p.timeoutSeconds === 'number' ? p.timeoutSeconds : 1
  // kubelet's timing (its defaults when the pod leaves them out): the lane honours a readiness probe's thresholds.
  out.periodSeconds = typeof p.periodSeconds === 'number' ? p.periodSeconds : 10
  out.failureThreshold = typeof p.failureThreshold === 'number' ? p.failureThreshold : 3
  out.successThreshold = typeof p.successThreshold === 'number' ? p.successThreshold : 1
  return out
}

function resources (annotations: Obj, defaults: Readonly<SidecarResources>): NonNullable<IContainer['resources']> {
  const pick = (name: string, fallback: string | undefined): string | undefined => {
    const v = annotations[name]
    if (v === undefined) return fallback
    const s = String(v).trim()
    if (s === '' || s === 'none') return undefined
    if (!QUANTITY.test(s)) throw new InjectError(`${name}: got ${JSON.stringify(v)}; expected a Kubernetes quantity such as 100m, 128Mi or 1`)
    return s
  }
  const requests: Record<string, string> = {}
  const limits: Record<string, string> = {}
  const cpu = pick(SIDECAR_CPU, defaults.requests?.cpu)
  const memory = pick(SIDECAR_MEMORY, defaults.requests?.memory)
  const cpuLimit = pick(SIDECAR_CPU_LIMIT, defaults.limits?.cpu)
  const memoryLimit = pick(SIDECAR_MEMORY_LIMIT, defaults.limits?.memory)
  if (cpu !== undefined) requests.cpu = cpu
  if (memory !== undefined) requests.memory = memory
  if (cpuLimit !== undefined) limits.cpu = cpuLimit
  if (memoryLimit !== undefined) limits.memory = memoryLimit
  return { ...(Object.keys(requests).length > 0 ? { requests } : {}), ...(Object.keys(limits).length > 0 ? { limits } : {}) }
}

function sidecarContainer (env: Map<string, string>, adminPort: number, mode: Mode, image: string, res: NonNullable<IContainer['resources']>): IContainer {
  // The injector's own values first, then the pod's settings in the settings table's order.
  const order = ['DOORMAN_APP_PORT', 'DOORMAN_SERVICE', 'DOORMAN_APP_PROBES', 'DOORMAN_ADMIN_TOKEN']
  const rank = (name: string): number => {
    const i = order.indexOf(name)
    return i !== -1 ? i : order.length + SETTINGS.findIndex((s) => s.env === name)
  }
  const vars: IEnvVar[] = [
    { name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
    { name: 'DOORMAN_NODE_IP', valueFrom: { fieldRef: { fieldPath: 'status.hostIP' } } },
    ...[...env.entries()].sort(([a], [b]) => rank(a) - rank(b)).map(([name, value]) => ({ name, value }))
  ]
  const lane = (path: string, period: number, failures: number): IProbe => ({
    httpGet: { path, port: adminPort, scheme: 'HTTP' }, periodSeconds: period, timeoutSeconds: 1, failureThreshold: failures
  })
  return {
    name: SIDECAR_NAME,
    image,
    imagePullPolicy: 'IfNotPresent',
    args: ['run'],
    ...(mode === 'native' ? { restartPolicy: 'Always' } : {}),
    ports: [
      { name: 'doorman-admin', containerPort: adminPort, protocol: 'TCP' }
    ],
    env: vars,
    resources: res,
    securityContext: {
      runAsNonRoot: true,
      runAsUser: SIDECAR_UID,
      runAsGroup: SIDECAR_UID,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' }
    },
    startupProbe: lane('/startupz', 1, 60),
    livenessProbe: lane('/livez', 10, 3),
    readinessProbe: lane('/readyz', 2, 2),
    terminationMessagePolicy: 'FallbackToLogsOnError'
  }
}

/** The pod volume that carries the workload's certificate (cert-manager csi-driver-spiffe). */
export const TLS_VOLUME = 'doorman-spiffe'
export const SPIFFE_CSI_DRIVER = 'spiffe.csi.cert-manager.io'

/**
 * With mTLS on: csi-driver-spiffe's volume in the pod (read-only; its files group-readable by the sidecar's user),
 * mounted into the sidecar only — the app never holds the workload's key.
 */
function mountIdentity (spec: Obj, sidecar: IContainer, dir: string): void {
  const volumes = Array.isArray(spec.volumes) ? spec.volumes.filter(isObj) : []
  const existing = volumes.find((v) => v.name === TLS_VOLUME)
  if (existing !== undefined && !(isObj(existing.csi) && existing.csi.driver === SPIFFE_CSI_DRIVER)) {
    throw new InjectError(`the pod has a volume named ${TLS_VOLUME} that is not csi-driver-spiffe's: rename it (doorman mounts its identity under that name)`)
  }
  if (existing === undefined) {
    spec.volumes = [...volumes, {
      name: TLS_VOLUME,
      csi: { driver: SPIFFE_CSI_DRIVER, readOnly: true, volumeAttributes: { 'spiffe.csi.cert-manager.io/fs-group': String(SIDECAR_UID) } }
    }]
  }
  sidecar.volumeMounts = [{ name: TLS_VOLUME, mountPath: dir, readOnly: true }]
}
