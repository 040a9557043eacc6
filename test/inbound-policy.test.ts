// The inbound lane's policy on its own (src/inbound/policy.ts), with a real limiter and the proxy core's Exchange: the
// flow a request is admitted as is kept on the exchange, so the heartbeat's list of the heaviest flows never asks a
// connection again (an HTTP/1.1 request's socket is null once its connection has closed, before the exchange hears of
// it: asking it then threw out of the process).
import t from 'tap'
import type { IncomingMessage } from 'node:http'
import { Exchange, type Client, type Route } from '../src/proxy/exchange.js'
import { h1ForwardInfo } from '../src/proxy/client.js'
import type { ForwardInfo } from '../src/proxy/headers.js'
import { InboundPolicy } from '../src/inbound/policy.js'
import { flowResolver } from '../src/inbound/flow.js'
import { Limiter, NORMAL } from '../src/limiter/index.js'
import { Metrics } from '../src/metrics/index.js'
import { silentLogger } from '../src/core/log.js'

/** A client whose connection can go away: then asking it who it is throws, as Node's null req.socket made it. */
function client (address: string): { c: Client, gone: () => void, asked: () => number } {
  let closed = false
  let asked = 0
  const info = (trusted: boolean): ForwardInfo => {
    asked++
    if (closed) throw new TypeError("Cannot read properties of null (reading 'remoteAddress')")
    return { remoteAddress: address, proto: 'http', port: 7080, trusted }
  }
  const c = {
    h2: false,
    grpc: false,
    method: 'GET',
    path: '/work',
    grpcTimeout: undefined,
    headSent: false,
    rawHeaders: () => ['host', 'app.local'],
    forwardInfo: info,
    connection: () => undefined,
    hasBody: () => false,
    body: () => { throw new Error('no body') },
    onClose: () => {},
    proceed: () => {},
    head: () => {},
    write: () => true,
    onceDrain: () => {},
    end: () => {},
    answer: () => {},
    failAfterHead: () => {},
    reset: () => {}
  } as unknown as Client
  return { c, gone: () => { closed = true }, asked: () => asked }
}

t.test('the heaviest flows are counted from the flow each exchange was admitted as', async (t) => {
  // A route that takes the request and never answers: the exchange stays in flight.
  const app: Route = { dispatch: () => true }
  const policy = new InboundPolicy({
    limiter: new Limiter({ limit: 4, maxQueue: 4, queueTimeout: 1000, fairness: true }),
    metrics: new Metrics({ defaults: false }),
    log: silentLogger(),
    app,
    classify: () => NORMAL,
    trusted: false,
    writeTimeout: 1000,
    flow: flowResolver('')
  })
  const a = client('127.0.0.2')
  const b = client('127.0.0.3')
  const exA = new Exchange(a.c, policy, performance.now())
  const exB = new Exchange(b.c, policy, performance.now())
  exA.start()
  exB.start()
  t.equal(exA.target, 'ip:127.0.0.2', 'the flow is kept on the exchange at admission')
  t.equal(policy.exchanges.size, 2, 'both in flight')
  const askedBefore = a.asked()
  a.gone()
  const flows = policy.topFlows()
  t.same(flows.map((f) => [f.flow, f.inflight]).sort(), [['ip:127.0.0.2', 1], ['ip:127.0.0.3', 1]], 'both flows listed with what they hold')
  t.equal(a.asked(), askedBefore, 'a connection is not asked again after admission')
})

t.test('h1ForwardInfo: a request whose connection is gone has no address, and does not throw', async (t) => {
  const info = h1ForwardInfo({ socket: null } as unknown as IncomingMessage, true)
  t.same(info, { remoteAddress: '', proto: 'http', port: 0, trusted: true })
})
