// The kubelet stand-in (tools/src/demo/kubelet.ts) that the demo and other tests use: thresholds, timeouts, and real
// restarts of a real process when its liveness probe fails.
import t from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import http from 'node:http'
import { freePort, startServer, waitFor } from './helpers/index.js'
import { Container, Pod, Prober, probeOnce, type ProbeRecord } from '../tools/src/demo/kubelet.js'

t.test('probeOnce: status, timeout, refused', async (t) => {
  let delay = 0
  let status = 200
  const { port } = await startServer(t, (_req, res) => { setTimeout(() => { res.statusCode = status; res.end() }, delay) })
  t.match(await probeOnce({ port, path: '/health' }), { ok: true, detail: 'HTTP 200' })
  status = 302
  t.match(await probeOnce({ port, path: '/health' }), { ok: true }, '3xx passes, as in kubelet')
  status = 500
  t.match(await probeOnce({ port, path: '/health' }), { ok: false, detail: 'HTTP 500' })
  status = 200
  delay = 400
  const slow = await probeOnce({ port, path: '/health', timeoutMs: 100 })
  t.match(slow, { ok: false, detail: 'timeout', ms: 100 }, 'no answer within the timeout fails, counted at the timeout')
  const closed = await freePort()
  t.match(await probeOnce({ port: closed, path: '/health' }), { ok: false, detail: 'ECONNREFUSED' })
})

t.test('Prober: failure and success thresholds', async (t) => {
  let delay = 0
  const { port } = await startServer(t, (_req, res) => { setTimeout(() => { res.end('ok') }, delay) })
  const p = new Prober({ port, path: '/health', periodMs: 50, timeoutMs: 100, failureThreshold: 3, successThreshold: 2 }, true)
  t.teardown(async () => { await p.stop() })
  const results: ProbeRecord[] = []
  const changes: boolean[] = []
  p.on('result', (r: ProbeRecord) => { results.push(r) })
  p.on('change', (ok: boolean) => { changes.push(ok) })
  p.start()
  await waitFor('a few passing probes', () => results.length >= 3)
  t.equal(p.ok, true)
  delay = 300
  await waitFor('the verdict to flip to failed', () => !p.ok, 5000)
  const failedRun = results.slice(results.findIndex((r) => !r.ok))
  t.ok(failedRun.length >= 3 && failedRun.slice(0, 3).every((r) => !r.ok), 'it took three failures in a row')
  t.same(changes, [false])
  delay = 0
  await waitFor('the verdict to recover', () => p.ok, 5000)
  t.same(changes, [false, true])
  t.ok(p.stats.failures >= 3 && p.stats.maxMs >= 100)
})

// A child that serves /health on a fixed port; SIGSTOP makes it hang like a saturated pool.
const SERVER = `
const http = require('node:http')
http.createServer((req, res) => { res.end(req.url === '/exit' ? (setImmediate(() => process.exit(3)), 'bye') : 'ok') }).listen(Number(process.argv[1]), '127.0.0.1')
`

t.test('Container: a hung process is killed and started again; one that exits is restarted', async (t) => {
  const port = await freePort()
  const c = new Container({
    name: 'app',
    start: () => spawn(process.execPath, ['-e', SERVER, String(port)], { stdio: 'ignore' }),
    startup: { port, path: '/health', periodMs: 50, timeoutMs: 200, failureThreshold: 100 },
    liveness: { port, path: '/health', periodMs: 100, timeoutMs: 150, failureThreshold: 2 },
    readiness: { port, path: '/health', periodMs: 100, timeoutMs: 150, failureThreshold: 1 },
    terminationGraceMs: 300
  })
  const pod = new Pod('pod-1', [c])
  t.teardown(async () => {
    if (c.proc?.pid !== undefined) { try { process.kill(c.proc.pid, 'SIGCONT') } catch {} }
    await pod.stop()
  })
  pod.start()
  await waitFor('the pod to be ready', () => pod.ready, 10_000)
  t.equal(pod.restarts, 0)
  const first = c.proc?.pid as number

  process.kill(first, 'SIGSTOP')
  await waitFor('the hung container to be restarted and ready again', () => c.restarts === 1 && pod.ready, 15_000)
  t.not(c.proc?.pid, first, 'a new process')
  const kinds = c.events.map((e) => e.type)
  t.ok(kinds.includes('unhealthy') && kinds.includes('killed'), 'liveness failure, then a kill')

  // A process that exits by itself is restarted too (restartPolicy: Always).
  const second = c.proc?.pid
  await new Promise<void>((resolve) => {
    const req = http.get({ port, path: '/exit', agent: false }, (res) => { res.resume(); res.on('end', resolve) })
    req.on('error', () => { resolve() })
  })
  await waitFor('the exited container to be back', () => c.restarts === 2 && pod.ready && c.proc?.pid !== second, 15_000)
  t.equal(pod.restarts, 2)

  await pod.stop()
  t.equal(c.proc, null, 'stopped for good')
  t.equal(pod.ready, false)
})

t.test('Container.stop ends a process that ignores SIGTERM after the grace period', async (t) => {
  const port = await freePort()
  const c = new Container({
    name: 'stubborn',
    start: () => spawn(process.execPath, ['-e', `process.on('SIGTERM', () => {}); ${SERVER}`, String(port)], { stdio: 'ignore' }),
    readiness: { port, path: '/health', periodMs: 50, timeoutMs: 200, failureThreshold: 1 },
    terminationGraceMs: 200
  })
  t.teardown(async () => { await c.stop() })
  c.start()
  await waitFor('ready', () => c.ready, 10_000)
  const proc = c.proc
  const exited = once(proc as NonNullable<typeof proc>, 'exit')
  await c.stop()
  const [, signal] = await exited
  t.equal(signal, 'SIGKILL')
})
