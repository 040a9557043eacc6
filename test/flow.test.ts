// Which flow an inbound request belongs to (src/inbound/flow.ts): the mTLS identity first, then DOORMAN_FLOW_HEADER
// from a trusted hop only, then the client address; keys bounded; and the settings that name them, checked at start-up.
import t from 'tap'
import { flowResolver, MAX_FLOW_KEY } from '../src/inbound/flow.js'
import { loadConfig } from '../src/config/index.js'
import { ConfigError } from '../src/core/errors.js'

t.test('identity, then a trusted hop\'s header, then the client address', async (t) => {
  const flow = flowResolver('X-Tenant')
  const raw = ['Host', 'shop', 'x-tenant', ' acme ', 'accept', '*/*']
  t.equal(flow({ rawHeaders: raw, remoteAddress: '10.0.0.7', trusted: true }), 'h:acme', 'the header (any case, trimmed) from a trusted hop')
  t.equal(flow({ rawHeaders: raw, remoteAddress: '10.0.0.7', trusted: false }), 'ip:10.0.0.7', 'ignored from a peer that is not trusted: it cannot pick its own flow')
  t.equal(flow({ identity: 'spiffe://cluster.local/ns/shop/sa/web', rawHeaders: raw, remoteAddress: '10.0.0.7', trusted: true }), 'id:spiffe://cluster.local/ns/shop/sa/web', 'a verified identity comes first')
  t.equal(flow({ rawHeaders: ['x-tenant', '   '], remoteAddress: '10.0.0.7', trusted: true }), 'ip:10.0.0.7', 'an empty header falls back to the address')
  t.equal(flowResolver('')({ rawHeaders: raw, remoteAddress: '::1', trusted: true }), 'ip:::1', 'no header configured: the address')
  t.equal(flow({ rawHeaders: ['x-tenant', 'id:spiffe://forged'], remoteAddress: '1.2.3.4', trusted: true }), 'h:id:spiffe://forged', 'a header value never poses as an identity')
  t.equal(flow({ rawHeaders: ['x-tenant', 'a'.repeat(10_000)], remoteAddress: '1.2.3.4', trusted: true }).length, MAX_FLOW_KEY, 'keys are bounded')
})

t.test('DOORMAN_FAIRNESS and DOORMAN_FLOW_HEADER are checked at start-up', async (t) => {
  const base = { DOORMAN_APP_PORT: '8080' }
  const c = loadConfig(base, { sidecar: true })
  t.equal(c.fairness, 'flow', 'fair by default')
  t.equal(c.flowHeader, '')
  t.equal(c.retryBudget, 20)
  t.equal(c.retryMinPerSecond, 10)
  t.equal(loadConfig({ ...base, DOORMAN_FAIRNESS: 'off', DOORMAN_FLOW_HEADER: 'x-tenant-id' }).flowHeader, 'x-tenant-id')
  for (const [env, value] of [['DOORMAN_FAIRNESS', 'fifo'], ['DOORMAN_FLOW_HEADER', 'x tenant'], ['DOORMAN_FLOW_HEADER', 'x-doorman-shed'], ['DOORMAN_RETRY_BUDGET', '150'], ['DOORMAN_RETRY_MIN_PER_SECOND', '-1']]) {
    let err: unknown = null
    try { loadConfig({ ...base, [env]: value }) } catch (e) { err = e }
    t.ok(err instanceof ConfigError && err.message.includes(env), `${env}=${value} is refused, naming the variable`)
  }
})
