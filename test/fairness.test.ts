// Overload that one caller causes stays that caller's, end to end: a real `doorman run` with a limit of 10 in front of
// an app that takes 50 ms (capacity 200 requests/s). Caller A floods from 127.0.0.2 at 10× the app's capacity, caller
// B sends at 20 % of it from 127.0.0.3. With DOORMAN_FAIRNESS=flow (the default) B is served (≥ 99 %) within 2× its
// unloaded latency plus one service time, and what is shed is A's; with DOORMAN_FAIRNESS=off the same load sheds B.
// Over HTTP/1.1 and over HTTP/2 (A's streams all on one connection: one flow), with the flows named by a trusted
// proxy's DOORMAN_FLOW_HEADER on one client address, and with both callers on one address over mutual TLS (strict),
// each its own verified SPIFFE ID and so its own flow.
import t from 'tap'
import http2 from 'node:http2'
import { Pool } from 'undici'
import path from 'node:path'
import fs from 'node:fs'
import { startDoorman, startFixtureApp, getJson, spawnNode, waitFor, request, ROOT } from './helpers/index.js'
import { Pki } from './helpers/pki.js'

const SERVICE_MS = 50
const LIMIT = 10
const CAPACITY = LIMIT * 1000 / SERVICE_MS // requests per second
const A_RATE = CAPACITY * 10
const B_RATE = CAPACITY * 0.2
/**
 * How long A floods; B sends for B_MS of it, once A's connections have stopped growing: 160 requests, so that B's p99
 * is a 99th percentile (with 80 or fewer it would be the slowest request alone).
 */
const LOAD_MS = 6000
const B_MS = 4000

interface Answer { status: number, shed: string | undefined }
type Send = () => Promise<Answer>

interface Tally { sent: number, ok: number, shed: Map<string, number>, other: number, latencies: number[] }

/** Sends at `rate` per second (open loop: not waiting for answers) for `ms`; resolves once every answer is in. */
async function openLoop (send: Send, rate: number, ms: number): Promise<Tally> {
  const tally: Tally = { sent: 0, ok: 0, shed: new Map(), other: 0, latencies: [] }
  const pending: Array<Promise<void>> = []
  const start = performance.now()
  const one = async (): Promise<void> => {
    const t0 = performance.now()
    try {
      const a = await send()
      if (a.status === 200) { tally.ok++; tally.latencies.push(performance.now() - t0) } else if (a.shed !== undefined) tally.shed.set(a.shed, (tally.shed.get(a.shed) ?? 0) + 1)
      else tally.other++
    } catch {
      tally.other++
    }
  }
  await new Promise<void>((resolve) => {
    const tick = (): void => {
      const elapsed = performance.now() - start
      const due = Math.min(Math.floor(elapsed * rate / 1000), Math.floor(ms * rate / 1000))
      while (tally.sent < due) { tally.sent++; pending.push(one()) }
      if (elapsed >= ms) { clearInterval(timer); resolve() }
    }
    const timer = setInterval(tick, 5)
  })
  await Promise.all(pending)
  return tally
}

function p99 (xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.ceil(s.length * 0.99) - 1)] ?? Infinity
}

const shedTotal = (t: Tally): number => [...t.shed.values()].reduce((a, b) => a + b, 0)

/** A caller over HTTP/1.1 from `localAddress` (keep-alive connections, as many as it needs). */
function h1Caller (t: Tap.Test, port: number, localAddress: string, headers: Record<string, string> = {}, tls?: { cert: string, key: string, ca: string }): Send {
  // Over mutual TLS with `tls`: the server's certificate is checked against the CA; it names a SPIFFE ID, no host.
  const connect = tls === undefined ? undefined : { ...tls, checkServerIdentity: () => undefined }
  const pool = new Pool(`${tls === undefined ? 'http' : 'https'}://127.0.0.1:${port}`, { connections: 50, localAddress, headersTimeout: 10_000, bodyTimeout: 10_000, connect })
  t.teardown(async () => { await pool.destroy() })
  return async () => {
    const r = await pool.request({ path: '/work', method: 'GET', headers })
    await r.body.dump()
    const shed = r.headers['x-doorman-shed']
    return { status: r.statusCode, shed: typeof shed === 'string' ? shed : undefined }
  }
}

/** A caller over HTTP/2 from `localAddress`: every request a stream of one connection. */
async function h2Caller (t: Tap.Test, port: number, localAddress: string): Promise<Send> {
  const session = http2.connect(`http://127.0.0.1:${port}`, { localAddress })
  session.on('error', () => {})
  await new Promise<void>((resolve, reject) => { session.once('connect', () => { resolve() }); session.once('error', reject) })
  t.teardown(() => { session.destroy() })
  return async () => await new Promise<Answer>((resolve, reject) => {
    const s = session.request({ ':path': '/work' })
    let status = 0
    let shed: string | undefined
    s.on('response', (h) => { status = Number(h[':status']); const v = h['x-doorman-shed']; shed = typeof v === 'string' ? v : undefined })
    s.on('error', reject)
    s.resume()
    s.on('end', () => { resolve({ status, shed }) })
  })
}

interface Scenario { fairness: 'flow' | 'off', protocol: 'http1' | 'h2' | 'header' | 'mtls' }

const FLOOD_ID = 'spiffe://cluster.local/ns/batch/sa/report-job'
const LIGHT_ID = 'spiffe://cluster.local/ns/shop/sa/web'

/** A CA, the provider's workload directory and the two callers' pairs (A's also as files, for the flood process). */
function identities (t: Tap.Test): { dir: string, a: { cert: string, key: string, ca: string }, b: { cert: string, key: string, ca: string }, aFiles: Record<string, string> } {
  const pki = new Pki(t)
  const ca = pki.ca('fairness-ca')
  const dir = pki.workload('provider', pki.leaf(ca, { id: 'spiffe://cluster.local/ns/shop/sa/orders' }), ca.cert)
  const a = { ...pki.leaf(ca, { id: FLOOD_ID }), ca: ca.cert }
  const b = { ...pki.leaf(ca, { id: LIGHT_ID }), ca: ca.cert }
  const aFiles = { TLS_CERT: path.join(pki.dir, 'flood.crt'), TLS_KEY: path.join(pki.dir, 'flood.key'), TLS_CA: ca.certFile }
  fs.writeFileSync(aFiles.TLS_CERT, a.cert)
  fs.writeFileSync(aFiles.TLS_KEY, a.key, { mode: 0o600 })
  return { dir, a, b, aFiles }
}

async function run (t: Tap.Test, sc: Scenario): Promise<{ a: Tally, b: Tally, unloadedP99: number, state: { flows?: Array<{ flow: string, inflight: number, queued: number, shed: number }> }, metrics: string }> {
  const app = await startFixtureApp(t, 'executor-app.mjs', { SLOTS: String(LIMIT), WORK_MS: String(SERVICE_MS), JITTER: '0' })
  const ids = sc.protocol === 'mtls' ? identities(t) : null
  const dm = await startDoorman(t, {
    DOORMAN_APP_PORT: String(app.port),
    DOORMAN_MAX_CONCURRENCY: String(LIMIT),
    DOORMAN_FAIRNESS: sc.fairness,
    ...(sc.protocol === 'header' ? { DOORMAN_FLOW_HEADER: 'x-tenant', DOORMAN_TRUSTED_HOPS: '1' } : {}),
    ...(ids !== null ? { DOORMAN_MTLS: 'strict', DOORMAN_TLS_DIR: ids.dir } : {})
  })
  // A in a process of its own (its event loop busy with 2,000 requests/s would delay B's measured answers).
  const floodEnv: Record<string, string> = { PORT: String(dm.inbound), RATE: String(A_RATE), MS: String(LOAD_MS), LOCAL: '127.0.0.2', PROTOCOL: sc.protocol === 'h2' ? 'h2' : 'http1' }
  let b: Send
  if (sc.protocol === 'h2') {
    b = await h2Caller(t, dm.inbound, '127.0.0.3')
  } else if (sc.protocol === 'header') {
    // One proxy in front (one client address) naming two tenants.
    floodEnv.LOCAL = '127.0.0.4'
    floodEnv.HEADER = 'x-tenant:batch-job'
    b = h1Caller(t, dm.inbound, '127.0.0.4', { 'x-tenant': 'shop' })
  } else if (ids !== null) {
    // Two sidecars' callers from one address (a node's SNAT, or one proxy): only their certificates tell them apart.
    floodEnv.LOCAL = '127.0.0.4'
    Object.assign(floodEnv, ids.aFiles)
    b = h1Caller(t, dm.inbound, '127.0.0.4', {}, ids.b)
  } else {
    b = h1Caller(t, dm.inbound, '127.0.0.3')
  }
  // B alone first, at its own rate: its unloaded latency (a few requests warm the path up first).
  for (let i = 0; i < 5; i++) await b()
  const alone = await openLoop(b, B_RATE, 1000)
  if (alone.ok !== alone.sent) throw new Error(`B alone: ${describeTally(alone)}`)
  const unloaded = alone.latencies
  // A floods; B starts once A has filled the limit and the queue.
  const flood = spawnNode(t, [path.join(ROOT, 'test', 'fixtures', 'flood.mjs')], floodEnv)
  await waitFor('the flood to start', () => flood.output().includes('"ready":true'), 10_000)
  // B starts once A has filled the limit and the queue (polled: the state the lane publishes).
  await waitFor('A to fill the queue', async () => (await getJson<{ queued: number }>(dm.admin, '/state')).queued >= 50, 5000)
  // ... and once A's connections stop growing. In a flood's first second over HTTP/1.1 every request A has queued
  // holds a connection of its own, so A opens 300–400 of them at once, and that storm of new connections holds up
  // everything for a few hundred milliseconds before a request of B's arrives in doorman (docs/limits.md). B's
  // bound is about the flood, not the ramp of A's connections.
  await waitFor('the flood\'s connections to settle', () => flood.output().includes('"steady":true'), 5000)
  const bTally = await openLoop(b, B_RATE, B_MS)
  const state = await getJson<{ flows?: Array<{ flow: string, inflight: number, queued: number, shed: number }> }>(dm.admin, '/state')
  await flood.exited
  const line = flood.output().trim().split('\n').at(-1) as string
  const r = JSON.parse(line) as { sent: number, ok: number, other: number, shed: Record<string, number> }
  const aTally: Tally = { sent: r.sent, ok: r.ok, other: r.other, shed: new Map(Object.entries(r.shed)), latencies: [] }
  const metrics = (await request(dm.admin, { path: '/metrics', timeout: 5000 })).body
  return { a: aTally, b: bTally, unloadedP99: p99(unloaded), state, metrics }
}

const describeTally = (x: Tally): string => `sent ${x.sent}, ok ${x.ok}, shed ${JSON.stringify(Object.fromEntries(x.shed))}, other ${x.other}${x.latencies.length > 0 ? `, p99 ${Math.round(p99(x.latencies))} ms` : ''}`

for (const protocol of ['http1', 'h2', 'header', 'mtls'] as const) {
  t.test(`${protocol}: with fairness the light caller is served and the flood is shed`, async (t) => {
    const { a, b, unloadedP99, state, metrics } = await run(t, { fairness: 'flow', protocol })
    t.comment(`A: ${describeTally(a)}`)
    t.comment(`B: ${describeTally(b)}; unloaded p99 ${Math.round(unloadedP99)} ms`)
    t.ok(shedTotal(a) > a.sent / 2, 'the flood is overload: most of A is shed')
    t.ok((a.shed.get('flow-share') ?? 0) > 0, 'A is shed for going over its share')
    t.match(metrics, /^doorman_shed_total\{reason="flow-share"\} [1-9]/m, 'the metric counts it by reason')
    t.notMatch(metrics, /"(?:ip|h|id):/, 'flows never become metric labels')
    t.ok(b.ok >= b.sent * 0.99, `≥ 99 % of B served (${b.ok}/${b.sent})`)
    t.equal(b.other, 0, 'B saw no failure')
    const heavy = protocol === 'header' ? 'h:batch-job' : protocol === 'mtls' ? `id:${FLOOD_ID}` : 'ip:127.0.0.2'
    t.equal(state.flows?.[0]?.flow, heavy, '/state lists the flooding caller as the heaviest flow')
    t.ok((state.flows?.[0]?.queued ?? 0) > 0 && (state.flows?.[0]?.shed ?? 0) > 0, 'with its queued and shed counts')
    if (protocol === 'mtls') t.ok(state.flows?.some((f) => f.flow === `id:${LIGHT_ID}`), 'the light caller is its own flow by its SPIFFE ID, on the same address')
    // The issue's bound: B's p99 within 2 × its unloaded p99 plus one service time (B waits for the next slot, at
    // most one service time, since fair queuing gives it the next turn).
    const bound = 2 * unloadedP99 + SERVICE_MS
    t.ok(p99(b.latencies) <= bound, `B's p99 ${Math.round(p99(b.latencies))} ms within 2 × its unloaded p99 + one service time (${Math.round(bound)} ms)`)
  })

  t.test(`${protocol}: with DOORMAN_FAIRNESS=off the same flood sheds the light caller too`, async (t) => {
    const { a, b } = await run(t, { fairness: 'off', protocol })
    t.comment(`A: ${describeTally(a)}`)
    t.comment(`B: ${describeTally(b)}`)
    t.ok(shedTotal(a) > a.sent / 2, 'the flood is overload')
    t.ok(shedTotal(b) >= b.sent * 0.1, `B is shed with A (${shedTotal(b)}/${b.sent})`)
    t.equal(a.shed.get('flow-share') ?? 0, 0, 'no flow-share without fairness')
  })
}
