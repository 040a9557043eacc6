// DOORMAN_REGISTRY parsing and the ioredis options derived from it.
import t from 'tap'
import { parseRegistryUrl, describeTarget, type RedisTarget } from '../src/registry/index.js'
import { clientOptions, toFields, fromFields } from '../src/registry/redis.js'
import { backoff } from '../src/registry/types.js'
import { ConfigError } from '../src/core/errors.js'

t.test('memory and file', async (t) => {
  t.same(parseRegistryUrl('memory'), { mode: 'memory' })
  t.same(parseRegistryUrl('file:///var/run/doorman%20registry'), { mode: 'file', dir: '/var/run/doorman registry' })
  t.throws(() => parseRegistryUrl('file://relative/dir'), { name: 'ConfigError', variable: 'DOORMAN_REGISTRY', message: /absolute/ })
  t.equal(describeTarget(parseRegistryUrl('file:///tmp/r')), 'file:///tmp/r')
})

t.test('redis:// and rediss://', async (t) => {
  t.match(parseRegistryUrl('redis://127.0.0.1'), { mode: 'standalone', host: '127.0.0.1', port: 6379, db: 0, tls: false, prefix: 'doorman', username: undefined, password: undefined })
  t.match(parseRegistryUrl('redis://user:p%40ss@redis.svc:6380/3?prefix=mesh1'), { mode: 'standalone', host: 'redis.svc', port: 6380, db: 3, username: 'user', password: 'p@ss', prefix: 'mesh1' })
  t.match(parseRegistryUrl('redis://:secret@h'), { username: undefined, password: 'secret' })
  t.match(parseRegistryUrl('rediss://h:6390'), { mode: 'standalone', tls: true, port: 6390 })
  t.match(parseRegistryUrl('redis://[::1]:7000/2'), { host: '::1', port: 7000, db: 2 })
  const o = clientOptions(parseRegistryUrl('rediss://u:pw@h:6390/4') as RedisTarget, 1500, false)
  t.match(o.redis, { host: 'h', port: 6390, db: 4, username: 'u', password: 'pw', tls: { servername: 'h' }, enableOfflineQueue: false, commandTimeout: 1500, maxRetriesPerRequest: 0 })
  const sub = clientOptions(parseRegistryUrl('redis://h') as RedisTarget, 1500, true)
  t.match(sub.redis, { enableOfflineQueue: true, maxRetriesPerRequest: null, autoResubscribe: true, tls: undefined })
})

t.test('redis+sentinel://', async (t) => {
  const s = parseRegistryUrl('redis+sentinel://u:pw@s1:26379,s2,[::1]:26380/mymaster/2?sentinelPassword=sp&sentinelTls=1&tls=true')
  t.match(s, { mode: 'sentinel', name: 'mymaster', db: 2, username: 'u', password: 'pw', sentinelPassword: 'sp', sentinelTls: true, tls: true })
  t.same((s as { sentinels: unknown }).sentinels, [{ host: 's1', port: 26379 }, { host: 's2', port: 26379 }, { host: '::1', port: 26380 }])
  t.match(parseRegistryUrl('redis+sentinel://s1?name=m1&db=5'), { name: 'm1', db: 5 })
  const o = clientOptions(s as RedisTarget, 2000, false)
  t.match(o.redis, { name: 'mymaster', db: 2, sentinelPassword: 'sp', enableTLSForSentinelMode: true, tls: {}, enableOfflineQueue: false })
  t.same(o.redis?.sentinels, [{ host: 's1', port: 26379 }, { host: 's2', port: 26379 }, { host: '::1', port: 26380 }])
  t.equal(describeTarget(s), 'redis+sentinel://s1:26379,s2:26379,[::1]:26380/mymaster/2')
  t.throws(() => parseRegistryUrl('redis+sentinel://s1:26379'), { name: 'ConfigError', variable: 'DOORMAN_REGISTRY', message: /master name/ })
})

t.test('redis+cluster://', async (t) => {
  const c = parseRegistryUrl('redis+cluster://:pw@n1:7000,n2:7001,n3?tls=1&prefix=p')
  t.match(c, { mode: 'cluster', password: 'pw', tls: true, prefix: 'p' })
  t.same((c as { nodes: unknown }).nodes, [{ host: 'n1', port: 7000 }, { host: 'n2', port: 7001 }, { host: 'n3', port: 6379 }])
  const o = clientOptions(c as RedisTarget, 2000, false)
  t.same(o.nodes, [{ host: 'n1', port: 7000 }, { host: 'n2', port: 7001 }, { host: 'n3', port: 6379 }])
  t.match(o.cluster, { enableOfflineQueue: false, redisOptions: { password: 'pw', tls: {} } })
  t.notOk('enableOfflineQueue' in (o.cluster?.redisOptions ?? {}), 'the cluster option, not the per-node one, governs queueing')
  t.throws(() => parseRegistryUrl('redis+cluster://n1:7000/1'), { name: 'ConfigError', message: /database/ })
})

t.test('bad URLs name the variable and never echo the password', async (t) => {
  for (const bad of ['redis://', 'redis://h:99999', 'redis://h:x', 'redis://a,b', 'redis://h/1/2', 'redis://h?frob=1', 'redis://h?prefix=a%20b', 'mongodb://h', 'redis://u:hunter2@h:0', 'redis://h/abc', 'redis://::1:7000', 'redis+sentinel://s?tls=maybe']) {
    const err = (() => { try { parseRegistryUrl(bad); return null } catch (e) { return e as ConfigError } })()
    t.ok(err instanceof ConfigError, `${bad} is refused`)
    t.equal(err?.variable, 'DOORMAN_REGISTRY')
    t.notMatch(err?.message ?? '', /hunter2/)
  }
})

t.test('describeTarget redacts credentials', async (t) => {
  t.equal(describeTarget(parseRegistryUrl('redis://u:pw@h:1/2')), 'redis://h:1/2')
  t.equal(describeTarget(parseRegistryUrl('rediss://h')), 'rediss://h:6379/0')
  t.equal(describeTarget(parseRegistryUrl('redis+cluster://:pw@a:1,b:2')), 'redis+cluster://a:1,b:2')
})

t.test('reconnect backoff grows to 2 s', async (t) => {
  t.same([1, 2, 3, 4, 5, 6, 7, 50].map(backoff), [100, 200, 400, 800, 1600, 2000, 2000, 2000])
})

t.test('hash fields round-trip; malformed records are skipped', async (t) => {
  const inst = { id: 'a', service: 's', cluster: 'c', zone: 'z', address: '10.0.0.1:7080', adminPort: 7090, startedAt: 1, registeredAt: 2, warmup: { window: 60000, aggression: 1.5, minWeight: 10, progress: 0.25 }, weight: 40, state: 'warming' as const, ejected: false, updatedAt: 3, rev: 0 }
  t.same(fromFields([...toFields(inst), 'rev', '17']), { ...inst, rev: 17 })
  t.match(fromFields([...toFields(inst), 'ejected', '1']), { state: 'ejected', ejected: true })
  t.same(fromFields(toFields({ ...inst, livenessFailing: true })), { ...inst, livenessFailing: true }, 'the restart budget\'s field')
  t.match(fromFields([...toFields(inst), 'state', 'nonsense']), { state: 'starting' })
  t.equal(fromFields(['id', 'x']), undefined)
})
