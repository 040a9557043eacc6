// Targets outside the registry: `doorman checker` reads DOORMAN_CHECK_TARGETS (three plain HTTP servers with no
// sidecar, and a TCP-only service), publishes them into the registry, probes each with its own check, ejects the one
// whose /health answers 500 within failures × interval, recovers it on 200, and a consumer's outbound lane calls the
// service by name and never reaches the ejected one. The protection threshold holds as for sidecars. Editing the file
// (instances added and removed, the check changed) takes effect within a round; a broken file keeps the last good one.
import t from 'tap'
import net from 'node:net'
import { mkdtempSync, writeFileSync, renameSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { CLI, freePort, request, spawnNode, startDoorman, startServer, waitFor } from './helpers/index.js'
import { startRedis } from './helpers/redis.js'
import { checkerState, metric, rounds, startChecker } from './checker-helpers.js'
import { RedisRegistry, parseRegistryUrl, type RedisTarget, type Instance } from '../src/registry/index.js'

const INTERVAL = 300
const FAILURES = 3

function writeAtomically (file: string, text: string): void {
  const tmp = `${file}.tmp`
  writeFileSync(tmp, text)
  renameSync(tmp, file)
}

t.test('file targets: published, checked by their own check, ejected and recovered, balanced over by consumers', async (t) => {
  const redis = await startRedis(t)
  const dir = mkdtempSync(path.join(tmpdir(), 'doorman-targets-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const file = path.join(dir, 'targets.yaml')

  // Three plain HTTP servers: /health answers what `health[i]` says; / answers the server's name.
  const health = [200, 200, 200]
  const hits = [0, 0, 0]
  const servers = await Promise.all([0, 1, 2].map(async (i) => await startServer(t, (req, res) => {
    if (req.url === '/health' || req.url === '/ready') { res.statusCode = health[i]; res.end(); return }
    hits[i]++
    res.end(`s${i}`)
  })))
  // A TCP-only service: two listeners; one is closed later.
  const tcp = await Promise.all([0, 1].map(async () => await new Promise<net.Server>((resolve) => {
    const s = net.createServer((c) => { c.end() })
    s.listen(0, '127.0.0.1', () => { resolve(s) })
  })))
  t.teardown(() => { for (const s of tcp) s.close() })
  const tcpPorts = tcp.map((s) => (s.address() as net.AddressInfo).port)

  const yaml = (instances: number[], checkPath = '/health'): string => [
    'services:',
    '  - name: billing',
    '    org: finance',
    '    env: prod',
    `    check: {type: http, path: ${checkPath}, expect: "200-299", timeout: 200ms}`,
    `    instances: [${instances.map((i) => `"127.0.0.1:${servers[i].port}"`).join(', ')}]`,
    '  - name: cache',
    '    check: {type: tcp}',
    `    instances: [${tcpPorts.map((p) => `"127.0.0.1:${p}"`).join(', ')}]`,
    ''
  ].join('\n')
  writeAtomically(file, yaml([0, 1, 2]))

  const reg = new RedisRegistry({ target: parseRegistryUrl(redis.url) as RedisTarget, checkMs: 1000 })
  t.teardown(async () => { await reg.close() })
  t.ok(await reg.waitUp(5000))
  const billing = reg.watch('billing')
  const cache = reg.watch('cache')
  const byAddress = (view: ReadonlyMap<string, Instance>, port: number): Instance | undefined => [...view.values()].find((i) => i.address === `127.0.0.1:${port}`)

  const checker = await startChecker(t, { DOORMAN_REGISTRY: redis.url, DOORMAN_CHECK_TARGETS: file, DOORMAN_REGISTRY_TTL: '3s' })
  await waitFor('the file targets are in the registry', () => billing.view.size === 3 && cache.view.size === 2, 10_000)
  for (const i of billing.view.values()) {
    t.equal(i.source, 'static', `${i.id} is a static target`)
    t.equal(i.org, 'finance')
    t.equal(i.env, 'prod')
    t.equal(i.check?.type, 'http')
    t.equal(i.state, 'up')
  }
  t.equal([...cache.view.values()][0].check?.type, 'tcp')
  const listing = spawnNode(t, [CLI, 'instances', 'billing'], { DOORMAN_REGISTRY: redis.url })
  t.equal((await listing.exited).code, 0)
  t.equal(listing.output().split('\n').filter((l) => / up .* http \(static\)$/.test(l)).length, 3, '`doorman instances billing` lists the three static targets')

  // A consumer calls `billing` by name through its outbound lane.
  const web = await startServer(t, (_req, res) => { res.end('web') })
  const consumer = await startDoorman(t, { DOORMAN_REGISTRY: redis.url, DOORMAN_SERVICE: 'web', DOORMAN_APP_PORT: String(web.port), DOORMAN_OUTBOUND_PORT: String(await freePort()) })
  const call = async (): Promise<string> => (await request(consumer.outbound, { path: '/', headers: { host: 'billing' }, timeout: 5000 })).body
  const seen = new Set<string>()
  await waitFor('calls reach all three servers', async () => { seen.add(await call()); return seen.size === 3 }, 10_000)

  // s1's /health answers 500: ejected within failures × interval (plus a round for scheduling and the push).
  health[1] = 500
  const t0 = performance.now()
  await waitFor('s1 ejected', () => byAddress(billing.view, servers[1].port)?.state === 'ejected', 10_000, 10)
  const took = performance.now() - t0
  t.ok(took <= (FAILURES + 1) * INTERVAL + 500, `ejected ${Math.round(took)} ms after its /health turned 500 (failures × interval = ${FAILURES * INTERVAL} ms)`)
  await waitFor('the consumer sees s1 ejected', async () => {
    const text = (await request(consumer.admin, { path: '/metrics' })).body
    return /doorman_registry_instances\{service="billing",state="ejected"\} 1/.test(text)
  }, 10_000)
  hits[1] = 0
  const bodies = new Set<string>()
  for (let i = 0; i < 30; i++) bodies.add(await call())
  t.same([...bodies].sort(), ['s0', 's2'], 'calls go to the healthy servers')
  t.equal(hits[1], 0, 'the ejected server got no call')

  // The protection threshold (33% of 3 = 1): s0 failing too is held in, not ejected.
  health[0] = 500
  await waitFor('s0 held in by the threshold', async () => await metric(checker.admin, 'doorman_checker_ejections_blocked_total', 'reason="threshold"') > 0, 10_000)
  t.equal(byAddress(billing.view, servers[0].port)?.state, 'up', 's0 stays in: one of three is the budget')
  t.equal([...billing.view.values()].filter((i) => i.ejected).length, 1)
  health[0] = 200

  // s1 answers 200 again: recovered.
  health[1] = 200
  await waitFor('s1 recovered', () => byAddress(billing.view, servers[1].port)?.state === 'up', 10_000)
  t.pass('recovered once /health answers 200')

  // Probe outcomes and latency by kind of check.
  t.ok(await metric(checker.admin, 'doorman_checker_check_probes_total', 'type="http",result="ok"') > 0, 'http probes counted')
  t.ok(await metric(checker.admin, 'doorman_checker_check_probes_total', 'type="http",result="status"') > 0, 'http failures counted as status')
  t.ok(await metric(checker.admin, 'doorman_checker_check_probes_total', 'type="tcp",result="ok"') > 0, 'tcp probes counted')
  t.ok(await metric(checker.admin, 'doorman_checker_check_duration_seconds_count', 'type="http"') > 0, 'http probe latency observed')

  // TCP-only: a closed listener is ejected (2 instances: budget 1).
  await new Promise<void>((resolve) => { tcp[1].close(() => { resolve() }) })
  await waitFor('the closed TCP target ejected', () => byAddress(cache.view, tcpPorts[1])?.state === 'ejected', 10_000)
  t.equal(byAddress(cache.view, tcpPorts[0])?.state, 'up', 'the listening one stays up')

  // Editing the file: s2 removed, the check moved to /ready (s0 fails it), all without a restart.
  const roundBefore = (await checkerState(checker.admin)).lastRound?.round ?? 0
  health[0] = 200
  writeAtomically(file, yaml([0, 1], '/ready'))
  await waitFor('s2 removed from the registry', () => byAddress(billing.view, servers[2].port) === undefined, 10_000, 10)
  const roundAfter = (await checkerState(checker.admin)).lastRound?.round ?? 0
  t.ok(roundAfter - roundBefore <= 2, `removed within a round of the edit (rounds ${roundBefore} → ${roundAfter})`)
  await waitFor('the records carry the new check', () => [...billing.view.values()].every((i) => i.check?.type === 'http' && i.check.path === '/ready'), 5000)
  t.equal(billing.view.size, 2)
  // Added back: s2 returns.
  writeAtomically(file, yaml([0, 1, 2], '/ready'))
  await waitFor('s2 added again', () => byAddress(billing.view, servers[2].port)?.state === 'up', 10_000, 10)

  // A broken file: refused, the last good one kept (the targets stay published and checked), said in the metrics.
  writeAtomically(file, 'services:\n  - name: Billing!\n    instances: [nope]\n')
  await waitFor('the broken file is refused', async () => await metric(checker.admin, 'doorman_checker_targets_file_ok') === 0, 10_000)
  t.equal(await metric(checker.admin, 'doorman_checker_targets_file_refused_total'), 1)
  const st = await checkerState(checker.admin) as unknown as { targetsFile: { error: string } }
  t.match(st.targetsFile.error, /services\[0\]\.name/, '/state says why')
  t.match(checker.output(), /targets file refused/, 'and the log')
  // The records outlive their TTL (3 s, 10 rounds): the owner keeps them alive from the last good file.
  await rounds(checker.admin, 12)
  t.equal(billing.view.size, 3, 'the last good targets stay published')
  health[2] = 500
  await waitFor('s2 still checked (ejected on /ready 500)', () => byAddress(billing.view, servers[2].port)?.state === 'ejected', 10_000)
  writeAtomically(file, yaml([0, 1, 2], '/ready'))
  await waitFor('the fixed file is good again', async () => await metric(checker.admin, 'doorman_checker_targets_file_ok') === 1, 10_000)

  billing.close()
  cache.close()
  checker.kill('SIGTERM')
  t.equal((await checker.exited).code, 0)
})

t.test('a bad targets file at start: exit 78 naming DOORMAN_CHECK_TARGETS', async (t) => {
  const redis = await startRedis(t)
  const dir = mkdtempSync(path.join(tmpdir(), 'doorman-targets-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const file = path.join(dir, 'targets.yaml')
  writeFileSync(file, 'services:\n  - name: billing\n    check: {type: http, expect: "600"}\n    instances: ["127.0.0.1:1"]\n')
  const checker = await startChecker(t, { DOORMAN_REGISTRY: redis.url, DOORMAN_CHECK_TARGETS: file }, { waitReady: false })
  const { code } = await checker.exited
  t.equal(code, 78)
  t.match(checker.output(), /DOORMAN_CHECK_TARGETS: services\[0\]\.check\.expect/)
})

t.test('one budget for a service of sidecars and file targets together', async (t) => {
  const redis = await startRedis(t)
  const dir = mkdtempSync(path.join(tmpdir(), 'doorman-targets-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const apps = await Promise.all([0, 1].map(async (i) => await startServer(t, (_req, res) => { res.end(`app${i}`) })))
  const [a] = await Promise.all(apps.map(async (app) => await startDoorman(t, { DOORMAN_REGISTRY: redis.url, DOORMAN_SERVICE: 'orders', DOORMAN_APP_PORT: String(app.port) })))
  let health = 200
  const machine = await startServer(t, (_req, res) => { res.statusCode = health; res.end('machine') })
  const file = path.join(dir, 'targets.yaml')
  writeAtomically(file, `services:\n  - name: orders\n    check: {type: http, path: /health}\n    instances: ["127.0.0.1:${machine.port}"]\n`)
  const reg = new RedisRegistry({ target: parseRegistryUrl(redis.url) as RedisTarget, checkMs: 1000 })
  t.teardown(async () => { await reg.close() })
  const orders = reg.watch('orders')
  t.teardown(() => { orders.close() })
  const checker = await startChecker(t, { DOORMAN_REGISTRY: redis.url, DOORMAN_CHECK_TARGETS: file })
  await waitFor('two sidecars and the machine', () => orders.view.size === 3 && [...orders.view.values()].every((i) => i.state === 'up'), 10_000)
  // The machine fails its check and sidecar a freezes: 33% of 3 is one, whichever kind.
  health = 500
  process.kill(a.proc.pid as number, 'SIGSTOP')
  t.teardown(() => { try { process.kill(a.proc.pid as number, 'SIGCONT') } catch {} })
  await waitFor('one ejected, the other held in', async () => [...orders.view.values()].filter((i) => i.ejected).length === 1 &&
    await metric(checker.admin, 'doorman_checker_ejections_blocked_total', 'reason="threshold"') > 0, 10_000)
  await rounds(checker.admin, 3)
  t.equal([...orders.view.values()].filter((i) => i.ejected).length, 1, 'never more than one of the three')
  process.kill(a.proc.pid as number, 'SIGCONT')
  health = 200
  await waitFor('all back', () => [...orders.view.values()].every((i) => i.state === 'up'), 10_000)
  checker.kill('SIGTERM')
  t.equal((await checker.exited).code, 0)
})
