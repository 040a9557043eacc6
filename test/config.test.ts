import t from 'tap'
import { loadConfig, parseDuration, SETTINGS, annotationFor, keyFor } from '../src/config/index.js'
import { ConfigError } from '../src/core/errors.js'
import { CLI, spawnNode } from './helpers/index.js'

t.test('durations', async (t) => {
  t.equal(parseDuration('250ms'), 250)
  t.equal(parseDuration('5s'), 5000)
  t.equal(parseDuration('2m'), 120_000)
  t.equal(parseDuration('1.5s'), 1500)
  t.equal(parseDuration('1h'), 3_600_000)
  t.equal(parseDuration('300'), 300)
  t.equal(parseDuration('5 sec'), undefined)
  t.equal(parseDuration('-1s'), undefined)
  t.equal(parseDuration(''), undefined)
})

t.test('defaults follow the contract', async (t) => {
  const c = loadConfig({ DOORMAN_APP_PORT: '8080' }, { sidecar: true })
  t.equal(c.inboundPort, 7080)
  t.equal(c.outboundPort, 7081)
  t.equal(c.adminPort, 7090)
  t.equal(c.appHost, '127.0.0.1')
  t.equal(c.maxConcurrency, 100)
  t.equal(c.limitMode, 'static')
  t.equal(c.limitMin, 4)
  t.equal(c.criticalReserve, 20)
  t.equal(c.maxQueue, 100)
  t.equal(c.queueTimeout, 1000)
  t.equal(c.upstreamTimeout, 30_000)
  t.equal(c.registry, 'memory')
  t.equal(c.advertiseHost, '127.0.0.1')
  t.equal(c.registryTtl, 15_000)
  t.equal(c.warmup, 60_000)
  t.equal(c.warmupAggression, 1)
  t.equal(c.warmupMinWeight, 10)
  t.equal(c.drainDelay, 5000)
  t.equal(c.drainQuiet, 1000)
  t.equal(c.drainTimeout, 25_000)
  t.equal(c.cluster, 'default')
  t.equal(c.zone, '')
  t.equal(c.logLevel, 'info')
  t.equal(c.webhookPort, 8443)
  t.equal(c.checkInterval, 3000)
  t.equal(c.checkTimeout, 1000)
  t.equal(c.checkFailures, 3)
  t.equal(c.checkSuccesses, 2)
  t.equal(c.checkMaxEject, 33)
  t.equal(c.checkMode, 'full')
  t.ok(Object.isFrozen(c))
})

t.test('POD_IP is the advertised host by default', async (t) => {
  t.equal(loadConfig({ DOORMAN_APP_PORT: '1', POD_IP: '10.1.2.3' }).advertiseHost, '10.1.2.3')
  t.equal(loadConfig({ DOORMAN_APP_PORT: '1', POD_IP: '10.1.2.3', DOORMAN_ADVERTISE_HOST: 'a.b' }).advertiseHost, 'a.b')
})

t.test('lists and probes', async (t) => {
  const c = loadConfig({ DOORMAN_APP_PORT: '1', DOORMAN_CRITICAL_PATHS: '/checkout/*, /pay', DOORMAN_APP_PROBES: '{"/app-health/app/livez":{"httpGet":{"path":"/health","port":8080},"timeoutSeconds":1}}' })
  t.same(c.criticalPaths, ['/checkout/*', '/pay'])
  t.equal(c.appProbes['/app-health/app/livez'].httpGet?.path, '/health')
})

const BAD: Array<[string, string]> = [
  ['DOORMAN_APP_PORT', 'http'],
  ['DOORMAN_APP_PORT', '70000'],
  ['DOORMAN_INBOUND_PORT', '-1'],
  ['DOORMAN_MAX_CONCURRENCY', '0'],
  ['DOORMAN_MAX_CONCURRENCY', '1.5'],
  ['DOORMAN_LIMIT_MODE', 'fast'],
  ['DOORMAN_QUEUE_TIMEOUT', '5 sec'],
  ['DOORMAN_UPSTREAM_TIMEOUT', '0'],
  ['DOORMAN_CRITICAL_RESERVE', '120'],
  ['DOORMAN_MAX_QUEUE', 'many'],
  ['DOORMAN_REGISTRY', 'mysql://x'],
  ['DOORMAN_WARMUP_AGGRESSION', '0'],
  ['DOORMAN_WARMUP_MIN_WEIGHT', '101'],
  ['DOORMAN_DRAIN_DELAY', 'soon'],
  ['DOORMAN_APP_PROBES', '{not json'],
  ['DOORMAN_APP_PROBES', '{"/livez":{"httpGet":{"port":1}}}'],
  ['DOORMAN_APP_PROBES', '[]'],
  ['DOORMAN_APP_PROBES', '{"/app-health/app/livez":{"timeoutSeconds":1}}'],
  ['DOORMAN_APP_PROBES', '{"/app-health/app/livez":{"httpGet":{"path":"/h"}}}'],
  ['DOORMAN_APP_PROBES', '{"/app-health/app/livez":{"grpc":{"port":"grpc"}}}'],
  ['DOORMAN_APP_PROBES', '{"/app-health/app/readyz":{"tcpSocket":{"port":1},"timeoutSeconds":0}}'],
  ['DOORMAN_APP_PROBES', '{"/app-health/app/readyz":{"httpGet":{"port":1,"httpHeaders":[{"name":"x"}]}}}'],
  ['DOORMAN_WARMUP_AGGRESSION', '1e3'],
  ['DOORMAN_CHECK_CANARY', 'Orders'],
  ['DOORMAN_LOG_LEVEL', 'loud'],
  ['DOORMAN_CHECK_MODE', 'sometimes'],
  ['DOORMAN_CRITICAL_PATHS', 'checkout'],
  ['DOORMAN_LANE_NICE', '-21'],
  ['DOORMAN_LANE_NICE', '20'],
  ['DOORMAN_LANE_NICE', 'high'],
]

function configError (fn: () => unknown): ConfigError | null {
  try { fn() } catch (err) { return err instanceof ConfigError ? err : null }
  return null
}

t.test('each bad value is refused naming its variable', async (t) => {
  for (const [name, value] of BAD) {
    const err = configError(() => loadConfig({ DOORMAN_APP_PORT: '8080', [name]: value }, { sidecar: true }))
    t.equal(err?.variable, name, `${name}=${value} is refused`)
    t.match(err?.message, new RegExp(`^${name}: got .*; expected `), 'the message names the value and what is accepted')
  }
  t.equal(configError(() => loadConfig({}, { sidecar: true }))?.variable, 'DOORMAN_APP_PORT')
  t.equal(configError(() => loadConfig({ DOORMAN_APP_PORT: '1', DOORMAN_LIMIT_MODE: 'adaptive', DOORMAN_LIMIT_MIN: '500' }))?.variable, 'DOORMAN_LIMIT_MIN')
  t.equal(loadConfig({ DOORMAN_APP_PORT: '1', DOORMAN_MAX_CONCURRENCY: '2' }).limitMin, 2, 'a static limit under the default floor is fine')
  t.equal(configError(() => loadConfig({ DOORMAN_APP_PORT: '1', DOORMAN_REGISTRY: 'redis://127.0.0.1:1' }, { sidecar: true }))?.variable, 'DOORMAN_SERVICE')
})

t.test('the injector\'s defaults for the sidecar are checked as the sidecar checks them', async (t) => {
  const env = (v: unknown): Record<string, string> => ({ DOORMAN_SIDECAR_ENV: typeof v === 'string' ? v : JSON.stringify(v) })
  t.same(loadConfig({}).sidecarEnv, {}, 'none by default')
  t.same(loadConfig(env({ DOORMAN_WARMUP: '30s', DOORMAN_OUTBOUND_PORT: 0, DOORMAN_LANE_NICE: -5 })).sidecarEnv, { DOORMAN_WARMUP: '30s', DOORMAN_OUTBOUND_PORT: '0', DOORMAN_LANE_NICE: '-5' })
  const cases: Array<[unknown, RegExp]> = [
    ['{"DOORMAN_WARMUP":', /^DOORMAN_SIDECAR_ENV: got <redacted>; expected a JSON object/],
    [['DOORMAN_WARMUP'], /^DOORMAN_SIDECAR_ENV: got <redacted>; expected a JSON object/],
    [{ DOORMAN_WARMUP: 'soon' }, /^DOORMAN_SIDECAR_ENV: DOORMAN_WARMUP: got "soon"; expected a duration/],
    [{ DOORMAN_WARMUP: null }, /^DOORMAN_SIDECAR_ENV: got <redacted>/],
    [{ DOORMAN_CHECK_MODE: 'off' }, /DOORMAN_CHECK_MODE is not a setting a pod annotation may set/],
    [{ DOORMAN_ADMIN_TOKEN: 'x' }, /DOORMAN_ADMIN_TOKEN is not a setting a pod annotation may set/],
    [{ DOORMAN_SERVICE: 'all' }, /DOORMAN_SERVICE is each pod's own/],
    [{ DOORMAN_APP_PORT: '8080' }, /DOORMAN_APP_PORT is each pod's own/],
    [{ DOORMAN_LIMIT_MODE: 'adaptive', DOORMAN_LIMIT_MIN: '50', DOORMAN_MAX_CONCURRENCY: '10' }, /^DOORMAN_SIDECAR_ENV: DOORMAN_LIMIT_MIN: got 50; expected at most/],
    [{ DOORMAN_REGISTRY: 'mysql://u:hunter2@db' }, /^DOORMAN_SIDECAR_ENV: DOORMAN_REGISTRY: got <redacted>; expected/]
  ]
  for (const [value, message] of cases) {
    const err = configError(() => loadConfig(env(value)))
    t.equal(err?.variable, 'DOORMAN_SIDECAR_ENV', `${JSON.stringify(value)} is refused`)
    t.match(err?.message, message)
    t.notMatch(err?.message, /hunter2/, 'secrets are not echoed')
  }
  const res = (v: string): ConfigError | null => configError(() => loadConfig({ DOORMAN_SIDECAR_RESOURCES: v }))
  t.same(loadConfig({}).sidecarResources, { requests: { cpu: '50m', memory: '64Mi' }, limits: { memory: '256Mi' } }, 'the default')
  t.same(loadConfig({ DOORMAN_SIDECAR_RESOURCES: '{"requests":{"cpu":0.5,"memory":"1Gi"}}' }).sidecarResources, { requests: { cpu: '0.5', memory: '1Gi' } })
  for (const bad of ['{"requests":{"cpu":"lots"}}', '{"request":{}}', '{"limits":{"gpu":"1"}}', '[]', 'yes']) {
    t.equal(res(bad)?.variable, 'DOORMAN_SIDECAR_RESOURCES', `${bad} is refused`)
    t.match(res(bad)?.message, /^DOORMAN_SIDECAR_RESOURCES: got .*; expected a JSON object/)
  }
})

t.test('refusals say what was wrong where there is more to say', async (t) => {
  const message = (name: string, value: string): string | undefined => configError(() => loadConfig({ DOORMAN_APP_PORT: '1', [name]: value }))?.message
  t.match(message('DOORMAN_APP_PROBES', '{"/app-health/app/livez":{"timeoutSeconds":1}}'), /\(a probe needs httpGet, tcpSocket or grpc\)$/)
  t.match(message('DOORMAN_APP_PROBES', '{"/livez":{"httpGet":{"port":1}}}'), /\(keys are \/app-health\/<container>\/<livez\|readyz\|startupz>\)$/)
  t.match(message('DOORMAN_CRITICAL_PATHS', '/a,b'), /\(globs start with \/\)$/)
  t.match(message('DOORMAN_APP_PORT', 'http'), /expected a port number from 0 to 65535$/)
})

t.test('values are read as the kinds say', async (t) => {
  const c = loadConfig({ DOORMAN_APP_PORT: ' 8080 ', DOORMAN_REGISTRY: ' memory ', DOORMAN_LANE_NICE: '-5', DOORMAN_WARMUP_AGGRESSION: '1.5', DOORMAN_CHECK_MAX_EJECT: '12.5', DOORMAN_CHECK_CANARY: 'orders, pay-*,,', DOORMAN_APP_PROBES: '' })
  t.equal(c.appPort, 8080)
  t.equal(c.registry, 'memory')
  t.equal(c.laneNice, -5)
  t.equal(c.warmupAggression, 1.5)
  t.equal(c.checkMaxEject, 12.5)
  t.same(c.checkCanary, ['orders', 'pay-*'])
  t.ok(Object.isFrozen(c.checkCanary))
  t.same(c.appProbes, {})
  const probes = { '/app-health/app/readyz': { httpGet: { path: '/ready', port: 'http', scheme: 'HTTPS', httpHeaders: [{ name: 'x', value: 'y' }] }, timeoutSeconds: 2, periodSeconds: 5 }, '/app-health/app/startupz': { grpc: { port: 9000 } } }
  t.same(loadConfig({ DOORMAN_APP_PORT: '1', DOORMAN_APP_PROBES: JSON.stringify(probes) }).appProbes, probes)
})

t.test('secrets are not echoed', async (t) => {
  const err = configError(() => loadConfig({ DOORMAN_APP_PORT: '1', DOORMAN_REGISTRY: 'postgres://user:hunter2@x' }))
  t.equal(err?.variable, 'DOORMAN_REGISTRY')
  t.notMatch(err?.message, /hunter2/)
})

t.test('the table names every contract variable with an annotation', async (t) => {
  t.equal(annotationFor('DOORMAN_MAX_CONCURRENCY'), 'doorman.io/max-concurrency')
  t.equal(keyFor('DOORMAN_MAX_CONCURRENCY'), 'maxConcurrency')
  const names = new Set(SETTINGS.map((s) => s.env))
  t.equal(names.size, SETTINGS.length, 'no duplicates')
})

t.test('the CLI exits 78 naming the variable', async (t) => {
  const cases: Array<Record<string, string>> = [
    { DOORMAN_APP_PORT: 'http' },
    {},
    { DOORMAN_APP_PORT: '8080', DOORMAN_MAX_QUEUE: '-3' },
    { DOORMAN_APP_PORT: '8080', DOORMAN_LIMIT_MODE: 'magic' }
  ]
  for (const env of cases) {
    const child = spawnNode(t, [CLI, 'run'], env)
    const { code } = await child.exited
    const name = Object.keys(env).find((k) => k !== 'DOORMAN_APP_PORT' || env[k] === 'http') ?? 'DOORMAN_APP_PORT'
    t.equal(code, 78, `exit 78 for ${JSON.stringify(env)}`)
    t.match(child.output(), new RegExp(`bad configuration: ${name}`), 'names the variable')
  }
})
