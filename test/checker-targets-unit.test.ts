// The checker's definitions and scopes without processes: check definitions (objects and the annotation's short
// form), the targets file's shape and its refusals, reloading a file (a bad change keeps the last good set), the mode
// table's most specific entry by service, cluster, org and env, selectors by org, and static record ids.
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync, renameSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { parseCheck, checkFromObject, checkKey, parseExpect } from '../src/checker/spec.js'
import { parseTargets, TargetsFile, TargetsError, type SourceService } from '../src/checker/targets.js'
import { ModeTable, SCOPE, serviceSelector, needsLabels } from '../src/checker/policy.js'
import { staticId } from '../src/checker/publisher.js'
import { decisions } from '../src/checker/index.js'
import { loadConfig } from '../src/config/index.js'
import { ConfigError } from '../src/core/errors.js'

t.test('the annotation\'s short form', async (t) => {
  t.equal(parseCheck(''), null)
  t.same(parseCheck('http:8080/health'), { type: 'http', port: 8080, path: '/health', method: 'GET', expect: [200, 299] })
  t.same(parseCheck('https:8443/health'), { type: 'http', port: 8443, path: '/health', method: 'GET', expect: [200, 299], tls: {} })
  t.same(parseCheck('tcp:6379'), { type: 'tcp', port: 6379 })
  t.same(parseCheck('grpc:9090/ledger.v1.Ledger'), { type: 'grpc', port: 9090, service: 'ledger.v1.Ledger' })
  t.same(parseCheck('grpc:9090'), { type: 'grpc', port: 9090, service: '' })
  for (const bad of ['http', 'udp:53', 'tcp:80/x', 'http:0/x', 'http:70000/', 'grpc:9090/a b']) t.throws(() => parseCheck(bad), `${bad} refused`)
})

t.test('definitions as objects', async (t) => {
  t.same(checkFromObject({ type: 'http', path: '/h', method: 'head', headers: { Host: 'x' }, expect: '2xx', timeout: '1.5s', interval: '10s', tls: { ca: '/ca.pem' } }),
    { type: 'http', timeout: 1500, interval: 10_000, path: '/h', method: 'HEAD', headers: { host: 'x' }, expect: [200, 299], tls: { ca: '/ca.pem' } })
  t.same(parseExpect('200'), [200, 200])
  t.same(parseExpect([204, 204]), [204, 204], 'as stored in a record')
  t.throws(() => parseExpect('299-200'))
  t.throws(() => checkFromObject({ type: 'http', path: 'health' }), /path/)
  t.throws(() => checkFromObject({ type: 'http', headers: { 'x-a': 'a\r\nb: c' } }), /headers/)
  t.throws(() => checkFromObject({ type: 'tcp', path: '/x' }), /not a field of a tcp check/)
  t.throws(() => checkFromObject({ type: 'dubbo' }), /type/)
  t.throws(() => checkFromObject({ type: 'tcp', timeout: '0s' }), /timeout/)
  t.throws(() => checkFromObject({ type: 'grpc', tls: { ca: 5 } }), /tls\.ca/)
  t.equal(checkKey({ type: 'grpc', service: 'a', port: 1 }), checkKey({ port: 1, service: 'a', type: 'grpc' }), 'keys in any order')
  t.not(checkKey({ type: 'http', path: '/', method: 'GET', expect: [200, 299], tls: { ca: '/a' } }), checkKey({ type: 'http', path: '/', method: 'GET', expect: [200, 299], tls: { ca: '/b' } }), 'nested fields count')
})

t.test('DOORMAN_CHECK, DOORMAN_ORG and DOORMAN_ENV are checked at start', async (t) => {
  const cfg = loadConfig({ DOORMAN_CHECK: 'grpc:9090/pay.v1.Pay', DOORMAN_ORG: 'finance', DOORMAN_ENV: 'prod', DOORMAN_CHECK_CANARY: 'org:finance,pay-*' })
  t.same(cfg.check, { type: 'grpc', port: 9090, service: 'pay.v1.Pay' })
  t.equal(cfg.org, 'finance')
  t.same(cfg.checkCanary, ['org:finance', 'pay-*'])
  t.equal(loadConfig({}).check, null)
  for (const [k, v] of [['DOORMAN_CHECK', 'http:x'], ['DOORMAN_ORG', 'Finance'], ['DOORMAN_CHECK_CANARY', 'team:x']]) {
    let err: unknown
    try { loadConfig({ [k]: v }) } catch (e) { err = e }
    t.ok(err instanceof ConfigError && err.variable === k, `${k}=${v} refused naming ${k}`)
  }
})

t.test('the targets file\'s shape', async (t) => {
  const s = parseTargets(`
services:
  - name: billing
    org: finance
    env: prod
    check: {type: http, path: /health, expect: "200-299", timeout: 1s}
    instances: ["10.0.0.6:8080", "10.0.0.5:8080"]
  - name: billing
    cluster: eu
    instances: ["[::1]:8080"]
`)
  t.equal(s.length, 2)
  t.same(s[0].instances, ['10.0.0.5:8080', '10.0.0.6:8080'], 'sorted')
  t.same(s[1].check, { type: 'tcp' }, 'tcp by default')
  t.equal(s[1].cluster, 'eu')
  t.same(parseTargets(''), [], 'an empty file: no targets')
  const refused: Array<[string, RegExp]> = [
    ['services: 3', /services: expected a list/],
    ['targets: []', /targets: unknown key/],
    ['services: [{name: Billing, instances: []}]', /services\[0\]\.name/],
    ['services: [{name: b, instances: ["10.0.0.5"]}]', /services\[0\]\.instances\[0\]/],
    ['services: [{name: b, instances: ["10.0.0.5:0"]}]', /instances\[0\]/],
    ['services: [{name: b, instances: ["a:1", "a:1"]}]', /listed twice/],
    ['services: [{name: b, instances: []}, {name: b, instances: []}]', /services\[1\]: b in cluster default is listed twice/],
    ['services: [{name: b, org: "Fin ance", instances: []}]', /services\[0\]\.org/],
    ['services: [{name: b, check: {type: http, expect: 700}, instances: []}]', /services\[0\]\.check\.expect/],
    ['services: [{name: b, weight: 3, instances: []}]', /services\[0\]\.weight: unknown key/],
    ['services: [{name: b, check: {type: grpc, tls: true}, instances: ["10.0.0.5:9090"]}]', /a grpc check over TLS needs a host name/],
    ['services: [', /not YAML/]
  ]
  for (const [text, re] of refused) t.throws(() => parseTargets(text), re, text)
})

t.test('a targets file reloads on change and keeps the last good set', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'doorman-targets-unit-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const file = path.join(dir, 't.yaml')
  const put = (text: string): void => { writeFileSync(`${file}.tmp`, text); renameSync(`${file}.tmp`, file) }
  const errors: string[] = []
  const f = new TargetsFile({ path: file, onError: (m) => { errors.push(m) } })
  const missing = await f.load().then(() => null, (e: unknown) => e)
  t.ok(missing instanceof TargetsError, 'a missing file at start')
  t.match((missing as Error).message, /cannot read/)
  put('services: [{name: a, instances: ["127.0.0.1:1"]}]')
  t.equal((await f.load()).version, 1)
  t.equal((await f.refresh()).version, 1, 'unchanged: same set')
  put('services: [{name: a, instances: ["127.0.0.1:1", "127.0.0.1:2"]}]')
  const v2 = await f.refresh()
  t.equal(v2.version, 2)
  t.same(v2.services[0].instances, ['127.0.0.1:1', '127.0.0.1:2'])
  put('services: [{name: A, instances: []}]')
  t.equal(await f.refresh(), v2, 'a bad change: the last good set')
  t.match(f.error, /services\[0\]\.name/)
  t.equal(f.refused, 1)
  t.equal(errors.length, 1)
  await f.refresh()
  t.equal(errors.length, 1, 'told once')
  rmSync(file)
  t.equal(await f.refresh(), v2, 'a vanished file: the last good set')
  t.match(f.error, /cannot read/)
  put('services: [{name: a, instances: ["127.0.0.1:3"]}]')
  t.equal((await f.refresh()).version, 3)
  t.equal(f.error, null, 'good again')
})

t.test('the mode table by service, cluster, org and env', async (t) => {
  const { table, bad } = ModeTable.parse('full', { 'org:finance': 'off', 'env:prod': 'recover-only', pay: 'full', 'pay/eu': 'off', 'org:Bad': 'off' })
  t.same(bad, ['org:Bad=off'])
  t.same(table.decide('shop', 'default', 'retail', 'prod'), { mode: 'recover-only', scope: 'env:prod' })
  t.same(table.decide('ledger', 'default', 'finance', 'prod'), { mode: 'off', scope: 'org:finance' }, 'an org over an env')
  t.same(table.decide('pay', 'default', 'finance', 'prod'), { mode: 'full', scope: 'pay' }, 'a service over its org')
  t.same(table.decide('pay', 'eu', 'finance', 'prod'), { mode: 'off', scope: 'pay/eu' })
  t.same(table.decide('shop', 'default'), { mode: 'full', scope: 'default' }, 'unlabelled: the default')
  t.ok(table.anyOn('ledger'), 'an org entry may not apply: look at the instances')
  t.notOk(new ModeTable('off', new Map([['org:x', 'off']])).anyOn('a'))
  t.ok(new ModeTable('off', new Map([['org:x', 'full']])).anyOn('a'))
  t.ok(SCOPE.test('env:staging') && SCOPE.test('org:pay-1') && !SCOPE.test('team:x') && !SCOPE.test('org:'))
  const rows = decisions(table, [
    { service: 'pay', cluster: 'eu', org: 'finance', env: 'prod' },
    { service: 'ledger', cluster: 'default', org: 'finance' },
    { service: 'ledger', cluster: 'default', org: 'finance' }
  ])
  t.same(rows.map((r) => `${r.service}/${r.cluster}:${r.mode}:${r.scope}`), ['ledger/default:off:org:finance', 'pay/eu:off:pay/eu'])
})

t.test('selectors by name and org', async (t) => {
  const sel = serviceSelector(['pay-*', 'org:fin*', 'env:staging'])
  t.ok(sel('pay-1'))
  t.ok(sel('ledger', { org: 'finance', env: '' }))
  t.ok(sel('x', { org: '', env: 'staging' }))
  t.notOk(sel('ledger', { org: 'retail', env: 'prod' }))
  t.notOk(sel('ledger'))
  t.ok(needsLabels(['a', 'org:b']))
  t.notOk(needsLabels(['a', 'b*']))
})

t.test('static record ids', async (t) => {
  t.equal(staticId('10.0.0.5:8080', 'default'), 'static-10.0.0.5-8080')
  t.equal(staticId('[::1]:8080', 'eu west'), 'static---1-8080-eu-west')
})

t.test('a Checker publishes a source\'s targets, follows its changes, and honours a check\'s own interval', async (t) => {
  const { Checker, MemoryCoordinator, CheckerMetrics } = await import('../src/checker/index.js')
  const { MemoryRegistry } = await import('../src/registry/index.js')
  const { silentLogger } = await import('../src/core/log.js')
  const { startServer } = await import('./helpers/index.js')
  const hits = new Map<string, number>()
  const servers = await Promise.all(['a', 'b', 'c'].map(async (name) => await startServer(t, (req, res) => { hits.set(name, (hits.get(name) ?? 0) + 1); res.end() })))
  const addr = (i: number): string => `127.0.0.1:${servers[i].port}`
  const registry = new MemoryRegistry()
  t.teardown(async () => { await registry.close() })
  // A read source held in memory: what another inventory than the file would hand the checker.
  let version = 1
  let services: SourceService[] = [
    { name: 'web', cluster: 'default', org: 'shop', env: '', check: { type: 'http', path: '/health', method: 'GET', expect: [200, 299] }, instances: [addr(0), addr(1)] },
    { name: 'slow', cluster: 'default', org: '', env: '', check: { type: 'http', path: '/health', method: 'GET', expect: [200, 299], interval: 60_000 }, instances: [addr(2)] }
  ]
  const source = {
    name: 'memory',
    error: null,
    get current () { return { services, version } },
    refresh: async () => ({ services, version })
  }
  const checker = new Checker({ registry, coordinator: new MemoryCoordinator(registry), id: 'r1', interval: 5000, timeout: 2000, failures: 2, successes: 1, maxEject: 50, mode: 'full', concurrency: 10, replicaTtl: 60_000, log: silentLogger(), metrics: new CheckerMetrics({ defaults: false }), targets: source })
  t.teardown(async () => { await checker.stop() })
  let r = await checker.round()
  t.equal(r.error, undefined)
  const web = await registry.list('web')
  t.same(web.map((i) => [i.id, i.source, i.org, i.check?.type]), [[staticId(addr(0), 'default'), 'static', 'shop', 'http'], [staticId(addr(1), 'default'), 'static', 'shop', 'http']].sort())
  t.equal(r.targets, 3, 'published and probed in the same round')
  for (let i = 0; i < 4; i++) r = await checker.round()
  t.equal(hits.get('a'), 5, 'a probed every round')
  t.equal(hits.get('c'), 1, 'slow (interval 60 s) probed once in five rounds')
  // An instance removed, a service dropped: their records go.
  services = [{ ...services[0], instances: [addr(1)] }]
  version++
  await checker.round()
  t.same((await registry.list('web')).map((i) => i.address), [addr(1)])
  t.same(await registry.list('slow'), [], 'a service no longer listed loses its static records')
  t.match(checker.state(), { targetsFile: { source: 'memory', publishedServices: 1, publishedInstances: 1 } })
})
