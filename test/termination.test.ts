// Plays kubelet's part at pod deletion over the pod spec the injector generates, with real processes: doorman
// (`dist/cli.js` with the container's args and environment) and an app. Native mode: the main containers' preStop
// hooks run first, each container gets SIGTERM when its hook returns, SIGKILL at the grace period, and the native
// sidecar gets SIGTERM only after the main containers have exited. Container mode: every container at once, each
// running its own hook then getting SIGTERM.
import t from 'tap'
import http from 'node:http'
import { injectObject } from '../src/inject/workload.js'
import { CLI, spawnNode, freePort, waitFor, request, type Child } from './helpers/index.js'
import { schemaErrors } from './helpers/k8s.js'

type Any = Record<string, any>

/** Where kubelet's calls come from, and the pod's address (both on loopback here). */
const NODE_IP = '127.0.0.2'
const POD_IP = '127.0.0.1'

const APP = `
const http = require('node:http')
const s = http.createServer((req, res) => {
  if (req.url === '/slow') setTimeout(() => res.end('slow done'), 800)
  else if (req.url === '/stuck') {}
  else res.end('ok')
})
s.listen(Number(process.env.APP_PORT), '127.0.0.1', () => console.log('listening'))
process.on('SIGTERM', () => {
  console.log('SIGTERM ' + Date.now())
  s.close(() => process.exit(0))
  s.closeIdleConnections()
  setTimeout(() => process.exit(0), 1500).unref()
})
`

function podFor (appPort: number, inbound: number, admin: number, annotations: Record<string, string>): Any {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: 'web',
      labels: { app: 'web' },
      annotations: { 'doorman.io/inject': 'enabled', 'doorman.io/inbound-port': String(inbound), 'doorman.io/admin-port': String(admin), ...annotations }
    },
    spec: {
      containers: [{
        name: 'web',
        image: 'example/web:1',
        ports: [{ name: 'http', containerPort: appPort }],
        readinessProbe: { httpGet: { path: '/ready', port: 'http' }, periodSeconds: 1 }
      }]
    }
  }
}

function portOf (container: Any, port: number | string): number {
  if (typeof port === 'number') return port
  const p = (container.ports as Any[]).find((x) => x.name === port)
  if (p === undefined) throw new Error(`container ${String(container.name)} has no port ${port}`)
  return p.containerPort
}

/** An httpGet handler run as kubelet runs it: to the pod's address, from the node's. */
async function httpGet (container: Any, action: Any, timeoutMs: number): Promise<{ status: number, body: string }> {
  return await new Promise((resolve, reject) => {
    const headers = Object.fromEntries(((action.httpHeaders ?? []) as Any[]).map((h) => [h.name, h.value]))
    const req = http.request({ host: action.host ?? POD_IP, port: portOf(container, action.port), path: action.path, method: 'GET', headers: { 'user-agent': 'kube-lifecycle/1.31', ...headers }, localAddress: NODE_IP, agent: false }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }) })
      res.on('error', reject)
    })
    req.setTimeout(timeoutMs, () => { req.destroy(new Error('hook timed out')) })
    req.on('error', reject)
    req.end()
  })
}

/** Starts a container of the spec: the doorman image's entrypoint is `node dist/cli.js`. */
function startContainer (t: Tap.Test, c: Any): Child {
  const env: Record<string, string> = { DOORMAN_BIND_HOST: '127.0.0.1' } // this machine's loopback stands for the pod network
  for (const e of c.env as Any[]) {
    if (e.value !== undefined) env[e.name] = e.value
    else if (e.valueFrom?.fieldRef?.fieldPath === 'status.podIP') env[e.name] = POD_IP
    else if (e.valueFrom?.fieldRef?.fieldPath === 'status.hostIP') env[e.name] = NODE_IP
    else throw new Error(`no value for ${String(e.name)}`)
  }
  return spawnNode(t, [CLI, ...(c.args as string[])], env)
}

interface Event { what: string, at: number }

interface Run {
  events: Event[]
  hook: { status: number, body: string } | Error
  app: Child
  doorman: Child
  grace: number
  slow: Promise<{ status: number, body: string }>
  during: { status: number, headers: http.IncomingHttpHeaders } | null
}

/** Creates the pod (sidecar started and passing its startup probe first in native mode), then deletes it. */
async function playPod (t: Tap.Test, mode: 'native' | 'container', annotations: Record<string, string>, inFlightPath: string): Promise<Run> {
  const [appPort, inbound, admin] = [await freePort(), await freePort(), await freePort()]
  const injected = injectObject(podFor(appPort, inbound, admin, annotations), { mode }).object as Any
  t.same(await schemaErrors(injected), [], 'the injected pod validates')
  const spec = injected.spec
  const sidecar = [...(spec.initContainers ?? []), ...spec.containers].find((c: Any) => c.name === 'doorman')
  const app = spec.containers.find((c: Any) => c.name === 'web')
  const grace = (spec.terminationGracePeriodSeconds as number | undefined ?? 30) * 1000 // Kubernetes' default: 30 s

  const doorman = startContainer(t, sidecar)
  if (mode === 'native') {
    await waitFor('the sidecar\'s startup probe', async () => (await httpGet(sidecar, sidecar.startupProbe.httpGet, 1000)).status === 200, 15_000)
  }
  const appProc = spawnNode(t, ['-e', APP], { APP_PORT: String(appPort) })
  await waitFor('the pod ready (doorman /readyz)', async () => (await httpGet(sidecar, sidecar.readinessProbe.httpGet, 1000)).status === 200, 15_000)
  const takenOver = (app.ports as Any[]).find((p) => p.name === 'http').containerPort
  t.equal(takenOver, inbound, 'the Service port name `http` now leads to doorman')
  t.equal((await request(takenOver, { path: '/' })).body, 'ok', 'traffic flows through doorman')

  // A request in flight when the pod is deleted.
  const slow = request(takenOver, { path: inFlightPath, timeout: 20_000 }).catch((err: Error) => ({ status: 0, body: err.message }))
  await waitFor('the request in flight', async () => JSON.parse((await request(admin, { path: '/state' })).body).inflight === 1)

  const events: Event[] = []
  const mark = (what: string): void => { events.push({ what, at: Date.now() }) }
  const deleted = Date.now()
  const deadline = deleted + grace
  mark('deleted')
  const untilDeadline = (): number => Math.max(0, deadline - Date.now())
  const stop = async (name: string, c: Child): Promise<void> => {
    mark(`SIGTERM ${name}`)
    c.kill('SIGTERM')
    const killer = setTimeout(() => { mark(`SIGKILL ${name}`); c.kill('SIGKILL') }, name === 'doorman' ? Math.max(2000, untilDeadline()) : untilDeadline())
    await c.exited
    clearTimeout(killer)
    mark(`exited ${name}`)
  }
  const runHook = async (): Promise<{ status: number, body: string } | Error> => {
    mark('preStop web')
    const r = await httpGet(app, app.lifecycle.preStop.httpGet, untilDeadline()).catch((err: Error) => err)
    mark('preStop web returned')
    return r
  }
  let during: Run['during'] = null
  const sendDuring = (async () => {
    await waitFor('the drain started', async () => JSON.parse((await request(admin, { path: '/state' })).body).phase === 'draining', 5000)
    const r = await request(takenOver, { path: '/' })
    during = { status: r.status, headers: r.headers }
  })()

  let hook: Run['hook']
  if (mode === 'native') {
    hook = await runHook()
    await stop('web', appProc)
    await stop('doorman', doorman)
  } else {
    // No preStop on the doorman container: its SIGTERM starts the same drain.
    const [h] = await Promise.all([runHook().then(async (h) => { await stop('web', appProc); return h }), stop('doorman', doorman)])
    hook = h
  }
  await sendDuring.catch(() => {})
  return { events, hook, app: appProc, doorman, grace, slow, during }
}

/** Wall-clock time of a doorman log line. */
function logTime (child: Child, msg: string): number {
  for (const line of child.output().split('\n')) {
    if (!line.startsWith('{')) continue
    const o = JSON.parse(line) as Any
    if (o.msg === msg) return Date.parse(o.time as string)
  }
  throw new Error(`no "${msg}" in doorman's log:\n${child.output()}`)
}

function at (run: Run, what: string): number {
  const e = run.events.find((x) => x.what === what)
  if (e === undefined) throw new Error(`no event ${what}: ${JSON.stringify(run.events)}`)
  return e.at
}

async function checkOrder (t: Tap.Test, run: Run, clean: boolean): Promise<void> {
  const drainStarted = logTime(run.doorman, 'drain started')
  const drainFinished = logTime(run.doorman, 'drain finished')
  const appSigterm = at(run, 'SIGTERM web')
  const appSaw = Number(/SIGTERM (\d+)/.exec(run.app.output())?.[1])
  t.ok(drainStarted <= appSigterm, `doorman started draining (${drainStarted - at(run, 'deleted')} ms after deletion) before the app got SIGTERM (${appSigterm - at(run, 'deleted')} ms)`)
  t.ok(drainFinished <= appSigterm, 'the app got SIGTERM only after doorman had drained')
  t.ok(drainFinished <= appSaw, '...as the app itself saw it')
  t.notOk(run.hook instanceof Error, `the preStop hook answered (${String(run.hook instanceof Error ? run.hook.message : run.hook.status)})`)
  if (!(run.hook instanceof Error)) {
    t.equal(run.hook.status, 200)
    t.equal(JSON.parse(run.hook.body).phase, 'closed')
    t.equal(JSON.parse(run.hook.body).cut, clean ? 0 : 1, clean ? 'nothing cut' : 'the stuck request was cut at the drain timeout')
  }
  t.notOk(run.events.some((e) => e.what.startsWith('SIGKILL')), 'nobody needed SIGKILL: all within the grace period')
  t.equal((await run.app.exited).code, 0, 'the app exited cleanly')
  t.equal((await run.doorman.exited).code, 0, 'doorman exited 0')
  t.ok(at(run, 'exited doorman') - at(run, 'deleted') < run.grace, 'the pod was gone within terminationGracePeriodSeconds')
  t.equal(run.during?.status, 200, 'a request arriving during the drain delay was served')
  t.equal(run.during?.headers['x-doorman-draining'], '1', '...flagged so the client moves on')
}

const QUICK = { 'doorman.io/drain-delay': '2s', 'doorman.io/drain-quiet': '300ms', 'doorman.io/drain-timeout': '5s' }

t.test('native sidecar: the app\'s preStop drains doorman before the app gets SIGTERM', async (t) => {
  const run = await playPod(t, 'native', QUICK, '/slow')
  await checkOrder(t, run, true)
  const slow = await run.slow
  t.same([slow.status, slow.body], [200, 'slow done'], 'the request in flight at deletion completed')
  t.ok(at(run, 'SIGTERM doorman') >= at(run, 'exited web'), 'the sidecar got SIGTERM after the app had exited')
})

t.test('container mode: the same order with both containers stopped at once', async (t) => {
  const run = await playPod(t, 'container', QUICK, '/slow')
  await checkOrder(t, run, true)
  const slow = await run.slow
  t.same([slow.status, slow.body], [200, 'slow done'], 'the request in flight at deletion completed')
  t.ok(at(run, 'SIGTERM doorman') < at(run, 'SIGTERM web'), 'doorman got SIGTERM first, and drained')
})

t.test('a request stuck past the drain timeout: cut, then the app gets SIGTERM', async (t) => {
  const run = await playPod(t, 'native', { ...QUICK, 'doorman.io/drain-timeout': '1s' }, '/stuck')
  await checkOrder(t, run, false)
  const stuck = await run.slow
  t.not(stuck.status, 200, 'the stuck request was cut')
})
