// A provider process that registers itself in ZooKeeper exactly as Dubbo 2.7/3.x does (interface-level
// registration, ZookeeperRegistry): under its own session, for each interface, the persistent path
// /dubbo/<interface>/providers and in it one ephemeral znode named URL.encode(url.toFullString()) (Java's URLEncoder),
// the URL being `dubbo://<ip>:<port>/<interface>?anyhost=true&application=…&…&timestamp=<ms>&warmup=<ms>` with its
// parameters in key order. It serves its methods over HTTP/1.1 on the same port (the wire protocol is beside the
// point here: the registry is). Like Dubbo's `delay`, it registers DELAY ms after its port is open.
//
// env: ZK (host:port), ROOT (/dubbo), INTERFACES (comma-separated), APPLICATION, DELAY (ms), WARMUP (ms), LATENCY
// (ms per call, or `signal`: on SIGUSR2), HOST (the address it registers, 127.0.0.1).
// stdout, one JSON object a line: {"port":N} once listening, {"registered":<timestamp>,"urls":[…]} once registered.
// SIGTERM: unregisters (closes its session, so ZooKeeper deletes its znodes), then exits at once, cutting what is in
// flight: a caller still sending to it then fails, which is what the tests must never see.
import http from 'node:http'
import zookeeper from 'node-zookeeper-client'

const env = process.env
const root = env.ROOT ?? '/dubbo'
const interfaces = (env.INTERFACES ?? 'org.apache.dubbo.demo.DemoService').split(',').filter((s) => s !== '')
const host = env.HOST ?? '127.0.0.1'
const latency = Number(env.LATENCY ?? '5')
const print = (o) => { process.stdout.write(JSON.stringify(o) + '\n') }

/** Java's URLEncoder.encode(s, "UTF-8"). */
const javaEncode = (s) => encodeURIComponent(s).replace(/[!'()~]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase()).replace(/%20/g, '+')

let calls = 0
const server = http.createServer((req, res) => {
  calls++
  setTimeout(() => {
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.end(`${server.address().port} ${req.url}\n`)
  }, latency)
})
server.keepAliveTimeout = 60_000

server.listen(0, host, () => {
  const port = server.address().port
  print({ port })
  // DELAY=signal: registers on SIGUSR2 (a delay the test ends when it has seen what it wants to before).
  if (env.DELAY === 'signal') process.once('SIGUSR2', () => { register(port) })
  else setTimeout(() => { register(port) }, Number(env.DELAY ?? '0'))
})

// Dubbo asks for a 60 s session (ZooKeeper caps it at 20 ticks). When the session expires, Dubbo's registry
// (FailbackRegistry's recover) registers everything again on the new one; so does this provider.
let client = null
let registeredUrls = []
function connect () {
  const c = zookeeper.createClient(env.ZK, { sessionTimeout: 60_000, spinDelay: 500, retries: 1 })
  c.once('expired', () => {
    if (client !== c) return
    c.close()
    connect()
    if (registeredUrls.length > 0) registerUrls(registeredUrls, null)
  })
  c.connect()
  client = c
}
connect()

function providerUrl (iface, port, timestamp) {
  const params = {
    anyhost: 'true',
    application: env.APPLICATION ?? 'demo-provider',
    deprecated: 'false',
    dubbo: '2.0.2',
    dynamic: 'true',
    generic: 'false',
    interface: iface,
    methods: 'sayHello,sayHelloAsync',
    pid: String(process.pid),
    release: '2.7.23',
    side: 'provider',
    timestamp: String(timestamp)
  }
  if (env.WARMUP !== undefined) params.warmup = env.WARMUP
  const query = Object.keys(params).sort().map((k) => `${k}=${params[k]}`).join('&')
  return `dubbo://${host}:${port}/${iface}?${query}`
}

function register (port) {
  const timestamp = Date.now()
  registerUrls(interfaces.map((i) => providerUrl(i, port, timestamp)), timestamp)
}

function registerUrls (urls, timestamp) {
  registeredUrls = urls
  let left = urls.length
  urls.forEach((url, n) => {
    const dir = `${root}/${interfaces[n]}/providers`
    client.mkdirp(dir, (err) => {
      if (err) { print({ error: String(err) }); process.exit(1) }
      client.create(`${dir}/${javaEncode(url)}`, zookeeper.CreateMode.EPHEMERAL, (err2) => {
        if (err2 && err2.code !== zookeeper.Exception.NODE_EXISTS) { print({ error: String(err2) }); process.exit(1) }
        if (--left === 0 && timestamp !== null) print({ registered: timestamp, urls })
      })
    })
  })
}

process.on('SIGTERM', () => {
  const exit = () => {
    server.closeAllConnections()
    print({ exiting: true, calls })
    process.exit(0)
  }
  client.once('disconnected', exit)
  // ZooKeeper away: the session expires on its own later, as a Dubbo provider's would.
  setTimeout(exit, 2000).unref()
  client.close()
})
