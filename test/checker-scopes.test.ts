// Scopes by organisation: a mode set for `org:finance` stops (`off`) or limits (`recover-only`) finance's services
// only, on every replica within a round, and `doorman checker mode` and /state say which entry decided; a canary group
// selected by org (`DOORMAN_CHECK_CANARY=org:finance`) owns finance's services — file targets and sidecars alike —
// and the main group none of them.
import t from 'tap'
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { CLI, spawnNode, startDoorman, startServer, waitFor } from './helpers/index.js'
import { startRedis } from './helpers/redis.js'
import { checkerState, metric, rounds, startChecker, type CheckerProc } from './checker-helpers.js'
import { RedisRegistry, parseRegistryUrl, type RedisTarget, type Instance } from '../src/registry/index.js'

interface Decision { service: string, cluster: string, org: string, mode: string, scope: string }

t.test('modes and canary scoped by org', async (t) => {
  const redis = await startRedis(t)
  const dir = mkdtempSync(path.join(tmpdir(), 'doorman-scopes-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  // Six plain HTTP servers: three for `pay` (org finance), three for `shop` (org retail).
  const health = [200, 200, 200, 200, 200, 200]
  const servers = await Promise.all(health.map(async (_h, i) => await startServer(t, (_req, res) => { res.statusCode = health[i]; res.end() })))
  const file = path.join(dir, 'targets.yaml')
  const list = (from: number): string => `[${[from, from + 1, from + 2].map((i) => `"127.0.0.1:${servers[i].port}"`).join(', ')}]`
  writeFileSync(file, [
    'services:',
    '  - name: pay',
    '    org: finance',
    '    env: prod',
    '    check: {type: http, path: /health}',
    `    instances: ${list(0)}`,
    '  - name: shop',
    '    org: retail',
    '    env: prod',
    '    check: {type: http, path: /health}',
    `    instances: ${list(3)}`,
    ''
  ].join('\n'))
  const reg = new RedisRegistry({ target: parseRegistryUrl(redis.url) as RedisTarget, checkMs: 1000 })
  t.teardown(async () => { await reg.close() })
  const pay = reg.watch('pay')
  const shop = reg.watch('shop')
  t.teardown(() => { pay.close(); shop.close() })
  const state = (w: { view: ReadonlyMap<string, Instance> }, i: number): string | undefined => [...w.view.values()].find((x) => x.address === `127.0.0.1:${servers[i].port}`)?.state

  const env = { DOORMAN_REGISTRY: redis.url, DOORMAN_CHECK_TARGETS: file }
  // Two replicas of the main group: pay and shop may land on either.
  const mains: CheckerProc[] = await Promise.all([startChecker(t, env), startChecker(t, env)])
  await waitFor('both services published', () => pay.view.size === 3 && shop.view.size === 3, 10_000)
  const mode = async (...args: string[]): Promise<string> => {
    const c = spawnNode(t, [CLI, 'checker', 'mode', ...args], { DOORMAN_REGISTRY: redis.url })
    const { code } = await c.exited
    t.equal(code, 0, c.output())
    return c.output()
  }

  // org:finance off: pay is not checked any more (a failing instance stays up); shop still is.
  const out = await mode('org:finance', 'off')
  t.match(out, /org:finance: off/)
  t.match(out, /pay\/default \(org finance, env prod\): off \(org:finance\)/, 'the command says which entry decided pay')
  t.match(out, /shop\/default \(org retail, env prod\): full \(DOORMAN_CHECK_MODE\)/)
  for (const m of mains) await rounds(m.admin, 1)
  health[1] = 500
  health[4] = 500
  await waitFor('shop\'s failing instance ejected', () => state(shop, 4) === 'ejected', 10_000)
  for (const m of mains) await rounds(m.admin, 5)
  t.equal(state(pay, 1), 'up', 'pay (finance, off) is left alone on every replica')
  for (const m of mains) t.equal(await metric(m.admin, 'doorman_checker_mode_entry', 'scope="org:finance",mode="off"'), 1, 'the entry is in the metrics (DoormanCheckerScopeDegraded)')
  const decided = (await Promise.all(mains.map(async (m) => (await checkerState(m.admin) as unknown as { decisions: Decision[] }).decisions))).flat()
  t.same(decided.find((d) => d.service === 'shop'), { service: 'shop', cluster: 'default', org: 'retail', env: 'prod', mode: 'full', scope: 'default' }, '/state: shop by the default')
  t.match(decided.find((d) => d.service === 'pay'), { mode: 'off', scope: 'org:finance' }, '/state: pay off by org:finance')
  t.equal(decided.filter((d) => d.service === 'pay').length, 1, 'one replica owns pay')

  // org:finance full: pay's failing instance is ejected.
  await mode('org:finance', 'full')
  await waitFor('pay\'s failing instance ejected', () => state(pay, 1) === 'ejected', 10_000)
  // recover-only for finance: a second failing instance is not ejected, the first is released once healthy.
  await mode('org:finance', 'recover-only')
  for (const m of mains) await rounds(m.admin, 1)
  health[1] = 200
  health[0] = 500
  // (the threshold would block it anyway while s1 is ejected: wait for s1's release first.)
  await waitFor('pay\'s first instance released in recover-only', () => state(pay, 1) === 'up', 10_000)
  const blocked = async (): Promise<number> => (await Promise.all(mains.map(async (m) => await metric(m.admin, 'doorman_checker_ejections_blocked_total', 'reason="mode"')))).reduce((a, b) => a + b, 0)
  await waitFor('pay\'s second failing instance held back by the mode', async () => await blocked() > 0, 10_000)
  t.equal(state(pay, 0), 'up', 'recover-only never ejects')
  health[5] = 500
  health[4] = 200
  await waitFor('shop (retail, full) still ejects', () => state(shop, 5) === 'ejected' && state(shop, 4) === 'up', 10_000)
  const decidedNow = (await Promise.all(mains.map(async (m) => (await checkerState(m.admin) as unknown as { decisions: Decision[] }).decisions))).flat()
  t.match(decidedNow.find((d) => d.service === 'pay'), { mode: 'recover-only', scope: 'org:finance' }, '/state: pay by org:finance')
  health[0] = 200
  health[5] = 200
  await mode('org:finance', '--clear')

  // A canary group by org: finance's services (the file's pay, and a sidecar's ledger labelled by DOORMAN_ORG) go to
  // the canary replica only.
  const app = await startServer(t, (_req, res) => { res.end('ledger') })
  await startDoorman(t, { DOORMAN_REGISTRY: redis.url, DOORMAN_SERVICE: 'ledger', DOORMAN_APP_PORT: String(app.port), DOORMAN_ORG: 'finance' })
  for (const m of mains) m.kill('SIGTERM')
  for (const m of mains) t.equal((await m.exited).code, 0)
  const canaryEnv = { ...env, DOORMAN_CHECK_CANARY: 'org:finance' }
  const [main, canary] = await Promise.all([startChecker(t, canaryEnv), startChecker(t, { ...canaryEnv, DOORMAN_CHECK_GROUP: 'canary' })])
  await waitFor('the canary owns finance\'s services', async () => (await checkerState(canary.admin)).services.join(',') === 'ledger,pay', 10_000)
  await waitFor('the main group owns the rest', async () => (await checkerState(main.admin)).services.join(',') === 'shop', 10_000)
  // The canary checks them: pay's failing instance is ejected by the canary replica.
  health[2] = 500
  await waitFor('pay ejected by the canary', () => state(pay, 2) === 'ejected', 10_000)
  t.equal(await metric(canary.admin, 'doorman_checker_ejections_total'), 1)
  t.equal(await metric(main.admin, 'doorman_checker_ejections_total'), 0, 'the main group never touched it')
  for (const c of [main, canary]) c.kill('SIGTERM')
  for (const c of [main, canary]) t.equal((await c.exited).code, 0)
})
