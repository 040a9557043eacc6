// The app-registry module without a ZooKeeper: Dubbo's URL encoding, which entries are this instance's, the
// registration latch (with a clock), the configuration and its annotation, and the drain's order.
import t from 'tap'
import { javaEncode, javaDecode, parseDubboUrl, formatDubboUrl, disableOverride } from '../src/app-registry/dubbo-url.js'
import { parseZooKeeperUrl } from '../src/app-registry/url.js'
import { ownEntries, ZooKeeperAppRegistry, HANDSHAKE_MS } from '../src/app-registry/zookeeper.js'
import { RegistrationGate, SETTLE_MS } from '../src/app-registry/gate.js'
import { loadConfig } from '../src/config/index.js'
import { ConfigError } from '../src/core/errors.js'
import { Drainer, DRAINING, CLOSED } from '../src/drain/index.js'
import { silentLogger } from '../src/core/log.js'
import { injectTemplate } from '../src/inject/pod.js'
import { spawnNode, CLI, waitFor } from './helpers/index.js'
import net from 'node:net'
import { once } from 'node:events'

const URL_TEXT = 'dubbo://10.0.0.5:20880/org.apache.dubbo.demo.DemoService?anyhost=true&application=demo-provider&deprecated=false&dubbo=2.0.2&dynamic=true&generic=false&group=g1&interface=org.apache.dubbo.demo.DemoService&methods=sayHello,sayHelloAsync&pid=42&release=2.7.23&side=provider&timestamp=1700000000000&version=1.0.0&warmup=600000'

t.test("Dubbo's URL encoding is Java's URLEncoder", async (t) => {
  // What Dubbo 2.7 writes as the znode name (URL.encode → URLEncoder.encode(s, "UTF-8")).
  t.equal(javaEncode('dubbo://10.0.0.5:20880/a.B?methods=x,y&k=a b*~'), 'dubbo%3A%2F%2F10.0.0.5%3A20880%2Fa.B%3Fmethods%3Dx%2Cy%26k%3Da+b*%7E')
  t.equal(javaDecode(javaEncode(URL_TEXT)), URL_TEXT, 'round trip')
  t.equal(javaDecode('%E0%A4%A'), null, 'bad escapes are not an entry')
  const u = parseDubboUrl(URL_TEXT)
  t.ok(u !== null)
  t.equal(u?.host, '10.0.0.5')
  t.equal(u?.port, 20880)
  t.equal(u?.path, 'org.apache.dubbo.demo.DemoService')
  t.equal(u?.params.get('warmup'), '600000')
  t.equal(u !== null ? formatDubboUrl(u) : '', URL_TEXT, 'written back in key order, as toFullString')
  t.equal(parseDubboUrl('not a url'), null)
  const ipv6 = parseDubboUrl('dubbo://[fd00::5]:20880/a.B?x=1')
  t.equal(ipv6?.host, 'fd00::5')
})

t.test("the override is Dubbo admin's, with the provider's group and version", async (t) => {
  const u = parseDubboUrl(URL_TEXT)
  if (u === null) throw new Error('unparsed')
  t.equal(disableOverride(u), 'override://10.0.0.5:20880/org.apache.dubbo.demo.DemoService?category=configurators&disabled=true&dynamic=false&enabled=true&group=g1&version=1.0.0')
  const plain = parseDubboUrl('dubbo://10.0.0.5:20880/a.B?interface=a.B')
  if (plain === null) throw new Error('unparsed')
  t.equal(disableOverride(plain), 'override://10.0.0.5:20880/a.B?category=configurators&disabled=true&dynamic=false&enabled=true')
})

t.test('DOORMAN_APP_REGISTRY URLs', async (t) => {
  t.same(parseZooKeeperUrl('zookeeper://zk:2181/dubbo'), { connect: 'zk:2181', root: '/dubbo', port: undefined })
  t.same(parseZooKeeperUrl('zookeeper://zk-0:2181,zk-1,10.0.0.9:2182'), { connect: 'zk-0:2181,zk-1:2181,10.0.0.9:2182', root: '/dubbo', port: undefined }, 'several hosts, the default port and root')
  t.same(parseZooKeeperUrl('zookeeper://zk/shop/dubbo/?port=20880'), { connect: 'zk:2181', root: '/shop/dubbo', port: 20880 }, 'a root of its own, the Dubbo port')
  for (const bad of ['zk:2181', 'zookeeper://', 'zookeeper://zk:2181/dubbo?port=x', 'zookeeper://zk:2181/dubbo?timeout=3', 'zookeeper://u:p@zk:2181', 'nacos://n:8848']) {
    t.equal(parseZooKeeperUrl(bad), null, `refused: ${bad}`)
  }
})

t.test('only the entries of this address and port count', async (t) => {
  const mine = javaEncode(URL_TEXT)
  const otherPort = javaEncode(URL_TEXT.replace(':20880', ':20881'))
  const otherHost = javaEncode(URL_TEXT.replace('10.0.0.5', '10.0.0.6'))
  const got = ownEntries('org.apache.dubbo.demo.DemoService', [otherHost, mine, otherPort, 'garbage%'], '10.0.0.5', 20880)
  t.same(got, [{ service: 'org.apache.dubbo.demo.DemoService', url: URL_TEXT, timestamp: 1700000000000, warmup: 600000 }])
})

t.test('the registration latch', async (t) => {
  const declared = new RegistrationGate(['a.A', 'b.B'])
  t.equal(declared.observe([], 0), false)
  t.equal(declared.observe(['a.A'], 10), false)
  t.same(declared.state().waitingFor, ['b.B'], 'names what is missing')
  t.equal(declared.observe(['a.A', 'b.B'], 20), true, 'open once every declared service is there')
  t.equal(declared.state().openedAt, 20)
  t.equal(declared.observe([], 30), true, 'and stays open when they vanish (a registry outage, a flap)')

  const open = new RegistrationGate([])
  t.equal(open.observe([], 0), false, 'undeclared: nothing registered, not open')
  t.equal(open.observe(['a.A'], 1000), false)
  t.equal(open.settlesAt(), 1000 + SETTLE_MS)
  t.equal(open.observe(['a.A', 'b.B'], 1000 + SETTLE_MS - 1), false, 'a new service starts the wait again')
  t.equal(open.observe(['a.A', 'b.B'], 1000 + 2 * SETTLE_MS - 2), false)
  t.equal(open.observe(['a.A', 'b.B'], 1000 + 2 * SETTLE_MS - 1), true, 'open once none new for the settle time')
  t.equal(open.observe([], 1e9), true)
})

t.test('configuration: checked once, exit 78 naming the variable; the annotation reaches the sidecar', async (t) => {
  const cfg = loadConfig({ DOORMAN_APP_REGISTRY: 'zookeeper://zk:2181/dubbo', DOORMAN_APP_SERVICES: 'a.A, org.x.B$Inner' })
  t.equal(cfg.appRegistry, 'zookeeper://zk:2181/dubbo')
  t.same(cfg.appServices, ['a.A', 'org.x.B$Inner'])
  t.equal(loadConfig({}).appRegistry, '', 'off by default')
  for (const [k, v] of [['DOORMAN_APP_REGISTRY', 'zk:2181'], ['DOORMAN_APP_SERVICES', 'a.A,/b']]) {
    try { loadConfig({ [k]: v }); t.fail(`${k}=${v} accepted`) } catch (err) { t.ok(err instanceof ConfigError && err.message.startsWith(`${k}:`), `${k}=${v} refused naming it`) }
  }
  const child = spawnNode(t, [CLI, 'run'], { DOORMAN_APP_PORT: '8080', DOORMAN_APP_REGISTRY: 'nacos://n:8848' })
  t.equal((await child.exited).code, 78)
  t.match(child.output(), /bad configuration: DOORMAN_APP_REGISTRY/)

  const tpl: Record<string, any> = {
    metadata: { annotations: { 'doorman.io/inject': 'enabled', 'doorman.io/app-registry': 'zookeeper://zk:2181/dubbo', 'doorman.io/app-services': 'a.A' } },
    spec: { containers: [{ name: 'app', image: 'x', ports: [{ containerPort: 20880 }], readinessProbe: { tcpSocket: { port: 20880 } } }] }
  }
  const r = injectTemplate(tpl)
  t.equal(r.injected, true)
  const all = [...(tpl.spec.initContainers ?? []), ...tpl.spec.containers]
  const sidecar = all.find((c: any) => (c.env ?? []).some((e: any) => e.name === 'DOORMAN_APP_PORT'))
  const env = Object.fromEntries((sidecar?.env ?? []).map((e: any) => [e.name, e.value]))
  t.equal(env.DOORMAN_APP_REGISTRY, 'zookeeper://zk:2181/dubbo', 'doorman.io/app-registry → DOORMAN_APP_REGISTRY')
  t.equal(env.DOORMAN_APP_SERVICES, 'a.A', 'doorman.io/app-services → DOORMAN_APP_SERVICES')
  t.equal(tpl.spec.containers[0].readinessProbe.httpGet?.path, '/app-health/app/readyz', "the app's readiness goes through the lane, which waits for the registration")
  const bad = { metadata: { annotations: { 'doorman.io/inject': 'enabled', 'doorman.io/app-registry': 'zk:2181' } }, spec: { containers: [{ name: 'app', image: 'x', ports: [{ containerPort: 20880 }] }] } }
  t.throws(() => injectTemplate(bad), /doorman\.io\/app-registry/, 'a bad annotation is refused naming it')
})

t.test('the drain disables the instance for the app\'s consumers before anything else, and ends no sooner than it is written', async (t) => {
  const order: string[] = []
  let written!: () => void
  const target = {
    pending: () => ({ inflight: 0, queued: 0, upgrades: 0 }),
    lastArrival: () => 0,
    completed: () => 0,
    startDraining: () => { order.push('flag responses') },
    stopAccepting: () => { order.push('stop accepting') },
    closeUpgrades: () => {},
    destroy: () => 0
  }
  const d = new Drainer({
    delay: 0,
    quiet: 1,
    timeout: 5000,
    log: silentLogger(),
    target,
    onPhase: (p) => { order.push(p === DRAINING ? 'readiness fails' : p === CLOSED ? 'closed' : `phase ${p}`) },
    deregister: async () => { order.push('deregister') },
    offline: async () => { order.push('disable for consumers'); await new Promise<void>((resolve) => { written = resolve }) }
  })
  const done = d.start('test')
  const deadline = Date.now() + 2000
  while (!order.includes('stop accepting') && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5))
  t.equal(order[0], 'disable for consumers', 'first thing')
  t.notOk(order.includes('closed'), 'not closed while the override is not written')
  written()
  const r = await done
  t.equal(order.at(-1), 'closed')
  t.equal(r.clean, true)

  // A registry that never answers holds the drain up to its deadline only.
  const stuck = new Drainer({ delay: 0, quiet: 1, timeout: 300, log: silentLogger(), target, onPhase: () => {}, offline: async () => { await new Promise(() => {}) } })
  const t0 = Date.now()
  await stuck.start('test')
  t.ok(Date.now() - t0 < 2000, `the drain ended at its deadline (${Date.now() - t0} ms)`)
})

t.test('a server that accepts the connection and never answers the handshake is dropped and tried again', async (t) => {
  // What a ZooKeeper restarting can do; the client alone would wait on that connection for ever.
  const accepted: number[] = []
  const sockets = new Set<net.Socket>()
  const server = net.createServer((s) => { accepted.push(Date.now()); sockets.add(s); s.on('error', () => {}); s.on('close', () => sockets.delete(s)) })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const port = (server.address() as net.AddressInfo).port
  const reg = new ZooKeeperAppRegistry({ target: { connect: `127.0.0.1:${port}`, root: '/dubbo' }, host: '127.0.0.1', port: 1, services: ['a.A'], log: silentLogger() })
  t.teardown(async () => { await reg.close(); for (const s of sockets) s.destroy(); await new Promise((resolve) => server.close(resolve)) })
  reg.start(() => {})
  await waitFor('a second connection', () => accepted.length >= 2, HANDSHAKE_MS + 5000, 50)
  const gap = accepted[1] - accepted[0]
  t.ok(gap >= HANDSHAKE_MS - 1000 && gap < HANDSHAKE_MS + 3000, `connected again ${gap} ms after the unanswered handshake began`)
  t.equal(reg.status().up, false, 'and the registry counts as away meanwhile')
})
